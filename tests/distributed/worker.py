"""What the distributed tests launch under ``torchrun`` (one process per rank).

torchrun --standalone --nproc_per_node 2 worker.py train RUN_DIR [STEPS [STOP_AT]]
torchrun --standalone --nproc_per_node 2 worker.py train-kill RUN_DIR  (SIGKILL after step 10)
torchrun --standalone --nproc_per_node 2 worker.py sae OUT_DIR data|saes
torchrun --standalone --nproc_per_node 2 worker.py capture OUT_DIR
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch

from hierlens.models import ModelConfig, TrainConfig, build_transformer, get_task, train

TASK = get_task("dyck", max_depth=4, max_length=12)
MODEL = ModelConfig.for_task(TASK, d_model=16, n_layers=1, n_heads=2, d_mlp=32, seed=1)


def train_config(steps: int = 20) -> TrainConfig:
    return TrainConfig(
        steps=steps,
        batch_size=8,
        lr=3e-3,
        warmup_steps=5,
        log_every=5,
        eval_every=10,
        eval_n=16,
        checkpoint_every=10,
        train_pool=200,
        device="cpu",
    )


def do_train(run_dir: str, steps: int = 20, stop_at: int | None = None) -> None:
    model = build_transformer(MODEL, device="cpu")
    train(model, TASK, train_config(steps), run_dir, progress=False, stop_at=stop_at)


def do_train_killed(run_dir: str, kill_after: int = 10) -> None:
    """Train as ``do_train`` and SIGKILL this process right after the checkpoint of step
    ``kill_after`` (every rank does, as when a job is killed); each rank first writes its
    pid to ``RUN_DIR.pids/<rank>``."""
    pids = Path(f"{run_dir}.pids")
    pids.mkdir(parents=True, exist_ok=True)
    (pids / os.environ.get("RANK", "0")).write_text(str(os.getpid()))

    def kill(step: int) -> None:
        if step == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    model = build_transformer(MODEL, device="cpu")
    train(model, TASK, train_config(), run_dir, progress=False, callback=kill)


def sae_setup():
    from hierlens.sae import SAE

    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 16, generator=g) @ torch.randn(16, 16, generator=g)
    saes = [
        SAE.registry["relu"](16, 32, l1_coefficient=1e-2, seed=1),
        SAE.registry["topk"](16, 32, k=4, seed=2),
        SAE.registry["topk"](16, 64, k=4, seed=3),
    ]
    return x, saes


def sae_config():
    from hierlens.sae import SAETrainConfig

    return SAETrainConfig(steps=20, batch_size=32, lr=1e-3, log_every=5, device="cpu", seed=0)


def do_sae(out_dir: str, mode: str) -> None:
    from hierlens.core import distributed as D
    from hierlens.sae import train_saes

    x, saes = sae_setup()
    ckpt = Path(out_dir) / "ckpt"
    res = train_saes(
        saes, x, config=sae_config(), distribute=mode, progress=False, checkpoint_dir=ckpt
    )
    if D.is_main():
        torch.save([s.state_dict() for s in res.saes], Path(out_dir) / "saes.pt")


def do_capture(out_dir: str) -> None:
    from hierlens.models import capture

    model = build_transformer(MODEL, device="cpu")
    capture(
        model,
        (TASK, "train", 24, 3),
        "blocks.*.hook_resid_post",
        batch_size=4,
        out_dir=out_dir,
        shard_bytes=2048,
        progress=False,
    )


if __name__ == "__main__":
    cmd, *rest = sys.argv[1:]
    if cmd == "train":
        do_train(rest[0], *[int(v) for v in rest[1:]])
    elif cmd == "train-kill":
        do_train_killed(rest[0])
    elif cmd == "sae":
        do_sae(rest[0], rest[1])
    elif cmd == "capture":
        do_capture(rest[0])
    elif cmd == "all":  # one launch for everything the tests compare (launches are slow)
        out = Path(rest[0])
        do_train(str(out / "ddp"))
        do_train(str(out / "stopped1"), 20, 10)
        for mode in ("data", "saes"):
            (out / f"sae_{mode}").mkdir(parents=True, exist_ok=True)
            do_sae(str(out / f"sae_{mode}"), mode)
        do_capture(str(out / "capture"))
    else:
        raise SystemExit(f"unknown command {cmd}")
