"""User sentence pairs on a pretrained causal LM (a tiny GPT-2 through the bridge)."""

from __future__ import annotations

import json

import pytest
import torch

from hierlens.analysis.causal.interchange import Alignment, interchange_accuracy
from hierlens.analysis.causal.sites import forward_logits
from hierlens.analysis.causal.text_pairs import read_pair_file

RECORDS = [
    {"base": "the company said", "source": "the companies said", "base_answer": " is",
     "source_answer": " was", "base_value": 0, "source_value": 1},
    {"base": "the market is", "source": "the markets are", "base_answer": " is",
     "source_answer": " was", "base_value": 0, "source_value": 1},
    {"base": "the shares were", "source": "the share was", "base_answer": " was",
     "source_answer": " is", "base_value": 1, "source_value": 0},
]  # fmt: skip


def test_pair_file_on_a_pretrained_bridge(tiny_gpt2, tmp_path):
    tok = tiny_gpt2.tokenizer
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in RECORDS))
    pairs = read_pair_file(path, tok, "number")
    assert pairs.base[0, : pairs.base_lengths[0]].tolist() == tok(RECORDS[0]["base"])["input_ids"]
    last = f"blocks.{tiny_gpt2.cfg.n_layers - 1}.hook_resid_post"
    iia = interchange_accuracy(tiny_gpt2, pairs, Alignment(last))[0]
    # swapping the whole last residual stream at the query gives the source's own output
    with torch.no_grad():
        logits = forward_logits(tiny_gpt2, pairs.source, pairs.source_lengths)
    at = logits[torch.arange(len(pairs)), pairs.source_query].gather(1, pairs.candidates)
    pred = pairs.candidates.gather(1, at.argmax(1, keepdim=True))[:, 0]
    assert iia == pytest.approx(float((pred == pairs.counterfactual).double().mean()))
    bad = dict(RECORDS[0], base_answer=" they")
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="answers must be one token"):
        read_pair_file(path, tok, "number")


def test_forward_logits_hands_hugging_face_an_explicit_mask(tiny_gpt2):
    """A padded batch through forward_logits gives each sentence's own logits, and the Hugging
    Face model receives the explicit (B, 1, T, T) mask and positions, never a 2-D mask whose
    reading is left to the transformers release."""
    from hierlens.models.model_inputs import hf_model

    inner = hf_model(tiny_gpt2)
    ids = [tiny_gpt2.tokenizer(r["base"] + r["base_answer"])["input_ids"] for r in RECORDS]
    ids.append(ids[0][:2])
    lengths = torch.tensor([len(x) for x in ids])
    tokens = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)
    for b, x in enumerate(ids):
        tokens[b, : len(x)] = torch.tensor(x)
    seen = []

    def spy(module, args, kwargs):
        seen.append(kwargs.get("attention_mask"))

    handle = inner.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        with torch.no_grad():
            logits = forward_logits(tiny_gpt2, tokens, lengths)
    finally:
        handle.remove()
    assert len(seen) == 1 and seen[0] is not None and seen[0].dim() == 4
    with torch.no_grad():  # the reference: the Hugging Face model on each sentence alone
        for b, x in enumerate(ids):
            alone = inner(torch.tensor([x])).logits[0]
            torch.testing.assert_close(logits[b, : len(x)], alone, atol=1e-5, rtol=1e-5)
