"""Neuron selection: planted neurons, scikit-learn references and brute force."""

import itertools

import numpy as np
import pytest
import sklearn
import torch
from sklearn.feature_selection import f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, mutual_info_score

from hierlens.probes.select import (
    SELECTIONS,
    anova_scores,
    default_n_candidates,
    l1_logistic,
    mean_diff_scores,
    mutual_info_scores,
    quantile_bins,
    select_features,
)


def _planted(seed, n=600, d=24, planted=(3, 11, 17), noise=0.5):
    """Two problems on shared rows; the label of each depends on its own planted neurons
    (problem 1 uses a different planted set), with distractors correlated to nothing."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    sets = [list(planted), [0, 9, 20][: len(planted)]]
    ys = []
    for s in sets:
        signs = np.where(np.arange(len(s)) % 2 == 0, 1.0, -1.0)
        ys.append((X[:, s] @ signs + noise * rng.normal(size=n) > 0.3).astype(float))
    return X, np.stack(ys), sets


@pytest.mark.parametrize("method", [m for m in SELECTIONS if m != "random"])
def test_every_method_finds_planted_neurons(method):
    X, Y, sets = _planted(0)
    k = len(sets[0])
    Xs = (X - X.mean(0)) / X.std(0)
    # exhaustive: 12 candidates (220 subsets of 3) keep the test fast.
    extra = {"n_candidates": 12} if method == "exhaustive" else {}
    sel = select_features(Xs, Y, [k, 1], method=method, device="cpu", **extra)
    for p, s in enumerate(sets):
        assert sorted(sel[k][p].tolist()) == sorted(s), method
        assert sel[1][p].item() in s


def test_random_is_seeded_and_valid():
    X, Y, _ = _planted(1)
    a = select_features(X, Y, [5], method="random", seed=3, device="cpu")[5]
    b = select_features(X, Y, [5], method="random", seed=3, device="cpu")[5]
    c = select_features(X, Y, [5], method="random", seed=4, device="cpu")[5]
    assert torch.equal(a, b) and not torch.equal(a, c)
    for row in a.tolist():
        assert len(set(row)) == 5 and all(0 <= i < X.shape[1] for i in row)


def test_scores_match_references():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 8)) + rng.normal(size=8)
    y = (X[:, 2] + rng.normal(size=300) > 0.5).astype(float)
    keep = rng.random(300) < 0.7
    Xt, yt, wt = (
        torch.tensor(X),
        torch.tensor(y)[None],
        torch.tensor(keep, dtype=torch.float64)[None],
    )
    Xk, yk = X[keep], y[keep]
    md = np.abs(Xk[yk == 1].mean(0) - Xk[yk == 0].mean(0))
    np.testing.assert_allclose(mean_diff_scores(Xt, yt, wt)[0].numpy(), md, rtol=1e-10)
    np.testing.assert_allclose(anova_scores(Xt, yt, wt)[0].numpy(), f_classif(Xk, yk)[0], rtol=1e-8)
    # One problem: bins are the quantile bins of its own rows (zero weight = absent row).
    bins = quantile_bins(Xt, 6, weight=wt[0]).numpy()
    np.testing.assert_array_equal(bins[keep], quantile_bins(torch.tensor(Xk), 6).numpy())
    ref = [mutual_info_score(yk, bins[keep, j]) for j in range(8)]
    np.testing.assert_allclose(mutual_info_scores(Xt, yt, wt, 6)[0].numpy(), ref, atol=1e-12)


def test_quantile_bins_are_monotone_balanced_and_tie_consistent():
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(size=(400, 1)), np.maximum(rng.normal(size=(400, 1)), 0)], 1)
    bins = quantile_bins(torch.tensor(X), 4).numpy()
    for j in range(2):
        order = np.argsort(X[:, j], kind="stable")
        assert (np.diff(bins[order, j]) >= 0).all()
        for v in np.unique(X[:, j]):  # equal values share a bin
            assert len(np.unique(bins[X[:, j] == v, j])) == 1
    np.testing.assert_array_equal(np.bincount(bins[:, 0]), [100, 100, 100, 100])
    assert bins[X[:, 1] == 0, 1].max() == bins[:, 1].min()  # the ReLU zeros: one bin
    # Integer weights act like repeated rows.
    reps = rng.integers(0, 4, size=400)
    weighted = quantile_bins(torch.tensor(X), 4, weight=torch.tensor(reps)).numpy()
    repeated = quantile_bins(torch.tensor(np.repeat(X, reps, axis=0)), 4).numpy()
    np.testing.assert_array_equal(np.repeat(weighted, reps, axis=0), repeated)


def test_l1_logistic_matches_sklearn():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(200, 6))
    y = (X[:, 0] - 0.5 * X[:, 1] + rng.normal(size=200) > 0.4).astype(float)
    coef, b = l1_logistic(
        torch.tensor(X),
        torch.tensor(y)[None],
        torch.ones(1, 200, dtype=torch.float64),
        C=0.05,
        max_iter=20_000,
        tol=1e-12,
    )
    # an L1 penalty is l1_ratio=1 from scikit-learn 1.8 on (penalty= deprecated there), and
    # penalty="l1" before it (where l1_ratio alone is ignored)
    sklearn_minor = tuple(int(v) for v in sklearn.__version__.split(".")[:2])
    l1 = {"l1_ratio": 1.0} if sklearn_minor >= (1, 8) else {"penalty": "l1"}
    ref = LogisticRegression(
        **l1, solver="saga", C=0.05, class_weight="balanced", tol=1e-12, max_iter=200_000
    ).fit(X, y)
    np.testing.assert_allclose(coef[0].numpy(), ref.coef_[0], atol=1e-5)
    assert abs(b[0].item() - ref.intercept_[0]) < 1e-5
    np.testing.assert_array_equal(coef[0].numpy() == 0, ref.coef_[0] == 0)


@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_exhaustive_equals_brute_force(class_weight):
    rng = np.random.default_rng(5)
    n, d = 120, 5
    X = rng.normal(size=(n, d))
    y = (X[:, 1] + X[:, 3] * X[:, 4] + rng.normal(size=n) > 0.8).astype(float)
    Y = np.stack([y, 1 - y * (X[:, 2] > 0)])
    for k in (1, 2, 3):
        got = select_features(
            X,
            Y,
            [k],
            method="exhaustive",
            n_candidates=d,
            C=0.5,
            class_weight=class_weight,
            device="cpu",
        )[k]
        for p in range(2):
            best, best_loss = None, np.inf
            losses = {}
            for sub in itertools.combinations(range(d), k):
                ref = LogisticRegression(
                    C=0.5, class_weight=class_weight, tol=1e-12, max_iter=10_000
                ).fit(X[:, sub], Y[p])
                sw = None
                if class_weight == "balanced":
                    pos = Y[p].mean()
                    sw = np.where(Y[p] == 1, 0.5 / pos, 0.5 / (1 - pos))
                loss = log_loss(Y[p], ref.predict_proba(X[:, sub])[:, 1], sample_weight=sw)
                losses[sub] = loss
                if loss < best_loss:
                    best, best_loss = sub, loss
            chosen = tuple(sorted(got[p].tolist()))
            assert chosen == best or abs(losses[chosen] - best_loss) < 1e-9


def test_exhaustive_restricts_to_candidates():
    X, Y, sets = _planted(6, d=30)
    sel = select_features(X, Y, [2], method="exhaustive", n_candidates=5, device="cpu")[2]
    top5 = torch.sort(
        mean_diff_scores(torch.tensor(X), torch.tensor(Y), torch.ones_like(torch.tensor(Y))),
        descending=True,
        stable=True,
    ).indices[:, :5]
    for p in range(2):
        assert set(sel[p].tolist()) <= set(top5[p].tolist())
    assert default_n_candidates(30, 2) == 30 and default_n_candidates(100, 2) == 91


def test_telescope_sets_are_nested():
    X, Y, _ = _planted(7, d=40)
    sel = select_features(X, Y, [1, 2, 5, 12], method="telescope", device="cpu")
    for p in range(2):
        for small, big in [(1, 2), (2, 5), (5, 12)]:
            assert set(sel[small][p].tolist()) <= set(sel[big][p].tolist())


def test_bad_input():
    X, Y, _ = _planted(8)
    with pytest.raises(ValueError, match="unknown selection"):
        select_features(X, Y, [2], method="lasso", device="cpu")
    with pytest.raises(ValueError, match="every k"):
        select_features(X, Y, [25], device="cpu")
    with pytest.raises(ValueError, match="both classes"):
        select_features(X, np.zeros_like(Y), [2], device="cpu")
    Xn = X.copy()
    Xn[3, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        select_features(Xn, Y, [2], device="cpu")
    with pytest.raises(ValueError, match="y must be"):
        select_features(X, Y[:, :-1], [2], device="cpu")
    with pytest.raises(ValueError, match="binary"):
        select_features(X, Y * 3, [2], device="cpu")
    with pytest.raises(ValueError, match="class_weight"):
        select_features(X, Y, [2], method="exhaustive", class_weight="auto", device="cpu")
