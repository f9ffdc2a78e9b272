"""The fused multi-SAE trainer: stacked training equals separate plain loops, exact resume,
dead-latent tracking, sources and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hierlens.sae import (
    BatchTopKSAE,
    JumpReLUSAE,
    MatchingPursuitSAE,
    ReluSAE,
    TopKSAE,
    train_saes,
)

D_IN, D_SAE, BS = 8, 32, 32


def _data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(24, D_IN, generator=g)
    codes = torch.relu(torch.randn(n, 24, generator=g) - 1.0)
    return codes @ basis + 0.05 * torch.randn(n, D_IN, generator=g)


def _make_saes():
    return [
        TopKSAE(D_IN, D_SAE, k=4, seed=0, device="cpu"),
        TopKSAE(D_IN, D_SAE, k=4, seed=1, device="cpu"),
        TopKSAE(D_IN, D_SAE, k=4, seed=2, aux_coefficient=0.1, device="cpu"),
        ReluSAE(D_IN, D_SAE, l1_coefficient=0.01, seed=3, device="cpu"),
        ReluSAE(D_IN, D_SAE, l1_coefficient=0.05, seed=4, device="cpu"),
        JumpReLUSAE(D_IN, D_SAE, l0_coefficient=0.01, bandwidth=0.1, seed=5, device="cpu"),
        MatchingPursuitSAE(D_IN, D_SAE, k=3, seed=6, device="cpu"),
        MatchingPursuitSAE(D_IN, D_SAE, k=3, seed=7, apply_b_dec_to_input=True, device="cpu"),
        BatchTopKSAE(D_IN, D_SAE, k=4, seed=8, device="cpu"),
    ]


def _schedule(step, steps, warmup, decay_fraction):
    """Warmup then linear decay over the last fraction, written independently."""
    w = (step + 1) / warmup if step < warmup else 1.0
    start = int(steps * (1 - decay_fraction))
    d = 1.0 if step < start else (steps - step) / (steps - start)
    return w * d


def _plain_loop(sae, x, steps, lr, warmup, decay_fraction, max_norm):
    """One SAE, one torch Adam, one batch at a time."""
    params = [getattr(sae, n) for n in sae.trainable_names()]
    opt = torch.optim.Adam(params, lr=lr)
    sae.train()
    n = x.shape[0]
    for step in range(steps):
        start = (step * BS) % n
        xb = x[start : start + BS]
        for pg in opt.param_groups:
            pg["lr"] = lr * _schedule(step, steps, warmup, decay_fraction)
        loss = sae(xb).loss
        loss.backward()
        if sae.cfg.unit_norm_decoder:
            with torch.no_grad():
                W = sae.W_dec
                W.grad -= (W.grad * W).sum(1, keepdim=True) * W
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            if sae.cfg.unit_norm_decoder:
                sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True)
            if isinstance(sae, JumpReLUSAE):
                sae.threshold.clamp_(min=0)


@pytest.mark.parametrize("sparse_decode", [None, True])
def test_fused_training_equals_separate_plain_loops(sparse_decode):
    """``sparse_decode=True`` puts the TopK stack on the sparse CPU kernels (``W_enc`` stored
    transposed, gradients in workspace buffers); BatchTopK then decodes by gathering rows."""
    x = _data()
    steps, lr, warmup, decay, clip = 24, 2e-3, 5, 0.25, 0.5
    fused = _make_saes()
    train_saes(
        fused,
        x,
        steps=steps,
        batch_size=BS,
        lr=lr,
        warmup_steps=warmup,
        decay_fraction=decay,
        grad_clip=clip,
        shuffle=False,
        progress=False,
        log_every=8,
        sparse_decode=sparse_decode,
        heldout_fraction=0.0,  # the plain loops see every row
    )
    separate = _make_saes()
    for sae in separate:
        _plain_loop(sae, x, steps, lr, warmup, decay, clip)
    for a, b in zip(fused, separate):
        for name in a.tensor_names:
            torch.testing.assert_close(
                getattr(a, name),
                getattr(b, name),
                atol=2e-5,
                rtol=1e-4,
                msg=lambda m, a=a, name=name: f"{type(a).__name__}.{name}: {m}",
            )
    # training changed the parameters and kept the constraints
    init = _make_saes()
    for a, b in zip(fused, init):
        assert not torch.allclose(a.W_dec, b.W_dec)
        if a.cfg.unit_norm_decoder:
            torch.testing.assert_close(a.W_dec.norm(dim=1), torch.ones(D_SAE))


@pytest.mark.parametrize("sparse_decode", [None, True])
def test_exact_resume_after_interruption(tmp_path, sparse_decode):
    x = _data()
    kwargs = dict(
        steps=12,
        batch_size=BS,
        lr=3e-3,
        warmup_steps=3,
        log_every=2,
        progress=False,
        sparse_decode=sparse_decode,
    )

    def saes():
        return [
            TopKSAE(D_IN, D_SAE, k=4, seed=0, device="cpu"),
            ReluSAE(D_IN, D_SAE, l1_coefficient=0.01, seed=1, device="cpu"),
            BatchTopKSAE(D_IN, D_SAE, k=4, seed=2, device="cpu"),
        ]

    straight = saes()
    ref = train_saes(straight, x, **kwargs)

    class Crash(RuntimeError):
        pass

    def crash(records):
        if records[0]["step"] == 8:
            raise Crash

    with pytest.raises(Crash):
        train_saes(saes(), x, checkpoint_dir=tmp_path, checkpoint_every=3, callback=crash, **kwargs)
    resumed = saes()
    out = train_saes(resumed, x, checkpoint_dir=tmp_path, checkpoint_every=3, resume=True, **kwargs)
    assert out.steps == 12
    for a, b in zip(straight, resumed):
        for name in a.tensor_names:
            assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert out.history == ref.history
    # a checkpoint from another configuration is refused
    with pytest.raises(ValueError, match="different run"):
        train_saes(saes()[:2], x, checkpoint_dir=tmp_path, resume=True, **kwargs)


def test_iterable_and_callable_sources_match_tensor_source():
    x = _data(n=192)
    ref = [TopKSAE(D_IN, D_SAE, k=4, seed=3, device="cpu")]
    train_saes(ref, x, steps=10, batch_size=BS, shuffle=False, heldout_fraction=0.0, progress=False)
    sizes = [5, 40, 17, 64, 66]  # uneven chunks, re-chunked into batches of 32
    chunks = list(torch.split(x, sizes))
    for source in (chunks, lambda: iter(chunks)):
        got = [TopKSAE(D_IN, D_SAE, k=4, seed=3, device="cpu")]
        train_saes(got, source, steps=10, batch_size=BS, progress=False)
        assert torch.equal(got[0].W_dec, ref[0].W_dec)
    # a one-shot iterator that runs out stops training early with a warning
    short = [TopKSAE(D_IN, D_SAE, k=4, device="cpu")]
    with pytest.warns(UserWarning, match="ran out"):
        res = train_saes(short, iter(chunks), steps=100, batch_size=BS, progress=False)
    assert res.steps == 192 // BS


def test_dead_and_dense_latent_tracking():
    x = _data(n=320)
    sae = TopKSAE(D_IN, D_SAE, k=3, seed=0, device="cpu")
    with torch.no_grad():
        sae.b_enc[:5] = -1e3  # these latents can never be among the top k
        sae.b_enc[5] = 1e3  # this one always is
    probe = TopKSAE(D_IN, D_SAE, k=3, seed=0, device="cpu")
    probe.load_state_dict(sae.state_dict())
    steps, window = 10, 3 * BS
    res = train_saes(
        [sae],
        x,
        steps=steps,
        batch_size=BS,
        lr=1e-12,
        shuffle=False,
        log_every=steps,
        dead_after_tokens=window,
        dense_threshold=0.5,
        grad_clip=None,
        heldout_fraction=0.0,
        progress=False,
    )
    # reference from the (numerically unchanged) initial SAE, batch by batch
    fired = np.stack(
        [(probe.encode(x[s * BS : (s + 1) * BS]) != 0).any(0).numpy() for s in range(steps)]
    )
    last = [max([s for s in range(steps) if fired[s, j]], default=-1) for j in range(D_SAE)]
    dead = np.mean([(steps - 1 - lj) * BS >= window if lj >= 0 else True for lj in last])
    counts = (probe.encode(x) != 0).sum(0).numpy()
    rec = res.history[-1]
    assert rec["dead_fraction"] == pytest.approx(dead)
    assert rec["dead_fraction"] >= 5 / D_SAE
    assert rec["dense_fraction"] == pytest.approx(np.mean(counts / x.shape[0] > 0.5))
    assert rec["dense_fraction"] >= 1 / D_SAE
    assert rec["l0"] == pytest.approx(3.0)


def test_auxk_switches_on_when_latents_die():
    x = _data()
    sae = TopKSAE(D_IN, D_SAE, k=2, aux_coefficient=1.0, device="cpu")
    res = train_saes(
        [sae], x, steps=6, batch_size=BS, log_every=2, dead_after_tokens=BS, progress=False
    )
    assert res.history[0]["auxk"] == 0.0  # no dead latent known yet
    assert res.history[-1]["auxk"] > 0.0


def test_fvu_in_history_matches_definition():
    x = _data(n=64)
    sae = ReluSAE(D_IN, D_SAE, device="cpu")
    res = train_saes(
        [sae],
        x,
        steps=2,
        batch_size=64,
        lr=1e-12,
        log_every=2,
        shuffle=False,
        heldout_fraction=0.0,
        progress=False,
    )
    recon = sae(x).recon.detach()
    fvu = ((x - recon) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert res.history[0]["fvu"] == pytest.approx(float(fvu), rel=1e-4)
    assert res.tokens == 128


def test_trainer_bad_input():
    x = _data(n=64)
    sae = TopKSAE(D_IN, D_SAE, k=2, device="cpu")
    with pytest.raises(ValueError, match="d_in=8"):
        train_saes([sae], torch.randn(64, D_IN + 1), steps=1, batch_size=8, progress=False)
    bad = x.clone()
    bad[3, 1] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        train_saes([sae], bad, steps=1, batch_size=8, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        train_saes([sae], [bad], steps=1, batch_size=64, progress=False)
    with pytest.raises(ValueError, match="same activation width"):
        train_saes([sae, TopKSAE(D_IN + 1, D_SAE, k=2, device="cpu")], x, steps=1, progress=False)
    with pytest.raises(ValueError, match="exactly one"):
        train_saes([sae], x, steps=1, tokens=10, progress=False)
    with pytest.raises(TypeError, match="list of SAEs"):
        train_saes(sae, x, steps=1, progress=False)
    with pytest.raises(ValueError, match="twice"):
        train_saes([sae, sae], x, steps=1, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train_saes([sae], x, steps=1, lr=[1e-3, 1e-3], progress=False)


def test_resume_across_encoder_layouts(tmp_path):
    """A checkpoint keeps the optimiser state in the SAEs' layout: a run on the sparse CPU
    kernels (``W_enc`` stored transposed) resumes on the dense path and vice versa."""
    x = _data().double()
    kwargs = dict(steps=10, batch_size=BS, lr=3e-3, log_every=2, progress=False)

    def saes():
        return [TopKSAE(D_IN, D_SAE, k=4, seed=i, dtype="float64", device="cpu") for i in (0, 1)]

    class Crash(RuntimeError):
        pass

    def crash(records):
        if records[0]["step"] == 6:
            raise Crash

    for first, second in ((True, False), (False, True)):
        straight = saes()
        train_saes(straight, x, sparse_decode=first, **kwargs)
        ckpt = tmp_path / f"from_{first}"
        with pytest.raises(Crash):
            train_saes(
                saes(),
                x,
                checkpoint_dir=ckpt,
                checkpoint_every=3,
                callback=crash,
                sparse_decode=first,
                **kwargs,
            )
        resumed = saes()
        train_saes(resumed, x, checkpoint_dir=ckpt, resume=True, sparse_decode=second, **kwargs)
        for a, b in zip(straight, resumed):
            for name in a.tensor_names:
                torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-9, rtol=1e-8)
