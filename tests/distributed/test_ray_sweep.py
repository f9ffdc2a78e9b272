"""Sweeps on Ray: a local Ray started in the test process (and shut down after), the same
runs and summary as the sequential sweep, reruns that do only what is missing, failures
reported per run, and the one-line error when Ray is not installed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hierlens.analysis.sweep import SUMMARY, SweepFailed, sweep
from hierlens.models import TrainConfig, get_task

TASK = get_task("dyck", max_depth=3, max_length=8)
CFG = TrainConfig(
    steps=6,
    batch_size=4,
    warmup_steps=1,
    eval_every=0,
    checkpoint_every=3,
    train_pool=40,
    device="cpu",
)
KW = dict(model={"d_model": 8, "n_heads": 2}, track_options={"n": 8, "n_trees": 3})
DEPTHS, SEEDS = [1, 2], [0, 1]


def _values(rows):
    return [{k: v for k, v in r.items() if k != "run_dir"} for r in rows]


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("OMP_NUM_THREADS", "1")  # as in a Ray task with one CPU: same float order
    try:
        out = tmp_path_factory.mktemp("sequential")
        return out, sweep(TASK, DEPTHS, SEEDS, CFG, out, **KW)
    finally:
        mp.undo()


def test_ray_sweep_matches_sequential_and_reruns_only_missing(ray_local, sequential, tmp_path):
    seq_dir, seq_rows = sequential
    rows = sweep(TASK, DEPTHS, SEEDS, CFG, tmp_path, backend="ray", **KW)
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
    again = sweep(TASK, DEPTHS, SEEDS, CFG, tmp_path, backend="ray", **KW)
    summary = json.loads((tmp_path / SUMMARY).read_text())
    assert sorted(summary["ran"]) == ["depth01_seed1", "depth02_seed0"]
    assert _values(again) == _values(seq_rows)


def test_failed_run_is_reported_and_others_finish(ray_local, tmp_path):
    bad = tmp_path / "depth01_seed0"
    bad.mkdir(parents=True)
    (bad / "config.json").write_text(json.dumps({"task": {"name": "other"}}))
    with pytest.raises(SweepFailed) as info:
        sweep(TASK, [1], SEEDS, CFG, tmp_path, backend="ray", **KW)
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
