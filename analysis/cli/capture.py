"""``hierlens capture``: activations of a run's checkpoints into ``RUN_DIR/activations``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .common import ints, newest_step

log = logging.getLogger("hierlens")


def capture_one_step(args: argparse.Namespace, hooks: list[str]):
    """The activation store of one checkpoint (``--step``, default the last) of
    ``args.run_dir`` at ``hooks``, captured (or reused) with the command's options."""
    from hierlens.models.checkpoint_capture import capture_checkpoints

    step = args.step if args.step is not None else newest_step(args.run_dir)
    return capture_checkpoints(
        args.run_dir,
        hooks,
        steps=[step],
        split=args.split,
        n=args.n,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
    )[step]


def cmd_capture(args: argparse.Namespace) -> int:
    from hierlens.models.checkpoint_capture import capture_checkpoints

    if args.all_steps:
        steps = None
        newest_step(args.run_dir)  # a clear error for a run without checkpoints
    else:
        steps = args.steps or [newest_step(args.run_dir)]
    stores = capture_checkpoints(
        args.run_dir,
        args.hooks.split(","),
        steps=steps,
        split=args.split,
        n=args.n,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    for step, store in stores.items():
        log.info(
            "step %d: %d tokens x %d hooks in %s",
            step,
            store.n_tokens,
            len(store.hooks),
            store.path,
        )
    return 0


def add_capture_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("capture", help="capture activations of a run's checkpoints to disk")
    p.add_argument("run_dir", type=Path)
    p.add_argument(
        "--hooks",
        required=True,
        help="comma-separated hook names or globs, e.g. 'blocks.*.hook_resid_post'",
    )
    p.add_argument("--split", default="test_id", help="task split to run (default test_id)")
    p.add_argument("--n", type=int, default=1000, help="sequences")
    p.add_argument("--seed", type=int, default=0)
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--steps", type=ints, default=None, help="checkpoint steps (default: newest)"
    )
    which.add_argument("--all-steps", action="store_true", help="every checkpoint")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None)
    p.add_argument(
        "--overwrite", action="store_true", help="replace a store captured from other data"
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_capture)
