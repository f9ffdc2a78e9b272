"""The run-directory layout: every path comes from ``Run``, for runs being written and runs
being read, including the older SAE folders; and the old module paths of the training
story."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from hierlens.models import Run, open_run
from hierlens.models.run_layout import step_dir_name


def test_layout_of_a_run_that_does_not_exist_yet(tmp_path):
    root = tmp_path / "new"
    run = Run(root)
    expected = {
        run.config_path: "config.json",
        run.metrics_path: "metrics.jsonl",
        run.checkpoints_dir: "checkpoints",
        run.checkpoint_dir(500): "checkpoints/step_0000500",
        run.activations_root: "activations",
        run.activations_dir(12): "activations/step_0000012",
        run.saes_dir: "saes",
        run.sae_dir("topk_w8_k2"): "saes/topk_w8_k2",
        run.sae_table_path: "saes/table.jsonl",
        run.mdl_table_path: "saes/mdl_table.jsonl",
        run.mdl_selection_path: "saes/mdl_selection.json",
        run.probes_dir: "probes",
        run.probe_results_path: "probes/results.jsonl",
        run.tracking_path: "tracking.jsonl",
        run.report_path: "report.html",
        run.figures_dir: "figures",
    }
    for path, rel in expected.items():
        assert path == root / rel
    assert not root.exists()  # naming paths touches nothing
    assert not run.exists
    assert run.steps == [] and run.checkpoint_dirs() == {} and run.activation_dirs() == {}
    assert run.sae_dirs() == {} and run.metrics() == []
    with pytest.raises(FileNotFoundError, match="no config.json"):
        run.config  # noqa: B018


def test_write_config_then_open(tmp_path):
    run = Run(tmp_path / "a" / "b")
    config = {"task": {"name": "dyck", "params": {}}, "model": {"d_model": 8}}
    run.write_config(config)
    assert json.loads(run.config_path.read_text()) == config
    opened = open_run(run.path)
    assert opened == run and opened.config == config and opened.exists
    assert Run(opened).config is opened.config  # a Run is a valid path argument
    assert open_run(run) == run


def test_open_run_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a hierlens run directory") as info:
        open_run(tmp_path)
    assert info.value.filename == str(tmp_path / "config.json")
    (tmp_path / "config.json").write_text(json.dumps({"task": {}}))
    with pytest.raises(ValueError, match="no checksum manifest"):  # not written by hierlens
        open_run(tmp_path)
    Run(tmp_path).write_config({"task": {}})
    with pytest.raises(ValueError, match="expected keys 'task' and 'model'"):
        open_run(tmp_path)


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="must be a path"):
        Run(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="config must be a dict"):
        Run(tmp_path, config=[1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="config must be a dict"):
        Run(tmp_path).write_config("{}")  # type: ignore[arg-type]
    run = Run(tmp_path)
    for bad in ("", ".", "..", "a/b", 7):
        with pytest.raises(ValueError, match="SAE name"):
            run.sae_dir(bad)  # type: ignore[arg-type]
    for reserved in ("grid", "mdl"):
        with pytest.raises(ValueError, match="reserved"):
            run.sae_dir(reserved)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="non-negative integer"):
            step_dir_name(bad)  # type: ignore[arg-type]


def test_step_folders_are_listed_by_step(tmp_path):
    run = Run(tmp_path)
    for step in (30, 4, 12_000_000):
        run.checkpoint_dir(step).mkdir(parents=True)
        run.activations_dir(step).mkdir(parents=True)
    (run.checkpoints_dir / ".step_0000005.tmp-1").mkdir()  # an unfinished write
    (run.checkpoints_dir / "step_5").mkdir()  # not the layout's name
    assert list(run.checkpoint_dirs()) == [4, 30, 12_000_000]
    assert run.activation_dirs()[30] == tmp_path / "activations" / "step_0000030"
    assert run.steps == []  # no state.json: no complete checkpoint
    (run.checkpoint_dir(30) / "state.json").write_text("{}")
    assert run.steps == [30]


def _fake_sae(folder):
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text("{}")


def test_sae_dirs_read_the_older_grid_and_mdl_folders(tmp_path):
    run = Run(tmp_path)
    _fake_sae(run.sae_dir("a"))
    _fake_sae(run.saes_dir / "grid" / "b")
    _fake_sae(run.saes_dir / "mdl" / "c")
    _fake_sae(run.saes_dir / "grid" / "a")  # shadowed by saes/a
    (run.saes_dir / "not_an_sae").mkdir()
    assert run.sae_dirs() == {
        "a": tmp_path / "saes" / "a",
        "b": tmp_path / "saes" / "grid" / "b",
        "c": tmp_path / "saes" / "mdl" / "c",
    }


def test_mdl_files_of_older_runs_are_found(tmp_path):
    run = Run(tmp_path)
    legacy = run.saes_dir / "mdl"
    legacy.mkdir(parents=True)
    (legacy / "mdl_table.jsonl").write_text("{}\n")
    (legacy / "mdl_selection.json").write_text("{}")
    assert run.mdl_table_path == legacy / "mdl_table.jsonl"
    assert run.mdl_selection_path == legacy / "mdl_selection.json"
    (run.saes_dir / "mdl_table.jsonl").write_text("{}\n")  # a newer fit wins
    assert run.mdl_table_path == run.saes_dir / "mdl_table.jsonl"


def test_train_config_has_one_public_path():
    import hierlens.models as models
    from hierlens.models.train_config import TrainConfig

    assert models.TrainConfig is TrainConfig and "TrainConfig" in models.__all__


def test_run_does_not_import_the_training_loop():
    """run.py <-> train.py was an import cycle: run.py must not import train.py anywhere
    (also not inside a function)."""
    import ast

    source = importlib.import_module("hierlens.models.run").__file__
    imported = set()
    for node in ast.walk(ast.parse(Path(source).read_text())):
        if isinstance(node, ast.ImportFrom):
            imported.add(("." * node.level) + (node.module or ""))
    assert ".train_config" in imported
    assert not imported & {".train", "hierlens.models.train"}
