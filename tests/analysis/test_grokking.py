import json
import math

import pytest

from hierlens.analysis.grokking import grokking_summary, parameter_norm, track
from hierlens.core.atomic_io import write_checked_jsonl
from hierlens.models import ModelConfig, Run, TrainConfig, build_transformer, get_task, train
from hierlens.models.run import write_run_config
from tests.tiny_configs import SWEEP_OPTIONS, sweep_train_config

TASK = get_task("dyck", max_depth=4, min_length=4, max_length=10)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("grok")
    model = build_transformer(
        ModelConfig.for_task(TASK, d_model=16, n_layers=2, n_heads=2), device="cpu"
    )
    cfg = TrainConfig(
        steps=30,
        batch_size=8,
        warmup_steps=2,
        eval_every=0,
        checkpoint_every=10,
        train_pool=100,
        device="cpu",
    )
    train(model, TASK, cfg, run, progress=False)
    return run


def test_track_one_record_per_checkpoint_and_resume(run_dir):
    records = track(run_dir, n=20, n_trees=6, device="cpu", progress=False)
    assert [r["step"] for r in records] == [10, 20, 30]
    for r in records:
        assert 0.0 <= r["test_id/closing_acc"] <= 1.0 and 0.0 <= r["test_ood/closing_acc"] <= 1.0
        assert math.isfinite(r["tree_score"]) and 0.0 <= r["parse_f1"] <= 1.0
        assert r["param_norm"] > 0 and r["attention_entropy"] >= 0
    lines = Run(run_dir).tracking_path.read_text().splitlines()
    assert len(lines) == 3
    again = track(run_dir, n=20, n_trees=6, device="cpu", progress=False)
    assert again == records
    assert Run(run_dir).tracking_path.read_text().splitlines() == lines  # nothing recomputed
    # changed settings recompute
    subset = track(
        run_dir, steps=[20], n=10, n_trees=4, metrics=("param_norm",), device="cpu", progress=False
    )
    assert len(subset) == 1 and set(subset[0]) == {"step", "main_metric", "param_norm", "settings"}
    assert subset[0]["param_norm"] == pytest.approx(records[1]["param_norm"])


def test_track_numbers_layers_as_tree_score_does(run_dir):
    """``layer`` means the same layer in ``track`` and ``tree_scores_by_layer`` (1 = block 0's
    output): on the same sentences they give the same tree score and parse F1."""
    from hierlens.analysis.tree_scores import tree_scores_by_layer

    for layer in (1, 2, -1):
        tracked = track(run_dir, steps=[30], n_trees=6, seed=7, layer=layer,
                        metrics=("tree_score", "parse_f1"), device="cpu", progress=False)[0]  # fmt: skip
        scored = tree_scores_by_layer(run_dir, [layer], step=30, split="test_id", n=6, seed=8,
                                      device="cpu", progress=False)[0]  # fmt: skip
        assert tracked["tree_score"] == pytest.approx(scored["tree_score"], abs=1e-6)
        assert tracked["parse_f1"] == pytest.approx(scored["parse_f1"], abs=1e-6)
    with pytest.raises(ValueError, match="layer 0, the embeddings"):
        track(run_dir, layer=0, device="cpu", progress=False)
    with pytest.raises(ValueError, match="layer out of range"):
        track(run_dir, layer=3, device="cpu", progress=False)


def test_records_numbered_in_blocks_are_renumbered_and_kept(run_dir):
    """Records written when ``layer`` counted blocks are read in the one layer numbering
    (block b is layer b + 1) and reused, not dropped and recomputed."""
    options = dict(n=10, n_trees=4, seed=3, layer=2, device="cpu", progress=False)
    records = track(run_dir, **options)
    path = Run(run_dir).tracking_path
    old = []
    for r in records:
        settings = {k: v for k, v in r["settings"].items() if k != "layer_numbering"}
        old.append({**r, "settings": {**settings, "layer": 1}})  # block 1 = layer 2
    write_checked_jsonl(path, old)
    assert track(run_dir, **options) == records  # reused as they are, nothing recomputed
    assert [json.loads(line) for line in path.read_text().splitlines()] == records


def test_param_norm_closed_form():
    import torch

    m = torch.nn.Linear(2, 2)
    with torch.no_grad():
        m.weight.fill_(1.0)
        m.bias.fill_(2.0)
    assert parameter_norm(m) == pytest.approx(math.sqrt(4 + 8))


def test_track_errors(run_dir, tmp_path):
    with pytest.raises(ValueError, match="no checkpoint at step"):
        track(run_dir, steps=[15], progress=False)
    with pytest.raises(ValueError, match="unknown tracking metric"):
        track(run_dir, metrics=("loss",), progress=False)
    with pytest.raises(FileNotFoundError):
        track(tmp_path, progress=False)


def test_grokking_summary_by_hand(tmp_path):
    records = [
        {"step": s, "main_metric": "acc", "test_id/acc": i, "test_ood/acc": o, "tree_score": t}
        for s, i, o, t in [
            (0, 0.1, 0.0, 0.0),
            (100, 0.99, 0.2, 0.1),
            (200, 1.0, 0.5, 0.2),
            (300, 1.0, 0.85, 0.4),
        ]
    ]
    summary = grokking_summary(records)
    assert (summary.id_saturation_step, summary.ood_threshold_step, summary.gap) == (100, 300, 200)
    assert summary.final_ood == 0.85 and summary.final_tree_score == 0.4
    never = grokking_summary(records, ood_threshold=0.9)
    assert never.ood_threshold_step is None and never.gap is None
    path = tmp_path / "tracking.jsonl"
    write_checked_jsonl(path, [{**r, "settings": {}} for r in records])  # as track() writes
    assert grokking_summary(tmp_path) == summary


def test_sweep_runs_each_job_once_and_collects_rows(tmp_path):
    from hierlens.analysis.sweep import sweep

    cfg = sweep_train_config()
    rows = sweep(TASK, [1, 2], [0], cfg, tmp_path, **SWEEP_OPTIONS)
    assert [(r["depth"], r["seed"]) for r in rows] == [(1, 0), (2, 0)]
    assert all(0.0 <= r["final_ood"] <= 1.0 for r in rows)
    done = tmp_path / "depth01_seed0" / "done.json"
    stamp = done.stat().st_mtime_ns
    again = sweep(TASK, [1, 2], [0], cfg, tmp_path, **SWEEP_OPTIONS)
    assert again == rows and done.stat().st_mtime_ns == stamp  # finished jobs are skipped
    with pytest.raises(ValueError, match="set by the sweep"):
        sweep(TASK, [1], [0], cfg, tmp_path, model={"n_layers": 3})
    # a tracked layer the shallowest depth lacks is refused before any job is written
    fresh = tmp_path / "fresh"
    with pytest.raises(ValueError, match="layer out of range"):
        sweep(TASK, [1, 2], [0], cfg, fresh, track_options={"layer": 2, "n": None})
    assert not fresh.exists() or not any(fresh.iterdir())


def test_sweep_reports_a_conflicting_run_and_trains_the_rest_of_its_stack(tmp_path):
    """A run directory holding another configuration fails alone: the other seed of its
    depth (which would share its stack) still trains, and nothing in the bad run changes."""
    from hierlens.analysis.sweep import SweepFailed, sweep

    bad = tmp_path / "depth01_seed0"
    bad.mkdir()
    write_run_config(bad, {"task": {"name": "other"}})
    cfg = TrainConfig(
        steps=2, batch_size=4, warmup_steps=0, eval_every=0, checkpoint_every=2,
        train_pool=20, device="cpu",
    )  # fmt: skip
    kwargs = dict(model={"d_model": 8, "n_heads": 2}, track_options={"n": 4, "n_trees": 2})
    with pytest.raises(SweepFailed) as info:
        sweep(TASK, [1], [0, 1], cfg, tmp_path, **kwargs)
    summary = info.value.summary
    assert [f["run"] for f in summary["failed"]] == ["depth01_seed0"]
    assert "different configuration" in summary["failed"][0]["error"]
    assert summary["ran"] == ["depth01_seed1"]
    assert (tmp_path / "depth01_seed1" / "done.json").exists()
    assert sorted(p.name for p in bad.iterdir()) == ["config.json", "hierlens_sha256.json"]


def test_sweep_fuses_the_seeds_of_each_depth(tmp_path, monkeypatch, caplog):
    """Each depth's seeds train as one stack in one process: 2 depths x 2 seeds build two
    stacks of two models each (the job processes run in this process to count them), and
    each run equals the same job trained alone by train()."""
    import logging
    import subprocess

    from hierlens.analysis import sweep as sweep_module

    calls = []

    def run_here(argv, *args, **kwargs):
        calls.append(argv[3:])
        sweep_module.run_jobs(argv[3:])
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(sweep_module.subprocess, "run", run_here)
    cfg = sweep_train_config(steps=4, checkpoint_every=2)
    with caplog.at_level(logging.INFO, logger="hierlens.models.train_many"):
        rows = sweep_module.sweep(TASK, [1, 2], [0, 1], cfg, tmp_path, **SWEEP_OPTIONS)
    assert [len(c) for c in calls] == [2, 2]
    assert caplog.text.count("2 model(s) in 1 stack(s)") == 2
    assert [(r["depth"], r["seed"]) for r in rows] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert Run(tmp_path / "depth02_seed1").steps == [2, 4]
    mcfg = ModelConfig.for_task(TASK, d_model=8, n_heads=2, n_layers=2, seed=1)
    alone = build_transformer(mcfg, device="cpu")
    train(alone, TASK, cfg.replace(seed=1), tmp_path / "alone", progress=False)
    fused = Run(tmp_path / "depth02_seed1").load_model(step=4, device="cpu")
    want, got = alone.state_dict(), fused.state_dict()
    assert max(float((want[k] - got[k]).abs().max()) for k in want if "k.bias" not in k) < 1e-5
