"""``hierlens reproduce NAME [--quick | --setting S]``: draw a paper figure (``list``: the
figures and their settings)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .common import shared_flags

log = logging.getLogger("hierlens")


def cmd_reproduce(args: argparse.Namespace) -> int:
    from ..figures import FIGURES, describe, reproduce

    if args.list or args.name == "list":
        for line in describe():
            print(line)
        return 0
    if args.name is None:
        raise ValueError(f"name a figure ({', '.join(FIGURES)}, all) or `list`")
    options = {}
    if args.run_dir is not None:
        options["run_dir"] = args.run_dir
    if args.steps is not None:
        options["steps"] = args.steps
    if args.model is not None:
        options["model"] = str(args.model)
    paths = reproduce(
        args.name,
        args.out,
        quick=args.quick,
        setting_name=args.setting,
        device=args.device,
        progress=not args.no_progress,
        **options,
    )
    for path in paths:
        print(path)
    return 0


def add_figures_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        parents=shared_flags("device", "progress"),
        help="draw a paper figure (PNG, PDF and its data as JSON); `reproduce list` lists them",
    )
    p.add_argument("name", nargs="?", help="figure name, `all`, or `list`")
    p.add_argument("--list", action="store_true", help="list the figures and their run times")
    p.add_argument("--quick", action="store_true", help="the small setting (minutes on a CPU)")
    p.add_argument(
        "--setting",
        default=None,
        help="a setting by name: quick, full, or one the figure defines (chomsky-table: modest); "
        "`reproduce list` names them",
    )
    p.add_argument("--out", type=Path, default=Path("figures"), help="output folder (figures)")
    p.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="grokking figures: draw this existing run (tracked first if needed)",
    )
    p.add_argument("--steps", type=int, default=None, help="override the setting's training steps")
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="structural-probe-layers: a local Hugging Face model folder (default MiniLM)",
    )
    p.set_defaults(func=cmd_reproduce)
