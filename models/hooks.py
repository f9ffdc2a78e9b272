"""Hook-name resolution for TransformerLens bridges and plain ``nn.Module``s.

Hook names are TransformerLens names (``blocks.2.hook_resid_post``,
``blocks.0.attn.hook_pattern``) on a ``TransformerBridge`` (or any model exposing a
TransformerLens ``hook_dict``), and module names from ``named_modules()`` (``layers.1``,
``encoder.mlp``) on a plain ``nn.Module``. Glob patterns are accepted: ``*`` matches within
one dot-separated part (``blocks.*.hook_resid_post``, ``layers.*``), ``**`` across parts
(``blocks.**.hook_z``), ``?`` one character and ``[...]`` a character set
(``blocks.[0-2].*``). An unknown name is a ``ValueError`` that lists the closest valid names.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

#: characters that make a hook request a glob pattern rather than an exact name
GLOB_CHARS = frozenset("*?[")

#: ``fn(name, activation)`` called each time a hooked point fires
CaptureFn = Callable[[str, torch.Tensor], None]


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a hook-name glob: ``*`` stays within a dot-separated part, ``**`` does not."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append(r"[^.]*")
        elif c == "?":
            out.append(r"[^.]")
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def is_hooked_model(model: torch.nn.Module) -> bool:
    """True for models with TransformerLens hook points (``TransformerBridge``,
    ``HookedTransformer``): they expose ``hook_dict`` and a ``hooks(fwd_hooks=...)`` context."""
    return hasattr(model, "hook_dict") and callable(getattr(model, "hooks", None))


def _hook_points(model: torch.nn.Module) -> dict[str, Any]:
    """Name -> hook point (HookPoint for hooked models, submodule for plain modules)."""
    if is_hooked_model(model):
        return dict(model.hook_dict)
    return {name: module for name, module in model.named_modules() if name}


def available_hook_names(model: torch.nn.Module) -> list[str]:
    """Every hook name valid on ``model``, in the model's own order."""
    return list(_hook_points(model))


def _closest(name: str, valid: Sequence[str], n: int = 5) -> list[str]:
    close = difflib.get_close_matches(name, valid, n=n, cutoff=0.5)
    if not close and any(c in name for c in GLOB_CHARS):
        # for a pattern, compare its literal parts
        literal = "".join(c for c in name if c not in GLOB_CHARS)
        close = difflib.get_close_matches(literal, valid, n=n, cutoff=0.4)
    return close


def unknown_hook_error(name: str, valid: Sequence[str], model: torch.nn.Module) -> ValueError:
    """A ``ValueError`` naming ``name``, the closest valid names, and how to list them all."""
    kind = "hook name" if is_hooked_model(model) else "module name"
    close = _closest(name, valid)
    hint = f"; closest valid names: {', '.join(map(repr, close))}" if close else ""
    is_glob = any(c in name for c in GLOB_CHARS)
    what = f"pattern {name!r} matches no {kind}" if is_glob else f"unknown {kind} {name!r}"
    listing = (
        "model.hook_dict" if is_hooked_model(model) else "[n for n, _ in model.named_modules()]"
    )
    return ValueError(f"{what} on {type(model).__name__}{hint} (all {len(valid)}: {listing})")


def resolve_hook_names(model: torch.nn.Module, hooks: str | Sequence[str]) -> list[str]:
    """Expand ``hooks`` (names and glob patterns) into the list of hook names on ``model``.

    Exact names are kept as given; a pattern expands to every matching name in the model's
    order, skipping names that are aliases of a hook point already selected (on a
    ``TransformerBridge`` ``blocks.0.hook_out`` and ``blocks.0.hook_resid_post`` are one
    point). Duplicates are dropped. Raises ``ValueError`` for an unknown name or a pattern
    matching nothing (listing the closest valid names) and ``TypeError`` for non-strings.
    """
    if isinstance(hooks, str):
        hooks = [hooks]
    if not isinstance(hooks, Sequence) or not hooks:
        raise ValueError("hooks must be a non-empty list of hook names or glob patterns")
    points = _hook_points(model)
    valid = list(points)
    out: list[str] = []
    seen_ids: set[int] = set()
    for request in hooks:
        if not isinstance(request, str):
            raise TypeError(f"hook names must be strings, got {type(request).__name__}")
        if any(c in request for c in GLOB_CHARS):
            regex = glob_to_regex(request)
            matches = [n for n in valid if regex.match(n)]
            if not matches:
                raise unknown_hook_error(request, valid, model)
            for name in matches:
                if name in out or id(points[name]) in seen_ids:
                    continue
                out.append(name)
                seen_ids.add(id(points[name]))
        else:
            if request not in points:
                raise unknown_hook_error(request, valid, model)
            if request not in out:
                out.append(request)
                seen_ids.add(id(points[request]))
    return out


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


@contextmanager
def attached_hooks(model: torch.nn.Module, names: Sequence[str], fn: CaptureFn) -> Iterator[None]:
    """Within the context, call ``fn(name, activation)`` whenever hook ``name`` fires.

    On a hooked model the TransformerLens hook points are used (so hook conversions such as
    the per-head reshape of ``attn.hook_z`` apply); on a plain module a forward hook sees the
    module's output (the first tensor of a tuple output). Hooks never modify activations,
    and are removed on exit, also when ``fn`` raises.
    """
    names = list(names)
    if is_hooked_model(model):

        def make(name: str) -> Callable[..., None]:
            def hook(tensor: Any, *, hook: Any) -> None:
                value = _first_tensor(tensor)
                if value is None:
                    raise TypeError(f"hook {name!r} produced {type(tensor).__name__}, not a tensor")
                fn(name, value)

            return hook

        with model.hooks(fwd_hooks=[(name, make(name)) for name in names]):
            yield
        return

    modules = dict(model.named_modules())
    handles = []

    def make_fwd(name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            value = _first_tensor(output)
            if value is None:
                raise TypeError(
                    f"module {name!r} returned {type(output).__name__}; capture needs a tensor "
                    "output (or a tuple whose first element is a tensor)"
                )
            fn(name, value)

        return hook

    try:
        for name in names:
            if name not in modules or not name:
                raise unknown_hook_error(name, [n for n in modules if n], model)
            handles.append(modules[name].register_forward_hook(make_fwd(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()
