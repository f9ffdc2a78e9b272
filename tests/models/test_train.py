import json
import logging
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from hierlens.core.checksums import CorruptFileError
from hierlens.core.optim import lr_at
from hierlens.models import (
    ModelConfig,
    TrainConfig,
    build_transformer,
    get_task,
    latest_valid_checkpoint,
    list_checkpoints,
    load_checkpoint,
    open_run,
    train,
)
from hierlens.models.run_load import checkpoint_path
from hierlens.models.train_config import scheduled_steps

TASK = get_task("dyck", max_depth=4, max_length=12)
MODEL = ModelConfig.for_task(TASK, d_model=16, n_layers=1, n_heads=2, d_mlp=32, seed=1)
CFG = TrainConfig(
    steps=40,
    batch_size=8,
    lr=3e-3,
    warmup_steps=5,
    log_every=5,
    eval_every=20,
    eval_n=16,
    checkpoint_every=10,
    train_pool=200,
    device="cpu",
)


def _train(run_dir, cfg=CFG, **kwargs):
    model = build_transformer(MODEL, device="cpu")
    result = train(model, TASK, cfg, run_dir, progress=False, **kwargs)
    return model, result


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """One uninterrupted 40-step run shared by the resume tests."""
    run = tmp_path_factory.mktemp("straight")
    model, result = _train(run)
    return run, model, result


def test_run_directory_contents(straight):
    run_dir, _, result = straight
    assert result.step == 40
    assert list_checkpoints(run_dir) == [10, 20, 30, 40]
    run = open_run(run_dir)
    assert run.task == TASK and run.model_config == MODEL and run.train_config == CFG
    records = run.metrics()
    assert [r["step"] for r in run.metrics("train")] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert [r["step"] for r in run.metrics("test_ood")] == [0, 20, 40]
    assert all(math.isfinite(r["loss"]) for r in records)
    assert {"closing_acc", "seq_acc", "loss", "n"} <= set(run.metrics("test_id")[0])


def test_stop_and_resume_is_bitwise_identical(straight, tmp_path):
    _, reference, _ = straight
    _, first = _train(tmp_path, stop_at=20)
    assert first.step == 20 and list_checkpoints(tmp_path) == [10, 20]
    model, second = _train(tmp_path)
    assert second.step == 40
    assert _same_weights(model, reference)
    # metrics of the resumed run equal those of the straight run
    ref = [json.loads(line) for line in (straight[0] / "metrics.jsonl").read_text().splitlines()]
    got = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rs]  # noqa: E731
    assert strip(got) == strip(ref)


def test_killed_process_resumes_bitwise(straight, tmp_path):
    """A real SIGKILL between checkpoints (step 23) leaves a run that resumes exactly."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        import torch
        torch.set_num_threads({torch.get_num_threads()})  # bitwise equality needs the same threads
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_train import _train
        def kill(step):
            if step == 23:
                os.kill(os.getpid(), signal.SIGKILL)
        _train({str(tmp_path)!r}, callback=kill)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert list_checkpoints(tmp_path) == [10, 20]
    model, result = _train(tmp_path)
    assert result.step == 40 and _same_weights(model, straight[1])


def test_corrupt_checkpoint_is_reported_and_skipped(straight, tmp_path, caplog):
    _train(tmp_path, stop_at=30)
    bad = checkpoint_path(tmp_path, 30) / "model.safetensors"
    bad.write_bytes(bad.read_bytes()[:100])  # truncate
    with pytest.raises(CorruptFileError, match="model.safetensors"):
        load_checkpoint(checkpoint_path(tmp_path, 30))
    with caplog.at_level(logging.WARNING):
        ckpt = latest_valid_checkpoint(tmp_path)
    assert ckpt.step == 20
    assert str(checkpoint_path(tmp_path, 30)) in caplog.text
    model, result = _train(tmp_path)  # resumes from 20, rewrites 30 and 40
    assert result.step == 40 and _same_weights(model, straight[1])


def test_flipped_byte_fails_checksum(straight, tmp_path):
    _train(tmp_path, stop_at=10)
    f = checkpoint_path(tmp_path, 10) / "state.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="checksum"):
        load_checkpoint(checkpoint_path(tmp_path, 10))


def test_existing_run_is_protected(straight, tmp_path):
    _train(tmp_path, stop_at=10)
    with pytest.raises(ValueError, match="different configuration"):
        _train(tmp_path, cfg=CFG.replace(lr=1e-2))
    with pytest.raises(ValueError, match="already holds a run"):
        _train(tmp_path, resume=False)
    assert list_checkpoints(tmp_path) == [10]  # nothing lost
    _, result = _train(tmp_path, resume=False, overwrite=True, stop_at=10)
    assert result.step == 10


def test_load_model_from_run(straight):
    run_dir, model, _ = straight
    loaded = open_run(run_dir).load_model(device="cpu")
    assert _same_weights(loaded, model)
    with pytest.raises(ValueError, match="available steps"):
        open_run(run_dir).load_model(step=15)


def test_bad_inputs_fail_before_training(tmp_path):
    bidir = build_transformer(MODEL.replace(attention_dir="bidirectional"))
    with pytest.raises(ValueError, match="causal"):
        train(bidir, TASK, CFG, tmp_path / "a", progress=False)
    small = build_transformer(MODEL.replace(n_ctx=5))
    with pytest.raises(ValueError, match="n_ctx"):
        train(small, TASK, CFG, tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="eval_splits"):
        TrainConfig(eval_splits=("dev",))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_lr_schedule_closed_forms():
    kw = dict(base_lr=1.0, total_steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, schedule="cosine", **kw) == pytest.approx(0.1)
    assert lr_at(9, schedule="cosine", **kw) == pytest.approx(1.0)
    assert lr_at(60, schedule="cosine", **kw) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(110, schedule="cosine", **kw) == pytest.approx(0.1)
    assert lr_at(60, schedule="linear", **kw) == pytest.approx(0.55)
    assert lr_at(100, schedule="constant", **kw) == 1.0
    assert scheduled_steps(100, every=40) == [40, 80, 100]
    steps = scheduled_steps(1000, log_count=4, include_zero=True)
    assert steps == [0, 1, 10, 100, 1000]


# ----------------------------------------------------------------------------- loss_on="sequence"
def test_next_token_targets_against_a_loop():
    from hierlens.models.batches import next_token_targets
    from hierlens.models.tasks import IGNORE_INDEX

    tokens = torch.tensor([[5, 6, 7, 8, 0, 0], [1, 2, 3, 4, 5, 6], [9, 9, 0, 0, 0, 0]])
    lengths = torch.tensor([4, 6, 2])
    got = next_token_targets(tokens, lengths)
    for b in range(3):
        for t in range(6):
            want = int(tokens[b, t + 1]) if t + 1 < int(lengths[b]) else IGNORE_INDEX
            assert int(got[b, t]) == want


def test_sequence_loss_is_the_language_model_loss(tmp_path):
    """The logged loss of the first step is the cross-entropy of the untrained model over
    every next token of the step's batch (and differs from the output-only loss)."""
    import torch.nn.functional as F

    from hierlens.models.batches import BatchSampler
    from hierlens.models.tasks import IGNORE_INDEX

    task = get_task("question_formation")
    model_cfg = ModelConfig.for_task(task, d_model=16, n_layers=1, n_heads=2, d_mlp=32, seed=3)
    losses = {}
    for loss_on in ("targets", "sequence"):
        cfg = TrainConfig(
            steps=1,
            batch_size=6,
            log_every=1,
            eval_every=0,
            checkpoint_every=0,
            train_pool=50,
            device="cpu",
            loss_on=loss_on,
        )
        reference = build_transformer(model_cfg, device="cpu")
        tokens, targets, mask = BatchSampler(task, cfg, torch.device("cpu"))(0)[:3]
        with torch.no_grad():
            logits = reference(tokens, attention_mask=mask.long())
        if loss_on == "sequence":
            want_targets = torch.full_like(tokens, IGNORE_INDEX)
            for b in range(tokens.shape[0]):
                n = int(mask[b].sum())
                want_targets[b, : n - 1] = tokens[b, 1:n]
            assert torch.equal(targets, want_targets)
        want = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX
        )
        model = build_transformer(model_cfg, device="cpu")
        train(model, task, cfg, tmp_path / loss_on, progress=False)
        rec = json.loads((tmp_path / loss_on / "metrics.jsonl").read_text().splitlines()[0])
        assert rec["loss"] == pytest.approx(float(want), rel=1e-4)
        losses[loss_on] = rec["loss"]
    assert losses["sequence"] != pytest.approx(losses["targets"], rel=1e-3)


def test_sequence_loss_needs_a_next_token_task(tmp_path):
    with pytest.raises(ValueError, match="loss_on"):
        TrainConfig(loss_on="all")
    task = get_task("hierarchical_filtering", q=2, depth=2, subtask="root")
    model = build_transformer(ModelConfig.for_task(task, d_model=16, n_layers=1, n_heads=2))
    cfg = TrainConfig(steps=1, device="cpu", loss_on="sequence", eval_every=0, train_pool=20)
    with pytest.raises(ValueError, match="next_token"):
        train(model, task, cfg, tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_checkpoint_with_a_foreign_optimizer_state_is_a_clear_error(tmp_path):
    """A checkpoint whose optimizer state does not fit the model (another layout or another
    model's parameters) is a ValueError naming the run, before any step."""
    from hierlens.models import save_checkpoint

    cfg = CFG.replace(steps=2, checkpoint_every=1, eval_every=0)
    model, _ = _train(tmp_path, cfg=cfg, stop_at=1)
    save_checkpoint(checkpoint_path(tmp_path, 1), 1, model, {"step": torch.ones(1)})
    with pytest.raises(ValueError, match="optimizer state") as info:
        _train(tmp_path, cfg=cfg)
    assert str(tmp_path) in str(info.value)
    assert list_checkpoints(tmp_path) == [1]
