"""Scaling out on this machine: 1 vs 2 gloo processes (torchrun) for model and SAE training,
and a 4-run sweep on a local Ray vs the same runs one after another.

    python benchmarks/distributed.py [--quick]

Prints one JSON object. Throughput is tokens (model) or activation rows (SAE) per second of
training, measured inside the processes; ratios are 2 processes over 1 in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _child(kind: str, steps: int) -> None:
    import torch

    from hierlens.core import distributed as D
    from hierlens.models import ModelConfig, TrainConfig, build_transformer, get_task, train

    if kind == "model":
        task = get_task("dyck", max_depth=6, max_length=32)
        mc = ModelConfig.for_task(task, d_model=64, n_layers=2, n_heads=4, d_mlp=256, seed=0)
        cfg = TrainConfig(
            steps=steps,
            batch_size=64,
            log_every=steps,
            eval_every=0,
            checkpoint_every=0,
            train_pool=2000,
            device="cpu",
        )
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            train(build_transformer(mc, device="cpu"), task, cfg, Path(d) / "r", progress=False)
            wall = time.perf_counter() - t
        units = steps * cfg.batch_size  # sequences
    else:
        from hierlens.sae import SAE, train_saes

        D.init_from_env("cpu")
        x = torch.randn(32768, 128)
        saes = [SAE.registry["topk"](128, 1024, k=16, seed=i) for i in range(2)]
        t = time.perf_counter()
        distribute = "data" if D.is_distributed() else None
        train_saes(
            saes,
            x,
            steps=steps,
            batch_size=1024,
            device="cpu",
            progress=False,
            distribute=distribute,
        )
        wall = time.perf_counter() - t
        units = steps * 1024  # activation rows
    if D.is_main():
        print("RESULT", json.dumps({"units_per_s": units / wall, "wall_s": wall}))


def _launch(kind: str, steps: int, nproc: int) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        __file__,
        "--child",
        kind,
        str(steps),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT"))[7:])


def _sweep(backend: str, out: Path, steps: int) -> float:
    from hierlens.analysis.sweep import sweep
    from hierlens.models import TrainConfig, get_task

    task = get_task("dyck", max_depth=4, max_length=16)
    cfg = TrainConfig(
        steps=steps,
        batch_size=32,
        eval_every=0,
        checkpoint_every=steps,
        train_pool=500,
        device="cpu",
    )
    t = time.perf_counter()
    sweep(
        task,
        [1, 2],
        [0, 1],
        cfg,
        out,
        model={"d_model": 32, "n_heads": 2},
        track_options={"n": 32, "n_trees": 8},
        backend=backend,
        num_cpus=1,
    )
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--child", nargs=2, default=None)
    args = p.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return
    steps = 30 if args.quick else 200
    res: dict = {"cpu_count": os.cpu_count()}
    for kind in ("model", "sae"):
        one, two = _launch(kind, steps, 1), _launch(kind, steps, 2)
        res[kind] = {
            "1_rank_per_s": one["units_per_s"],
            "2_ranks_per_s": two["units_per_s"],
            "ratio": two["units_per_s"] / one["units_per_s"],
        }
    with tempfile.TemporaryDirectory() as d:
        seq = _sweep("process", Path(d) / "seq", 2 * steps)
        ray_wall = _sweep("ray", Path(d) / "ray", 2 * steps)
    res["sweep_4_runs"] = {"sequential_s": seq, "ray_s": ray_wall, "ratio": seq / ray_wall}
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
