"""A pretrained run's settings: stored when the run is made, reused by every later command,
refused when a flag disagrees with them, and recoverable after a failed command."""

from __future__ import annotations

import json

import pytest

from hierlens.analysis.cli import main
from hierlens.models import ActivationStore, load_pretrained, open_run, shipped_treebank
from hierlens.models.run import write_run_config
from hierlens.models.special_tokens import SpecialTokens
from hierlens.models.text import tokenize_words
from hierlens.models.treebank_export import write_ptb
from tests.hf_folders import build_tiny_bert, build_tiny_gpt2

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    return build_tiny_gpt2(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def treebanks(tmp_path_factory):
    """Two small PTB files with punctuation: six sentences and four others."""
    folder = tmp_path_factory.mktemp("tb")
    sentences = shipped_treebank("ptb")
    write_ptb(sentences[:6], folder / "six.mrg")
    write_ptb(sentences[6:10], folder / "four.mrg")
    return folder / "six.mrg", folder / "four.mrg"


def _src(model, treebank):
    return ["--model", str(model), "--treebank", str(treebank), "--no-progress"]


def _records(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


# ------------------------------------------------------------------ special tokens
def test_special_token_policies_resolve_to_explicit_ids(tiny_gpt2, tiny_bert):
    gpt2, bert = load_pretrained(tiny_gpt2, device="cpu"), load_pretrained(tiny_bert, device="cpu")
    bos = gpt2.tokenizer.bos_token_id
    cls, sep = bert.special_ids["cls"], bert.special_ids["sep"]
    frames = {
        (name, policy): SpecialTokens(policy).resolve(p.tokenizer)
        for name, p in (("gpt2", gpt2), ("bert", bert))
        for policy in ("bos", "template", "none")
    }
    expected = {
        ("gpt2", "bos"): ((bos,), ()),
        ("gpt2", "template"): ((), ()),
        ("gpt2", "none"): ((), ()),
        ("bert", "bos"): ((cls,), (sep,)),  # a BERT has no BOS token: its own frame
        ("bert", "template"): ((cls,), (sep,)),
        ("bert", "none"): ((), ()),
    }
    assert {k: (f.prefix, f.suffix) for k, f in frames.items()} == expected
    # the bridge's own tokenizer copy (which TransformerLens sets to add a BOS token) gives
    # the same default frame as the folder's tokenizer
    assert SpecialTokens().resolve(gpt2.model.tokenizer) == frames[("gpt2", "bos")]
    stored = frames[("gpt2", "bos")].to_dict()
    assert json.loads(json.dumps(stored)) == {"policy": "bos", "prefix": [bos], "suffix": []}
    assert SpecialTokens.from_dict(stored) == frames[("gpt2", "bos")]
    # the frame is put around the words' own tokens; word spans follow it
    sentence = shipped_treebank("ptb")[:1]
    for policy in ("bos", "none"):
        (ex,) = tokenize_words(gpt2.tokenizer, sentence, special_tokens=policy)
        bare = gpt2.tokenizer([list(sentence[0].words)], is_split_into_words=True)["input_ids"][0]
        shift = 1 if policy == "bos" else 0
        assert ex.tokens == (bos,) * shift + tuple(bare)
        assert ex.word_spans[0][0] == shift and ex.token_labels["word"][:shift] == (-1,) * shift
    with pytest.raises(ValueError, match="policy must be one of"):
        SpecialTokens("eos")


def test_a_run_stores_its_special_tokens_and_every_later_command_reuses_them(
    tmp_path, tiny_gpt2, treebanks, capsys, caplog
):
    six, _ = treebanks
    r = str(tmp_path / "run")
    argv = ["tree-score", r, "--layers", "1", "--special-tokens", "template", *_src(tiny_gpt2, six)]
    assert main(argv) == 0
    run = open_run(r)
    assert run.config["special_tokens"] == {"policy": "template", "prefix": [], "suffix": []}
    bos = load_pretrained(tiny_gpt2, device="cpu").tokenizer.bos_token_id
    # later commands without the flag keep the run's frame: no BOS
    assert main(["capture", r, "--hooks", HOOK, "--no-progress"]) == 0
    store = ActivationStore.open(run.activations_dir(0))
    assert bos not in set(store.index["token"].tolist())
    assert all(ex.tokens[0] != bos for ex in run.examples("all"))
    # a disagreeing flag is refused and says what to do
    caplog.clear()
    assert main(["tree-score", r, "--special-tokens", "bos", "--no-progress"]) == 2
    assert "--special-tokens: 'template' in the run, 'bos' given" in caplog.text
    assert "choose another run directory" in caplog.text


# ------------------------------------------------------------------ flags on existing runs
def test_flags_that_cannot_apply_to_an_existing_run_are_refused(
    tmp_path, tiny_gpt2, treebanks, caplog, capsys
):
    six, _ = treebanks
    r = str(tmp_path / "run")
    assert main(["tree-score", r, "--layers", "1", *_src(tiny_gpt2, six)]) == 0
    before = open_run(r).tree_scores_path.read_text()
    caplog.clear()
    # --drop-punct fixes how a run reads its corpus; on a run made without it it is refused
    assert main(["tree-score", r, "--drop-punct", "--no-progress"]) == 2
    assert "--drop-punct: False in the run, True given" in caplog.text
    assert "tree-score drops punctuation by default" in caplog.text
    assert open_run(r).tree_scores_path.read_text() == before  # nothing was computed
    caplog.clear()
    assert main(["capture", r, "--hooks", HOOK, "--format", "conllu", "--no-progress"]) == 2
    assert "--format: 'ptb' in the run, 'conllu' given" in caplog.text
    # agreeing flags are accepted
    assert main(["capture", r, "--hooks", HOOK, "--format", "ptb", "--no-progress"]) == 0
    caplog.clear()
    # --seed only draws sentences: without --n a corpus run uses every one of them
    assert main(["capture", r, "--hooks", HOOK, "--seed", "3", "--no-progress"]) == 2
    assert "--seed draws --n sentences" in caplog.text
    assert main(["tree-score", r, "--layers", "1", "--seed", "3", "--no-progress"]) == 2
    caplog.clear()
    assert main(["structural-probe", r, "--controls", "false", "--control-seed", "1"]) == 2
    assert "which --controls false skips" in caplog.text
    # source flags without --model/--treebank on a directory without a run
    caplog.clear()
    assert main(["tree-score", str(tmp_path / "new"), "--drop-punct"]) == 2
    assert "--model and --treebank go together" in caplog.text
    # a trained run takes no pretrained-run flags, and has no punctuation to keep
    trained = tmp_path / "trained"
    write_run_config(trained, {"task": {"name": "dyck", "params": {}}, "model": {}})
    caplog.clear()
    assert main(["tree-score", str(trained), "--special-tokens", "bos"]) == 2
    assert "is a trained run; --special-tokens make a pretrained run" in caplog.text
    caplog.clear()
    assert main(["tree-score", str(trained), "--keep-punct"]) == 2
    assert "mark no punctuation" in caplog.text


# ------------------------------------------------------------------ recovery after failures
def test_a_failed_command_does_not_pin_its_run_directory(tmp_path, tiny_gpt2, treebanks, caplog):
    six, four = treebanks
    r = str(tmp_path / "run")
    bad = ["capture", r, "--hooks", "blocks.9.hook_resid_post", *_src(tiny_gpt2, six)]
    assert main(bad) == 2  # an unknown hook, after the run's config.json was written
    assert open_run(r).corpus.path == str(six)
    # the corrected command, on another treebank, takes the directory (it holds no results)
    assert main(["capture", r, "--hooks", HOOK, *_src(tiny_gpt2, four)]) == 0
    run = open_run(r)
    assert run.corpus.path == str(four)
    store = ActivationStore.open(run.activations_dir(0))
    assert store.n_tokens == sum(len(e.tokens) for e in run.examples("all"))


def _failing_capture(monkeypatch):
    """Make the third forward of a capture raise (the first is a shape probe)."""
    import importlib

    capture_module = importlib.import_module("hierlens.models.capture")

    real, calls = capture_module._Runner.forward, [0]

    def forward(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError("simulated failure in the middle of a capture")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(capture_module._Runner, "forward", forward)


def test_a_failed_capture_is_recovered_by_a_rerun_or_overwrite(
    tmp_path, tiny_gpt2, treebanks, monkeypatch, caplog
):
    six, four = treebanks
    small = ["--batch-size", "2"]
    for name in ("same", "other"):
        r = str(tmp_path / name)
        with monkeypatch.context() as m:
            _failing_capture(m)
            with pytest.raises(RuntimeError, match="simulated failure"):
                main(["capture", r, "--hooks", HOOK, *small, *_src(tiny_gpt2, six)])
        assert (tmp_path / name / "activations").is_dir()  # a partial store is left
    # the same settings again: the capture resumes and completes
    assert main(["capture", str(tmp_path / "same"), "--hooks", HOOK, *small, "--no-progress"]) == 0
    assert ActivationStore.open(open_run(tmp_path / "same").activations_dir(0)).n_tokens > 0
    # other settings: refused without --overwrite (naming it), taken with it
    other = ["capture", str(tmp_path / "other"), "--hooks", HOOK, *_src(tiny_gpt2, four)]
    caplog.clear()
    assert main(other) == 2
    assert "pass --overwrite" in caplog.text
    assert main([*other, "--overwrite"]) == 0
    run = open_run(tmp_path / "other")
    assert run.corpus.path == str(four)
    store = ActivationStore.open(run.activations_dir(0))
    assert store.n_tokens == sum(len(e.tokens) for e in run.examples("all"))


def test_a_pipeline_rerun_with_other_stage_settings_is_refused(tmp_path, tiny_gpt2, treebanks):
    """The pipeline reuses saved SAEs and probe results; a rerun whose [sae] or [probes]
    table differs from the settings that made them is refused instead of ignored."""
    from hierlens.analysis.pipeline import run

    six, _ = treebanks
    config = {
        "name": "pipe",
        "out_dir": str(tmp_path),
        "model": {"pretrained": str(tiny_gpt2)},
        "data": {"treebank": str(six)},
        "capture": {"hooks": [HOOK], "pool": "first"},
        "sae": {"hook": HOOK, "architectures": ["topk"], "widths": [16], "ks": [2], "steps": 5},
        "probes": {"labels": ["depth"], "ks": [1]},
        "tree": {"enabled": False},
        "structural": {"enabled": False},
        "report": False,
        "train": {"device": "cpu"},
    }
    run_dir = run(config, progress=False)
    stored = json.loads(open_run(run_dir).stage_settings_path.read_text())
    assert stored["sae"]["steps"] == 5 and stored["probes"]["ks"] == [1]
    assert run(config, progress=False) == run_dir  # the same settings: resumed
    with pytest.raises(ValueError, match=r"\[sae\] differs .* \(steps: 5 -> 9\)"):
        run({**config, "sae": {**config["sae"], "steps": 9}}, progress=False)
    with pytest.raises(ValueError, match=r"\[probes\] differs .* \(ks: \[1\] -> \[1, 2\]\)"):
        run({**config, "probes": {**config["probes"], "ks": [1, 2]}}, progress=False)
    # a runtime setting is not a result setting
    run({**config, "sae": {**config["sae"], "device": "cpu"}}, progress=False)
