"""The causal sweep of one model on one task: patching, attribution and DAS with controls.

:func:`causal_sweep` is what ``hierlens patch``/``hierlens das``, the pipeline's
``[causal]`` stage, the report and the ``causal-dyck`` figure share: for each variable it
draws minimal pairs, runs activation patching and attribution patching (for variables whose
pairs change the output) over the hooks x positions before the query, and DAS with its
controls at every hook, and returns JSON-ready records.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import torch

from hierlens.core.config import Config
from hierlens.core.validate import check_int
from hierlens.models.tasks.base import Task
from hierlens.models.tasks.variables import causal_model, minimal_pairs

from .alignment import DASConfig
from .patching import CHOICES, activation_patching
from .sites import check_hooks

__all__ = ["PatchConfig", "causal_sweep", "default_hooks", "patching_record"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PatchConfig(Config):
    """Settings of an activation-patching sweep.

    Parameters:
        n_pairs: minimal pairs drawn per variable.
        split: the task split the pairs come from.
        seed: seeds the pairs.
        direction: "denoise" (corrupt run, clean activation patched in) or "noise".
        metric: "logit_diff" or "prob" (probability of the clean answer among the candidates).
        per_head: one site per attention head where an activation has a head axis.
        span: positions before the query shown (patching effects counted back from it).
        batch_size: patched rows per forward.
        attribution: also run attribution patching and report its agreement.
    """

    FIELD_CHOICES = CHOICES

    n_pairs: int = 64
    split: str = "test_id"
    seed: int = 0
    direction: str = "denoise"
    metric: str = "logit_diff"
    per_head: bool = True
    span: int = 8
    batch_size: int = 512
    attribution: bool = True

    def __post_init__(self) -> None:
        for name in ("n_pairs", "span", "batch_size"):
            check_int(f"PatchConfig.{name}", getattr(self, name))
        self.check_choices()


def default_hooks(model: torch.nn.Module) -> list[str]:
    """The residual stream before the first block and after each block of a bridge; every
    hook point whose name starts with ``hook_`` on a plain module."""
    cfg = getattr(model, "cfg", None)
    if hasattr(model, "hook_dict") and hasattr(cfg, "n_layers"):
        return ["blocks.0.hook_resid_pre"] + [
            f"blocks.{i}.hook_resid_post" for i in range(int(cfg.n_layers))
        ]
    return [n for n, _ in model.named_modules() if n.rsplit(".", 1)[-1].startswith("hook_")]


def patching_record(model, pairs, hooks: Sequence[str], config: PatchConfig) -> dict[str, Any]:
    """Patching (and attribution) of one variable's pairs: per hook the normalised effect
    at the ``span`` positions up to the query, and the attribution's agreement."""
    from .attribution import agreement, attribution_patching

    real = activation_patching(
        model, pairs, hooks, direction=config.direction, metric=config.metric,
        per_head=config.per_head, batch_size=config.batch_size,
    )  # fmt: skip
    span = min(config.span, int(pairs.base_query.min()) + 1)
    record: dict[str, Any] = {
        "variable": pairs.variable,
        "direction": config.direction,
        "metric": config.metric,
        "n_pairs": len(pairs),
        "offsets": list(range(-(span - 1), 1)),
        "hooks": list(real.hooks),
        "clean": float(real.clean.mean()),
        "corrupt": float(real.corrupt.mean()),
        "effect": {
            h: real.effect_before_query(h, span, pairs.base_query).tolist() for h in real.hooks
        },
    }
    if config.attribution:
        est = attribution_patching(
            model, pairs, hooks, direction=config.direction, metric=config.metric,
            per_head=config.per_head,
        )  # fmt: skip
        record["attribution"] = {
            h: est.effect_before_query(h, span, pairs.base_query).tolist() for h in est.hooks
        }
        record["agreement"] = agreement(real, est)
    return record


def causal_sweep(
    model: torch.nn.Module,
    task: Task,
    variables: Sequence[str] | None = None,
    hooks: Sequence[str] | None = None,
    *,
    patch: PatchConfig | None = None,
    das: DASConfig | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Patching and DAS (with controls) of every variable of ``task``'s causal model.

    Returns ``{"task", "hooks", "patching": [record per variable whose pairs change the
    output], "das": [record per (variable, hook)]}``; with ``patch=None`` or ``das=None``
    that part is skipped. Unknown variables and hooks fail before any work.
    """
    from .controls import das_with_controls

    cm = causal_model(task)
    names = list(cm.variables) if not variables else list(variables)
    for v in names:
        cm.check_variable(v)
    hooks = check_hooks(model, list(hooks) if hooks else default_hooks(model))
    out: dict[str, Any] = {"task": task.name, "hooks": hooks, "patching": [], "das": []}
    for v in names:
        if patch is not None and v not in cm.null_variables:
            pairs = minimal_pairs(cm, v, patch.n_pairs, split=patch.split, seed=patch.seed)
            if bool((pairs.base_label != pairs.source_label).all()):
                log.info("patching %s over %d hooks", v, len(hooks))
                out["patching"].append(patching_record(model, pairs, hooks, patch))
        if das is not None:
            pairs = minimal_pairs(cm, v, das.n_pairs, split=patch.split if patch else "test_id",
                                  seed=das.seed + 1)  # fmt: skip
            log.info("DAS for %s at %d hooks (rank %d)", v, len(hooks), das.rank)
            out["das"] += das_with_controls(
                model, pairs, hooks, das, random_model=das.controls, progress=progress
            )
    return out
