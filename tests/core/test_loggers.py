"""Experiment trackers, read back offline with each library's own reader: TensorBoard event
files (event_accumulator), the MLflow local file store (MlflowClient), and the W&B offline
run folder (its ``.wandb`` record log, parsed with W&B's protobuf ``Record``)."""

import glob
import json
import struct
import subprocess
import sys

import pytest
import torch

from hierlens.core.atomic_io import read_jsonl, write_checked_jsonl
from hierlens.core.loggers import MissingExtraError
from hierlens.core.trackers import make_logger
from hierlens.models import ModelConfig, TrainConfig, build_transformer, get_task, train
from hierlens.models.run import Run
from hierlens.models.tracker_paths import TrackerPaths

TASK = get_task("dyck", max_depth=4, max_length=12)
MODEL = ModelConfig.for_task(TASK, d_model=16, n_layers=1, n_heads=2, d_mlp=32, seed=1)
CFG = TrainConfig(
    steps=20,
    batch_size=8,
    lr=3e-3,
    warmup_steps=2,
    log_every=5,
    eval_every=10,
    eval_n=8,
    eval_splits=("test_id",),
    checkpoint_every=10,
    train_pool=100,
    device="cpu",
)


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _train(run_dir, cfg=CFG, **kwargs):
    model = build_transformer(MODEL, device="cpu")
    return train(model, TASK, cfg, run_dir, progress=False, **kwargs)


def _expected(run_dir):
    """``{name: [(step, value), ...]}`` from metrics.jsonl, the names trackers log."""
    out = {}
    for r in read_jsonl(Run(run_dir).metrics_path):
        for k, v in r.items():
            if k not in ("step", "split") and isinstance(v, (int, float)):
                out.setdefault(f"{r['split']}/{k}", []).append((r["step"], float(v)))
    return out


def _tb_scalars(log_dir):
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def _close(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert [s for s, _ in a[k]] == [s for s, _ in b[k]], k
        assert [v for _, v in a[k]] == pytest.approx([v for _, v in b[k]], rel=1e-6), k


def test_tensorboard_scalars_equal_metrics_jsonl(tmp_path):
    run_dir = tmp_path / "run"
    _train(run_dir, CFG.replace(log_to=("tensorboard",)))
    expected = _expected(run_dir)
    assert "train/loss" in expected and "test_id/closing_acc" in expected
    _close(_tb_scalars(Run(run_dir).trackers("train").tensorboard_dir), expected)


def test_tensorboard_resume_continues_without_duplicates(tmp_path):
    run_dir = tmp_path / "run"
    cfg = CFG.replace(log_to=("tensorboard",))
    _train(run_dir, cfg, stop_at=13)  # checkpoint at 10; records at 15 are dropped on resume
    _train(run_dir, cfg)
    _close(_tb_scalars(Run(run_dir).trackers("train").tensorboard_dir), _expected(run_dir))


def _mlflow_client(paths):
    from mlflow.tracking import MlflowClient

    saved = json.loads(paths.mlflow_id_path.read_text())
    return MlflowClient(tracking_uri=saved["tracking_uri"]), saved["run_id"]


def _mlflow_metrics(client, run_id, keys):
    return {
        k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys
    }


def test_mlflow_metrics_params_artifacts_and_resume(tmp_path):
    run_dir = tmp_path / "run"
    cfg = CFG.replace(log_to=("mlflow",))
    _train(run_dir, cfg, stop_at=10)
    paths = Run(run_dir).trackers("train")
    first_id = json.loads(paths.mlflow_id_path.read_text())["run_id"]
    _train(run_dir, cfg)
    client, run_id = _mlflow_client(paths)
    assert run_id == first_id  # the resumed training continued the same MLflow run
    expected = _expected(run_dir)
    _close(_mlflow_metrics(client, run_id, expected), expected)
    run = client.get_run(run_id)
    assert run.data.params["train.lr"] == str(cfg.lr)
    assert run.data.params["task.name"] == "dyck"
    assert run.info.status == "FINISHED"
    # artifacts: the report and figures of the run, attached at the end
    from hierlens.analysis.export import log_run_artifacts

    Run(run_dir).report_path.write_text("<html><body>report</body></html>")
    Run(run_dir).figures_dir.mkdir()
    (Run(run_dir).figures_dir / "curve.png").write_bytes(b"\x89PNG fake")
    log_run_artifacts(run_dir, ("mlflow",))
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.html", "figures"} <= names
    assert [a.path for a in client.list_artifacts(run_id, "figures")] == ["figures/curve.png"]


def _wandb_records(path):
    """The protobuf records of a W&B offline ``.wandb`` file (a LevelDB-style log: a 7-byte
    header, then 32 KiB blocks of chunks with a 7-byte header: crc, length, type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    with open(path, "rb") as fh:
        data = fh.read()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        buf += chunk
        if kind in (1, 4):  # full or last chunk
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            yield rec


def _wandb_history(paths):
    """``({name: [(step, value)]}, run ids, config keys)`` over the offline run folders.

    ``run.finish()`` hands the last records to W&B's service process, which may still be
    writing them; ``wandb.teardown()`` waits for it, so the files are read whole."""
    import wandb

    wandb.teardown()
    out, ids, config = {}, set(), set()
    for f in sorted(glob.glob(str(paths.wandb_dir / "wandb" / "offline-run-*" / "*.wandb"))):
        for rec in _wandb_records(f):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                ids.add(rec.run.run_id)
            elif kind == "config":
                config |= {u.key for u in rec.config.update}
            elif kind == "history":
                row = {
                    i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in rec.history.item
                }
                for k, v in row.items():
                    if not k.startswith("_") and k != "step":
                        out.setdefault(k, []).append((row["step"], float(v)))
    return out, ids, config


def test_wandb_offline_history_and_resume(tmp_path):
    run_dir = tmp_path / "run"
    cfg = CFG.replace(log_to=("wandb",))
    _train(run_dir, cfg, stop_at=10)
    _train(run_dir, cfg)
    paths = Run(run_dir).trackers("train")
    history, ids, config = _wandb_history(paths)
    assert ids == {paths.wandb_id_path.read_text().strip()}  # both processes: one W&B run
    assert {"task", "model", "train"} <= config
    _close(history, _expected(run_dir))


def test_sae_training_logs_each_sae(tmp_path):
    from hierlens.sae import TopKSAE, train_saes

    torch.manual_seed(0)
    x = torch.randn(256, 8)
    saes = [TopKSAE(d_in=8, d_sae=16, k=k, seed=k) for k in (2, 4)]
    result = train_saes(
        saes,
        x,
        steps=6,
        batch_size=32,
        log_every=2,
        device="cpu",
        progress=False,
        log_to=("tensorboard",),
        log_dir=tmp_path / "tr",
    )
    got = _tb_scalars(TrackerPaths(tmp_path / "tr").tensorboard_dir)
    for r in result.history:
        assert (r["step"], pytest.approx(r["loss"], rel=1e-6)) in got[f"sae{r['sae']}/loss"]
    assert [s for s, _ in got["sae1/fvu"]] == [2, 4, 6]


def test_log_to_without_a_folder_is_an_error():
    from hierlens.sae import TopKSAE, train_saes

    with pytest.raises(ValueError, match="log_dir"):
        train_saes(
            [TopKSAE(d_in=4, d_sae=8, k=2)],
            torch.randn(16, 4),
            steps=1,
            batch_size=8,
            progress=False,
            log_to="tensorboard",
            device="cpu",
        )


def test_unknown_tracker_is_a_value_error():
    with pytest.raises(ValueError, match="unknown tracker"):
        TrainConfig(log_to=("neptune",))


def test_export_equals_logging_during_the_run(tmp_path):
    from hierlens.analysis.cli.main import main

    run_dir = tmp_path / "run"
    _train(run_dir, CFG.replace(log_to=("tensorboard",)))
    write_checked_jsonl(  # a tracking record as track() writes it
        Run(run_dir).tracking_path,
        [{"step": 10, "tree_score": 0.25, "main_metric": "accuracy", "settings": {}}],
    )
    assert main(["export", str(run_dir), "--to", "tensorboard", "--to", "mlflow"]) == 0
    exported = _tb_scalars(Run(run_dir).trackers("export").tensorboard_dir)
    assert exported.pop("track/tree_score") == [(10, 0.25)]
    _close(exported, _tb_scalars(Run(run_dir).trackers("train").tensorboard_dir))
    client, run_id = _mlflow_client(Run(run_dir).trackers("export"))
    expected = _expected(run_dir)
    _close(_mlflow_metrics(client, run_id, expected), expected)


def test_missing_extra_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now fails
    with pytest.raises(MissingExtraError) as err:
        make_logger(("wandb",), TrackerPaths(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and "wandb" in msg and "hierlens[tracking]" in msg
    assert not (tmp_path / "wandb_run_id").exists()


def test_import_hierlens_imports_no_tracker():
    code = (
        "import sys, hierlens, hierlens.models, hierlens.sae, hierlens.probes, hierlens.analysis\n"
        "import hierlens.models.train, hierlens.core.loggers, hierlens.analysis.export\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('wandb', 'mlflow', 'tensorboard')"
        " or m.startswith('torch.utils.tensorboard')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
