"""``track`` and SAE grids with each checkpoint (or checkpoint x hook) a Ray task, and the
Chomsky grid with each fused stack a Ray task: the same records, SAEs and scores as the
sequential runs, reruns that do only what is missing, failures reported while the others
complete."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from hierlens.analysis import ray_backend
from hierlens.analysis.grokking import TrackFailed, track
from hierlens.analysis.sae_grid import fit_sae_grid, grid_sae_name
from hierlens.models import ModelConfig, TrainConfig, build_transformer, get_task, train
from hierlens.models.run import Run
from hierlens.sae import SAETrainConfig, load_sae

TASK = get_task("dyck", max_depth=3, max_length=8)
TRACK = dict(n=8, n_trees=3, compare=True, n_compare=4, progress=False)
HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
GRID = dict(
    widths=[8, 16],
    ks=[2],
    config=SAETrainConfig(steps=8, batch_size=16, device="cpu", seed=0),
    n=12,
    device="cpu",
    progress=False,
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-layer run with checkpoints at steps 2, 4 and 6."""
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    model_config = ModelConfig.for_task(TASK, d_model=8, n_layers=2, n_heads=2, seed=0)
    config = TrainConfig(
        steps=6, batch_size=4, warmup_steps=1, eval_every=0, checkpoint_every=2, device="cpu"
    )
    model = build_transformer(model_config, device="cpu")
    train(model, TASK, config, run_dir, model_config=model_config, progress=False)
    assert Run(run_dir).steps == [2, 4, 6]
    return run_dir


def copy_run(run_dir, dest):
    shutil.copytree(run_dir, dest)
    return dest


@pytest.fixture
def jobs_sent(monkeypatch):
    """The keys of the jobs each ``map_tasks`` call sent to Ray."""
    sent = []
    real = ray_backend.map_tasks

    def spy(fn, jobs, **kwargs):
        sent.append([key for key, _ in jobs])
        return real(fn, jobs, **kwargs)

    monkeypatch.setattr(ray_backend, "map_tasks", spy)
    return sent


def lines(run_dir):
    return [json.loads(x) for x in Run(run_dir).tracking_path.read_text().splitlines()]


def test_track_on_ray_equals_sequential_and_skips_tracked(ray_local, tiny_run, tmp_path, jobs_sent):
    seq = copy_run(tiny_run, tmp_path / "seq")
    expected = track(seq, **TRACK)
    assert [r["step"] for r in expected] == [2, 4, 6]

    ray_run = copy_run(tiny_run, tmp_path / "ray")
    first = track(ray_run, steps=[4], backend="ray", **TRACK)
    assert first == [expected[1]]
    records = track(ray_run, backend="ray", **TRACK)
    assert jobs_sent == [[4], [2, 6]]  # step 4 was tracked already
    assert records == expected
    assert sorted(lines(ray_run), key=lambda r: r["step"]) == lines(seq)

    from hierlens.analysis.cli import main

    fresh = copy_run(tiny_run, tmp_path / "cli")
    argv = ["track", str(fresh), "--n", "8", "--n-trees", "3", "--compare", "true"]
    assert main([*argv, "--n-compare", "4", "--no-progress", "--backend", "ray"]) == 0
    assert jobs_sent[-1] == [2, 4, 6]
    assert lines(fresh) == lines(seq)


def test_track_failed_checkpoint_is_reported_and_others_complete(ray_local, tiny_run, tmp_path):
    expected = {r["step"]: r for r in track(copy_run(tiny_run, tmp_path / "seq"), **TRACK)}
    run_dir = copy_run(tiny_run, tmp_path / "bad")
    (model_file,) = Run(run_dir).checkpoint_dir(4).glob("model*")
    model_file.write_bytes(model_file.read_bytes()[:-64])  # a truncated checkpoint
    with pytest.raises(TrackFailed) as info:
        track(run_dir, backend="ray", **TRACK)
    assert list(info.value.failed) == [4]
    assert [r["step"] for r in info.value.records] == [2, 6]
    assert lines(run_dir) == [expected[2], expected[6]]


def saved_weights(run_dir):
    run = Run(run_dir)
    return {name: load_sae(path).state_dict() for name, path in run.sae_dirs().items()}


def test_sae_grid_on_ray_equals_sequential_and_reruns_missing(
    ray_local, tiny_run, tmp_path, jobs_sent
):
    seq = copy_run(tiny_run, tmp_path / "seq")
    saved = fit_sae_grid(seq, HOOKS, [2, 6], **GRID)
    assert len(saved) == 2 * 2 * 2  # checkpoints x hooks x grid members
    assert grid_sae_name("topk_w8_k2", HOOKS[1], 6) in saved
    expected = saved_weights(seq)

    ray_run = copy_run(tiny_run, tmp_path / "ray")
    got = fit_sae_grid(ray_run, HOOKS, [2, 6], backend="ray", **GRID)
    assert sorted(jobs_sent[0]) == sorted((s, h) for s in (2, 6) for h in HOOKS)
    assert sorted(got) == sorted(saved)

    def check():
        weights = saved_weights(ray_run)
        assert weights.keys() == expected.keys()
        for name, state in expected.items():
            for key, value in state.items():
                assert torch.equal(weights[name][key], value), (name, key)

    check()
    gone = Run(ray_run).sae_dir(grid_sae_name("topk_w16_k2", HOOKS[0], 6))
    shutil.rmtree(gone)
    fit_sae_grid(ray_run, HOOKS, [2, 6], backend="ray", **GRID)
    assert jobs_sent[1] == [(6, HOOKS[0])]  # only the pair with a missing SAE ran again
    check()


def test_chomsky_grid_on_ray_runs_one_task_per_stack(ray_local, tmp_path, jobs_sent):
    from hierlens.analysis.chomsky_grid import chomsky_grid

    grid = dict(
        model={"d_model": 8, "memory_size": 4, "memory_dim": 2},
        task_params={"n_train": 3, "n_test": 5},
        eval_n=8,
    )
    train_cfg = {"steps": 2, "batch_size": 4, "eval_every": 0, "checkpoint_every": 2,
                 "train_pool": 20, "device": "cpu"}  # fmt: skip
    args = (["parity_check"], ["rnn", "stack_rnn"], [0, 1], [1e-2], train_cfg)
    seq = chomsky_grid(*args, tmp_path / "seq", **grid)
    on_ray = chomsky_grid(*args, tmp_path / "ray", backend="ray", **grid)
    assert sorted(map(sorted, jobs_sent[0])) == [
        ["parity_check/rnn/lr0.01_seed0", "parity_check/rnn/lr0.01_seed1"],
        ["parity_check/stack_rnn/lr0.01_seed0", "parity_check/stack_rnn/lr0.01_seed1"],
    ]
    drop = ("run_dir",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in on_ray] == [
        {k: v for k, v in r.items() if k not in drop} for r in seq
    ]
