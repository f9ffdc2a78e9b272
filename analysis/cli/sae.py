"""``hierlens fit-sae``: train an SAE grid on a run's activations, optionally choosing by MDL."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from hierlens.models.store import hook_dir_name
from hierlens.sae import SAE, SAEGridConfig, SAETrainConfig, sae_class

from ..pipeline.config import SAEStage
from .capture import add_capture_data_flags, capture_one_step
from .common import (
    CLIError,
    add_config_flags,
    add_union_flags,
    config_from_flags,
    shared_flags,
    union_values,
)

if TYPE_CHECKING:
    import torch

    from hierlens.models.run import Run

log = logging.getLogger("hierlens")

# Flags the command shares with activation capture (one --device and --seed for both).
_SHARED = ("device", "seed")
# SAE config fields that are not architecture settings: the grid and the command set them.
_NOT_ARCH_FLAGS = ("d_in", "d_sae", "hook_name", "seed", "k", "l1_coefficient", "l0_coefficient")


def cmd_fit_sae(args: argparse.Namespace) -> int:
    from hierlens.models.run import Run

    with Run(args.run_dir).lock():
        return _fit_sae(args)


def _training_key(
    args: argparse.Namespace,
    hook: str,
    step: int,
    grid: SAEGridConfig,
    fields: dict,
    config: SAETrainConfig,
) -> str:
    """The folder name of this grid's training checkpoints: the hook and a digest of
    everything that decides the SAEs (grid, architecture settings, training settings, data)."""
    spec = {
        "hook": hook,
        "step": step,
        "grid": [grid.to_dict(), fields, args.mdl, args.max_fvu],
        "train": config.to_dict(),
        "data": [args.split, args.n, args.seed, args.pool],
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()
    return f"{hook_dir_name(hook)}-{digest[:12]}"


def _arch_fields(args: argparse.Namespace, architectures: tuple[str, ...]) -> dict:
    """The SAE architecture fields given as flags; each must be a field of every chosen
    architecture's config."""
    values = union_values(args)
    for name in values:
        lacking = [a for a in architectures if name not in _fields(SAE.registry[a].config_class)]
        if lacking:
            flag = "--" + name.replace("_", "-")
            raise CLIError(f"{flag} is not a setting of {', '.join(lacking)}")
    return values


def _fields(config_class: type) -> set[str]:
    return {f.name for f in dataclasses.fields(config_class)}


def _fit_sae(args: argparse.Namespace) -> int:
    """``fit-sae`` under the run's lock: capture the hook's activations at the step, fit the
    grid (by MDL with ``--mdl``), print its table rows as JSON lines and merge them into the
    run's SAE table."""
    from hierlens.models.run import Run

    config, grid, hook, fields = _fit_settings(args)
    store, hooks = capture_one_step(args, [hook])
    hook = hooks[0]
    acts = store[hook]
    run = Run(args.run_dir)
    out_dir = run.saes_dir
    step = args.step if args.step is not None else run.steps[-1]
    ckpt = _checkpoint_dir(args, run, hook, step, grid, fields, config)
    if args.mdl:
        rows, best, bits = _fit_by_mdl(args, run, acts, hook, grid, fields, config, ckpt)
    else:
        fitted = _fit_whole_grid(args, run, acts, hook, grid, fields, config, ckpt)
        if fitted is None:  # not the first process under torchrun
            return 0
        rows, best, bits = fitted
    if ckpt is not None:  # the SAEs are saved: their training checkpoints are done with
        _remove_checkpoints(run, ckpt)
    for row in rows:
        print(json.dumps(row, default=str))
    _merge_table(run, rows, hook)
    log.info(
        "lowest description length: %s (%.2f bits/token); SAEs saved under %s",
        best,
        bits,
        out_dir,
    )
    return 0


def _fit_settings(
    args: argparse.Namespace,
) -> tuple[SAETrainConfig, SAEGridConfig, str, dict]:
    """The training config, the grid (architectures by their registry names), the hook and
    the architecture fields given by the flags, checked before any capture or training."""
    seed = args.seed if args.seed is not None else SAETrainConfig().seed
    config = config_from_flags(args, SAETrainConfig, device=args.device, seed=seed)
    if config.steps is None and config.tokens is None:
        raise CLIError("fit-sae needs a run length: --steps or --tokens")
    grid = config_from_flags(args, SAEGridConfig)
    grid = grid.replace(architectures=tuple(sae_class(a).name for a in grid.architectures))
    hook = config_from_flags(args, SAEStage).hook
    fields = _arch_fields(args, grid.architectures)
    if args.mdl and args.max_fvu is None:
        raise CLIError("--mdl needs a distortion bound: --max-fvu")
    if args.mdl and len(grid.architectures) != 1:
        raise CLIError("--mdl chooses within one architecture: give one --architectures")
    return config, grid, hook, fields


def _checkpoint_dir(
    args: argparse.Namespace,
    run: Run,
    hook: str,
    step: int,
    grid: SAEGridConfig,
    fields: dict,
    config: SAETrainConfig,
) -> Path | None:
    """With ``--checkpoint-every``, the run's folder the grid checkpoints its training into
    (a rerun resumes it mid-run); else None."""
    if config.checkpoint_every is None:
        return None
    ckpt = run.sae_training_dir(_training_key(args, hook, step, grid, fields, config))
    log.info(
        "checkpointing the SAE grid's training every %d steps in %s",
        config.checkpoint_every,
        ckpt,
    )
    return ckpt


def _fit_by_mdl(
    args: argparse.Namespace,
    run: Run,
    acts: torch.Tensor,
    hook: str,
    grid: SAEGridConfig,
    fields: dict,
    config: SAETrainConfig,
    ckpt: Path | None,
) -> tuple[list[dict], str, float]:
    """``--mdl``: fit the grid of the one architecture and choose by description length
    under ``--max-fvu``; returns the table rows, the chosen SAE's name and its bits/token."""
    from hierlens.sae import fit_mdl_sae

    k_sparse = SAE.registry[grid.architectures[0]].grid_knob == "k"
    fit = fit_mdl_sae(
        acts,
        grid.widths,
        grid.ks if k_sparse else None,
        sparsity_coefficients=None if k_sparse else grid.coefficients,
        architecture=grid.architectures[0],
        max_fvu=args.max_fvu,
        config=config,
        sae_kwargs={"hook_name": hook, **fields},
        out_dir=run.saes_dir,
        progress=not args.no_progress,
        log_dir=run.trackers("saes").root,
        checkpoint_dir=ckpt,
    )
    return fit.selection.table, fit.selection.best_name, fit.selection.best_length.bits


def _fit_whole_grid(
    args: argparse.Namespace,
    run: Run,
    acts: torch.Tensor,
    hook: str,
    grid: SAEGridConfig,
    fields: dict,
    config: SAETrainConfig,
    ckpt: Path | None,
) -> tuple[list[dict], str, float] | None:
    """Without ``--mdl``: train and tabulate the whole grid (under torchrun as ``--distribute``
    says); returns the table rows and the name and bits/token of the SAE with the lowest
    description length, or None in a process other than the first under torchrun."""
    from hierlens.core import distributed as D
    from hierlens.sae import grid_table, train_sae_grid

    distribute = args.distribute if D.init_from_env(config.device) else None
    fit = train_sae_grid(
        grid,
        acts,
        config,
        save_dir=run.sae_dir,
        table=lambda saes: grid_table(saes, acts),
        distribute=distribute,
        progress=not args.no_progress,
        log_dir=run.trackers("saes").root,
        checkpoint_dir=ckpt,
        hook_name=hook,
        seed=config.seed,
        **fields,
    )
    if fit.table is None:
        return None
    rows = fit.table
    best_row = min(rows, key=lambda r: r["description_length_bits"])
    return rows, best_row["name"], best_row["description_length_bits"]


def _remove_checkpoints(run: Run, ckpt: Path) -> None:
    """Remove the grid's training checkpoints once its SAEs are saved, and ``saes/training/``
    once it is empty."""
    from hierlens.core.confined_delete import remove_tree
    from hierlens.models.run_clean import remove_owned

    remove_owned(run.path, [ckpt], "the SAE trainer")
    remove_tree(ckpt.parent, lambda parts: False)


def _merge_table(run, rows: list[dict], hook: str) -> None:
    """Put this fit's rows (FVU on the training and the held-out rows, description length)
    into the run's SAE table, which the report shows, replacing rows of the same names."""
    from hierlens.core.atomic_io import write_checked_jsonl

    path = run.sae_table_path
    new = {str(r["name"]): {**r, "hook_name": hook} for r in rows}
    old = [r for r in run.read_records(path, writer=True) if r.get("name") not in new]
    write_checked_jsonl(path, old + list(new.values()))


def add_sae_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit-sae",
        help="train an SAE grid on a run's activations (--mdl: pick by MDL)",
        parents=shared_flags("run_dir", "step", "device", "seed", "n", "progress"),
    )
    add_config_flags(p, SAEStage, only=("hook",))
    add_config_flags(p.add_argument_group("SAE grid (SAEGridConfig)"), SAEGridConfig)
    p.add_argument(
        "--mdl",
        action="store_true",
        help="choose by description length under --max-fvu (Ayonrinde et al. 2024); without it "
        "the whole grid is trained and tabulated (bits computed at FVU <= 1)",
    )
    p.add_argument("--max-fvu", type=float, default=None, help="distortion bound for --mdl")
    add_capture_data_flags(p)
    p.add_argument(
        "--distribute",
        choices=("saes", "data"),
        default="saes",
        help="under torchrun: deal the SAEs out to the processes (saes) or split each batch "
        "across them (data); ignored in a single process",
    )
    architecture = p.add_argument_group(
        "SAE architecture (each architecture's config; unset: its default)"
    )
    classes = [cls.config_class for cls in SAE.registry.values()]
    add_union_flags(architecture, classes, exclude=_NOT_ARCH_FLAGS)
    training = p.add_argument_group("SAE training (SAETrainConfig; unset: its default)")
    add_config_flags(training, SAETrainConfig, exclude=_SHARED)
    p.set_defaults(func=cmd_fit_sae)
