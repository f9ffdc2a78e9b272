import json
import subprocess
import sys

from hierlens.analysis.cli import main
from hierlens.models import list_checkpoints, open_run

TINY = [
    "--task", "dyck", "--task-param", "max_length=12", "--task-param", "max_depth=4",
    "--d-model", "16", "--n-layers", "1", "--n-heads", "2",
    "--steps", "20", "--batch-size", "8", "--eval-every", "10", "--eval-n", "16",
    "--checkpoint-every", "10", "--train-pool", "100", "--log-every", "5",
    "--device", "cpu", "--no-progress",
]


def test_train_then_eval_end_to_end(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--run-dir", str(run_dir)]) == 0
    run = open_run(run_dir)
    assert run.task.max_length == 12 and run.model_config.d_model == 16
    assert list_checkpoints(run_dir) == [10, 20]
    assert [r["step"] for r in run.metrics("test_id")] == [0, 10, 20]
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--n", "32", "--json", "--step", "10"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"test_id", "test_ood"} and out["test_id"]["n"] == 32
    assert 0.0 <= out["test_ood"]["closing_acc"] <= 1.0


def test_clear_errors(tmp_path, caplog):
    assert main(["train", "--task", "dyk", "--run-dir", str(tmp_path / "x")]) == 2
    assert "did you mean 'dyck'" in caplog.text
    assert main(["train", "--task", "dyck", "--task-param", "depth=3", "--run-dir", str(tmp_path / "y")]) == 2
    assert "no parameter 'depth'" in caplog.text
    assert main(["train", "--task", "dyck", "--task-param", "max_depth=abc", "--run-dir", str(tmp_path / "z")]) == 2
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "not a hierlens run directory" in caplog.text


def test_console_script_help_and_tasks():
    exe = [sys.executable, "-m", "hierlens.analysis.cli"]
    out = subprocess.run([*exe, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("tasks", "train", "eval", "demo"):
        assert command in out
    out = subprocess.run([*exe, "tasks"], capture_output=True, text=True, check=True).stdout
    assert "dyck:" in out and "max_depth (int) = 8" in out
    bad = subprocess.run([*exe, "train", "--steps", "x"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid int value" in bad.stderr
