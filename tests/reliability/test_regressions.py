"""Regression tests of the audit's defects and minor points (each failed before its fix)."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from hierlens.analysis.cli import main
from hierlens.analysis.cli.main import is_user_error
from hierlens.analysis.pipeline import PipelineConfig, load_config
from hierlens.core.atomic_io import atomic_write_bytes
from hierlens.core.checksums import CorruptFileError
from hierlens.models import (
    ModelConfig,
    TrainConfig,
    build_transformer,
    capture,
    get_task,
    load_checkpoint,
    open_run,
    train,
)
from hierlens.models.run import Run
from hierlens.models.run_lock import RunLockedError
from hierlens.sae import TopKSAE, load_sae

from ._stages import MODEL, TASK_PARAMS, TRAIN, pipeline_config

TASK = get_task("dyck", **TASK_PARAMS)
MCFG = ModelConfig.for_task(TASK, seed=0, **MODEL)
CFG = TrainConfig(**TRAIN)


def _train(run_dir, **kwargs):
    model = build_transformer(MCFG, device="cpu")
    return train(model, TASK, CFG, run_dir, model_config=MCFG, progress=False, **kwargs)


# ----------------------------------------------------------------- 1: one writer per run
@pytest.fixture
def holder(tmp_path):
    """Another process holding ``tmp_path/run``'s lock, as any flock holder would."""
    run = Run(tmp_path / "run")
    run.path.mkdir()
    code = (
        "import fcntl, os, socket, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, f'{os.getpid()} {socket.gethostname()}'.encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(run.lock_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield run, proc
    finally:
        proc.kill()
        proc.wait()


def test_second_writer_is_refused_naming_the_holder(holder, caplog):
    run, proc = holder
    holder_text = f"pid {proc.pid} on host {socket.gethostname()}"
    with pytest.raises(RunLockedError, match=holder_text), run.lock():
        pass
    with pytest.raises(RunLockedError):
        _train(run.path)
    assert not run.metrics_path.exists()
    argv = [
        "train",
        "--task",
        "dyck",
        "--run-dir",
        str(run.path),
        "--steps",
        "2",
        "--device",
        "cpu",
    ]
    assert main([*argv, "--no-progress"]) == 2
    assert f"pid {proc.pid}" in caplog.text and "Traceback" not in caplog.text


def test_a_killed_writer_leaves_no_stale_lock(holder):
    run, proc = holder
    proc.kill()
    proc.wait()
    with run.lock(), run.lock():  # re-entrant within a process
        assert run.lock_path.read_text().split()[0] == str(os.getpid())


def test_lock_is_skipped_on_nonzero_ranks(holder, monkeypatch):
    run, _ = holder
    monkeypatch.setenv("RANK", "1")
    with run.lock():  # rank 1 of a torchrun job: rank 0 holds the lock
        pass
    with run.lock(enabled=False):
        pass


# ----------------------------------------------------------------- 4 and the RNG state
def test_restart_from_step_zero_does_not_duplicate_the_first_evaluation(tmp_path):
    _train(tmp_path, stop_at=5)  # killed before the first checkpoint (step 10)
    _train(tmp_path)
    keys = [(r["step"], r["split"]) for r in open_run(tmp_path).metrics()]
    assert len(keys) == len(set(keys))
    assert keys.count((0, "test_id")) == 1


def test_identical_runs_save_identical_rng_state(tmp_path):
    _train(tmp_path / "a")
    torch.rand(3)  # another global-RNG history, as another process has
    _train(tmp_path / "b")
    a = load_checkpoint(Run(tmp_path / "a").checkpoint_dir(10)).rng_state["rng.torch"]
    b = load_checkpoint(Run(tmp_path / "b").checkpoint_dir(10)).rng_state["rng.torch"]
    assert torch.equal(a, b)


# ----------------------------------------------------------------- minor points
def test_binary_garbage_in_config_names_the_file(tmp_path):
    _train(tmp_path, stop_at=1)
    for manifest in (tmp_path / "hierlens_sha256.json",):
        manifest.unlink()  # also without a checksum to compare with
    (tmp_path / "config.json").write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(CorruptFileError, match="config.json"):
        open_run(tmp_path)


def test_disk_full_names_the_file(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        atomic_write_bytes(tmp_path / "x.json", b"{}")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "x.json")
    assert is_user_error(info.value)
    assert list(tmp_path.iterdir()) == []


def test_run_dir_that_is_a_file_is_a_one_line_error(tmp_path, caplog):
    (tmp_path / "R").write_text("not a folder")
    argv = ["train", "--task", "dyck", "--run-dir", str(tmp_path / "R"), "--steps", "2"]
    assert main([*argv, "--device", "cpu", "--no-progress"]) == 2
    assert str(tmp_path / "R") in caplog.text and "Traceback" not in caplog.text


def test_store_without_manifest_is_replaced_with_overwrite(tmp_path):
    model = build_transformer(MCFG, device="cpu")

    def capture_into_s(**kwargs):
        return capture(
            model,
            (TASK, "test_id", 6, 0),
            ["blocks.0.hook_resid_post"],
            out_dir=tmp_path / "s",
            batch_size=4,
            progress=False,
            **kwargs,
        )

    capture_into_s()
    (tmp_path / "s" / "manifest.json").unlink()
    with pytest.raises(ValueError, match="not an activation store"):
        capture_into_s()
    assert capture_into_s(overwrite=True).n_tokens > 0


def test_unknown_split_in_a_task_split_tuple(tmp_path):
    model = build_transformer(MCFG, device="cpu")
    with pytest.raises(ValueError, match="unknown split 'bogus'"):
        capture(
            model,
            (TASK, "bogus", 20, 0),
            ["blocks.0.hook_resid_post"],
            batch_size=4,
            progress=False,
        )


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "."])
def test_pipeline_name_cannot_leave_out_dir(name, tmp_path):
    with pytest.raises(ValueError, match="folder name"):
        load_config({**pipeline_config(str(tmp_path)), "name": name})
    with pytest.raises(ValueError, match="folder name"):
        PipelineConfig(name=name)


def test_saelens_d_sae_is_checked_against_the_hierlens_block(tmp_path):
    sae = TopKSAE.from_config(TopKSAE.config_class(d_in=4, d_sae=8, k=2), "cpu")
    sae.save(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    cfg["d_sae"] = 16
    (tmp_path / "s" / "cfg.json").write_text(json.dumps(cfg))
    (tmp_path / "s" / "hierlens_sha256.json").unlink()  # only the field check is left
    with pytest.raises(ValueError, match="d_sae=16 disagrees with the hierlens block"):
        load_sae(tmp_path / "s", device="cpu", verify=False)


def test_train_conflicts_name_the_flags(tmp_path, caplog):
    _train(tmp_path / "R", stop_at=1)
    base = ["train", "--task", "dyck", "--run-dir", str(tmp_path / "R"), "--device", "cpu"]
    assert main([*base, "--steps", "3", "--no-resume", "--no-progress"]) == 2
    assert "--overwrite" in caplog.text and "overwrite=True" not in caplog.text
    caplog.clear()
    assert main([*base, "--steps", "3", "--no-progress"]) == 2  # a different configuration
    assert "--run-dir" in caplog.text and "resume=" not in caplog.text


# ----------------------------------------------------------------- 3: the README's workflow
def test_readme_cli_workflow_with_default_options(tmp_path, caplog):
    """``capture`` (defaults), then ``fit-sae`` and ``probe`` (defaults) reuse its capture."""
    caplog.set_level(logging.INFO)
    run = str(tmp_path / "R")
    argv = ["train", "--task", "dyck", "--task-param", "max_depth=4", "--task-param",
            "max_length=10", "--d-model", "16", "--n-layers", "1", "--n-heads", "2",
            "--steps", "10", "--checkpoint-every", "10", "--eval-every", "0",
            "--batch-size", "8", "--train-pool", "100", "--run-dir", run, "--device", "cpu"]  # fmt: skip
    assert main([*argv, "--no-progress"]) == 0
    assert main(["capture", run, "--hooks", "blocks.*.hook_resid_post", "--no-progress"]) == 0
    sae = ["fit-sae", run, "--hook", "blocks.0.hook_resid_post", "--widths", "8", "--ks", "2"]
    assert main([*sae, "--steps", "3", "--no-progress"]) == 0
    probe = ["probe", run, "--hooks", "blocks.*.hook_resid_post", "--labels", "is_close"]
    assert main([*probe, "--ks", "1", "--no-progress"]) == 0
    assert caplog.text.count("reusing the activations") == 2
    assert Run(run).probe_results_path.exists() and "topk_w8_k2" in Run(run).sae_dirs()
    shutil.rmtree(run)
