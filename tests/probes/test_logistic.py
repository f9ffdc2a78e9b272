"""Batched logistic regression and batched metrics against scikit-learn."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, log_loss, matthews_corrcoef

from hierlens.probes.logistic import balanced_weights, fit_logistic
from hierlens.probes.metrics import binary_metrics


def _problems(seed, P=4, n=200, k=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(P, n, k)) * rng.uniform(0.5, 3, size=(P, 1, k))
    logits = (
        np.einsum("pnk,pk->pn", X, rng.normal(size=(P, k))) * 0.7 + rng.normal(size=(P, 1)) - 0.5
    )
    y = (rng.random((P, n)) < 1 / (1 + np.exp(-logits))).astype(float)
    return X, y


@pytest.mark.parametrize("class_weight", [None, "balanced"])
@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
def test_matches_sklearn_with_masks(C, class_weight):
    X, y = _problems(0)
    rng = np.random.default_rng(1)
    mask = (rng.random(y.shape) < 0.7).astype(float)
    fit = fit_logistic(X, y, C=C, sample_weight=mask, class_weight=class_weight, device="cpu")
    assert bool(fit.converged.all())
    for p in range(X.shape[0]):
        keep = mask[p] > 0
        ref = LogisticRegression(C=C, class_weight=class_weight, tol=1e-12, max_iter=10_000)
        ref.fit(X[p][keep], y[p][keep])
        np.testing.assert_allclose(fit.coef[p].numpy(), ref.coef_[0], atol=1e-6, rtol=1e-5)
        np.testing.assert_allclose(fit.intercept[p].item(), ref.intercept_[0], atol=1e-6)
        z = X[p] @ fit.coef[p].numpy() + fit.intercept[p].item()
        np.testing.assert_array_equal(z[keep] > 0, ref.predict(X[p][keep]) > 0.5)
        # The reported loss is the class-weighted mean log loss on the training rows.
        sw = None
        if class_weight == "balanced":
            sw = balanced_weights(torch.tensor(y[p][keep])[None], torch.ones(1, keep.sum()))[0]
        ref_loss = log_loss(y[p][keep], ref.predict_proba(X[p][keep])[:, 1], sample_weight=sw)
        assert abs(fit.loss[p].item() - ref_loss) < 1e-7


def test_general_sample_weights_match_sklearn():
    X, y = _problems(2, P=2)
    w = np.random.default_rng(3).uniform(0.1, 3.0, size=y.shape)
    fit = fit_logistic(X, y, C=0.3, sample_weight=w, class_weight="balanced", device="cpu")
    for p in range(2):
        ref = LogisticRegression(C=0.3, class_weight="balanced", tol=1e-12, max_iter=10_000)
        ref.fit(X[p], y[p], sample_weight=w[p])
        np.testing.assert_allclose(fit.coef[p].numpy(), ref.coef_[0], atol=1e-6, rtol=1e-5)


def test_float32_close_to_float64_and_no_intercept():
    X, y = _problems(4)
    f64 = fit_logistic(X, y, device="cpu")
    f32 = fit_logistic(X, y, device="cpu", dtype=torch.float32, tol=1e-6)
    np.testing.assert_allclose(f32.coef.double().numpy(), f64.coef.numpy(), atol=2e-4)
    ni = fit_logistic(X, y, fit_intercept=False, device="cpu")
    ref = LogisticRegression(fit_intercept=False, tol=1e-12, max_iter=10_000).fit(X[0], y[0])
    np.testing.assert_allclose(ni.coef[0].numpy(), ref.coef_[0], atol=1e-6)
    assert float(ni.intercept.abs().max()) == 0.0


def test_separable_data_converges_with_penalty():
    x = np.linspace(-1, 1, 50)[:, None]
    y = (x[:, 0] > 0).astype(float)
    fit = fit_logistic(x, y, C=10.0, device="cpu")
    ref = LogisticRegression(C=10.0, tol=1e-12, max_iter=10_000).fit(x, y)
    np.testing.assert_allclose(fit.coef[0].numpy(), ref.coef_[0], rtol=1e-5)


def test_bad_input():
    X, y = _problems(5, P=1)
    with pytest.raises(ValueError, match="NaN"):
        Xn = X.copy()
        Xn[0, 0, 0] = np.nan
        fit_logistic(Xn, y, device="cpu")
    with pytest.raises(ValueError, match="binary"):
        fit_logistic(X, y * 2, device="cpu")
    with pytest.raises(ValueError, match="C must be"):
        fit_logistic(X, y, C=0.0, device="cpu")
    with pytest.raises(ValueError, match="shape"):
        fit_logistic(X, y[:, :-1], device="cpu")
    with pytest.raises(ValueError, match="positive total"):
        fit_logistic(X, y, sample_weight=np.zeros_like(y), device="cpu")
    with pytest.raises(ValueError, match="class_weight"):
        fit_logistic(X, y, class_weight="auto", device="cpu")


def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(6)
    y = rng.random((5, 80)) < 0.3
    pred = rng.random((5, 80)) < 0.4
    pred[3] = False  # no positive prediction: F1 0, MCC 0
    mask = rng.random((5, 80)) < 0.6
    out = binary_metrics(torch.tensor(pred), torch.tensor(y), torch.tensor(mask))
    for p in range(5):
        m = mask[p]
        assert out["f1"][p].item() == pytest.approx(f1_score(y[p][m], pred[p][m], zero_division=0))
        assert out["mcc"][p].item() == pytest.approx(matthews_corrcoef(y[p][m], pred[p][m]))
        assert out["accuracy"][p].item() == pytest.approx((y[p][m] == pred[p][m]).mean())


def test_warm_start_and_unpenalised_fit():
    X, y = _problems(7, P=3)
    cold = fit_logistic(X, y, C=2.0, class_weight="balanced", device="cpu")
    rng = np.random.default_rng(8)
    init = (torch.tensor(rng.normal(size=(3, 3)) * 3), torch.tensor(rng.normal(size=3)))
    warm = fit_logistic(X, y, C=2.0, class_weight="balanced", init=init, device="cpu")
    np.testing.assert_allclose(warm.coef.numpy(), cold.coef.numpy(), atol=1e-8)
    np.testing.assert_allclose(warm.intercept.numpy(), cold.intercept.numpy(), atol=1e-8)
    free = fit_logistic(X, y, C=float("inf"), device="cpu")
    for p in range(3):
        ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(X[p], y[p])
        np.testing.assert_allclose(free.coef[p].numpy(), ref.coef_[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("k", [3, 20])  # 20: wide enough for the contiguous Hessian operand
def test_mixed_batch_drops_converged_problems_without_changing_results(k):
    """A batch where most problems start at their optimum (so they are moved out of the
    iterations early) gives each problem what it gets when fitted alone, and what
    scikit-learn gets; the unconverged ones keep iterating on their own data."""
    X, y = _problems(11, P=8, n=300, k=k)
    alone = [
        fit_logistic(X[p], y[p], C=0.5, class_weight="balanced", device="cpu") for p in range(8)
    ]
    coef0 = torch.stack([f.coef[0] for f in alone])
    b0 = torch.stack([f.intercept[0] for f in alone])
    # Problems 0-5 start at their solution, 6-7 from far away.
    init_coef, init_b = coef0.clone(), b0.clone()
    init_coef[6:] = 2.0
    init_b[6:] = -1.0
    batch = fit_logistic(
        X, y, C=0.5, class_weight="balanced", init=(init_coef, init_b), device="cpu"
    )
    assert bool(batch.converged.all())
    assert batch.n_iter > 2  # the far-away problems needed iterations after the others left
    np.testing.assert_allclose(batch.coef.numpy(), coef0.numpy(), atol=1e-8)
    np.testing.assert_allclose(batch.intercept.numpy(), b0.numpy(), atol=1e-8)
    np.testing.assert_allclose(
        batch.loss.numpy(), torch.stack([f.loss[0] for f in alone]).numpy(), atol=1e-10
    )
    for p in (0, 7):
        ref = LogisticRegression(C=0.5, class_weight="balanced", tol=1e-12, max_iter=10_000)
        ref.fit(X[p], y[p])
        np.testing.assert_allclose(batch.coef[p].numpy(), ref.coef_[0], atol=1e-6, rtol=1e-5)
