"""SAE feature geometry on planted structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from hierlens.analysis.compare.geometry import (
    clustering_entropy,
    cooccurrence,
    difference_clusters,
    eigen_spectrum,
    lda_directions,
    lobe_alignment,
    parallelogram_quality,
    power_law_slope,
    spectral_clusters,
)


def _crystal(seed=0, d=16, n_extra=300):
    """Features w(i, j) = p_i + q_j (a 2 x 3 family) and ``n_extra`` unrelated features, all
    shifted along axis 0 by 3 x a nuisance class (the family's classes break its
    parallelograms)."""
    rng = np.random.default_rng(seed)
    p, q = rng.normal(size=(2, d)), rng.normal(size=(3, d))
    p[:, 0] = q[:, 0] = 0
    family = np.array([p[i] + q[j] for i in range(2) for j in range(3)])
    labels = np.array([(i + j) % 2 for i in range(2) for j in range(3)])
    extra = rng.normal(size=(n_extra, d))
    extra[:, 0] *= 0.1
    rows = np.vstack([family, extra])
    labels = np.concatenate([labels, rng.integers(0, 2, n_extra)])
    rows[:, 0] += 3.0 * labels
    return torch.tensor(rows), labels


def test_parallelogram_quality_and_distractors():
    w, labels = _crystal()
    # (a, b, c, d) = ((1,0), (0,1), (0,0), (1,1)): rows 3, 1, 0, 4
    quads = [[3, 1, 0, 4], [3, 2, 0, 5], [4, 2, 1, 5]]
    before = parallelogram_quality(w, quads)
    dirs = lda_directions(w, labels)
    assert dirs.shape == (1, 16)
    assert abs(float(dirs[0, 0])) > 0.99  # the nuisance axis
    after = parallelogram_quality(w, quads, distractors=dirs)
    assert float(before["quality"].min()) < 0.5
    assert float(after["quality"].min()) > 0.95
    assert bool(after["hit"].all())
    # an exact parallelogram scores 1 without projection; a reversed edge scores 0
    v = torch.eye(3, dtype=torch.float64)
    sq = torch.stack([v[0], v[1], torch.zeros(3), v[0] + v[1]])
    assert float(parallelogram_quality(sq, [[0, 1, 2, 3]])["quality"][0]) == pytest.approx(1.0)
    back = torch.stack([v[0], torch.zeros(3), torch.zeros(3), -v[0]])
    assert float(parallelogram_quality(back, [[0, 1, 2, 3]])["quality"][0]) == pytest.approx(0.0)


def test_difference_clusters_group_one_crystal_edge():
    rng = np.random.default_rng(1)
    p = rng.normal(size=(2, 8))
    base = rng.normal(size=(4, 8)) * 3
    w = torch.tensor(np.vstack([base, base + p[1] - p[0]]))  # rows k and k+4 differ by one vector
    pairs, labels = difference_clusters(w, n_clusters=20, seed=0)
    edge = [(k, k + 4) for k in range(4)]
    lab = {tuple(map(int, pr)): int(lb) for pr, lb in zip(pairs, labels)}
    assert len({lab[e] for e in edge}) == 1
    members = [pr for pr, lb in lab.items() if lb == lab[edge[0]]]
    assert sorted(members) == edge


@pytest.mark.filterwarnings("ignore:Graph is not fully connected")
def test_cooccurrence_and_spectral_lobes():
    rng = np.random.default_rng(2)
    n, blocks = 3000, [range(0, 4), range(4, 8), range(8, 12)]
    codes = np.zeros((n, 12))
    topic = rng.integers(0, 3, size=n)
    for t, blk in enumerate(blocks):
        on = (topic == t)[:, None] & (rng.random((n, 4)) < 0.6)
        codes[:, list(blk)] = on * rng.random((n, 4))
    phi = cooccurrence(torch.tensor(codes), batch_size=700, device="cpu")
    f = codes > 0
    ref = np.corrcoef(f.T)
    np.testing.assert_allclose(phi.numpy(), ref, atol=1e-9)
    jac = cooccurrence(torch.tensor(codes), measure="jaccard", device="cpu")
    i, j = 0, 1
    assert float(jac[i, j]) == pytest.approx((f[:, i] & f[:, j]).sum() / (f[:, i] | f[:, j]).sum())
    labels = spectral_clusters(phi, 3)
    truth = np.repeat([0, 1, 2], 4)
    assert adjusted_rand_score(truth, labels) == pytest.approx(1.0)
    # decoder rows clustered the same way -> AMI 1, well above the shuffled baseline
    centers = np.eye(12)[:3] * 5
    w = torch.tensor(centers[truth] + 0.3 * rng.normal(size=(12, 12)))
    res = lobe_alignment(w, phi, 3, n_shuffles=30)
    assert res.ami == pytest.approx(1.0)
    assert res.baseline_mean < 0.3


def test_power_law_spectrum_slope():
    rng = np.random.default_rng(3)
    d, m, alpha = 40, 4000, 1.5
    scales = np.arange(1, d + 1, dtype=float) ** (-alpha / 2)
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    w = torch.tensor((rng.normal(size=(m, d)) * scales) @ basis.T)
    lam = eigen_spectrum(w)
    assert lam.shape == (d,)
    assert power_law_slope(lam, (2, 20)) == pytest.approx(-alpha, abs=0.1)
    exact = torch.arange(1, 101, dtype=torch.float64) ** -0.7
    assert power_law_slope(exact) == pytest.approx(-0.7, abs=1e-12)
    with pytest.raises(ValueError, match="rank_range"):
        power_law_slope(exact, (5, 500))


def test_clustering_entropy_clumpy_vs_gaussian():
    rng = np.random.default_rng(4)
    centers = rng.normal(size=(3, 6)) * 10
    w = torch.tensor(centers[rng.integers(0, 3, 600)] + 0.1 * rng.normal(size=(600, 6)))
    out = clustering_entropy(w, 8)
    assert out["difference"] > 0
    assert 0 < out["entropy"] <= np.log(8)


def test_bad_input():
    with pytest.raises(TypeError):
        eigen_spectrum(torch.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        eigen_spectrum(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="quads"):
        parallelogram_quality(torch.eye(3), [[0, 1, 2, 3]])
    with pytest.raises(ValueError, match="2 nuisance"):
        lda_directions(torch.eye(3), [0, 0, 0])
