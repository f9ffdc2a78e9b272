"""Unit matching on planted permutations and shared units."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from hierlens.analysis.compare.matching import (
    best_match,
    hungarian_match,
    localization_summary,
    rosetta_sets,
    unit_correlations,
)

CPU = {"device": "cpu"}


def test_correlations_against_numpy_streamed():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(57, 4)), rng.normal(size=(57, 3))
    y[:, 1] += 2 * x[:, 0]
    y[:, 2] = 0.0  # dead unit: correlation 0
    ref = np.corrcoef(x.T, y[:, :2].T)[:4, 4:]
    got = unit_correlations(x, y, batch_size=5, **CPU).numpy()
    np.testing.assert_allclose(got[:, :2], ref[:, :2], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(got[:, 2], 0.0)


def test_planted_permutation_is_recovered():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 12))
    perm = rng.permutation(12)
    signs = rng.choice([-1.0, 1.0], size=12)
    y = 3.0 * x[:, perm] * signs + 1.0
    corr = unit_correlations(x, y, **CPU)
    rows, cols, vals = hungarian_match(corr)
    # unit perm[j] of x is unit j of y
    np.testing.assert_array_equal(cols.numpy()[perm], np.arange(12))
    np.testing.assert_allclose(vals.abs().numpy(), 1.0, atol=1e-12)
    bm = best_match(corr)
    np.testing.assert_array_equal(bm.y_to_x.numpy(), perm)
    assert bm.mean_abs() == pytest.approx(1.0, abs=1e-12)
    assert len(bm.mutual) == 12


def test_rosetta_sets_recover_planted_units():
    rng = np.random.default_rng(2)
    n, shared = 2000, rng.normal(size=(2000, 3))
    models, where = [], []
    for _ in range(3):
        own = rng.normal(size=(n, 5))
        units = np.hstack([shared + 0.3 * rng.normal(size=(n, 3)), own])
        perm = rng.permutation(8)
        models.append(units[:, perm])
        where.append([int(np.where(perm == s)[0][0]) for s in range(3)])
    sets = rosetta_sets(models, min_corr=0.5, **CPU)
    expected = {tuple(where[m][s] for m in range(3)) for s in range(3)}
    assert {s.units for s in sets} == expected
    assert all(s.min_abs_corr > 0.8 for s in sets)
    with pytest.raises(ValueError, match="at least 3"):
        rosetta_sets(models[:2])


def test_localization_summary_unit_vs_rotated():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1000, 6))
    local = localization_summary(x, x[:, ::-1] * 2.0, **CPU)
    assert local["unit_level"] == pytest.approx(1.0, abs=1e-9)
    assert local["localization"] == pytest.approx(1.0, abs=1e-6)
    rotated = localization_summary(x, x @ ortho_group.rvs(6, random_state=0), **CPU)
    assert rotated["subspace_level"] == pytest.approx(1.0, abs=1e-6)
    assert rotated["localization"] < 0.9


def test_bad_input():
    with pytest.raises(ValueError, match="share their rows"):
        unit_correlations(np.zeros((5, 2)), np.zeros((6, 2)))
    with pytest.raises(ValueError, match="correlation"):
        best_match(torch.zeros(0, 3))
