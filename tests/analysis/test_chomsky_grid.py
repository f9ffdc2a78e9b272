"""Chomsky-hierarchy architectures through the training loop, the run directory, the CLI,
the grid runner and the ``chomsky-table`` figure."""

from __future__ import annotations

import json

import pytest
import torch

from hierlens.analysis.chomsky_grid import GridFailed, chomsky_grid, chomsky_scores
from hierlens.analysis.cli import main
from hierlens.analysis.figures import reproduce
from hierlens.analysis.figures.chomsky import plot_chomsky_table
from hierlens.models import TrainConfig, get_task
from hierlens.models.architectures import ArchConfig, build_model
from hierlens.models.capture import capture
from hierlens.models.checkpoint import load_checkpoint
from hierlens.models.run import Run, open_run
from hierlens.models.train import train
from tests.analysis.grid_tables import grid_table

TASK = {"n_train": 4, "n_test": 7}


def _config(**kw) -> TrainConfig:
    base = dict(
        steps=6,
        batch_size=8,
        lr=1e-2,
        eval_every=3,
        eval_n=12,
        checkpoint_every=3,
        train_pool=64,
        log_every=2,
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})


def _stack_rnn(task):
    return ArchConfig.for_task(task, arch="stack_rnn", d_model=12, memory_size=6, memory_dim=3)


def test_stack_rnn_trains_resumes_bitwise_and_reloads(tmp_path):
    task = get_task("reverse_string", **TASK)
    cfg = _stack_rnn(task)
    full = train(build_model(cfg), task, _config(), tmp_path / "full", progress=False)
    assert full.step == 6 and set(full.eval) == {"test_id", "test_ood"}
    train(build_model(cfg), task, _config(), tmp_path / "cut", stop_at=3, progress=False)
    assert Run(tmp_path / "cut").steps == [3]
    resumed = train(build_model(cfg), task, _config(), tmp_path / "cut", progress=False)
    assert resumed.step == 6 and Run(tmp_path / "cut").steps == [3, 6]
    a = load_checkpoint(Run(tmp_path / "full").checkpoint_dir(6)).model_state
    b = load_checkpoint(Run(tmp_path / "cut").checkpoint_dir(6)).model_state
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    run = open_run(tmp_path / "full")
    assert run.config["model"]["arch"] == "stack_rnn"
    assert run.model_config == cfg
    model = run.load_model(device="cpu")
    assert type(model).__name__ == "MemoryRNN"
    for k, v in model.state_dict().items():
        assert torch.equal(v, a[k]), k
    tokens = torch.tensor([[1, 2, 3, 3]])
    store = capture(model, tokens, ["hook_hidden", "hook_stack"], batch_size=1, progress=False)
    assert store["hook_hidden"].shape == (4, 12) and store["hook_stack"].shape == (4, 6 * 3)


def test_transformer_run_keeps_model_config(tmp_path):
    from hierlens.models.transformer import ModelConfig, build_transformer

    task = get_task("parity_check", **TASK)
    cfg = ModelConfig.for_task(task, d_model=16, n_layers=1, n_heads=2)
    train(build_transformer(cfg, device="cpu"), task, _config(steps=2), tmp_path, progress=False)
    run = open_run(tmp_path)
    assert "arch" not in run.config["model"] and run.model_config == cfg


def test_cli_train_arch_and_eval(tmp_path, capsys, caplog):
    args = ["train", "--task", "reverse_string", "--task-param", "n_train=4",
            "--task-param", "n_test=6", "--arch", "tape_rnn", "--d-model", "12",
            "--memory-size", "6", "--steps", "2", "--checkpoint-every", "2",
            "--eval-every", "0", "--train-pool", "20", "--batch-size", "4",
            "--device", "cpu", "--no-progress", "--run-dir", str(tmp_path / "r")]  # fmt: skip
    assert main(args) == 0
    run = open_run(tmp_path / "r")
    assert run.model_config.arch == "tape_rnn" and run.model_config.d_model == 12
    assert main(["eval", str(tmp_path / "r"), "--n", "6", "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 0.0 <= out["test_ood"]["accuracy"] <= 1.0
    bad = args[:-1] + [str(tmp_path / "x"), "--act-fn", "relu"]
    assert main(bad) != 0
    assert "TL-native transformer only" in caplog.text
    assert not (tmp_path / "x" / "config.json").exists()


GRID = dict(
    model={"d_model": 8, "n_layers": 1, "n_heads": 2, "memory_size": 4, "memory_dim": 2},
    task_params={"n_train": 3, "n_test": 5},
    eval_n=8,
)
TRAIN = {"steps": 2, "batch_size": 4, "eval_every": 0, "checkpoint_every": 2,
         "train_pool": 20, "device": "cpu"}  # fmt: skip


def test_grid_rerun_does_only_missing_runs(tmp_path):
    rows = chomsky_grid(["parity_check"], ["rnn", "lstm"], [0], [1e-2], TRAIN, tmp_path, **GRID)
    assert [(r["arch"], r["seed"]) for r in rows] == [("rnn", 0), ("lstm", 0)]
    done = tmp_path / "parity_check" / "rnn" / "lr0.01_seed0" / "done.json"
    before = done.stat().st_mtime_ns
    rows = chomsky_grid(["parity_check"], ["rnn", "lstm"], [0, 1], [1e-2], TRAIN, tmp_path, **GRID)
    summary = json.loads((tmp_path / "grid_summary.json").read_text())
    assert sorted(summary["ran"]) == [
        "parity_check/lstm/lr0.01_seed1",
        "parity_check/rnn/lr0.01_seed1",
    ]
    assert done.stat().st_mtime_ns == before and len(rows) == 4
    for r in rows:
        assert 0.0 <= r["score"] <= 1.0
        assert sorted(map(int, r["by_length"])) == [1, 2, 3, 4, 5]
    table = chomsky_scores(rows)
    cell = table["parity_check"]["rnn"]
    assert cell["score"] == max(cell["scores"]) and len(cell["scores"]) == 2
    assert cell["generalises"] == (cell["score"] >= 0.9)


def test_grid_trains_one_fused_stack_per_task_and_architecture(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="hierlens.models.train_many"):
        rows = chomsky_grid(
            ["parity_check"], ["rnn", "lstm"], [0, 1], [1e-2, 3e-3], TRAIN, tmp_path, **GRID
        )
    stacks = [r.getMessage() for r in caplog.records if "stack(s)" in r.getMessage()]
    assert stacks == ["train_many: 4 model(s) in 1 stack(s)"] * 2
    assert len(rows) == 8 and all(0.0 <= r["score"] <= 1.0 for r in rows)
    assert all("stopped" not in r for r in rows)


def test_grid_refuses_runs_made_with_other_settings(tmp_path):
    chomsky_grid(["parity_check"], ["rnn"], [0], [1e-2], TRAIN, tmp_path, **GRID)
    done = tmp_path / "parity_check" / "rnn" / "lr0.01_seed0" / "done.json"
    kept = done.read_bytes()
    for train_cfg, grid in [({**TRAIN, "steps": 3}, GRID), (TRAIN, {**GRID, "eval_n": 9})]:
        with pytest.raises(ValueError, match="other settings.*parity_check/rnn/lr0.01_seed0"):
            chomsky_grid(["parity_check"], ["rnn"], [0], [1e-2], train_cfg, tmp_path, **grid)
        assert done.read_bytes() == kept  # nothing written is lost
    # runtime fields (the device, logging) are not settings of the run
    chomsky_grid(
        ["parity_check"], ["rnn"], [0], [1e-2], {**TRAIN, "log_every": 7}, tmp_path, **GRID
    )
    assert done.read_bytes() == kept


def test_grid_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown architecture"):
        chomsky_grid(["parity_check"], ["gru"], [0], [1e-2], TRAIN, tmp_path, **GRID)
    with pytest.raises(ValueError, match="unknown task"):
        chomsky_grid(["nope"], ["rnn"], [0], [1e-2], TRAIN, tmp_path, **GRID)
    with pytest.raises(ValueError, match="backend"):
        chomsky_grid(["parity_check"], ["rnn"], [0], [1e-2], TRAIN, tmp_path, backend="x", **GRID)
    with pytest.raises(ValueError, match="set by the grid"):
        chomsky_grid(["parity_check"], ["rnn"], [0], [1e-2], TRAIN, tmp_path,
                     **{**GRID, "model": {"arch": "rnn"}})  # fmt: skip
    # a run that fails is reported and the others still run
    with pytest.raises(GridFailed, match="1 grid run"):
        chomsky_grid(["parity_check"], ["rnn", "transformer"], [0], [1e-2], TRAIN, tmp_path,
                     **GRID, arch_options={"transformer": {"max_len": 4}})  # fmt: skip
    assert (tmp_path / "parity_check" / "rnn" / "lr0.01_seed0" / "done.json").exists()


def hand_made_table() -> dict:
    tasks, archs = ["parity_check", "reverse_string"], ["rnn", "stack_rnn"]
    return grid_table(
        tasks,
        archs,
        measured={t: {"rnn": 95.0, "stack_rnn": 50.0} for t in tasks},
        paper={
            "parity_check": {"rnn": 100.0, "stack_rnn": 100.0},
            "reverse_string": {"rnn": 62.0, "stack_rnn": None},
        },
        curves={t: {a: {"1": 100.0, "4": 60.0, "5": 50.0} for a in archs} for t in tasks},
    )


def test_table_figure_tiny(tmp_path):
    paths = reproduce(
        "chomsky-table",
        tmp_path,
        quick=True,
        device="cpu",
        progress=False,
        tasks=["parity_check", "reverse_string"],
        archs=["lstm", "stack_rnn"],
        steps=2,
        eval_n=6,
    )
    assert {p.name for p in paths} == {
        "chomsky-table.json",
        "chomsky-table.png",
        "chomsky-table.pdf",
    }
    data = json.loads((tmp_path / "chomsky-table.json").read_text())["data"]
    assert data["paper"]["reverse_string"]["stack_rnn"] == 100.0
    assert data["paper"]["parity_check"]["lstm"] == 100.0
    assert "deltaformer-table5" in data["paper_sources"]["reverse_string"]["stack_rnn"]
    assert "deltaformer-table5" in data["sources"]
    for t in data["tasks"]:
        for a in data["archs"]:
            assert 0.0 <= data["measured"][t][a] <= 100.0
            lengths = sorted(map(int, data["curves"][t][a]))
            assert lengths[-1] == data["n_test"]
    assert plot_chomsky_table(hand_made_table()) is not None
