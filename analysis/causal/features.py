"""Interventions through SAE features and probe directions, scored by the task's own metric.

Edits (functions ``activation -> activation`` for :func:`~.sites.editing_hooks`):

- :func:`sae_feature_edit`: set chosen SAE features to zero, to a mean, or to their values
  on a source input, keeping the SAE's reconstruction error: ``x + (f' - f) W_dec[F]`` for the
  features ``F`` (Marks et al., "Sparse Feature Circuits", 2024, keep the error term the same
  way);
- :func:`neuron_edit`: zero or mean-ablate neurons, e.g. the ones a sparse probe selected
  (``SparseProbe.selected_``);
- :func:`projection_edit`: remove the span of probe directions (amnesic probing, Elazar et
  al. 2021; INLP, Ravfogel et al. 2020: iterate fit-and-project, then remove every direction
  found);
- :func:`steering_edit`: add ``alpha`` times a unit direction (steering along a probe).

:func:`task_metric_under` evaluates a task's own metric (``Task.evaluate``) with edits in
place, at the positions the edit is given (all positions by default), so "is the depth
feature used for closing brackets?" is ``task_metric_under(model, task, {hook: edit})``
against the unedited metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from hierlens.models.tasks.base import Task

from .sites import Edit, editing_hooks

__all__ = [
    "inlp_directions",
    "neuron_edit",
    "projection_edit",
    "sae_feature_edit",
    "steering_edit",
    "task_metric_under",
]


def _features(index: Sequence[int] | torch.Tensor, width: int, what: str) -> torch.Tensor:
    idx = torch.as_tensor(index, dtype=torch.int64).flatten()
    if idx.numel() == 0:
        raise ValueError(f"no {what} chosen")
    if int(idx.min()) < 0 or int(idx.max()) >= width:
        raise ValueError(f"{what} {idx.tolist()} out of range for width {width}")
    return idx


def sae_feature_edit(
    sae,
    features: Sequence[int] | torch.Tensor,
    mode: str = "zero",
    value: torch.Tensor | None = None,
) -> Edit:
    """Set SAE ``features`` at every position: ``mode`` "zero", "mean" (``value`` ``(F,)``:
    the features' mean activation) or "patch" (``value`` ``(B, T, F)``: their activations
    on the source inputs). The reconstruction error is kept, so only the chosen features'
    decoder contributions change."""
    idx = _features(features, sae.d_sae, "SAE features")
    if mode not in ("zero", "mean", "patch"):
        raise ValueError(f"mode must be 'zero', 'mean' or 'patch', got {mode!r}")
    if mode != "zero" and value is None:
        raise ValueError(f"mode {mode!r} needs the features' values")
    dec = sae.W_dec[idx]  # (F, d)

    def fn(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != sae.d_in:
            raise ValueError(f"the SAE reads width {sae.d_in}, the hook gives {x.shape[-1]}")
        f = sae.encode(x)[..., idx]
        new = torch.zeros_like(f) if mode == "zero" else value.to(f.device, f.dtype).expand_as(f)
        return x + ((new - f).to(dec.dtype) @ dec).to(x.dtype)

    return fn


def neuron_edit(
    neurons: Sequence[int] | torch.Tensor, mode: str = "zero", mean: torch.Tensor | None = None
) -> Edit:
    """Zero (``mode="zero"``) or mean-ablate (``"mean"``, ``mean`` ``(N,)``) the given
    neurons of the flattened activation (e.g. a sparse probe's ``selected_``)."""
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}")
    if mode == "mean" and mean is None:
        raise ValueError("mode 'mean' needs the neurons' means")

    def fn(x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(*x.shape[:2], -1)
        idx = _features(neurons, flat.shape[-1], "neurons").to(x.device)
        out = flat.clone()
        out[..., idx] = 0.0 if mode == "zero" else mean.to(x.device, x.dtype)
        return out.reshape(x.shape)

    return fn


def _orthonormal(directions: torch.Tensor) -> torch.Tensor:
    d = torch.as_tensor(directions, dtype=torch.float64)
    if d.dim() == 1:
        d = d[None]
    if d.dim() != 2 or not bool(torch.isfinite(d).all()) or bool((d.norm(dim=1) == 0).any()):
        raise ValueError("directions must be finite, non-zero, (k, d) or (d,)")
    q, _ = torch.linalg.qr(d.T)
    return q.T  # (k, d)


def projection_edit(directions: torch.Tensor) -> Edit:
    """Remove the span of ``directions`` ``(k, d)`` from the flattened activation:
    ``x - x Q^T Q`` with ``Q`` an orthonormal basis of the span (amnesic / INLP removal)."""
    Q = _orthonormal(directions)

    def fn(x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(*x.shape[:2], -1)
        if flat.shape[-1] != Q.shape[1]:
            raise ValueError(f"directions have width {Q.shape[1]}, the hook {flat.shape[-1]}")
        q = Q.to(x.device, x.dtype)
        return (flat - (flat @ q.T) @ q).reshape(x.shape)

    return fn


def steering_edit(direction: torch.Tensor, alpha: float) -> Edit:
    """Add ``alpha`` times the unit ``direction`` ``(d,)`` at every position."""
    d = torch.as_tensor(direction, dtype=torch.float64).flatten()
    if not bool(torch.isfinite(d).all()) or float(d.norm()) == 0.0:
        raise ValueError("the steering direction must be finite and non-zero")
    u = d / d.norm()  # its own sign (a QR basis could flip it)

    def fn(x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(*x.shape[:2], -1)
        return (flat + alpha * u.to(x.device, x.dtype)).reshape(x.shape)

    return fn


def inlp_directions(
    X: torch.Tensor, y: torch.Tensor, n_directions: int, seed: int = 0
) -> torch.Tensor:
    """Iterative nullspace projection (Ravfogel et al., ACL 2020): fit a linear classifier
    (scikit-learn logistic regression) of ``y`` from ``X`` ``(n, d)``, project its weight
    rows out of ``X``, repeat; returns the ``(m, d)`` weight rows found (``m <= n_directions
    * n_classes``)."""
    from sklearn.linear_model import LogisticRegression

    X = torch.as_tensor(X, dtype=torch.float64)
    y = torch.as_tensor(y)
    if X.dim() != 2 or len(X) != len(y):
        raise ValueError("X must be (n, d) with one label per row")
    if len(torch.unique(y)) < 2:
        raise ValueError("INLP needs at least two classes")
    found = []
    current = X.clone()
    for _ in range(n_directions):
        clf = LogisticRegression(max_iter=2000, random_state=seed)
        clf.fit(current.numpy(), y.numpy())
        w = torch.from_numpy(clf.coef_).to(torch.float64)
        found.append(w)
        Q = _orthonormal(torch.cat(found))
        current = X - (X @ Q.T) @ Q
    return torch.cat(found)


def task_metric_under(
    model: torch.nn.Module,
    task: Task,
    edits: Mapping[str, Edit],
    *,
    split: str = "test_id",
    n: int = 500,
    seed: int = 12345,
) -> dict[str, float]:
    """``task.evaluate(model, split, n)`` with ``edits`` applied at their hooks."""
    with editing_hooks(model, edits):
        return task.evaluate(model, split, n, seed=seed)
