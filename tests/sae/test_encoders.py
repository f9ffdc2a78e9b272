"""Each SAE encoder against a slow per-sample reference written here in plain Python/NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hierlens.sae import (
    BatchTopKSAE,
    JumpReLUSAE,
    MatchingPursuitSAE,
    ReluSAE,
    StepContext,
    TopKSAE,
)
from hierlens.sae.topk import auxk_loss

D_IN, D_SAE, N = 6, 20, 9


def _randomise(sae, seed=0, scale=0.5):
    """Give every tensor random values (so biases matter in the comparison)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in sae.tensor_names:
            t = getattr(sae, name)
            t.copy_(torch.randn(t.shape, generator=g) * scale)
        if sae.cfg.unit_norm_decoder:
            sae.W_dec.div_(sae.W_dec.norm(dim=1, keepdim=True))
        if "threshold" in sae.tensor_names:
            sae.threshold.abs_()
    return sae


def _np(t):
    return t.detach().double().cpu().numpy()


def _pre_acts(sae, x):
    """Per-sample pre-activations, written as explicit loops."""
    W, b_enc, b_dec = _np(sae.W_enc), _np(sae.b_enc), _np(sae.b_dec)
    out = np.zeros((x.shape[0], sae.d_sae))
    for n in range(x.shape[0]):
        xin = [
            x[n, i] - (b_dec[i] if sae.cfg.apply_b_dec_to_input else 0.0) for i in range(sae.d_in)
        ]
        for j in range(sae.d_sae):
            out[n, j] = sum(xin[i] * W[i, j] for i in range(sae.d_in)) + b_enc[j]
    return out


def _x(seed=1, n=N):
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_relu_encoder_and_loss(apply_b_dec):
    sae = _randomise(
        ReluSAE(D_IN, D_SAE, l1_coefficient=0.3, apply_b_dec_to_input=apply_b_dec, device="cpu")
    )
    x = _x()
    pre = _pre_acts(sae, _np(x))
    ref = np.maximum(pre, 0)
    np.testing.assert_allclose(_np(sae.encode(x)), ref, atol=1e-5)
    out = sae(x)
    W_dec, b_dec = _np(sae.W_dec), _np(sae.b_dec)
    recon = ref @ W_dec + b_dec
    mse = np.mean([np.sum((recon[n] - _np(x)[n]) ** 2) for n in range(N)])
    norms = [np.sqrt(np.sum(W_dec[j] ** 2)) for j in range(D_SAE)]
    l1 = np.mean([sum(ref[n, j] * norms[j] for j in range(D_SAE)) for n in range(N)])
    np.testing.assert_allclose(out.recon.detach().numpy(), recon, atol=1e-5)
    assert out.loss.item() == pytest.approx(mse + 0.3 * l1, rel=1e-5)


def test_topk_encoder_matches_sorting_reference():
    sae = _randomise(TopKSAE(D_IN, D_SAE, k=3, device="cpu"))
    x = _x()
    pre = _pre_acts(sae, _np(x))
    ref = np.zeros_like(pre)
    for n in range(N):
        order = sorted(range(D_SAE), key=lambda j: -pre[n, j])
        for j in order[:3]:
            ref[n, j] = max(pre[n, j], 0.0)
    np.testing.assert_allclose(_np(sae.encode(x)), ref, atol=1e-5)
    out = sae(x)
    np.testing.assert_allclose(_np(out.codes), ref, atol=1e-5)
    assert ((out.codes != 0).sum(-1) <= 3).all()


def test_topk_sparse_decode_equals_dense():
    sae = _randomise(TopKSAE(D_IN, D_SAE, k=4, device="cpu"))
    x = _x()
    p, hp = sae.stacked_tensors(), sae.hparam_tensors()
    dense = TopKSAE.stacked_forward(sae.cfg, p, hp, x, StepContext(sparse_decode=False))
    sparse = TopKSAE.stacked_forward(sae.cfg, p, hp, x, StepContext(sparse_decode=True))
    torch.testing.assert_close(dense.recon, sparse.recon, atol=1e-5, rtol=1e-5)
    g1 = torch.autograd.grad(dense.loss.sum(), sae.W_dec)[0]
    g2 = torch.autograd.grad(sparse.loss.sum(), sae.W_dec)[0]
    torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-5)


def test_auxk_loss_reference():
    sae = _randomise(TopKSAE(D_IN, D_SAE, k=3, k_aux=4, device="cpu"))
    x = _x()
    dead = torch.zeros(1, D_SAE, dtype=torch.bool)
    dead[0, [1, 4, 5, 9, 13, 17]] = True
    p = sae.stacked_tensors()
    pre = TopKSAE._pre(sae.cfg, p, x)
    recon = sae(x).recon.unsqueeze(0)
    got = auxk_loss(sae.cfg, p, pre, x, recon, dead)
    pre_np, W_dec = _pre_acts(sae, _np(x)), _np(sae.W_dec)
    e = _np(x) - _np(recon[0])
    dead_ids = [1, 4, 5, 9, 13, 17]
    losses = []
    for n in range(N):
        top = sorted(dead_ids, key=lambda j: -pre_np[n, j])[:4]
        e_hat = sum(max(pre_np[n, j], 0.0) * W_dec[j] for j in top)
        losses.append(np.sum((e[n] - e_hat) ** 2))
    assert got.item() == pytest.approx(np.mean(losses), rel=1e-5)
    assert auxk_loss(sae.cfg, p, pre, x, recon, torch.zeros_like(dead)).item() == 0.0


def test_batch_topk_training_and_inference():
    sae = _randomise(BatchTopKSAE(D_IN, D_SAE, k=2, topk_threshold_lr=0.5, device="cpu"))
    with torch.no_grad():
        sae.threshold.fill_(0.2)
    x = _x()
    pre = np.maximum(_pre_acts(sae, _np(x)), 0)
    flat = sorted(((pre[n, j], n, j) for n in range(N) for j in range(D_SAE)), reverse=True)
    ref = np.zeros_like(pre)
    for v, n, j in flat[: 2 * N]:
        ref[n, j] = v
    sae.train()
    out = sae(x)
    np.testing.assert_allclose(_np(out.codes), ref, atol=1e-5)
    kept = [v for v, _, _ in flat[: 2 * N] if v > 0]
    expected_theta = 0.2 + 0.5 * (min(kept) - 0.2)
    assert torch.allclose(sae.threshold, torch.full((D_SAE,), expected_theta), atol=1e-5)
    # inference: the global threshold
    theta = sae.threshold[0].item()
    ref_inf = np.where(pre > theta, pre, 0.0)
    np.testing.assert_allclose(_np(sae.encode(x)), ref_inf, atol=1e-5)
    # a fresh threshold (0) takes the first batch's smallest kept value directly
    with torch.no_grad():
        sae.threshold.zero_()
    sae(x)
    assert torch.allclose(sae.threshold, torch.full((D_SAE,), min(kept)), atol=1e-6)


def test_jumprelu_encoder_and_straight_through_gradient():
    bw = 0.5
    sae = _randomise(JumpReLUSAE(D_IN, D_SAE, l0_coefficient=0.7, bandwidth=bw, device="cpu"))
    x = _x()
    pre = _pre_acts(sae, _np(x))
    theta = _np(sae.threshold)
    ref = np.where(pre > theta, pre, 0.0)
    np.testing.assert_allclose(_np(sae.encode(x)), ref, atol=1e-5)
    out = sae(x)
    out.loss.backward()
    # reference gradient of the loss w.r.t. theta (Rajamanoharan et al. 2024, eqs. 11-12)
    W_dec, b_dec = _np(sae.W_dec), _np(sae.b_dec)
    recon = ref @ W_dec + b_dec
    d_recon = 2 * (recon - _np(x)) / N  # d mean_n ||recon - x||^2 / d recon
    grad = np.zeros(D_SAE)
    for n in range(N):
        for j in range(D_SAE):
            inside = abs((pre[n, j] - theta[j]) / bw) < 0.5
            if inside:
                d_code = float(d_recon[n] @ W_dec[j])
                grad[j] += d_code * (-theta[j] / bw)  # through the JumpReLU
                grad[j] += 0.7 * (-1.0 / bw) / N  # through the L0 penalty
    np.testing.assert_allclose(_np(sae.threshold.grad), grad, atol=1e-5)
    l0 = np.mean((pre > theta).sum(1))
    assert out.terms["l0_penalty"].item() == pytest.approx(l0)


# ----- matching pursuit ---------------------------------------------------------------------------
def _mp_reference(W, b_dec, x, steps, center, residual_threshold=None, dup_stop=False):
    """Matching pursuit one sample at a time with Python lists."""
    d_sae, d_in = W.shape
    codes = np.zeros((x.shape[0], d_sae))
    for n in range(x.shape[0]):
        r = [x[n, i] - (b_dec[i] if center else 0.0) for i in range(d_in)]
        support = set()
        for _ in range(steps):
            if (
                residual_threshold is not None
                and np.sqrt(sum(v * v for v in r)) <= residual_threshold
            ):
                break
            scores = [sum(r[i] * W[j, i] for i in range(d_in)) for j in range(d_sae)]
            j = max(range(d_sae), key=lambda a: scores[a])
            if dup_stop and j in support:
                break
            support.add(j)
            v = max(scores[j], 0.0)
            codes[n, j] += v
            r = [r[i] - v * W[j, i] for i in range(d_in)]
    recon = codes @ W + (b_dec if center else 0.0)
    return codes, recon


@pytest.mark.parametrize("center", [False, True])
def test_mp_encoder_matches_per_sample_loop(center):
    sae = _randomise(
        MatchingPursuitSAE(D_IN, D_SAE, k=5, apply_b_dec_to_input=center, device="cpu")
    )
    if not center:
        with torch.no_grad():
            sae.b_dec.zero_()
    x = _x()
    codes, recon = _mp_reference(_np(sae.W_dec), _np(sae.b_dec), _np(x), 5, center)
    np.testing.assert_allclose(_np(sae.encode(x)), codes, atol=1e-5)
    out = sae(x)
    np.testing.assert_allclose(_np(out.codes), codes, atol=1e-5)
    np.testing.assert_allclose(_np(out.recon), recon, atol=1e-5)
    assert out.loss.item() == pytest.approx(np.mean(np.sum((recon - _np(x)) ** 2, 1)), rel=1e-5)


def test_mp_adaptive_stopping_rules():
    sae = _randomise(
        MatchingPursuitSAE(
            D_IN, D_SAE, k=3, max_iterations=12, residual_threshold=1.0, device="cpu"
        )
    )
    x = _x(n=20) * 1.5
    codes, _ = _mp_reference(_np(sae.W_dec), _np(sae.b_dec) * 0, _np(x), 12, False, 1.0)
    np.testing.assert_allclose(_np(sae.encode(x)), codes, atol=1e-5)
    # rows stop at different points: adaptive sparsity
    assert len(set((codes != 0).sum(1).tolist())) > 1

    dup = MatchingPursuitSAE(
        D_IN, D_SAE, k=3, max_iterations=15, stop_on_duplicate_support=True, device="cpu"
    )
    _randomise(dup)
    with torch.no_grad():
        dup.b_dec.zero_()
    codes, _ = _mp_reference(_np(dup.W_dec), _np(dup.b_dec), _np(x), 15, False, None, True)
    np.testing.assert_allclose(_np(dup.encode(x)), codes, atol=1e-5)


def test_mp_gradient_matches_full_autograd_reference():
    """The no-grad selection + recompute gives the gradient of backpropagating through the
    whole unrolled pursuit (computed here one sample at a time, in float64)."""
    sae = _randomise(
        MatchingPursuitSAE(
            D_IN, D_SAE, k=4, apply_b_dec_to_input=True, dtype="float64", device="cpu"
        )
    )
    x = _x().double()
    sae(x).loss.backward()
    W = sae.W_dec.detach().clone().requires_grad_(True)
    b = sae.b_dec.detach().clone().requires_grad_(True)
    total = 0.0
    for n in range(N):
        r = x[n] - b
        recon = b.clone()
        for _ in range(4):
            scores = W @ r
            j = int(torch.argmax(scores))
            v = torch.relu(scores[j])
            recon = recon + v * W[j]
            r = r - v * W[j]
        total = total + ((recon - x[n]) ** 2).sum()
    (total / N).backward()
    torch.testing.assert_close(sae.W_dec.grad, W.grad)
    torch.testing.assert_close(sae.b_dec.grad, b.grad)


def _saved_bytes(sae, x):
    seen, total = set(), 0

    def pack(t):
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        sae(x).loss.backward()
    return total


def test_mp_saved_memory_does_not_grow_with_d_sae_times_k():
    B, d_in, d_sae = 64, 8, 4096
    x = torch.randn(B, d_in)
    small = _saved_bytes(MatchingPursuitSAE(d_in, d_sae, k=2, device="cpu"), x)
    large = _saved_bytes(MatchingPursuitSAE(d_in, d_sae, k=16, device="cpu"), x)
    per_step_scores = B * d_sae * 4  # one (B, d_sae) float32 score matrix
    # 14 more steps must cost far less than even one score matrix
    assert large - small < per_step_scores
    # and the growth per step is O(B * d_in)
    assert (large - small) / 14 <= 8 * B * d_in * 4


# ----- bad input ------------------------------------------------------------------------------------
def test_bad_input_raises_clearly():
    sae = TopKSAE(D_IN, D_SAE, k=3, device="cpu")
    with pytest.raises(ValueError, match="d_in=6"):
        sae.encode(torch.randn(4, D_IN + 1))
    bad = torch.randn(4, D_IN)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        sae(bad)
    with pytest.raises(ValueError, match="larger than the number of latents"):
        TopKSAE(D_IN, 8, k=9)
    with pytest.raises(ValueError, match="larger than the number of latents"):
        MatchingPursuitSAE(D_IN, 8, k=9)
    with pytest.raises(ValueError, match="larger than the number of latents"):
        BatchTopKSAE(D_IN, 8, k=9)
    with pytest.raises(ValueError, match="unit-norm"):
        MatchingPursuitSAE(D_IN, 8, k=2, unit_norm_decoder=False)
    with pytest.raises(ValueError, match="d_sae"):
        ReluSAE(D_IN, 0)
    with pytest.raises(ValueError, match="bandwidth"):
        JumpReLUSAE(D_IN, 8, bandwidth=0.0)
    with pytest.raises(TypeError, match="floating point"):
        sae.encode(torch.ones(3, D_IN, dtype=torch.long))
    with pytest.raises(ValueError, match="d_sae=20"):
        sae.decode(torch.zeros(3, 5))


def test_leading_dims_and_determinism():
    a = TopKSAE(D_IN, D_SAE, k=3, seed=5, device="cpu")
    b = TopKSAE(D_IN, D_SAE, k=3, seed=5, device="cpu")
    for name in a.tensor_names:
        assert torch.equal(getattr(a, name), getattr(b, name))
    x = torch.randn(2, 3, D_IN)
    assert a.encode(x).shape == (2, 3, D_SAE)
    torch.testing.assert_close(a.encode(x).reshape(6, D_SAE), a.encode(x.reshape(6, D_IN)))
    assert a(x).recon.shape == x.shape
