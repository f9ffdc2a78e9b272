"""Ground-truth recovery metrics: planted dictionaries with known answers, an independent
slow per-pair reference for MCC and F1, a random dictionary against its analytic MCC, and
bad inputs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from hierlens.models.tasks.ground_truth import FeatureGraph, GroundTruth
from hierlens.models.tasks.mpsae_toy import MPSAEToy
from hierlens.sae import TopKSAE, evaluate_ground_truth, ground_truth_recovery


def _toy(n=4000, seed=0):
    toy = MPSAEToy()
    sample = toy.sample(n, seed=seed)
    return toy, sample, toy.ground_truth(sample)


def test_planted_true_features_score_perfectly():
    _, _, truth = _toy()
    res = ground_truth_recovery(truth.activations.clone(), truth, seed=1)
    assert res["mcc"] == pytest.approx(1.0, abs=1e-12)
    assert res["mean_f1"] == 1.0 and res["mean_precision"] == 1.0 and res["mean_recall"] == 1.0
    assert res["absorption"] == 0.0
    assert res["uniqueness"] == 1.0
    assert res["n_split_features"] == 0 and res["n_merged_latents"] == 0
    assert res["per_level"][0]["absorption"] == 0.0
    assert [f["latent"] for f in res["features"]] == list(range(truth.features.n_features))


def test_planted_absorption_is_exactly_the_constructed_share():
    toy, sample, truth = _toy()
    on = truth.active
    codes = truth.activations.clone()
    kids = toy.children_of
    # parent 0's latent is silent whenever one of its children is active: fully absorbed;
    # parent 1's latent is silent on every second row where a child of it is active
    codes[on[:, kids[0]].any(1), 0] = 0.0
    child_rows1 = on[:, kids[1]].any(1).nonzero().squeeze(1)
    silenced = child_rows1[::2]
    codes[silenced, 1] = 0.0
    dev = torch.zeros(truth.n_rows, dtype=torch.bool)
    dev[::3] = True
    res = ground_truth_recovery(codes, truth, dev_rows=dev)
    ev = ~dev
    by = {f["name"]: f for f in res["features"]}
    n0 = int((ev & on[:, kids[0]].any(1)).sum())
    rows1 = ev & on[:, kids[1]].any(1)
    n1 = int(rows1.sum())
    s1 = torch.zeros(truth.n_rows, dtype=torch.bool)
    s1[silenced] = True
    a1 = int((rows1 & s1).sum())
    n2 = int((ev & on[:, kids[2]].any(1)).sum())
    assert by["p0"]["absorption"] == 1.0 and by["p0"]["absorption_rows"] == n0
    assert by["p1"]["absorption"] == a1 / n1
    assert by["p2"]["absorption"] == 0.0
    assert res["per_level"][0]["absorption"] == (n0 + a1) / (n0 + n1 + n2)
    assert res["absorption"] == res["per_level"][0]["absorption"]
    # children recovered exactly
    assert all(by[f"p{j}.c{m}"]["f1"] == 1.0 for j in range(3) for m in range(3))


def _slow_pearson(a, b):
    a, b = [float(v) for v in a], [float(v) for v in b]
    n = len(a)
    ma, mb = sum(a) / n, sum(b) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    return 0.0 if va == 0 or vb == 0 else cov / math.sqrt(va * vb)


def test_mcc_and_f1_agree_with_a_slow_per_pair_reference():
    gen = torch.Generator().manual_seed(3)
    n, m, d = 160, 4, 6
    truth_act = (torch.rand(n, m, generator=gen) < 0.3).float() * torch.rand(n, m, generator=gen)
    truth_act[0] = 1.0
    truth_act[1] = 0.0
    graph = FeatureGraph(("a", "b", "a.x", "a.y"), (0, 0, 1, 1), ((0, 2), (0, 3)))
    truth = GroundTruth(truth_act, graph)
    mix = torch.randn(m, d, generator=gen)
    codes = torch.relu(truth_act @ mix + 0.3 * torch.randn(n, d, generator=gen))
    dev = torch.zeros(n, dtype=torch.bool)
    dev[: n // 2] = True
    res = ground_truth_recovery(codes, truth, dev_rows=dev)
    ev = ~dev
    C, T = codes[ev].tolist(), truth_act[ev].tolist()
    corr = [
        [_slow_pearson([r[i] for r in C], [r[j] for r in T]) for j in range(m)] for i in range(d)
    ]
    best = max(
        itertools.permutations(range(d), m), key=lambda p: sum(corr[p[j]][j] for j in range(m))
    )
    mcc = sum(corr[best[j]][j] for j in range(m)) / m
    assert abs(res["mcc"] - mcc) < 1e-6
    for j, f in enumerate(res["features"]):
        assert f["latent"] == best[j]
        t = f["threshold"]
        tp = fp = fn = 0
        for r in range(n):
            if dev[r]:
                continue
            fire = float(codes[r, best[j]]) > t
            true = float(truth_act[r, j]) != 0
            tp += fire and true
            fp += fire and not true
            fn += (not fire) and true
        assert abs(f["f1"] - 2 * tp / (2 * tp + fp + fn)) < 1e-6
        # the threshold maximises F1 on the dev rows among all cut points
        dev_codes = sorted({0.0, *[float(codes[r, best[j]]) for r in range(n) if dev[r]]})

        def dev_f1(cut, j=j):
            tp = fp = fn = 0
            for r in range(n):
                if not dev[r]:
                    continue
                fire = float(codes[r, best[j]]) > cut
                true = float(truth_act[r, j]) != 0
                tp += fire and true
                fp += fire and not true
                fn += (not fire) and true
            return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0

        assert dev_f1(t) >= max(dev_f1(c) for c in dev_codes) - 1e-12


def test_random_dictionary_is_near_its_analytic_mcc():
    """One feature, ``d`` latents independent of it: each correlation is about
    ``N(0, 1 / n)``, so the matched (best) one has mean ``E[max of d standard normals] /
    sqrt(n)``, ``E[max] = integral of x d(Phi(x)^d)``."""
    n, d, reps = 4000, 20, 30
    e_max = integrate.quad(
        lambda x: x * d * stats.norm.pdf(x) * stats.norm.cdf(x) ** (d - 1), -10, 10
    )[0]
    expected = e_max / math.sqrt(n / 2)  # evaluated on the half of the rows that is not dev
    graph = FeatureGraph(("f",), (0,))
    got = []
    for r in range(reps):
        gen = torch.Generator().manual_seed(100 + r)
        feat = (torch.rand(n, 1, generator=gen) < 0.2).float()
        codes = torch.relu(torch.randn(n, d, generator=gen))
        got.append(ground_truth_recovery(codes, GroundTruth(feat, graph), seed=r)["mcc"])
    sem = np.std(got, ddof=1) / math.sqrt(reps)
    assert abs(np.mean(got) - expected) < 4 * sem
    assert 0.03 < expected < 0.06  # well away from 0: the test can tell


def test_split_and_merged_features():
    graph = FeatureGraph(("a", "b", "c"), (0, 0, 0))
    gen = torch.Generator().manual_seed(0)
    act = (torch.rand(2000, 3, generator=gen) < 0.3).float()
    codes = torch.stack([act[:, 0], act[:, 0], act[:, 1] + act[:, 2], act[:, 2] * 0], 1)
    res = ground_truth_recovery(codes, GroundTruth(act, graph), min_correlation=0.5)
    assert res["split_features"] == {"a": [0, 1]}
    assert res["merged_latents"] == {2: ["b", "c"]}
    # "a" is claimed twice, "b" once (latent 2's best), "c" by nobody
    assert res["uniqueness"] == pytest.approx(1 / 3)


def test_sae_codes_and_bad_inputs():
    toy, sample, truth = _toy(n=600)
    sae = TopKSAE(toy.dim, toy.dim, k=2, device="cpu")
    res = evaluate_ground_truth(sae, sample.x, truth)
    assert 0.0 <= res["mcc"] <= 1.0 and res["n_latents"] == toy.dim
    with pytest.raises(ValueError, match="not aligned"):
        evaluate_ground_truth(sae, sample.x[:-1], truth)
    with pytest.raises(ValueError, match="not aligned"):
        ground_truth_recovery(truth.activations[1:], truth)
    with pytest.raises(TypeError, match="GroundTruth"):
        ground_truth_recovery(truth.activations, truth.activations)
    with pytest.raises(ValueError, match="dev_fraction"):
        ground_truth_recovery(truth.activations, truth, dev_fraction=1.0)


def test_correlation_in_chunks_equals_one_block():
    from hierlens.sae import correlation_matrix

    gen = torch.Generator().manual_seed(5)
    codes = torch.relu(torch.randn(300, 37, generator=gen))
    codes[:, 3] = 0.0  # a dead latent
    truth = (torch.rand(300, 5, generator=gen) < 0.4).float()
    whole = correlation_matrix(codes, truth, chunk=1000)
    torch.testing.assert_close(correlation_matrix(codes, truth, chunk=4), whole, atol=1e-12, rtol=0)
    with np.errstate(invalid="ignore"):  # the dead latent's row is NaN in numpy
        ref = np.corrcoef(codes.double().T.numpy(), truth.double().T.numpy())[:37, 37:]
    ref[3] = 0.0
    np.testing.assert_allclose(whole.numpy(), ref, atol=1e-12)
