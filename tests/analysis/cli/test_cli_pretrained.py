"""The CLI on a pretrained model and a treebank: ``--model PATH --treebank FILE`` makes the
run directory a pretrained run, and capture, probe, fit-sae and tree-score work on it as on
a trained run (per word where the method is per word)."""

from __future__ import annotations

import json

import pytest

from hierlens.analysis.cli import main
from hierlens.models import ActivationStore, open_run, shipped_treebank
from hierlens.models.corpus import Corpus
from tests.hf_folders import build_tiny_bert, build_tiny_gpt2, minilm_path


@pytest.fixture(scope="module")
def treebank(tmp_path_factory):
    """Eight shipped sentences as a PTB file."""
    from hierlens.models.treebank_export import write_ptb

    path = tmp_path_factory.mktemp("tb") / "eight.mrg"
    write_ptb(shipped_treebank("ptb")[:8], path)
    return path


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    return build_tiny_gpt2(tmp_path_factory.mktemp("gpt2"))


def _src(model, treebank):
    return ["--model", str(model), "--treebank", str(treebank), "--no-progress"]


def test_capture_probe_sae_tree_score_on_a_tiny_encoder(tmp_path, tiny_bert, treebank, capsys):
    run_dir = tmp_path / "run"
    r = str(run_dir)
    hooks = "blocks.*.hook_resid_post"
    assert main(["capture", r, "--hooks", hooks, "--pool", "mean", *_src(tiny_bert, treebank)]) == 0
    run = open_run(run_dir)
    assert run.is_pretrained and run.steps == [0]
    store = ActivationStore.open(run.activations_dir(0))
    sentences = Corpus(str(treebank)).read()
    assert store.n_tokens == sum(len(s.words) for s in sentences)  # one row per word
    assert set(store.hooks) == {"blocks.0.hook_resid_post", "blocks.1.hook_resid_post"}
    assert store.labels["depth"].min() >= 1  # special tokens dropped by pooling
    # later commands know the model and data from the run directory and reuse the capture
    assert (
        main(["probe", r, "--hooks", hooks, "--labels", "depth", "--ks", "1,2", "--no-progress"])
        == 0
    )
    assert run.probe_results_path.exists()
    fit = ["fit-sae", r, "--hook", "blocks.1.hook_resid_post", "--widths", "16", "--ks", "2"]
    assert main([*fit, "--steps", "20", "--no-progress"]) == 0
    assert "topk_w16_k2" in run.sae_dirs()
    capsys.readouterr()
    assert main(["tree-score", r, "--layers", "all", "--n", "3", "--no-progress"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [rec["layer"] for rec in records] == [1, 2]  # 0 = embeddings
    assert [rec["block"] for rec in records] == [0, 1]
    assert all(0.0 <= rec["parse_f1"] <= 1.0 and rec["n"] == 3 for rec in records)
    saved = [json.loads(line) for line in run.tree_scores_path.read_text().splitlines()]
    assert saved == records
    probe = ["structural-probe", r, "--rank", "4", "--max-epochs", "2", "--no-progress"]
    probe += ["--control-seed", "1"]  # the tiny model is torch.manual_seed(0)'s initialisation
    assert main(probe) == 0
    assert main(["report", r, "--max-sentences", "1", "--no-progress"]) == 0
    html = run.report_path.read_text()
    for heading in (
        "Structure per layer",
        "Tree projections per layer",
        "Structural probes per layer",
    ):
        assert heading in html
    assert "topk_w16_k2" in html and "Sparse probes" in html and "Span scores" in html
    assert "UUAS (random weights)" in html and "right-branching" in html
    assert "could not be built" not in html


def test_pretrained_run_errors(tmp_path, tiny_bert, tiny_gpt2, treebank, caplog):
    r = str(tmp_path / "run")
    hooks = ["--hooks", "blocks.0.hook_resid_post"]
    assert main(["capture", r, *hooks, "--model", str(tiny_bert), "--no-progress"]) == 2
    assert "--model and --treebank go together" in caplog.text
    assert main(["capture", r, *hooks, *_src(tmp_path / "nothing", treebank)]) == 2
    assert "only local Hugging Face folders" in caplog.text
    assert main(["capture", r, *hooks, *_src(tiny_bert, treebank)]) == 0
    caplog.clear()
    assert main(["capture", r, *hooks, *_src(tiny_gpt2, treebank)]) == 2  # another model
    assert "holds a run with other settings (--model:" in caplog.text
    caplog.clear()
    assert main(["capture", r, *hooks, "--split", "bogus", "--no-progress"]) == 2
    assert "unknown split 'bogus'" in caplog.text


def test_corpus_splits_are_disjoint_and_fixed(treebank):
    corpus = Corpus(str(treebank))
    parts = {s: corpus.sentences(s) for s in ("train", "dev", "test")}
    words = {s: {" ".join(x.words) for x in v} for s, v in parts.items()}
    assert sum(len(v) for v in parts.values()) == 8
    assert not (words["train"] & words["dev"]) and not (words["train"] & words["test"])
    assert parts == {s: Corpus(str(treebank)).sentences(s) for s in parts}
    assert len(corpus.sample("all", 3, seed=1)) == 3
    assert corpus.sample("all", 3, seed=1) == corpus.sample("all", 3, seed=1)


def test_minilm_capture_is_per_word(tmp_path):
    """The real MiniLM on three shipped sentences: one pooled row per word at every layer."""
    sentences = shipped_treebank("ptb")[:3]
    path = tmp_path / "three.mrg"
    from hierlens.models.treebank_export import write_ptb

    write_ptb(sentences, path)
    r = str(tmp_path / "run")
    argv = ["capture", r, "--hooks", "blocks.5.hook_resid_post", "--pool", "first"]
    assert main([*argv, *_src(minilm_path(), path)]) == 0
    store = ActivationStore.open(open_run(r).activations_dir(0))
    assert store.n_tokens == sum(len(s.words) for s in sentences)
    assert store["blocks.5.hook_resid_post"].shape[1] == 384


def test_structural_probe_command_writes_layers_and_controls(tmp_path, tiny_bert, treebank, capsys):
    r = str(tmp_path / "run")
    argv = ["structural-probe", r, "--rank", "4", "--max-epochs", "3", *_src(tiny_bert, treebank)]
    argv += ["--control-seed", "1"]
    assert main(argv) == 0
    run = open_run(r)
    records = [json.loads(x) for x in run.structural_probe_path.read_text().splitlines()]
    trained = [x for x in records if x["model"] == "trained"]
    random = [x for x in records if x["model"] == "random"]
    assert [x["layer"] for x in trained] == [0, 1, 2] == [x["layer"] for x in random]
    baseline = [x for x in records if x["model"] == "baseline"]
    assert len(baseline) == 1 and 0.0 <= baseline[0]["uuas"] <= 1.0
    assert all(0.0 <= x["uuas"] <= 1.0 for x in trained + random)
    # .mrg input: scored against dependencies from head rules, said in every record; 95%
    # bootstrap intervals; the 2-sentence test split is flagged
    assert all("head rules" in x["gold_tree"] for x in records)
    for x in trained:
        lo, hi = x["uuas_ci"]
        assert lo <= x["uuas"] <= hi and x["ci_level"] == 0.95
        assert any("test split has 2 sentences" in w for w in x["warnings"])
    report = ["report", r, "--max-sentences", "0", "--device", "cpu", "--no-progress"]
    assert main(report) == 0
    layers = (run.path / "report.html").read_text().split('<section id="layers">', 1)[1]
    assert "converted from the PTB brackets by head rules" in layers
    assert "UUAS 95% CI" in layers and "Warning:</b> the test split has 2 sentences" in layers
    # a trained run is refused with the reason
    assert main(["structural-probe", str(tmp_path / "missing")]) == 2


def test_pipeline_on_a_pretrained_model(tmp_path, tiny_bert, treebank):
    """``model = {pretrained}`` and ``data = {treebank}``: capture, SAEs, probes, tree scores
    per layer, structural probes and the report, resumable like any pipeline."""
    from hierlens.analysis.pipeline import run

    config = {
        "name": "bert",
        "out_dir": str(tmp_path),
        "model": {"pretrained": str(tiny_bert)},
        "data": {"treebank": str(treebank)},
        "capture": {"hooks": ["blocks.*.hook_resid_post"], "pool": "first"},
        "sae": {"hook": "blocks.1.hook_resid_post", "architectures": ["topk"], "widths": [16],
                "ks": [2], "steps": 20},
        "probes": {"labels": ["depth"], "ks": [1, 2]},
        "tree": {"n_trees": 3},
        "structural": {"rank": 4, "max_epochs": 2, "control_seed": 1},
        "train": {"device": "cpu"},
    }  # fmt: skip
    run_dir = run(config, progress=False)
    r = open_run(run_dir)
    assert r.is_pretrained and "topk_w16_k2" in r.sae_dirs()
    assert r.probe_results_path.exists() and r.tree_scores_path.exists()
    assert r.structural_probe_path.exists()
    html = r.report_path.read_text()
    assert "Structure per layer" in html and "could not be built" not in html
    assert run(config, progress=False) == run_dir  # rerun resumes: nothing to redo
    with pytest.raises(ValueError, match=r"\[data\] needs treebank"):
        run({**config, "data": {}}, progress=False)
    with pytest.raises(ValueError, match="takes only 'pretrained'"):
        run({**config, "model": {"pretrained": str(tiny_bert), "d_model": 8}}, progress=False)
