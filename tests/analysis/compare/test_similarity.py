"""Similarity measures against plain numpy / scipy references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes
from scipy.stats import ortho_group

from hierlens.analysis.compare.similarity import (
    hsic,
    linear_cka,
    procrustes_distance,
    pwcca,
    rbf_cka,
    similarity_matrix,
    svcca,
)
from hierlens.models.store import ActivationStore

CPU = {"device": "cpu"}


def _rand(n, d, seed):
    return np.random.default_rng(seed).normal(size=(n, d))


def _cka_closed_form(x, y):
    x = x - x.mean(0)
    y = y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def _memory_store(arrays):
    n = next(iter(arrays.values())).shape[0]
    manifest = {
        "hooks": {h: {"shape": [a.shape[1]], "dim": a.shape[1]} for h, a in arrays.items()},
        "n_tokens": n,
        "dtype": "float32",
        "shards": [],
    }
    idx = {k: torch.arange(n) for k in ("sequence", "position", "token")}
    return ActivationStore(
        manifest, idx, {}, arrays={h: torch.as_tensor(a) for h, a in arrays.items()}
    )


def test_linear_cka_closed_form_and_self():
    x, y = _rand(30, 5, 0), _rand(30, 7, 1)
    y[:, :3] += x[:, :3]
    assert linear_cka(x, y, **CPU) == pytest.approx(_cka_closed_form(x, y), rel=1e-10)
    assert linear_cka(x, x, **CPU) == pytest.approx(1.0, abs=1e-12)
    assert rbf_cka(x, x, **CPU) == pytest.approx(1.0, abs=1e-12)


def test_linear_cka_invariances():
    x = _rand(40, 6, 2)
    q = ortho_group.rvs(6, random_state=0)
    y = _rand(40, 4, 3) + x[:, :4]
    base = linear_cka(x, y, **CPU)
    assert linear_cka(3.7 * x @ q + 5.0, y, **CPU) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x @ q, x, **CPU) == pytest.approx(1.0, abs=1e-12)


def test_streamed_equals_in_memory():
    x, y, z = _rand(101, 6, 4), _rand(101, 3, 5), _rand(101, 8, 6)
    store = _memory_store({"a": x.astype(np.float32), "b": y.astype(np.float32)})
    xs = [x.astype(np.float32), y.astype(np.float32)]
    for debiased in (False, True):
        kw = dict(measures=("linear_cka", "svcca", "pwcca", "procrustes"), debiased=debiased, **CPU)
        full = similarity_matrix(xs, [z], batch_size=1000, **kw)
        streamed = similarity_matrix([(store, "a"), (store, "b")], [z], batch_size=7, **kw)
        for m in full:
            np.testing.assert_allclose(streamed[m].numpy(), full[m].numpy(), rtol=1e-9, atol=1e-12)
    biased = similarity_matrix(xs, [z], **CPU)["linear_cka"]
    ref = [[_cka_closed_form(a.astype(np.float64), z)] for a in xs]
    np.testing.assert_allclose(biased.numpy(), ref, rtol=1e-6)


def test_debiased_hsic_against_u_statistic():
    """Song et al. (2012): HSIC_u = 1/(n)_4 Σ over distinct (i,j,q,r) of
    k_ij l_ij + k_ij l_qr - 2 k_ij l_iq."""
    n = 7
    x, y = _rand(n, 3, 7), _rand(n, 2, 8)
    y[:, 0] += x[:, 0]
    k, lk = x @ x.T, y @ y.T
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * lk[i, j] + k[i, j] * lk[q, r] - 2 * k[i, j] * lk[i, q]
        count += 1
    ref = total / count
    got = hsic(torch.tensor(k), torch.tensor(lk), debiased=True)
    assert float(got) == pytest.approx(ref, rel=1e-10)
    # the streamed linear-kernel estimator gives the same ratio
    kk = (
        sum(
            k[i, j] * k[i, j] + k[i, j] * k[q, r] - 2 * k[i, j] * k[i, q]
            for i, j, q, r in itertools.permutations(range(n), 4)
        )
        / count
    )
    ll = (
        sum(
            lk[i, j] * lk[i, j] + lk[i, j] * lk[q, r] - 2 * lk[i, j] * lk[i, q]
            for i, j, q, r in itertools.permutations(range(n), 4)
        )
        / count
    )
    got_cka = linear_cka(x, y, debiased=True, batch_size=3, **CPU)
    assert got_cka == pytest.approx(ref / np.sqrt(kk * ll), rel=1e-9)


def test_rbf_cka_against_numpy():
    x, y = _rand(25, 4, 9), _rand(25, 3, 10)
    y[:, 0] = np.sin(x[:, 0])

    def kern(a):
        d = np.sqrt(((a[:, None, :] - a[None, :, :]) ** 2).sum(-1))
        sigma = np.median(d[np.triu_indices(len(a), 1)])
        return np.exp(-(d**2) / (2 * sigma**2))

    h = np.eye(25) - 1 / 25
    kx, ky = h @ kern(x) @ h, h @ kern(y) @ h
    ref = (kx * ky).sum() / np.sqrt((kx * kx).sum() * (ky * ky).sum())
    assert rbf_cka(x, y, **CPU) == pytest.approx(ref, rel=1e-9)
    # a sample of rows is the kernel of those rows
    sub = rbf_cka(x, y, max_rows=10, seed=3, **CPU)
    assert 0 < sub <= 1


def test_svcca_pwcca_planted_subspace():
    rng = np.random.default_rng(11)
    n = 500
    shared = rng.normal(size=(n, 3))
    x = np.hstack([shared, 0.05 * rng.normal(size=(n, 1))]) @ ortho_group.rvs(4, random_state=1)
    y = np.hstack([shared @ rng.normal(size=(3, 3)), rng.normal(size=(n, 3))])
    # x keeps 99% variance in the 3 shared directions, and they are all in y
    assert svcca(x, y, **CPU) == pytest.approx(1.0, abs=1e-6)
    q = ortho_group.rvs(6, random_state=2)
    assert svcca(y, y @ q, **CPU) == pytest.approx(1.0, abs=1e-9)
    assert pwcca(y, y @ q, **CPU) == pytest.approx(1.0, abs=1e-9)
    # pwcca weights the shared variates of x heavily; independent data scores low
    assert pwcca(x, y, **CPU) > 0.95
    assert svcca(_rand(n, 4, 12), _rand(n, 4, 13), **CPU) < 0.2


def test_procrustes_distance():
    x = _rand(50, 5, 14)
    q = ortho_group.rvs(5, random_state=3)
    assert procrustes_distance(x, 2.0 * x @ q + 1.0, **CPU) == pytest.approx(0.0, abs=1e-10)
    y = _rand(50, 5, 15) + 0.5 * x
    xc, yc = x - x.mean(0), y - y.mean(0)
    xc, yc = xc / np.linalg.norm(xc), yc / np.linalg.norm(yc)
    r, _ = orthogonal_procrustes(yc, xc)
    ref = np.linalg.norm(xc - yc @ r) ** 2
    assert procrustes_distance(x, y, **CPU) == pytest.approx(ref, rel=1e-9)


def test_matrix_shape_and_symmetry():
    xs = [_rand(60, d, s) for s, d in enumerate((3, 4, 5))]
    out = similarity_matrix(xs, measures=("linear_cka", "rbf_cka", "pwcca"), **CPU)
    assert out["linear_cka"].shape == (3, 3)
    np.testing.assert_allclose(out["linear_cka"], out["linear_cka"].T, atol=1e-12)
    np.testing.assert_allclose(torch.diagonal(out["rbf_cka"]), 1.0, atol=1e-12)
    assert linear_cka(xs[0], xs[1], **CPU) == pytest.approx(float(out["linear_cka"][0, 1]))


def test_bad_input():
    x = _rand(10, 3, 0)
    with pytest.raises(ValueError, match="share their rows"):
        linear_cka(x, _rand(9, 3, 0), **CPU)
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        linear_cka(bad, x, **CPU)
    with pytest.raises(ValueError, match="at least 2 rows"):
        linear_cka(x[:1], x[:1], **CPU)
    with pytest.raises(ValueError, match="at least 4 rows"):
        linear_cka(x[:3], x[:3], debiased=True, **CPU)
    with pytest.raises(ValueError, match="unknown measure"):
        similarity_matrix([x], measures=("cka",))
    with pytest.raises(TypeError, match="expected a"):
        linear_cka([[1.0, 2.0]], x, **CPU)


def test_debiased_hsic_is_unbiased_in_expectation():
    """For independent X and Y the population HSIC is 0: the debiased estimator averages to
    0 over many small draws (within 4 standard errors), the biased one stays clearly above."""
    from hierlens.analysis.compare.similarity import hsic

    g = torch.Generator().manual_seed(0)
    biased, unbiased = [], []
    for _ in range(400):
        x = torch.randn(8, 3, generator=g, dtype=torch.float64)
        y = torch.randn(8, 3, generator=g, dtype=torch.float64)
        k, l_ = x @ x.T, y @ y.T  # linear kernels
        biased.append(float(hsic(k, l_)))
        unbiased.append(float(hsic(k, l_, debiased=True)))
    u = torch.tensor(unbiased)
    b = torch.tensor(biased)
    assert abs(float(u.mean())) < 4 * float(u.std()) / len(u) ** 0.5
    assert float(b.mean()) > 10 * float(b.std()) / len(b) ** 0.5


def _np_svcca(x, y, keep=0.99):
    """Plain numpy SVCCA (Raghu et al. 2017): SVD to the directions keeping ``keep`` of the
    variance, then the canonical correlations as singular values of Qx^T Qy (QR bases)."""

    def reduce(a):
        a = a - a.mean(0)
        _, s, vt = np.linalg.svd(a, full_matrices=False)
        frac = np.cumsum(s**2) / np.sum(s**2)
        k = int(np.searchsorted(frac, keep - 1e-12) + 1)
        return a @ vt[:k].T

    qx, _ = np.linalg.qr(reduce(x))
    qy, _ = np.linalg.qr(reduce(y))
    return np.linalg.svd(qx.T @ qy, compute_uv=False).clip(0, 1).mean()


def _np_pwcca(x, y):
    """Plain numpy PWCCA (Morcos et al. 2018): canonical correlations of the full centred
    spaces, weighted by sum_j |<h_i, x_j>| of each canonical variate h_i of x."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    qx, _ = np.linalg.qr(x)
    qy, _ = np.linalg.qr(y)
    u, rho, _ = np.linalg.svd(qx.T @ qy, full_matrices=False)
    h = qx @ u  # unit-norm canonical variates of x
    alpha = np.abs(h.T @ x).sum(1)
    return float((alpha * rho.clip(0, 1)).sum() / alpha.sum())


def test_svcca_pwcca_match_a_plain_numpy_version():
    rng = np.random.default_rng(5)
    n = 400
    shared = rng.normal(size=(n, 3))
    x = np.hstack([shared, rng.normal(size=(n, 3)) * [1.0, 0.5, 0.1]]) @ rng.normal(size=(6, 6))
    y = np.hstack([shared @ rng.normal(size=(3, 3)), rng.normal(size=(n, 2))]) + 0.3 * rng.normal(
        size=(n, 5)
    )
    for keep in (0.99, 0.9, 0.6):
        assert svcca(x, y, keep=keep, **CPU) == pytest.approx(_np_svcca(x, y, keep), abs=1e-6)
    assert pwcca(x, y, **CPU) == pytest.approx(_np_pwcca(x, y), abs=1e-6)
    assert pwcca(y, x, **CPU) == pytest.approx(_np_pwcca(y, x), abs=1e-6)
