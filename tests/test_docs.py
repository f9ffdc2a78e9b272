"""The documentation: its examples run, its citations and paths resolve, its generated
reference pages cover the code, and the site builds with ``mkdocs build --strict``.

Marking convention (also in docs/architecture.md): a Python code block on a page runs in
this test when the line right above its opening fence is ``<!-- run -->``. The marked blocks
of one page run in order in one namespace (a later block uses what an earlier one built),
in a fresh temporary working directory, so ``runs/...`` paths land there. Unmarked blocks are
shown only (for example those that need your own model folder or hours of compute).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
HOOKS = DOCS / "hooks"
WINGS = ("models", "sae", "probes", "analysis", "core")
MARKER = "<!-- run -->"


def _load_hook(name: str):
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", HOOKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pages() -> list[Path]:
    """README.md and every Markdown page of the site (the build hooks aside)."""
    found = [p for p in sorted(DOCS.rglob("*.md")) if HOOKS not in p.parents]
    return [ROOT / "README.md", *found]


def marked_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of every Python block marked to run."""
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        if i + 1 >= len(lines) or lines[i + 1].strip() != "```python":
            raise AssertionError(f"line {i + 1}: {MARKER} must stand right above a ```python fence")
        end = next((j for j in range(i + 2, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise AssertionError(f"line {i + 2}: the marked block is never closed")
        blocks.append((i + 3, "\n".join(lines[i + 2 : end])))
    return blocks


PAGES_WITH_EXAMPLES = [p for p in pages() if MARKER in p.read_text(encoding="utf-8")]


def _example_param(page: Path):
    """A page, marked ``pretrained`` when its examples run a Hugging Face model (the marker
    tests/conftest.py puts on test modules that do)."""
    from tests.conftest import _PRETRAINED

    code = "\n".join(c for _, c in marked_blocks(page.read_text(encoding="utf-8")))
    marks = [pytest.mark.pretrained] if _PRETRAINED.search(code) else []
    return pytest.param(page, marks=marks, id=str(page.relative_to(ROOT)))


def test_marked_blocks_found() -> None:
    # the guide pages and the README carry runnable examples; losing them all is a mistake
    names = {p.name for p in PAGES_WITH_EXAMPLES}
    assert {"README.md", "getting-started.md", "models.md", "sae.md", "probes.md"} <= names


def test_marker_parsing() -> None:
    text = "a\n<!-- run -->\n```python\nx = 1\ny = 2\n```\n```python\nz = 3\n```\n"
    assert marked_blocks(text) == [(4, "x = 1\ny = 2")]
    with pytest.raises(AssertionError, match="right above"):
        marked_blocks("<!-- run -->\n\n```python\nx = 1\n```\n")


@pytest.mark.parametrize("page", [_example_param(p) for p in PAGES_WITH_EXAMPLES])
def test_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs_example__"}
    for line, code in marked_blocks(page.read_text(encoding="utf-8")):
        # the page and line of the block appear in any traceback
        compiled = compile("\n" * (line - 1) + code, str(page.relative_to(ROOT)), "exec")
        exec(compiled, namespace)


def test_cli_reference_covers_every_command_and_flag() -> None:
    from hierlens.analysis.cli.main import build_parser

    parser = build_parser()
    text = _load_hook("cli_reference").cli_markdown(parser)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert len(sub.choices) >= 10
    for name, command in sub.choices.items():
        assert f"### `hierlens {name}`" in text
        section = text.split(f"### `hierlens {name}`", 1)[1].split("\n### ", 1)[0]
        for action in command._actions:
            if action.help == argparse.SUPPRESS:
                continue
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}" in section, (name, option)


def test_api_reference_covers_every_package() -> None:
    hook = _load_hook("api_reference")
    packages = hook.packages()
    assert set(packages) >= {"models", "sae", "probes", "analysis"}
    for wing, names in packages.items():
        page = hook.api_markdown(wing, names)
        assert f"::: hierlens.{wing}\n" in page
        for name in names:
            assert f"::: {name}\n" in page


def test_a_new_wing_joins_the_api_navigation() -> None:
    hook = _load_hook("api_reference")
    nav = [{"Home": "index.md"}, {"Reference": [{"API": [{"m": "reference/api/models.md"}]}]}]
    assert hook.add_missing_wings(nav, ["models", "core"]) == ["core"]
    assert nav[1]["Reference"][0]["API"][-1] == {"hierlens.core": "reference/api/core.md"}
    assert hook.add_missing_wings(nav, ["models", "core"]) == []


def _docstring_sources() -> list[Path]:
    return [p for w in WINGS if (ROOT / w).is_dir() for p in sorted((ROOT / w).rglob("*.py"))]


def test_citations_resolve_and_every_entry_is_cited() -> None:
    citations = _load_hook("citations")
    keys = citations.bibliography_keys()
    assert len(keys) >= 20
    cited: dict[str, str] = {}
    for path in [*_docstring_sources(), *pages()]:
        if path.name == "bibliography.md":
            continue
        for key in citations.CITATION.findall(path.read_text(encoding="utf-8")):
            cited.setdefault(key, str(path.relative_to(ROOT)))
    unknown = {k: where for k, where in cited.items() if k not in keys}
    assert not unknown, f"cited but not in docs/bibliography.md: {unknown}"
    uncited = keys - set(cited)
    assert not uncited, f"in docs/bibliography.md but cited nowhere: {sorted(uncited)}"


def test_citation_links() -> None:
    citations = _load_hook("citations")
    keys = {"Murty2023a"}
    text = "see [Murty2023a], [Other2020], x[1], [a](b), [Murty2023a][Murty2023a]"
    assert citations.link_citations(text, keys) == (
        "see [\\[Murty2023a\\]][Murty2023a], [Other2020], x[1], [a](b), [Murty2023a][Murty2023a]"
    )


def test_docstring_markup() -> None:
    g = _load_hook("griffe_docstrings")
    doc = (
        "Uses :class:`~.base.SAE` and ``x[i]`` [Gao2024].\n\n"
        "Args:\n    lr, tol: the fit's settings,\n        on two lines.\n    seed: a seed.\n"
    )
    assert g.markdown_docstring(doc, {"Gao2024"}) == (
        "Uses `.base.SAE` and `x[i]` [\\[Gao2024\\]][Gao2024].\n\n"
        "Args:\n    lr: the fit's settings,\n        on two lines.\n"
        "    tol: the fit's settings,\n        on two lines.\n    seed: a seed."
    )


# a repository path named in a page: a top-level folder of the project, then a path
_REPO_PATH = re.compile(
    r"`((?:models|sae|probes|analysis|core|benchmarks|examples|tests|requirements|docs)/"
    r"[\w./-]*[\w/])`"
)


def test_paths_named_in_the_docs_exist() -> None:
    missing = []
    for page in pages():
        for path in _REPO_PATH.findall(page.read_text(encoding="utf-8")):
            if "<" in path or "*" in path or path.endswith(".jsonl"):  # run-directory files
                continue
            if not (ROOT / path).exists():
                missing.append(f"{page.relative_to(ROOT)}: {path}")
    assert not missing, "paths that do not exist:\n" + "\n".join(missing)


@pytest.mark.slow
def test_site_builds_strict(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    assert mkdocs is not None, "mkdocs is missing: pip install -e '.[dev]'"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [mkdocs, "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()
