"""``SparseProbe``: a k-sparse logistic-regression probe as a scikit-learn classifier.

After [Gurnee2023]: choose ``k`` neurons with a selection method
(:mod:`hierlens.probes.select`), then fit an L2-regularised logistic regression on those neurons
only (:mod:`hierlens.probes.logistic`). Multi-class targets are handled one-vs-rest, each class
with its own ``k`` neurons; all the binary problems are selected and fitted together as one
batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from hierlens.core.device import resolve_device
from hierlens.core.validate import check_int, check_number

from .logistic import fit_logistic
from .select import SELECTIONS, gather_columns, select_features

__all__ = ["SparseProbe"]


class SparseProbe(ClassifierMixin, BaseEstimator):
    """A logistic-regression probe that uses only ``k`` of the input features.

    Parameters:
        k: number of features (neurons) the probe may use, ``1 <= k <= n_features``.
        selection: how the ``k`` features are chosen: one of ``"mean_diff"`` (default),
            ``"anova"``, ``"mutual_info"``, ``"l1"``, ``"telescope"``, ``"random"``,
            ``"exhaustive"`` (see :mod:`hierlens.probes.select`).
        C: inverse L2 regularisation strength of the final probe (scikit-learn's convention;
            the intercept is not penalised).
        class_weight: ``"balanced"`` (default: computed per one-vs-rest problem, as
            ``OneVsRestClassifier(LogisticRegression(class_weight="balanced"))`` does), ``None``,
            or a dict ``{class: weight}`` scaling the rows of each class.
        standardize: z-score the features (training mean and standard deviation) before
            selection and fitting; the reported ``coef_``/``intercept_`` act on raw inputs.
        n_candidates, shrink, l1_C, n_bins: options of the selection methods (see
            :func:`hierlens.probes.select.select_features`).
        random_state: seed of the ``random`` selection.
        max_iter, tol: Newton iterations and gradient tolerance of the probe fits.
        device: where to compute (``None``: CUDA when available, else the CPU).

    Attributes (after ``fit``):
        classes_: the class labels.
        selected_: ``(n_outputs, k)`` selected feature indices, one row per one-vs-rest
            problem (``n_outputs = 1`` for two classes, like ``coef_``), best first.
        coef_: ``(n_outputs, n_features)`` weights on the raw features (zero outside
            ``selected_``).
        intercept_: ``(n_outputs,)`` intercepts.
        n_features_in_: the number of input features.
    """

    def __init__(
        self,
        k: int = 1,
        selection: str = "mean_diff",
        C: float = 1.0,
        class_weight: str | dict | None = "balanced",
        standardize: bool = True,
        *,
        n_candidates: int | None = None,
        shrink: float = 0.5,
        l1_C: float | None = None,
        n_bins: int = 16,
        random_state: int | None = 0,
        max_iter: int = 100,
        tol: float = 1e-10,
        device: str | None = None,
    ) -> None:
        self.k = k
        self.selection = selection
        self.C = C
        self.class_weight = class_weight
        self.standardize = standardize
        self.n_candidates = n_candidates
        self.shrink = shrink
        self.l1_C = l1_C
        self.n_bins = n_bins
        self.random_state = random_state
        self.max_iter = max_iter
        self.tol = tol
        self.device = device

    def _check_params(self, n_features: int) -> None:
        check_int("k", self.k, numpy=True)
        if self.k > n_features:
            raise ValueError(
                f"k={self.k} is larger than the number of features "
                f"(n_features={n_features}); use k <= {n_features}"
            )
        if self.selection not in SELECTIONS:
            raise ValueError(
                f"unknown selection {self.selection!r}; expected one of {', '.join(SELECTIONS)}"
            )
        check_number("C", self.C, strict=True, finite=False)
        if not (self.class_weight in (None, "balanced") or isinstance(self.class_weight, dict)):
            raise ValueError(
                f"class_weight must be None, 'balanced' or a dict {{class: weight}}, "
                f"got {self.class_weight!r}"
            )

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> SparseProbe:
        """Select ``k`` features per one-vs-rest problem and fit the probes.

        ``X`` is ``(n_samples, n_features)`` (finite), ``y`` ``(n_samples,)`` with at least two
        classes; ``sample_weight`` optional non-negative ``(n_samples,)``.
        """
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_min_samples=2)
        check_classification_targets(y)
        n, d = X.shape
        self._check_params(d)
        enc = LabelEncoder()
        y_enc = enc.fit_transform(y)
        self.classes_ = enc.classes_
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise ValueError(
                f"y has only one class ({self.classes_[0]!r}); a probe needs at least two"
            )
        sw = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        if not sw.sum() > 0:
            raise ValueError("sample_weight: all weights are zero; at least one must be positive")
        fit_class_weight = self.class_weight
        if isinstance(self.class_weight, dict):
            # Per-class weights scale the rows of their class; each one-vs-rest problem then
            # uses these weights as they are.
            unknown = set(self.class_weight) - set(self.classes_.tolist())
            if unknown:
                raise ValueError(f"class_weight has labels not in y: {sorted(map(str, unknown))}")
            per_class = np.array([float(self.class_weight.get(c, 1.0)) for c in self.classes_])
            sw = sw * per_class[y_enc]
            fit_class_weight = None
        dev = resolve_device(self.device)
        if n_classes == 2:
            Y = (y_enc == 1)[None].astype(np.float64)
        else:
            Y = (y_enc[None, :] == np.arange(n_classes)[:, None]).astype(np.float64)
        if self.standardize:
            wsum = sw.sum()
            mu = (sw @ X) / wsum
            sigma = np.sqrt((sw @ (X - mu) ** 2) / wsum)
            sigma[sigma < 1e-12 * np.maximum(1.0, np.abs(mu))] = 1.0
        else:
            mu, sigma = np.zeros(d), np.ones(d)
        Xt = torch.as_tensor((X - mu) / sigma, device=dev)
        Yt = torch.as_tensor(Y, device=dev)
        W = torch.as_tensor(sw, device=dev)[None].expand_as(Yt)
        for row in range(Y.shape[0]):
            if not ((Y[row] * sw).sum() > 0 and ((1 - Y[row]) * sw).sum() > 0):
                raise ValueError("every class needs rows with a positive sample weight")
        sel = select_features(
            Xt,
            Yt,
            [int(self.k)],
            method=self.selection,
            sample_weight=W,
            C=self.C,
            class_weight=fit_class_weight,
            n_candidates=self.n_candidates,
            shrink=self.shrink,
            l1_C=self.l1_C,
            n_bins=self.n_bins,
            seed=0 if self.random_state is None else int(self.random_state),
            device=dev,
        )[int(self.k)]
        fit = fit_logistic(
            gather_columns(Xt, sel),
            Yt,
            sample_weight=W,
            C=float(self.C),
            class_weight=fit_class_weight,
            max_iter=int(self.max_iter),
            tol=float(self.tol),
            device=dev,
        )
        selected = sel.cpu().numpy()
        w_std = fit.coef.cpu().numpy()
        coef = np.zeros((Y.shape[0], d))
        rows = np.arange(Y.shape[0])[:, None]
        coef[rows, selected] = w_std / sigma[selected]
        self.selected_ = selected
        self.coef_ = coef
        self.intercept_ = fit.intercept.cpu().numpy() - (coef * mu).sum(-1)
        self.n_iter_ = fit.n_iter
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Probe logits: ``(n_samples,)`` for two classes, else ``(n_samples, n_classes)``."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        z = X @ self.coef_.T + self.intercept_
        return z[:, 0] if z.shape[1] == 1 else z

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n_samples, n_classes)`` probabilities (one-vs-rest sigmoids normalised to sum
        to one for more than two classes)."""
        z = self.decision_function(X)
        if z.ndim == 1:
            p = 1.0 / (1.0 + np.exp(-z))
            return np.stack([1 - p, p], axis=1)
        p = 1.0 / (1.0 + np.exp(-z))
        return p / p.sum(1, keepdims=True)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`."""
        return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """The predicted class of each row."""
        z = self.decision_function(X)
        idx = (z > 0).astype(int) if z.ndim == 1 else z.argmax(1)
        return self.classes_[idx]
