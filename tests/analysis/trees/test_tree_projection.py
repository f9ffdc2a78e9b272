"""span_scores against a plain one-forward-per-span reference.

The reference runs the bridge's own forward once per span and masks by editing the attention
pattern through ``hook_pattern`` (zero the hidden keys, renormalise the row), a different
mechanism from the batched key masks of the implementation.
"""

from __future__ import annotations

import math

import pytest
import torch

from hierlens.analysis import span_scores
from hierlens.models import get_task
from hierlens.models.transformer import ModelConfig, build_transformer


def _model(attention_dir="causal", n_layers=3, pos="standard", seed=0, n_ctx=24, d_vocab=12):
    cfg = ModelConfig(
        d_vocab=d_vocab,
        n_ctx=n_ctx,
        d_model=32,
        n_layers=n_layers,
        n_heads=4,
        attention_dir=attention_dir,
        positional_embedding_type=pos,
        seed=seed,
    )
    return build_transformer(cfg, device="cpu")


def _reference(model, tokens, words, *, layer, mask_from, pool="sum", sim="cosine"):
    """One forward per span; returns an (n, n) nested list (None below the diagonal)."""
    n_layers = model.cfg.n_layers
    layer = layer % n_layers
    name = f"blocks.{layer}.hook_resid_post"
    toks = torch.tensor([tokens])

    def run(keep):
        hooks = []
        if keep is not None:
            keep_t = torch.tensor(keep, dtype=torch.float32)

            def edit(pattern, hook):
                p = pattern * keep_t
                return p / p.sum(-1, keepdim=True).clamp_min(1e-30)

            hooks = [
                (f"blocks.{lay}.attn.hook_pattern", edit) for lay in range(mask_from, n_layers)
            ]
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            _, cache = model.run_with_cache(toks, names_filter=name)
        return cache[name][0].double()

    def span_vec(hidden, i, j):
        total = torch.zeros(hidden.shape[-1], dtype=torch.float64)
        for w in range(i, j + 1):
            a, b = words[w]
            for t in range(a, b):
                total = total + hidden[t]
        if pool == "mean":
            total = total / (j - i + 1)
        return total

    full = run(None)
    word_token = set()
    for a, b in words:
        word_token.update(range(a, b))
    n = len(words)
    out = [[None] * n for _ in range(n)]
    for i in range(n):
        for j in range(i, n):
            lo, hi = words[i][0], words[j][1]
            keep = [not (t in word_token and not lo <= t < hi) for t in range(len(tokens))]
            iso = run(keep)
            u, v = span_vec(full, i, j), span_vec(iso, i, j)
            if sim == "cosine":
                out[i][j] = float(torch.dot(u, v) / (u.norm() * v.norm()))
            else:
                out[i][j] = -float((u - v).norm())
    return out


def _assert_matches(scores, ref, atol=2e-5):
    n = len(ref)
    assert scores.shape == (n, n)
    assert scores.dtype == torch.float32
    for i in range(n):
        for j in range(n):
            if j < i:
                assert math.isnan(float(scores[i, j]))
            else:
                assert abs(float(scores[i, j]) - ref[i][j]) <= atol, (i, j, scores[i, j], ref[i][j])


@pytest.fixture(scope="module")
def dyck_examples():
    task = get_task("dyck", max_length=8, max_depth=3)
    examples = task.sample(40, "train", seed=3)
    return [next(e for e in examples if len(e.word_positions) == n) for n in (4, 6)]


@pytest.mark.parametrize(
    "pos,layer,mask_from", [("standard", -1, 0), ("rotary", 2, 1), ("standard", 1, 1)]
)
def test_causal_matches_reference(dyck_examples, pos, layer, mask_from):
    task = get_task("dyck", max_length=8, max_depth=3)
    model = _model("causal", pos=pos, d_vocab=len(task.vocab))
    scores = span_scores(model, dyck_examples, layer=layer, mask_from_layer=mask_from, batch_size=5)
    assert len(scores) == len(dyck_examples)
    for ex, sc in zip(dyck_examples, scores):
        words = [(p, p + 1) for p in ex.word_positions]
        ref = _reference(model, list(ex.tokens), words, layer=layer, mask_from=mask_from)
        _assert_matches(sc, ref)


# Sub-word tokens: token 0 is a marker before the words, token 4 a marker between words,
# the last token a marker after them; words of 1-3 tokens.
_SEQS = [
    [1, 5, 6, 7, 2, 8, 9, 10, 11, 3],
    [1, 4, 4, 5, 2, 6, 7, 3],
    [1, 9, 2, 3],
]
_WORDS = [
    [(1, 3), (3, 4), (5, 6), (6, 9), (9, 10)],
    [(1, 2), (2, 4), (5, 6), (6, 7)],
    [(1, 2)],
]


@pytest.mark.parametrize("attention_dir", ["causal", "bidirectional"])
@pytest.mark.parametrize("mask_from,pool,sim", [(0, "sum", "cosine"), (1, "mean", "neg_l2")])
def test_subwords_match_reference(attention_dir, mask_from, pool, sim):
    model = _model(attention_dir, n_layers=2, seed=1)
    scores = span_scores(
        model,
        [torch.tensor(s) for s in _SEQS],
        word_spans=_WORDS,
        mask_from_layer=mask_from,
        pool=pool,
        sim=sim,
        batch_size=4,
    )
    for toks, words, sc in zip(_SEQS, _WORDS, scores):
        ref = _reference(model, toks, words, layer=-1, mask_from=mask_from, pool=pool, sim=sim)
        _assert_matches(sc, ref)


def test_bidirectional_dyck_every_token_a_word():
    """Plain token lists: every token is a word (no visible markers at all)."""
    model = _model("bidirectional", n_layers=2, seed=2, pos="rotary")
    seqs = [[3, 4, 5, 6, 7], [8, 9, 10]]
    scores = span_scores(model, seqs, layer=0)
    for toks, sc in zip(seqs, scores):
        words = [(t, t + 1) for t in range(len(toks))]
        _assert_matches(sc, _reference(model, toks, words, layer=0, mask_from=0))


def test_batch_size_does_not_change_scores(dyck_examples):
    task = get_task("dyck", max_length=8, max_depth=3)
    for attention_dir in ("causal", "bidirectional"):
        model = _model(attention_dir, d_vocab=len(task.vocab))
        big = span_scores(model, dyck_examples, batch_size=1000)
        small = span_scores(model, dyck_examples, batch_size=1)
        for a, b in zip(big, small):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0, equal_nan=True)


def test_restores_training_mode(dyck_examples):
    task = get_task("dyck", max_length=8, max_depth=3)
    model = _model(d_vocab=len(task.vocab))
    model.train()
    span_scores(model, dyck_examples[:1])
    assert model.training


@pytest.fixture()
def guarded_model():
    """A model whose first block raises if it is ever run."""
    model = _model(n_layers=2, n_ctx=8)

    def boom(module, args, kwargs):
        raise AssertionError("a forward pass ran before the input was validated")

    model.original_model.layers[0].register_forward_pre_hook(boom, with_kwargs=True)
    return model


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(sequences=[[1] * 9]), "longer than the model's context"),
        (dict(sequences=[[1, 2], []]), "empty"),
        (dict(sequences=[]), "empty"),
        (dict(sequences=[[1, 2]], word_spans=[[]]), "no words"),
        (dict(sequences=[[1, 2]], layer=2), "layer=2 is out of range"),
        (dict(sequences=[[1, 2]], layer=-3), "out of range"),
        (dict(sequences=[[1, 2]], layer=0, mask_from_layer=1), "mask_from_layer"),
        (dict(sequences=[[1, 2, 3]], word_spans=[[(0, 1), (1, 4)]]), "does not lie"),
        (dict(sequences=[[1, 2, 3]], word_spans=[[(0, 2), (1, 3)]]), "overlaps"),
        (dict(sequences=[[1, 2, 3]], word_spans=[[(1, 1)]]), "does not lie"),
        (dict(sequences=[[1, 2, 3]], word_spans=[[(0, 1)], [(0, 1)]]), "2 entries"),
        (dict(sequences=[[1, 99]]), "outside the vocabulary"),
        (dict(sequences=[[1, 2]], pool="max"), "pool"),
        (dict(sequences=[[1, 2]], sim="dot"), "sim"),
        (dict(sequences=[[1, 2]], batch_size=0), "batch_size"),
        (dict(sequences=[[1, 2]], device="meta"), "model's parameters are on"),
    ],
)
def test_bad_input_raises_before_forward(guarded_model, kwargs, match):
    sequences = kwargs.pop("sequences")
    with pytest.raises(ValueError, match=match):
        span_scores(guarded_model, sequences, **kwargs)


def test_bad_types(guarded_model):
    with pytest.raises(TypeError):
        span_scores(guarded_model, [[1.5, 2.0]])
    with pytest.raises(TypeError):
        span_scores(torch.nn.Linear(2, 2), [[1, 2]])


def test_scores_feed_the_decoders(dyck_examples):
    from hierlens.analysis.trees.decode import constituent_score, tree_projection
    from hierlens.analysis.trees.metrics import parse_f1, tree_score

    task = get_task("dyck", max_length=8, max_depth=3)
    model = _model("bidirectional", d_vocab=len(task.vocab))
    scores = span_scores(model, dyck_examples, progress=False)
    greedy = [tree_projection(s, "greedy") for s in scores]
    exact = [tree_projection(s, "exact") for s in scores]
    for s, g, e in zip(scores, greedy, exact):
        assert constituent_score(s, e) >= constituent_score(s, g) - 1e-9
    assert tree_score(scores) >= 0.0
    assert 0.0 <= parse_f1(greedy, [ex.tree for ex in dyck_examples]) <= 1.0


@pytest.mark.parametrize("attention_dir", ["causal", "bidirectional"])
def test_length_buckets_match_reference(attention_dir, monkeypatch):
    """Isolated rows split into several length buckets give the reference's scores."""
    from hierlens.analysis.trees import isolation as tp

    monkeypatch.setattr(tp, "_MIN_BUCKET_ROWS", 1)
    model = _model(attention_dir, n_layers=2, seed=3, pos="rotary")
    seqs = [[3, 4, 5, 6, 7, 8, 9], [8, 9, 10, 3], [5, 6, 7, 8, 9, 10]]
    scores = span_scores(model, seqs, layer=-1, batch_size=64)
    for toks, sc in zip(seqs, scores):
        words = [(t, t + 1) for t in range(len(toks))]
        _assert_matches(sc, _reference(model, toks, words, layer=-1, mask_from=0))


@pytest.mark.parametrize("bucket", [1, 32], ids=["buckets", "one-bucket"])
@pytest.mark.parametrize(
    "attention_dir,pos,mask_from,pool,sim",
    [
        ("causal", "standard", 0, "sum", "cosine"),
        ("causal", "rotary", 1, "mean", "neg_l2"),
        ("bidirectional", "rotary", 0, "sum", "cosine"),
        ("bidirectional", "standard", 1, "mean", "neg_l2"),
    ],
)
def test_span_scores_many_stacks_models_of_one_shape(
    attention_dir, pos, mask_from, pool, sim, bucket, monkeypatch
):
    """N models of one shape as one stack: each model's scores equal span_scores alone."""
    from hierlens.analysis.trees import isolation, span_scores_many
    from hierlens.analysis.trees.block_runner import BlockRunner

    monkeypatch.setattr(isolation, "_MIN_BUCKET_ROWS", bucket)
    models = [_model(attention_dir, n_layers=2, pos=pos, seed=s) for s in range(3)]
    kw = dict(word_spans=_WORDS, layer=-1, mask_from_layer=mask_from, pool=pool, sim=sim)
    stacked = BlockRunner.stacked
    built = []
    monkeypatch.setattr(BlockRunner, "stacked", lambda ms: built.append(stacked(ms)) or built[-1])
    together = span_scores_many(models, _SEQS, batch_size=4, progress=False, stack=True, **kw)
    assert len(built) == 1 and built[0] is not None and built[0].n_models == 3
    for model, got in zip(models, together, strict=True):
        alone = span_scores(model, _SEQS, batch_size=4, progress=False, **kw)
        for g, a in zip(got, alone, strict=True):
            torch.testing.assert_close(g, a, atol=2e-6, rtol=1e-5, equal_nan=True)
    assert not torch.allclose(together[0][0], together[1][0], equal_nan=True)  # models differ


def test_span_scores_many_runs_other_models_one_by_one(monkeypatch):
    from hierlens.analysis.trees import span_scores_many
    from hierlens.analysis.trees.block_runner import BlockRunner

    tried = []
    real = BlockRunner.stacked
    monkeypatch.setattr(BlockRunner, "stacked", lambda ms: tried.append(ms) or real(ms))
    span_scores_many([_model(), _model(seed=1)], _SEQS[:1], progress=False)
    assert tried == []  # on the CPU the default runs the models one by one

    models = [_model(n_layers=2), _model(n_layers=3)]  # two shapes: no stack
    assert BlockRunner.stacked(models) is None
    got = span_scores_many(models, _SEQS, word_spans=_WORDS, progress=False, stack=True)
    for model, scores in zip(models, got, strict=True):
        want = span_scores(model, _SEQS, word_spans=_WORDS, progress=False)
        for g, w in zip(scores, want, strict=True):
            torch.testing.assert_close(g, w, equal_nan=True)
    with pytest.raises(ValueError, match="at least one model"):
        span_scores_many([], _SEQS)
    with pytest.raises(ValueError, match="pool"):
        span_scores_many([_model(), _model(seed=1)], _SEQS, pool="max", stack=True)
