"""Sparse probing of a small Dyck transformer: F1 vs k per layer (Gurnee et al. 2023).

Trains a 2-layer transformer on Dyck-(2, 4) for 150 steps with hierlens' training loop,
captures the residual stream after the embedding and after each block on held-out strings,
and fits k-sparse probes for the per-token hierarchy labels the task provides (depth in the
gold tree, bracket nesting, bracket type, whether the token closes a bracket) at every layer
and k, as one batched sweep. Prints the test F1 (macro over one-vs-rest classes for
multi-class labels) for every layer and k.

    python examples/sparse_probing.py                     # ~30 s on one CPU core
    python examples/sparse_probing.py --steps 0           # the same probes on an untrained model
    python examples/sparse_probing.py --out runs/probing  # also results.jsonl and f1_vs_k.png

The experiment lives in :func:`hierlens.analysis.figures.sparse_probing.sparse_probing`;
``hierlens reproduce sparse-probing-f1-vs-k`` draws the same figure.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from hierlens.analysis.figures.plot import plot_sparse_probing, save_figure
from hierlens.analysis.figures.sparse_probing import sparse_probing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150, help="training steps (0: untrained)")
    ap.add_argument("--n-examples", type=int, default=300, help="held-out strings to probe")
    ap.add_argument("--ks", default="1,2,4,8,16")
    ap.add_argument("--selection", default="mean_diff")
    ap.add_argument("--out", default=None, help="folder for results.jsonl and f1_vs_k.png")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (a model this small runs fastest on one)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    ks = [int(k) for k in args.ks.split(",")]
    out_path = Path(args.out) / "results.jsonl" if args.out else None
    data = sparse_probing(
        steps=args.steps,
        n_examples=args.n_examples,
        ks=ks,
        selection=args.selection,
        out_path=out_path,
        device=args.device,
    )
    if data["closing_acc"] is not None:
        print(f"test_id closing-bracket accuracy {data['closing_acc']:.3f}")
    print(
        f"\ntest F1 of {args.selection} k-sparse probes ({data['n_probes']} probes, "
        f"{data['n_tokens']} tokens)"
    )
    print(f"{'label':14s} {'hook':26s} " + " ".join(f"k={k:<4d}" for k in ks))
    for label in data["labels"]:
        for hook in data["hooks"]:
            row = " ".join(f"{v:.3f} " for v in data["f1"][label][hook])
            print(f"{label:14s} {hook:26s} {row}")
    print(f"total {time.perf_counter() - start:.1f} s")
    if args.out:
        save_figure(plot_sparse_probing(data), args.out, "f1_vs_k", formats=("png",), dpi=120)
        print(f"wrote {out_path} and {Path(args.out) / 'f1_vs_k.png'}")


if __name__ == "__main__":
    main()
