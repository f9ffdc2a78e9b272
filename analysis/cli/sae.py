"""``hierlens fit-sae``: train an SAE grid on a run's activations, optionally choosing by MDL."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .capture import capture_one_step
from .common import ints

log = logging.getLogger("hierlens")


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def cmd_fit_sae(args: argparse.Namespace) -> int:
    from hierlens.models.run import Run
    from hierlens.sae import fit_mdl_sae, mdl_select, train_saes

    from ..pipeline import SAEStage, build_sae_grid

    store = capture_one_step(args, [args.hook])
    hook = store.hooks[0]
    acts = store[hook]
    run = Run(args.run_dir)
    out_dir = run.saes_dir
    k_sparse = args.architecture in ("topk", "batch_topk", "mp")
    if args.mdl:
        if args.max_fvu is None:
            raise ValueError("--mdl needs a distortion bound: --max-fvu")
        fit = fit_mdl_sae(
            acts,
            args.widths,
            args.ks if k_sparse else None,
            sparsity_coefficients=None if k_sparse else args.coefficients,
            architecture=args.architecture,
            max_fvu=args.max_fvu,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            sae_kwargs={"hook_name": hook},
            out_dir=out_dir,
            device=args.device,
            progress=not args.no_progress,
        )
        selection = fit.selection
    else:
        stage = SAEStage(
            hook=hook,
            architectures=(args.architecture,),
            widths=tuple(args.widths),
            ks=tuple(args.ks),
            coefficients=tuple(args.coefficients),
        )
        grid = build_sae_grid(stage, acts.shape[1], hook)
        train_saes(
            list(grid.values()),
            acts,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            device=args.device,
            progress=not args.no_progress,
        )
        for name, sae in grid.items():
            sae.save(run.sae_dir(name))
        selection = mdl_select(grid, acts)  # no bound: each SAE at a 1% FVU-increase precision
    for row in selection.table:
        print(json.dumps(row, default=str))
    log.info(
        "lowest description length: %s (%.2f bits/token); SAEs saved under %s",
        selection.best_name,
        selection.best_length.bits,
        out_dir,
    )
    return 0


def add_sae_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit-sae", help="train an SAE grid on a run's activations (--mdl: pick by MDL)"
    )
    p.add_argument("run_dir", type=Path)
    p.add_argument("--hook", required=True, help="hook name, e.g. blocks.1.hook_resid_post")
    p.add_argument(
        "--architecture", default="topk", choices=("topk", "batch_topk", "mp", "relu", "jumprelu")
    )
    p.add_argument("--widths", type=ints, required=True, help="dictionary sizes, e.g. 32,64,128")
    p.add_argument("--ks", type=ints, default=[4, 8], help="k for topk / batch_topk / mp")
    p.add_argument(
        "--coefficients",
        type=_floats,
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
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--step", type=int, default=None, help="checkpoint (default: newest)")
    p.add_argument("--split", default="test_id")
    p.add_argument("--n", type=int, default=500, help="sequences to capture")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_fit_sae)
