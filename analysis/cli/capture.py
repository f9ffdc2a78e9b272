"""``hierlens capture``: activations of a run's checkpoints into ``RUN_DIR/activations``."""

from __future__ import annotations

import argparse
import fnmatch
import logging
from pathlib import Path

from .common import CLIError, ints, newest_step

CAPTURE_N = 1000  # sequences captured when --n is not given (every command)

log = logging.getLogger("hierlens")


def _reusable(run_dir: Path, step: int, patterns: list[str]):
    """A complete store of the same checkpoint weights already at ``step`` that holds every
    hook ``patterns`` names (names or globs), with those hooks; None if there is none."""
    from hierlens.models.atomic_io import read_json
    from hierlens.models.checkpoint_capture import activations_dir
    from hierlens.models.run import Run
    from hierlens.models.store import ActivationStore

    path = activations_dir(run_dir, step)
    if not (path / "manifest.json").exists():
        return None
    try:
        store = ActivationStore.open(path)
    except (ValueError, OSError):
        return None  # incomplete or damaged: a fresh capture resumes or replaces it
    sha = read_json(Run(run_dir).checkpoint_dir(step) / "state.json")["sha256"]["model.safetensors"]
    if (store.model_id or {}).get("weights_sha256") != sha:
        return None
    hooks = [h for h in store.hooks if any(fnmatch.fnmatchcase(h, p) for p in patterns)]
    if not all(any(fnmatch.fnmatchcase(h, p) for h in store.hooks) for p in patterns):
        return None
    return store, hooks


def capture_one_step(args: argparse.Namespace, patterns: list[str]):
    """The activation store of one checkpoint (``--step``, default the newest) of
    ``args.run_dir`` and the hook names ``patterns`` resolve to: ``(store, hooks)``.

    Without ``--n``, ``--split`` or ``--seed``, a capture already in the run that holds the
    hooks (e.g. one ``hierlens capture`` made of every layer) is reused as it is; otherwise
    the checkpoint is captured with the given (or default) data. A store of different data in
    the way is a one-line error naming ``--overwrite``."""
    from hierlens.models.checkpoint_capture import capture_checkpoints
    from hierlens.models.store import StoreMismatchError

    step = args.step if args.step is not None else newest_step(args.run_dir)
    explicit = any(getattr(args, k) is not None for k in ("n", "split", "seed"))
    if not explicit and not args.overwrite:
        found = _reusable(Path(args.run_dir), step, patterns)
        if found is not None:
            log.info("reusing the activations captured at step %d (%s)", step, found[0].path)
            return found
    try:
        store = capture_checkpoints(
            args.run_dir,
            patterns,
            steps=[step],
            **capture_data(args),
            device=args.device,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )[step]
    except StoreMismatchError as exc:
        raise CLIError(
            f"{exc.path} holds a different capture (differs in: {', '.join(exc.diffs)}); "
            "pass --overwrite to replace it"
        ) from None
    return store, store.hooks


def capture_data(args: argparse.Namespace) -> dict:
    """``split``, ``n`` and ``seed`` of the capture, the shared defaults where not given."""
    return {
        "split": args.split if args.split is not None else "test_id",
        "n": args.n if args.n is not None else CAPTURE_N,
        "seed": args.seed if args.seed is not None else 0,
    }


def add_capture_data_flags(p: argparse.ArgumentParser) -> None:
    """``--split``, ``--n``, ``--seed`` and ``--overwrite``, the same in every command that
    captures."""
    p.add_argument("--split", default=None, help="task split to run (default test_id)")
    p.add_argument("--n", type=int, default=None, help=f"sequences (default {CAPTURE_N})")
    p.add_argument("--seed", type=int, default=None, help="data seed (default 0)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a store captured from other data"
    )


def cmd_capture(args: argparse.Namespace) -> int:
    from hierlens.models.checkpoint_capture import capture_checkpoints
    from hierlens.models.store import StoreMismatchError

    if args.all_steps:
        steps = None
        newest_step(args.run_dir)  # a clear error for a run without checkpoints
    else:
        steps = args.steps or [newest_step(args.run_dir)]
    try:
        stores = capture_checkpoints(
            args.run_dir,
            args.hooks.split(","),
            steps=steps,
            **capture_data(args),
            batch_size=args.batch_size,
            device=args.device,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except StoreMismatchError as exc:
        raise CLIError(
            f"{exc.path} holds a different capture (differs in: {', '.join(exc.diffs)}); "
            "pass --overwrite to replace it"
        ) from None
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
    add_capture_data_flags(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--steps", type=ints, default=None, help="checkpoint steps (default: newest)"
    )
    which.add_argument("--all-steps", action="store_true", help="every checkpoint")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_capture)
