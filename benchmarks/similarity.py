"""Benchmark: the layer x layer linear-CKA matrix of 8 layers streamed from an activation store
in one pass, vs a plain loop over layer pairs, in one run.

The store holds ``--tokens`` rows of 8 hooks (``d`` wide) written by
:func:`hierlens.models.capture` from a small random TransformerLens model. The streamed
version is :func:`hierlens.analysis.compare.similarity_matrix` (one pass over the store's
batches, accumulating the cross-covariances of all hook pairs). The baseline is what a
notebook does: for every pair (i, j) it loads both layers, centres them and computes
``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` in float64. Reported: the time of each, the
ratio, and the largest |difference| between the two matrices.

    python benchmarks/similarity.py            # 1M tokens (a few minutes; ~2 GB of shards)
    python benchmarks/similarity.py --quick    # 100k tokens
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from hierlens.analysis import similarity_matrix
from hierlens.models import ModelConfig, build_transformer
from hierlens.models.capture import capture


def build_store(folder: str, n_tokens: int, d_model: int, seq_len: int, seed: int):
    """A store of ``n_tokens`` rows at the 8 residual hooks of a random 7-block model."""
    cfg = ModelConfig(d_vocab=64, n_ctx=seq_len, d_model=d_model, n_layers=7, n_heads=4, seed=seed)
    model = build_transformer(cfg, device="cpu")
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 64, (n_tokens // seq_len, seq_len), generator=g)
    hooks = ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(7)]
    return capture(model, tokens, hooks, batch_size=256, out_dir=folder, progress=False), hooks


def pairwise_loop(store, hooks: list[str]) -> torch.Tensor:
    """The plain baseline: one full load and one CKA per layer pair."""
    n = len(hooks)
    out = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            x = store[hooks[i]].double()
            y = store[hooks[j]].double()
            x = x - x.mean(0)
            y = y - y.mean(0)
            num = (y.T @ x).pow(2).sum()
            out[i, j] = num / ((x.T @ x).norm() * (y.T @ y).norm())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tokens", type=int, default=None)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n_tokens = args.tokens or (100_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory(prefix="hierlens-bench-") as folder:
        t0 = time.perf_counter()
        store, hooks = build_store(folder, n_tokens, args.d_model, 50, 0)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        streamed = similarity_matrix([(store, h) for h in hooks], device="cpu", batch_size=65536)
        streamed_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        loop = pairwise_loop(store, hooks)
        loop_s = time.perf_counter() - t0
    diff = float((streamed["linear_cka"].double() - loop).abs().max())
    print(
        json.dumps(
            {
                "tokens": store.n_tokens,
                "layers": len(hooks),
                "d_model": args.d_model,
                "threads": args.threads,
                "store_build_s": round(build_s, 1),
                "streamed_s": round(streamed_s, 2),
                "pairwise_loop_s": round(loop_s, 2),
                "ratio": round(loop_s / streamed_s, 2),
                "max_abs_diff": diff,
            }
        )
    )


if __name__ == "__main__":
    main()
