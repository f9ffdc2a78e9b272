"""Every command and code snippet of ``docs/first-hour.md`` runs, on a tiny GPT-2 and eight
sentences, and its pipeline TOML is ``examples/pretrained_pipeline.toml`` verbatim."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from hierlens.analysis.cli import main
from hierlens.models import shipped_treebank
from hierlens.models.treebank_export import write_ptb
from tests.hf_folders import build_tiny_gpt2

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "first-hour.md"
TOML = ROOT / "examples" / "pretrained_pipeline.toml"
PLACEHOLDERS = {"MODEL": "path/to/your-model", "TREEBANK": "path/to/your-treebank.mrg"}


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), re.S)


def _hierlens(line: str, env: dict[str, str], toml_copy: Path) -> list[str]:
    args = shlex.split(_expand(line, env))
    assert args[0] == "hierlens", line
    args = args[1:]
    if args[:2] == ["run", "examples/pretrained_pipeline.toml"]:
        args[1] = str(toml_copy)  # the committed TOML with this test's two paths
    return args


def _expand(line: str, env: dict[str, str]) -> str:
    def value(m: re.Match) -> str:
        assert m.group(1) in env, f"unknown variable {m.group(1)} in {line!r}"
        return env[m.group(1)]

    return re.sub(r"\$(\w+)", value, line)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    model = build_tiny_gpt2(tmp_path / "model", seed=1)  # not control seed 0's initialisation
    treebank = tmp_path / "eight.mrg"
    write_ptb(shipped_treebank("ptb")[:8], treebank)
    monkeypatch.chdir(tmp_path)
    return {"MODEL": str(model), "TREEBANK": str(treebank)}


def test_the_pipeline_toml_of_the_page_is_the_committed_example():
    (shown,) = _blocks("toml")
    assert shown == TOML.read_text()
    config = tomllib.loads(shown)
    assert config["model"]["pretrained"] == PLACEHOLDERS["MODEL"]
    assert config["data"]["treebank"] == PLACEHOLDERS["TREEBANK"]


@pytest.mark.filterwarnings("ignore:labels")
def test_every_command_and_snippet_of_the_first_hour_page_runs(workdir, capsys):
    from hierlens.analysis.tree_scores import read_tree_scores
    from hierlens.models import open_run

    text = DOC.read_text()
    toml_copy = Path("pipeline.toml")
    config = TOML.read_text()
    for name, placeholder in PLACEHOLDERS.items():
        assert placeholder in config
        config = config.replace(placeholder, workdir[name])
    toml_copy.write_text(config)

    commands = []
    for block in _blocks("bash"):
        for line in block.strip().splitlines():
            m = re.fullmatch(r"(\w+)=(\S+)", line)
            if m:  # the page's variables: this test's model and treebank
                assert PLACEHOLDERS[m.group(1)] == m.group(2)
                continue
            commands.append(line)
    inline = re.findall(r"`(hierlens [^`]+)`", text)
    assert len(commands) >= 6 and inline
    for line in commands + inline:
        assert main(_hierlens(line, workdir, toml_copy)) == 0, line
    run = open_run("runs/mine")
    assert run.report_path.exists() and set(run.sae_dirs()) == {"topk_w256_k8", "topk_w512_k8"}
    assert open_run("runs/my_model").report_path.exists()  # the pipeline's run

    printed = {}
    for block in _blocks("python"):
        source = block
        for name, placeholder in PLACEHOLDERS.items():
            source = source.replace(placeholder, workdir[name])
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(source, str(DOC), "exec"), {})
        printed[block] = out.getvalue()
    # the API snippet prints the parse F1 of layer 1 that tree-score wrote: the same number
    (api,) = [b for b in printed if "load_pretrained" in b]
    layer1 = next(r for r in read_tree_scores(run) if r["layer"] == 1)
    assert float(printed[api].strip()) == pytest.approx(layer1["parse_f1"], abs=1e-12)
    (notebook,) = [b for b in printed if "sections_with_data" in b]
    assert "'layers'" in printed[notebook] and "'training'" in printed[notebook]
    assert json.loads(run.label_names_path.read_text())["pos"]
