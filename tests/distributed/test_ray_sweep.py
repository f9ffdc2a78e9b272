"""Sweeps on Ray: a local Ray started in the test process (and shut down after), the same
runs and summary as the sequential sweep, reruns that do only what is missing, failures
reported per run, and the one-line error when Ray is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hierlens.analysis.sweep import SUMMARY, SweepFailed, sweep
from hierlens.models import get_task
from hierlens.models.run import write_run_config
from tests.tiny_configs import SWEEP_OPTIONS, sweep_train_config

TASK = get_task("dyck", max_depth=3, max_length=8)
CFG = sweep_train_config()
DEPTHS, SEEDS = [1, 2], [0, 1]


def _values(rows):
    return [{k: v for k, v in r.items() if k != "run_dir"} for r in rows]


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("OMP_NUM_THREADS", "1")  # as in a Ray task with one CPU: same float order
    try:
        out = tmp_path_factory.mktemp("sequential")
        return out, sweep(TASK, DEPTHS, SEEDS, CFG, out, **SWEEP_OPTIONS)
    finally:
        mp.undo()


def test_ray_sweep_matches_sequential_and_reruns_only_missing(ray_local, sequential, tmp_path):
    seq_dir, seq_rows = sequential
    rows = sweep(TASK, DEPTHS, SEEDS, CFG, tmp_path, backend="ray", **SWEEP_OPTIONS)
    assert _values(rows) == _values(seq_rows)
    names = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert names == sorted(p.name for p in seq_dir.iterdir() if p.is_dir())
    summary = json.loads((tmp_path / SUMMARY).read_text())
    assert len(summary["ran"]) == 4 and summary["failed"] == []
    assert (tmp_path / "sweep_depth.png").stat().st_size > 0

    # a driver killed halfway: two runs never finished (one of them mid-training)
    for name in ("depth01_seed1", "depth02_seed0"):
        (tmp_path / name / "done.json").unlink()
    ckpts = sorted((tmp_path / "depth02_seed0" / "checkpoints").iterdir())
    for c in ckpts[1:]:  # keep only the first checkpoint: it resumes from step 3
        for f in c.rglob("*"):
            if f.is_file():
                f.unlink()
    again = sweep(TASK, DEPTHS, SEEDS, CFG, tmp_path, backend="ray", **SWEEP_OPTIONS)
    summary = json.loads((tmp_path / SUMMARY).read_text())
    assert sorted(summary["ran"]) == ["depth01_seed1", "depth02_seed0"]
    assert _values(again) == _values(seq_rows)


def test_failed_run_is_reported_and_others_finish(ray_local, tmp_path):
    bad = tmp_path / "depth01_seed0"
    bad.mkdir(parents=True)
    write_run_config(bad, {"task": {"name": "other"}})
    with pytest.raises(SweepFailed) as info:
        sweep(TASK, [1], SEEDS, CFG, tmp_path, backend="ray", **SWEEP_OPTIONS)
    summary = info.value.summary
    assert [f["run"] for f in summary["failed"]] == ["depth01_seed0"]
    assert "different configuration" in summary["failed"][0]["error"]
    assert summary["ran"] == ["depth01_seed1"]
    assert (tmp_path / "depth01_seed1" / "done.json").exists()
    assert json.loads((tmp_path / SUMMARY).read_text()) == summary


def test_missing_extra_gives_one_line_error(monkeypatch, tmp_path, caplog):
    from hierlens.analysis.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    argv = ["sweep", "--task", "dyck", "--depths", "1", "--out-dir", str(tmp_path)]
    assert main([*argv, "--backend", "ray"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert "pip install 'hierlens[distributed]'" in errors[0]
    with pytest.raises(ImportError, match=r"hierlens\[distributed\]"):
        sweep(TASK, [1], [0], CFG, tmp_path, backend="ray")


def test_importing_hierlens_does_not_import_ray():
    code = (
        "import sys, hierlens.models, hierlens.sae, hierlens.analysis.sweep, "
        "hierlens.analysis.cli.main; print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


DRIVER = """
import sys
from hierlens.analysis.sweep import sweep
from hierlens.models import TrainConfig, get_task
task = get_task("dyck", max_depth=3, max_length=8)
cfg = TrainConfig(steps=int(sys.argv[3]), batch_size=4, warmup_steps=1, eval_every=0,
                  checkpoint_every=10, train_pool=40, device="cpu")
sweep(task, [1, 2], [0, 1], cfg, sys.argv[1], backend="ray", address=sys.argv[2],
      model={"d_model": 8, "n_heads": 2}, track_options={"n": 8, "n_trees": 3})
"""


@pytest.mark.skipif(
    not os.environ.get("HIERLENS_RAY_ADDRESS"),
    reason="needs a Ray cluster outside the driver (CI starts one: HIERLENS_RAY_ADDRESS)",
)
def test_killed_driver_rerun_runs_only_the_missing(ray_local, tmp_path):
    """A real driver process is SIGKILLed once a run has finished; Ray ends the dead job's
    tasks, and a rerun of the same sweep runs exactly the runs without ``done.json``."""
    import signal
    import time

    steps = 40
    driver = subprocess.Popen(
        [
            sys.executable,
            "-c",
            DRIVER,
            str(tmp_path),
            os.environ["HIERLENS_RAY_ADDRESS"],
            str(steps),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not list(tmp_path.glob("*/done.json")):
            assert driver.poll() is None, "the driver ended before any run finished"
            assert time.monotonic() < deadline, "no run finished in time"
            time.sleep(0.2)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    done = set()
    stable_since = time.monotonic()
    while time.monotonic() - stable_since < 5:  # the dead job's tasks are ended by Ray
        now = {p.parent.name for p in tmp_path.glob("*/done.json")}
        if now != done:
            done, stable_since = now, time.monotonic()
        time.sleep(0.5)
    names = {f"depth{d:02d}_seed{s}" for d in (1, 2) for s in (0, 1)}
    assert 1 <= len(done) < len(names), done
    cfg = sweep_train_config(steps=steps, checkpoint_every=10)
    rows = sweep(TASK, [1, 2], [0, 1], cfg, tmp_path, backend="ray", **SWEEP_OPTIONS)
    summary = json.loads((tmp_path / SUMMARY).read_text())
    assert sorted(summary["ran"]) == sorted(names - done)  # counted: only the missing ones
    assert summary["failed"] == [] and len(rows) == len(names)
    assert {p.parent.name for p in tmp_path.glob("*/done.json")} == names
