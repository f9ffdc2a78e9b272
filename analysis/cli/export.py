"""``hierlens export RUN --to tensorboard|wandb|mlflow``: replay a run into a tracker."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .common import shared_flags

log = logging.getLogger("hierlens")


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import export_run

    paths = export_run(args.run_dir, args.to, out_dir=args.out)
    print(f"exported {args.run_dir} to {', '.join(args.to)}: {paths.root}")
    return 0


def add_export_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        parents=shared_flags("run_dir"),
        help="replay a run's metrics.jsonl and tracking.jsonl into TensorBoard, W&B or MLflow",
    )
    p.add_argument(
        "--to",
        required=True,
        action="append",
        choices=("tensorboard", "wandb", "mlflow"),
        help="tracker (repeatable); W&B reads WANDB_MODE/WANDB_PROJECT, MLflow "
        "MLFLOW_TRACKING_URI (default: a file store in the run's trackers/export/)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where the tracker files go (default: RUN/trackers/export)",
    )
    p.set_defaults(func=cmd_export)
