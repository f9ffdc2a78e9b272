"""Representations over training and across runs: ``track(compare=True)``, ``hierlens compare``
and the report's Representations section, checked against plain recomputations."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from hierlens import sae as S
from hierlens.analysis import write_report
from hierlens.analysis.cli import main
from hierlens.analysis.compare.runs import compare_runs, layer_hooks
from hierlens.analysis.grokking import track
from hierlens.core.atomic_io import read_json, read_jsonl
from hierlens.models import ModelConfig, TrainConfig, build_transformer, get_task, train
from hierlens.models.run import Run

TASK = get_task("dyck", max_depth=4, min_length=4, max_length=10)


def _train(path, seed: int):
    model = build_transformer(
        ModelConfig.for_task(TASK, d_model=16, n_layers=2, n_heads=2, seed=seed), device="cpu"
    )
    cfg = TrainConfig(
        steps=20, batch_size=8, warmup_steps=2, eval_every=0, checkpoint_every=10,
        train_pool=100, seed=seed, device="cpu",
    )  # fmt: skip
    train(model, TASK, cfg, path, progress=False)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    return _train(root / "a", 0), _train(root / "b", 1)


@pytest.fixture(scope="module")
def tracked(runs):
    records = track(
        runs[0], metrics=("param_norm",), compare=True, n_compare=8, device="cpu", progress=False
    )
    return runs[0], records


def _np_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al.'s linear CKA written out with numpy."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    return float(np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def _plain_layers(model, examples) -> dict[str, np.ndarray]:
    """Every layer's activations, one unpadded sequence at a time, concatenated."""
    hooks = layer_hooks(model)
    out = {h: [] for h in hooks}
    with torch.no_grad():
        for ex in examples:
            _, cache = model.run_with_cache(torch.tensor([ex.tokens]))
            for h in hooks:
                out[h].append(cache[h][0].double().numpy())
    return {h: np.concatenate(v) for h, v in out.items()}


def test_track_representations_against_plain_recomputation(tracked):
    run_dir, records = tracked
    assert [r["step"] for r in records] == [10, 20]
    hooks = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    final = records[-1]
    assert final["representation_hooks"] == hooks
    np.testing.assert_allclose(final["cka_to_final"], 1.0, atol=1e-9)  # final vs itself
    np.testing.assert_allclose(np.diag(final["cka_to_final_matrix"]), 1.0, atol=1e-9)
    assert final["settings"]["reference_step"] == 20 and final["settings"]["n_compare"] == 8
    # the earlier checkpoint, recomputed with numpy from plain unpadded forwards
    run = Run(run_dir)
    examples = run.task.sample(8, "test_id", 4242 + 2)
    early = _plain_layers(run.load_model(10, device="cpu"), examples)
    last = _plain_layers(run.load_model(20, device="cpu"), examples)
    ref = [[_np_linear_cka(early[a], last[b]) for b in hooks] for a in hooks]
    np.testing.assert_allclose(records[0]["cka_to_final_matrix"], ref, atol=1e-5)
    np.testing.assert_allclose(records[0]["cka_to_final"], np.diag(ref), atol=1e-5)
    assert min(records[0]["cka_to_final"]) < 1 - 1e-6  # the early model differs
    # rank-collapse residual: mean over sequences of ||X - 1 mean||_F / ||X||_F per layer
    model = run.load_model(10, device="cpu")
    per_seq = []
    with torch.no_grad():
        for ex in examples:
            _, cache = model.run_with_cache(torch.tensor([ex.tokens]))
            xs = [cache[h][0].double().numpy() for h in hooks]
            per_seq.append([np.linalg.norm(x - x.mean(0)) / np.linalg.norm(x) for x in xs])
    np.testing.assert_allclose(records[0]["rank_residual"], np.mean(per_seq, 0), rtol=1e-5)


def test_track_representations_resume_and_bad_input(tracked):
    run_dir, records = tracked
    lines = Run(run_dir).tracking_path.read_text()
    again = track(
        run_dir, metrics=("param_norm",), compare=True, n_compare=8, device="cpu", progress=False
    )
    assert again == records and Run(run_dir).tracking_path.read_text() == lines
    with pytest.raises(ValueError, match="unknown tracking metric.*cka_to_final"):
        track(run_dir, metrics=("cka",), device="cpu", progress=False)
    with pytest.raises(ValueError, match="n_compare must be a positive integer"):
        track(run_dir, compare=True, n_compare=0, device="cpu", progress=False)


def test_compare_run_with_itself_and_with_another_seed(runs, tmp_path):
    a, b = runs
    out = tmp_path / "self.json"
    argv = ["compare", str(a), str(a), "--n", "12", "--measures", "linear_cka,svcca,procrustes"]
    assert main([*argv, "--out", str(out)]) == 0
    res = read_json(out, verify=False)  # a command's output, not a run's file
    hooks = res["hooks_a"]
    assert hooks == res["hooks_b"] == layer_hooks(Run(a).load_model(device="cpu"))
    for m in ("linear_cka", "svcca"):
        np.testing.assert_allclose(np.diag(res["similarity"][m]), 1.0, atol=1e-9)
    np.testing.assert_allclose(np.diag(res["similarity"]["procrustes"]), 0.0, atol=1e-6)
    assert res["best_layer"] == {h: h for h in hooks}
    assert [r["hook"] for r in res["matching"]] == hooks
    for r in res["matching"]:  # the same units: every unit is its own mutual best match
        assert r["unit_level"] == pytest.approx(1.0, abs=1e-6)
        assert r["hungarian_mean_abs_corr"] == pytest.approx(1.0, abs=1e-6)
        assert r["mutual_best_matches"] == r["units"][0] == 16
    # two seeds, step 10 of B: a full matrix, CKA recomputed with numpy
    res = compare_runs(a, b, step_b=10, n=6, matching=False, device="cpu")
    assert res["step_a"] == 20 and res["step_b"] == 10 and "matching" not in res
    examples = Run(a).task.sample(6, "test_id", 0)
    xa = _plain_layers(Run(a).load_model(20, device="cpu"), examples)
    xb = _plain_layers(Run(b).load_model(10, device="cpu"), examples)
    ref = [[_np_linear_cka(xa[p], xb[q]) for q in hooks] for p in hooks]
    np.testing.assert_allclose(res["similarity"]["linear_cka"], ref, atol=1e-5)
    assert res["n_tokens"] == sum(len(ex.tokens) for ex in examples)


def test_compare_bad_input_is_a_clear_error(runs, tmp_path, caplog):
    a, b = runs
    assert main(["compare", str(a), str(b), "--measures", "cka"]) == 2
    assert "unknown ['cka']" in caplog.text
    assert main(["compare", str(a), str(b), "--step-b", "15"]) == 2
    assert "no checkpoint at step 15" in caplog.text
    assert main(["compare", str(a), str(tmp_path / "nope")]) == 2
    small = tmp_path / "small_vocab"
    shutil.copytree(b, small)
    cfg = read_json(small / "config.json")
    cfg["model"]["d_vocab"] = 3
    Run(small).write_config(cfg)  # rewritten with its checksum, as hierlens writes configs
    with pytest.raises(ValueError, match="out of range of run B's vocabulary"):
        compare_runs(a, small, n=4)
    assert main(["compare", str(a), str(a), "--hooks", "blocks.9.hook_nope", "--n", "4"]) == 2


class _Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.scripts: list[str] = []
        self._script = False

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.sections.append(dict(attrs)["id"])
        self._script = tag == "script"
        if self._script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        self._script = False if tag == "script" else self._script

    def handle_data(self, data):
        if self._script:
            self.scripts[-1] += data


def _charts(html: str) -> tuple[list[str], list[dict]]:
    """Section ids and chart specifications of the page body (plotly.js, inlined in the
    head, is left out: the parser is slow on megabytes of script)."""
    p = _Sections()
    p.feed(html[html.index("</head>") :])
    specs = []
    for text in p.scripts:
        m = re.match(r".*?var s=(.*);Plotly\.newPlot\(", text, re.S)
        if m:
            specs.append(json.loads(m.group(1)))
    return p.sections, specs


def test_report_section_present_with_inputs_and_omitted_without(tracked, runs, tmp_path):
    run_dir, records = tracked
    # without representation metrics or SAEs: no section
    bare = tmp_path / "bare"
    shutil.copytree(runs[1], bare)
    track(bare, metrics=("param_norm",), device="cpu", progress=False)
    sections, _ = _charts(write_report(bare, max_sentences=0).read_text())
    assert "representations" not in sections and "grokking" in sections
    # with tracking: the layer x checkpoint heatmap holds the tracked values
    html = write_report(run_dir, tmp_path / "r.html", max_sentences=0).read_text()
    sections, specs = _charts(html)
    assert "representations" in sections and 'class="error"' not in html
    by_title = {s["layout"]["title"]["text"]: s for s in specs}
    heat = next(s for t, s in by_title.items() if t.startswith("Linear CKA of each layer"))
    z = np.array(heat["data"][0]["z"], dtype=float)
    np.testing.assert_allclose(z, np.array([r["cka_to_final"] for r in records]).T)
    assert heat["data"][0]["y"] == ["L0 embed", "L1", "L2"]
    assert any(t.startswith("Layer x layer CKA: step 10") for t in by_title)
    rank = by_title["Rank collapse: residual from token-uniform rank 1 per layer"]
    assert [t["y"] for t in rank["data"]] == [r["rank_residual"] for r in records]
    # SAEs alone bring the section, with the spectrum slope fitted by numpy
    sae_run = tmp_path / "with_sae"
    shutil.copytree(runs[1], sae_run)
    sae = S.TopKSAE(16, 64, k=4, hook_name="blocks.0.hook_resid_post", seed=0)
    sae.save(Run(sae_run).sae_dir("topk_64"))
    html = write_report(sae_run, max_sentences=0).read_text()
    sections, specs = _charts(html)
    assert "representations" in sections
    w = sae.W_dec.detach().double().numpy()
    lam = np.linalg.svd(w - w.mean(0), compute_uv=False) ** 2 / (w.shape[0] - 1)
    lo, hi = 1, 8  # ranks 5%-50% of 16 eigenvalues: ceil(0.8) = 1 .. 8
    slope = np.polyfit(np.log(np.arange(lo, hi + 1)), np.log(lam[lo - 1 : hi]), 1)[0]
    section = html[html.index('<section id="representations">') :]
    cells = re.findall(r"<td>([^<]*)</td>", section)
    assert "topk_64" in cells and f"{slope:.4g}" in cells
    spectra = next(s for s in specs if s["layout"]["title"]["text"].startswith("SAE decoder"))
    np.testing.assert_allclose(spectra["data"][0]["y"], lam, rtol=1e-6)


def test_cli_track_representations(runs, tmp_path, capsys):
    run_dir = tmp_path / "cli"
    shutil.copytree(runs[1], run_dir)
    argv = ["track", str(run_dir), "--n", "8", "--n-trees", "4", "--compare", "true"]
    assert main([*argv, "--n-compare", "4", "--no-progress"]) == 0
    records = read_jsonl(Run(run_dir).tracking_path)
    assert [r["step"] for r in records] == [10, 20]
    np.testing.assert_allclose(records[-1]["cka_to_final"], 1.0, atol=1e-9)
    assert all(0.0 <= v <= 1.0 for r in records for v in r["rank_residual"])
    assert "id_saturation_step" in capsys.readouterr().out
