"""Neuron selection for k-sparse probes, batched over many binary problems on shared rows.

Following [Gurnee2023], a k-sparse probe first chooses ``k`` of the ``d`` neurons (or SAE
latents) and then fits a logistic regression on them. Every function here takes the activations
of one hook, ``X`` of shape ``(n, d)`` , shared by ``P`` binary problems with labels ``y``
``(P, n)`` in {0, 1} and row weights ``w`` ``(P, n)`` (0 = the row is not part of that problem,
e.g. a test row or a token where the label does not apply). Methods:

- ``mean_diff`` (default): ``|mean(x | y=1) - mean(x | y=0)|``.
- ``anova``: the one-way ANOVA F statistic (scikit-learn's ``f_classif``).
- ``mutual_info``: mutual information between the label and the neuron discretised into
  quantile bins (plug-in estimate, in nats).
- ``l1``: coefficient magnitude of an L1-regularised logistic regression (batched FISTA);
  neurons left at zero are ordered by mean difference.
- ``telescope``: fit an L2 probe on the current set, keep the largest ``|coef|``, shrink by
  ``shrink`` and repeat until ``k`` remain (passing through every requested ``k``).
- ``random``: a seeded random choice (baseline).
- ``exhaustive``: the exact best k-subset, by training log loss of the L2 probe, among the
  ``n_candidates`` best neurons by mean difference; all subsets are fitted in batches.

Scores are computed on ``X`` as given; standardise ``X`` first for scale-free rankings.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

import torch

from hierlens.core.device import resolve_device, resolve_dtype

from .logistic import _check_penalty, all_finite, balanced_weights, fit_logistic_rows

__all__ = [
    "SELECTIONS",
    "anova_scores",
    "default_n_candidates",
    "design_rows",
    "feature_major",
    "gather_columns",
    "l1_logistic",
    "mean_diff_scores",
    "mutual_info_scores",
    "quantile_bins",
    "select_features",
]

SELECTIONS = ("mean_diff", "anova", "mutual_info", "l1", "telescope", "random", "exhaustive")
_RANKINGS = ("mean_diff", "anova", "mutual_info", "l1", "random")
_MAX_ELEMENTS = 1 << 25  # per chunk of stacked design matrices


def gather_columns(X: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``(n, d)`` activations and ``(P, k)`` column indices -> ``(P, n, k)`` design matrices."""
    return X[:, idx].permute(1, 0, 2)


def feature_major(X: torch.Tensor) -> torch.Tensor:
    """``(n, d)`` activations -> ``(d + 1, n)``: one contiguous row per neuron, then a row of
    ones (the intercept), the layout :func:`design_rows` gathers from."""
    ones = torch.ones(1, X.shape[0], dtype=X.dtype, device=X.device)
    return torch.cat([X.T, ones]).contiguous()


def design_rows(XT: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Feature-major designs with intercept row, ``(P, k + 1, n)``, for column indices
    ``idx (P, k)`` from :func:`feature_major` output (input of ``fit_logistic_rows``)."""
    P, k = idx.shape
    ones = torch.full((P, 1), XT.shape[0] - 1, dtype=idx.dtype, device=idx.device)
    full = torch.cat([idx, ones], 1).reshape(-1)
    return XT.index_select(0, full).reshape(P, k + 1, XT.shape[1])


def _class_stats(X, y, w):
    w1 = w * y
    w0 = w * (1 - y)
    n1 = w1.sum(-1, keepdim=True)
    n0 = w0.sum(-1, keepdim=True)
    if bool(((n1 <= 0) | (n0 <= 0)).any()):
        raise ValueError("every problem needs rows of both classes (with positive weight)")
    m1 = (w1 @ X) / n1
    m0 = (w0 @ X) / n0
    return n1, n0, m1, m0


def mean_diff_scores(X: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``(P, d)`` absolute differences of the class means (weighted by ``w``)."""
    _, _, m1, m0 = _class_stats(X, y, w)
    return (m1 - m0).abs()


def anova_scores(X: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``(P, d)`` ANOVA F statistics of the two classes (``f_classif`` on the weighted rows).

    With 0/1 weights this is scikit-learn's ``f_classif`` on the rows of weight 1. Neurons with
    no within-class variance score ``inf`` if their means differ and 0 otherwise.
    """
    n1, n0, m1, m0 = _class_stats(X, y, w)
    n = n1 + n0
    m = (n1 * m1 + n0 * m0) / n
    between = n1 * (m1 - m) ** 2 + n0 * (m0 - m) ** 2
    # Within-class sum of squares, centred per class for numerical stability.
    within = (w * y) @ (X * X) - n1 * m1 * m1 + (w * (1 - y)) @ (X * X) - n0 * m0 * m0
    within = within.clamp_min(0)
    dof = (n - 2).clamp_min(1)
    scale = (X * X).amax(0).clamp_min(1e-30) * n
    tiny = within <= 1e-12 * scale
    f = between / (within / dof).clamp_min(1e-300)
    return torch.where(
        tiny, torch.where(between > 1e-12 * scale, torch.inf, torch.zeros_like(f)), f
    )


def quantile_bins(X: torch.Tensor, n_bins: int, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``(n, d)`` bin index in ``[0, n_bins)`` of every value by the column's quantiles.

    The ``j``-th bin edge is the first sorted value whose cumulative row weight (count when
    ``weight`` is ``None``) exceeds ``j / n_bins`` of the total, so integer weights act like
    repeated rows and zero weights like absent rows. Equal values always share a bin (a column
    with many ties, like a ReLU's zeros, gets fewer, larger bins).
    """
    n, d = X.shape
    w = torch.ones(n, dtype=X.dtype, device=X.device) if weight is None else weight.to(X.dtype)
    srt, order = X.sort(0)  # (n, d)
    cum = w[order].cumsum(0).T.contiguous()  # (d, n)
    total = cum[:, -1:]
    frac = torch.arange(1, n_bins, dtype=X.dtype, device=X.device) / n_bins
    thresholds = (total * frac).contiguous()  # (d, n_bins - 1)
    pos = torch.searchsorted(cum, thresholds, right=True).clamp_max(n - 1)
    edges = srt.T.gather(1, pos).contiguous()  # (d, n_bins - 1)
    return torch.searchsorted(edges, X.T.contiguous(), right=True).T


def _mi_term(pj: torch.Tensor, pb: torch.Tensor, pc: torch.Tensor) -> torch.Tensor:
    """``p(b, c) log(p(b, c) / (p(b) p(c)))``, 0 where ``p(b, c) = 0``."""
    tiny = torch.finfo(pj.dtype).tiny
    ratio = pj / (pb * pc).clamp_min(tiny)
    return torch.where(pj > 0, pj * torch.log(ratio.clamp_min(tiny)), 0.0)


def mutual_info_scores(
    X: torch.Tensor, y: torch.Tensor, w: torch.Tensor, n_bins: int = 16
) -> torch.Tensor:
    """``(P, d)`` plug-in mutual information (nats) between each binned neuron and the label,
    over the rows weighted by ``w``. Bins are the weighted quantile bins of ``X`` under ``w``
    when all problems share the same weights, else the quantile bins of all rows."""
    n, d = X.shape
    shared = bool((w == w[:1]).all())
    bins = quantile_bins(X, n_bins, w[0] if shared else None)
    out = torch.empty(y.shape[0], d, dtype=X.dtype, device=X.device)
    w1 = w * y
    w0 = w * (1 - y)
    tot = w.sum(-1)[:, None, None]
    step = max(1, _MAX_ELEMENTS // max(1, n * n_bins))
    for a in range(0, d, step):
        b = min(d, a + step)
        onehot = torch.nn.functional.one_hot(bins[:, a:b], n_bins).to(X.dtype).reshape(n, -1)
        c1 = (w1 @ onehot).reshape(-1, b - a, n_bins) / tot
        c0 = (w0 @ onehot).reshape(-1, b - a, n_bins) / tot
        pb = c1 + c0
        p1 = c1.sum(-1, keepdim=True)
        p0 = c0.sum(-1, keepdim=True)

        out[:, a:b] = (_mi_term(c1, pb, p1) + _mi_term(c0, pb, p0)).sum(-1)
    return out.clamp_min(0)


def l1_logistic(
    X: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    *,
    C: float | None = None,
    alpha_ratio: float = 0.05,
    class_weight: str | None = "balanced",
    max_iter: int = 1000,
    tol: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched L1-regularised logistic regression on shared rows (FISTA with restarts).

    Minimises ``||coef||_1 + C * sum_i s_i l_i`` (scikit-learn's convention; intercept not
    penalised) for each of the ``P`` problems. ``C=None`` picks, per problem, the strength
    ``alpha_ratio`` times the smallest one that zeroes every coefficient.

    Returns ``(coef (P, d), intercept (P,))``.
    """
    P, n = y.shape
    d = X.shape[1]
    s = balanced_weights(y, w) if class_weight == "balanced" else w
    S = s.sum(-1, keepdim=True)
    sn = s / S
    # Intercept-only solution: the weighted log-odds.
    p1 = (sn * y).sum(-1).clamp(1e-12, 1 - 1e-12)
    b0 = torch.log(p1 / (1 - p1))
    grad0 = ((sn * (torch.sigmoid(b0)[:, None] - y)) @ X).abs().amax(-1)
    alpha = alpha_ratio * grad0[:, None] if C is None else 1.0 / (C * S)
    # Lipschitz constant of the data term's gradient: 0.25 * largest eigenvalue of the
    # weighted Gram matrix of [X, 1] (power iteration).
    v = torch.ones(P, d + 1, dtype=X.dtype, device=X.device)
    for _ in range(30):
        u = sn * (v[:, :d] @ X.T + v[:, d:])
        v = torch.cat([u @ X, u.sum(-1, keepdim=True)], -1)
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    u = sn * (v[:, :d] @ X.T + v[:, d:])
    lip = 0.25 * (u * (v[:, :d] @ X.T + v[:, d:])).sum(-1, keepdim=True) * 1.05 + 1e-12
    step = 1.0 / lip

    def grad_f(coef, b):
        z = coef @ X.T + b[:, None]
        r = sn * (torch.sigmoid(z) - y)
        return r @ X, r.sum(-1), z

    coef = torch.zeros(P, d, dtype=X.dtype, device=X.device)
    b = b0.clone()
    zc, zb = coef.clone(), b.clone()
    t = torch.ones(P, 1, dtype=X.dtype, device=X.device)
    for _ in range(max_iter):
        gc, gb, _ = grad_f(zc, zb)
        raw = zc - step * gc
        new_coef = torch.sign(raw) * (raw.abs() - step * alpha).clamp_min(0)
        new_b = zb - step[:, 0] * gb
        # Gradient-based adaptive restart [ODonoghue2015]: drop the momentum when
        # it points against the proximal step.
        restart = (((zc - new_coef) * (new_coef - coef)).sum(-1) + (zb - new_b) * (new_b - b) > 0)[
            :, None
        ]
        t_new = torch.where(restart, torch.ones_like(t), (1 + torch.sqrt(1 + 4 * t * t)) / 2)
        mom = torch.where(restart, torch.zeros_like(t), (t - 1) / t_new)
        zc = new_coef + mom * (new_coef - coef)
        zb = new_b + mom[:, 0] * (new_b - b)
        moved = torch.maximum((new_coef - coef).abs().amax(-1), (new_b - b).abs())
        scale = torch.maximum(new_coef.abs().amax(-1), new_b.abs()).clamp_min(1.0)
        coef, b, t = new_coef, new_b, t_new
        if bool((moved <= tol * scale).all()):
            break
    return coef, b


def default_n_candidates(d: int, k: int, max_subsets: int = 4096) -> int:
    """The largest ``M <= d`` with ``C(M, k) <= max_subsets`` (at least ``k``)."""
    m = k
    while m < d and math.comb(m + 1, k) <= max_subsets:
        m += 1
    return m


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    # Stable descending order: ties keep the lower index first.
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[:, :k]


def _chunked_fit(XT, idx, y, w, k, *, C, class_weight, dtype, tol):
    """Fit L2 probes of ``P`` problems on columns ``idx (P, S, k)`` of the feature-major
    ``XT``; returns coef (P, S, k) and training loss (P, S)."""
    P, S, _ = idx.shape
    n = XT.shape[1]
    coef = torch.empty(P, S, k, dtype=dtype, device=XT.device)
    loss = torch.empty(P, S, dtype=dtype, device=XT.device)
    flat_idx = idx.reshape(P * S, k)
    prob = torch.arange(P, device=XT.device).repeat_interleave(S)
    step = max(1, _MAX_ELEMENTS // max(1, n * (k + 1)))
    for a in range(0, P * S, step):
        sl = slice(a, min(P * S, a + step))
        fit = fit_logistic_rows(
            design_rows(XT, flat_idx[sl]),
            y[prob[sl]],
            w[prob[sl]],
            C=C,
            class_weight=class_weight,
            tol=tol,
        )
        coef.view(P * S, k)[sl] = fit.coef
        loss.view(P * S)[sl] = fit.loss
    return coef, loss


def select_features(
    X: torch.Tensor,
    y: torch.Tensor,
    ks: int | Iterable[int],
    *,
    method: str = "mean_diff",
    sample_weight: torch.Tensor | None = None,
    C: float = 1.0,
    class_weight: str | None = "balanced",
    n_candidates: int | None = None,
    shrink: float = 0.5,
    l1_C: float | None = None,
    n_bins: int = 16,
    seed: int = 0,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    tol: float = 1e-8,
) -> dict[int, torch.Tensor]:
    """Choose ``k`` columns of ``X`` for each of ``P`` binary problems, for every ``k`` in ``ks``.

    Args:
        X: ``(n, d)`` activations shared by all problems.
        y: ``(P, n)`` (or ``(n,)``) labels in {0, 1}.
        ks: the sparsity levels wanted (each ``1 <= k <= d``).
        method: one of :data:`SELECTIONS` (see the module docstring).
        sample_weight: ``(P, n)`` (or ``(n,)``) row weights, 0 = not in the problem.
        C, class_weight: the L2 probe used by ``telescope`` and ``exhaustive``.
        n_candidates: ``exhaustive``: subsets are drawn from this many top neurons by mean
            difference (default :func:`default_n_candidates`); ``telescope``: the size of
            the starting set (default ``d``).
        shrink: ``telescope``: the fraction of neurons kept per round (``0 < shrink < 1``).
        l1_C: ``l1``: inverse L1 strength (``None``: 5% of the strength that zeroes all).
        n_bins: ``mutual_info``: quantile bins per neuron.
        seed: ``random``: the seed.
        device, dtype: where and in what precision to compute (default float64).

    Returns:
        ``{k: (P, k) long tensor}`` of column indices (best first where a ranking exists;
        ``exhaustive`` subsets in candidate order).
    """
    if method not in SELECTIONS:
        raise ValueError(f"unknown selection {method!r}; expected one of {', '.join(SELECTIONS)}")
    _check_penalty(C, class_weight)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, default=torch.float64)
    X = torch.as_tensor(X).to(device=dev, dtype=dt)
    if X.ndim != 2:
        raise ValueError(f"X must be (n, d), got shape {tuple(X.shape)}")
    n, d = X.shape
    y = torch.as_tensor(y).to(device=dev, dtype=dt)
    if y.ndim == 1:
        y = y[None]
    if y.ndim != 2 or y.shape[1] != n:
        raise ValueError(f"y must be (P, n) with n = {n}, got shape {tuple(y.shape)}")
    if not bool(((y == 0) | (y == 1)).all()):
        raise ValueError("y must hold binary labels 0/1")
    P = y.shape[0]
    w = (
        torch.ones(P, n, dtype=dt, device=dev)
        if sample_weight is None
        else torch.as_tensor(sample_weight).to(device=dev, dtype=dt).expand(P, n)
    )
    ks = sorted({int(k) for k in ([ks] if isinstance(ks, int) else ks)})
    if not ks:
        raise ValueError("ks is empty")
    if ks[0] < 1 or ks[-1] > d:
        raise ValueError(f"every k must be in [1, n_features={d}], got {ks}")
    if not all_finite(X):
        raise ValueError("X contains NaN or infinite values")
    if not (all_finite(w) and bool((w >= 0).all())):
        raise ValueError("sample_weight must be finite and non-negative")
    if not 0 < shrink < 1:
        raise ValueError(f"shrink must be in (0, 1), got {shrink!r}")

    if method == "random":
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        order = torch.rand(P, d, generator=gen).argsort(-1).to(dev)
        return {k: order[:, :k] for k in ks}
    md = mean_diff_scores(X, y, w)
    if method == "mean_diff":
        order = _top(md, d)
    elif method == "anova":
        order = _top(anova_scores(X, y, w), d)
    elif method == "mutual_info":
        order = _top(mutual_info_scores(X, y, w, n_bins), d)
    elif method == "l1":
        coef, _ = l1_logistic(X, y, w, C=l1_C, class_weight=class_weight)
        by_md = _top(md, d)
        mag = coef.abs().gather(1, by_md)
        order = by_md.gather(1, torch.sort(mag, dim=-1, descending=True, stable=True).indices)
    elif method == "telescope":
        return _telescope(X, y, w, ks, md, C, class_weight, n_candidates, shrink, dt, tol)
    else:
        return _exhaustive(X, y, w, ks, md, C, class_weight, n_candidates, dt, tol)
    return {k: order[:, :k] for k in ks}


def _telescope(X, y, w, ks, md, C, class_weight, n_start, shrink, dt, tol):
    d = X.shape[1]
    XT = feature_major(X)
    m0 = d if n_start is None else int(n_start)
    if not ks[-1] <= m0 <= d:
        raise ValueError(f"telescope: n_candidates must be in [max k={ks[-1]}, d={d}], got {m0}")
    targets = sorted(ks, reverse=True)
    cur = _top(md, m0)
    out: dict[int, torch.Tensor] = {}
    size = m0
    while targets:
        if size == targets[0]:
            out[size] = cur
            targets.pop(0)
            if not targets:
                break
        coef, _ = _chunked_fit(
            XT, cur[:, None, :], y, w, size, C=C, class_weight=class_weight, dtype=dt, tol=tol
        )
        rank = torch.sort(coef[:, 0].abs(), dim=-1, descending=True, stable=True).indices
        new = max(targets[0], int(size * shrink))
        cur = cur.gather(1, rank[:, :new])
        size = new
    return out


def _exhaustive(X, y, w, ks, md, C, class_weight, n_candidates, dt, tol):
    d = X.shape[1]
    P = y.shape[0]
    XT = feature_major(X)
    out: dict[int, torch.Tensor] = {}
    for k in ks:
        m = default_n_candidates(d, k) if n_candidates is None else int(n_candidates)
        if not k <= m <= d:
            raise ValueError(f"exhaustive: n_candidates must be in [k={k}, d={d}], got {m}")
        cand = _top(md, m)  # (P, m)
        subsets = torch.tensor(list(itertools.combinations(range(m), k)), device=X.device)
        idx = cand[:, subsets]  # (P, S, k)
        _, loss = _chunked_fit(XT, idx, y, w, k, C=C, class_weight=class_weight, dtype=dt, tol=tol)
        best = loss.argmin(-1)
        out[k] = idx[torch.arange(P, device=X.device), best]
    return out
