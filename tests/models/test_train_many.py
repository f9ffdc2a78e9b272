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
    with pytest.raises(TypeError, match="neither a TL-native"):
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


CHOMSKY = get_task("reverse_string", n_train=5, n_test=8)
CHOMSKY_CFG = CFG.replace(steps=8, batch_size=8, eval_every=4, checkpoint_every=4, grad_clip=1.0)


def _arch(arch, seed):
    from hierlens.models.architectures import ArchConfig, build_model

    return build_model(
        ArchConfig.for_task(
            CHOMSKY,
            arch=arch,
            d_model=12,
            n_layers=1,
            n_heads=2,
            memory_size=6,
            memory_dim=3,
            seed=seed,
        )  # fmt: skip
    )


@pytest.mark.parametrize("arch", ["rnn", "lstm", "stack_rnn", "tape_rnn", "transformer"])
def test_chomsky_architectures_fused_equal_separate_runs(arch, tmp_path):
    """The architectures of build_model stack through vmap: seeds and learning rates fused
    give each run what train() gives it alone (weights, records, checkpoints)."""
    # two leave after step 6: the last steps run a stack of one (its forward without vmap)
    runs = [(0, 3e-3, 8), (1, 3e-3, 6), (2, 1e-2, 6)]
    configs = [CHOMSKY_CFG.replace(seed=s, lr=lr, steps=n) for s, lr, n in runs]
    alone = [_arch(arch, s) for s in range(3)]
    for i, (m, c) in enumerate(zip(alone, configs)):
        train(m, CHOMSKY, c, tmp_path / f"a{i}", progress=False)
    fused = [_arch(arch, s) for s in range(3)]
    results = train_many(fused, CHOMSKY, configs, [tmp_path / f"f{i}" for i in range(3)],
                         progress=False)  # fmt: skip
    tokens = torch.tensor(CHOMSKY.sample(6, "test_ood", 9)[0].tokens).unsqueeze(0)
    for i in range(3):
        assert results[i].step == configs[i].steps
        assert set(results[i].eval) == {"test_id", "test_ood"}
        # the encoder's key bias has a zero gradient in exact arithmetic (see above)
        diff = {
            k: float((v - alone[i].state_dict()[k]).abs().max())
            for k, v in fused[i].state_dict().items()
        }
        if arch == "transformer":
            for k in [k for k in diff if k.endswith("attn.qkv.bias")]:
                d = 12
                want, got = alone[i].state_dict()[k], fused[i].state_dict()[k]
                diff[k] = float(
                    torch.cat([got[:d] - want[:d], got[2 * d :] - want[2 * d :]]).abs().max()
                )
        assert max(diff.values()) <= 1e-5, diff
        assert _max_diff(fused[i], _arch(arch, i)) > 1e-3  # it did train
        with torch.no_grad():
            torch.testing.assert_close(fused[i](tokens), alone[i](tokens), atol=1e-5, rtol=1e-4)
        _close_records(_records(tmp_path / f"f{i}"), _records(tmp_path / f"a{i}"))
        assert open_run(tmp_path / f"f{i}").steps == [4, configs[i].steps]


def test_chomsky_stacks_form_per_architecture(tmp_path, caplog):
    models = [_arch("lstm", 0), _arch("stack_rnn", 0), _arch("lstm", 1), _arch("stack_rnn", 1)]
    cfg = CHOMSKY_CFG.replace(steps=2, eval_every=0, checkpoint_every=0)
    with caplog.at_level(logging.INFO, logger="hierlens.models.train_many"):
        train_many(models, CHOMSKY, cfg, [tmp_path / f"r{i}" for i in range(4)], progress=False)
    assert "4 model(s) in 2 stack(s)" in caplog.text


def test_recurrent_steps_equal_the_torch_cells():
    """The written-out cells (vmappable) compute exactly what nn.RNNCell / nn.LSTMCell do."""
    from hierlens.models.architectures.recurrent import lstm_step, rnn_step

    gen = torch.Generator().manual_seed(0)
    x, h, c = (torch.randn(5, n, generator=gen) for n in (7, 9, 9))
    rnn, lstm = torch.nn.RNNCell(7, 9), torch.nn.LSTMCell(7, 9)
    assert torch.equal(rnn_step(rnn, x, h), rnn(x, h))
    for got, want in zip(lstm_step(lstm, x, h, c), lstm(x, (h, c)), strict=True):
        assert torch.equal(got, want)


def test_compile_compiles_each_stack_forward(monkeypatch, tmp_path, alone):
    """TrainConfig.compile goes through torch.compile once per stack (again when a model
    leaves it); here a pass-through compiler, so the result is the eager one."""
    calls = []

    def record(fn, **kwargs):
        calls.append(kwargs)
        return fn

    monkeypatch.setattr(torch, "compile", record)
    cfgs = [c.replace(compile=True) for c in CONFIGS[1:]]  # 12 and 9 steps: one leaves early
    models = [_model(1), _model(2)]
    train_many(models, TASK, cfgs, [tmp_path / "a", tmp_path / "b"], progress=False)
    assert len(calls) == 2 and calls[0]["dynamic"] is True  # dynamic shapes on the CPU
    assert _max_diff(models[0], alone[1][1]) <= 1e-5
    assert _max_diff(models[1], alone[1][2]) <= 1e-5
