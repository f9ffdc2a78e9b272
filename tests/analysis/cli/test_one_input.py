"""One input, one answer: the command line, the pipeline and the Python API give a
pretrained model the same tokens (the special tokens a run stores when it is created), so
they give the same tree scores."""

from __future__ import annotations

import json

import pytest

from hierlens.analysis.cli import main
from hierlens.models import load_pretrained, open_run, read_ptb, shipped_treebank, tokenize_words
from tests.hf_folders import build_tiny_gpt2


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    return build_tiny_gpt2(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def plain_treebank(tmp_path_factory):
    """Six shipped sentences without punctuation, so every way of scoring them sees the
    same words."""
    from hierlens.models.treebank_export import write_ptb

    path = tmp_path_factory.mktemp("tb") / "six.mrg"
    write_ptb([s.without_punct() for s in shipped_treebank("ptb")[:6]], path)
    return path


def test_cli_pipeline_and_api_give_a_causal_model_the_same_tokens_and_scores(
    tmp_path, tiny_gpt2, plain_treebank, capsys
):
    from hierlens.analysis import parse_f1, span_scores, tree_projection, tree_score
    from hierlens.analysis.pipeline import run

    cli_dir = tmp_path / "cli"
    argv = ["tree-score", str(cli_dir), "--layers", "all", "--no-progress"]
    capsys.readouterr()
    assert main([*argv, "--model", str(tiny_gpt2), "--treebank", str(plain_treebank)]) == 0
    cli = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    # the Python API, as a user writes it
    p = load_pretrained(tiny_gpt2, device="cpu")
    sentences = read_ptb(plain_treebank)
    examples = tokenize_words(p.tokenizer, sentences)
    assert [e.tokens for e in open_run(cli_dir).examples("all")] == [e.tokens for e in examples]
    assert all(e.tokens[0] == p.tokenizer.bos_token_id for e in examples)  # GPT-2: BOS first
    assert len(cli) == p.n_layers
    gold = [s.spans for s in sentences]
    for block, record in enumerate(cli):
        scores = span_scores(p.model, examples, layer=block, device="cpu", progress=False)
        trees = [tree_projection(s) for s in scores]
        assert record["parse_f1"] == pytest.approx(parse_f1(trees, gold), abs=1e-12)
        assert record["tree_score"] == pytest.approx(tree_score(scores, trees), rel=1e-6)

    # the pipeline on the same model and sentences writes the same records
    config = {
        "name": "pipe",
        "out_dir": str(tmp_path),
        "model": {"pretrained": str(tiny_gpt2)},
        "data": {"treebank": str(plain_treebank)},
        "capture": {"hooks": ["blocks.0.hook_resid_post"]},
        "sae": {"enabled": False},
        "probes": {"enabled": False},
        "structural": {"enabled": False},
        "tree": {"n_trees": None},
        "report": False,
        "train": {"device": "cpu"},
    }
    piped = open_run(run(config, progress=False))
    saved = [json.loads(line) for line in piped.tree_scores_path.read_text().splitlines()]
    assert len(saved) == len(cli)
    for mine, theirs in zip(saved, cli):
        assert mine["parse_f1"] == pytest.approx(theirs["parse_f1"], abs=1e-12)
        assert mine["tree_score"] == pytest.approx(theirs["tree_score"], rel=1e-6)
