"""Fused training of N small Dyck transformers (``train_many``) vs one ``train`` after another.

    python benchmarks/train_many.py [--quick] [--threads 1 2] [--sizes 4 8 16] [--data own|shared]

Models: d_model 64, 2 layers, 4 heads, batch 64, Dyck (2 bracket types, depth <= 6, length
<= 32), model seeds 0..N-1. ``--data own``: each model has its own data seed (its own
training pool and batches); ``shared``: one data seed for all (the models differ in their
initialisation only), so the fused run samples one pool where the separate runs sample N.
Evaluation is off and only the last step is checkpointed.

Two figures per N, both as real (non-padding) tokens trained per second and the ratio fused /
separate, measured in the same process one after the other:

- ``calls``: whole ``train`` calls against one ``train_many`` call (building the pools from the
  grammar, run directories, checkpoints included);
- ``steps``: the training steps alone (the time between the first and the last training
  record of each run, as ``metrics.jsonl`` reports it).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from hierlens.models import ModelConfig, TrainConfig, build_transformer, get_task, train
from hierlens.models.train import BatchSampler
from hierlens.models.train_many import train_many


class _Clock:
    """A ``callback`` that notes when the first and the last step ended."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last = 0.0

    def __call__(self, step: int) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now

    @property
    def seconds(self) -> float:
        return self.last - self.first


def _tokens(task, cfg: TrainConfig, first: int = 0) -> int:
    """Real tokens in the batches of steps ``first..cfg.steps - 1``."""
    sampler = BatchSampler(task, cfg, torch.device("cpu"))
    return sum(int(sampler.lengths[sampler.rows(s)].sum()) for s in range(first, cfg.steps))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="N = 4 and 8, 20 steps")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--data", choices=["own", "shared"], default="own")
    args = ap.parse_args()
    sizes = [4, 8] if args.quick else args.sizes
    steps = 20 if args.quick else args.steps
    task = get_task("dyck", n_types=2, max_depth=6, max_length=32)
    base = TrainConfig(
        steps=steps,
        batch_size=64,
        warmup_steps=5,
        log_every=max(steps // 4, 1),
        eval_every=0,
        checkpoint_every=0,
        train_pool=1000,
        device="cpu",
    )
    mcfg = ModelConfig.for_task(task, d_model=64, n_layers=2, n_heads=4)
    print(
        f"torch {torch.__version__}, {platform.machine()}, {steps} steps, batch 64, "
        f"data: {args.data}; real tokens per second (calls: whole calls; steps: steps 2..K)"
    )
    print(
        f"{'thr':>3} {'N':>3} {'calls: sep':>11} {'fused':>8} {'ratio':>6}   "
        f"{'steps: sep':>11} {'fused':>8} {'ratio':>6}"
    )
    for threads in args.threads:
        torch.set_num_threads(threads)
        for n in sizes:
            cfgs = [base.replace(seed=s if args.data == "own" else 0) for s in range(n)]
            tokens = sum(_tokens(task, c) for c in cfgs)
            step_tokens = sum(_tokens(task, c, first=1) for c in cfgs)
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                models = [build_transformer(mcfg.replace(seed=s), device="cpu") for s in range(n)]
                sep, sep_steps = 0.0, 0.0
                for i, (m, c) in enumerate(zip(models, cfgs, strict=True)):
                    clock = _Clock()
                    t0 = time.perf_counter()
                    train(m, task, c, root / f"sep{i}", progress=False, callback=clock)
                    sep += time.perf_counter() - t0
                    sep_steps += clock.seconds
                models = [build_transformer(mcfg.replace(seed=s), device="cpu") for s in range(n)]
                clock = _Clock()
                t0 = time.perf_counter()
                dirs = [root / f"fused{i}" for i in range(n)]
                train_many(models, task, cfgs, dirs, progress=False, callback=clock)
                fused = time.perf_counter() - t0
            print(
                f"{threads:>3} {n:>3} {tokens / sep:>11.0f} {tokens / fused:>8.0f} "
                f"{sep / fused:>6.2f}   {step_tokens / sep_steps:>11.0f} "
                f"{step_tokens / clock.seconds:>8.0f} {sep_steps / clock.seconds:>6.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
