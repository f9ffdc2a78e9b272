"""A run directory from an untrusted source: symbolic links planted inside it are never
followed, for writes, deletes or reads; each is a one-line error naming the link (exit 2) and
the file or folder outside the run is left exactly as it was."""

from __future__ import annotations

import json
import shutil

import pytest

from hierlens.analysis.cli import main
from hierlens.analysis.pipeline import run as run_pipeline
from hierlens.models import ModelConfig, TrainConfig, build_transformer, get_task, train
from hierlens.models.run import Run

from ._stages import MODEL, TASK_PARAMS, TRAIN, pipeline_config

TASK = get_task("dyck", **TASK_PARAMS)
MCFG = ModelConfig.for_task(TASK, seed=0, **MODEL)


def _train(run_dir, **kwargs):
    model = build_transformer(MCFG, device="cpu")
    return train(model, TASK, TrainConfig(**TRAIN), run_dir, model_config=MCFG, progress=False, **kwargs)  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A small pipeline run (trained, captured, SAEs, probes, tracking, report)."""
    out = tmp_path_factory.mktemp("finished")
    return run_pipeline({**pipeline_config(str(out)), "report": True}, progress=False)


@pytest.fixture
def copy(finished, tmp_path):
    return Run(shutil.copytree(finished, tmp_path / "R", symlinks=True))


def _one_line(caplog, text: str) -> None:
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert errors and text in errors[-1].getMessage(), caplog.text
    assert "Traceback" not in caplog.text


def test_a_linked_lock_file_is_not_written_through(copy, tmp_path, caplog):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    copy.lock_path.unlink(missing_ok=True)
    copy.lock_path.symlink_to(victim)
    argv = ["probe", str(copy.path), "--hooks", "blocks.0.hook_resid_post"]
    assert main([*argv, "--labels", "is_close", "--ks", "1", "--no-progress"]) == 2
    _one_line(caplog, str(copy.lock_path))
    assert victim.read_text() == "precious\n"


def test_a_linked_metrics_file_is_not_appended_to(tmp_path, caplog):
    run = Run(tmp_path / "R")
    _train(run.path, stop_at=10)
    victim = tmp_path / "victim.jsonl"  # valid metrics, so nothing but the link is wrong
    shutil.copy(run.metrics_path, victim)
    before = victim.read_bytes()
    run.metrics_path.unlink()
    run.metrics_path.symlink_to(victim)
    argv = ["train", "--task", "dyck", "--run-dir", str(run.path), "--device", "cpu"]
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TRAIN.items() if k != "device"]
    model = [f"--{k.replace('_', '-')}={v}" for k, v in MODEL.items()]
    params = [x for k, v in TASK_PARAMS.items() for x in ("--task-param", f"{k}={v}")]
    assert main([*argv, *flags, *model, *params, "--no-progress"]) == 2
    _one_line(caplog, str(run.metrics_path))
    assert victim.read_bytes() == before


def test_capture_overwrite_does_not_delete_through_a_linked_step_folder(copy, tmp_path, caplog):
    """``activations/step_N`` linked to a folder outside the run, with a manifest crafted to
    name that folder's contents: ``capture --overwrite`` (which the capture's own errors
    suggest) deletes nothing there."""
    outside = tmp_path / "outside"
    shutil.copytree(copy.activation_dirs()[20], outside)
    (outside / "precious").mkdir()
    (outside / "precious" / "thesis.safetensors").write_bytes(b"years of work")
    manifest = json.loads((outside / "manifest.json").read_text())
    manifest["hooks"]["blocks.0.hook_resid_post"]["dir"] = "precious"
    (outside / "manifest.json").write_text(json.dumps(manifest))
    step_dir = copy.activations_dir(20)
    shutil.rmtree(step_dir)
    step_dir.symlink_to(outside, target_is_directory=True)
    before = sorted(str(p.relative_to(outside)) for p in outside.rglob("*"))
    argv = ["capture", str(copy.path), "--hooks", "blocks.*.hook_resid_post", "--overwrite"]
    assert main([*argv, "--n", "16", "--no-progress"]) == 2
    _one_line(caplog, str(step_dir))
    assert sorted(str(p.relative_to(outside)) for p in outside.rglob("*")) == before
    assert (outside / "precious" / "thesis.safetensors").read_bytes() == b"years of work"


def test_a_linked_sae_folder_is_neither_written_nor_read(copy, tmp_path, caplog):
    outside = tmp_path / "outside_sae"
    sae_dir = copy.sae_dir("topk_w8_k2")
    shutil.copytree(sae_dir, outside)
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    shutil.rmtree(sae_dir)
    sae_dir.symlink_to(outside, target_is_directory=True)
    argv = ["fit-sae", str(copy.path), "--hook", "blocks.0.hook_resid_post", "--widths", "8"]
    assert main([*argv, "--ks", "2", "--steps", "3", "--n", "16", "--no-progress"]) == 2
    _one_line(caplog, str(sae_dir))
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before
    assert main(["report", str(copy.path)]) == 0  # the SAE section names the link instead
    html = copy.report_path.read_text()
    assert str(sae_dir) in html and "symbolic link" in html


def test_the_report_neither_reads_nor_writes_through_links(copy, tmp_path, caplog):
    secret = tmp_path / "secret"
    secret.mkdir()
    row = {"hook": "blocks.0.hook_resid_post", "feature": "SECRET-FEATURE", "k": 1}
    (secret / "results.jsonl").write_text(json.dumps({**row, "selection": "x", "f1": 1.0}) + "\n")
    shutil.rmtree(copy.probes_dir)
    copy.probes_dir.symlink_to(secret, target_is_directory=True)
    victim = tmp_path / "victim.html"
    victim.write_text("precious\n")
    copy.report_path.unlink()
    copy.report_path.symlink_to(victim)
    assert main(["report", str(copy.path)]) == 2
    _one_line(caplog, str(copy.report_path))
    assert victim.read_text() == "precious\n" and copy.report_path.is_symlink()
    copy.report_path.unlink()  # without the linked output, the report is written ...
    assert main(["report", str(copy.path)]) == 0
    html = copy.report_path.read_text()
    assert "SECRET-FEATURE" not in html  # ... and nothing read through the linked folder
    assert str(copy.probes_dir) in html  # the probes section names the link instead


def test_a_linked_checkpoint_folder_is_refused_by_readers_and_writers(tmp_path, caplog):
    run = Run(tmp_path / "R")
    _train(run.path)
    outside = shutil.copytree(run.checkpoint_dir(20), tmp_path / "outside_ckpt")
    shutil.rmtree(run.checkpoint_dir(20))
    run.checkpoint_dir(20).symlink_to(outside, target_is_directory=True)
    assert main(["eval", str(run.path), "--n", "4", "--device", "cpu"]) == 2
    assert str(run.checkpoint_dir(20)) in caplog.text and "Traceback" not in caplog.text


def test_a_linked_trackers_folder_is_not_written_through(tmp_path, caplog):
    from ._runs import train_argv

    outside = tmp_path / "outside"
    outside.mkdir()
    run = Run(tmp_path / "R")
    run.path.mkdir()
    (run.path / "trackers").symlink_to(outside, target_is_directory=True)
    assert main([*train_argv(run.path), "--log-to", "tensorboard"]) == 0  # the run goes on
    assert list(outside.iterdir()) == []
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and str(run.path / "trackers") in errors[0]


def test_a_json_nesting_bomb_is_a_corrupt_file_not_a_crash(tmp_path, caplog):
    from hierlens.core.atomic_io import write_checked_bytes

    run = Run(tmp_path / "R")
    write_checked_bytes(run.config_path, b"[" * 200_000 + b"]" * 200_000)
    assert main(["eval", str(run.path)]) == 2
    assert "nested too deeply" in caplog.text and "Traceback" not in caplog.text
