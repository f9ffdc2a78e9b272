"""The sparse-kernel TopK training step against the dense computation it replaces."""

import dataclasses

import pytest
import torch

from hierlens.sae import TopKSAE, train_saes
from hierlens.sae.outputs import StepContext
from hierlens.sae.sparse_step import sparse_topk_step
from hierlens.sae.workspace import Workspace

D_IN, D_SAE, K, S = 12, 96, 5, 3


def _stack(apply_b_dec=True, dtype=torch.float64, seed=0):
    saes = [
        TopKSAE(D_IN, D_SAE, k=K, seed=seed + i, apply_b_dec_to_input=apply_b_dec, device="cpu")
        for i in range(S)
    ]
    gen = torch.Generator().manual_seed(seed + 100)
    p = {}
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        t = torch.stack([getattr(s, name).detach() for s in saes]).to(dtype)
        t = t + 0.2 * torch.randn(t.shape, generator=gen, dtype=dtype)
        p[name] = t.requires_grad_(True)
    hp = {"aux_coefficient": torch.full((S,), 1 / 32, dtype=dtype)}
    return saes[0].cfg, p, hp


def _x(dtype=torch.float64, n=40, seed=1):
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _train(data, steps, lr=1e-2, log_every=3, n=S, **options):
    """Train ``n`` TopK SAEs (float64 unless ``dtype`` is given) on ``data`` in batches of 64;
    ``options`` go to the SAEs (``dtype``) or to ``train_saes``."""
    sae_kw = {"dtype": options.pop("dtype", "float64")}
    saes = [TopKSAE(D_IN, D_SAE, k=K, seed=i, device="cpu", **sae_kw) for i in range(n)]
    res = train_saes(
        saes,
        data,
        steps=steps,
        batch_size=64,
        lr=lr,
        shuffle=False,
        progress=False,
        log_every=log_every,
        device="cpu",
        **options,
    )
    return saes, res.history


def _assert_same_weights(a, b, atol, rtol):
    for sa, sb in zip(a, b):
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            torch.testing.assert_close(getattr(sa, name), getattr(sb, name), atol=atol, rtol=rtol)


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_sparse_step_equals_dense_forward_and_gradients(apply_b_dec):
    cfg, p, hp = _stack(apply_b_dec)
    q = {n: t.detach().clone().requires_grad_(True) for n, t in p.items()}
    x = _x()
    sparse = TopKSAE.stacked_forward(cfg, p, hp, x, StepContext(sparse_decode=True))
    dense = TopKSAE.stacked_forward(cfg, q, hp, x, StepContext(sparse_decode=False))
    assert sparse.codes is None and sparse.sparse_codes is not None
    torch.testing.assert_close(sparse.recon, dense.recon, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(sparse.dense_codes(D_SAE), dense.codes, atol=1e-12, rtol=0)
    torch.testing.assert_close(sparse.loss, dense.loss, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(sparse.fires, dense.fires)
    # A loss that also reads the codes directly exercises the gradient into the values.
    w = torch.linspace(0.5, 1.5, S, dtype=torch.float64)
    sv, _ = sparse.sparse_codes
    (w * sparse.loss).sum().add(0.3 * sv.pow(2).sum()).backward()
    (w * dense.loss).sum().add(0.3 * dense.codes.pow(2).sum()).backward()
    for name in p:
        torch.testing.assert_close(p[name].grad, q[name].grad, atol=1e-10, rtol=1e-9)


def test_sparse_step_matches_a_per_sample_reference():
    """Independent check: one member, written row by row with plain Python loops."""
    cfg, p, _ = _stack(seed=5)
    x = _x(n=7)
    vals, idx, recon = sparse_topk_step(x, p, K, True)
    p = {n: t.detach() for n, t in p.items()}
    for s in range(S):
        for n in range(x.shape[0]):
            pre = (x[n] - p["b_dec"][s]) @ p["W_enc"][s] + p["b_enc"][s]
            top = sorted(range(D_SAE), key=lambda j: -float(pre[j]))[:K]
            assert sorted(idx[s, n].tolist()) == sorted(top)
            ref = p["b_dec"][s].clone()
            for j in top:
                ref = ref + torch.relu(pre[j]) * p["W_dec"][s, j]
            torch.testing.assert_close(recon[s, n], ref, atol=1e-12, rtol=1e-12)


def test_training_with_sparse_steps_equals_dense_training():
    data = _x(n=64 * 6, seed=3)
    sparse, _ = _train(data, 6, sparse_decode=True)
    dense, _ = _train(data, 6, sparse_decode=False)
    _assert_same_weights(sparse, dense, atol=1e-9, rtol=1e-8)


def test_auxk_steps_take_the_dense_path():
    cfg, p, hp = _stack()
    x = _x()
    dead = torch.zeros(S, D_SAE, dtype=torch.bool)
    dead[:, ::3] = True
    out = TopKSAE.stacked_forward(cfg, p, hp, x, StepContext(sparse_decode=True, dead_mask=dead))
    assert out.codes is not None
    assert bool((out.terms["auxk"] > 0).all())


def test_auxk_follows_each_members_coefficient_in_a_stack():
    """The first member's AuxK coefficient is 0, the others' are not: AuxK must still run for
    them (dense path), and contribute nothing for the first."""
    cfg, p, hp = _stack()
    cfg = dataclasses.replace(cfg, aux_coefficient=0.0)  # the stack's config is the first's
    hp = {"aux_coefficient": torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)}
    dead = torch.zeros(S, D_SAE, dtype=torch.bool)
    dead[:, ::3] = True
    x = _x()
    out = TopKSAE.stacked_forward(cfg, p, hp, x, StepContext(sparse_decode=True, dead_mask=dead))
    assert out.codes is not None
    assert bool((out.terms["auxk"][1:] > 0).all())
    torch.testing.assert_close(
        out.loss, out.terms["mse"] + hp["aux_coefficient"] * out.terms["auxk"]
    )
    none = {"aux_coefficient": torch.zeros(S, dtype=torch.float64)}
    quiet = TopKSAE.stacked_forward(
        cfg, p, none, x, StepContext(sparse_decode=True, dead_mask=dead)
    )
    assert quiet.codes is None  # no member uses AuxK: the sparse step runs


def _transposed_leaf_stack(seed=0):
    """The stack as the trainer holds it: ``W_enc`` trained as a contiguous
    ``(S, d_sae, d_in)`` leaf and passed to the step as its transpose."""
    cfg, p, hp = _stack(seed=seed)
    leaves = {n: t.detach().clone() for n, t in p.items()}
    leaves["W_enc"] = leaves["W_enc"].transpose(1, 2).contiguous()
    for t in leaves.values():
        t.requires_grad_(True)
    view = {**leaves, "W_enc": leaves["W_enc"].transpose(1, 2)}
    return cfg, p, hp, leaves, view


def test_workspace_delivers_weight_gradients_into_kept_buffers():
    cfg, p, hp, leaves, view = _transposed_leaf_stack()
    ws = Workspace()
    x = _x()
    ctx = StepContext(sparse_decode=True, workspace=ws)
    TopKSAE.stacked_forward(cfg, view, hp, x, ctx).loss.sum().backward()
    TopKSAE.stacked_forward(cfg, p, hp, x, StepContext(sparse_decode=True)).loss.sum().backward()
    for name in p:
        got = leaves[name].grad.transpose(1, 2) if name == "W_enc" else leaves[name].grad
        torch.testing.assert_close(got, p[name].grad, atol=1e-12, rtol=1e-12)
    # the weight gradients are the workspace's buffers, not copies of them
    for name, leaf in (("grad_W_enc", leaves["W_enc"]), ("grad_W_dec", leaves["W_dec"])):
        buf = ws.get(name, leaf.grad.reshape(-1, D_IN).shape, leaf.dtype, leaf.device)
        assert leaf.grad.data_ptr() == buf.data_ptr()
    # a second step with gradients zeroed in place (not dropped): the buffer held by .grad
    # must not be overwritten before the addition, and the result is one step's gradient
    kept = {n: t.grad for n, t in leaves.items()}
    for t in leaves.values():
        t.grad.zero_()
    TopKSAE.stacked_forward(cfg, view, hp, x, ctx).loss.sum().backward()
    for name in p:
        assert leaves[name].grad is kept[name]
        got = leaves[name].grad.transpose(1, 2) if name == "W_enc" else leaves[name].grad
        torch.testing.assert_close(got, p[name].grad, atol=1e-12, rtol=1e-12)
    # and without zeroing, gradients accumulate
    TopKSAE.stacked_forward(cfg, view, hp, x, ctx).loss.sum().backward()
    torch.testing.assert_close(leaves["W_dec"].grad, 2 * p["W_dec"].grad, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("weights", ["computed", "contiguous W_enc"])
def test_workspace_leaves_other_weights_to_autograd(weights):
    """Weights computed from other tensors, or a ``W_enc`` leaf in the SAEs' own layout, get
    their gradient through autograd as usual."""
    cfg, p, hp = _stack(seed=2)
    base = {n: t.detach().clone().requires_grad_(True) for n, t in p.items()}
    x = _x()
    ctx = StepContext(sparse_decode=True, workspace=Workspace())
    for _ in range(2):  # the second step adds to gradients already there
        used = {n: 1.0 * t for n, t in base.items()} if weights == "computed" else base
        TopKSAE.stacked_forward(cfg, used, hp, x, ctx).loss.sum().backward()
        TopKSAE.stacked_forward(
            cfg, p, hp, x, StepContext(sparse_decode=True)
        ).loss.sum().backward()
    for name in p:
        assert base[name].grad.stride() == base[name].stride()
        torch.testing.assert_close(base[name].grad, p[name].grad, atol=1e-12, rtol=1e-12)


def test_a_dense_step_releases_the_workspace():
    cfg, p, hp = _stack()
    ws = Workspace()
    x = _x()
    TopKSAE.stacked_forward(cfg, p, hp, x, StepContext(sparse_decode=True, workspace=ws))
    assert ws.nbytes >= S * x.shape[0] * D_SAE * 8  # the float64 pre-activations at least
    dead = torch.zeros(S, D_SAE, dtype=torch.bool)
    dead[:, ::3] = True
    ctx = StepContext(sparse_decode=True, dead_mask=dead, workspace=ws)
    assert TopKSAE.stacked_forward(cfg, p, hp, x, ctx).codes is not None  # the dense path
    assert ws.nbytes == 0


def test_workspace_reuses_memory_for_equal_requests():
    ws = Workspace()
    a = ws.get("t", (3, 4), torch.float32, torch.device("cpu"))
    assert ws.get("t", (3, 4), torch.float32, torch.device("cpu")) is a
    assert ws.get("t", (4, 3), torch.float32, torch.device("cpu")) is not a
    assert ws.get("t", (4, 3), torch.float64, torch.device("cpu")).dtype == torch.float64


def test_compiled_training_on_the_sparse_step_equals_eager():
    """``compile=True`` traces the sparse step (without the workspace's direct gradients)."""
    data = _x(dtype=torch.float32, n=64 * 4, seed=4)
    kw = dict(n=2, dtype="float32", sparse_decode=True)
    eager, _ = _train(data, 4, compile=False, **kw)
    compiled, _ = _train(data, 4, compile=True, **kw)
    _assert_same_weights(eager, compiled, atol=1e-6, rtol=1e-5)


def test_training_that_switches_to_auxk_steps_equals_dense_training():
    """Once latents die, AuxK steps take the dense path inside a stack trained on the sparse
    layout (``W_enc`` stored transposed): the result still equals all-dense training."""
    g = torch.Generator().manual_seed(7)
    data = torch.relu(torch.randn(64 * 8, D_IN, generator=g, dtype=torch.float64)) * 3.0

    kw = dict(lr=5e-2, log_every=2, dead_after_tokens=64)
    sparse, history = _train(data, 8, sparse_decode=True, **kw)
    dense, _ = _train(data, 8, sparse_decode=False, **kw)
    assert any(r["auxk"] > 0 for r in history)  # AuxK did run
    assert any(r["auxk"] == 0 for r in history)  # after sparse steps
    _assert_same_weights(sparse, dense, atol=1e-9, rtol=1e-8)


@pytest.mark.parametrize("compile", [False, True])
def test_autocast_leaves_the_sparse_step_in_the_weights_dtype(compile):
    """bf16 autocast on the CPU does not reach the sparse kernels (they take one dtype)."""
    data = _x(dtype=torch.float32, n=64 * 3, seed=6)
    kw = dict(n=2, dtype="float32", sparse_decode=True, compile=compile)
    plain, _ = _train(data, 3, **kw)
    autocast, _ = _train(data, 3, autocast=True, **kw)
    _assert_same_weights(plain, autocast, atol=1e-6, rtol=1e-5)
