import json
import subprocess
import sys

import pytest

from hierlens.analysis.cli import main
from hierlens.core.atomic_io import read_json, read_jsonl
from hierlens.models import list_checkpoints, open_run

TINY = [
    "--task",
    "dyck",
    "--task-param",
    "max_length=12",
    "--task-param",
    "max_depth=4",
    "--d-model",
    "16",
    "--n-layers",
    "1",
    "--n-heads",
    "2",
    "--steps",
    "20",
    "--batch-size",
    "8",
    "--eval-every",
    "10",
    "--eval-n",
    "16",
    "--checkpoint-every",
    "10",
    "--train-pool",
    "100",
    "--log-every",
    "5",
    "--device",
    "cpu",
    "--no-progress",
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
    assert (
        main(
            ["train", "--task", "dyck", "--task-param", "depth=3", "--run-dir", str(tmp_path / "y")]
        )
        == 2
    )
    assert "no parameter 'depth'" in caplog.text
    assert (
        main(
            [
                "train",
                "--task",
                "dyck",
                "--task-param",
                "max_depth=abc",
                "--run-dir",
                str(tmp_path / "z"),
            ]
        )
        == 2
    )
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "not a hierlens run directory" in caplog.text


def test_console_script_help_and_tasks():
    exe = [sys.executable, "-m", "hierlens.analysis.cli"]
    out = subprocess.run([*exe, "--help"], capture_output=True, text=True, check=True).stdout
    for command in (
        "tasks",
        "train",
        "eval",
        "capture",
        "fit-sae",
        "probe",
        "tree-score",
        "track",
        "sweep",
        "report",
        "run",
        "demo",
    ):
        assert command in out
    out = subprocess.run([*exe, "tasks"], capture_output=True, text=True, check=True).stdout
    assert "dyck:" in out and "max_depth (int) = 8" in out
    bad = subprocess.run([*exe, "train", "--steps", "x"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid int value" in bad.stderr


def test_tree_score_and_track_commands(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    assert main(["tree-score", str(run_dir), "--n", "6", "--no-progress", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 0.0 <= out["parse_f1"] <= 1.0 and {
        "parse_f1_left",
        "parse_f1_right",
        "parse_f1_random",
    } <= set(out)
    assert (
        main(
            [
                "track",
                str(run_dir),
                "--n",
                "8",
                "--n-trees",
                "4",
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert 0.0 <= summary["final_id"] <= 1.0
    assert len(open_run(run_dir).tracking_path.read_text().splitlines()) == 2


def test_capture_command_and_checkpoint_capture(tmp_path):
    import torch

    from hierlens.models import ActivationStore, capture_checkpoints

    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--run-dir", str(run_dir)]) == 0
    args = [
        "capture",
        str(run_dir),
        "--hooks",
        "blocks.*.hook_resid_post",
        "--n",
        "12",
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert main([*args, "--all-checkpoints", "true"]) == 0
    for step in (10, 20):
        store = ActivationStore.open(open_run(run_dir).activations_dir(step))
        assert store.hooks == ["blocks.0.hook_resid_post"] and "depth" in store.labels
    # the CLI stores equal a direct capture of the same checkpoint; rerunning resumes (no change)
    again = capture_checkpoints(
        run_dir, "blocks.0.hook_resid_post", steps=[20], n=12, device="cpu", progress=False
    )
    assert torch.equal(again[20]["blocks.0.hook_resid_post"], store["blocks.0.hook_resid_post"])
    first = ActivationStore.open(open_run(run_dir).activations_dir(10))["blocks.0.hook_resid_post"]
    assert not torch.equal(first, store["blocks.0.hook_resid_post"])  # different weights
    assert main([*args, "--steps", "15"]) == 2


def test_probe_command(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    args = [
        "probe",
        str(run_dir),
        "--hooks",
        "blocks.0.hook_resid_post",
        "--labels",
        "is_close,nesting",
        "--ks",
        "1,2",
        "--n",
        "40",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main(args) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {"is_close", "nesting=1"} <= {r["feature"] for r in lines}
    records = read_jsonl(open_run(run_dir).probe_results_path)
    assert {r["k"] for r in records} == {1, 2} and all(0.0 <= r["f1"] <= 1.0 for r in records)
    bad = [
        "probe",
        str(run_dir),
        "--hooks",
        "blocks.0.hook_resid_post",
        "--labels",
        "colour",
        "--n",
        "40",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main(bad) == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--mdl"], "--mdl needs a distortion bound: --max-fvu"),
        (["--mdl", "--max-fvu", "0.9", "--architectures", "topk,relu"], "give one --architectures"),
        (["--steps", "0"], "SAETrainConfig.steps must be a positive int"),
    ],
)
def test_fit_sae_refuses_bad_settings_before_capture(tmp_path, caplog, extra, message):
    """Settings that cannot work are refused with one line before any activation is
    captured (the run directory gains no activations)."""
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--run-dir", str(run_dir)]) == 0
    args = ["fit-sae", str(run_dir), "--hook", "blocks.0.hook_resid_post", "--widths", "8"]
    args += ["--ks", "2", "--n", "20", "--device", "cpu", "--no-progress"]
    if "--steps" not in extra:
        args += ["--steps", "5"]
    caplog.clear()
    assert main([*args, *extra]) == 2
    assert message in caplog.text
    assert not any(open_run(run_dir).path.glob("activations/*"))


def test_fit_sae_needs_a_run_length(tmp_path, caplog):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--run-dir", str(run_dir)]) == 0
    args = ["fit-sae", str(run_dir), "--hook", "blocks.0.hook_resid_post", "--widths", "8"]
    caplog.clear()
    assert main([*args, "--ks", "2", "--device", "cpu", "--no-progress"]) == 2
    assert "fit-sae needs a run length: --steps or --tokens" in caplog.text
    assert not any(open_run(run_dir).path.glob("activations/*"))


def test_fit_sae_command_with_mdl(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    args = "fit-sae {} --hook blocks.0.hook_resid_post --widths 8,16 --ks 2,4 --steps 150 --lr 0.01"
    args = [
        *args.format(run_dir).split(),
        "--batch-size",
        "64",
        "--n",
        "30",
        "--device",
        "cpu",
        "--no-progress",
    ]
    names = {"topk_w8_k2", "topk_w8_k4", "topk_w16_k2", "topk_w16_k4"}
    assert main([*args, "--mdl"]) == 2  # no bound given
    assert main([*args, "--mdl", "--max-fvu", "0.9"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {r["name"] for r in rows} == names and any(r["eligible"] for r in rows)
    run = open_run(run_dir)
    assert run.mdl_table_path == run_dir / "saes" / "mdl_table.jsonl"
    assert {r["name"] for r in read_jsonl(run.mdl_table_path)} == names
    assert read_json(run.mdl_selection_path)["best"] in names
    assert set(run.sae_dirs()) == names
    assert main(args) == 0  # plain grid, ranked without a bound
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {r["name"] for r in rows} == names
    assert all((run_dir / "saes" / n / "cfg.json").exists() for n in names)


def _tiny_run(tmp_path, *extra):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--run-dir", str(run_dir), *extra]) == 0
    return run_dir


def test_capture_steps_and_all_steps_are_exclusive(tmp_path, capsys):
    """``--steps`` with ``--all-checkpoints`` was silently ignored; now it is a usage error."""
    import pytest

    with pytest.raises(SystemExit) as exc:
        main(
            ["capture", str(tmp_path), "--hooks", "x", "--steps", "10", "--all-checkpoints", "true"]
        )
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_commands_on_a_run_without_checkpoints(tmp_path, caplog):
    """A run with no checkpoint gave an uncaught IndexError; now a one-line error."""
    import shutil

    run_dir = _tiny_run(tmp_path)
    shutil.rmtree(run_dir / "checkpoints")
    (run_dir / "checkpoints").mkdir()
    for argv in (
        ["capture", str(run_dir), "--hooks", "blocks.0.hook_resid_post", "--no-progress"],
        [
            "capture",
            str(run_dir),
            "--hooks",
            "blocks.0.hook_resid_post",
            "--all-checkpoints",
            "true",
        ],
        ["probe", str(run_dir), "--hooks", "blocks.0.hook_resid_post", "--no-progress"],
    ):
        caplog.clear()
        assert main(argv) == 2, argv
        assert "no checkpoints" in caplog.text


def test_library_bugs_are_not_reported_as_bad_input(tmp_path, monkeypatch, caplog):
    """A TypeError from a failing expression (a bug) keeps its traceback (exit 1 through the
    console script); a ValueError hierlens raises on purpose is one line and exit 2, with the
    traceback under ``-v`` or ``HIERLENS_DEBUG=1``."""
    import pytest

    import hierlens.models.run as run_module  # where open_run lives

    def buggy(*args, **kwargs):
        return len(None)  # a TypeError that no raise statement wrote

    monkeypatch.setattr(run_module, "open_run", buggy)
    with pytest.raises(TypeError, match="NoneType"):
        main(["eval", str(tmp_path)])
    monkeypatch.undo()

    caplog.clear()
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert not any(r.exc_info for r in caplog.records)
    caplog.clear()
    assert main(["-v", "eval", str(tmp_path / "missing")]) == 2
    assert any(r.exc_info for r in caplog.records)
    caplog.clear()
    monkeypatch.setenv("HIERLENS_DEBUG", "1")
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert any(r.exc_info for r in caplog.records)


def test_is_user_error_tells_raises_from_failures():
    import pytest
    import torch

    from hierlens.analysis.cli.common import CLIError
    from hierlens.analysis.cli.main import is_user_error
    from hierlens.models import get_task

    assert is_user_error(CLIError("bad flag"))
    assert is_user_error(FileNotFoundError(2, "No such file", "/x/y"))
    assert not is_user_error(OSError("no file name"))
    with pytest.raises(ValueError) as deliberate:
        get_task("no_such_task")
    assert is_user_error(deliberate.value)
    with pytest.raises(TypeError) as inside_torch:
        torch.zeros("a")
    assert not is_user_error(inside_torch.value)
    assert not is_user_error(KeyError("x"))


def test_readme_workflow_round_trip(tmp_path, capsys):
    """train -> capture (every layer) -> fit-sae -> probe -> report, with default options
    as in the README: the later commands reuse the capture, and the report shows the SAEs
    that fit-sae trained and the probes."""
    run_dir = _tiny_run(tmp_path)
    r = str(run_dir)
    assert (
        main(["capture", r, "--hooks", "blocks.*.hook_resid_post", "--n", "40", "--no-progress"])
        == 0
    )
    hook = "blocks.0.hook_resid_post"
    fit = [
        "fit-sae",
        r,
        "--hook",
        hook,
        "--widths",
        "16",
        "--ks",
        "2",
        "--steps",
        "30",
        "--no-progress",
    ]
    assert main(fit) == 0
    probe = [
        "probe",
        r,
        "--hooks",
        "blocks.*.hook_resid_post",
        "--labels",
        "depth",
        "--ks",
        "1,2",
        "--no-progress",
    ]
    assert main(probe) == 0
    assert main(["report", r, "--no-progress"]) == 0
    capsys.readouterr()
    html = (run_dir / "report.html").read_text()
    sae_names = sorted(p.parent.name for p in (run_dir / "saes").rglob("cfg.json"))
    assert sae_names, "fit-sae wrote no SAE"
    for name in sae_names:
        assert name in html, f"SAE {name} missing from the report"
    assert "Sparse probes" in html and hook in html
    # an explicit, different capture in the way names the flag that replaces it
    assert (
        main(["probe", r, "--hooks", hook, "--n", "7", "--labels", "depth", "--no-progress"]) == 2
    )


def test_saes_from_fit_sae_appear_in_the_report(tmp_path, capsys):
    """`hierlens fit-sae` writes where `hierlens report` reads: saes/<name>/."""
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--run-dir", str(run_dir)]) == 0
    fit = "fit-sae {} --hook blocks.0.hook_resid_post --widths 8 --ks 2 --steps 20 --n 20"
    capsys.readouterr()
    assert main([*fit.format(run_dir).split(), "--device", "cpu", "--no-progress"]) == 0
    (row,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    # FVU on the rows trained on beside the FVU on the seeded held-out rows
    assert row["fvu_train"] >= 0 and row["fvu_heldout"] >= 0 and row["n_heldout_rows"] >= 2
    (saved,) = read_jsonl(open_run(run_dir).sae_table_path)
    assert saved["name"] == "topk_w8_k2" and saved["fvu_heldout"] == row["fvu_heldout"]
    report = ["report", str(run_dir), "--max-sentences", "0", "--device", "cpu", "--no-progress"]
    assert main(report) == 0
    html = (run_dir / "report.html").read_text()
    assert '<section id="saes">' in html
    saes = html.split('<section id="saes">', 1)[1].split("</section>", 1)[0]
    assert "topk_w8_k2" in saes and "fvu_heldout" in saes


def test_train_flags_come_from_the_configs():
    """Every ModelConfig / TrainConfig field (but those the command sets itself) is a flag,
    with the config's docstring as help and no default restated in the CLI."""
    import dataclasses

    from hierlens.analysis.cli import build_parser
    from hierlens.models import ModelConfig, TrainConfig

    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    flags = {a.dest: a for a in train._actions}
    for cls, skip in (
        (ModelConfig, {"d_vocab", "n_ctx", "seed"}),
        (TrainConfig, {"seed", "device"}),
    ):
        for f in dataclasses.fields(cls):
            if f.name in skip:
                continue
            assert f.name in flags, f"--{f.name} missing"
            assert flags[f.name].default is None  # unset: the config's own default
            assert flags[f.name].help, f"--{f.name} has no help"
    assert flags["schedule"].choices == ("cosine", "linear", "constant")
    args = parser.parse_args(["train", "--task", "dyck", "--run-dir", "x", "--lr", "0.01"])
    from hierlens.analysis.cli.common import config_from_flags

    cfg = config_from_flags(args, TrainConfig, seed=0, device=None)
    assert cfg.lr == 0.01 and cfg.steps == TrainConfig().steps
