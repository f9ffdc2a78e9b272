"""``hierlens probe``: k-sparse probe sweep on a run's activations and task labels."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .capture import add_capture_data_flags, add_source_flags, capture_one_step
from .common import CLIError, ints

log = logging.getLogger("hierlens")


def cmd_probe(args: argparse.Namespace) -> int:
    from hierlens.models.run import Run

    with Run(args.run_dir).lock():
        return _probe(args)


def _probe(args: argparse.Namespace) -> int:
    from hierlens.models.run import Run
    from hierlens.probes import probe_sweep

    store, hooks = capture_one_step(args, args.hooks.split(","))
    names = args.labels.split(",") if args.labels else sorted(store.labels)
    missing = [name for name in names if name not in store.labels]
    if missing:
        raise ValueError(
            f"unknown label(s) {missing}; the task provides: {', '.join(sorted(store.labels))}"
        )
    out = Run(args.run_dir).probe_results_path
    records = probe_sweep(
        {hook: store[hook] for hook in hooks},
        {name: store.labels[name].numpy() for name in names},
        ks=args.ks,
        selection=args.selection.split(","),
        seed=args.seed if args.seed is not None else 0,
        device=args.device,
        out_path=out,
        progress=not args.no_progress,
    )
    from ..report.sections import feature_name

    names = Run(args.run_dir).label_names()  # pos=NN rather than pos=20
    best: dict[tuple[str, str], dict] = {}
    for r in records:
        key = (feature_name(r, names), r["hook"])
        if key not in best or r["f1"] > best[key]["f1"]:
            best[key] = r
    for (feature, hook), r in sorted(best.items()):
        print(
            json.dumps(
                {"feature": feature, "hook": hook, "best_f1": round(r["f1"], 4), "k": r["k"]}
            )
        )
    log.info("%d probes written to %s", len(records), out)
    return 0


def cmd_structural_probe(args: argparse.Namespace) -> int:
    from ..structural import run_structural_probes
    from .capture import prepare_run

    run = prepare_run(args)
    fit = {"rank": args.rank, "max_epochs": args.max_epochs, "seed": args.seed}
    if args.no_controls and args.control_seed is not None:
        raise CLIError("--control-seed seeds the random-weights control, which --no-controls skips")
    records = run_structural_probes(
        run.path,
        layers=None if args.layers == "all" else ints(args.layers),
        pool=args.pool,
        controls=not args.no_controls,
        device=args.device,
        control_seed=args.control_seed if args.control_seed is not None else 0,
        **fit,
    )
    for r in records:
        keys = ("model", "layer", "uuas", "uuas_ci", "spearman", "spearman_ci", "root_acc")
        shown = {k: r[k] for k in keys if k in r}
        print(json.dumps(shown))
    log.info("%d records written to %s", len(records), run.structural_probe_path)
    return 0


def add_probe_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="k-sparse probe sweep on a run's activations and task labels")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--hooks", required=True, help="comma-separated hook names or globs")
    p.add_argument(
        "--labels",
        default=None,
        help="comma-separated per-token task labels (default: all, e.g. depth,nesting)",
    )
    p.add_argument("--ks", type=ints, default=[1, 2, 4, 8, 16], help="sparsity levels")
    p.add_argument(
        "--selection",
        default="mean_diff",
        help="mean_diff, anova, mutual_info, l1, telescope, random, exhaustive (comma-separated)",
    )
    p.add_argument("--step", type=int, default=None, help="checkpoint (default: newest)")
    add_capture_data_flags(p)
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser(
        "structural-probe",
        help="distance and depth structural probes per layer (Hewitt & Manning 2019)",
    )
    p.add_argument("run_dir", type=Path)
    add_source_flags(p)
    p.add_argument("--layers", default="all", help="e.g. 0,3,6 or 'all' (0 = embeddings)")
    p.add_argument("--pool", choices=("mean", "first"), default="mean", help="word vector")
    p.add_argument("--rank", type=int, default=64, help="rank of the probe's linear map")
    p.add_argument("--max-epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0, help="split, initialisation and batches")
    p.add_argument("--no-controls", action="store_true", help="skip the random-weights control")
    p.add_argument(
        "--control-seed",
        type=int,
        default=None,
        help="seed of the random-weights control's initialisation (default 0); a control "
        "equal to the model is refused",
    )
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_structural_probe)
