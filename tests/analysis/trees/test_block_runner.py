"""The fused-kernel block runner against the bridge's own blocks."""

import pytest
import torch

from hierlens.analysis.trees.block_runner import BlockRunner
from hierlens.models.transformer import ModelConfig, build_transformer

SUPPORTED = [
    dict(attention_dir="bidirectional"),
    dict(attention_dir="causal"),
    dict(attention_dir="bidirectional", act_fn="gelu_new", normalization_type="LNPre"),
    dict(attention_dir="causal", act_fn="relu", normalization_type=None),
    dict(attention_dir="bidirectional", act_fn="silu", attn_only=True),
    dict(attention_dir="bidirectional", positional_embedding_type="rotary"),
    dict(attention_dir="causal", positional_embedding_type="rotary", normalization_type="RMS"),
    dict(attention_dir="causal", normalization_type="RMSPre", act_fn="solu_ln"),
]


def _model(**kw):
    cfg = ModelConfig(d_vocab=20, n_ctx=12, d_model=32, n_layers=3, n_heads=4, seed=3, **kw)
    model = build_transformer(cfg, device="cpu")
    model.eval()
    return model


def _inputs(runner, seed=0, rows=6, seq=9):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 20, (rows, seq), generator=gen)
    masked = torch.rand(rows, seq, generator=gen) < 0.3
    masked[:, 0] = False  # every query keeps at least one visible key (causal too)
    masked[0] = False  # and one row has no mask
    positions = torch.stack([torch.randperm(seq, generator=gen).sort().values for _ in range(rows)])
    return runner.embed(tokens), masked, positions


@pytest.mark.parametrize("kw", SUPPORTED, ids=lambda kw: "-".join(f"{v}" for v in kw.values()))
def test_lean_blocks_equal_bridge_blocks(kw):
    model = _model(**kw)
    lean, bridge = BlockRunner(model), BlockRunner(model, lean=False)
    assert lean.fused and not bridge.fused
    hidden, masked, positions = _inputs(lean)
    with torch.inference_mode():
        for first, last, mask in [(0, 2, masked), (1, 2, masked), (0, 2, None), (2, 2, masked)]:
            a = lean.blocks(hidden, first, last, mask, positions=positions)
            b = bridge.blocks(hidden, first, last, mask, positions=positions)
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)


def test_fully_masked_query_gets_a_zero_update_like_the_native_block():
    model = _model(attention_dir="causal")
    lean, bridge = BlockRunner(model), BlockRunner(model, lean=False)
    hidden, masked, _ = _inputs(lean, seed=1)
    masked[2, :3] = True  # the first three queries of row 2 see no key at all
    with torch.inference_mode():
        a = lean.blocks(hidden, 0, 2, masked)
        b = bridge.blocks(hidden, 0, 2, masked)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)


def test_unsupported_configurations_use_the_bridge():
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge.sources.native import boot

    cfg = TransformerBridgeConfig(
        d_model=32,
        n_layers=2,
        n_heads=4,
        d_head=8,
        d_mlp=64,
        n_ctx=12,
        d_vocab=20,
        act_fn="silu",
        gated_mlp=True,
        seed=0,
    )
    model = boot(cfg, device="cpu", model_name="gated")
    runner = BlockRunner(model)
    assert not runner.fused
    hidden = runner.embed(torch.randint(0, 20, (3, 7)))
    with torch.inference_mode():
        out = runner.blocks(hidden, 0, 1, None)
    assert out.shape == hidden.shape and torch.isfinite(out).all()
