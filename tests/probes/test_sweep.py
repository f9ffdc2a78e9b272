"""probe_sweep against per-probe scikit-learn fits, planted features, splits and errors."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from hierlens.core.atomic_io import read_jsonl
from hierlens.probes import binary_problems, probe_sweep, stratified_split
from hierlens.probes.logistic import all_finite


def _data(seed=0, n=500):
    """Hook "b" carries feature "f" in neurons 4 and 9 and the 3-class "g" in neuron 1;
    hook "a" is noise. Feature "f" is ignored (-1) on some rows."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 12))
    b = rng.normal(size=(n, 16)) * 2 + 1
    f = (b[:, 4] - b[:, 9] + rng.normal(size=n) > 0).astype(np.int64)
    f[rng.random(n) < 0.1] = -1
    g = np.digitize(b[:, 1] + 0.3 * rng.normal(size=n), [0.0, 2.0])
    return {"a": a, "b": b}, {"f": f, "g": g}


def test_records_match_sklearn_reference(tmp_path):
    acts, labels = _data(1)
    path = tmp_path / "probes" / "results.jsonl"
    recs = probe_sweep(
        acts,
        labels,
        ks=[1, 2, 3],
        dtype=torch.float64,
        device="cpu",
        out_path=path,
        progress=False,
        C=0.5,
    )
    assert read_jsonl(path) == recs
    # 2 hooks x (1 + 3 one-vs-rest problems) x 3 values of k
    assert len(recs) == 2 * 4 * 3
    assert {r["feature"] for r in recs} == {"f", "g=0", "g=1", "g=2"}
    problems = {p.name: p for p in binary_problems(labels, test_size=0.2, seed=0)}
    for r in recs:
        X = acts[r["hook"]]
        Xs = (X - X.mean(0)) / X.std(0)
        prob = problems[r["feature"]]
        # Selection reference: top-k absolute class-mean difference on the training rows.
        tr = prob.train
        md = np.abs(Xs[tr & prob.y].mean(0) - Xs[tr & ~prob.y].mean(0))
        assert r["selected"] == np.argsort(-md, kind="stable")[: r["k"]].tolist()
        ref = LogisticRegression(C=0.5, class_weight="balanced", tol=1e-12, max_iter=10_000)
        ref.fit(Xs[tr][:, r["selected"]], prob.y[tr])
        pred = ref.predict(Xs[prob.test][:, r["selected"]])
        truth = prob.y[prob.test]
        assert r["f1"] == pytest.approx(f1_score(truth, pred, zero_division=0), abs=1e-12)
        assert r["mcc"] == pytest.approx(matthews_corrcoef(truth, pred), abs=1e-12)
        assert r["accuracy"] == pytest.approx(accuracy_score(truth, pred), abs=1e-12)
        assert r["n_train"] == tr.sum() and r["n_test"] == prob.test.sum()


def test_planted_feature_found_in_the_right_hook():
    acts, labels = _data(2, n=800)
    recs = probe_sweep(
        acts,
        labels,
        ks=[2],
        selection=["mean_diff", "anova", "telescope"],
        device="cpu",
        progress=False,
    )
    for m in ("mean_diff", "anova", "telescope"):
        (rb,) = [
            r for r in recs if r["hook"] == "b" and r["feature"] == "f" and r["selection"] == m
        ]
        (ra,) = [
            r for r in recs if r["hook"] == "a" and r["feature"] == "f" and r["selection"] == m
        ]
        assert sorted(rb["selected"]) == [4, 9]
        assert rb["f1"] > 0.8 and ra["f1"] < 0.65 and rb["mcc"] > ra["mcc"] + 0.4


def test_stratified_split_keeps_class_proportions():
    labels = np.repeat([0, 1, 2, 7], [100, 40, 10, 1])
    test = stratified_split(labels, 0.25, seed=3)
    for v, want in [(0, 25), (1, 10), (2, 2), (7, 0)]:  # 2.5 rounds to 2 (banker's rounding)
        assert test[labels == v].sum() == want
    assert not np.array_equal(test, stratified_split(labels, 0.25, seed=4))
    np.testing.assert_array_equal(test, stratified_split(labels, 0.25, seed=3))


def test_rare_classes_are_skipped_with_warning():
    labels = {"h": np.array([0] * 50 + [1] * 40 + [2] * 2)}
    with pytest.warns(UserWarning, match="class 2 has 2 rows"):
        probs = binary_problems(labels, min_class_count=4)
    assert [p.name for p in probs] == ["h=0", "h=1"]


def test_bad_input():
    acts, labels = _data(3, n=60)
    kw = {"device": "cpu", "progress": False}
    with pytest.raises(ValueError, match="smallest hook width"):
        probe_sweep(acts, labels, ks=[13], **kw)
    with pytest.raises(ValueError, match="rows"):
        probe_sweep({"a": acts["a"], "b": acts["b"][:-1]}, labels, ks=[1], **kw)
    bad = acts["a"].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        probe_sweep({"a": bad}, labels, ks=[1], **kw)
    with pytest.raises(ValueError, match="at least two"):
        probe_sweep(acts, {"c": np.zeros(60, dtype=int)}, ks=[1], **kw)
    with pytest.raises(ValueError, match="unknown selection"):
        probe_sweep(acts, labels, ks=[1], selection="lasso", **kw)
    with pytest.raises(TypeError, match="integer or boolean"):
        probe_sweep(acts, {"c": np.linspace(0, 1, 60)}, ks=[1], **kw)
    with pytest.raises(ValueError, match="shape"):
        probe_sweep(acts, {"c": np.zeros(59, dtype=int)}, ks=[1], **kw)
    with pytest.raises(ValueError, match="C must be"):
        probe_sweep(acts, labels, ks=[1], C=-1.0, **kw)
    with pytest.raises(ValueError, match="class_weight"):
        probe_sweep(acts, labels, ks=[1], class_weight="auto", **kw)
    with pytest.raises(ValueError, match="test_size"):
        probe_sweep(acts, labels, ks=[1], test_size=1.5, **kw)
    with pytest.raises(ValueError, match="tol must be"):
        probe_sweep(acts, labels, ks=[1], tol=0.0, **kw)


def test_all_finite_checks_entries_when_the_sum_overflows():
    t = torch.full((4,), 3e38)
    assert all_finite(t)  # the sum is inf, but every entry is finite
    t[1] = float("inf")
    assert not all_finite(t)
    t[1] = float("nan")
    assert not all_finite(t)
    assert not all_finite(torch.tensor([1.0, float("-inf")]))


def test_one_neuron_start_is_the_shared_variance_discriminant():
    from hierlens.probes.logistic import fit_logistic_rows
    from hierlens.probes.sweep import _lda_start

    rng = np.random.default_rng(4)
    y = (rng.random((3, 500)) < 0.4).astype(float)
    x = rng.normal(size=(3, 500)) + 1.3 * y  # Gaussian classes, shared variance
    w = (rng.random((3, 500)) < 0.8).astype(float)
    Xt = torch.tensor(np.stack([x, np.ones_like(x)], 1))
    coef, b = _lda_start(Xt, torch.tensor(y), torch.tensor(w))
    for p in range(3):
        m = w[p] > 0
        x1, x0 = x[p][m & (y[p] == 1)], x[p][m & (y[p] == 0)]
        var = 0.5 * (x1.var() + x0.var())
        assert coef[p, 0].item() == pytest.approx((x1.mean() - x0.mean()) / var, rel=1e-10)
        assert b[p].item() == pytest.approx(
            -(x1.mean() ** 2 - x0.mean() ** 2) / (2 * var), rel=1e-10
        )
    y_t, w_t = torch.tensor(y), torch.tensor(w)
    cold = fit_logistic_rows(Xt, y_t, w_t, tol=1e-10)
    warm = fit_logistic_rows(Xt, y_t, w_t, tol=1e-10, init=(coef, b))
    torch.testing.assert_close(warm.coef, cold.coef, atol=1e-8, rtol=1e-8)
    assert warm.n_iter < cold.n_iter
