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
from typing import Any


class CLIError(Exception):
    """A user error: reported as one line, exit status 2."""


def coerce(text: str, default: Any) -> Any:
    """Parse a ``--task-param`` value with the type of the parameter's default."""
    if isinstance(default, bool):
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true/false, got {text!r}")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    if isinstance(default, str):
        return text
    return json.loads(text)


def task_from_args(name: str, params: Sequence[str]) -> Any:
    from hierlens.models.tasks import get_task, task_class

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
    """``field -> help text`` from the ``Parameters:`` section of a config class's docstring
    (``name: text`` entries; more-indented lines continue an entry; an entry ``a, b: text``
    documents both)."""
    doc = inspect.getdoc(config_class) or ""
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
        return (ints if inner == "int" else floats if inner == "float" else _strings), None, False
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


def _strings(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_config_flags(
    parser_or_group: Any,
    config_class: type,
    exclude: Sequence[str] = (),
    prefix: str = "",
) -> None:
    """Add one ``--<prefix><field>`` flag per field of the dataclass ``config_class``.

    The flag's type comes from the annotation (``bool`` fields take true/false, tuples take
    comma-separated lists, ``Literal[...]`` fields get those choices, as does a field listed
    in the class's ``FIELD_CHOICES`` mapping), its help from the class docstring's
    ``Parameters:`` entry, and its default is None, meaning "the config's default" (see
    :func:`config_from_flags`). Fields in ``exclude`` get no flag.
    """
    flagged = [f.name for f in dataclasses.fields(config_class) if f.init and f.name not in exclude]
    parser_or_group.set_defaults(**{_PREFIX_KEY + config_class.__name__: (prefix, flagged)})
    docs = config_field_docs(config_class)
    fixed = getattr(config_class, "FIELD_CHOICES", {})
    for field in dataclasses.fields(config_class):
        if field.name not in flagged:
            continue
        kind, choices, is_bool = _flag_type(field.type)
        choices = tuple(fixed.get(field.name, ())) or choices
        default = field.default if field.default is not dataclasses.MISSING else None
        shown = f" (default: {default})" if default is not None else ""
        parser_or_group.add_argument(
            "--" + (prefix + field.name).replace("_", "-"),
            dest=prefix + field.name,
            type=kind,
            choices=choices,
            default=None,
            metavar="true|false" if is_bool else None,
            help=(docs.get(field.name, "") + shown).replace("%", "%%") or None,
        )


def flag_values(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    """``field -> value`` of the flags :func:`add_config_flags` added for ``config_class``
    that were given on the command line (unset flags are left out)."""
    prefix, flagged = getattr(args, _PREFIX_KEY + config_class.__name__, ("", []))
    values: dict[str, Any] = {}
    for name in flagged:
        value = getattr(args, prefix + name, None)
        if value is not None:
            values[name] = tuple(value) if isinstance(value, list) else value
    return values


def config_from_flags(args: argparse.Namespace, config_class: type, **overrides: Any) -> Any:
    """Build ``config_class`` from the flags :func:`add_config_flags` added (with the
    ``prefix`` it was given): flags left unset keep the config's defaults; ``overrides``
    (field -> value) win over both. A bad value is a :class:`CLIError` naming the flag."""
    values = {**flag_values(args, config_class), **overrides}
    try:
        return config_class(**values)
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
