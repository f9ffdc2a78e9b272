"""Rank collapse (Dong et al. 2021): residual definitions and pure-attention decay."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from hierlens.analysis.compare.rank_collapse import rank_collapse, rank_residual


def _l1_inf(m):
    return np.sqrt(np.abs(m).sum(0).max() * np.abs(m).sum(1).max())


def test_token_uniform_has_zero_residual():
    v = torch.randn(2, 1, 5)
    x = v.expand(2, 4, 5)
    np.testing.assert_allclose(rank_residual(x).numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(rank_residual(x, norm="l1_inf").numpy(), 0.0, atol=1e-9)


def test_fro_residual_closed_form():
    x = torch.randn(3, 6, 4, dtype=torch.float64)
    ref = [np.linalg.norm(m - m.mean(0)) / np.linalg.norm(m) for m in x.numpy()]
    np.testing.assert_allclose(rank_residual(x).numpy(), ref, rtol=1e-12)


def test_l1_inf_against_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(3):
        m = rng.normal(size=(3, 2))
        # brute force: a fine grid over v, refined by Nelder-Mead from the best grid points
        lo, hi = m.min(0), m.max(0)
        g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], 121), np.linspace(lo[1], hi[1], 121))
        grid = np.stack([g0.ravel(), g1.ravel()], 1)
        vals = np.array([_l1_inf(m - v) for v in grid])
        best = min(
            minimize(
                lambda v, m=m: _l1_inf(m - v),
                grid[k],
                method="Nelder-Mead",
                options={"xatol": 1e-10, "fatol": 1e-12},
            ).fun
            for k in np.argsort(vals)[:5]
        )
        best = min(best, vals.min())
        got = float(rank_residual(torch.tensor(m)[None], norm="l1_inf", relative=False)[0])
        assert got == pytest.approx(best, rel=1e-6, abs=1e-9), trial
        rel = float(rank_residual(torch.tensor(m)[None], norm="l1_inf")[0])
        assert rel == pytest.approx(got / _l1_inf(m), rel=1e-9)


@pytest.fixture(scope="module")
def attn_model():
    from hierlens.models import ModelConfig, build_transformer

    cfg = ModelConfig(
        d_vocab=50,
        n_ctx=12,
        d_model=32,
        n_layers=8,
        n_heads=2,
        attn_only=True,
        attention_dir="bidirectional",
        seed=0,
    )
    model = build_transformer(cfg).double()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # weights of order 1 so that attention is far from uniform
        for name, p in model.named_parameters():
            if p.ndim >= 2 and "embed" not in name:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) / p.shape[-1] ** 0.5)
    return model


def test_pure_attention_collapses_doubly_exponentially(attn_model):
    tokens = torch.randint(0, 50, (4, 12), generator=torch.Generator().manual_seed(1))
    pure = rank_collapse(attn_model, tokens, path="attention").mean(0)
    skip = rank_collapse(attn_model, tokens, path="attention+skip").mean(0)
    assert pure.shape == skip.shape == (9,)
    # residual falls fast; over the first blocks (before it reaches the numerical floor) the
    # log residual falls faster than linearly: each step down is larger than the last
    assert pure[4] < 1e-5 * pure[1]
    logs = torch.log(pure[1:5])
    steps = logs[:-1] - logs[1:]
    assert bool((steps > 0).all()) and bool((steps[1:] > 1.5 * steps[:-1]).all()), steps
    # skip connections keep the tokens apart
    assert float(skip.min()) > 0.1
    full = rank_collapse(attn_model, tokens, path="full").mean(0)
    torch.testing.assert_close(full, skip)  # attention-only: the model is X + A


def test_bad_input(attn_model):
    with pytest.raises(ValueError, match="path"):
        rank_collapse(attn_model, torch.zeros(1, 3, dtype=torch.long), path="mlp")
    with pytest.raises(ValueError, match="MLPs"):
        rank_collapse(attn_model, torch.zeros(1, 3, dtype=torch.long), path="attention+mlp")
    with pytest.raises(ValueError, match="norm"):
        rank_residual(torch.zeros(2, 3), norm="l2")
    with pytest.raises(ValueError, match="only path='full'"):
        rank_collapse(torch.nn.Linear(3, 3), torch.zeros(1, 2, 3), path="attention")


def test_plain_module():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    x = torch.randn(2, 5, 4)
    out = rank_collapse(model, x, modules=["0", "1"])
    ref = rank_residual(torch.stack([model[0](x), model(x)], 1).detach())
    torch.testing.assert_close(out, ref)
