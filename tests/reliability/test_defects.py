"""One test per defect of the run-directory audit (torn writes, unchecked files, missing
manifests, SAE checkpoints, late validation, tracebacks instead of one-line errors, and the
minor points); each failed before its fix. The symbolic-link defects are in
``test_symlinks.py``, the trackers in ``test_trackers.py``, the tree distances in
``tests/models/test_tree_distances.py``."""

from __future__ import annotations

import json
import logging
import re
import shutil
import socket

import pytest
import torch

from hierlens.analysis import write_report
from hierlens.analysis.cli import main
from hierlens.analysis.grokking import track
from hierlens.analysis.pipeline import load_config
from hierlens.analysis.pipeline import run as run_pipeline
from hierlens.analysis.tree_scores import tree_scores_by_layer
from hierlens.core.atomic_io import read_jsonl
from hierlens.core.checksums import CorruptFileError
from hierlens.models import capture_checkpoints, save_checkpoint
from hierlens.models.run import Run, open_run
from hierlens.sae import TopKSAE, load_sae

from ._runs import conllu_text, train_argv, train_tiny, write_treebank
from ._stages import pipeline_config


def _strict(text: str) -> list:
    """JSON lines parsed strictly: a bare NaN or Infinity is an error."""

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return [json.loads(x, parse_constant=refuse) for x in text.splitlines() if x.strip()]


def _one_line(caplog, *needles: str) -> None:
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors, caplog.text
    assert all(n in errors[-1] for n in needles), errors[-1]
    assert "\n" not in errors[-1] and "Traceback" not in caplog.text


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    from tests.hf_folders import build_tiny_gpt2

    return build_tiny_gpt2(tmp_path_factory.mktemp("gpt2") / "model")


@pytest.fixture(scope="module")
def pipeline_done(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    return run_pipeline(pipeline_config(str(out)), progress=False)


# ----------------------------------------------------------------- 2: torn tails
def test_a_torn_metrics_line_is_cut_not_continued_on_resume(tmp_path, caplog):
    run = Run(tmp_path / "R")
    train_tiny(run.path, stop_at=10)
    with open(run.metrics_path, "ab") as f:  # an append cut by a size limit
        f.write(b'{"step": 15, "split": "tra')
    caplog.set_level(logging.WARNING)
    train_tiny(run.path)
    assert str(run.metrics_path) in caplog.text
    records = _strict(run.metrics_path.read_text())  # every line whole
    keys = [(r["step"], r["split"]) for r in records]
    assert len(keys) == len(set(keys)) and max(k[0] for k in keys) == 20
    assert run.metrics() == records


def test_a_torn_tracking_line_is_cut_not_continued(tmp_path):
    run = Run(tmp_path / "R")
    train_tiny(run.path)
    track(run.path, steps=[10], n=8, n_trees=3, device="cpu", progress=False)
    with open(run.tracking_path, "ab") as f:
        f.write(b'{"step": 20, "acc')
    track(run.path, n=8, n_trees=3, device="cpu", progress=False)
    assert [r["step"] for r in _strict(run.tracking_path.read_text())] == [10, 20]


# ----------------------------------------------------------------- 3: files read unchecked
@pytest.mark.parametrize("edit", ["optimizer", "step"])
def test_an_edited_checkpoint_state_is_not_resumed_from(edit, tmp_path, caplog):
    reference = train_tiny(tmp_path / "A")
    train_tiny(tmp_path / "B", stop_at=10)
    state = Run(tmp_path / "B").checkpoint_dir(10) / "state.json"
    meta = json.loads(state.read_text())
    if edit == "optimizer":
        meta["optimizer"]["members"] = 50
    else:
        meta["step"] = 1250
    state.write_text(json.dumps(meta))
    caplog.set_level(logging.WARNING)
    resumed = train_tiny(tmp_path / "B")
    assert resumed.step == 20 and resumed.train_loss == reference.train_loss
    assert str(state.parent) in caplog.text  # named as skipped


def test_edited_metrics_tree_score_and_structural_records_are_refused(tmp_path, gpt2):
    run = Run(tmp_path / "R")
    train_tiny(run.path)
    tree_scores_by_layer(run.path, n=6, device="cpu", progress=False)
    pre = tmp_path / "P"
    treebank = write_treebank(tmp_path, "t.conllu", conllu_text())
    argv = ["structural-probe", str(pre), "--model", str(gpt2), "--treebank", str(treebank)]
    assert main([*argv, "--rank", "4", "--max-epochs", "2", "--controls", "false"]) == 0
    for path in (run.metrics_path, run.tree_scores_path, Run(pre).structural_probe_path):
        text = path.read_text()
        digit = re.search(r'": (\d)', text)
        path.write_text(
            text[: digit.start(1)] + str(9 - int(digit.group(1))) + text[digit.end(1) :]
        )
        with pytest.raises(CorruptFileError, match=path.name):
            read_jsonl(path)


# ----------------------------------------------------------------- 4: missing manifests
def test_an_sae_folder_without_its_manifest_does_not_load_flipped_bytes(tmp_path):
    sae = TopKSAE.from_config(TopKSAE.config_class(d_in=4, d_sae=8, k=2), "cpu")
    sae.save(tmp_path / "s")
    (tmp_path / "s" / "hierlens_sha256.json").unlink()
    weights = tmp_path / "s" / "sae_weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="s"):
        load_sae(tmp_path / "s", device="cpu")


def test_a_pipeline_rerun_writes_a_lost_sae_manifest_back(pipeline_done, tmp_path):
    run = Run(shutil.copytree(pipeline_done, tmp_path / "p"))
    (run.sae_dir("topk_w8_k2") / "hierlens_sha256.json").unlink()  # a save killed midway
    run_pipeline(pipeline_config(str(tmp_path)), progress=False)
    assert (run.sae_dir("topk_w8_k2") / "hierlens_sha256.json").exists()
    load_sae(run.sae_dir("topk_w8_k2"), device="cpu", verify=True)


# ----------------------------------------------------------------- 6: fit-sae checkpoints
def test_fit_sae_checkpoints_into_the_run_and_resumes_mid_run(tmp_path, monkeypatch, caplog):
    import hierlens.sae.train_stack as sae_train

    train_tiny(tmp_path / "A")
    shutil.copytree(tmp_path / "A", tmp_path / "B")
    argv = ["--hook", "blocks.0.hook_resid_post", "--widths", "8,16", "--ks", "2", "--n", "16"]
    argv += ["--steps", "8", "--batch-size", "32", "--checkpoint-every", "2", "--no-progress"]
    assert main(["fit-sae", str(tmp_path / "A"), *argv]) == 0
    real, saved = sae_train.save_trainer_checkpoint, []

    def killed_after_two(*args, **kwargs):
        real(*args, **kwargs)
        saved.append(args[1])
        if len(saved) == 2:
            raise KeyboardInterrupt  # the process is killed here

    monkeypatch.setattr(sae_train, "save_trainer_checkpoint", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        main(["fit-sae", str(tmp_path / "B"), *argv])
    monkeypatch.undo()
    assert list((Run(tmp_path / "B").saes_dir / "training").iterdir())  # in the run
    caplog.set_level(logging.INFO)
    assert main(["fit-sae", str(tmp_path / "B"), *argv]) == 0
    assert "resuming SAE training at step 4" in caplog.text
    for name in ("topk_w8_k2", "topk_w16_k2"):
        a = load_sae(Run(tmp_path / "A").sae_dir(name), device="cpu", verify=True)
        b = load_sae(Run(tmp_path / "B").sae_dir(name), device="cpu", verify=True)
        assert all(torch.equal(getattr(a, t), getattr(b, t)) for t in a.tensor_names)
    assert not (Run(tmp_path / "B").saes_dir / "training").exists()  # done with


# ----------------------------------------------------------------- 7: late validation
@pytest.mark.parametrize(
    "section, change, needle",
    [
        ("probes", {"selection": "bogus"}, "probes.selection"),
        ("probes", {"ks": [0]}, "probes.ks"),
        ("sae", {"hook": "blocks.5.hook_resid_post"}, "blocks.5.hook_resid_post"),
        ("sae", {"widths": "16"}, "'16'"),  # not ['1', '6']
        ("tree", {"n": 0}, "tree.n"),
        ("capture", {"split": "bogus"}, "split 'bogus'"),
        ("structural", {"rank": 0}, "structural.rank"),
    ],
)
def test_every_pipeline_field_is_checked_before_stage_one(section, change, needle, tmp_path):
    config = pipeline_config(str(tmp_path))
    config[section] = {**config.get(section, {}), **change}
    with pytest.raises(ValueError, match=re.escape(needle)):
        run_pipeline(config, progress=False)
    assert not (tmp_path / "p" / "checkpoints").exists()  # nothing trained


# ----------------------------------------------------------------- 8: one-line errors
def _capture_argv(run_dir, model, treebank) -> list[str]:
    return ["capture", str(run_dir), "--model", str(model), "--treebank", str(treebank),
            "--hooks", "blocks.0.hook_resid_post", "--no-progress"]  # fmt: skip


@pytest.mark.parametrize("fault", ["config", "no weights", "garbage weights", "pickle"])
def test_a_broken_model_folder_is_one_line_naming_the_file(fault, gpt2, tmp_path, caplog):
    folder = shutil.copytree(gpt2, tmp_path / "model")
    weights = folder / "model.safetensors"
    needle = "model.safetensors"
    if fault == "config":
        (folder / "config.json").write_text("{not json")
        needle = "config.json"
    elif fault == "no weights":
        weights.unlink()
    elif fault == "garbage weights":
        weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!" * 4)
    else:
        from safetensors.torch import load_file

        torch.save(load_file(weights), folder / "pytorch_model.bin")
        weights.unlink()
        needle = "pytorch_model.bin"
    treebank = write_treebank(tmp_path, "t.conllu", conllu_text())
    assert main(_capture_argv(tmp_path / "R", folder, treebank)) == 2
    _one_line(caplog, needle)


@pytest.mark.parametrize(
    "fault, needles",
    [
        ("head x", ["sentence 2 (line 11)", "'x'"]),
        ("four columns", ["sentence 2", "columns"]),
        ("latin-1", ["line 4", "UTF-8"]),
    ],
)
def test_a_broken_treebank_is_one_line_naming_file_and_sentence(fault, needles, gpt2, tmp_path, caplog):  # fmt: skip
    text, encoding = conllu_text(), "utf-8"
    if fault == "head x":
        text = text.replace("2\tdog\t_\tNOUN\tNN\t_\t5\t", "2\tdog\t_\tNOUN\tNN\t_\tx\t")
    elif fault == "four columns":
        text = text.replace("3\tthat\t_\tPRON\tWDT\t_\t4\tnsubj\t_\t_", "3\tthat\t_\tPRON")
    else:
        text, encoding = text.replace("\tcat\t", "\tcafé\t", 1), "latin-1"
    treebank = write_treebank(tmp_path, "bad.conllu", text, encoding)
    assert main(_capture_argv(tmp_path / "R", gpt2, treebank)) == 2
    _one_line(caplog, str(treebank), *needles)


def test_too_many_sequences_is_one_line_naming_the_flag(tmp_path, caplog):
    train_tiny(tmp_path / "R")
    argv = ["capture", str(tmp_path / "R"), "--hooks", "blocks.0.hook_resid_post"]
    assert main([*argv, "--n", str(10**12), "--no-progress"]) == 2
    _one_line(caplog, "--n 1000000000000")


def test_a_ray_address_without_a_cluster_is_one_line_naming_the_flag(tmp_path, caplog):
    pytest.importorskip("ray")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    train_tiny(tmp_path / "R")
    argv = ["track", str(tmp_path / "R"), "--backend", "ray", "--address", f"127.0.0.1:{port}"]
    assert main([*argv, "--n", "8", "--n-trees", "3", "--no-progress"]) == 2
    _one_line(caplog, f"--address 127.0.0.1:{port}")


# ----------------------------------------------------------------- 9: minor points
def test_a_corrupt_activation_shard_is_named_when_captured_again(tmp_path, caplog):
    run = Run(tmp_path / "R")
    train_tiny(run.path)
    capture_checkpoints(run.path, ["blocks.0.hook_resid_post"], n=16, shard_bytes=2048, progress=False)  # fmt: skip
    shard = sorted(run.activations_dir(20).rglob("shard_*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-8])
    caplog.set_level(logging.WARNING)
    capture_checkpoints(run.path, ["blocks.0.hook_resid_post"], n=16, shard_bytes=2048, progress=False)  # fmt: skip
    assert shard.name in caplog.text and "captured again" in caplog.text


def test_a_failed_pretrained_command_does_not_block_its_corrected_retry(gpt2, tmp_path):
    treebank = write_treebank(tmp_path, "t.conllu", conllu_text())
    broken = shutil.copytree(gpt2, tmp_path / "broken")
    (broken / "model.safetensors").unlink()
    assert main(_capture_argv(tmp_path / "R", broken, treebank)) == 2
    assert main(_capture_argv(tmp_path / "R", gpt2, treebank)) == 0


def test_structural_probes_skip_a_sentence_longer_than_the_context(gpt2, tmp_path, caplog):
    long = "\n".join(f"{i + 1}\tw{i}\t_\tNOUN\tNN\t_\t{i}\tdep\t_\t_" for i in range(120))
    treebank = write_treebank(tmp_path, "t.conllu", conllu_text() + "\n" + long + "\n\n")
    argv = ["structural-probe", str(tmp_path / "R"), "--model", str(gpt2), "--treebank"]
    caplog.set_level(logging.WARNING)
    assert (
        main([*argv, str(treebank), "--rank", "4", "--max-epochs", "2", "--controls", "false"]) == 0
    )
    assert "skipped 1 of" in caplog.text


def test_the_span_section_handles_a_word_with_a_space(gpt2, tmp_path):
    text = conllu_text().replace("6\tmat\t", "6\tdoor mat\t", 1)
    treebank = write_treebank(tmp_path, "t.conllu", text)
    assert main(_capture_argv(tmp_path / "R", gpt2, treebank)) == 0
    html = write_report(tmp_path / "R", max_sentences=2, max_saes=0).read_text()
    trees = html.split('<section id="trees">', 1)[1].split("</section>", 1)[0]
    assert 'class="error"' not in trees and "door mat" in trees


def test_a_diverged_run_warns_exits_nonzero_and_writes_strict_json(tmp_path, caplog):
    run = Run(tmp_path / "R")
    assert main(train_argv(run.path, lr=1e30)) == 3
    assert "diverged at step" in caplog.text
    _strict(run.metrics_path.read_text())
    assert main([*train_argv(run.path, lr=1e30), "--allow-divergence"]) == 0


def test_nonfinite_activations_are_allowed_from_the_command_line(tmp_path, caplog):
    run = Run(tmp_path / "R")
    train_tiny(run.path)
    model = open_run(run.path).load_model(20, device="cpu")
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "W_E" in n or "embed" in n).fill_(
            float("nan")
        )
    with run.lock():
        save_checkpoint(run.checkpoint_dir(30), 30, model)
    argv = ["capture", str(run.path), "--hooks", "blocks.0.hook_resid_post", "--steps", "30"]
    assert main([*argv, "--n", "8", "--no-progress"]) == 2
    _one_line(caplog, "--allow-nonfinite")
    assert main([*argv, "--n", "8", "--no-progress", "--allow-nonfinite"]) == 0


def test_no_resume_overwrite_clears_what_the_old_model_produced(pipeline_done, tmp_path):
    run = Run(shutil.copytree(pipeline_done, tmp_path / "p"))
    (run.path / "notes.txt").write_text("mine")  # not the run's: kept
    assert main([*train_argv(run.path), "--no-resume", "--overwrite"]) == 0
    left = sorted(p.name for p in run.path.iterdir())
    assert "notes.txt" in left and (run.path / "notes.txt").read_text() == "mine"
    for gone in ("activations", "saes", "probes", "tracking.jsonl"):
        assert gone not in left, left
    assert open_run(run.path).steps == [10, 20]


def test_fit_sae_without_mdl_writes_the_sae_table(tmp_path):
    run = Run(tmp_path / "R")
    train_tiny(run.path)
    argv = ["fit-sae", str(run.path), "--hook", "blocks.0.hook_resid_post", "--widths", "8,16"]
    assert main([*argv, "--ks", "2", "--steps", "3", "--n", "16", "--no-progress"]) == 0
    assert sorted(r["name"] for r in read_jsonl(run.sae_table_path)) == [
        "topk_w16_k2",
        "topk_w8_k2",
    ]


def test_a_strings_list_field_is_reported_as_given(tmp_path):
    with pytest.raises(ValueError, match=re.escape("got '16'")):
        load_config({**pipeline_config(str(tmp_path)), "sae": {"widths": "16"}})
