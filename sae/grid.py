"""Grids of SAEs: one naming scheme for a grid member and one builder, used by MDL fitting,
the pipeline and the CLI.

A member is named ``<architecture>_w<width>_<knob><value>`` with the canonical architecture
name and the architecture's ``grid_knob``: ``topk_w64_k8``, ``mp_w128_k4``,
``relu_w64_l1c0.01`` (``l1_coefficient``), ``jumprelu_w64_l0c0.01`` (``l0_coefficient``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from . import (  # noqa: F401 (registration)
    batch_topk,
    jumprelu,
    matching_pursuit,
    matryoshka,
    relu,
    topk,
)
from .base import SAE, sae_class


def knob_tag(knob: str) -> str:
    """The short tag of a grid knob in member names: ``k`` -> ``k``, ``l1_coefficient`` ->
    ``l1c``, ``l0_coefficient`` -> ``l0c``."""
    return knob.removesuffix("_coefficient") + "c" if knob.endswith("_coefficient") else knob


def grid_name(architecture: str, width: int, value: float) -> str:
    """The name of one grid member: ``grid_name("topk", 64, 8) == "topk_w64_k8"``,
    ``grid_name("relu", 64, 0.01) == "relu_w64_l1c0.01"`` (any registered name or alias of
    the architecture; the canonical name is used)."""
    cls = sae_class(architecture)
    shown = f"{value}" if cls.grid_knob == "k" else f"{value:g}"
    return f"{cls.name}_w{width}_{knob_tag(cls.grid_knob)}{shown}"


def check_grid_values(name: str, values: Sequence[Any] | None, kind: type) -> list:
    """``values`` as a list after checking it is non-empty, distinct, and holds positive
    ints (``kind=int``) or finite numbers >= 0 (``kind=float``); ``[]`` for None."""
    if values is None:
        return []
    values = list(values)
    if not values:
        raise ValueError(f"{name} must not be empty")
    for v in values:
        if kind is int:
            ok = isinstance(v, int) and not isinstance(v, bool) and v >= 1
        else:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            ok = ok and math.isfinite(v) and v >= 0
        if not ok:
            what = "positive ints" if kind is int else "finite numbers >= 0"
            raise ValueError(f"{name} must hold {what}, got {v!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} has repeated values: {values}")
    return values


def build_sae_grid(
    architectures: Sequence[str],
    d_in: int,
    widths: Sequence[int],
    *,
    ks: Sequence[int] | None = None,
    coefficients: Sequence[float] | None = None,
    device: str | torch.device | None = None,
    **fields: Any,
) -> tuple[dict[str, SAE], list[str]]:
    """Untrained SAEs for every architecture x width x knob value.

    Architectures whose ``grid_knob`` is ``k`` (``topk``, ``batch_topk``, ``mp``) take every
    value of ``ks``; penalised ones (``relu``, ``jumprelu``) every value of
    ``coefficients``. Every SAE reads width ``d_in`` and gets ``fields`` (config fields shared
    by all, e.g. ``hook_name``, ``seed``).

    Returns:
        ``({grid_name: SAE}, skipped)``: ``skipped`` lists members with ``k`` larger than
        the width as ``"name: reason"``.

    Raises:
        ValueError: an unknown architecture, an architecture without its knob values, or bad
            widths/values (before any SAE is built).
    """
    classes = [sae_class(a) for a in architectures]
    widths = check_grid_values("widths", widths, int)
    ks = check_grid_values("ks", ks, int)
    coefficients = check_grid_values("coefficients", coefficients, float)
    for cls in classes:
        if not (ks if cls.grid_knob == "k" else coefficients):
            need = "ks" if cls.grid_knob == "k" else "sparsity coefficients"
            raise ValueError(f"architecture {cls.name!r} needs {need}")
    grid: dict[str, SAE] = {}
    skipped: list[str] = []
    for cls in classes:
        values = ks if cls.grid_knob == "k" else coefficients
        for width in widths:
            for value in values:
                name = grid_name(cls.name, width, value)
                if cls.grid_knob == "k" and value > width:
                    skipped.append(f"{name}: k={value} > width={width}")
                    continue
                grid[name] = cls(d_in, width, device=device, **{cls.grid_knob: value}, **fields)
    return grid, skipped
