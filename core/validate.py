"""Argument checks shared by every config and entry point: one rule and one message each.

A config's ``__post_init__`` and a function's first lines call these before any work starts,
so bad input fails at once with the field's name and the value given.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def is_int(value: Any, numpy: bool = False) -> bool:
    """``value`` is an ``int`` (a NumPy integer too with ``numpy``), never a ``bool``.

    Configs keep ``numpy=False``: their fields are written to JSON, which takes no NumPy
    scalars.
    """
    kinds = (int, np.integer) if numpy else int
    return isinstance(value, kinds) and not isinstance(value, bool)


def check_int(
    name: str, value: Any, minimum: int = 1, none: bool = False, numpy: bool = False
) -> None:
    """``ValueError`` unless ``value`` is an integer ``>= minimum`` (or ``None`` with ``none``).

    ``numpy`` also accepts NumPy integers (see :func:`is_int`).
    """
    if (none and value is None) or (is_int(value, numpy) and value >= minimum):
        return
    what = {1: "a positive integer", 0: "a non-negative integer"}.get(
        minimum, f"an integer >= {minimum}"
    )
    raise ValueError(f"{name} must be {what}{' or None' if none else ''}, got {value!r}")


def check_number(
    name: str,
    value: Any,
    minimum: float = 0.0,
    strict: bool = False,
    none: bool = False,
    finite: bool = True,
) -> None:
    """``ValueError`` unless ``value`` is a finite real number ``>= minimum`` (``> minimum``
    with ``strict``), or ``None`` with ``none``; ``finite=False`` also admits ``+inf`` (never
    NaN)."""
    if none and value is None:
        return
    real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    bounded = real and (math.isfinite(value) or (not finite and value == math.inf))
    if bounded and (value > minimum if strict else value >= minimum):
        return
    bound = f"{'>' if strict else '>='} {minimum:g}"
    what = "a positive number" if strict and minimum == 0 else f"a finite number {bound}"
    raise ValueError(f"{name} must be {what}{' or None' if none else ''}, got {value!r}")


def require(owner: object, ok: bool, message: str) -> None:
    """A parameter check: ``ValueError("<owner's class name>: <message>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{type(owner).__name__}: {message}")


def check_choice(name: str, value: Any, choices: Any) -> None:
    """``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
