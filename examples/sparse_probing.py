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
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from hierlens.models.tasks import get_task
from hierlens.models.tasks.base import pad_examples
from hierlens.models.train import TrainConfig, train
from hierlens.models.transformer import ModelConfig, build_transformer
from hierlens.probes import flatten_activations, probe_sweep, token_labels


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
    torch.manual_seed(0)
    start = time.perf_counter()

    task = get_task("dyck", n_types=2, max_depth=4, min_length=4, max_length=24)
    config = ModelConfig.for_task(task, d_model=64, n_layers=2, n_heads=4, seed=0)
    model = build_transformer(config, device=args.device)
    if args.steps:
        cfg = TrainConfig(
            steps=args.steps,
            batch_size=32,
            lr=3e-3,
            warmup_steps=10,
            eval_every=0,
            checkpoint_every=args.steps,
            train_pool=2000,
            device=args.device,
        )
        with tempfile.TemporaryDirectory() as run_dir:
            train(model, task, cfg, run_dir, progress=False)
        metrics = task.evaluate(model, "test_id", n=500, device=args.device)
        print(f"test_id closing-bracket accuracy {metrics['closing_acc']:.3f}")

    # Activations of every real token of held-out strings, and their labels, row-aligned.
    examples = task.sample(args.n_examples, "test_id", seed=1)
    batch = pad_examples(examples, task.pad_id)
    hooks = ["hook_embed"] + [f"blocks.{i}.hook_resid_post" for i in range(config.n_layers)]
    with torch.inference_mode():
        _, cache = model.run_with_cache(
            batch.tokens.to(args.device), names_filter=lambda name: name in hooks
        )
    acts = {h: flatten_activations(cache[h], batch.attention_mask).float().cpu() for h in hooks}
    labels = token_labels(examples, ["depth", "nesting", "bracket_type", "is_close"])
    # "depth" is 0 on BOS/EOS (not words): probe it on the brackets only.
    labels["depth"] = np.where(labels["depth"] == 0, -1, labels["depth"])

    ks = [int(k) for k in args.ks.split(",")]
    out_path = Path(args.out) / "results.jsonl" if args.out else None
    records = probe_sweep(
        acts,
        labels,
        ks=ks,
        selection=args.selection,
        device=args.device,
        out_path=out_path,
        progress=False,
    )

    f1 = defaultdict(list)  # (label, hook, k) -> F1 of each one-vs-rest problem
    for r in records:
        f1[(r["label"], r["hook"], r["k"])].append(r["f1"])
    print(
        f"\ntest F1 of {args.selection} k-sparse probes ({len(records)} probes, "
        f"{len(next(iter(acts.values())))} tokens)"
    )
    print(f"{'label':14s} {'hook':26s} " + " ".join(f"k={k:<4d}" for k in ks))
    for label in labels:
        for h in hooks:
            row = " ".join(f"{np.mean(f1[(label, h, k)]):.3f} " for k in ks)
            print(f"{label:14s} {h:26s} {row}")
    print(f"total {time.perf_counter() - start:.1f} s")

    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(labels), figsize=(4 * len(labels), 3.2), sharey=True)
        for ax, label in zip(axes, labels):
            for h in hooks:
                ax.plot(ks, [np.mean(f1[(label, h, k)]) for k in ks], marker="o", label=h)
            ax.set_xscale("log", base=2)
            ax.set_title(label)
            ax.set_xlabel("k")
        axes[0].set_ylabel("test F1")
        axes[-1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(Path(args.out) / "f1_vs_k.png", dpi=120)
        print(f"wrote {out_path} and {Path(args.out) / 'f1_vs_k.png'}")


if __name__ == "__main__":
    main()
