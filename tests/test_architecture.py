"""The package layout as executable rules (README, "Layout"): one namespace with four
wings whose imports point down only (``models`` <- ``sae``, ``probes`` <- ``analysis``),
no import cycle inside a wing, and lazy public exports that resolve to real objects.

Every import form is parsed: ``import hierlens.x``, ``from hierlens.x import y``,
``from hierlens import x``, and relative imports at any depth (``from .. import x``,
``from ..x import y``), at module level and inside functions alike (except a module's
PEP 562 ``__getattr__``, which only keeps moved names importable with a warning)."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WINGS = ("core", "models", "sae", "probes", "analysis")
# wing -> wings it may import (besides itself)
ALLOWED = {
    "core": set(),
    "models": {"core"},
    "sae": {"core", "models"},
    "probes": {"core", "models"},
    "analysis": {"core", "models", "sae", "probes"},
}


def _module_name(path: Path) -> str:
    """``sae/files.py`` -> ``hierlens.sae.files``; ``analysis/cli/__init__.py`` ->
    ``hierlens.analysis.cli``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["hierlens", *parts])


def _modules() -> dict[str, Path]:
    found = {}
    for wing in WINGS:
        for path in (ROOT / wing).rglob("*.py"):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """Absolute name of a relative import's base (``from ..x import``: level 2, target x)."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_of(module: str, path: Path) -> set[str]:
    """The hierlens modules ``module`` imports (a package's ``__init__`` when a name is
    imported from a package, the submodule when the name is one)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(name: str, names: list[str]) -> None:
        if not name.startswith("hierlens"):
            return
        for alias in names:
            sub = f"{name}.{alias}"
            found.add(sub if sub in MODULES else name)

    tree = ast.parse(path.read_text())
    # a module-level ``__getattr__`` (PEP 562) is how a module keeps a moved name importable
    # for one release; its lazy import of the new home is not part of the design
    tree.body = [
        n for n in tree.body if not (isinstance(n, ast.FunctionDef) and n.name == "__getattr__")
    ]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("hierlens."):
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                add(node.module or "", [a.name for a in node.names])
            else:
                add(
                    _resolve(module, is_package, node.level, node.module),
                    [a.name for a in node.names],
                )
    found.discard("hierlens")
    return found


def _wing(module: str) -> str:
    return module.split(".")[1]


def test_parser_sees_every_import_form(tmp_path):
    """The rule checker itself: each import form yields its edge, as if the file were
    ``sae/fake.py``."""
    fake = tmp_path / "fake.py"
    fake.write_text(
        "import hierlens.models.run\n"
        "from hierlens import probes\n"
        "from hierlens.analysis.trees import span_scores\n"
        "from .. import analysis\n"
        "from ..models.tasks import get_task\n"
        "from .base import SAE\n"
        "def f():\n    from . import files\n"
        "def __getattr__(name):\n    from .mdl_fit import fit_mdl_sae\n"
    )
    found = imports_of("hierlens.sae.fake", fake)
    assert found == {
        "hierlens.models.run",
        "hierlens.probes",
        "hierlens.analysis.trees",
        "hierlens.analysis",
        "hierlens.models.tasks",
        "hierlens.sae.base",
        "hierlens.sae.files",
    }


def test_dependency_arrows_point_down():
    violations = []
    for module, path in MODULES.items():
        wing = _wing(module)
        for target in imports_of(module, path):
            if target.count(".") < 1:
                continue
            other = _wing(target)
            if other != wing and other not in ALLOWED[wing]:
                violations.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not violations, "\n".join(violations)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_on_a_known_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def _is_package_init(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def test_no_import_cycle_inside_a_wing():
    """Edges from a package's ``__init__`` to its own submodules are how a package exports
    names; a cycle is any other loop between modules of one wing."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        targets = set()
        for t in imports_of(module, path):
            if t not in MODULES or _wing(t) != _wing(module):
                continue
            if _is_package_init(t) and module.startswith(t + "."):
                continue  # a submodule reaching into its own package's exports: counted below
            targets.add(t)
        graph[module] = targets
    cycles = _cycles(graph)
    assert not cycles, cycles
    # a submodule importing names from its own package's __init__ closes a loop through it
    upward = [
        f"{m} imports its package {t}"
        for m, path in MODULES.items()
        for t in imports_of(m, path)
        if t in MODULES and _is_package_init(t) and m.startswith(t + ".")
    ]
    assert not upward, upward


def test_namespace_imports():
    from hierlens import analysis, models, probes, sae  # noqa: F401

    assert importlib.import_module("hierlens.models.tasks").get_task("dyck").name == "dyck"


@pytest.mark.parametrize(
    "package", ["hierlens.models", "hierlens.sae", "hierlens.probes", "hierlens.analysis"]
)
def test_public_exports_resolve(package):
    """Every name in ``__all__`` is a hierlens function, class or value defined in that wing."""
    mod = importlib.import_module(package)
    for name in mod.__all__:
        obj = getattr(mod, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert obj.__module__.startswith(package), (name, obj.__module__)
            assert obj.__doc__, f"{package}.{name} has no docstring"
    with pytest.raises(AttributeError):
        mod.not_a_name  # noqa: B018


def test_analysis_exports_the_functions_not_modules():
    from hierlens.analysis import span_scores, tree_projection

    assert inspect.isfunction(span_scores) and inspect.isfunction(tree_projection)
    assert span_scores.__module__ == "hierlens.analysis.trees.spans"
    assert tree_projection.__module__ == "hierlens.analysis.trees.decode"


def test_old_module_paths_warn_and_resolve():
    import subprocess
    import sys

    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "try:\n    import hierlens.analysis.tree_metrics\nexcept DeprecationWarning as w:\n"
        "    print('warned:', w)\n"
        "warnings.simplefilter('ignore')\n"
        "from hierlens.analysis.tree_projection import span_scores\n"
        "from hierlens.analysis import tree_projection, trees\n"
        "assert span_scores is trees.span_scores\n"
        "assert tree_projection([[0.0, 1.0], [0.0, 0.0]]) == trees.tree_projection([[0.0, 1.0], [0.0, 0.0]])\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (
        "warned: hierlens.analysis.tree_metrics moved to hierlens.analysis.trees.metrics"
        in out.stdout
    )
    assert out.stdout.strip().endswith("ok")
