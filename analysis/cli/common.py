"""What the ``hierlens`` commands share: the user-error type, list and task-parameter parsers,
metric formatting, and config dataclasses as flags (:func:`add_config_flags`,
:func:`config_from_flags`)."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: exit status of a command whose training diverged (the loss turned NaN or inf)
DIVERGED = 3


class CLIError(Exception):
    """A user error: reported as one line, exit status 2."""


def coerce(text: str, default: Any) -> Any:
    """Parse a ``--task-param`` value with the type of the parameter's default."""
    if isinstance(default, bool):
        try:
            return _bool(text)
        except argparse.ArgumentTypeError as exc:
            raise ValueError(str(exc)) from None
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    if isinstance(default, str):
        return text
    return json.loads(text)


def task_from_args(name: str, params: Sequence[str]) -> Any:
    from hierlens.models.tasks import task_class
    from hierlens.models.tasks.registry import get_task

    cls = task_class(name)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for item in params:
        if "=" not in item:
            raise CLIError(f"--task-param expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        if key not in defaults:
            raise CLIError(
                f"task {name!r} has no parameter {key!r}; parameters: {', '.join(defaults)}"
            )
        try:
            kwargs[key] = coerce(value, defaults[key])
        except ValueError as exc:
            raise CLIError(f"--task-param {key}: {exc}") from exc
    return get_task(name, **kwargs)


def _numbers(text: str, kind: type, what: str) -> list:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None


def ints(text: str) -> list[int]:
    """Parse ``"1,2,4"`` into ``[1, 2, 4]`` (an argparse ``type``)."""
    return _numbers(text, int, "integers")


def floats(text: str) -> list[float]:
    """Parse ``"0.1,1e-2"`` into ``[0.1, 0.01]`` (an argparse ``type``)."""
    return _numbers(text, float, "numbers")


def strings(text: str) -> list[str]:
    """Parse ``"a, b,c"`` into ``["a", "b", "c"]`` (an argparse ``type``; empty items dropped)."""
    return [x.strip() for x in text.split(",") if x.strip()]


def fmt(metrics: dict[str, float]) -> str:
    """``k=v`` pairs, floats to 4 decimals."""
    return ", ".join(
        f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
    )


def newest_step(run_dir: str | os.PathLike) -> int:
    """The newest checkpoint step of ``run_dir``; a :class:`CLIError` when it has none."""
    from hierlens.models.run import open_run

    steps = open_run(run_dir).steps
    if not steps:
        raise CLIError(
            f"{run_dir}: the run has no checkpoints yet; train it first (hierlens train)"
        )
    return steps[-1]


def check_seed_applies(args: argparse.Namespace, run) -> None:
    """A :class:`CLIError` when ``--seed`` was given only to draw sentences, and none are
    drawn: a pretrained run without ``--n`` uses every sentence of its split."""
    if getattr(args, "seed", None) is not None and run.is_pretrained and args.n is None:
        raise CLIError(
            "--seed draws --n sentences; without --n every sentence of the corpus split is "
            "used, so --seed would change nothing: give --n, or drop --seed"
        )


# ----- dataclass configs as command-line flags ---------------------------------------------------
_PREFIX_KEY = "_config_flags_"  # namespace entry: (prefix, flagged fields) of a config class


def config_field_docs(config_class: type) -> dict[str, str]:
    """``field -> help text`` from the ``Parameters:`` sections of a config class's docstring
    and its bases' (``name: text`` entries; more-indented lines continue an entry; an entry
    ``a, b: text`` documents both; a class's own entry wins over its bases')."""
    docs: dict[str, str] = {}
    for cls in reversed(config_class.__mro__):
        if dataclasses.is_dataclass(cls):
            docs.update(_own_docs(cls))
    return docs


def _own_docs(config_class: type) -> dict[str, str]:
    doc = config_class.__dict__.get("__doc__") or ""
    doc = inspect.cleandoc(doc)
    lines = doc.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Parameters:")
    except StopIteration:
        return {}
    docs: dict[str, str] = {}
    names: list[str] = []
    indent = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth
        if depth < indent:
            break
        match = re.match(r"([A-Za-z_][\w, ]*):\s*(.*)", line.strip()) if depth == indent else None
        if match:
            names = [n.strip() for n in match.group(1).split(",")]
            for n in names:
                docs[n] = match.group(2).strip()
        else:
            for n in names:
                docs[n] = f"{docs[n]} {line.strip()}"
    return docs


def _flag_type(annotation: Any) -> tuple[Any, tuple | None, bool]:
    """``(argparse type, choices, is_bool)`` for a dataclass field annotation (a string under
    ``from __future__ import annotations``, or a type)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    text = str(text)
    literal = re.match(r"(?:typing\.)?Literal\[(.*)\]", text)
    if literal:
        choices = tuple(ast.literal_eval(f"[{literal.group(1)}]"))
        return type(choices[0]), choices, False
    parts = [p.strip() for p in text.split("|") if p.strip() != "None"]
    if parts == ["bool"]:
        return _bool, None, True
    if parts and parts[0].startswith("tuple["):
        inner = parts[0][6:-1].split(",")[0].strip()
        return (ints if inner == "int" else floats if inner == "float" else strings), None, False
    if parts and parts[0] in ("int", "float", "str"):
        return {"int": int, "float": float, "str": str}[parts[0]], None, False
    raise TypeError(f"no command-line type for a field annotated {annotation!r}")


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_config_flags(
    parser_or_group: Any,
    config_class: type,
    exclude: Sequence[str] = (),
    prefix: str = "",
    only: Sequence[str] | None = None,
) -> None:
    """Add one ``--<prefix><field>`` flag per field of the dataclass ``config_class``.

    The flag's type comes from the annotation (``bool`` fields take true/false, tuples take
    comma-separated lists, ``Literal[...]`` fields get those choices, as does a field listed
    in the class's ``FIELD_CHOICES`` mapping), its help from the class docstring's
    ``Parameters:`` entry, and its default is None, meaning "the config's default" (see
    :func:`config_from_flags`); a field without a default is a required flag. Fields in
    ``exclude`` get no flag; with ``only``, just those fields get one.
    """
    names = [f.name for f in dataclasses.fields(config_class) if f.init]
    missing = [n for n in (only or ()) if n not in names]
    if missing:
        raise TypeError(f"{config_class.__name__} has no field(s) {missing}")
    flagged = [n for n in names if n not in exclude and (only is None or n in only)]
    key = _PREFIX_KEY + config_class.__name__
    earlier = parser_or_group.get_default(key)  # an earlier call for other fields of the class
    if earlier is not None and earlier[0] == prefix:
        flagged = [*earlier[1], *(n for n in flagged if n not in earlier[1])]
    parser_or_group.set_defaults(**{key: (prefix, flagged)})
    new = [n for n in names if n not in exclude and (only is None or n in only)]
    for field in dataclasses.fields(config_class):
        if field.name in new:
            _add_field_flag(parser_or_group, config_class, field, prefix)


def _add_field_flag(container: Any, config_class: type, field: Any, prefix: str = "") -> None:
    """The ``--<prefix><field>`` flag of one dataclass field (see :func:`add_config_flags`)."""
    kind, choices, is_bool = _flag_type(field.type)
    fixed = getattr(config_class, "FIELD_CHOICES", {})
    choices = tuple(fixed.get(field.name, ())) or choices
    required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    default = None if required else field.default
    if isinstance(default, tuple):
        default = ",".join(str(v) for v in default) or "none"
    shown = f" (default: {default})" if default is not None else ""
    help_text = config_field_docs(config_class).get(field.name, "") + shown
    container.add_argument(
        "--" + (prefix + field.name).replace("_", "-"),
        dest=prefix + field.name,
        type=kind,
        choices=choices,
        default=None,
        required=required,
        metavar="true|false" if is_bool else None,
        help=help_text.replace("%", "%%") or None,
    )


def add_union_flags(
    container: Any, config_classes: Sequence[type], exclude: Sequence[str] = ()
) -> None:
    """One flag per field name found in any of ``config_classes`` (the first class that has
    a field gives its type and help; defaults are each class's own, so none is shown). Read
    them back with :func:`union_values`."""
    seen: list[str] = []
    for cls in config_classes:
        for field in dataclasses.fields(cls):
            if field.init and field.name not in exclude and field.name not in seen:
                seen.append(field.name)
                kind, choices, is_bool = _flag_type(field.type)
                doc = config_field_docs(cls).get(field.name, "")
                owners = [c for c in config_classes if field.name in _field_names(c)]
                if len(owners) < len(config_classes):
                    doc += " (only " + ", ".join(c.__name__ for c in owners) + ")"
                container.add_argument(
                    "--" + field.name.replace("_", "-"),
                    dest=field.name,
                    type=kind,
                    choices=choices,
                    default=None,
                    metavar="true|false" if is_bool else None,
                    help=doc.replace("%", "%%") or None,
                )
    container.set_defaults(**{_PREFIX_KEY + "union": ("", seen)})


def _field_names(config_class: type) -> set[str]:
    return {f.name for f in dataclasses.fields(config_class) if f.init}


def _given_fields(args: argparse.Namespace, key: str) -> dict[str, Any]:
    """``field -> value`` of the flags recorded under ``_PREFIX_KEY + key`` that were given
    on the command line (lists as tuples; unset flags are left out)."""
    prefix, flagged = getattr(args, _PREFIX_KEY + key, ("", []))
    values: dict[str, Any] = {}
    for name in flagged:
        value = getattr(args, prefix + name, None)
        if value is not None:
            values[name] = tuple(value) if isinstance(value, list) else value
    return values


def union_values(args: argparse.Namespace) -> dict[str, Any]:
    """``field -> value`` of the :func:`add_union_flags` flags given on the command line."""
    return _given_fields(args, "union")


def flag_values(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    """``field -> value`` of the flags :func:`add_config_flags` added for ``config_class``
    that were given on the command line (unset flags are left out)."""
    return _given_fields(args, config_class.__name__)


def config_from_flags(args: argparse.Namespace, config_class: type, **overrides: Any) -> Any:
    """Build ``config_class`` from the flags :func:`add_config_flags` added (with the
    ``prefix`` it was given): flags left unset keep the config's defaults; ``overrides``
    (field -> value) win over both. A bad value is a :class:`CLIError` naming the flag."""
    values = {**flag_values(args, config_class), **overrides}
    try:
        return config_class(**values)
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc)) from exc


# ----- the flags every command shares: one definition and one default each ----------------------
def _add_run_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="the run directory")


def _add_step(p: argparse.ArgumentParser) -> None:
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when available)"
    )


def _add_seed(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seed", type=int, default=None, help="seed of the command's sampling (default: its own)"
    )


def _add_n(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--n",
        "--n-sequences",
        dest="n",
        type=int,
        default=None,
        help="examples or sentences to use (default: the command's own; a corpus: all); "
        "under torchrun write --n-sequences (torchrun takes --n for its own flags)",
    )


def _add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


_SHARED_FLAGS = {
    "run_dir": _add_run_dir,
    "step": _add_step,
    "device": _add_device,
    "seed": _add_seed,
    "n": _add_n,
    "progress": _add_progress,
}


def shared_flags(*names: str) -> list[argparse.ArgumentParser]:
    """``parents=`` for a command: one parser holding the shared flags ``names`` (any of
    ``run_dir`` (positional), ``step``, ``device``, ``seed``, ``n``, ``progress``), each
    defined once here with default None (``--no-progress``: off), meaning the command's
    own default."""
    unknown = [n for n in names if n not in _SHARED_FLAGS]
    if unknown:
        raise TypeError(f"no shared flag(s) {unknown}; choose from {list(_SHARED_FLAGS)}")
    parent = argparse.ArgumentParser(add_help=False)
    for name in names:
        _SHARED_FLAGS[name](parent)
    return [parent]


def given(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """``{name: value}`` of the flags ``names`` that were given (not None), to pass on as
    keyword arguments so that the callee's defaults apply to the others."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
