"""The namespace layout and the dependency rules of DESIGN.md."""

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# wing -> wings it must never import
FORBIDDEN = {
    "models": {"sae", "probes", "analysis"},
    "sae": {"probes", "analysis"},
    "probes": {"sae", "analysis"},
}


def test_namespace_imports():
    from hierlens import analysis, models, probes, sae  # noqa: F401

    assert importlib.import_module("hierlens.models.tasks").get_task("dyck").name == "dyck"


def _imported_wings(path: Path, wing: str) -> set[str]:
    tree = ast.parse(path.read_text())
    depth_to_root = len(path.relative_to(ROOT / wing).parts)  # 1 for wing/x.py, 2 for wing/sub/x.py
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.startswith("hierlens."):
                found.add(node.module.split(".")[1])
            elif node.level > depth_to_root and node.module:
                found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("hierlens."):
                    found.add(alias.name.split(".")[1])
    return found


def test_dependency_arrows_point_down():
    violations = []
    for wing, forbidden in FORBIDDEN.items():
        for path in (ROOT / wing).rglob("*.py"):
            bad = _imported_wings(path, wing) & forbidden
            if bad:
                violations.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not violations, violations


def test_analysis_exports_resolve():
    import hierlens.analysis as analysis

    for name in analysis.__all__:
        assert getattr(analysis, name) is not None
    import pytest

    with pytest.raises(AttributeError):
        analysis.not_a_name  # noqa: B018
