"""train_many against train run separately, model by model."""

import json
import logging

import pytest
import torch

from hierlens.models import ModelConfig, TrainConfig, build_transformer, get_task, open_run, train
from hierlens.models.train_many import train_many

TASK = get_task("dyck", max_depth=4, max_length=12)
MODEL = ModelConfig.for_task(TASK, d_model=16, n_layers=1, n_heads=2, d_mlp=32)
CFG = TrainConfig(
    steps=12,
    batch_size=8,
    lr=3e-3,
    warmup_steps=3,
    log_every=4,
    eval_every=6,
    eval_n=8,
    checkpoint_every=6,
    train_pool=100,
    device="cpu",
)


def _model(seed, cfg=MODEL):
    return build_transformer(cfg.replace(seed=seed), device="cpu")


# The key bias shifts every score of a query row by the same amount, which the softmax
# removes: its gradient is zero in exact arithmetic, so AdamW turns float rounding in it into
# steps of size lr in either program. It does not change what the model computes and is left
# out of the weight comparison (the loss records, which it cannot change, still compare).
_NULL_GRADIENT = ".attn.k.bias"


def _max_diff(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k] - sb[k]).abs().max()) for k in sa if _NULL_GRADIENT not in k)


def _records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "tokens_per_s"} for x in lines]


def _close_records(got, want):
    assert [(r["step"], r["split"]) for r in got] == [(r["step"], r["split"]) for r in want]
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for k in g:
            if isinstance(w[k], str):
                assert g[k] == w[k]
            else:
                assert g[k] == pytest.approx(w[k], rel=1e-4, abs=1e-5), (g, k)


CONFIGS = [
    CFG.replace(seed=0),
    CFG.replace(seed=1),
    CFG.replace(seed=0, lr=1e-2, weight_decay=0.1, schedule="linear", grad_clip=None, steps=9),
]


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """Each configuration trained alone with train(): the reference."""
    root = tmp_path_factory.mktemp("alone")
    models = []
    for i, cfg in enumerate(CONFIGS):
        m = _model(i)
        train(m, TASK, cfg, root / f"r{i}", progress=False)
        models.append(m)
    return root, models


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    """Seeds 0 and 1, and a third model with another lr, weight decay, schedule, clipping and
    step count (and the data seed of the first: they share a pool), trained fused."""
    root = tmp_path_factory.mktemp("fused")
    models = [_model(i) for i in range(3)]
    results = train_many(models, TASK, CONFIGS, [root / f"r{i}" for i in range(3)], progress=False)
    return root, models, results


def test_fused_equals_separate_runs(fused, alone):
    root, models, results = fused
    ref_root, ref = alone
    for i, cfg in enumerate(CONFIGS):
        assert results[i].step == cfg.steps and results[i].stopped is None
        assert _max_diff(models[i], ref[i]) <= 1e-5
        assert _max_diff(models[i], _model(i)) > 1e-3  # it did train
        _close_records(_records(root / f"r{i}"), _records(ref_root / f"r{i}"))
        run, want = open_run(root / f"r{i}"), open_run(ref_root / f"r{i}")
        assert run.steps == want.steps
        assert run.train_config == cfg and run.model_config == MODEL.replace(seed=i)
        first = run.steps[0]
        got_m = run.load_model(step=first, device="cpu")
        want_m = want.load_model(step=first, device="cpu")
        assert _max_diff(got_m, want_m) <= 1e-5


def test_train_resumes_a_fused_checkpoint(alone, tmp_path):
    """The optimizer state a fused checkpoint saves is what train() resumes from."""
    run_dir = tmp_path / "r"
    train_many([_model(2)], TASK, [CONFIGS[2]], [run_dir], progress=False, stop_at=6)
    m = _model(2)
    train(m, TASK, CONFIGS[2], run_dir, progress=False)
    assert _max_diff(m, alone[1][2]) <= 1e-5


def test_resume_after_a_kill_equals_an_uninterrupted_run(alone, tmp_path):
    """Interrupted at step 8 (checkpoints at 6), each model resumes from its own newest
    checkpoint; a model with no checkpoint (deleted here) starts again."""
    dirs = [tmp_path / f"r{i}" for i in range(3)]
    first = train_many(
        [_model(i) for i in range(3)], TASK, CONFIGS, dirs, progress=False, stop_at=8
    )
    assert [r.step for r in first] == [8, 8, 8]
    import shutil

    shutil.rmtree(open_run(dirs[1]).checkpoints_dir)  # model 1 starts again from step 0
    models = [_model(i) for i in range(3)]
    results = train_many(models, TASK, CONFIGS, dirs, progress=False)
    assert [r.step for r in results] == [c.steps for c in CONFIGS]
    for i in range(3):
        assert _max_diff(models[i], alone[1][i]) <= 1e-5
    # the records are those of train() stopped and resumed the same way
    ref = tmp_path / "ref"
    train(_model(0), TASK, CONFIGS[0], ref, progress=False, stop_at=8)
    train(_model(0), TASK, CONFIGS[0], ref, progress=False)
    _close_records(_records(dirs[0]), _records(ref))
    _close_records(_records(dirs[1]), _records(alone[0] / "r1"))


def test_diverging_model_is_stopped_and_the_others_finish(alone, tmp_path, caplog):
    bad = CFG.replace(seed=5, lr=1e6, grad_clip=None, warmup_steps=0)
    models = [_model(0), _model(5), _model(1)]
    dirs = [tmp_path / f"r{i}" for i in range(3)]
    results = train_many(models, TASK, [CONFIGS[0], bad, CONFIGS[1]], dirs, progress=False)
    assert results[1].stopped is not None and "diverged" in results[1].stopped
    assert results[1].step < bad.steps
    assert "leaves the stack" in caplog.text
    assert all(torch.isfinite(p).all() for p in models[1].parameters())
    assert results[0].stopped is None and results[2].stopped is None
    assert _max_diff(models[0], alone[1][0]) <= 1e-5
    assert _max_diff(models[2], alone[1][1]) <= 1e-5
    _close_records(_records(dirs[2]), _records(alone[0] / "r1"))


def test_shapes_make_separate_stacks(tmp_path, caplog):
    models = [_model(0), _model(0, MODEL.replace(n_layers=2)), _model(1)]
    cfg = CFG.replace(steps=2, eval_every=0, checkpoint_every=0)
    with caplog.at_level(logging.INFO, logger="hierlens.models.train_many"):
        results = train_many(
            models, TASK, cfg, [tmp_path / f"r{i}" for i in range(3)], progress=False
        )
    assert "3 model(s) in 2 stack(s)" in caplog.text
    assert [r.step for r in results] == [2, 2, 2]


def test_bad_inputs_fail_before_work(tmp_path):
    with pytest.raises(ValueError, match="run_dirs"):
        train_many([_model(0)], TASK, CFG, [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ValueError, match="configs"):
        train_many([_model(0)], TASK, [CFG, CFG], [tmp_path / "a"])
    with pytest.raises(ValueError, match="share a run directory"):
        train_many([_model(0), _model(1)], TASK, CFG, [tmp_path / "a", tmp_path / "a"])
    with pytest.raises(TypeError, match="TrainConfig"):
        train_many([_model(0)], TASK, [{"steps": 3}], [tmp_path / "a"])
    with pytest.raises(ValueError, match="n_ctx"):
        train_many([_model(0, MODEL.replace(n_ctx=5))], TASK, CFG, [tmp_path / "a"])
    with pytest.raises(TypeError, match="TL-native"):
        train_many([torch.nn.Linear(3, 3)], TASK, CFG, [tmp_path / "a"])
    assert not (tmp_path / "a").exists()


def test_stacked_evaluation_equals_each_models_own(monkeypatch):
    from hierlens.models.evaluate_many import evaluate_stack
    from hierlens.models.fused import fused_spec, native_params

    models = [_model(s) for s in range(3)]
    each = [native_params(m) for m in models]
    params = {k: torch.stack([p[k].detach() for p in each]) for k in each[0]}
    examples = TASK.sample(20, "test_ood", 3)
    got = evaluate_stack(TASK, fused_spec(models[0]), params, examples, batch_size=8)
    for i, model in enumerate(models):
        want = TASK.evaluate(model, examples=examples, batch_size=8, device="cpu")
        assert got[i].keys() == want.keys()
        for k in want:
            assert got[i][k] == pytest.approx(want[k], rel=1e-5), k
    assert got[0] != got[1]  # the models differ
    monkeypatch.setattr(type(TASK), "evaluation_totals", lambda self, *a, **k: {})
    with pytest.raises(ValueError, match="own evaluation"):
        evaluate_stack(TASK, fused_spec(models[0]), params, examples)
