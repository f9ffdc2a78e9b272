"""Shared inputs of the run-directory tests: a tiny trained run, a tiny GPT-2 folder,
treebank files (the shipped CoNLL-U treebank, and broken variants of it) and small disks."""

from __future__ import annotations

import contextlib
import os
import subprocess
from importlib.resources import files
from pathlib import Path

from hierlens.models import ModelConfig, TrainConfig, build_transformer, get_task, train

from ._stages import MODEL, TASK_PARAMS, TRAIN

TASK = get_task("dyck", **TASK_PARAMS)
MCFG = ModelConfig.for_task(TASK, seed=0, **MODEL)


def train_tiny(run_dir, config: dict | None = None, **kwargs):
    """The reliability tests' tiny Dyck run (``config``: TrainConfig fields over TRAIN)."""
    model = build_transformer(MCFG, device="cpu")
    cfg = TrainConfig(**{**TRAIN, **(config or {})})
    return train(model, TASK, cfg, run_dir, model_config=MCFG, progress=False, **kwargs)


def train_argv(run_dir, **overrides) -> list[str]:
    """``hierlens train`` arguments that give the same run as :func:`train_tiny`."""
    flags = {**{k: v for k, v in TRAIN.items() if k != "device"}, **overrides}
    argv = ["train", "--task", "dyck", "--run-dir", str(run_dir), "--device", "cpu"]
    argv += [f"--{k.replace('_', '-')}={v}" for k, v in flags.items()]
    argv += [f"--{k.replace('_', '-')}={v}" for k, v in MODEL.items()]
    argv += [x for k, v in TASK_PARAMS.items() for x in ("--task-param", f"{k}={v}")]
    return [*argv, "--no-progress"]


def conllu_text() -> str:
    """The shipped CoNLL-U treebank."""
    return (files("hierlens.models") / "data" / "treebank_en.conllu").read_text(encoding="utf-8")


def write_treebank(folder: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = folder / name
    path.write_bytes(text.encode(encoding))
    return path


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, size: str):
    """A tmpfs of ``size`` at ``folder`` where this process may mount one (yields True and
    unmounts however the test ends), else nothing mounted (yields False)."""
    folder.mkdir(parents=True)
    ok = os.geteuid() == 0 and (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
        ).returncode
        == 0
    )
    try:
        yield ok
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(folder)], check=False)
