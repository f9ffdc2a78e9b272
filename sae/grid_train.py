"""Fitting a grid of SAEs: build, train as one fused run, save, tabulate. The one path the
command line, the pipeline, MDL fitting, Ray tasks and the L0 frontier all take."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from hierlens.core import distributed as D
from hierlens.core.atomic_io import write_checked_jsonl

from .base import SAE
from .distributed import owner
from .files import is_saved, load_sae
from .heldout import split_evaluation
from .train import SAETrainResult, train_saes
from .train_config import SAETrainConfig

__all__ = ["GridSpec", "SAEGridFit", "grid_table", "train_sae_grid"]

log = logging.getLogger(__name__)


class GridSpec(Protocol):
    """What describes a grid: :class:`~hierlens.sae.SAEGridConfig` or
    :class:`~hierlens.sae.FrontierSpec`."""

    def build(
        self, d_in: int, device: str | torch.device | None = None, **fields: Any
    ) -> tuple[dict[str, SAE], list[str]]: ...


@dataclasses.dataclass
class SAEGridFit:
    """Result of :func:`train_sae_grid`.

    Attributes:
        saes: member name -> SAE: the members trained now, plus (when a table was asked
            for) those loaded from their saved folders.
        trained: names of the members trained by this call.
        skipped: members not built (``k`` larger than the width), as ``"name: reason"``.
        train: the trainer's result (None when nothing was left to train).
        table: the rows of the ``table`` function (None without one, and on the ranks
            other than the first under ``torchrun``).
        evaluation: member name -> its FVU on the rows it was trained on and on the rows
            the trainer held out (:func:`~hierlens.sae.heldout.heldout_evaluation`; for a
            tensor source).
    """

    saes: dict[str, SAE]
    trained: list[str]
    skipped: list[str]
    train: SAETrainResult | None
    table: list[dict[str, Any]] | None
    evaluation: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


def grid_table(saes: Mapping[str, SAE], activations: torch.Tensor) -> list[dict[str, Any]]:
    """One row per SAE on ``activations`` ``(n, d_in)``: ``name``, ``architecture``,
    ``d_sae``, ``k`` (None without one), the metrics of :func:`~hierlens.sae.evaluate_sae`,
    ``dead`` (its dead fraction), ``description_length_bits`` and ``bin_width``
    (:func:`~hierlens.sae.description_length`, the codes at a 1% FVU-increase precision
    [Ayonrinde2024])."""
    from .mdl import description_length
    from .metrics import evaluate_sae

    rows = []
    for name, sae in saes.items():
        metrics = evaluate_sae(sae, activations)
        dl = description_length(sae, activations)
        rows.append(
            {
                "name": name,
                "architecture": type(sae).__name__,
                "d_sae": sae.d_sae,
                "k": getattr(sae.cfg, "k", None),
                **metrics,
                "dead": metrics["dead_fraction"],
                "description_length_bits": dl.bits,
                "bin_width": dl.bin_width,
            }
        )
    return rows


def _folder(save_dir: Callable[[str], Path] | str | os.PathLike, name: str) -> Path:
    return Path(save_dir(name)) if callable(save_dir) else Path(save_dir) / name


def train_sae_grid(
    grid: GridSpec,
    activations: Any,
    config: SAETrainConfig,
    *,
    d_in: int | None = None,
    device: str | torch.device | None = None,
    save_dir: Callable[[str], Path] | str | os.PathLike | None = None,
    members: Sequence[str] | None = None,
    resume: bool = False,
    table: Callable[[dict[str, SAE]], list[dict[str, Any]]] | None = None,
    table_path: str | os.PathLike | None = None,
    distribute: str | None = None,
    progress: bool = True,
    log_dir: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    **fields: Any,
) -> SAEGridFit:
    """Build the SAEs of ``grid``, train them as one fused :func:`~hierlens.sae.train_saes`
    run (each ends as it would trained alone), save each, and tabulate the grid.

    Args:
        grid: a :class:`~hierlens.sae.SAEGridConfig` or :class:`~hierlens.sae.FrontierSpec`
            (members named by :func:`~hierlens.sae.grid_name`; the ``k``-against-width
            rule is :class:`~hierlens.sae.SAEGridConfig`'s).
        activations: the training source of :func:`~hierlens.sae.train_saes` (a tensor
            ``(n, d_in)``, an iterable of batches or a callable).
        config: the training settings.
        d_in: the activation width (default: ``activations.shape[1]``).
        device: where the SAEs are built and kept (default: ``config.device``; they train
            on ``config.device`` either way).
        save_dir: where each member is saved: a folder (member ``m`` in ``save_dir/m``) or
            a function member name -> folder. None: nothing is saved.
        members: train only these members (default: every member).
        resume: members whose folder already holds a completely saved SAE
            (:func:`~hierlens.sae.is_saved`) are not trained (they are loaded when a table
            is asked for).
        table: rows of the whole grid, ``table({name: SAE}) -> [row]`` (for example
            ``lambda saes: grid_table(saes, x)``); None: no table. Each row (also of the
            ``table`` an error it raises carries) gets its member's ``evaluation``.
        table_path: where the rows are written as JSON lines (with ``table``).
        distribute: under ``torchrun``, ``"saes"`` deals the members out to the processes
            (each saves its own) and ``"data"`` splits each batch; only the first process
            tabulates.
        progress: tqdm bars. log_dir: where the trackers of ``config.log_to`` write.
        checkpoint_dir: the trainer checkpoints the members being trained there every
            ``config.checkpoint_every`` steps and resumes mid-run from what it holds (see
            :func:`~hierlens.sae.train_saes`); None: no checkpoints.
        **fields: SAE config fields shared by every member (``hook_name``, ``seed``, ...).

    Returns:
        An :class:`SAEGridFit`.

    Raises:
        ValueError: a bad grid, an unknown member, or ``resume``/``table_path`` without
            what they need (all before training); what ``table`` raises, after saving.
    """
    if d_in is None:
        if not isinstance(activations, torch.Tensor) or activations.dim() != 2:
            raise ValueError("give d_in= for a source that is not an (n, d_in) tensor")
        d_in = activations.shape[1]
    if resume and save_dir is None:
        raise ValueError("resume=True needs save_dir= (where the saved members are)")
    if table_path is not None and table is None:
        raise ValueError("table_path= needs table= (the function that makes the rows)")
    device = config.device if device is None else device
    built, skipped = grid.build(d_in, device=device, **fields)
    names = list(built) if members is None else list(members)
    unknown = [m for m in names if m not in built]
    if unknown:
        raise ValueError(f"no grid member(s) {unknown}; the grid has {list(built)}")
    if resume:
        names = [m for m in names if not is_saved(_folder(save_dir, m))]
    todo = {m: built[m] for m in names}
    result = None
    if todo:
        result = train_saes(
            list(todo.values()),
            activations,
            config=config,
            progress=progress,
            distribute=distribute,
            log_dir=log_dir,
            checkpoint_dir=checkpoint_dir,
            resume=checkpoint_dir is not None,
        )
        for sae in todo.values():
            sae.eval()
    if save_dir is not None:
        for i, (name, sae) in enumerate(todo.items()):
            if _saves(i, distribute):  # each SAE's files written by the rank that trained it
                sae.save(_folder(save_dir, name))
        D.barrier()
    fit = SAEGridFit(dict(todo), list(todo), skipped, result, None)
    if result is not None:
        fit.evaluation = {name: _plain(ev) for name, ev in zip(todo, result.evaluation)}
    if table is None or not D.is_main():
        return fit
    for name in built:
        if name not in fit.saes and members is None and save_dir is not None:
            sae = load_sae(_folder(save_dir, name), device=device, verify=True)
            fit.saes[name] = sae
            if isinstance(activations, torch.Tensor):  # the trainer's split, drawn again
                found = split_evaluation([sae], activations, config)
                fit.evaluation[name] = _plain(found[0]) if found else {}
    fit.saes = {name: fit.saes[name] for name in built if name in fit.saes}
    try:
        fit.table = _with_evaluation(table(fit.saes), fit.evaluation)
    except Exception as exc:  # an error that carries the table (NoSAEMeetsBoundError) gets it too
        if isinstance(getattr(exc, "table", None), list):
            exc.table = _with_evaluation(exc.table, fit.evaluation)
        raise
    if table_path is not None:
        write_checked_jsonl(Path(table_path), fit.table)
    return fit


def _plain(evaluation: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in evaluation.items() if k != "sae"}


def _with_evaluation(
    rows: list[dict[str, Any]], evaluation: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    return [{**row, **evaluation.get(str(row.get("name")), {})} for row in rows]


def _saves(i: int, distribute: str | None) -> bool:
    if distribute == "saes" and D.is_distributed():
        return owner(i, D.world_size()) == D.rank()
    return D.is_main()
