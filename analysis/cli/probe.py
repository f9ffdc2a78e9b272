"""``hierlens probe``: k-sparse probe sweep on a run's activations and task labels."""

from __future__ import annotations

import argparse
import json
import logging

from .capture import CAPTURE_FIELDS, add_capture_data_flags, add_source_flags, capture_one_step
from .common import (
    CLIError,
    add_config_flags,
    config_from_flags,
    flag_values,
    given,
    ints,
    shared_flags,
)

log = logging.getLogger("hierlens")


def cmd_probe(args: argparse.Namespace) -> int:
    from hierlens.models.run import Run

    with Run(args.run_dir).lock():
        return _probe(args)


def _probe(args: argparse.Namespace) -> int:
    from hierlens.models.run import Run
    from hierlens.probes import probe_sweep

    from ..pipeline.config import CaptureStage, ProbeStage

    stage = config_from_flags(args, ProbeStage)
    patterns = list(config_from_flags(args, CaptureStage, n=args.n).hooks)
    store, hooks = capture_one_step(args, patterns)
    names = list(stage.labels) or sorted(store.labels)
    missing = [name for name in names if name not in store.labels]
    if missing:
        raise ValueError(
            f"unknown label(s) {missing}; the task provides: {', '.join(sorted(store.labels))}"
        )
    out = Run(args.run_dir).probe_results_path
    records = probe_sweep(
        {hook: store[hook] for hook in hooks},
        {name: store.labels[name].numpy() for name in names},
        ks=list(stage.ks),
        selection=list(stage.selection),
        **given(args, "seed"),
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
    from ..pipeline.config import StructuralStage
    from ..structural import run_structural_probes
    from .capture import prepare_run

    run = prepare_run(args)
    stage = config_from_flags(args, StructuralStage)
    if not stage.controls and "control_seed" in flag_values(args, StructuralStage):
        raise CLIError(
            "--control-seed seeds the random-weights control, which --controls false skips"
        )
    records = run_structural_probes(
        run.path,
        layers=None if args.layers == "all" else ints(args.layers),
        pool=stage.pool,
        controls=stage.controls,
        device=args.device,
        rank=stage.rank,
        max_epochs=stage.max_epochs,
        control_seed=stage.control_seed,
        **given(args, "seed"),
    )
    for r in records:
        keys = ("model", "layer", "uuas", "uuas_ci", "spearman", "spearman_ci", "root_acc")
        shown = {k: r[k] for k in keys if k in r}
        print(json.dumps(shown))
    log.info("%d records written to %s", len(records), run.structural_probe_path)
    return 0


def add_probe_command(sub: argparse._SubParsersAction) -> None:
    from ..pipeline.config import ProbeStage, StructuralStage

    p = sub.add_parser(
        "probe",
        help="k-sparse probe sweep on a run's activations and task labels",
        parents=shared_flags("run_dir", "step", "device", "seed", "n", "progress"),
    )
    add_config_flags(p.add_argument_group("probes (ProbeStage)"), ProbeStage, exclude=("enabled",))
    add_capture_data_flags(p, ("hooks", *CAPTURE_FIELDS))
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser(
        "structural-probe",
        help="distance and depth structural probes per layer (Hewitt & Manning 2019)",
        parents=shared_flags("run_dir", "device", "seed", "progress"),
    )
    add_source_flags(p)
    p.add_argument("--layers", default="all", help="e.g. 0,3,6 or 'all' (0 = embeddings)")
    group = p.add_argument_group("structural probes (StructuralStage)")
    add_config_flags(group, StructuralStage, exclude=("enabled",))
    p.set_defaults(func=cmd_structural_probe)
