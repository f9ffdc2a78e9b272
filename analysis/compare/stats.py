"""Representation sources and the streamed second-moment statistics every comparison uses.

A *source* is either an in-memory ``(n_tokens, d)`` tensor (or numpy array) or a pair
``(store, hook)`` of an :class:`~hierlens.models.ActivationStore` and one of its hooks.
:func:`aligned_batches` walks several sources over the same rows in the same order, one
``(batch_size, d_k)`` block per source at a time, so memory is bounded by the batch size
(plus the store's shard window), whatever the number of tokens.

:class:`MomentStats` accumulates, for a list of sources, the sums ``Σ x``, the Gram matrices
``XᵀX``, every requested cross product ``XᵢᵀXⱼ`` and, for the debiased (unbiased-HSIC) CKA,
the row-norm terms ``Σ ‖x‖²``, ``Σ ‖x‖⁴``, ``Σ x ‖x‖²`` and ``Σ ‖xᵢ‖²‖yᵢ‖²``. Rows are shifted
by the first batch's mean before accumulating (a shifted-data algorithm: covariances and
the unbiased HSIC are translation invariant, and the shift avoids cancellation).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from hierlens.core.device import resolve_device, resolve_dtype
from hierlens.core.validate import check_int
from hierlens.models.store import ActivationStore

#: a representation: an ``(n_tokens, d)`` tensor/array or ``(ActivationStore, hook)``
Source = Any


def source_name(src: Source, k: int) -> str:
    """A short description of source ``k`` for error messages."""
    if isinstance(src, tuple):
        return f"source {k} ({src[1]!r})"
    return f"source {k}"


def check_source(src: Source, k: int) -> tuple[int, int]:
    """``(n_rows, d)`` of a source; ``TypeError``/``ValueError`` for anything else (in-memory
    tensors are also checked for NaN/inf here, before any work)."""
    if isinstance(src, tuple):
        if len(src) != 2 or not isinstance(src[0], ActivationStore) or not isinstance(src[1], str):
            raise TypeError(f"{source_name(src, k)}: expected (ActivationStore, hook) pair")
        store, hook = src
        if hook not in store:
            raise ValueError(f"{source_name(src, k)}: hook not in store; stored: {store.hooks}")
        bad = store.nonfinite.get(hook, 0)
        if bad:
            raise ValueError(f"{source_name(src, k)}: store holds {bad} NaN/inf values")
        return store.n_tokens, int(np.prod(store.token_shape(hook)))
    if isinstance(src, np.ndarray):
        src = torch.from_numpy(src)
    if not isinstance(src, torch.Tensor):
        raise TypeError(
            f"{source_name(src, k)}: expected a (n_tokens, d) tensor or (store, hook), "
            f"got {type(src).__name__}"
        )
    if src.ndim != 2:
        raise ValueError(
            f"{source_name(src, k)}: expected shape (n_tokens, d), got {tuple(src.shape)}"
        )
    if src.is_complex():
        raise TypeError(f"{source_name(src, k)}: expected a real tensor, got {src.dtype}")
    if src.is_floating_point() and not bool(torch.isfinite(src).all()):
        raise ValueError(f"{source_name(src, k)}: contains NaN or inf")
    return int(src.shape[0]), int(src.shape[1])


def check_sources(sources: Sequence[Source], min_rows: int = 2) -> tuple[int, list[int]]:
    """Validate sources that must share their rows; ``(n_rows, [d_k])``."""
    if len(sources) == 0:
        raise ValueError("expected at least one representation, got none")
    shapes = [check_source(s, k) for k, s in enumerate(sources)]
    rows = {n for n, _ in shapes}
    if len(rows) > 1:
        detail = ", ".join(
            f"{source_name(s, k)}: {n}" for k, (s, (n, _)) in enumerate(zip(sources, shapes))
        )
        raise ValueError(f"representations must share their rows (same tokens); got {detail}")
    n = rows.pop()
    if n < min_rows:
        raise ValueError(f"need at least {min_rows} rows (tokens) to compare, got {n}")
    return n, [d for _, d in shapes]


def aligned_batches(
    sources: Sequence[Source],
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype,
) -> Iterator[list[torch.Tensor]]:
    """Yield one ``(b, d_k)`` block per source over the same rows, in row order.

    Store sources are read with ``store.batches(hook, batch_size, shuffle=False)``; the rows
    of every store are checked to agree. Every block is checked for NaN/inf."""
    check_int("batch_size", batch_size)
    iters = []
    for src in sources:
        if isinstance(src, tuple):
            store, hook = src
            iters.append(store.batches(hook, batch_size, shuffle=False, window=1, return_rows=True))
        else:
            t = torch.from_numpy(src) if isinstance(src, np.ndarray) else src
            iters.append(_blocks(t, batch_size))
    for blocks in zip(*iters):
        rows = None
        out = []
        for k, (x, r) in enumerate(blocks):
            if r is not None:
                if rows is not None and not torch.equal(r, rows):
                    raise ValueError("stores deliver rows in different orders; cannot align them")
                rows = r
            x = x.reshape(x.shape[0], -1).to(device=device, dtype=dtype, non_blocking=True)
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"{source_name(sources[k], k)}: contains NaN or inf")
            out.append(x)
        yield out


def _blocks(t: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, None]]:
    for i in range(0, t.shape[0], batch_size):
        yield t[i : i + batch_size], None


def materialize(src: Source, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The whole ``(n, d)`` array of a source on ``device``."""
    if isinstance(src, tuple):
        return src[0][src[1]].reshape(src[0].n_tokens, -1).to(device=device, dtype=dtype)
    t = torch.from_numpy(src) if isinstance(src, np.ndarray) else src
    return t.to(device=device, dtype=dtype)


def resolve(device: str | torch.device | None, dtype: str | torch.dtype | None) -> tuple:
    """``(device, dtype)`` with the module defaults (CUDA when available; float64)."""
    return resolve_device(device), resolve_dtype(dtype, default=torch.float64)


class MomentStats:
    """Streamed first and second moments of ``len(sources)`` representations over shared rows.

    Parameters:
        dims: widths ``d_k`` of the sources.
        pairs: the ``(i, j)`` source pairs whose cross products ``XᵢᵀXⱼ`` are kept.
        gram: keep the full ``XᵢᵀXᵢ`` (``False``: only its diagonal, for unit correlations).
        row_norms: keep the row-norm terms the debiased CKA needs.
    """

    def __init__(
        self,
        dims: Sequence[int],
        pairs: Sequence[tuple[int, int]],
        device: torch.device,
        dtype: torch.dtype,
        gram: bool = True,
        row_norms: bool = False,
    ) -> None:
        z = dict(device=device, dtype=dtype)
        self.n = 0
        self.shift: list[torch.Tensor] | None = None
        self.sum = [torch.zeros(d, **z) for d in dims]
        self.gram = [torch.zeros(d, d, **z) if gram else torch.zeros(d, **z) for d in dims]
        self.full_gram = gram
        self.cross = {p: torch.zeros(dims[p[0]], dims[p[1]], **z) for p in pairs}
        self.row_norms = row_norms
        if row_norms:
            self.sq = [torch.zeros((), **z) for _ in dims]  # Σ ‖x‖²
            self.sq2 = [torch.zeros((), **z) for _ in dims]  # Σ ‖x‖⁴
            self.xsq = [torch.zeros(d, **z) for d in dims]  # Σ x ‖x‖²
            self.cross_sq = {p: torch.zeros((), **z) for p in pairs}  # Σ ‖xᵢ‖²‖yᵢ‖²
            self.cross_xsq = {p: torch.zeros(dims[p[0]], **z) for p in pairs}  # Σ x ‖y‖²
            self.cross_ysq = {p: torch.zeros(dims[p[1]], **z) for p in pairs}  # Σ y ‖x‖²

    def update(self, blocks: Sequence[torch.Tensor]) -> None:
        """Add one aligned block per source (``(b, d_k)`` each)."""
        if self.shift is None:
            self.shift = [x.mean(0) for x in blocks]
        xs = [x - s for x, s in zip(blocks, self.shift)]
        self.n += xs[0].shape[0]
        norms = [x.pow(2).sum(1) for x in xs] if self.row_norms else None
        for k, x in enumerate(xs):
            self.sum[k] += x.sum(0)
            self.gram[k] += x.T @ x if self.full_gram else x.pow(2).sum(0)
            if norms is not None:
                self.sq[k] += norms[k].sum()
                self.sq2[k] += norms[k].pow(2).sum()
                self.xsq[k] += x.T @ norms[k]
        for (i, j), c in self.cross.items():
            c += xs[i].T @ xs[j]
            if norms is not None:
                self.cross_sq[(i, j)] += norms[i] @ norms[j]
                self.cross_xsq[(i, j)] += xs[i].T @ norms[j]
                self.cross_ysq[(i, j)] += xs[j].T @ norms[i]

    # ------------------------------------------------------------------ derived
    def cov(self, k: int) -> torch.Tensor:
        """Centred Gram ``X̄ᵀX̄`` (``(d, d)``; its diagonal when ``gram=False``)."""
        mu = self.sum[k] / self.n
        if self.full_gram:
            return self.gram[k] - self.n * torch.outer(mu, mu)
        return self.gram[k] - self.n * mu * mu

    def cross_cov(self, i: int, j: int) -> torch.Tensor:
        """Centred cross product ``X̄ᵢᵀX̄ⱼ`` (``(d_i, d_j)``)."""
        return self.cross[(i, j)] - torch.outer(self.sum[i], self.sum[j]) / self.n

    def _hsic_terms(self, i: int, j: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``tr(K̃L̃)``, ``1ᵀK̃1·1ᵀL̃1`` and ``1ᵀK̃L̃1`` for linear kernels with zeroed diagonals."""
        if i == j:
            g, s, sq, sq2, xs = self.gram[i], self.sum[i], self.sq[i], self.sq2[i], self.xsq[i]
            tr = g.pow(2).sum() - sq2
            ones = (s @ s - sq) ** 2
            kl = s @ g @ s - 2 * (s @ xs) + sq2
            return tr, ones, kl
        c, si, sj = self.cross[(i, j)], self.sum[i], self.sum[j]
        tr = c.pow(2).sum() - self.cross_sq[(i, j)]
        ones = (si @ si - self.sq[i]) * (sj @ sj - self.sq[j])
        kl = si @ c @ sj - si @ self.cross_xsq[(i, j)] - sj @ self.cross_ysq[(i, j)]
        kl = kl + self.cross_sq[(i, j)]
        return tr, ones, kl

    def unbiased_hsic(self, i: int, j: int) -> torch.Tensor:
        """Unbiased HSIC [Song2012] of the linear kernels of sources ``i`` and ``j``."""
        n = self.n
        tr, ones, kl = self._hsic_terms(i, j)
        return (tr + ones / ((n - 1) * (n - 2)) - 2.0 * kl / (n - 2)) / (n * (n - 3))
