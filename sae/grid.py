"""Grids of SAEs: one naming scheme for a grid member, the grid's config
(:class:`SAEGridConfig`, with the one rule for ``k`` against the width) and its builder.
Training, saving and tabulating a grid is :func:`hierlens.sae.train_sae_grid`.

A member is named ``<architecture>_w<width>_<knob><value>`` with the canonical architecture
name and the architecture's ``grid_knob``: ``topk_w64_k8``, ``mp_w128_k4``,
``relu_w64_l1c0.01`` (``l1_coefficient``), ``jumprelu_w64_l0c0.01`` (``l0_coefficient``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import Any

import torch

from hierlens.core.config import Config

from . import (  # noqa: F401 (registration)
    batch_topk,
    jumprelu,
    matching_pursuit,
    matryoshka,
    relu,
    topk,
)
from .base import SAE, sae_class

log = logging.getLogger(__name__)


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


@dataclasses.dataclass(frozen=True)
class SAEGridConfig(Config):
    """Which SAEs make up a grid: every architecture x width x knob value.

    Architectures whose ``grid_knob`` is ``k`` (``topk``, ``batch_topk``,
    ``matryoshka_batchtopk``, ``mp``) take every value of ``ks``; penalised ones (``relu``,
    ``jumprelu``) every value of ``coefficients``. The one rule for ``k`` against the width:
    a member whose ``k`` is larger than its width is skipped (with a warning and listed in
    ``skipped``); a grid in which a k-sparse architecture would have no member left (every
    ``k`` above every width) is a ``ValueError``.

    Parameters:
        widths: dictionary sizes ``d_sae``, e.g. 32,64,128.
        architectures: registered SAE names (see ``hierlens.sae.SAE.registry``).
        ks: active latents per row of the k-sparse architectures (topk, batch_topk,
            matryoshka_batchtopk, mp).
        coefficients: sparsity penalties of the penalised architectures (relu:
            ``l1_coefficient``, jumprelu: ``l0_coefficient``).
    """

    widths: tuple[int, ...]
    architectures: tuple[str, ...] = ("topk",)
    ks: tuple[int, ...] = (4, 8)
    coefficients: tuple[float, ...] = (1e-2,)

    def __post_init__(self) -> None:
        for name in ("widths", "architectures", "ks", "coefficients"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise ValueError(f"{name} must be a list, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if not self.architectures:
            raise ValueError("architectures must not be empty")
        bad = [a for a in self.architectures if a not in SAE._aliases]
        if bad:
            raise ValueError(f"architectures: unknown {bad}; choose from {sorted(SAE.registry)}")
        canonical = tuple(sae_class(a).name for a in self.architectures)
        if len(set(canonical)) != len(canonical):
            raise ValueError(f"architectures has repeated entries: {list(self.architectures)}")
        check_grid_values("widths", self.widths, int)
        for name, kind in (("ks", int), ("coefficients", float)):
            if getattr(self, name):
                check_grid_values(name, getattr(self, name), kind)
        for arch in canonical:
            if not self.values(arch):
                need = "ks" if sae_class(arch).grid_knob == "k" else "sparsity coefficients"
                raise ValueError(f"architecture {arch!r} needs {need}")
        k_sparse = [a for a in canonical if sae_class(a).grid_knob == "k"]
        if k_sparse and min(self.ks) > max(self.widths):
            raise ValueError(
                f"every k of ks {list(self.ks)} exceeds every width of {list(self.widths)}: "
                f"{', '.join(k_sparse)} would have no grid member"
            )

    def values(self, architecture: str) -> tuple:
        """The knob values of one architecture: ``ks`` or ``coefficients``."""
        return self.ks if sae_class(architecture).grid_knob == "k" else self.coefficients

    def build(
        self, d_in: int, device: str | torch.device | None = None, **fields: Any
    ) -> tuple[dict[str, SAE], list[str]]:
        """Untrained SAEs of the grid reading width ``d_in``, named by :func:`grid_name`;
        ``fields`` are config fields shared by all (e.g. ``hook_name``, ``seed``).

        Returns:
            ``({grid_name: SAE}, skipped)``: ``skipped`` lists the members whose ``k`` is
            larger than their width, as ``"name: reason"`` (each also logged as a warning).
        """
        grid: dict[str, SAE] = {}
        skipped: list[str] = []
        for arch in self.architectures:
            cls = sae_class(arch)
            for width in self.widths:
                for value in self.values(arch):
                    name = grid_name(cls.name, width, value)
                    if cls.grid_knob == "k" and value > width:
                        skipped.append(f"{name}: k={value} > width={width}")
                        log.warning("SAE grid: skipped %s", skipped[-1])
                        continue
                    knob = {cls.grid_knob: value}
                    grid[name] = cls(d_in, width, device=device, **knob, **fields)
        return grid, skipped


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
    """Untrained SAEs for every architecture x width x knob value: :meth:`SAEGridConfig.build`
    of ``SAEGridConfig(widths, architectures, ks, coefficients)`` (no default knob values:
    an architecture without its ``ks`` or ``coefficients`` is a ``ValueError``).

    Returns:
        ``({grid_name: SAE}, skipped)``: ``skipped`` lists members with ``k`` larger than
        the width as ``"name: reason"`` (the rule of :class:`SAEGridConfig`).

    Raises:
        ValueError: an unknown architecture, an architecture without its knob values, or bad
            widths/values (before any SAE is built).
    """
    grid = SAEGridConfig(
        widths=list(widths),
        architectures=list(architectures),
        ks=list(ks or ()),
        coefficients=list(coefficients or ()),
    )
    return grid.build(d_in, device=device, **fields)
