"""kill -9 at random points of train, capture, SAE fitting and the pipeline, then a rerun:
the run directory must equal the uninterrupted one, file by file."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from .conftest import diff, snapshot

# (stage, seeds): each seed kills one child at a random file event of the stage
CASES = {"train": (0, 1), "capture": (0, 1), "sae": (0, 1), "pipeline": (0, 1, 2)}


@pytest.fixture(scope="module")
def trained(stages, tmp_path_factory):
    """A trained run (the input of capture and SAE fitting)."""
    run_dir = tmp_path_factory.mktemp("base") / "run"
    code, _ = stages.run("train", run_dir)
    assert code == 0
    return run_dir


@pytest.mark.parametrize("kind", sorted(CASES))
def test_kill_and_rerun_equals_uninterrupted(kind, stages, trained, tmp_path):
    def fresh(name):
        run_dir = tmp_path / name / ("p" if kind == "pipeline" else "run")
        if kind in ("capture", "sae"):
            shutil.copytree(trained, run_dir)
        return run_dir

    reference = fresh("reference")
    code, events = stages.run(kind, reference)
    assert code == 0 and events > 2
    expected = snapshot(reference)
    for seed in CASES[kind]:
        kill_at = int(np.random.default_rng([seed, len(kind)]).integers(1, events + 1))
        run_dir = fresh(f"seed{seed}")
        code, _ = stages.run(kind, run_dir, kill_at=kill_at)
        assert code == -9, f"{kind}: the child was not killed at event {kill_at}/{events}"
        code, _ = stages.run(kind, run_dir)
        assert code == 0, f"{kind}: the rerun after a kill at event {kill_at} failed"
        assert diff(snapshot(run_dir), expected) == [], f"{kind}, kill at {kill_at}/{events}"
