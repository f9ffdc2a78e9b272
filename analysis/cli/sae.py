"""``hierlens fit-sae``: train an SAE grid on a run's activations, optionally choosing by MDL."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from hierlens.sae import SAE, SAETrainConfig

from .capture import add_capture_data_flags, capture_one_step
from .common import CLIError, add_config_flags, config_from_flags, floats, ints

log = logging.getLogger("hierlens")

# Flags the command shares with activation capture (one --device and --seed for both).
_SHARED = ("device", "seed")


def cmd_fit_sae(args: argparse.Namespace) -> int:
    from hierlens.models.run import Run

    with Run(args.run_dir).lock():
        return _fit_sae(args)


def _fit_sae(args: argparse.Namespace) -> int:
    from hierlens.models.run import Run
    from hierlens.sae import build_sae_grid, fit_mdl_sae, mdl_select, train_saes

    seed = args.seed if args.seed is not None else 0
    config = config_from_flags(args, SAETrainConfig, device=args.device, seed=seed)
    if config.steps is None and config.tokens is None:
        raise CLIError("fit-sae needs a run length: --steps or --tokens")
    k_sparse = SAE.registry[args.architecture].grid_knob == "k"
    if args.mdl and args.max_fvu is None:
        raise CLIError("--mdl needs a distortion bound: --max-fvu")
    store, hooks = capture_one_step(args, [args.hook])
    hook = hooks[0]
    acts = store[hook]
    run = Run(args.run_dir)
    out_dir = run.saes_dir
    progress = not args.no_progress
    if args.mdl:
        fit = fit_mdl_sae(
            acts,
            args.widths,
            args.ks if k_sparse else None,
            sparsity_coefficients=None if k_sparse else args.coefficients,
            architecture=args.architecture,
            max_fvu=args.max_fvu,
            config=config,
            sae_kwargs={"hook_name": hook},
            out_dir=out_dir,
            progress=progress,
            log_dir=run.trackers("saes").root,
        )
        selection = fit.selection
    else:
        grid, skipped = build_sae_grid(
            [args.architecture],
            acts.shape[1],
            args.widths,
            ks=args.ks if k_sparse else None,
            coefficients=None if k_sparse else args.coefficients,
            device=config.device,
            hook_name=hook,
            seed=config.seed,
        )
        for reason in skipped:
            log.info("skipped %s", reason)
        from hierlens.core import distributed as D

        distribute = args.distribute if D.init_from_env(config.device) else None
        result = train_saes(
            list(grid.values()),
            acts,
            config=config,
            progress=progress,
            distribute=distribute,
            log_dir=run.trackers("saes").root,
        )
        for i, (name, sae) in enumerate(grid.items()):
            if _owns(i, distribute, D):  # each SAE's files written by the rank that trained it
                sae.save(run.sae_dir(name))
        D.barrier()
        if not D.is_main():
            return 0
        selection = mdl_select(grid, acts)  # no bound: each SAE at a 1% FVU-increase precision
        for row, ev in zip(selection.table, result.evaluation):
            row.update({k: v for k, v in ev.items() if k != "sae"})
    for row in selection.table:
        print(json.dumps(row, default=str))
    _merge_table(run, selection.table, hook)
    log.info(
        "lowest description length: %s (%.2f bits/token); SAEs saved under %s",
        selection.best_name,
        selection.best_length.bits,
        out_dir,
    )
    return 0


def _merge_table(run, rows: list[dict], hook: str) -> None:
    """Put this fit's rows (FVU on the training and the held-out rows, description length)
    into the run's SAE table, which the report shows, replacing rows of the same names."""
    from hierlens.core.atomic_io import read_jsonl, write_checked_jsonl

    path = run.sae_table_path
    new = {str(r["name"]): {**r, "hook_name": hook} for r in rows}
    old = [r for r in (read_jsonl(path) if path.exists() else []) if r.get("name") not in new]
    write_checked_jsonl(path, old + list(new.values()))


def _owns(i: int, distribute: str | None, D) -> bool:
    if distribute == "saes":
        from hierlens.sae.distributed import owner

        return owner(i, D.world_size()) == D.rank()
    return D.is_main()


def add_sae_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit-sae", help="train an SAE grid on a run's activations (--mdl: pick by MDL)"
    )
    p.add_argument("run_dir", type=Path)
    p.add_argument("--hook", required=True, help="hook name, e.g. blocks.1.hook_resid_post")
    p.add_argument("--architecture", default="topk", choices=sorted(SAE.registry))
    p.add_argument("--widths", type=ints, required=True, help="dictionary sizes, e.g. 32,64,128")
    p.add_argument("--ks", type=ints, default=[4, 8], help="k for topk / batch_topk / mp")
    p.add_argument(
        "--coefficients",
        type=floats,
        default=[1e-2],
        help="sparsity penalties for relu / jumprelu",
    )
    p.add_argument(
        "--mdl",
        action="store_true",
        help="choose by description length under --max-fvu (Ayonrinde et al. 2024); without it "
        "the whole grid is trained and tabulated (bits computed at FVU <= 1)",
    )
    p.add_argument("--max-fvu", type=float, default=None, help="distortion bound for --mdl")
    p.add_argument("--step", type=int, default=None, help="checkpoint (default: newest)")
    add_capture_data_flags(p)
    p.add_argument("--device", default=None, help="capture and training device")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--distribute",
        choices=("saes", "data"),
        default="saes",
        help="under torchrun: deal the SAEs out to the processes (saes) or split each batch "
        "across them (data); ignored in a single process",
    )
    training = p.add_argument_group("SAE training (SAETrainConfig; unset: its default)")
    add_config_flags(training, SAETrainConfig, exclude=_SHARED)
    p.set_defaults(func=cmd_fit_sae)
