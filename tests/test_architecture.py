"""The package layout as executable rules (DESIGN, "Layout"): one namespace with an
infrastructure room and four wings whose imports point down only (``core`` <- ``models``
<- ``sae``, ``probes`` <- ``analysis``), no import cycle between files, and public exports
that resolve to real objects.

Every import form is parsed: ``import hierlens.x.y``, ``from hierlens.x import y``,
``from hierlens import x``, and relative imports at any depth (``from . import x``,
``from .. import x``, ``from ..x import y``), at module level, inside functions and under
``TYPE_CHECKING`` alike. An import runs the ``__init__`` of every package on the way to its
target (``import hierlens.sae.files`` runs ``hierlens/sae/__init__.py`` first), so those
``__init__`` modules are edges of the import graph too; a module's own enclosing packages are
already running when it runs, so reaching them is an edge only when it reads a name from
their namespace."""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
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


def _enclosing(module: str) -> set[str]:
    """The packages that contain ``module`` (``hierlens.sae`` for ``hierlens.sae.files``)."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def imports_of(module: str, path: Path, modules: dict[str, str | Path] = MODULES) -> set[str]:
    """The hierlens modules (files) that importing ``module`` can run, one edge each: the
    target of every import, the package ``__init__`` modules on the way to it (but not the
    packages enclosing ``module``, which are already running), and a package whose namespace
    a name is read from (also an enclosing one: ``from . import name``)."""
    is_package = Path(path).name == "__init__.py"
    enclosing = _enclosing(module)
    found: set[str] = set()

    def run(name: str) -> None:  # importing ``name`` runs each package on its path
        parts = name.split(".")
        for i in range(2, len(parts) + 1):
            step = ".".join(parts[:i])
            if step in modules and step not in enclosing and step != module:
                found.add(step)

    for node in ast.walk(ast.parse(Path(path).read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("hierlens."):
                    run(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                source = _resolve(module, is_package, node.level, node.module)
            else:
                source = node.module or ""
            if source != "hierlens" and not source.startswith("hierlens."):
                continue
            run(source)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in modules:
                    if sub != module:
                        found.add(sub)
                elif source in modules and source != module:
                    found.add(source)  # a name read from that module's namespace
    return found


def _wing(module: str) -> str:
    return module.split(".")[1]


def test_parser_sees_every_import_form(tmp_path):
    """The rule checker itself: each import form yields its edges, as if the file were
    ``sae/fake.py`` in this package tree."""
    fake = tmp_path / "fake.py"
    fake.write_text(
        "import hierlens.models.run\n"
        "from hierlens import probes\n"
        "from hierlens.analysis.trees import span_scores\n"
        "from .. import analysis\n"
        "from ..models.tasks import get_task\n"
        "from .base import SAE\n"
        "from . import SAE as Again\n"
        "def f():\n    from . import files\n"
        "if TYPE_CHECKING:\n    from hierlens.core.config import Config\n"
    )
    modules = {
        name: "x.py"
        for name in (
            "hierlens.models.run",
            "hierlens.probes",
            "hierlens.analysis.trees",
            "hierlens.analysis",
            "hierlens.models",
            "hierlens.models.tasks",
            "hierlens.sae",
            "hierlens.sae.base",
            "hierlens.sae.files",
            "hierlens.sae.fake",
            "hierlens.core",
            "hierlens.core.config",
        )
    }
    found = imports_of("hierlens.sae.fake", fake, modules)
    assert found == {
        "hierlens.models",  # the package __init__ that ``import hierlens.models.run`` runs
        "hierlens.models.run",
        "hierlens.probes",
        "hierlens.analysis",
        "hierlens.analysis.trees",
        "hierlens.models.tasks",
        "hierlens.sae.base",
        "hierlens.sae",  # ``from . import SAE`` reads the enclosing package's namespace
        "hierlens.sae.files",
        "hierlens.core",
        "hierlens.core.config",
    }


def test_dependency_arrows_point_down():
    violations = []
    for module, path in MODULES.items():
        wing = _wing(module)
        for target in imports_of(module, path):
            other = _wing(target)
            if other != wing and other not in ALLOWED[wing]:
                violations.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not violations, "\n".join(violations)


def test_core_imports_only_torch_numpy_and_the_standard_library():
    allowed = {"torch", "numpy", "safetensors", "hierlens"}
    found = set()
    for module, path in MODULES.items():
        if _wing(module) != "core":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.add((node.module or "").split(".")[0])
    # the tracker libraries are optional extras imported only when a tracker is made
    extras = {"wandb", "mlflow"}
    assert found - sys.stdlib_module_names - allowed - extras == set()


def _missing_modules(module: str, path: Path, modules: dict[str, str | Path]) -> list[str]:
    """The hierlens modules ``module``'s imports name that are not in ``modules`` (an import
    left pointing at a module that moved, such as ``from .html_table import`` in ``models``)."""
    is_package = Path(path).name == "__init__.py"
    missing = []
    for node in ast.walk(ast.parse(Path(path).read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("hierlens.")]
        elif isinstance(node, ast.ImportFrom):
            source = (
                _resolve(module, is_package, node.level, node.module)
                if node.level
                else node.module or ""
            )
            names = [source] if source.startswith("hierlens.") else []
        else:
            continue
        missing += [f"{node.lineno}: {name}" for name in names if name not in modules]
    return missing


def test_every_hierlens_import_names_a_module_of_the_tree(tmp_path):
    fake = tmp_path / "fake.py"
    fake.write_text("from .html_table import key_value_table\nfrom .run import Run\n")
    modules = {"hierlens.models.run": "x.py", "hierlens.models.fake": fake}
    assert _missing_modules("hierlens.models.fake", fake, modules) == [
        "1: hierlens.models.html_table"
    ]
    missing = [
        f"{path.relative_to(ROOT)}:{line}"
        for module, path in MODULES.items()
        for line in _missing_modules(module, path, MODULES)
    ]
    assert not missing, missing


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


def test_cycles_through_package_inits_are_found(tmp_path):
    """``pkg/__init__`` imports ``pkg.a``, and ``other`` imports ``pkg.b`` (running
    ``pkg/__init__``) while ``pkg.a`` imports ``other``: a cycle only through the ``__init__``."""
    (tmp_path / "a.py").write_text("from hierlens.x.other import f\n")
    (tmp_path / "init.py").write_text("from .a import g\n")
    (tmp_path / "other.py").write_text("def f():\n    from hierlens.x.pkg.b import h\n")
    names = {
        "hierlens.x.pkg": tmp_path / "__init__.py",
        "hierlens.x.pkg.a": tmp_path / "a.py",
        "hierlens.x.pkg.b": tmp_path / "b.py",
        "hierlens.x.other": tmp_path / "other.py",
    }
    (tmp_path / "__init__.py").write_text((tmp_path / "init.py").read_text())
    (tmp_path / "b.py").write_text("")
    graph = {m: imports_of(m, p, names) for m, p in names.items()}
    assert graph["hierlens.x.other"] == {"hierlens.x.pkg", "hierlens.x.pkg.b"}
    assert _cycles(graph) == [["hierlens.x.other", "hierlens.x.pkg", "hierlens.x.pkg.a"]]


def test_no_import_cycle_between_files():
    """No file can reach itself through imports, counting the ``__init__`` modules Python
    runs on the way (every import form, module level or not)."""
    graph = {module: imports_of(module, path) for module, path in MODULES.items()}
    assert sum(len(v) for v in graph.values()) > 500  # the walk sees the real graph
    cycles = _cycles(graph)
    assert not cycles, cycles


def test_namespace_imports():
    from hierlens import analysis, core, models, probes, sae  # noqa: F401

    assert models.get_task("dyck").name == "dyck"


@pytest.mark.parametrize(
    "package",
    [
        "hierlens.core",
        "hierlens.models",
        "hierlens.models.tasks",
        "hierlens.sae",
        "hierlens.probes",
        "hierlens.analysis",
        "hierlens.analysis.trees",
        "hierlens.analysis.compare",
        "hierlens.analysis.pipeline",
        "hierlens.analysis.report",
        "hierlens.analysis.figures",
    ],
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


@pytest.mark.parametrize(
    "old",
    [
        "hierlens.models.moved",
        "hierlens.models.schedule",
        "hierlens.models.fast_forward",
        "hierlens.analysis.tree_metrics",
        "hierlens.analysis.tree_projection",
        "hierlens.analysis.cli_sae",
    ],
)
def test_old_module_paths_are_gone(old):
    """No import hook keeps an old module path alive (see CHANGELOG.md for the new ones)."""
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old)


def test_analysis_namespace_is_lazy_and_is_the_one_path():
    """``hierlens.analysis`` names its exports without importing them (``hierlens --help``
    stays fast); each resolves to the object its defining module holds, and the rooms do not
    list them again."""
    import subprocess

    code = (
        "import sys, hierlens.analysis as a\n"
        "assert 'hierlens.analysis.trees' not in sys.modules, 'imported a room'\n"
        "from hierlens.analysis import span_scores, tree_projection\n"
        "print(span_scores.__module__, tree_projection.__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["hierlens.analysis.trees.spans", "hierlens.analysis.trees.decode"]
    import hierlens.analysis as analysis
    import hierlens.analysis.trees as trees

    assert "span_scores" in analysis.__all__ and "span_scores" not in trees.__all__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        analysis.nope  # noqa: B018


def _package_exports() -> dict[str, list[str]]:
    """``{package: its __all__}`` for every package of the tree."""
    return {
        name: list(importlib.import_module(name).__all__)
        for name, path in sorted(MODULES.items())
        if path.name == "__init__.py"
    }


def test_each_public_object_has_one_namespace():
    """A function or class is listed in the ``__all__`` of one package only (no re-export of
    one package's names by another, no second name for one object)."""
    homes: dict[int, list[str]] = {}
    for package, names in _package_exports().items():
        module = importlib.import_module(package)
        for name in names:
            obj = getattr(module, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                homes.setdefault(id(obj), []).append(f"{package}.{name}")
    twice = [paths for paths in homes.values() if len(paths) > 1]
    assert not twice, twice


def _top_level_names(path: Path) -> tuple[set[str], set[str]]:
    """The names a module defines at its top level (def, class, assignment, also under
    ``if``/``try``) and the names its ``__all__`` lists."""
    defined: set[str] = set()
    exported: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            defined |= names
            if "__all__" in names and isinstance(node.value, (ast.List, ast.Tuple)):
                exported |= {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
    return defined, exported


def test_names_are_imported_from_their_home():
    """Library, tests, examples and benchmarks import a hierlens name from the module that
    defines it or from the package whose ``__all__`` lists it, never through a module that
    only imports it (``from hierlens.models.train import TrainConfig`` is not a path)."""
    homes = {module: _top_level_names(path) for module, path in MODULES.items()}
    bad = []
    folders = (*WINGS, "tests", "examples", "benchmarks")
    for path in (p for folder in folders for p in (ROOT / folder).rglob("*.py")):
        in_library = path.relative_to(ROOT).parts[0] in WINGS
        module = _module_name(path) if in_library else ""
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or (node.level and not in_library):
                continue
            source = (
                _resolve(module, path.name == "__init__.py", node.level, node.module)
                if node.level
                else node.module or ""
            )
            if source not in MODULES:
                continue
            defined, _ = homes[source]
            is_package = MODULES[source].name == "__init__.py"
            for alias in node.names:
                if f"{source}.{alias.name}" in MODULES or alias.name in defined:
                    continue
                if is_package and alias.name in importlib.import_module(source).__all__:
                    continue
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {alias.name} from {source}")
    assert not bad, "\n".join(bad)
