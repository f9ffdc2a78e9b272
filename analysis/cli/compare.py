"""``hierlens compare RUN_A RUN_B``: layer x layer similarity of two runs' models on the same
sentences, and a unit-matching summary (JSON)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .common import CLIError, given, shared_flags, strings

log = logging.getLogger("hierlens")


def cmd_compare(args: argparse.Namespace) -> int:
    from hierlens.core.atomic_io import atomic_write_bytes

    from ..compare.runs import compare_runs
    from ..compare.similarity import MEASURES

    bad = [m for m in args.measures if m not in MEASURES]
    if bad or not args.measures:
        raise CLIError(f"--measures: unknown {bad}; choose from {', '.join(MEASURES)}")
    result = compare_runs(
        args.run_a,
        args.run_b,
        step_a=args.step_a,
        step_b=args.step_b,
        hooks=args.hooks,
        measures=args.measures,
        **given(args, "n", "seed"),
        split=args.split,
        matching=not args.no_matching,
        device=args.device,
    )
    text = json.dumps(result, indent=2, allow_nan=False) + "\n"
    if args.out is None:
        print(text, end="")
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.out, text.encode("utf-8"))
        log.info("wrote %s", args.out)
    first = args.measures[0]
    diag = [
        row[i]
        for i, row in enumerate(result["similarity"][first])
        if i < len(row) and result["hooks_a"][i] == result["hooks_b"][i]
    ]
    if diag:
        shown = ", ".join("nan" if v is None else f"{v:.3f}" for v in diag)
        log.info("%s of matching layers: %s", first, shown)
    return 0


def add_compare_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        parents=shared_flags("device", "seed", "n"),
        help="layer x layer similarity (CKA, ...) and unit matching of two runs' models",
        description="Run the models of two runs on the same sentences (run A's task data) and "
        "write the layer x layer similarity matrices and a unit-matching summary as JSON.",
    )
    p.add_argument("run_a", type=Path)
    p.add_argument("run_b", type=Path)
    p.add_argument(
        "--hooks",
        type=strings,
        default=None,
        help="comma-separated hook names or globs (default: embedding and every block output)",
    )
    p.add_argument("--step-a", type=int, default=None, help="checkpoint of run A (default newest)")
    p.add_argument("--step-b", type=int, default=None, help="checkpoint of run B (default newest)")
    p.add_argument(
        "--measures",
        type=strings,
        default=["linear_cka"],
        help="comma-separated: linear_cka, rbf_cka, svcca, pwcca, procrustes (default linear_cka)",
    )
    p.add_argument("--split", default="test_id", help="task split of the sentences")
    p.add_argument("--no-matching", action="store_true", help="skip the unit-matching summary")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: standard output)")
    p.set_defaults(func=cmd_compare)
