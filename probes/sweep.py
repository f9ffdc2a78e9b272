"""Sparse-probe sweeps: every (hook) x (feature) x (k) probe as one batched program.

Following [Gurnee2023], a sweep asks, for every
layer (hook) and every feature, how well a k-sparse probe recovers the feature as ``k``
grows. Per hook, the neurons of all features' problems are selected together
(:func:`hierlens.probes.select.select_features`); per ``k``, the probes of all hooks and
features are fitted as one stack of logistic regressions (:func:`fit_logistic_rows`) and scored on
a stratified held-out split with batched metrics.

Features with more than two classes are probed one-vs-rest: feature ``"nesting"`` with
values 1..4 becomes the binary problems ``"nesting=1"``, ..., ``"nesting=4"``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hierlens.core.atomic_io import write_checked_jsonl
from hierlens.core.device import resolve_device, resolve_dtype
from hierlens.core.validate import check_number

from .logistic import _check_penalty, all_finite, balanced_weights, fit_logistic_rows
from .metrics import binary_metrics
from .select import SELECTIONS, select_features

__all__ = ["BinaryProblem", "binary_problems", "probe_sweep", "stratified_split"]

_MAX_ELEMENTS = 1 << 25


def stratified_split(labels: np.ndarray, test_size: float, seed: int) -> np.ndarray:
    """A boolean test mask over ``labels`` that holds ``round(test_size * count)`` rows of
    every class (at least one when the class has two or more rows, never all of them)."""
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size!r}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for value in np.unique(labels):
        idx = np.flatnonzero(labels == value)
        count = len(idx)
        n_test = min(max(int(round(test_size * count)), 1 if count >= 2 else 0), count - 1)
        test[rng.permutation(idx)[:n_test]] = True
    return test


class BinaryProblem:
    """One binary probing problem on shared rows: ``name``, source ``feature``, ``positive``
    value, labels ``y (n,)``, and ``train``/``test`` row masks."""

    def __init__(self, name, feature, positive, y, train, test):
        self.name, self.feature, self.positive = name, feature, positive
        self.y, self.train, self.test = y, train, test


def binary_problems(
    labels: Mapping[str, np.ndarray],
    *,
    test_size: float = 0.2,
    seed: int = 0,
    ignore_label: int = -1,
    min_class_count: int = 4,
) -> list[BinaryProblem]:
    """Turn labelled features into binary problems with a stratified split per feature.

    A two-valued feature gives one problem (positive = the larger value, name = feature); a
    feature with more values gives one-vs-rest problems ``"feature=value"``. Rows labelled
    ``ignore_label`` take no part. A class with fewer than ``min_class_count`` rows is not
    probed (with a warning), though its rows stay negatives of the other classes.
    """
    problems: list[BinaryProblem] = []
    for f_idx, (feature, lab) in enumerate(labels.items()):
        lab = np.asarray(lab)
        if lab.ndim != 1:
            raise ValueError(f"labels[{feature!r}] must be 1-D, got shape {lab.shape}")
        if not (np.issubdtype(lab.dtype, np.integer) or lab.dtype == bool):
            raise TypeError(
                f"labels[{feature!r}] must hold integer or boolean classes, got dtype {lab.dtype}"
            )
        lab = lab.astype(np.int64)
        valid = lab != ignore_label
        values, counts = np.unique(lab[valid], return_counts=True)
        if len(values) < 2:
            raise ValueError(
                f"labels[{feature!r}] has {len(values)} class(es) among its non-ignored rows; "
                "a probe needs at least two"
            )
        test = np.zeros(len(lab), dtype=bool)
        test[valid] = stratified_split(lab[valid], test_size, seed + 7919 * f_idx)
        train = valid & ~test
        test = valid & test
        positives = values[1:] if len(values) == 2 else values
        for v, c in zip(values, counts):
            if v not in positives:
                continue
            if c < min_class_count:
                warnings.warn(
                    f"labels[{feature!r}]: class {int(v)} has {int(c)} rows "
                    f"(< min_class_count={min_class_count}); not probed",
                    stacklevel=2,
                )
                continue
            name = feature if len(values) == 2 else f"{feature}={int(v)}"
            problems.append(BinaryProblem(name, feature, int(v), lab == v, train, test))
    if not problems:
        raise ValueError("no binary problem left to probe (all classes too rare?)")
    return problems


def _validate_activations(activations, device, dtype):
    if not isinstance(activations, Mapping) or not activations:
        raise ValueError("activations must be a non-empty dict {hook: (n, d) array}")
    out, n = {}, None
    for hook, a in activations.items():
        t = torch.as_tensor(a)
        if t.ndim != 2:
            raise ValueError(f"activations[{hook!r}] must be (n, d), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"activations[{hook!r}] must be floating point, got {t.dtype}")
        if n is None:
            n = t.shape[0]
        elif t.shape[0] != n:
            raise ValueError(
                f"activations[{hook!r}] has {t.shape[0]} rows, but other hooks have {n}"
            )
        t = t.to(device=device, dtype=dtype)
        if not all_finite(t):
            raise ValueError(f"activations[{hook!r}] contains NaN or infinite values")
        out[hook] = t
    return out, n


def _lda_start(Xt: torch.Tensor, y: torch.Tensor, s: torch.Tensor):
    """A starting point for one-neuron probes (``Xt`` ``(P, 2, n)``: the neuron, then ones):
    the linear discriminant of two classes with a shared variance (weights ``s``), which is
    the logistic model when the neuron is Gaussian within each class. Newton from here needs
    about half the iterations it needs from the intercept-only start."""
    x = Xt[:, 0]
    w1, w0 = s * y, s * (1 - y)
    n1, n0 = w1.sum(-1).clamp_min(1e-12), w0.sum(-1).clamp_min(1e-12)
    m1, m0 = (w1 * x).sum(-1) / n1, (w0 * x).sum(-1) / n0
    var = 0.5 * (
        (w1 * (x - m1[:, None]) ** 2).sum(-1) / n1 + (w0 * (x - m0[:, None]) ** 2).sum(-1) / n0
    )
    var = var.clamp_min(1e-6)
    coef = ((m1 - m0) / var).clamp(-10.0, 10.0)
    return coef[:, None], -coef * (m1 + m0) / 2


def _check_options(methods, C, class_weight, test_size, tol) -> None:
    """Reject bad sweep settings before any data is touched."""
    bad = [m for m in methods if m not in SELECTIONS]
    if bad or not methods:
        raise ValueError(f"unknown selection(s) {bad}; expected from {', '.join(SELECTIONS)}")
    _check_penalty(C, class_weight)
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size!r}")
    check_number("tol", tol, strict=True, none=True)


def _check_labels(labels, n: int) -> None:
    """Every feature's labels are one per activation row."""
    if not isinstance(labels, Mapping) or not labels:
        raise ValueError("labels must be a non-empty dict {feature: (n,) array}")
    for feature, lab in labels.items():
        if np.asarray(lab).shape[:1] != (n,):
            raise ValueError(
                f"labels[{feature!r}] has shape {np.asarray(lab).shape}; activations have {n} rows"
            )


def _feature_major(acts: dict[str, torch.Tensor], standardize: bool, n: int, dt, dev):
    """All hooks' neurons in one feature-major matrix ``XT`` (each hook followed by a row of
    ones), so that the designs of a whole chunk of hooks are gathered in one indexing pass.

    Each ``acts[h]`` is replaced by its (standardized) ``(n, d)`` view into ``XT``; returns
    ``XT`` and each hook's first row in it."""
    XT = torch.empty(sum(a.shape[1] + 1 for a in acts.values()), n, dtype=dt, device=dev)
    offset, start = {}, 0
    for h in list(acts):
        d_h = acts[h].shape[1]
        block = XT[start : start + d_h]
        block.copy_(acts[h].T)
        if standardize:
            block.sub_(block.mean(1, keepdim=True))
            std = torch.linalg.vector_norm(block, dim=1, keepdim=True) / math.sqrt(n)
            block.div_(std.clamp_min(1e-6))
        XT[start + d_h] = 1.0
        acts[h] = block.T  # (n, d) view for the selection
        offset[h] = start
        start += d_h + 1
    return XT, offset


def _gather_designs(XT, offset, widths, chunk, idx, k: int, n: int) -> torch.Tensor:
    """The ``(len(chunk) * P, k + 1, n)`` designs of a chunk of hooks: each problem's
    selected neurons (``idx[c]`` ``(P, k)`` for hook ``chunk[c]``), then the row of ones."""
    ones_row = [torch.full_like(i[:, :1], widths[h]) for h, i in zip(chunk, idx)]
    rows = torch.cat([torch.cat([i, o], 1) + offset[h] for h, i, o in zip(chunk, idx, ones_row)])
    return XT.index_select(0, rows.reshape(-1)).reshape(rows.shape[0], k + 1, n)


def _warm_start(chunk, idx, previous, dt):
    """Start from the previous k's probe on the neurons both share (its intercept too)."""
    coefs, inters = [], []
    for h, i in zip(chunk, idx):
        p_idx, p_coef, p_b = previous[h]
        match = (i[:, :, None] == p_idx[:, None, :]).to(dt)
        coefs.append((match @ p_coef[..., None])[..., 0])
        inters.append(p_b)
    return torch.cat(coefs), torch.cat(inters)


def _select_all(acts, Y, W, ks, methods, bar, C, class_weight, seed, dev, dt, tol, opts):
    """Every (method, hook)'s selected neurons per k: ``{(method, hook): {k: (P, k)}}``."""
    selected: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
    for m in methods:
        for h in acts:
            selected[(m, h)] = select_features(
                acts[h],
                Y,
                ks,
                method=m,
                sample_weight=W,
                C=C,
                class_weight=class_weight,
                seed=seed,
                device=dev,
                dtype=dt,
                tol=tol,
                **opts,
            )
            bar.update()
    return selected


def _fit_chunk(Xg, Yc, Wc, chunk, idx, previous, *, k, C, tol, dt):
    """Fit a chunk's probes (from the discriminant start at ``k == 1``, else warm from the
    previous k's probes), remember them in ``previous`` and return the fit and the scores
    ``z`` ``(rows, n)`` of every row."""
    P = Yc.shape[0] // len(chunk)
    init = _lda_start(Xg, Yc, Wc) if k == 1 else None
    if all(h in previous for h in chunk):
        init = _warm_start(chunk, idx, previous, dt)
    fit = fit_logistic_rows(Xg, Yc, Wc, C=C, tol=tol, init=init)
    for c, (h, i) in enumerate(zip(chunk, idx)):
        rows = slice(c * P, (c + 1) * P)
        previous[h] = (i, fit.coef[rows], fit.intercept[rows])
    beta = torch.cat([fit.coef, fit.intercept[:, None]], 1)
    return fit, torch.bmm(beta[:, None, :], Xg)[:, 0]


def _chunk_records(chunk, idx, problems, fit, met, k, m, n_train, n_test):
    """One record per (hook of the chunk, problem) from the chunk's fit and test metrics."""
    P = len(problems)
    met = {key: v.cpu().tolist() for key, v in met.items()}
    losses = fit.loss.cpu().tolist()
    records = []
    for c, h in enumerate(chunk):
        sel = idx[c].cpu().tolist()
        for p, prob in enumerate(problems):
            r = c * P + p
            records.append(
                {
                    "hook": h,
                    "feature": prob.name,
                    "label": prob.feature,
                    "positive": prob.positive,
                    "k": k,
                    "selection": m,
                    "f1": met["f1"][r],
                    "mcc": met["mcc"][r],
                    "accuracy": met["accuracy"][r],
                    "train_loss": losses[r],
                    "selected": sel[p],
                    "n_train": n_train[p],
                    "n_test": n_test[p],
                }
            )
    return records


def probe_sweep(
    activations: Mapping[str, Any],
    labels: Mapping[str, Any],
    *,
    ks: Iterable[int] = (1, 2, 4, 8, 16),
    selection: str | Sequence[str] = "mean_diff",
    test_size: float = 0.2,
    seed: int = 0,
    C: float = 1.0,
    class_weight: str | None = "balanced",
    standardize: bool = True,
    ignore_label: int = -1,
    min_class_count: int = 4,
    selection_options: Mapping[str, Any] | None = None,
    tol: float | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = torch.float32,
    out_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train and score k-sparse probes for every hook x feature x k x selection method.

    Args:
        activations: ``{hook: (n, d)}`` activations; row ``i`` of every hook is the same token.
        labels: ``{feature: (n,)}`` integer/boolean labels (``ignore_label`` = not applicable).
        ks: sparsity levels (each at most the smallest hook width).
        selection: a method of :data:`hierlens.probes.select.SELECTIONS` or several.
        test_size: held-out fraction, stratified per feature.
        seed: seed of the split (and of the ``random`` selection).
        C, class_weight: the L2 logistic probe (scikit-learn's conventions).
        standardize: z-score each hook's neurons (mean and standard deviation over all rows,
            no labels involved) before selection and fitting.
        ignore_label, min_class_count: see :func:`binary_problems`.
        selection_options: extra keyword arguments of ``select_features`` (``n_candidates``,
            ``shrink``, ``l1_C``, ``n_bins``).
        tol: stopping tolerance of the Newton fits, on the largest gradient entry of the
            mean-loss objective (scikit-learn's lbfgs stops at 1e-4 on the same scale);
            ``None``: 1e-5 in float32 and 1e-10 in float64.
        device, dtype: where and in what precision to compute (default float32).
        out_path: if given, the records are written there as JSONL (atomically).
        progress: show a progress bar.

    Returns:
        One record per probe: ``hook``, ``feature`` (binary problem name), ``label`` (source
        feature), ``positive`` (the positive class), ``k``, ``selection``, ``f1``, ``mcc``,
        ``accuracy`` (on the test rows), ``train_loss``, ``selected`` (neuron indices, best
        first), ``n_train``, ``n_test``.
    """
    methods = [selection] if isinstance(selection, str) else list(selection)
    _check_options(methods, C, class_weight, test_size, tol)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype)
    if tol is None:
        tol = 1e-10 if dt == torch.float64 else 1e-5
    acts, n = _validate_activations(activations, dev, dt)
    _check_labels(labels, n)
    ks = sorted({int(k) for k in ks})
    width = min(a.shape[1] for a in acts.values())
    if not ks or ks[0] < 1 or ks[-1] > width:
        raise ValueError(f"every k must be in [1, smallest hook width={width}], got {ks}")
    problems = binary_problems(
        labels,
        test_size=test_size,
        seed=seed,
        ignore_label=ignore_label,
        min_class_count=min_class_count,
    )
    Y = torch.as_tensor(np.stack([p.y for p in problems]), dtype=dt, device=dev)
    W = torch.as_tensor(np.stack([p.train for p in problems]), dtype=dt, device=dev)
    # The fits' row weights, class-balanced once for every k and hook.
    W_fit = balanced_weights(Y, W) if class_weight == "balanced" else W
    test = torch.as_tensor(np.stack([p.test for p in problems]), device=dev)
    opts = dict(selection_options or {})

    hooks = list(acts)
    widths = {h: acts[h].shape[1] for h in hooks}
    XT, offset = _feature_major(acts, standardize, n, dt, dev)
    steps = len(hooks) * len(methods) + len(methods) * len(ks)
    bar = tqdm(total=steps, desc="probe sweep", disable=not progress)
    selected = _select_all(acts, Y, W, ks, methods, bar, C, class_weight, seed, dev, dt, tol, opts)
    records: list[dict[str, Any]] = []
    P = len(problems)
    n_train = W.sum(-1).long().tolist()
    n_test = test.sum(-1).tolist()
    # Labels, fit weights, boolean labels and test masks stacked for a chunk of c hooks.
    repeated: dict[int, tuple[torch.Tensor, ...]] = {}
    for m in methods:
        previous: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for k in ks:
            # All hooks' problems for this k, fitted in chunks of bounded memory.
            per_chunk = max(1, _MAX_ELEMENTS // max(1, P * n * (k + 1)))
            for a in range(0, len(hooks), per_chunk):
                chunk = hooks[a : a + per_chunk]
                idx = [selected[(m, h)][k] for h in chunk]
                Xg = _gather_designs(XT, offset, widths, chunk, idx, k, n)
                if len(chunk) not in repeated:
                    repeated[len(chunk)] = tuple(
                        t.repeat(len(chunk), 1) for t in (Y, W_fit, Y > 0.5, test)
                    )
                Yc, Wc, Yc_bool, test_c = repeated[len(chunk)]
                fit, z = _fit_chunk(Xg, Yc, Wc, chunk, idx, previous, k=k, C=C, tol=tol, dt=dt)
                met = binary_metrics(z > 0, Yc_bool, test_c)
                records += _chunk_records(chunk, idx, problems, fit, met, k, m, n_train, n_test)
            bar.update()
    bar.close()
    if out_path is not None:
        write_checked_jsonl(out_path, records)
    return ProbeRecords(records)


class ProbeRecords(list):
    """The records of a probe sweep (a plain list of dicts), shown in a notebook as the best
    F1 (and its k) of every (feature, hook)."""

    def best(self) -> list[dict[str, Any]]:
        """One row per (feature, hook): the probe with the highest test F1."""
        top: dict[tuple[str, str], dict[str, Any]] = {}
        for r in self:
            key = (r["feature"], r["hook"])
            if key not in top or r["f1"] > top[key]["f1"]:
                top[key] = r
        return [top[k] for k in sorted(top)]

    def _repr_html_(self) -> str:
        from hierlens.core.html_table import html_table

        rows = [
            {k: r[k] for k in ("feature", "hook", "k", "selection", "f1", "mcc")}
            for r in self.best()
        ]
        caption = f"probe sweep: {len(self)} probes; the best F1 per feature and hook"
        return html_table(["feature", "hook", "k", "selection", "f1", "mcc"], rows, caption)
