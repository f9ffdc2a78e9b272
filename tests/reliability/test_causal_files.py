"""The causal results (``causal/``) and the SAEBench result files (``saes/saebench/``) are
files of the run like the others: the causal stage redoes a result that is not committed, the
report checks the DAS records against their fields, and clearing the run removes the SAEBench
files it wrote."""

from __future__ import annotations

from hierlens.analysis import write_report
from hierlens.analysis.pipeline.config import load_config
from hierlens.analysis.pipeline.stages import causal_stage
from hierlens.core import confined_io as fs
from hierlens.core.atomic_io import write_checked_json, write_checked_jsonl
from hierlens.models.run import Run, open_run
from hierlens.models.run_clean import clear_run
from hierlens.sae.saebench import write_results

from ._runs import train_tiny
from ._stages import pipeline_config

CAUSAL = {
    "enabled": True,
    "variables": ["depth"],
    "patch": {"n_pairs": 4, "span": 2, "attribution": False},
    "das": {"steps": 2, "n_pairs": 20, "controls": False},
}


def test_the_causal_stage_redoes_a_result_that_is_not_committed(tmp_path):
    cfg = load_config({**pipeline_config(str(tmp_path)), "causal": CAUSAL})
    run = Run(tmp_path / "p")
    train_tiny(run.path)
    write_checked_json(run.patching_path, {"patching": []})
    write_checked_jsonl(run.das_path, [{"variable": "depth", "hook": "x", "das": 0.0}])
    data = fs.read_bytes(run.das_path)
    fs.write_bytes(run.das_path, data[: len(data) // 2])  # a torn write the manifest does not match
    opened = open_run(run.path)
    with run.lock():
        causal_stage(cfg, run.path, opened.load_model(device="cpu"), opened.task, progress=False)
        records = run.read_records(run.das_path)
    assert records and {r["variable"] for r in records} == {"depth"}
    assert all(r["hook"] != "x" for r in records)  # computed again, not the old record


def test_das_records_without_their_fields_are_named_in_the_report(tmp_path):
    run = Run(tmp_path / "R")
    train_tiny(run.path)
    write_checked_jsonl(run.das_path, [{"variable": "depth", "das": 0.5}])  # no "hook"
    html = write_report(run.path, max_sentences=0).read_text()
    section = html[html.index("Causal evidence") :]
    assert "could not be built" in section and "das.jsonl" in section


def test_clearing_the_run_removes_its_saebench_files(tmp_path):
    run = Run(tmp_path / "R")
    train_tiny(run.path)
    result = {"sae_lens_release_id": "r", "sae_lens_id": "s", "eval_type_id": "core"}
    (path,) = write_results(run.saebench_dir, [result])
    assert path.parent.parent == run.saebench_dir
    with run.lock():
        left = clear_run(run.path)
    assert left == [] and not run.saebench_dir.exists()
