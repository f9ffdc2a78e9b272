"""``hierlens patch`` / ``hierlens das`` end to end on a tiny run, the report's causal
section, the pipeline's [causal] stage config, and clear errors before work."""

from __future__ import annotations

import json
import logging

from hierlens.analysis.cli import main
from hierlens.core.atomic_io import read_json, read_jsonl
from hierlens.models import open_run

TINY = ["--task", "dyck", "--task-param", "max_length=12", "--task-param", "max_depth=4",
        "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--steps", "10",
        "--batch-size", "8", "--eval-every", "0", "--eval-n", "16", "--checkpoint-every", "10",
        "--train-pool", "100", "--device", "cpu", "--no-progress"]  # fmt: skip


def test_patch_and_das_commands_write_results_and_report(tmp_path, capsys, caplog):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    assert main(["patch", str(run_dir), "--variables", "stack_top", "--n-pairs", "4",
                 "--span", "3", "--device", "cpu"]) == 0  # fmt: skip
    run = open_run(run_dir)
    data = read_json(run.patching_path)
    (rec,) = data["patching"]
    assert rec["variable"] == "stack_top" and rec["offsets"] == [-2, -1, 0]
    assert set(rec["effect"]) == {"blocks.0.hook_resid_pre", "blocks.0.hook_resid_post"}
    assert "pearson" in rec["agreement"]
    assert main(["das", str(run_dir), "--variables", "depth", "--rank", "1", "--steps", "3",
                 "--n-pairs", "20", "--device", "cpu", "--no-progress"]) == 0  # fmt: skip
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert {r["hook"] for r in lines if "das" in r} == {
        "blocks.0.hook_resid_pre", "blocks.0.hook_resid_post",
    }  # fmt: skip
    records = read_jsonl(run.das_path)
    assert all(0 <= r["das"] <= 1 and 0 <= r["probe"] <= 1 for r in records)
    from hierlens.analysis import write_report

    html = write_report(run_dir).read_text()
    assert "Causal evidence" in html and "random_subspace" in html
    caplog.set_level(logging.ERROR)
    assert main(["das", str(run_dir), "--variables", "dept", "--device", "cpu"]) == 2
    assert "did you mean 'depth'" in caplog.text
    assert main(["das", str(run_dir), "--hooks", "blocks.0.hook_resid_psot", "--steps", "1",
                 "--n-pairs", "12", "--device", "cpu"]) == 2  # fmt: skip
    assert "blocks.0.hook_resid_post" in caplog.text
    assert main(["das", str(run_dir), "--rank", "99", "--steps", "1", "--n-pairs", "12",
                 "--device", "cpu"]) == 2  # fmt: skip
    assert "rank 99 is larger than the width" in caplog.text


def test_pipeline_causal_stage_config():
    import pytest

    from hierlens.analysis.pipeline.config import DEMO_CONFIG, load_config

    cfg = load_config({**DEMO_CONFIG, "causal": {"enabled": True, "das": {"rank": 2}}})
    assert cfg.causal.das.rank == 2 and cfg.causal.patch.n_pairs == 64
    again = load_config({**cfg.to_dict()})
    assert again.causal == cfg.causal
    with pytest.raises(ValueError, match=r"\[causal\].*rank"):
        load_config({**DEMO_CONFIG, "causal": {"das": {"rank": 0}}})


def test_pipeline_causal_stage_runs_and_resumes(tmp_path):
    from hierlens.analysis.pipeline import run
    from hierlens.models.run import Run

    cfg = {
        "name": "tiny", "out_dir": str(tmp_path),
        "task": {"name": "dyck", "params": {"max_depth": 4, "min_length": 4, "max_length": 10}},
        "model": {"d_model": 16, "n_layers": 1, "n_heads": 2},
        "train": {"steps": 10, "batch_size": 8, "warmup_steps": 2, "eval_every": 0,
                  "eval_n": 16, "checkpoint_every": 10, "train_pool": 100, "device": "cpu"},
        "capture": {"hooks": ["blocks.0.hook_resid_post"], "n": 16},
        "sae": {"enabled": False}, "probes": {"enabled": False}, "tree": {"enabled": False},
        "causal": {"enabled": True, "variables": ["stack_top"],
                   "patch": {"n_pairs": 4, "attribution": False},
                   "das": {"steps": 2, "n_pairs": 20, "controls": False}},
        "report": False,
    }  # fmt: skip
    layout = Run(run(cfg, progress=False))
    (rec,) = read_jsonl(layout.das_path)[:1]
    assert rec["variable"] == "stack_top" and rec["random_model"] is None
    assert read_json(layout.patching_path)["patching"][0]["variable"] == "stack_top"
    stamp = layout.das_path.stat().st_mtime_ns
    run(cfg, progress=False)
    assert layout.das_path.stat().st_mtime_ns == stamp


def test_variables_and_hooks_flags_are_the_causal_stage_fields(capsys):
    """patch and das take --variables and --hooks from the pipeline's CausalStage (one
    default and one help text, in the config), as the [causal] stage does."""
    import pytest

    from hierlens.analysis.cli.common import config_field_docs
    from hierlens.analysis.pipeline.config import CausalStage

    docs = config_field_docs(CausalStage)
    for command in ("patch", "das"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for field in ("variables", "hooks"):
            assert " ".join(docs[field].split()) in text
