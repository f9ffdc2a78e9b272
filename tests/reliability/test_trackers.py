"""Trackers cannot stop a run: a full disk under ``trackers/``, a read-only ``trackers/``
folder and an unreachable tracking server each give one ERROR line naming the tracker, the
tracker is dropped, and training finishes and checkpoints as without it."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import subprocess

import pytest

from hierlens.analysis.cli import main
from hierlens.models.run import Run

from ._runs import mounted_tmpfs, train_argv


def _tracker_errors(caplog, name: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelname == "ERROR" and r.getMessage().startswith(f"tracker {name}")
    ]


def _finished(run: Run, caplog) -> None:
    assert run.steps == [10, 20]  # trained and checkpointed to the end
    assert max(r["step"] for r in run.metrics()) == 20
    assert "Traceback" not in caplog.text


# TensorBoard's own writer thread prints its failure before the guard sees it
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_full_disk_under_trackers_drops_the_tracker(tmp_path, caplog, monkeypatch):
    run = Run(tmp_path / "R")
    with mounted_tmpfs(run.path / "trackers", "64k") as mounted:
        if mounted:  # leave a few hundred bytes: the event file fills it during training
            filler = run.path / "trackers" / "filler"
            with open(filler, "wb") as f, contextlib.suppress(OSError):
                f.write(b"\0" * (64 * 1024))
            filler.write_bytes(b"\0" * (filler.stat().st_size - 4096 + 512))
        else:  # the event file's writes fail once it holds 600 bytes, as on a full disk
            from tensorboard.compat.tensorflow_stub.io import gfile

            real = gfile.GFile.write
            written = {}

            def write(self, data):
                written[id(self)] = written.get(id(self), 0) + len(data)
                if written[id(self)] > 600:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return real(self, data)

            monkeypatch.setattr(gfile.GFile, "write", write)
        caplog.set_level(logging.INFO)
        assert main([*train_argv(run.path), "--log-to", "tensorboard"]) == 0
        errors = _tracker_errors(caplog, "tensorboard")
        assert len(errors) == 1 and "No space left on device" in errors[0], caplog.text
        _finished(run, caplog)


def test_a_read_only_trackers_folder_drops_the_tracker(tmp_path, caplog):
    run = Run(tmp_path / "R")
    with mounted_tmpfs(run.path / "trackers", "1m") as mounted:
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(run.path / "trackers")], check=True)
        else:
            (run.path / "trackers").chmod(0o555)
        assert main([*train_argv(run.path), "--log-to", "tensorboard"]) == 0
        errors = _tracker_errors(caplog, "tensorboard")
        assert len(errors) == 1 and "could not start" in errors[0], caplog.text
        _finished(run, caplog)


def test_an_unreachable_tracking_server_is_given_up_at_once(tmp_path, caplog, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow import tracking

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    made = []
    real = tracking.MlflowClient.__init__

    def counted(self, *args, **kwargs):  # a client would retry the dead server for minutes
        made.append(args)
        real(self, *args, **kwargs)

    monkeypatch.setattr(tracking.MlflowClient, "__init__", counted)
    run = Run(tmp_path / "R")
    assert main([*train_argv(run.path), "--log-to", "mlflow"]) == 0
    errors = _tracker_errors(caplog, "mlflow")
    assert len(errors) == 1 and "unreachable" in errors[0] and str(port) in errors[0]
    assert made == []  # given up before any client was made
    _finished(run, caplog)
