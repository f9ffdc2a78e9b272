"""Corrupted bytes in every file kind, a full disk and a read-only file system."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hierlens.analysis.cli import main
from hierlens.analysis.pipeline import run as run_pipeline
from hierlens.core import confined_io
from hierlens.core.atomic_io import read_json, read_jsonl, write_checked_json
from hierlens.core.checksums import CorruptFileError
from hierlens.models import ActivationStore, load_checkpoint, open_run
from hierlens.models.run import Run
from hierlens.sae import load_sae

from ._runs import mounted_tmpfs
from ._stages import pipeline_config


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    run_dir = run_pipeline(pipeline_config(str(out)), progress=False)
    figure = Run(run_dir).figures_dir / "figure.json"
    write_checked_json(figure, {"name": "figure", "data": [1, 2, 3]})
    return Run(run_dir)


def _files(run: Run) -> dict[str, tuple[Path, object]]:
    """file kind -> (file, the reader a later stage uses)."""
    sae = run.sae_dirs()["topk_w8_k2"]
    store = run.activation_dirs()[20]
    shard = sorted(store.rglob("shard_*.safetensors"))[0]
    ckpt = run.checkpoint_dir(20)
    return {
        "checkpoint": (ckpt / "model.safetensors", lambda: load_checkpoint(ckpt)),
        "shard": (shard, lambda: ActivationStore.open(store)),
        "sae weights": (sae / "sae_weights.safetensors", lambda: load_sae(sae, device="cpu")),
        "sae config": (sae / "cfg.json", lambda: load_sae(sae, device="cpu")),
        "sae table": (run.sae_table_path, lambda: read_jsonl(run.sae_table_path)),
        "probe results": (run.probe_results_path, lambda: read_jsonl(run.probe_results_path)),
        "tracking": (run.tracking_path, lambda: read_jsonl(run.tracking_path)),
        "figure json": (run.figures_dir / "figure.json", lambda: read_json(run.figures_dir / "figure.json")),
        "config": (run.config_path, lambda: open_run(run.path)),
    }  # fmt: skip


KINDS = ["checkpoint", "shard", "sae weights", "sae config", "sae table", "probe results",
         "tracking", "figure json", "config"]  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_corrupted_bytes_are_an_error_naming_the_file(kind, pipeline_run, tmp_path):
    copy = Run(shutil.copytree(pipeline_run.path, tmp_path / "p"))
    path, read = _files(copy)[kind]
    read()  # intact: loads
    data = bytearray(path.read_bytes())
    for i in (len(data) // 3, len(data) // 2):
        data[i] = (data[i] + 1) % 256 if chr(data[i]).isdigit() else ord("7")
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=path.name):
        read()


class _FaultyDisk:
    """Where this process may not mount a tmpfs: the folder ``tmp_path/mnt`` with faults
    injected where hierlens writes file contents (the confined file layer's one write
    function): ``free`` bytes left (a larger write fails with ENOSPC, as on a full disk) or
    ``read_only`` (every write fails with EROFS). The errors are the ones the OS raises, so
    everything above the write (path in the message, one-line CLI error, nothing written
    lost) is exercised."""

    def __init__(self, monkeypatch, mnt: Path) -> None:
        self.mnt, self.free, self.read_only = mnt, None, False
        real = confined_io._write_all
        disk = self

        def write_all(fd, data):
            if disk.read_only:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
            if disk.free is not None and len(data) > disk.free:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(fd, data)

        monkeypatch.setattr(confined_io, "_write_all", write_all)


@contextlib.contextmanager
def _small_disk(tmp_path: Path, size: str, monkeypatch):
    """``(mount point, disk)``: a tmpfs of ``size`` mounted at ``tmp_path/mnt`` where this
    process may mount one (``disk`` is None; unmounted however the test ends), else a
    :class:`_FaultyDisk` there."""
    mnt = tmp_path / "mnt"
    with mounted_tmpfs(mnt, size) as mounted:
        yield mnt, (None if mounted else _FaultyDisk(monkeypatch, mnt))


TRAIN = ["train", "--task", "dyck", "--task-param", "max_depth=4", "--task-param",
         "max_length=10", "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--steps", "20",
         "--checkpoint-every", "10", "--eval-every", "10", "--eval-n", "16", "--batch-size", "8",
         "--train-pool", "100", "--device", "cpu", "--no-progress"]  # fmt: skip


def test_full_disk_is_a_one_line_error_and_the_run_resumes(tmp_path, caplog, monkeypatch):
    with _small_disk(tmp_path, "2m", monkeypatch) as (mnt, disk):
        run_dir = mnt / "R"
        filler = mnt / "filler"
        # leave a few KiB: config and metrics fit, a checkpoint does not
        if disk is None:
            with open(filler, "wb") as f, contextlib.suppress(OSError):
                f.write(b"\0" * (2 * 1024 * 1024 - 48 * 1024))
        else:
            disk.free = 8 * 1024
        assert main([*TRAIN, "--run-dir", str(run_dir)]) == 2
        assert "No space left on device" in caplog.text and str(run_dir) in caplog.text
        assert "Traceback" not in caplog.text
        assert (run_dir / "config.json").exists() and open_run(run_dir).steps == []
        if disk is None:
            filler.unlink()
        else:
            disk.free = None
        assert main([*TRAIN, "--run-dir", str(run_dir)]) == 0
        assert open_run(run_dir).steps == [10, 20]


def test_read_only_file_system_is_a_one_line_error(tmp_path, caplog, monkeypatch):
    with _small_disk(tmp_path, "8m", monkeypatch) as (mnt, disk):
        run_dir = mnt / "R"
        assert main([*TRAIN, "--run-dir", str(run_dir)]) == 0
        if disk is None:
            subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        else:
            disk.read_only = True
        caplog.clear()
        capture = ["capture", str(run_dir), "--hooks", "blocks.*.hook_resid_post", "--no-progress"]
        assert main(capture) == 2
        assert "Read-only file system" in caplog.text and str(run_dir) in caplog.text
        assert "Traceback" not in caplog.text
        assert open_run(run_dir).steps == [10, 20]  # nothing already written is lost
