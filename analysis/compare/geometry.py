"""Geometry of a trained SAE's features at three scales [Li2024].

Features are the rows of the decoder ``W_dec`` ``(d_sae, d_in)`` (pass the tensor or any
SAE with a ``W_dec`` attribute).

- *Crystals* (atomic scale): difference vectors between features clustered with k-means
  (:func:`difference_clusters`); :func:`parallelogram_quality` of quadruples
  ``(a, b, c, d)`` with ``w_a + w_b - w_c ≈ w_d``, before and after projecting out the
  distractor directions that :func:`lda_directions` finds for a nuisance label.
- *Lobes* (brain scale): feature co-occurrence over tokens (:func:`cooccurrence`, phi or
  Jaccard), spectral clusters of it against spectral clusters of the decoder's cosine
  similarities, scored by adjusted mutual information against shuffled labels
  (:func:`lobe_alignment`).
- *Galaxy* (large scale): the eigenvalue spectrum of the point cloud
  (:func:`eigen_spectrum`), its power-law slope (:func:`power_law_slope`) and the
  k-means clustering entropy (:func:`clustering_entropy`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch

from .stats import Source, aligned_batches, check_sources, resolve


def decoder_rows(sae_or_w) -> torch.Tensor:
    """The ``(d_sae, d_in)`` feature directions of an SAE (``W_dec``) or of a tensor."""
    w = getattr(sae_or_w, "W_dec", sae_or_w)
    if isinstance(w, np.ndarray):
        w = torch.from_numpy(w)
    if not isinstance(w, torch.Tensor) or w.ndim != 2 or 0 in w.shape:
        raise TypeError("expected an SAE with W_dec or a non-empty (d_sae, d_in) tensor")
    w = w.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(w).all()):
        raise ValueError("decoder rows contain NaN or inf")
    return w


# ---------------------------------------------------------------------- crystals
def difference_clusters(
    w,
    n_clusters: int,
    *,
    features: Sequence[int] | None = None,
    normalize: bool = True,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means clusters of the difference vectors ``w_j - w_i`` over all ordered pairs
    ``i != j`` of ``features`` (default: all rows; ``m`` features give ``m(m-1)`` vectors).

    With ``normalize`` the differences are scaled to unit length first, so a cluster
    collects pairs related by the same *direction* (the edges of one crystal family).
    Returns ``(pairs (m(m-1), 2), labels (m(m-1),))``."""
    from sklearn.cluster import KMeans

    rows = decoder_rows(w)
    idx = torch.arange(rows.shape[0]) if features is None else torch.as_tensor(features)
    ii, jj = torch.meshgrid(idx, idx, indexing="ij")
    keep = ii != jj
    pairs = torch.stack([ii[keep], jj[keep]], 1)
    if len(pairs) < n_clusters:
        raise ValueError(f"{len(pairs)} difference vectors are fewer than n_clusters={n_clusters}")
    diffs = rows[pairs[:, 1]] - rows[pairs[:, 0]]
    if normalize:
        diffs = diffs / diffs.norm(dim=1, keepdim=True).clamp_min(1e-12)
    km = KMeans(n_clusters=n_clusters, n_init=4, random_state=seed).fit(diffs.numpy())
    return pairs, torch.as_tensor(km.labels_)


def lda_directions(points, labels, n_directions: int | None = None) -> torch.Tensor:
    """Orthonormal ``(k, d)`` directions that separate ``labels`` (a nuisance such as word
    length), from ``sklearn``'s ``LinearDiscriminantAnalysis`` (its discriminant scalings,
    orthonormalised; ``k <= n_classes - 1``). Project them out with :func:`project_out`."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x = decoder_rows(points).numpy()
    y = np.asarray(labels)
    if y.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},), got {y.shape}")
    if len(np.unique(y)) < 2:
        raise ValueError("lda_directions needs at least 2 nuisance classes")
    lda = LinearDiscriminantAnalysis(solver="svd", n_components=n_directions).fit(x, y)
    k = lda.scalings_.shape[1] if n_directions is None else n_directions
    q, _ = np.linalg.qr(lda.scalings_[:, :k])
    return torch.as_tensor(q.T)


def project_out(w, directions: torch.Tensor) -> torch.Tensor:
    """Rows of ``w`` ``(m, d)`` with their components along orthonormal ``directions``
    ``(k, d)`` removed."""
    rows = decoder_rows(w)
    q = directions.to(rows.dtype)
    return rows - (rows @ q.T) @ q


def parallelogram_quality(
    w, quads, *, distractors: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """How well ``w_a + w_b - w_c`` lands on ``w_d`` for each quadruple ``(a, b, c, d)``
    (``quads`` ``(q, 4)``; e.g. man:woman::king:queen is ``(woman, king, man, queen)``).

    - ``quality = 1 - ‖(w_a - w_c) - (w_d - w_b)‖ / (‖w_a - w_c‖ + ‖w_d - w_b‖)`` in
      ``[0, 1]``: 1 exactly when ``a, c, b, d`` form a parallelogram (the two opposite edges
      are equal vectors), 0 when the edges point in opposite directions;
    - ``hit``: whether ``w_d`` is the nearest row (Euclidean, excluding ``a, b, c``) to
      ``w_a + w_b - w_c``, the analogy-test criterion.

    With ``distractors`` ``(k, d)`` (e.g. from :func:`lda_directions`) both are computed
    on rows with those directions projected out."""
    rows = decoder_rows(w)
    if distractors is not None:
        rows = project_out(rows, distractors)
    q = torch.as_tensor(quads, dtype=torch.long)
    if q.ndim != 2 or q.shape[1] != 4 or int(q.min()) < 0 or int(q.max()) >= rows.shape[0]:
        raise ValueError(f"quads must be (q, 4) row indices below {rows.shape[0]}")
    a, b, c, d = (rows[q[:, k]] for k in range(4))
    e1, e2 = a - c, d - b
    quality = 1 - (e1 - e2).norm(dim=1) / (e1.norm(dim=1) + e2.norm(dim=1)).clamp_min(1e-12)
    target = a + b - c
    dist = torch.cdist(target, rows)
    dist.scatter_(1, q[:, :3], float("inf"))
    return {"quality": quality, "hit": dist.argmin(1) == q[:, 3]}


# ---------------------------------------------------------------------- lobes
def cooccurrence(
    codes: Source,
    *,
    measure: str = "phi",
    threshold: float = 0.0,
    sae=None,
    batch_size: int = 4096,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Feature co-occurrence over tokens, ``(d_sae, d_sae)``, streamed.

    A feature fires on a token when its code exceeds ``threshold``. ``codes`` is an
    ``(n, d_sae)`` tensor or ``(store, hook)``; with ``sae`` the rows are activations and are
    encoded batch by batch. ``measure="phi"``: the phi coefficient (Pearson correlation of
    the firing indicators; 0 for features that always or never fire); ``"jaccard"``:
    ``n_ij / (n_i + n_j - n_ij)`` (0 where neither fires)."""
    if measure not in ("phi", "jaccard"):
        raise ValueError(f"measure must be 'phi' or 'jaccard', got {measure!r}")
    n, _ = check_sources([codes])
    dev, _ = resolve(device, None)
    both = ones = None
    for (x,) in aligned_batches([codes], batch_size, dev, torch.float32):
        if sae is not None:
            with torch.no_grad():
                x = sae.encode(x.to(sae.W_dec.device, sae.W_dec.dtype))
        f = (x > threshold).to(torch.float64)
        both = f.T @ f if both is None else both + f.T @ f
        ones = f.sum(0) if ones is None else ones + f.sum(0)
    ni = ones
    if measure == "jaccard":
        union = ni[:, None] + ni[None, :] - both
        return torch.where(union > 0, both / union.clamp_min(1), 0.0).cpu()
    var = ni * (n - ni)
    den = torch.sqrt(torch.outer(var, var))
    phi = (n * both - torch.outer(ni, ni)) / den.clamp_min(1e-300)
    return torch.where(den > 0, phi, 0.0).clamp(-1, 1).cpu()


def spectral_clusters(affinity: torch.Tensor, n_clusters: int, seed: int = 0) -> np.ndarray:
    """Spectral clustering of a symmetric ``(m, m)`` affinity (negative entries are set to
    0; ``SpectralClustering(affinity="precomputed")``). Returns ``(m,)`` labels."""
    from sklearn.cluster import SpectralClustering

    a = torch.as_tensor(affinity, dtype=torch.float64).clamp_min(0).numpy()
    if a.ndim != 2 or a.shape[0] != a.shape[1] or not np.allclose(a, a.T):
        raise ValueError("affinity must be a symmetric (m, m) matrix")
    sc = SpectralClustering(n_clusters, affinity="precomputed", random_state=seed)
    return sc.fit_predict(a)


@dataclasses.dataclass(frozen=True)
class LobeAlignment:
    """Co-occurrence lobes vs geometric clusters.

    Attributes:
        ami: adjusted mutual information of the two clusterings.
        baseline_mean, baseline_std: AMI with the geometric labels shuffled.
        cooccurrence_labels, geometric_labels: ``(d_sae,)`` cluster labels.
    """

    ami: float
    baseline_mean: float
    baseline_std: float
    cooccurrence_labels: np.ndarray
    geometric_labels: np.ndarray


def lobe_alignment(
    w, cooc: torch.Tensor, n_clusters: int, *, n_shuffles: int = 100, seed: int = 0
) -> LobeAlignment:
    """Do features that fire together also sit together? Spectral clusters of the
    co-occurrence affinity ``cooc`` (from :func:`cooccurrence`) and of the decoder rows'
    cosine similarity (negative cosines set to 0), compared by
    ``sklearn.metrics.adjusted_mutual_info_score`` against ``n_shuffles`` random
    permutations of the geometric labels (Li et al. 2024, section 4)."""
    from sklearn.metrics import adjusted_mutual_info_score

    rows = decoder_rows(w)
    if tuple(cooc.shape) != (rows.shape[0], rows.shape[0]):
        raise ValueError(
            f"cooc must be ({rows.shape[0]}, {rows.shape[0]}), got {tuple(cooc.shape)}"
        )
    unit = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
    geo = spectral_clusters(unit @ unit.T, n_clusters, seed)
    co = spectral_clusters(cooc, n_clusters, seed)
    rng = np.random.default_rng(seed)
    base = [adjusted_mutual_info_score(co, rng.permutation(geo)) for _ in range(n_shuffles)]
    return LobeAlignment(
        float(adjusted_mutual_info_score(co, geo)),
        float(np.mean(base)),
        float(np.std(base)),
        co,
        geo,
    )


# ---------------------------------------------------------------------- galaxy
def eigen_spectrum(w) -> torch.Tensor:
    """Eigenvalues (descending, ``(min(d_sae, d_in),)``) of the covariance of the point
    cloud of decoder rows ``(d_sae, d_in)``."""
    rows = decoder_rows(w)
    if rows.shape[0] < 2:
        raise ValueError("eigen_spectrum needs at least 2 rows")
    x = rows - rows.mean(0)
    s = torch.linalg.svdvals(x)
    return s.pow(2) / (rows.shape[0] - 1)


def power_law_slope(eigenvalues: torch.Tensor, rank_range: tuple[int, int] | None = None) -> float:
    """Least-squares slope of ``log λ_r`` against ``log r`` over 1-based ranks
    ``r in [lo, hi]`` (inclusive). Default range: ``lo = max(1, ⌈0.05 m⌉)``,
    ``hi = max(lo + 1, ⌊0.5 m⌋)`` for ``m`` eigenvalues, which skips the few leading
    outliers and the numerical tail. ``λ ∝ r^-α`` gives ``-α``."""
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64).flatten()
    m = lam.shape[0]
    if rank_range is None:
        lo = max(1, math.ceil(0.05 * m))
        rank_range = (lo, max(lo + 1, m // 2))
    lo, hi = rank_range
    if not 1 <= lo < hi <= m:
        raise ValueError(f"rank_range must satisfy 1 <= lo < hi <= {m}, got {rank_range}")
    sel = lam[lo - 1 : hi]
    if not bool((sel > 0).all()):
        raise ValueError("eigenvalues in rank_range must be positive")
    lr = torch.log(torch.arange(lo, hi + 1, dtype=torch.float64))
    ll = torch.log(sel)
    lr_c = lr - lr.mean()
    return float((lr_c * (ll - ll.mean())).sum() / (lr_c**2).sum())


def clustering_entropy(w, n_clusters: int, *, seed: int = 0) -> dict[str, float]:
    """k-means clustering entropy of the point cloud (Li et al. 2024, section 5).

    ``entropy = -Σ_k p_k log p_k`` (nats) of the k-means cluster occupancies of the decoder
    rows, beside the same quantity for a Gaussian sample with the rows' mean and covariance
    (same size, ``seed``); ``difference = gaussian - entropy`` is positive for a clumpier
    cloud than a Gaussian."""
    from sklearn.cluster import KMeans

    rows = decoder_rows(w)
    if rows.shape[0] < n_clusters:
        raise ValueError(f"{rows.shape[0]} rows are fewer than n_clusters={n_clusters}")

    def entropy(x: np.ndarray) -> float:
        lab = KMeans(n_clusters, n_init=4, random_state=seed).fit_predict(x)
        p = np.bincount(lab, minlength=n_clusters) / len(lab)
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    x = rows.numpy()
    rng = np.random.default_rng(seed)
    g = rng.multivariate_normal(x.mean(0), np.cov(x.T), size=len(x), method="eigh")
    h, hg = entropy(x), entropy(g)
    return {"entropy": h, "gaussian": hg, "difference": hg - h}
