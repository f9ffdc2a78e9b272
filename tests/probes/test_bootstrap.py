"""Bootstrap intervals over sentences of UUAS, distance Spearman and parse F1, against a
slow reference: every resample re-scored by the metric itself on the drawn sentences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hierlens.analysis.trees.metrics import (
    baseline_trees,
    parse_f1,
    parse_f1_interval,
    random_tree,
)
from hierlens.models import shipped_treebank
from hierlens.models.bootstrap import bootstrap_interval
from hierlens.probes.structural_metrics import (
    distance_spearman,
    spearman_interval,
    uuas,
    uuas_interval,
)

B, SEED = 40, 7


def _slow(score, items, level=0.95, B=B):
    """Draw resample b as the b-th ``integers(0, n, size=n)`` of a fresh generator, score
    the drawn list with the metric, and take numpy's percentiles of the finite scores."""
    rng = np.random.default_rng(SEED)
    n = len(items[0])
    values = []
    for _ in range(B):
        idx = rng.integers(0, n, size=n)
        values.append(score(*[[seq[i] for i in idx] for seq in items]))
    v = np.asarray([x for x in values if math.isfinite(x)])
    return tuple(np.quantile(v, [(1 - level) / 2, (1 + level) / 2]))


def _noisy_distances(seed=0, n=24):
    sentences = shipped_treebank("ptb")[:n]
    rng = np.random.default_rng(seed)
    gold = [s.distances().astype(float) for s in sentences]
    pred = []
    for g in gold:
        noise = rng.normal(0, 1.5, g.shape)
        pred.append(np.abs(g + noise + noise.T))
    return sentences, pred, gold


def test_uuas_interval_matches_rescoring_every_resample():
    sentences, pred, gold = _noisy_distances()
    punct = [np.asarray(s.punct) for s in sentences]
    got = uuas_interval(pred, gold, punct, n_resamples=B, seed=SEED)
    want = _slow(uuas, (pred, gold, punct))
    assert got == pytest.approx(want, abs=1e-12)
    assert got[0] < uuas(pred, gold, punct) < got[1]


def test_spearman_interval_matches_rescoring_every_resample():
    _, pred, gold = _noisy_distances(1, n=16)
    got = spearman_interval(pred, gold, n_resamples=20, seed=SEED)
    want = _slow(distance_spearman, (pred, gold), B=20)
    assert got == pytest.approx(want, abs=1e-12)
    assert got[0] < distance_spearman(pred, gold) < got[1]
    # no sentence of a scored length: no interval
    short = [p[:3, :3] for p in pred]
    assert all(math.isnan(x) for x in spearman_interval(short, [g[:3, :3] for g in gold]))


def test_parse_f1_interval_matches_rescoring_every_resample():
    gold = [s.spans for s in shipped_treebank("ptb")]
    rng = np.random.default_rng(3)
    pred = [random_tree(max(b for _, b in g), rng) for g in gold]
    got = parse_f1_interval(pred, gold, n_resamples=B, seed=SEED)
    assert got == pytest.approx(_slow(parse_f1, (pred, gold)), abs=1e-12)
    assert got[0] < parse_f1(pred, gold) < got[1]
    right = baseline_trees(gold, "right")
    assert parse_f1_interval(right, gold, n_resamples=B, seed=SEED) == pytest.approx(
        _slow(parse_f1, (right, gold)), abs=1e-12
    )


def test_interval_narrows_with_more_sentences_and_is_seeded():
    # a Bernoulli(0.3) mean: the 95% interval's width is about 4 sqrt(p (1 - p) / n)
    for n in (50, 800):
        x = (np.random.default_rng(n).random(n) < 0.3).astype(float)
        lo, hi = bootstrap_interval(lambda w, x=x, n=n: w @ x / n, n, n_resamples=400, seed=1)
        assert hi - lo == pytest.approx(4 * math.sqrt(x.mean() * (1 - x.mean()) / n), rel=0.25)
    f = lambda w: w[:, 0] * 1.0  # noqa: E731
    assert bootstrap_interval(f, 5, seed=2) == bootstrap_interval(f, 5, seed=2)
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(f, 5, level=1.0)
