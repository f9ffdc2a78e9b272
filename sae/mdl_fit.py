"""Training a grid of SAEs in one fused pass (:func:`~hierlens.sae.train_sae_grid`) and
choosing the MDL-optimal one [Ayonrinde2024]."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hierlens.core.atomic_io import write_checked_json, write_checked_jsonl

from .base import sae_class
from .grid import SAEGridConfig, check_grid_values
from .grid_train import train_sae_grid
from .mdl_select import MDLSelection, NoSAEMeetsBoundError, _bound, mdl_select
from .train import SAETrainResult
from .train_config import SAETrainConfig

__all__ = ["MDLFit", "SELECTION_FILE", "TABLE_FILE", "fit_mdl_sae"]

TABLE_FILE = "mdl_table.jsonl"
SELECTION_FILE = "mdl_selection.json"


@dataclasses.dataclass
class MDLFit:
    """Result of :func:`fit_mdl_sae`.

    Attributes:
        best: the MDL-optimal SAE. selection: the :class:`MDLSelection` over the grid.
        saes: name -> trained SAE, for every grid point. skipped: grid points not trained
            (``k`` larger than the width), as ``"name: reason"``.
        train: the trainer's :class:`~hierlens.sae.SAETrainResult`.
        out_dir: where the SAEs and the table were written (None when not saved).
    """

    best: Any
    selection: MDLSelection
    saes: dict[str, Any]
    skipped: list[str]
    train: SAETrainResult
    out_dir: Path | None


def _check_activations(name: str, x: Any, d_in: int | None = None) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or (d_in is not None and x.shape[1] != d_in):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        want = "(n, d_in)" if d_in is None else f"(m, d_in={d_in})"
        raise ValueError(f"{name} must be a tensor of shape {want}, got {shape}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contain NaN or inf values")


def _check_grid_args(
    cls: type,
    architecture: str,
    config: Any,
    widths: Sequence[int],
    ks: Sequence[int] | None,
    sparsity_coefficients: Sequence[float] | None,
) -> None:
    """Refuse training settings that are not an :class:`SAETrainConfig` with a run length,
    bad widths, and a sparsity knob that does not fit the architecture (``ks`` for a
    ``k`` architecture, ``sparsity_coefficients`` for a penalised one, never both)."""
    if not isinstance(config, SAETrainConfig):
        raise TypeError(f"config must be an SAETrainConfig, got {type(config).__name__}")
    config.total_steps  # noqa: B018 (a ValueError now when there is no run length)
    check_grid_values("widths", widths, int)
    if cls.grid_knob == "k":
        if ks is None:
            raise ValueError(f"architecture {architecture!r} needs ks=")
        if sparsity_coefficients is not None:
            raise ValueError(f"architecture {architecture!r} takes ks=, not sparsity_coefficients=")
    else:
        if sparsity_coefficients is None:
            raise ValueError(f"architecture {architecture!r} needs sparsity_coefficients=")
        if ks is not None:
            raise ValueError(f"architecture {architecture!r} takes sparsity_coefficients=, not ks=")


def _check_bound_args(
    max_fvu: float | None,
    max_ce_increase: float | None,
    model: torch.nn.Module | None,
    tokens: torch.Tensor | None,
) -> None:
    """Refuse a missing or bad distortion bound, and a CE bound without a model and tokens."""
    if max_fvu is None and max_ce_increase is None:
        raise ValueError("give a distortion bound: max_fvu and/or max_ce_increase")
    _bound("max_fvu", max_fvu)
    _bound("max_ce_increase", max_ce_increase)
    if max_ce_increase is not None and (model is None or tokens is None):
        raise ValueError("max_ce_increase needs model= and tokens= (and hook_name=)")


def _keyed_rows(
    saes: dict[str, Any], table: list[dict[str, Any]], knob: str
) -> list[dict[str, Any]]:
    """Copies of the selection's rows with each SAE's ``width`` and sparsity ``knob`` value
    (``k`` or the penalty coefficient) added."""
    keyed = []
    for row in table:
        sae = saes[row["name"]]
        keyed.append({**row, "width": sae.cfg.d_sae, knob: getattr(sae.cfg, knob)})
    return keyed


def _select_rows(
    saes: dict[str, Any],
    evals: torch.Tensor,
    knob: str,
    chosen: list[MDLSelection],
    **select_kwargs: Any,
) -> list[dict[str, Any]]:
    """The grid's table: :func:`mdl_select` over the trained ``saes`` on ``evals``, rows
    keyed by ``_keyed_rows`` (also those a :class:`NoSAEMeetsBoundError` carries); the
    selection is appended to ``chosen``."""
    try:
        selection = mdl_select(saes, evals, **select_kwargs)
    except NoSAEMeetsBoundError as exc:
        exc.table = _keyed_rows(saes, exc.table, knob)
        raise
    selection.table = _keyed_rows(saes, selection.table, knob)
    chosen.append(selection)
    return selection.table


def _write_selection(
    path: Path,
    selection: MDLSelection,
    architecture: str,
    max_fvu: float | None,
    max_ce_increase: float | None,
    skipped: list[str],
    config: SAETrainConfig,
) -> None:
    """Write the choice (best, ranking, architecture, bounds, skipped grid points and the
    training settings) as checked JSON to ``path``."""
    write_checked_json(
        path,
        {
            "best": selection.best_name,
            "ranking": selection.ranking,
            "architecture": architecture,
            "max_fvu": max_fvu,
            "max_ce_increase": max_ce_increase,
            "skipped": skipped,
            "train": config.to_dict(),
        },
    )


def fit_mdl_sae(
    activations: torch.Tensor,
    widths: Sequence[int],
    ks: Sequence[int] | None = None,
    *,
    sparsity_coefficients: Sequence[float] | None = None,
    architecture: str = "topk",
    max_fvu: float | None = None,
    max_ce_increase: float | None = None,
    model: torch.nn.Module | None = None,
    tokens: torch.Tensor | None = None,
    hook_name: str | None = None,
    eval_activations: torch.Tensor | None = None,
    config: SAETrainConfig,
    sae_kwargs: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    log_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
) -> MDLFit:
    """Train a grid of SAEs in one fused pass and pick the MDL-optimal one (Ayonrinde,
    Pearce & Sharkey 2024).

    Every ``(width, k)`` (or ``(width, coefficient)``) pair becomes one SAE named by
    :func:`hierlens.sae.grid_name` (``topk_w16_k2``, ``relu_w16_l1c0.1``) and initialised from
    the training seed; all are trained together by :func:`hierlens.sae.train_saes` (one read
    of each batch; each SAE follows the trajectory it would follow alone). Then
    :func:`mdl_select` measures every SAE's description length at the precision the bound
    allows and picks the shortest among those meeting the bound.

    Args:
        activations: ``(n, d_in)`` training activations (finite).
        widths: dictionary sizes ``d_sae``.
        ks: active latents per row, for ``"topk"``, ``"batch_topk"`` and ``"mp"``; grid
            points with ``k > width`` are skipped (listed in ``MDLFit.skipped``).
        sparsity_coefficients: the penalty coefficient for ``"relu"`` (``l1_coefficient``)
            and ``"jumprelu"`` (``l0_coefficient``).
        architecture: a registered SAE name (see :func:`hierlens.sae.sae_class`).
        max_fvu, max_ce_increase, model, tokens, hook_name: the distortion bound (see
            :func:`mdl_select`; at least one bound is needed). ``tokens`` here are the
            model's ``(N, T)`` token ids, not a run length.
        eval_activations: ``(m, d_in)`` held-out activations for the description lengths
            (default: ``activations``). Every table row also has ``fvu_train`` and
            ``fvu_heldout``: the FVU on the rows trained on and on the rows the trainer held
            out (``config.heldout_fraction``, see :mod:`hierlens.sae.heldout`).
        config: the training settings, the only way to give them (:class:`SAETrainConfig`;
            its ``seed`` also seeds the initialisations); it needs a run length (``steps`` or
            ``tokens``).
        sae_kwargs: extra config fields of every SAE (e.g. ``hook_name``).
        out_dir: when given, each SAE is saved to ``out_dir/<name>/`` (SAELens layout), the
            full table to ``out_dir/mdl_table.jsonl`` (one JSON object per SAE) and the choice
            to ``out_dir/mdl_selection.json``; the table is written even when no SAE meets
            the bound.
        progress: tqdm bars.
        log_dir: where the trackers of ``config.log_to`` write (see :func:`train_saes`).
        checkpoint_dir: checkpoint the grid's training there every
            ``config.checkpoint_every`` steps and resume from what it holds (see
            :func:`train_saes`).

    Returns:
        An :class:`MDLFit`.

    Raises:
        ValueError: bad grid, architecture or settings, no bound, NaN/inf activations,
            mismatched ``eval_activations`` width (all before training), or
            :class:`NoSAEMeetsBoundError` after training when no SAE meets the bound.
    """
    cls = sae_class(architecture)
    _check_grid_args(cls, architecture, config, widths, ks, sparsity_coefficients)
    _check_bound_args(max_fvu, max_ce_increase, model, tokens)
    _check_activations("activations", activations)
    d_in = activations.shape[1]
    evals = activations if eval_activations is None else eval_activations
    _check_activations("eval_activations", evals, d_in)

    grid = SAEGridConfig(
        widths=list(widths),
        architectures=[cls.name],
        ks=list(ks or ()),
        coefficients=list(sparsity_coefficients or ()),
    )
    out = Path(out_dir) if out_dir is not None else None
    chosen: list[MDLSelection] = []
    select = functools.partial(
        _select_rows,
        evals=evals,
        knob=cls.grid_knob,
        chosen=chosen,
        max_fvu=max_fvu,
        max_ce_increase=max_ce_increase,
        model=model,
        tokens=tokens,
        hook_name=hook_name,
        batch_size=config.batch_size,
        progress=progress,
    )
    try:
        fit = train_sae_grid(
            grid,
            activations,
            config,
            save_dir=out,
            table=select,
            table_path=None if out is None else out / TABLE_FILE,
            progress=progress,
            log_dir=log_dir,
            checkpoint_dir=checkpoint_dir,
            **{"seed": config.seed, **(sae_kwargs or {})},
        )
    except NoSAEMeetsBoundError as exc:  # the table survives, with each SAE's held-out FVU
        if out is not None:
            write_checked_jsonl(out / TABLE_FILE, exc.table)
        raise
    selection = chosen[0]
    selection.table = fit.table
    if out is not None:
        _write_selection(
            out / SELECTION_FILE, selection, cls.name, max_fvu, max_ce_increase, fit.skipped, config
        )
    return MDLFit(selection.best, selection, fit.saes, fit.skipped, fit.train, out)
