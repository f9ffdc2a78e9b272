"""Similarity of representations over the same tokens: CKA, SVCCA, PWCCA, Procrustes.

Measures (each for two representations ``X`` ``(n, d_x)`` and ``Y`` ``(n, d_y)`` of the same
``n`` tokens; ``X̄`` is ``X`` with its column means removed):

- ``"linear_cka"`` [Kornblith2019]: ``‖X̄ᵀȲ‖²_F / (‖X̄ᵀX̄‖_F ‖ȲᵀȲ‖_F)``; with
  ``debiased=True`` the ratio of unbiased HSIC estimates [Song2012] [Nguyen2021], less biased
  for small ``n`` (needs ``n >= 4`` ; may be slightly negative).
- ``"rbf_cka"``: CKA of Gaussian kernels ``exp(-‖xᵢ-xⱼ‖²/(2σ²))`` with
  ``σ = bandwidth · median_{i<j} ‖xᵢ-xⱼ‖`` (median heuristic), biased or debiased HSIC.
- ``"svcca"`` [Raghu2017]: keep the top principal directions of each side that
  explain a fraction ``keep`` (0.99) of its variance, then the mean of the canonical
  correlations between the two reduced representations.
- ``"pwcca"`` [Morcos2018]: canonical correlations weighted by how much of ``X``
  each canonical variate accounts for, ``αᵢ = Σⱼ |⟨hᵢ, x̄ⱼ⟩|`` (``hᵢ`` the unit-variance
  canonical variates of ``X``, ``x̄ⱼ`` its centred columns); asymmetric: weights come from
  the first argument. Only numerically null directions are dropped.
- ``"procrustes"`` [Ding2021]: the squared orthogonal Procrustes
  distance of the centred, Frobenius-normalised representations,
  ``min_R ‖X̄/‖X̄‖ - Ȳ/‖Ȳ‖·R‖²_F = 2 - 2‖X̄ᵀȲ‖_* / (‖X̄‖_F‖Ȳ‖_F)`` in ``[0, 2]`` (the
  narrower side is zero-padded, so widths may differ).

**Streaming.** linear CKA (biased and debiased), SVCCA, PWCCA and Procrustes depend on the
data only through ``X̄ᵀX̄``, ``X̄ᵀȲ``, ``ȲᵀȲ`` (and row-norm sums for the debiased CKA), so
they are computed from statistics accumulated over row batches: memory is
``O(Σ d² + batch·Σ d)``, never ``O(n)``. RBF CKA needs ``n × n`` kernels: it runs on an
explicit random sample of ``max_rows`` rows (``seed``), the same rows for every source.
A measure is ``nan`` where a representation is constant (zero variance).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .stats import MomentStats, Source, aligned_batches, check_sources, materialize, resolve

MEASURES = ("linear_cka", "rbf_cka", "svcca", "pwcca", "procrustes")
_STREAMED = ("linear_cka", "svcca", "pwcca", "procrustes")


def hsic(k: torch.Tensor, l: torch.Tensor, debiased: bool = False) -> torch.Tensor:  # noqa: E741
    """HSIC of two ``(n, n)`` kernel matrices.

    Biased: ``tr(KHLH)/(n-1)²`` (``H`` the centring matrix). Debiased: the unbiased estimator
    of Song et al. (2012), ``[tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1/((n-1)(n-2)) - 2/(n-2)·1ᵀK̃L̃1] / (n(n-3))``
    with ``K̃``, ``L̃`` the kernels with zeroed diagonals (needs ``n >= 4``)."""
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape != l.shape:
        raise ValueError(f"expected two (n, n) kernels, got {tuple(k.shape)} and {tuple(l.shape)}")
    n = k.shape[0]
    if not debiased:
        kc = k - k.mean(0, keepdim=True)
        kc = kc - kc.mean(1, keepdim=True)
        lc = l - l.mean(0, keepdim=True)
        lc = lc - lc.mean(1, keepdim=True)
        return (kc * lc).sum() / (n - 1) ** 2
    if n < 4:
        raise ValueError(f"the debiased HSIC needs at least 4 rows, got {n}")
    kt = k - torch.diag(torch.diagonal(k))
    lt = l - torch.diag(torch.diagonal(l))
    k1, l1 = kt.sum(1), lt.sum(1)
    tr = (kt * lt).sum()
    return (tr + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2.0 * (k1 @ l1) / (n - 2)) / (
        n * (n - 3)
    )


def rbf_kernel(x: torch.Tensor, bandwidth: float = 1.0) -> torch.Tensor:
    """Gaussian kernel ``(n, n)`` of rows of ``x`` ``(n, d)`` with
    ``σ = bandwidth · median_{i<j} ‖xᵢ - xⱼ‖``. ``ValueError`` when all rows are equal."""
    sq = x.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * x @ x.T).clamp_min(0)
    iu = torch.triu_indices(x.shape[0], x.shape[0], 1, device=x.device)
    dist = d2[iu[0], iu[1]].sqrt().sort().values
    m = dist.shape[0]
    med = (dist[(m - 1) // 2] + dist[m // 2]) / 2  # the usual median (mean of middle two)
    if not bool(med > 0):
        raise ValueError("rbf kernel: the median pairwise distance is 0 (rows all equal)")
    sigma = bandwidth * med
    return torch.exp(-d2 / (2.0 * sigma**2))


def _reduce(c: torch.Tensor, keep: float) -> torch.Tensor:
    """Whitening map ``(d, k)`` onto the top principal directions of covariance ``c`` that
    explain a fraction ``keep`` of its variance (numerically null directions always go)."""
    evals, evecs = torch.linalg.eigh(c)
    evals, evecs = evals.flip(0), evecs.flip(1)
    evals = evals.clamp_min(0)
    total = evals.sum()
    if not bool(total > 0):
        return evecs[:, :0]
    tol = evals[0] * c.shape[0] * torch.finfo(c.dtype).eps * 10
    n_pos = int((evals > tol).sum())
    frac = torch.cumsum(evals, 0) / total
    k = int((frac < keep - 1e-12).sum()) + 1
    k = max(1, min(k, n_pos))
    return evecs[:, :k] / evals[:k].sqrt()


def _cca(cxx, cyy, cxy, keep: float, weighted: bool) -> torch.Tensor:
    wx, wy = _reduce(cxx, keep), _reduce(cyy, keep)
    if wx.shape[1] == 0 or wy.shape[1] == 0:
        return torch.tensor(float("nan"), dtype=cxx.dtype)
    u, s, _ = torch.linalg.svd(wx.T @ cxy @ wy, full_matrices=False)
    rho = s.clamp(0, 1)
    if not weighted:
        return rho.mean()
    alpha = (cxx @ wx @ u).abs().sum(0)  # Σ_j |⟨h_i, x̄_j⟩| per canonical variate
    return (alpha * rho).sum() / alpha.sum()


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return num / den if bool(den > 0) else torch.tensor(float("nan"), dtype=num.dtype)


def _sample_rows(
    sources: Sequence[Source],
    n: int,
    max_rows: int | None,
    seed: int,
    batch_size: int,
    device,
    dtype,
) -> list[torch.Tensor]:
    """The same ``min(n, max_rows)`` random rows (sorted, ``seed``) of every source."""
    if max_rows is None or max_rows >= n:
        return [materialize(s, device, dtype) for s in sources]
    gen = torch.Generator().manual_seed(int(seed))
    rows = torch.randperm(n, generator=gen)[:max_rows].sort().values
    keep = torch.zeros(n, dtype=torch.bool)
    keep[rows] = True
    parts: list[list[torch.Tensor]] = [[] for _ in sources]
    start = 0
    for blocks in aligned_batches(sources, batch_size, device, dtype):
        m = keep[start : start + blocks[0].shape[0]].to(device)
        start += blocks[0].shape[0]
        for k, x in enumerate(blocks):
            parts[k].append(x[m])
    return [torch.cat(p) for p in parts]


def similarity_matrix(
    xs: Sequence[Source],
    ys: Sequence[Source] | None = None,
    *,
    measures: Sequence[str] = ("linear_cka",),
    debiased: bool = False,
    keep: float = 0.99,
    bandwidth: float = 1.0,
    max_rows: int | None = 2000,
    seed: int = 0,
    batch_size: int = 4096,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Every measure between every ``xs[i]`` and ``ys[j]`` in one streamed pass.

    Args:
        xs, ys: representations of the same tokens: ``(n, d_k)`` tensors/arrays or
            ``(ActivationStore, hook)`` pairs (e.g. all hooks of two checkpoints).
            ``ys=None`` compares ``xs`` with itself.
        measures: names from :data:`MEASURES` (see the module docstring).
        debiased: unbiased-HSIC estimator for the CKAs (needs ``n >= 4``).
        keep: variance fraction SVCCA keeps per side (Raghu et al. use 0.99).
        bandwidth: RBF width as a multiple of the median pairwise distance.
        max_rows: rows sampled (``seed``) for RBF CKA, the only measure that needs all
            ``n × n`` pairs; ``None`` uses every row.
        batch_size: rows per streamed block.
        device, dtype: where and in which precision to accumulate (default CUDA when
            available, float64).

    Returns:
        ``{measure: (len(xs), len(ys)) float64 CPU tensor}``.
    """
    bad = [m for m in measures if m not in MEASURES]
    if bad or not measures:
        raise ValueError(f"unknown measure(s) {bad}; choose from {MEASURES}")
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    if max_rows is not None and max_rows < 4:
        raise ValueError(f"max_rows must be at least 4 or None, got {max_rows}")
    xs = list(xs)
    same = ys is None
    ys = xs if same else list(ys)
    sources = xs if same else xs + ys
    n, dims = check_sources(sources, min_rows=4 if debiased else 2)
    dev, dt = resolve(device, dtype)
    a, b = len(xs), len(ys)
    yoff = 0 if same else a
    pairs = [(i, yoff + j) for i in range(a) for j in range(b) if (not same or i < j)]
    out = {m: torch.full((a, b), float("nan"), dtype=torch.float64) for m in measures}
    streamed = [m for m in measures if m in _STREAMED]
    if streamed:
        stats = MomentStats(dims, pairs, dev, dt, row_norms=debiased and "linear_cka" in streamed)
        for blocks in aligned_batches(sources, batch_size, dev, dt):
            stats.update(blocks)
        covs = [stats.cov(k) for k in range(len(sources))]

        def cross(i: int, j: int) -> torch.Tensor:
            return covs[i] if i == j else stats.cross_cov(i, j)

        for i in range(a):
            for j in range(b):
                jj = yoff + j
                if same and i > j:
                    p, flip = (jj, i), True
                else:
                    p, flip = (i, jj), False
                c = cross(*p).T if flip else cross(*p)
                for m in streamed:
                    if m == "linear_cka" and debiased:
                        v = _ratio(
                            stats.unbiased_hsic(*p),
                            (stats.unbiased_hsic(i, i) * stats.unbiased_hsic(jj, jj))
                            .clamp_min(0)
                            .sqrt(),
                        )
                    elif m == "linear_cka":
                        v = _ratio(c.pow(2).sum(), covs[i].norm() * covs[jj].norm())
                    elif m in ("svcca", "pwcca"):
                        v = _cca(covs[i], covs[jj], c, keep if m == "svcca" else 1.0, m == "pwcca")
                    else:
                        nrm = (torch.trace(covs[i]) * torch.trace(covs[jj])).sqrt()
                        v = 2.0 - 2.0 * _ratio(torch.linalg.svdvals(c).sum(), nrm)
                        v = v.clamp_min(0)
                    out[m][i, j] = float(v)
    if "rbf_cka" in measures:
        rows = _sample_rows(sources, n, max_rows, seed, batch_size, dev, dt)
        kernels = [rbf_kernel(r, bandwidth) for r in rows]
        self_h = [hsic(k, k, debiased) for k in kernels]
        for i in range(a):
            for j in range(b):
                jj = yoff + j
                den = (self_h[i] * self_h[jj]).clamp_min(0).sqrt()
                out["rbf_cka"][i, j] = float(_ratio(hsic(kernels[i], kernels[jj], debiased), den))
    return out


def _one(x: Source, y: Source, measure: str, **kw) -> float:
    return float(similarity_matrix([x], [y], measures=(measure,), **kw)[measure][0, 0])


def linear_cka(x: Source, y: Source, *, debiased: bool = False, **kw) -> float:
    """Linear CKA of ``x`` ``(n, d_x)`` and ``y`` ``(n, d_y)`` ([Kornblith2019];
    ``debiased``: [Nguyen2021]). Streamed; ``kw`` as in :func:`similarity_matrix`."""
    return _one(x, y, "linear_cka", debiased=debiased, **kw)


def rbf_cka(x: Source, y: Source, *, bandwidth: float = 1.0, debiased: bool = False, **kw) -> float:
    """RBF-kernel CKA (median-heuristic width ``bandwidth · median distance``) on at most
    ``max_rows`` sampled rows (``seed``); ``kw`` as in :func:`similarity_matrix`."""
    return _one(x, y, "rbf_cka", bandwidth=bandwidth, debiased=debiased, **kw)


def svcca(x: Source, y: Source, *, keep: float = 0.99, **kw) -> float:
    """SVCCA [Raghu2017]: mean canonical correlation after keeping the principal
    directions explaining ``keep`` of each side's variance. Streamed."""
    return _one(x, y, "svcca", keep=keep, **kw)


def pwcca(x: Source, y: Source, **kw) -> float:
    """PWCCA [Morcos2018]: canonical correlations weighted by their share of ``x``.
    Streamed."""
    return _one(x, y, "pwcca", **kw)


def procrustes_distance(x: Source, y: Source, **kw) -> float:
    """Squared orthogonal Procrustes distance of the centred, unit-Frobenius-norm
    representations (Ding et al. 2021), in ``[0, 2]``. Streamed."""
    return _one(x, y, "procrustes", **kw)
