"""Property: cut any JSONL file a run writes at any byte (a torn write, a file-size limit, a
full disk), rerun the run, and every file of the run then reads in full, checked; files the
run can recompute come back equal to the uninterrupted run's."""

from __future__ import annotations

import shutil

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hierlens.analysis.pipeline import run as run_pipeline
from hierlens.models.run import Run

from ._stages import pipeline_config

#: every JSONL file the reliability pipeline writes
JSONL = ("metrics.jsonl", "probes/results.jsonl", "saes/table.jsonl", "tracking.jsonl")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    run_dir = run_pipeline(pipeline_config(str(out)), progress=False)
    found = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*.jsonl"))
    assert found == sorted(JSONL)  # a new JSONL file joins this test
    return Run(run_dir)


def _records(run: Run, name: str) -> list[dict]:
    records = run.read_records(run.path / name)
    for r in records:
        r.pop("tokens_per_s", None)  # a timing
    return sorted(records, key=lambda r: sorted((k, str(v)) for k, v in r.items()))


@pytest.mark.parametrize("name", JSONL)
@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fraction=st.floats(0.0, 1.0))
@example(fraction=0.0)
@example(fraction=0.995)
def test_cut_anywhere_then_rerun_then_read_everything(name, fraction, reference, tmp_path_factory):
    work = tmp_path_factory.mktemp("cut")
    run = Run(shutil.copytree(reference.path, work / reference.path.name))
    path = run.path / name
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    run_pipeline(pipeline_config(str(work)), progress=False)
    for other in JSONL:  # a full, checked read of every file
        records = _records(run, other)
        if other != "metrics.jsonl" or name != "metrics.jsonl":  # recomputed by the rerun
            assert records == _records(reference, other), other
        else:  # the training records before the cut are kept; those after it are lost
            expected = _records(reference, other)
            assert all(r in expected for r in records)
