"""The ``hierlens`` command line.

hierlens tasks                      list tasks and their parameters
hierlens train --task dyck ...      train a model, writing a run directory
hierlens eval RUN_DIR               evaluate a run's checkpoint on its task's splits
hierlens capture / fit-sae / probe  activations, SAE grids (MDL), sparse probes of a run
hierlens tree-score / track / sweep tree projections, grokking curves, depth sweeps
hierlens run CONFIG                 the whole pipeline; hierlens demo: the embedded demo
hierlens report RUN_DIR             the self-contained HTML report of a run
hierlens compare RUN_A RUN_B        layer x layer CKA and unit matching of two runs' models
hierlens patch / das RUN_DIR        activation patching; distributed alignment search (causal/)
hierlens export RUN_DIR --to TB     replay a run into TensorBoard, W&B or MLflow
hierlens reproduce NAME [--quick]   a paper figure (PNG, PDF and its data); NAME=list lists them
                                    (and each figure's named settings, --setting S)
hierlens export-treebank TASK       a grammar task's gold trees as a PTB or CoNLL-U treebank
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from .common import DIVERGED, CLIError

log = logging.getLogger("hierlens")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hierlens",
        description="Train small models on hierarchical tasks and analyse their structure.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    from .capture import add_capture_command
    from .causal import add_causal_commands
    from .compare import add_compare_command
    from .export import add_export_command
    from .figures import add_figures_command
    from .pipeline import add_pipeline_commands
    from .probe import add_probe_command
    from .sae import add_sae_command
    from .train import add_train_commands
    from .tree import add_tree_commands
    from .treebank import add_treebank_command

    add_train_commands(sub)
    add_capture_command(sub)
    add_export_command(sub)
    add_pipeline_commands(sub)
    add_probe_command(sub)
    add_sae_command(sub)
    add_tree_commands(sub)
    add_figures_command(sub)
    add_treebank_command(sub)
    add_compare_command(sub)
    add_causal_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hierlens`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    debug = args.verbose or os.environ.get("HIERLENS_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except Exception as exc:
        from hierlens.models.train import TrainingDiverged

        if isinstance(exc, TrainingDiverged):
            log.error("%s", exc)
            return DIVERGED
        if isinstance(exc, MemoryError):  # a size flag asked for more than the machine has
            log.error("out of memory (%s); ask for less with the command's size flags", exc)
            return 2
        if not is_user_error(exc):
            raise  # a bug: the full traceback, exit status 1
        if debug:
            log.error("%s", exc, exc_info=exc)
        else:
            log.error("%s", exc)
        return 2


_WING_DIRS = tuple(
    str(Path(__file__).resolve().parents[2] / wing) + os.sep
    for wing in ("core", "models", "sae", "probes", "analysis")
)


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` reports bad input rather than a bug.

    User errors are :class:`CLIError`, an ``OSError`` naming a file (missing file, full
    disk, read-only folder), and a ``ValueError``, ``TypeError`` or ``OSError`` that hierlens
    raised on purpose: the innermost frame of its traceback is a ``raise`` statement in
    hierlens' own code. The same types raised anywhere else (inside torch, or by a failing expression in
    hierlens) are bugs and keep their traceback.
    """
    if isinstance(exc, CLIError):
        return True
    if isinstance(exc, OSError) and exc.filename is not None:
        return True
    if not isinstance(exc, (ValueError, TypeError, OSError)):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return False
    last = frames[-1]
    own = os.path.abspath(last.filename).startswith(_WING_DIRS)
    return own and (last.line or "").lstrip().startswith("raise")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
