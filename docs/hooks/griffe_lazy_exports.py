"""A griffe extension for packages that import their exports on first use: a module-level
``_EXPORTS = {"name": "submodule", ...}`` dict read by ``__getattr__`` (as in
``hierlens.analysis``, which keeps ``hierlens --help`` fast). Static analysis cannot see
those names, so each becomes an alias of ``<package>.<submodule>.<name>``, and the API
reference documents them like any other package's exports."""

from __future__ import annotations

import ast
from typing import Any

import griffe


class LazyExports(griffe.Extension):
    def on_module_members(
        self, *, node: ast.AST | griffe.ObjectNode, mod: griffe.Module, **kwargs: Any
    ) -> None:
        if not isinstance(node, ast.Module) or "__getattr__" not in mod.members:
            return
        for stmt in node.body:
            target = (
                stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else None
            )
            if not (isinstance(target, ast.Name) and target.id == "_EXPORTS"):
                continue
            exports = ast.literal_eval(stmt.value)
            mod.exports = sorted(exports)
            for name, submodule in exports.items():
                if name not in mod.members:
                    alias = griffe.Alias(name, f"{mod.path}.{submodule}.{name}", parent=mod)
                    mod.set_member(name, alias)
