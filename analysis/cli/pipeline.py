"""``hierlens run`` (the pipeline from a config), ``hierlens demo`` and ``hierlens report``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .backend import add_backend_flags, backend_kwargs
from .common import shared_flags

log = logging.getLogger("hierlens")


def cmd_report(args: argparse.Namespace) -> int:
    from ..report.write import write_report

    path = write_report(
        args.run_dir,
        args.out,
        max_sentences=args.max_sentences,
        device=args.device,
        progress=not args.no_progress,
    )
    print(f"report: {path}")
    return 0


def _run_quiet(config: str) -> str:
    """One pipeline run without progress bars (what a Ray task runs)."""
    from ..pipeline import run

    return str(run(config, progress=False))


def cmd_run(args: argparse.Namespace) -> int:
    from ..pipeline import run

    configs = args.config
    if args.backend == "ray":  # each config a Ray task
        from ..ray_backend import map_tasks

        jobs = [(str(c), (str(c),)) for c in configs]
        outcomes = map_tasks(_run_quiet, jobs, **backend_kwargs(args, backend=False))
        for o in outcomes:
            print(f"{o.key}: " + (f"run directory: {o.result}" if o.ok else f"FAILED {o.error}"))
        return 0 if all(o.ok for o in outcomes) else 1
    for config in configs:
        run_dir = run(config, progress=not args.no_progress)
        print(f"run directory: {run_dir}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hierlens.models.run import open_run

    from ..pipeline import DEMO_CONFIG, run

    config = {**DEMO_CONFIG, "out_dir": str(args.out_dir)}
    if args.device:
        config["train"] = {**config["train"], "device": args.device}
    log.info(
        "demo: Dyck-(2,6) -> 2-layer transformer -> capture -> SAEs -> probes -> tree tracking -> report"
    )
    run_dir = run(config, progress=not args.no_progress)
    final = {r["split"]: r for r in open_run(run_dir).metrics() if r["split"] != "train"}
    for split, name in (("test_id", "in-domain"), ("test_ood", "out-of-domain")):
        print(f"{name:14s} ({split}) closing-bracket accuracy: {final[split]['closing_acc']:.4f}")
    print(f"report: {open_run(run_dir).report_path}")
    return 0


def add_pipeline_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write RUN_DIR/report.html (self-contained, works offline)",
        parents=shared_flags("run_dir", "device", "progress"),
    )
    p.add_argument(
        "--out", type=Path, default=None, help="output file (default RUN_DIR/report.html)"
    )
    p.add_argument("--max-sentences", type=int, default=4, help="span-score heatmaps to draw")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "run",
        help="run (or resume) the whole pipeline from a TOML/JSON config",
        parents=shared_flags("progress"),
    )
    p.add_argument(
        "config", type=Path, nargs="+", help="pipeline config(s) (see hierlens.analysis.pipeline)"
    )
    add_backend_flags(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "demo",
        help="the demo pipeline on Dyck; writes runs/demo/report.html",
        parents=shared_flags("device", "progress"),
    )
    p.add_argument(
        "--out-dir", type=Path, default=Path("runs"), help="parent of the demo run directory"
    )
    p.set_defaults(func=cmd_demo)
