"""The API reference, ``reference/api/<wing>.md``, written at build time: one page per wing,
with a section for the wing and each of its sub-packages as ``pyproject.toml`` installs them,
each rendered by mkdocstrings from the docstrings of the names the package exports.

The wings are folders at the repository root installed as ``hierlens.<wing>`` (there is no
``hierlens/`` folder), which griffe's static loader cannot find; so the build lays out
``build/docs-src/hierlens/<wing>`` as links to the wing folders and mkdocstrings reads the
sources from there (``paths: [build/docs-src]`` in ``mkdocs.yml``)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
SOURCE_TREE = ROOT / "build" / "docs-src" / "hierlens"
# the command line has its own generated page (reference/cli.md)
SKIP = ("hierlens.analysis.cli",)


def packages() -> dict[str, list[str]]:
    """Wing -> its installed packages (the wing first), from pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    names = project["tool"]["setuptools"]["packages"]
    wings: dict[str, list[str]] = {}
    for name in names:
        parts = name.split(".")
        if parts[0] != "hierlens" or len(parts) < 2 or name.startswith(SKIP):
            continue
        wings.setdefault(parts[1], []).append(name)
    return {w: sorted(p, key=lambda n: (n.count("."), n)) for w, p in wings.items()}


def link_sources() -> None:
    """build/docs-src/hierlens/<wing> -> the wing's folder (from pyproject's package-dir)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    package_dir = project["tool"]["setuptools"]["package-dir"]
    SOURCE_TREE.mkdir(parents=True, exist_ok=True)
    for entry in SOURCE_TREE.iterdir():
        if entry.is_symlink():
            entry.unlink()
    for name, folder in package_dir.items():
        parts = name.split(".")
        if len(parts) == 2 and parts[0] == "hierlens":
            (SOURCE_TREE / parts[1]).symlink_to(ROOT / folder, target_is_directory=True)


def unexported_modules(package: str) -> list[str]:
    """The public modules of ``package`` (``hierlens.<wing>...``) that its ``__init__.py``
    does not import names from: what they define is documented module by module."""
    folder = SOURCE_TREE.parent.joinpath(*package.split("."))
    if not folder.is_dir():
        folder = ROOT.joinpath(*package.split(".")[1:])
    tree = ast.parse((folder / "__init__.py").read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                imported.add(node.module.split(".")[0])
            else:
                imported.update(a.name for a in node.names)
    modules = sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))
    return [f"{package}.{m}" for m in modules if m not in imported]


def api_markdown(wing: str, names: list[str]) -> str:
    """The page of one wing: its packages' exports, then the modules they do not export."""
    lines = [
        f"# `hierlens.{wing}`",
        "",
        "Generated from the docstrings when the site is built. Each section documents what a",
        "package exports; import the names from the package in the section's title. The",
        "modules a package does not re-export follow at the end.",
        "",
    ]
    for name in names:
        lines += [f"::: {name}", "    options:", "      show_submodules: false", ""]
    others = [m for name in names for m in unexported_modules(name)]
    if others:
        lines += ["## Other modules", ""]
        for name in others:
            lines += [f"::: {name}", "    options:", "      heading_level: 3", ""]
    return "\n".join(lines)


def _api_section(nav: list) -> list | None:
    """The list under the navigation's "API" entry, wherever it is nested."""
    for item in nav or []:
        if isinstance(item, dict):
            for title, value in item.items():
                if title == "API" and isinstance(value, list):
                    return value
                if isinstance(value, list):
                    found = _api_section(value)
                    if found is not None:
                        return found
    return None


def add_missing_wings(nav: list, wings: list[str]) -> list[str]:
    """Append to the navigation's "API" section the wings it does not list yet (a new wing
    gets its page in the navigation without editing mkdocs.yml); returns those added."""
    section = _api_section(nav)
    if section is None:
        return []
    listed = {v for item in section if isinstance(item, dict) for v in item.values()}
    added = [w for w in wings if f"reference/api/{w}.md" not in listed]
    section.extend({f"hierlens.{w}": f"reference/api/{w}.md"} for w in added)
    return added


@event_priority(100)  # before mkdocstrings reads its paths
def on_config(config):
    link_sources()
    add_missing_wings(config.nav, list(packages()))
    return config


def on_files(files, config):
    for wing, names in packages().items():
        page = f"reference/api/{wing}.md"
        files.append(File.generated(config, page, content=api_markdown(wing, names)))
    return files
