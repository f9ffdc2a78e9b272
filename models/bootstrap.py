"""Percentile bootstrap over sentences (Efron & Tibshirani 1993, "An Introduction to the
Bootstrap", chapter 13): how much a corpus-level score (UUAS, distance Spearman, parse F1)
would move had other sentences of the same kind been drawn.

A resample draws ``n`` of the ``n`` sentences with replacement; resample ``b`` is
``numpy.random.default_rng(seed)``'s ``b``-th call of ``integers(0, n, size=n)``, so a run
is reproducible from its seed. The scores here are ratios of per-sentence sums, so each
resample is given to the statistic as its *weights* ``W[b, i]``, the number of times sentence
``i`` was drawn, and the statistic computes its sums as ``W @ per_sentence_values`` (one
matrix product for a block of resamples instead of re-scoring every resample).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from hierlens.core.validate import check_int

__all__ = ["MIN_SENTENCES", "bootstrap_interval", "ratio"]

#: a split of fewer sentences than this gets a warning: its scores mean little
MIN_SENTENCES = 20

_BLOCK = 256  # resamples whose weights are held at once


def bootstrap_interval(
    statistic: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """The percentile interval at ``level`` of ``statistic`` over ``n_resamples`` resamples
    of ``n`` sentences.

    Args:
        statistic: maps weights ``(b, n)`` (see the module docstring) to the ``(b,)`` scores
            of those resamples; NaN where a resample has no score (those are left out).
        n: the number of sentences.

    Returns:
        ``(low, high)``: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles (numpy's
        linear interpolation); ``(nan, nan)`` when no resample has a score.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    check_int("n_resamples", n_resamples)
    values = []
    rng = np.random.default_rng(seed)
    for start in range(0, n_resamples, _BLOCK):
        b = min(_BLOCK, n_resamples - start)
        weights = np.empty((b, n), dtype=np.int64)
        for row in range(b):
            weights[row] = np.bincount(rng.integers(0, n, size=n), minlength=n)
        values.append(np.asarray(statistic(weights), dtype=np.float64).reshape(b))
    v = np.concatenate(values)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(v, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` elementwise, NaN where ``den`` is 0."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out
