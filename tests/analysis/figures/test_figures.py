"""Paper figures: the registry, the pure plotting functions, ``reproduce`` at tiny settings and
``hierlens reproduce``."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from hierlens.analysis import figures
from hierlens.analysis.cli import main
from hierlens.analysis.figures import FIGURES, redraw, reproduce
from hierlens.analysis.figures import plot as figures_plot
from hierlens.analysis.grokking import track
from hierlens.core.atomic_io import read_jsonl
from hierlens.models.run import Run, open_run

NAMES = {
    "grokking-curves",
    "depth-inverted-u",
    "tree-score-over-training",
    "mpsae-hierarchy",
    "mdl-digits",
    "sparse-probing-f1-vs-k",
    "filtering-vs-bp",
    "structural-probe-layers",
    "mpsae-correlation",
    "cka-across-seeds",
    "rank-collapse-depth",
    "sae-geometry-spectrum",
    "chomsky-table",
    "causal-dyck",
    "causal-question",
    "sae-frontier",
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

_TINY_DYCK = {
    "task": {"name": "dyck", "params": {"max_length": 12}},
    "model": {"d_model": 16, "n_layers": 2, "n_heads": 2},
    "train": {"steps": 40, "batch_size": 16, "warmup_steps": 2, "eval_every": 0,
              "checkpoint_every": 20, "train_pool": 200},
}  # fmt: skip
# Overrides that make each quick setting run in seconds on one core.
TINY = {
    "grokking-curves": {"steps": 40},
    "causal-dyck": {"steps": 5, "d_model": 16, "n_pairs": 4, "das_pairs": 30, "das_steps": 3},
    "causal-question": {
        "steps": 5,
        "d_model": 16,
        "n_pairs": 6,
        "das_pairs": 30,
        "das_steps": 3,
        "rank": 2,
        "n_eval": 20,
    },
    "tree-score-over-training": {"steps": 40},
    "depth-inverted-u": {"steps": 12},
    "mpsae-hierarchy": {"n_train": 400, "n_eval": 200, "steps": 30, "batch_size": 100},
    "mdl-digits": {"widths": [16, 32], "ks": [6], "steps": 60, "max_fvu": 0.8},
    "sparse-probing-f1-vs-k": {"steps": 10, "n_examples": 40, "ks": [1, 2]},
    "filtering-vs-bp": {"filter_levels": [0, 4], "steps": 10, "n_eval": 100, "train_pool": 500},
    "structural-probe-layers": {"n_sentences": 10, "layers": [0, 6], "max_epochs": 2},
    "mpsae-correlation": {"steps": 20, "n_train": 600, "n_eval": 300},
    "cka-across-seeds": {"setting": _TINY_DYCK, "n": 20},
    "rank-collapse-depth": {"depth": 5, "d_model": 16, "n_tokens": 8, "batch": 2, "seeds": [0, 1]},
    "sae-geometry-spectrum": {"setting": _TINY_DYCK, "n_sentences": 40, "sae_steps": 30},
    "chomsky-table": {"tasks": ["parity_check"], "archs": ["lstm"], "steps": 3, "eval_n": 8},
    "sae-frontier": {
        "toy": {"n_train": 400, "n_eval": 300, "steps": 10, "batch_size": 100, "lr": 1e-2},
        "filtering": None,
    },
}


def _curves() -> dict:
    steps = [0, 10, 100, 1000, 10000]
    return {
        "task": "question_formation",
        "metric": "first_word_acc",
        "run_dir": "runs/x",
        "steps": steps,
        "test_id": [0.1, 0.6, 0.99, 1.0, 1.0],
        "test_ood": [0.0, 0.1, 0.2, 0.5, 0.9],
        "tree_score": [0.1, 0.2, None, 0.8, 1.1],
        "parse_f1": [0.3, 0.3, 0.4, 0.5, 0.7],
        "train": {"steps": [5, 10, 50, 100, 5000, 10000], "loss": [4, 3, 1, 0.5, 0.1, 0.05]},
        "summary": {"id_saturation_step": 100, "ood_threshold_step": 10000},
        "saturation": 0.98,
        "ood_threshold": 0.8,
    }


def hand_made(name: str) -> dict:
    """Small data of the shape each figure's compute function returns."""
    if name in ("grokking-curves", "tree-score-over-training"):
        return _curves()
    if name == "chomsky-table":
        from tests.analysis.test_chomsky_grid import hand_made_table

        return hand_made_table()
    if name == "depth-inverted-u":
        runs = [
            {"depth": d, "seed": s, "final_ood": o, "best_ood": o + 0.05, "final_tree_score": t}
            for d, s, o, t in [
                (2, 0, 0.3, 0.5),
                (2, 1, 0.4, 0.6),
                (4, 0, 0.8, 1.2),
                (4, 1, 0.7, 1.0),
            ]
        ]
        runs.append({"depth": 6, "seed": 0, "final_ood": 0.5, "best_ood": 0.6})
        return {"task": "qf", "metric": "acc", "depths": [2, 4, 6], "seeds": [0, 1], "runs": runs}
    if name == "causal-dyck":
        hooks = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post"]
        patching = [{"variable": "stack_top", "hooks": hooks, "offsets": [-1, 0], "n_pairs": 4,
                     "effect": {hooks[0]: [0.1, 0.0], hooks[1]: [0.0, 0.9]}}]  # fmt: skip
        das = [{"variable": v, "hook": h, "das": 0.5, "probe": 0.9, "random_model": 0.4,
                "chance": 0.5} for v in ("depth", "stack_top") for h in hooks]  # fmt: skip
        return {"closing_acc": 0.99, "rank": 1, "hooks": hooks, "patching": patching, "das": das}
    if name == "causal-question":
        from tests.analysis.figures.test_causal_figures import hand_made_study

        return hand_made_study()
    if name == "mpsae-hierarchy":
        level = {"0": {"mean_best_cosine": 0.9, "hungarian_cosine": 0.8}}
        level["1"] = {"mean_best_cosine": 0.7, "hungarian_cosine": 0.6}
        methods = {m: {"l0": 2.0, "fvu": 0.05, "per_level": level} for m in ("MP-SAE", "TopK")}
        return {"true_l0": 1.8, "methods": methods}
    if name == "mdl-digits":
        atoms = [[(i * j) % 5 - 2.0 for j in range(4)] for i in range(5)]
        curve = [
            {"width": 4, "bits": None, "k": None, "fvu": None, "name": None},
            {"width": 8, "bits": 12.0, "k": 2, "fvu": 0.1, "name": "w8"},
            {"width": 16, "bits": 13.5, "k": 2, "fvu": 0.1, "name": "w16"},
        ]
        panels = [{"title": "selected", "name": "w8", "n_latents": 8, "atoms": atoms}]
        return {"max_fvu": 0.2, "curve": curve, "selected": "w8", "side": 2, "atoms": panels}
    if name == "sparse-probing-f1-vs-k":
        hooks = ["hook_embed", "blocks.0.hook_resid_post"]
        f1 = {lab: {h: [0.5, 0.7] for h in hooks} for lab in ("depth", "is_close")}
        return {
            "steps": 0,
            "selection": "mean_diff",
            "ks": [1, 2],
            "hooks": hooks,
            "labels": ["depth", "is_close"],
            "f1": f1,
        }
    if name == "filtering-vs-bp":
        return {
            "q": 4,
            "depth": 4,
            "steps": 10,
            "n_eval": 50,
            "filter_levels": [0, 2, 4],
            "model_acc": [0.4, 0.6, 0.8],
            "bp_acc": [0.5, 0.8, 1.0],
        }
    if name == "structural-probe-layers":
        recs = [
            {"layer": x, "uuas": u, "spearman": s, "root_acc": r, "norm_spearman": None}
            for x, u, s, r in [(0, 0.3, 0.4, 0.2), (1, 0.5, 0.6, 0.6), (2, 0.45, 0.55, 0.7)]
        ]
        rand = [{**r, "uuas": 0.3, "spearman": 0.35} for r in recs]
        return {
            "model": "tiny",
            "n_sentences": 20,
            "split": {"n_train": 12, "n_dev": 4, "n_test": 4},
            "layers": [0, 1, 2],
            "trained": recs,
            "random": rand,
            "baseline": {"test": {"uuas": 0.4, "spearman": 0.5}},
        }
    if name == "mpsae-correlation":
        from hierlens.analysis.figures.correlation import METHODS, METRICS

        stats = {"mean": [0.9, 0.7], "min": [0.85, None], "max": [0.95, 0.8]}
        summary = {m: {k: stats for k in METRICS} for m in METHODS}
        return {"target_l0": 1.36, "methods": list(METHODS), "cosines": [0.0, 0.8],
                "seeds": [0], "summary": summary}  # fmt: skip
    if name == "cka-across-seeds":
        m = [[1.0, 0.5], [0.4, None]]
        return {"task": "dyck", "labels": ["L0 embed", "L1"], "seeds": [0, 1], "early_step": 10,
                "final_step": 20, "across_seeds": m, "early_vs_final": m}  # fmt: skip
    if name == "rank-collapse-depth":
        paths = {"attention": [0.9, 0.1, 0.0], "attention+skip": [0.9, 0.8, 0.7]}
        return {"layers": [0, 1, 2], "paths": paths, "seeds": [0]}
    if name == "sae-geometry-spectrum":
        spectra = [[1.0, 0.5, 0.2, 0.1], [2.0, 0.4, 0.1, 0.05]]
        return {"labels": ["L0 embed", "L1"], "d_sae": 8, "k": 2, "spectra": spectra,
                "slopes": [-1.0, None]}  # fmt: skip
    if name == "sae-frontier":
        from tests.analysis.figures.test_sae_frontier_figure import hand_made_frontier

        return hand_made_frontier()
    raise KeyError(name)


def _assert_png(path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 2000, path


def _assert_pdf(path) -> None:
    data = path.read_bytes()
    assert data.startswith(b"%PDF-") and b"%%EOF" in data[-64:], path


def test_registry_names_and_settings():
    assert set(FIGURES) == NAMES
    for name, spec in FIGURES.items():
        assert spec.name == name and spec.description and spec.full_runtime
        assert spec.quick.keys() == spec.full.keys(), name
        assert set(TINY[name]) <= set(spec.quick) | set(spec.options), name
    for constant in (figures.GROKKING_QUICK, figures.GROKKING_FULL):
        assert set(constant) == {"task", "model", "train", "track"}
        assert constant["train"]["loss_on"] == "sequence"
        assert constant["train"]["schedule"] == "constant"
    assert figures.GROKKING_FULL["train"]["steps"] >= 10 * figures.GROKKING_QUICK["train"]["steps"]


@pytest.mark.parametrize("name", sorted(NAMES))
def test_plot_from_hand_made_data_writes_png_and_pdf(name, tmp_path):
    paths = figures_plot.save_figure(FIGURES[name].plot(hand_made(name)), tmp_path, name)
    assert [p.name for p in paths] == [f"{name}.png", f"{name}.pdf"]
    _assert_png(paths[0])
    _assert_pdf(paths[1])


def test_unknown_name_and_option_fail_before_any_work(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="unknown figure 'nope'.*grokking-curves"):
        reproduce("nope", out, quick=True)
    with pytest.raises(ValueError, match="takes no option"):
        reproduce("filtering-vs-bp", out, quick=True, layers=3)
    with pytest.raises(ValueError, match="options apply to one figure"):
        reproduce("all", out, quick=True, steps=3)
    assert not out.exists()


def test_named_settings_select_fail_and_record(tmp_path):
    from hierlens.analysis.figures.settings import CHOMSKY_MODEST

    spec = FIGURES["chomsky-table"]
    assert spec.setting_names == ["quick", "full", "modest"]
    assert spec.settings(False, "modest") == CHOMSKY_MODEST
    assert spec.settings(False, "full") == spec.full and spec.settings(True, "quick") == spec.quick
    assert spec.settings(False, "modest", eval_n=3)["eval_n"] == 3
    cka = FIGURES["cka-across-seeds"]
    assert cka.settings(True, setting={"x": 1})["setting"] == {"x": 1}  # an option, not a name
    for name, other in FIGURES.items():
        for named in other.named.values():
            assert named.keys() == other.full.keys(), name
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="no setting 'nope'.*quick, full, modest"):
        reproduce("chomsky-table", out, setting_name="nope")
    with pytest.raises(ValueError, match="contradicts"):
        reproduce("chomsky-table", out, quick=True, setting_name="modest")
    with pytest.raises(ValueError, match="no setting 'modest'"):
        reproduce("mdl-digits", out, setting_name="modest")
    with pytest.raises(ValueError, match="apply to one figure"):
        reproduce("all", out, setting_name="modest")
    assert not out.exists()
    assert main(["reproduce", "chomsky-table", "--setting", "nope", "--out", str(out)]) == 2
    argv = ["reproduce", "chomsky-table", "--quick", "--setting", "modest", "--out", str(out)]
    assert main(argv) == 2
    assert not out.exists()
    tiny = {"tasks": ["parity_check"], "archs": ["rnn"], "steps": 2, "eval_n": 6}
    reproduce("chomsky-table", out, setting_name="modest", device="cpu", progress=False, **tiny)
    record = json.loads((out / "chomsky-table.json").read_text())
    assert record["setting"] == "modest" and record["quick"] is False
    assert record["settings"]["task_params"] == CHOMSKY_MODEST["task_params"]
    assert record["data"]["n_train"] == CHOMSKY_MODEST["task_params"]["n_train"]


def _capture(monkeypatch, name: str) -> list:
    """Replace the figure's plot function by one that records the data it is given."""
    seen = []
    spec = FIGURES[name]

    def plot(data):
        seen.append(data)
        return spec.plot(data)

    monkeypatch.setitem(FIGURES, name, dataclasses.replace(spec, plot=plot))
    return seen


def _check_outputs(tmp_path, name: str, paths, seen) -> dict:
    assert sorted(p.name for p in paths) == sorted(f"{name}.{x}" for x in ("json", "pdf", "png"))
    _assert_png(tmp_path / f"{name}.png")
    _assert_pdf(tmp_path / f"{name}.pdf")
    record = json.loads((tmp_path / f"{name}.json").read_text())
    assert record["name"] == name and record["quick"] is True and record["seconds"] >= 0
    assert record["setting"] == "quick"
    assert record["settings"] == json.loads(json.dumps(FIGURES[name].settings(True, **TINY[name])))
    assert len(seen) == 1
    # the JSON holds exactly what was plotted (NaN-safe comparison through its text)
    assert json.dumps(record["data"], sort_keys=True) == json.dumps(seen[0], sort_keys=True)
    return record["data"]


@pytest.fixture(scope="module")
def grok_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("grok")


@pytest.mark.parametrize("name", ["grokking-curves", "tree-score-over-training"])
def test_reproduce_grokking_figures(name, grok_dir, monkeypatch):
    seen = _capture(monkeypatch, name)
    paths = reproduce(name, grok_dir, quick=True, device="cpu", progress=False, **TINY[name])
    data = _check_outputs(grok_dir, name, paths, seen)
    run = open_run(grok_dir / "grokking_run")
    assert data["steps"] == run.steps and run.steps[-1] == 40  # every checkpoint tracked
    assert data["metric"] == "first_word_acc" and data["task"] == "question_formation"
    assert run.train_config.loss_on == "sequence" and run.model_config.d_model == 32
    records = read_jsonl(Run(grok_dir / "grokking_run").tracking_path)
    assert data["test_ood"] == [r["test_ood/first_word_acc"] for r in records]
    assert data["train"]["steps"] == [r["step"] for r in run.metrics("train")]
    assert all(0.0 <= a <= 1.0 for a in data["test_id"] + data["test_ood"])


def test_existing_run_is_tracked_then_continued_with_its_own_settings(grok_dir, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(grok_dir / "grokking_run", run_dir)
    Run(run_dir).tracking_path.unlink()
    steps = open_run(run_dir).steps
    first = track(run_dir, steps=steps[:2], n=7, n_trees=3, device="cpu", progress=False)
    lines = Run(run_dir).tracking_path.read_text().splitlines()
    paths = reproduce("grokking-curves", tmp_path / "fig", quick=True, run_dir=run_dir)
    assert (tmp_path / "fig" / "grokking-curves.png") in paths
    records = read_jsonl(Run(run_dir).tracking_path)
    assert [r["step"] for r in records] == steps
    assert Run(run_dir).tracking_path.read_text().splitlines()[:2] == lines  # kept, not recomputed
    assert all(r["settings"] == first[0]["settings"] for r in records)  # n=7 kept
    assert not (tmp_path / "fig" / "grokking_run").exists()  # nothing trained
    # a tracking file without the plotted metrics is an error, not silently replaced
    track(run_dir, n=5, n_trees=2, metrics=("param_norm",), device="cpu", progress=False)
    with pytest.raises(ValueError, match="tracked without"):
        reproduce("tree-score-over-training", tmp_path / "fig", quick=True, run_dir=run_dir)


@pytest.mark.parametrize(
    "name",
    [
        "depth-inverted-u",
        "mpsae-hierarchy",
        "mdl-digits",
        "sparse-probing-f1-vs-k",
        "filtering-vs-bp",
        "causal-dyck",
        "causal-question",
    ],
)
def test_reproduce_quick_writes_files(name, tmp_path, monkeypatch, caplog):
    import logging

    seen = _capture(monkeypatch, name)
    with caplog.at_level(logging.INFO, logger="hierlens.models.train_many"):
        paths = reproduce(name, tmp_path, quick=True, device="cpu", progress=False, **TINY[name])
    data = _check_outputs(tmp_path, name, paths, seen)
    if name == "depth-inverted-u":
        assert [(r["depth"], r["seed"]) for r in data["runs"]] == [(1, 0), (2, 0)]
        for r in data["runs"]:
            assert 0.0 <= r["final_ood"] <= r["best_ood"] <= 1.0
            assert math.isfinite(r["final_tree_score"])
    elif name == "mpsae-hierarchy":
        assert set(data["methods"]) == {"MP-SAE", "TopK", "ReLU"}
        assert set(data["methods"]["TopK"]["per_level"]) == {"0", "1"}
    elif name == "mdl-digits":
        assert [p["width"] for p in data["curve"]] == [16, 32]
        assert data["side"] == 8 and [p["title"] for p in data["atoms"]][1] == "MDL-selected"
        assert all(len(a) == 64 for p in data["atoms"] for a in p["atoms"])
    elif name == "sparse-probing-f1-vs-k":
        assert data["ks"] == [1, 2] and len(data["hooks"]) == 3
        assert all(len(v) == 2 for lab in data["f1"].values() for v in lab.values())
    elif name == "causal-dyck":
        assert {r["variable"] for r in data["das"]} == {"depth", "stack_top"}
        assert len(data["das"]) == 2 * len(data["hooks"]) == 10
        assert all(0.0 <= r["das"] <= 1.0 for r in data["das"])
    elif name == "causal-question":
        _check_causal_question(data)
    elif name == "filtering-vs-bp":
        assert data["filter_levels"] == [0, 4] and data["n_eval"] == 100
        assert "2 model(s) in 1 stack(s)" in caplog.text  # the levels train as one stack
        assert all(0.0 <= a <= 1.0 for a in data["model_acc"] + data["bp_acc"])
    # the JSON alone redraws the figure
    (tmp_path / f"{name}.png").unlink()
    redraw(tmp_path / f"{name}.json")
    _assert_png(tmp_path / f"{name}.png")


def _check_causal_question(data: dict) -> None:
    hooks = data["hooks"]
    variables = {"main_aux", "subject_extent"}
    assert hooks == [
        "blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid", "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_mid", "blocks.1.hook_resid_post",
    ]  # fmt: skip
    assert data["model"] == {"d_model": 16, "n_layers": 2, "n_heads": 4}
    assert data["train"]["steps"] == 5 and data["rank"] == 2 and data["n_eval"] == 20
    for split in ("test_id", "test_ood"):
        assert 0.0 <= data[split]["first_word_acc"] <= 1.0
    assert {r["variable"] for r in data["das"]} == variables
    assert len(data["das"]) == 2 * len(hooks)
    assert all(0.0 <= r[k] <= 1.0 for r in data["das"] for k in ("das", "probe", "random_model"))
    # the output changes only with the main auxiliary: patching is defined for it alone
    assert [r["variable"] for r in data["patching"]] == ["main_aux"]
    for rec in data["interchange"]:
        assert rec["offsets"][-1] == 0 and set(rec["by_offset"]) == set(hooks)
        assert all(len(v) == len(rec["offsets"]) for v in rec["by_offset"].values())
        assert set(rec["at"]) == {"main auxiliary", "subject's last word"}
        assert all(v is None or 0.0 <= v <= 1.0 for a in rec["at"].values() for v in a.values())
    assert {c["variable"] for c in data["controls"]} == variables
    assert [s["variable"] for s in data["statements"]] == ["main_aux", "subject_extent"]
    for s in data["statements"]:
        assert s["best_hook"] in hooks and s["text"].startswith(s["variable"] + ": ")
        assert s["agree"] == (s["used"] == s["decodable"])


def test_cli_list(capsys):
    assert main(["reproduce", "list"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert name in out
    assert out.count("full setting:") == len(NAMES)
    assert main(["reproduce", "--list"]) == 0
    assert capsys.readouterr().out == out


def test_cli_reproduce_run_and_errors(tmp_path, capsys):
    out = tmp_path / "figs"
    argv = ["reproduce", "sparse-probing-f1-vs-k", "--quick", "--out", str(out), "--steps", "5"]
    assert main([*argv, "--device", "cpu", "--no-progress"]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith(str(out))]
    assert sorted(printed) == sorted(
        str(out / f"sparse-probing-f1-vs-k.{x}") for x in ("json", "png", "pdf")
    )
    _assert_png(out / "sparse-probing-f1-vs-k.png")
    record = json.loads((out / "sparse-probing-f1-vs-k.json").read_text())
    assert record["settings"]["steps"] == 5 and record["settings"]["n_examples"] == 150
    assert main(["reproduce", "nope", "--out", str(out)]) == 2
    assert main(["reproduce", "mdl-digits", "--run-dir", str(out), "--out", str(out)]) == 2
    assert main(["reproduce", "--out", str(out)]) == 2


def test_unmodified_quick_setting_runs(tmp_path, monkeypatch):
    """One figure at exactly its ``--quick`` setting (no size overrides), through the CLI."""
    seen = _capture(monkeypatch, "mpsae-hierarchy")
    out = tmp_path / "figs"
    assert main(["reproduce", "mpsae-hierarchy", "--quick", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "hierlens_sha256.json",
        "mpsae-hierarchy.json",
        "mpsae-hierarchy.pdf",
        "mpsae-hierarchy.png",
    ]
    _assert_png(out / "mpsae-hierarchy.png")
    record = json.loads((out / "mpsae-hierarchy.json").read_text())
    assert record["quick"] is True
    assert record["settings"] == json.loads(json.dumps(FIGURES["mpsae-hierarchy"].quick))
    assert len(seen) == 1
    assert json.dumps(record["data"], sort_keys=True) == json.dumps(seen[0], sort_keys=True)
    assert set(record["data"]["methods"]) == {"MP-SAE", "TopK", "ReLU"}


def _np_cka(x, y) -> float:
    import numpy as np

    x, y = x - x.mean(0), y - y.mean(0)
    return float(np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


@pytest.mark.parametrize(
    "name", ["cka-across-seeds", "rank-collapse-depth", "sae-geometry-spectrum"]
)
def test_reproduce_representation_figures(name, tmp_path, monkeypatch):
    import numpy as np
    import torch

    seen = _capture(monkeypatch, name)
    paths = reproduce(name, tmp_path, quick=True, device="cpu", progress=False, **TINY[name])
    data = _check_outputs(tmp_path, name, paths, seen)
    if name == "cka-across-seeds":
        steps = open_run(tmp_path / "cka_seed_0").steps
        assert data["labels"] == ["L0 embed", "L1", "L2"] and data["seeds"] == [0, 1]
        assert (data["early_step"], data["final_step"]) == (steps[0], steps[-1])
        assert open_run(tmp_path / "cka_seed_1").model_config.seed == 1
        # the early-vs-final matrix, recomputed from plain unpadded forwards
        run = open_run(tmp_path / "cka_seed_0")
        examples = run.task.sample(20, "test_id", 0)
        hooks = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]

        def layers(model):
            acts = {h: [] for h in hooks}
            with torch.no_grad():
                for ex in examples:
                    _, cache = model.run_with_cache(torch.tensor([ex.tokens]))
                    for h in hooks:
                        acts[h].append(cache[h][0].double().numpy())
            return {h: np.concatenate(v) for h, v in acts.items()}

        early = layers(run.load_model(steps[0], device="cpu"))
        final = layers(run.load_model(steps[-1], device="cpu"))
        ref = [[_np_cka(early[a], final[b]) for b in hooks] for a in hooks]
        np.testing.assert_allclose(data["early_vs_final"], ref, atol=1e-5)
        assert all(0.0 <= v <= 1.0 + 1e-9 for row in data["across_seeds"] for v in row)
    elif name == "rank-collapse-depth":
        paths = data["paths"]
        assert set(paths) == {"attention", "attention+skip", "attention+mlp", "full"}
        assert all(len(v) == 6 for v in paths.values())
        # the paper's qualitative result: pure attention collapses, skips keep the rank
        assert paths["attention"][-1] < 0.2 * paths["attention"][0]
        assert paths["attention+skip"][-1] > 0.4
        assert paths["attention"][-1] < paths["attention+skip"][-1] / 5
    else:
        assert data["labels"] == ["L0 embed", "L1", "L2"] and len(data["spectra"]) == 3
        assert all(len(s) == 16 for s in data["spectra"]) and data["d_sae"] == 64
        assert all(s < 0 for s in data["slopes"]) and all(f < 1.0 for f in data["fvu"])
    (tmp_path / f"{name}.png").unlink()
    redraw(tmp_path / f"{name}.json")
    _assert_png(tmp_path / f"{name}.png")
