"""Old import paths of modules that moved, kept working for one release.

``alias_moved_modules("hierlens.analysis", {"tree_metrics": "hierlens.analysis.trees.metrics"})``
makes ``import hierlens.analysis.tree_metrics`` return the module at its new path, with a
:class:`DeprecationWarning` naming the new path. The aliases are resolved lazily (an import
hook), so registering them imports nothing.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings
from collections.abc import Mapping


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str, callable_attr: str | None) -> None:
        self.target = target
        self.callable_attr = callable_attr

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        warnings.warn(
            f"{spec.name} moved to {self.target}; the old path will be removed in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(self.target)
        if self.callable_attr is None:
            return module
        return _CallableAlias(spec.name, module, getattr(module, self.callable_attr))

    def exec_module(self, module: types.ModuleType) -> None:
        pass


class _CallableAlias(types.ModuleType):
    """An old module path whose name is now a function of the parent package: importing
    the old module would replace the package attribute, so the alias stays callable."""

    def __init__(self, name: str, module: types.ModuleType, function: object) -> None:
        super().__init__(name, module.__doc__)
        self.__dict__["_module"] = module
        self.__dict__["_function"] = function

    def __getattr__(self, name: str) -> object:
        return getattr(self.__dict__["_module"], name)

    def __call__(self, *args: object, **kwargs: object) -> object:
        return self.__dict__["_function"](*args, **kwargs)


class _AliasFinder(importlib.abc.MetaPathFinder):
    def __init__(self, aliases: dict[str, tuple[str, str | None]]) -> None:
        self.aliases = aliases

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001 (finder protocol)
        if fullname not in self.aliases:
            return None
        target_name, callable_attr = self.aliases[fullname]
        return importlib.util.spec_from_loader(fullname, _AliasLoader(target_name, callable_attr))


def alias_moved_modules(
    package: str, moved: Mapping[str, str], callable_attrs: Mapping[str, str] | None = None
) -> None:
    """Let ``package.<old>`` import ``moved[old]`` (a full module name) with a
    ``DeprecationWarning``. ``callable_attrs[old]`` names a function the alias also calls
    as (for an old module whose name is now a function of ``package``)."""
    callable_attrs = dict(callable_attrs or {})
    aliases = {f"{package}.{old}": (new, callable_attrs.get(old)) for old, new in moved.items()}
    for finder in sys.meta_path:
        if isinstance(finder, _AliasFinder):
            finder.aliases.update(aliases)
            return
    sys.meta_path.append(_AliasFinder(aliases))
