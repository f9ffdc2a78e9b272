"""Fused training of N small models (``train_many``) vs one ``train`` after another.

    python benchmarks/train_many.py [--quick] [--threads 1 2] [--sizes 4 8 16] [--data own|shared]
        [--steps 40] [--repeats 3] [--models dyck stack_rnn ...] [--profile]
        [--device cuda] [--compile]

``--models`` (default ``dyck``):

- ``dyck``: TL-native transformers, d_model 64, 2 layers, 4 heads, batch 64, Dyck (2 bracket
  types, depth <= 6, length <= 32): the fused forward of ``hierlens.models.fused``;
- ``rnn``, ``lstm``, ``stack_rnn``, ``tape_rnn``, ``encoder`` (the Chomsky transformer
  encoder, sin/cos positions): the Chomsky-hierarchy architectures at the modest setting of
  ``chomsky-table`` (d_model 32, 2 layers, 4 heads, memory 40 x 8, batch 32, reverse_string
  trained on lengths 1..10), stacked with ``vmap``.

Model seeds 0..N-1. ``--data own``: each model has its own data seed (its own training pool
and batches); ``shared``: one data seed for all (the models differ in their initialisation
only), so the fused run samples one pool where the separate runs sample N. Evaluation is off
and only the last step is checkpointed.

Two figures per N, both as real (non-padding) tokens trained per second and the ratio
separate time / fused time, measured in the same process; the separate and fused runs
alternate ``--repeats`` times (medians shown, the ratio's range in brackets), so that load
from other jobs on a shared machine hits both:

- ``calls``: whole ``train`` calls against one ``train_many`` call (building the pools from the
  grammar, run directories, checkpoints included);
- ``steps``: the training steps alone, from the end of the first step to the end of the last
  (timed by the ``callback`` of ``train`` / ``train_many``).

``--profile``: before the pairs, one model's ``train`` under ``torch.profiler``: the shares
of its profiled CPU time (every op, autograd and optimizer event) spent in matrix products, attention and the MLP activation, and the
ratio a stack could reach if it ran those kernels as fast as one model does and everything
else for free (the products and attention do the same work per model in a stack).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from hierlens.models import ModelConfig, TrainConfig, build_transformer, get_task, train
from hierlens.models.architectures import ArchConfig, build_model
from hierlens.models.batches import BatchSampler
from hierlens.models.train_many import train_many


class _Clock:
    """A ``callback`` that notes when the first and the last step ended."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last = 0.0

    def __call__(self, step: int) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the step has run, not just been queued
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


CHOMSKY_MODELS = ("rnn", "lstm", "stack_rnn", "tape_rnn", "encoder")


def _setting(name: str, steps: int, device: str = "cpu"):
    """(task, ``build(seed)``, base config, batch size) of the benchmark model ``name``."""
    if name == "dyck":
        task = get_task("dyck", n_types=2, max_depth=6, max_length=32)
        mcfg = ModelConfig.for_task(task, d_model=64, n_layers=2, n_heads=4)

        def build(seed):
            return build_transformer(mcfg.replace(seed=seed), device=device)

        batch = 64
    else:
        task = get_task("reverse_string", n_train=10, n_test=20)
        arch = "transformer" if name == "encoder" else name
        acfg = ArchConfig.for_task(
            task, arch=arch, d_model=32, n_layers=2, n_heads=4, memory_size=40, memory_dim=8
        )

        def build(seed):
            return build_model(acfg.replace(seed=seed)).to(device)

        batch = 32
    base = TrainConfig(
        steps=steps,
        batch_size=batch,
        warmup_steps=5,
        log_every=max(steps // 4, 1),
        eval_every=0,
        checkpoint_every=0,
        train_pool=1000,
        grad_clip=1.0,
        device=device,
    )
    return task, build, base


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="N = 4 and 8, 20 steps, 1 repeat")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--data", choices=["own", "shared"], default="own")
    ap.add_argument("--repeats", type=int, default=3, help="alternated pairs (medians shown)")
    ap.add_argument("--models", nargs="+", default=["dyck"], choices=["dyck", *CHOMSKY_MODELS])
    ap.add_argument("--profile", action="store_true", help="the bound from one model's profile")
    ap.add_argument("--device", default="cpu", help="e.g. cuda (report GPU figures apart)")
    ap.add_argument("--compile", action="store_true", help="TrainConfig.compile for both")
    args = ap.parse_args()
    sizes = [4, 8] if args.quick else args.sizes
    steps = 20 if args.quick else args.steps
    if args.quick:
        args.repeats = 1
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.machine()
    print(
        f"torch {torch.__version__}, {where}, {steps} steps, compile {args.compile}, "
        f"data: {args.data}; real tokens per second (calls: whole calls; steps: steps 2..K); "
        f"medians of {args.repeats} alternated pairs, ratio range in brackets"
    )
    print(
        f"{'model':>9} {'thr':>3} {'N':>3} {'calls: sep':>11} {'fused':>8} {'ratio':>6}   "
        f"{'steps: sep':>11} {'fused':>8} {'ratio':>6}"
    )
    for name in args.models:
        task, build, base = _setting(name, steps, args.device)
        setting = (task, build, base.replace(compile=args.compile))
        for threads in args.threads:
            torch.set_num_threads(threads)
            if args.profile:
                _profile(name, threads, *setting)
            found: dict[int, list[tuple[float, ...]]] = {n: [] for n in sizes}
            for _ in range(args.repeats):  # alternated, so that load from other jobs hits both
                for n in sizes:
                    found[n].append(_pair(*setting, n, args.data))
            for n in sizes:
                runs = found[n]
                med = [statistics.median(r[i] for r in runs) for i in range(6)]
                lo = min(r[2] for r in runs), min(r[5] for r in runs)
                hi = max(r[2] for r in runs), max(r[5] for r in runs)
                print(
                    f"{name:>9} {threads:>3} {n:>3} {med[0]:>11.0f} {med[1]:>8.0f} "
                    f"{med[2]:>6.2f} ({lo[0]:.2f}-{hi[0]:.2f})   {med[3]:>11.0f} "
                    f"{med[4]:>8.0f} {med[5]:>6.2f} ({lo[1]:.2f}-{hi[1]:.2f})",
                    flush=True,
                )


_KERNELS = {
    "products": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "attention": ("scaled_dot_product",),
    "activation": ("aten::gelu", "aten::gelu_backward"),
}


def _profile(name: str, threads: int, task, build, base: TrainConfig) -> None:
    """Print where one model's training time goes and the ratio that bounds a stack."""
    from torch.profiler import ProfilerActivity, profile

    with tempfile.TemporaryDirectory() as tmp, profile(activities=[ProfilerActivity.CPU]) as prof:
        train(build(0), task, base, Path(tmp) / "r", progress=False)
    events = list(prof.key_averages())  # every profiled op, autograd and optimizer events too
    total = sum(e.self_cpu_time_total for e in events)
    shares = {
        kind: sum(e.self_cpu_time_total for e in events if any(k in e.key for k in keys)) / total
        for kind, keys in _KERNELS.items()
    }
    shown = ", ".join(f"{k} {v:.0%}" for k, v in shares.items())
    print(
        f"{name:>9} {threads:>3} profile of one model's CPU time: {shown}; "
        f"bound on the fused ratio: {1 / sum(shares.values()):.2f}",
        flush=True,
    )


def _pair(task, build, base: TrainConfig, n: int, data: str) -> tuple[float, ...]:
    """One separate and one fused run of ``n`` models: tokens/s of the calls (separate,
    fused, ratio) and of the steps (separate, fused, ratio)."""
    cfgs = [base.replace(seed=s if data == "own" else 0) for s in range(n)]
    tokens = sum(_tokens(task, c) for c in cfgs)
    step_tokens = sum(_tokens(task, c, first=1) for c in cfgs)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = [build(s) for s in range(n)]
        sep, sep_steps = 0.0, 0.0
        for i, (m, c) in enumerate(zip(models, cfgs, strict=True)):
            clock = _Clock()
            t0 = time.perf_counter()
            train(m, task, c, root / f"sep{i}", progress=False, callback=clock)
            sep += time.perf_counter() - t0
            sep_steps += clock.seconds
        models = [build(s) for s in range(n)]
        clock = _Clock()
        t0 = time.perf_counter()
        dirs = [root / f"fused{i}" for i in range(n)]
        train_many(models, task, cfgs, dirs, progress=False, callback=clock)
        fused = time.perf_counter() - t0
    return (
        tokens / sep,
        tokens / fused,
        sep / fused,
        step_tokens / sep_steps,
        step_tokens / clock.seconds,
        sep_steps / clock.seconds,
    )


if __name__ == "__main__":
    main()
