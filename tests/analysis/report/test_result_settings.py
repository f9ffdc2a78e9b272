"""What each result records and how the report shows it: punctuation handling of tree scores,
one layer numbering (0 = embeddings), tag names in probe legends, the random-weights control
that must differ from the model, and the report sections of a pretrained run."""

from __future__ import annotations

import json

import pytest
import torch

from hierlens.analysis.cli import main
from hierlens.models import load_pretrained, open_run, read_ptb, shipped_treebank
from hierlens.models.text import label_vocabulary
from hierlens.models.treebank_export import write_ptb
from tests.hf_folders import build_tiny_bert

NUMBERING = "0 = embeddings; layer l = output of block l-1"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def sentences():
    return shipped_treebank("ptb")[:8]


@pytest.fixture(scope="module")
def treebank(tmp_path_factory, sentences):
    path = tmp_path_factory.mktemp("tb") / "eight.mrg"
    write_ptb(sentences, path)
    return path


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory, tiny_bert, treebank):
    """A tiny-BERT run with tree scores of every layer, punctuation dropped (the default)
    and kept."""
    r = str(tmp_path_factory.mktemp("runs") / "run")
    src = ["--model", str(tiny_bert), "--treebank", str(treebank), "--no-progress"]
    assert main(["tree-score", r, "--layers", "all", *src]) == 0
    assert main(["tree-score", r, "--layers", "all", "--keep-punct", "--no-progress"]) == 0
    return open_run(r)


def _saved(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tree_score_drops_punctuation_by_default_and_warns_when_kept(
    tmp_path, tiny_bert, treebank, sentences, caplog
):
    from hierlens.analysis.trees.metrics import baseline_parse_f1

    r = str(tmp_path / "run")
    src = ["--model", str(tiny_bert), "--treebank", str(treebank), "--no-progress"]
    assert main(["tree-score", r, *src]) == 0
    assert "punctuation kept" not in caplog.text
    assert main(["tree-score", r, "--keep-punct", "--no-progress"]) == 0
    assert "tree scores with punctuation kept" in caplog.text
    dropped, kept = _saved(open_run(r).tree_scores_path)  # both settings are kept
    assert dropped["settings"]["punct"] == "dropped" and kept["settings"]["punct"] == "kept"
    # the baselines are those of the sentences as scored: without, then with punctuation
    without = [s.without_punct().spans for s in sentences]
    assert any(s.punct[-1] for s in sentences)
    assert dropped["parse_f1_right"] == baseline_parse_f1(without, "right")
    assert kept["parse_f1_right"] == baseline_parse_f1([s.spans for s in sentences], "right")
    assert dropped["parse_f1_right"] != kept["parse_f1_right"]


def test_one_layer_numbering_across_tree_scores_structural_probes_and_plots(
    scored_run, tiny_bert, sentences, caplog
):
    from hierlens.analysis import parse_f1, span_scores, tree_projection
    from hierlens.analysis.report import show
    from hierlens.analysis.tree_scores import read_tree_scores
    from hierlens.core.checksums import write_checked
    from hierlens.models.text import tokenize_words

    r = str(scored_run.path)
    records = [
        x for x in _saved(scored_run.tree_scores_path) if x["settings"]["punct"] == "dropped"
    ]
    assert [x["layer"] for x in records] == [1, 2] and [x["block"] for x in records] == [0, 1]
    assert all(x["settings"]["layer_numbering"] == NUMBERING for x in records)
    # layer l is the output of block l-1: the API's span scores of that block agree
    p = load_pretrained(tiny_bert, device="cpu")
    plain = [s.without_punct() for s in sentences]
    examples = tokenize_words(p.tokenizer, plain)
    for record in records:
        scores = span_scores(p.model, examples, layer=record["layer"] - 1, progress=False)
        trees = [tree_projection(s) for s in scores]
        assert record["parse_f1"] == parse_f1(trees, [s.spans for s in plain])
    caplog.clear()
    assert main(["tree-score", r, "--layers", "0", "--no-progress"]) == 2
    assert "layer 0 is the embeddings" in caplog.text
    probe = ["structural-probe", r, "--rank", "2", "--max-epochs", "1", "--controls", "false"]
    assert main([*probe, "--no-progress"]) == 0
    structural = _saved(scored_run.structural_probe_path)
    trained = [x for x in structural if x["model"] == "trained"]
    assert [x["layer"] for x in trained] == [0, 1, 2]
    assert all(x["settings"]["layer_numbering"] == NUMBERING for x in structural)
    # the report's per-layer charts say which numbering they use, on both axes
    body = show(r, "layers").body
    assert body.count(f"layer ({NUMBERING})") == 2
    # the chart shows the punctuation-dropped scores (written first), and says so
    assert "punctuation: dropped" in body and "1 other setting(s), not shown" in body
    # records written before records held settings numbered blocks: read as layers
    old = dict(records[0])
    old.pop("settings"), old.pop("block")
    old["layer"] = 0
    # (written through the checked layer, as hierlens wrote them: only the records are old)
    path = scored_run.tree_scores_path
    saved = path.read_bytes()
    write_checked({path: (json.dumps(old) + "\n").encode()})
    try:
        (read,) = read_tree_scores(r)
    finally:
        write_checked({path: saved})
    assert read["layer"] == 1 and read["block"] == 0
    assert read["settings"]["punct"] == "kept"  # the run's corpus keeps punctuation


@pytest.mark.filterwarnings("ignore:labels\\['pos'\\]")
def test_tag_names_are_stored_with_the_run_and_shown_in_probe_legends(scored_run, treebank, capsys):
    from hierlens.analysis.report import show

    r = str(scored_run.path)
    names = json.loads(scored_run.label_names_path.read_text())
    assert names == {k: list(v) for k, v in label_vocabulary(read_ptb(treebank)).items()}
    argv = ["probe", r, "--hooks", "blocks.1.hook_resid_post", "--labels", "pos"]
    capsys.readouterr()
    assert main([*argv, "--ks", "1", "--pool", "first", "--no-progress"]) == 0
    printed = {json.loads(line)["feature"] for line in capsys.readouterr().out.splitlines()}
    records = _saved(scored_run.probe_results_path)
    coded = {x["feature"] for x in records if x["label"] == "pos"}
    assert coded and all(f.startswith("pos=") and f[4:].isdigit() for f in coded)
    body = show(r, "probes").body
    shown = {f"pos={names['pos'][int(f[4:])]}" for f in coded}
    assert all(json.dumps(name) in body for name in shown)  # legend entries by tag name
    assert not any(json.dumps(f) in body for f in coded)
    assert printed == shown  # hierlens probe prints them by name too
    assert "special tokens: bos: [CLS] words [SEP]" in body  # the activations' settings
    assert "rows: one per word (first of its tokens)" in body
    summary = show(r, "summary").body
    assert "special tokens" in summary and "[CLS] words [SEP]" in summary
    assert NUMBERING in summary


def test_the_random_weights_control_must_differ_from_the_model(tmp_path, tiny_bert, treebank):
    from hierlens.analysis.structural import shared_weight_matrices

    # the tiny BERT is torch.manual_seed(0)'s initialisation: control seed 0 is the model
    r = str(tmp_path / "run")
    src = ["--model", str(tiny_bert), "--treebank", str(treebank), "--no-progress"]
    probe = ["structural-probe", r, "--rank", "2", "--max-epochs", "1", *src]
    assert main(probe) == 2
    assert not open_run(r).structural_probe_path.exists()
    assert main([*probe, "--control-seed", "1"]) == 0
    records = _saved(open_run(r).structural_probe_path)
    assert {x["settings"]["control_seed"] for x in records} == {1}
    # the check itself, on modules whose shared matrices are known
    a, b = torch.nn.Linear(3, 4), torch.nn.Linear(3, 4)
    assert shared_weight_matrices(a, b) == []
    b.weight.data.copy_(a.weight.data)
    assert shared_weight_matrices(a, b) == ["weight"]  # biases (1-D) are not compared


def test_show_on_a_pretrained_run_names_the_sections_it_has(scored_run):
    from hierlens.analysis.report import SECTIONS, sections_with_data, show
    from hierlens.analysis.report.show import SECTION_INPUTS

    assert list(SECTION_INPUTS) == [name for name, _, _ in SECTIONS]
    r = str(scored_run.path)
    have = sections_with_data(r)
    assert {"summary", "trees", "layers"} <= set(have) and "training" not in have
    with pytest.raises(
        ValueError,
        match=r"a pretrained run has none\); sections with data in this run: summary, trees",
    ):
        show(r, "training")
    with pytest.raises(ValueError, match="unknown report section 'train'; sections:"):
        show(r, "train")
    for name in have:
        assert show(r, name).body
