"""SparseProbe: scikit-learn estimator contract, equivalence with scikit-learn fits, errors."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

from hierlens.probes import SELECTIONS, SparseProbe


def _data(seed=0, n=300, d=12, planted=(2, 7)):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 4, size=d) + rng.normal(size=d)
    z = (X[:, planted[0]] - X[:, planted[0]].mean()) / X[:, planted[0]].std()
    z -= (X[:, planted[1]] - X[:, planted[1]].mean()) / X[:, planted[1]].std()
    y = (z + 0.4 * rng.normal(size=n) > 0.5).astype(int)
    return X, y


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")
def test_check_estimator_default():
    # Every applicable check of scikit-learn's suite; none is skipped except the array-API
    # check, which scikit-learn itself skips unless SCIPY_ARRAY_API is set.
    results = check_estimator(SparseProbe(device="cpu"), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])) for r in results if r["status"] == "failed"]
    assert not failed
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    assert skipped <= {"check_array_api_input"}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")
@pytest.mark.parametrize("selection", [s for s in SELECTIONS if s != "mean_diff"])
def test_check_estimator_other_selections(selection):
    # k=2: scikit-learn's classifier checks fit blobs with two informative features, which a
    # random choice of one feature cannot classify to the accuracy the checks demand; with
    # one-feature data, k=2 is the documented "n_features=1" error the checks accept.
    results = check_estimator(SparseProbe(k=2, selection=selection, device="cpu"), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])) for r in results if r["status"] == "failed"]
    assert not failed


@pytest.mark.parametrize("selection", SELECTIONS[:-2] + ("exhaustive",))
def test_planted_neurons_found_by_estimator(selection):
    X, y = _data(1)
    probe = SparseProbe(k=2, selection=selection, device="cpu").fit(X, y)
    assert sorted(probe.selected_[0].tolist()) == [2, 7]
    assert probe.score(X, y) > 0.85


@pytest.mark.parametrize("class_weight", ["balanced", None])
def test_binary_equals_sklearn_on_selected(class_weight):
    X, y = _data(2)
    probe = SparseProbe(k=3, C=0.2, class_weight=class_weight, device="cpu").fit(X, y)
    sel = probe.selected_[0]
    pipe = Pipeline(
        [
            ("scale", StandardScaler()),
            (
                "lr",
                LogisticRegression(C=0.2, class_weight=class_weight, tol=1e-12, max_iter=10_000),
            ),
        ]
    ).fit(X[:, sel], y)
    np.testing.assert_allclose(
        probe.decision_function(X), pipe.decision_function(X[:, sel]), atol=1e-6, rtol=1e-6
    )
    np.testing.assert_allclose(probe.predict_proba(X), pipe.predict_proba(X[:, sel]), atol=1e-7)
    np.testing.assert_array_equal(probe.predict(X), pipe.predict(X[:, sel]))
    assert probe.coef_.shape == (1, X.shape[1])
    assert np.count_nonzero(probe.coef_) == 3
    assert set(np.flatnonzero(probe.coef_[0])) == set(sel)


def test_multiclass_one_vs_rest_equals_sklearn():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(240, 10))
    y = np.array(["a", "b", "c"])[np.argmax(X[:, [1, 4, 8]] + 0.3 * rng.normal(size=(240, 3)), 1)]
    probe = SparseProbe(k=2, standardize=False, device="cpu").fit(X, y)
    assert probe.selected_.shape == (3, 2) and probe.coef_.shape == (3, 10)
    for c, cls in enumerate(probe.classes_):
        sel = probe.selected_[c]
        ref = LogisticRegression(class_weight="balanced", tol=1e-12, max_iter=10_000)
        ref.fit(X[:, sel], (y == cls).astype(int))
        np.testing.assert_allclose(probe.coef_[c, sel], ref.coef_[0], atol=1e-6)
        np.testing.assert_allclose(probe.intercept_[c], ref.intercept_[0], atol=1e-6)
    # Full-width OvR on all features is the k = d case.
    full = SparseProbe(k=10, standardize=False, device="cpu").fit(X, y)
    ovr = OneVsRestClassifier(
        LogisticRegression(class_weight="balanced", tol=1e-12, max_iter=10_000)
    ).fit(X, y)
    np.testing.assert_allclose(full.predict_proba(X), ovr.predict_proba(X), atol=1e-6)
    assert set(probe.predict(X)) <= {"a", "b", "c"}


def test_pipeline_and_grid_search():
    X, y = _data(4)
    pipe = Pipeline([("scale", StandardScaler()), ("probe", SparseProbe(device="cpu"))])
    grid = GridSearchCV(pipe, {"probe__k": [1, 2, 4], "probe__C": [0.1, 1.0]}, cv=3)
    grid.fit(X, y)
    assert grid.best_params_["probe__k"] >= 2
    assert grid.score(X, y) > 0.85
    assert sorted(grid.best_estimator_[-1].selected_[0][:2].tolist()) == [2, 7]


def test_bad_input_errors():
    X, y = _data(5)
    with pytest.raises(ValueError, match="larger than the number of features"):
        SparseProbe(k=13, device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        SparseProbe(k=0, device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="only one class"):
        SparseProbe(k=2, device="cpu").fit(X, np.zeros(len(y)))
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        SparseProbe(k=2, device="cpu").fit(Xn, y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        SparseProbe(k=2, device="cpu").fit(X, y[:-1])
    with pytest.raises(ValueError, match="unknown selection"):
        SparseProbe(k=2, selection="best", device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="Unknown label type"):
        SparseProbe(k=2, device="cpu").fit(X, np.linspace(0, 1, len(y)))
    probe = SparseProbe(k=2, device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="features"):
        probe.predict(X[:, :5])
