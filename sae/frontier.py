"""The L0 frontier: every architecture of the SAE registry across a range of sparsities,
trained as one fused grid and scored against L0.

SAEBench [Karvonen2025] asks that an SAE claim be shown across sparsities, because
nearly every metric moves with L0. :func:`frontier_saes` builds, for each architecture,
SAEs along its sparsity knob: ``k`` for TopK, BatchTopK and Matryoshka, the number of
pursuit iterations for MP-SAE (its ``k``), the penalty coefficient for ReLU (L1) and JumpReLU
(L0), whose L0 is only known after training. :func:`train_frontier` trains all of them in one
:func:`~hierlens.sae.train_saes` call (SAEs of one architecture and shape become one stack;
each ends as it would trained alone). :func:`frontier_records` scores each trained SAE:
FVU and L0 on held-out activations (:func:`~hierlens.sae.evaluate_sae`), with a ground truth
MCC, F1, uniqueness and absorption (:func:`~hierlens.sae.ground_truth_recovery`), and with a
scorer for spliced cross-entropy the CE loss recovered. :func:`frontier_curves` orders the
records into one curve per architecture.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from hierlens.core.config import Config
from hierlens.core.validate import check_int
from hierlens.models.tasks.ground_truth import GroundTruth

from .base import SAE, sae_class
from .grid import build_sae_grid
from .grid_train import train_sae_grid
from .ground_truth import evaluate_ground_truth
from .metrics import evaluate_sae
from .train import SAETrainResult
from .train_config import SAETrainConfig

__all__ = [
    "FrontierSpec",
    "frontier_curves",
    "frontier_records",
    "frontier_saes",
    "train_frontier",
]


@dataclasses.dataclass(frozen=True)
class FrontierSpec(Config):
    """Which SAEs make up an L0 frontier.

    Parameters:
        d_sae: dictionary width of every SAE.
        architectures: canonical registry names (empty: every registered architecture).
        ks: ``k`` of TopK, BatchTopK and Matryoshka.
        mp_iterations: pursuit iterations (``k``) of MP-SAE.
        l1_coefficients: sparsity coefficients of the ReLU SAE.
        l0_coefficients: sparsity coefficients of the JumpReLU SAE.
        matryoshka_widths: Matryoshka's nested prefixes (empty: ``d_sae / 4`` and
            ``d_sae / 2``, then ``d_sae``).
        seed: initialisation seed of every SAE.
    """

    d_sae: int = 32
    architectures: tuple[str, ...] = ()
    ks: tuple[int, ...] = (1, 2, 4, 8)
    mp_iterations: tuple[int, ...] = (1, 2, 4, 8)
    l1_coefficients: tuple[float, ...] = (0.3, 0.1, 0.03, 0.01)
    l0_coefficients: tuple[float, ...] = (0.3, 0.1, 0.03, 0.01)
    matryoshka_widths: tuple[int, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("architectures", "ks", "mp_iterations", "l1_coefficients",
                     "l0_coefficients", "matryoshka_widths"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        check_int("FrontierSpec.d_sae", self.d_sae)
        canonical = tuple(sae_class(a).name for a in self.architectures)  # unknown: ValueError
        object.__setattr__(self, "architectures", canonical)
        for arch in self.chosen:
            if not self.values(arch):
                raise ValueError(
                    f"an empty L0 range for {arch!r}: give at least one value of "
                    f"FrontierSpec.{self.knob_field(arch)}"
                )

    @property
    def chosen(self) -> tuple[str, ...]:
        """The architectures of the frontier (canonical names, registry order)."""
        return self.architectures or tuple(SAE.registry)

    @staticmethod
    def knob_field(architecture: str) -> str:
        """The spec field holding an architecture's sparsity values."""
        name = sae_class(architecture).name
        if name == "mp":
            return "mp_iterations"
        knob = sae_class(name).grid_knob
        if knob == "k":
            return "ks"
        return {"l1_coefficient": "l1_coefficients", "l0_coefficient": "l0_coefficients"}[knob]

    def values(self, architecture: str) -> tuple:
        """The sparsity values of one architecture."""
        return getattr(self, self.knob_field(architecture))

    def widths(self) -> tuple[int, ...]:
        """Matryoshka's nested prefixes."""
        if self.matryoshka_widths:
            return self.matryoshka_widths
        return tuple(sorted({max(1, self.d_sae // 4), max(1, self.d_sae // 2)} - {self.d_sae}))

    def build(
        self, d_in: int, device: str | torch.device | None = None, **fields: Any
    ) -> tuple[dict[str, SAE], list[str]]:
        """:func:`frontier_saes` of this spec (what :func:`~hierlens.sae.train_sae_grid`
        builds a grid with)."""
        return frontier_saes(self, d_in, device=device, **fields)


def frontier_saes(
    spec: FrontierSpec, d_in: int, device: str | torch.device | None = None, **fields: Any
) -> tuple[dict[str, SAE], list[str]]:
    """Untrained SAEs of the frontier, named by :func:`~hierlens.sae.grid_name`
    (``topk_w32_k4``, ``mp_w32_k2``, ``relu_w32_l1c0.1``); ``fields`` are config fields
    shared by all (e.g. ``hook_name``). Returns ``({name: SAE}, skipped)`` (``k`` above the
    width)."""
    if not isinstance(spec, FrontierSpec):
        raise TypeError(f"spec must be a FrontierSpec, got {type(spec).__name__}")
    saes: dict[str, SAE] = {}
    skipped: list[str] = []
    for arch in spec.chosen:
        cls = sae_class(arch)
        extra = dict(fields)
        if cls.name == "matryoshka_batchtopk":
            extra["matryoshka_widths"] = spec.widths()
        values = list(spec.values(arch))
        knob = {"ks": values} if cls.grid_knob == "k" else {"coefficients": values}
        grid, skip = build_sae_grid(
            [cls.name], d_in, [spec.d_sae], device=device, seed=spec.seed, **knob, **extra
        )
        saes.update(grid)
        skipped += skip
    return saes, skipped


def train_frontier(
    spec: FrontierSpec,
    source: Any,
    d_in: int,
    *,
    config: SAETrainConfig,
    device: str | torch.device | None = None,
    progress: bool = False,
    **fields: Any,
) -> tuple[dict[str, SAE], SAETrainResult]:
    """Build the frontier's SAEs and train them all in one fused
    :func:`~hierlens.sae.train_saes` call on ``source`` (activations of width ``d_in``):
    :func:`~hierlens.sae.train_sae_grid` of ``spec``."""
    fit = train_sae_grid(
        spec, source, config, d_in=d_in, device=device, progress=progress, **fields
    )
    return fit.saes, fit.train


def frontier_records(
    saes: dict[str, SAE],
    activations: torch.Tensor,
    truth: GroundTruth | None = None,
    *,
    spliced: Callable[[SAE], dict[str, Any]] | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One record per SAE: ``name``, ``architecture``, ``knob`` and ``value`` (its
    sparsity setting), ``l0``, ``fvu``, ``mse``, ``dead_fraction`` on ``activations``
    ``(n, d_in)``; with ``truth`` (aligned row by row with ``activations``) ``mcc``,
    ``mean_f1``, ``uniqueness``, ``absorption``, ``n_split_features``,
    ``n_merged_latents``, ``per_level`` and ``matches`` (per matched true feature: its
    ``latent``, ``name``, tree ``level``, ``correlation`` and ``f1``); with ``spliced`` (``sae -> spliced_ce`` dict)
    ``ce_loss_recovered`` and ``ce_spliced``. The alignment is checked first."""
    if truth is not None and truth.n_rows != activations.shape[0]:
        raise ValueError(
            f"activations have {activations.shape[0]} rows but the ground truth has "
            f"{truth.n_rows}: they are not aligned row by row"
        )
    records = []
    for name, sae in saes.items():
        cls = type(sae)
        knob = "k" if cls.grid_knob == "k" else cls.grid_knob
        rec: dict[str, Any] = {
            "name": name,
            "architecture": cls.name,
            "knob": "iterations" if cls.name == "mp" else knob,
            "value": getattr(sae.cfg, cls.grid_knob),
            **evaluate_sae(sae, activations),
        }
        if truth is not None:
            gt = evaluate_ground_truth(sae, activations, truth, seed=seed)
            for key in ("mcc", "mean_f1", "mean_precision", "mean_recall", "uniqueness",
                        "absorption", "n_split_features", "n_merged_latents"):  # fmt: skip
                rec[key] = gt[key]
            rec["per_level"] = {str(k): v for k, v in gt["per_level"].items()}
            rec["matches"] = [
                {k: f[k] for k in ("latent", "name", "level", "correlation", "f1")}
                for f in gt["features"]
                if f["latent"] >= 0
            ]
        if spliced is not None:
            ce = spliced(sae)
            rec["ce_loss_recovered"] = ce["ce_loss_recovered"]
            rec["ce_spliced"] = ce["ce_spliced"]
        records.append(rec)
    return records


def frontier_curves(
    records: Sequence[dict[str, Any]], metrics: Sequence[str] = ("fvu", "mcc", "mean_f1")
) -> dict[str, dict[str, list[float]]]:
    """``{architecture: {"l0": [...], metric: [...]}}``, each curve sorted by L0 (records
    with a non-finite L0 are left out)."""
    out: dict[str, dict[str, list[float]]] = {}
    for arch in dict.fromkeys(r["architecture"] for r in records):
        rows = sorted(
            (r for r in records if r["architecture"] == arch and math.isfinite(r["l0"])),
            key=lambda r: r["l0"],
        )
        out[arch] = {"l0": [r["l0"] for r in rows]}
        for m in metrics:
            out[arch][m] = [r.get(m, float("nan")) for r in rows]
    return out
