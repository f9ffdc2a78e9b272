"""``hierlens capture``: activations of a run's checkpoints into ``RUN_DIR/activations``."""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
from pathlib import Path

from .common import CLIError, add_config_flags, config_from_flags, ints, newest_step, shared_flags

log = logging.getLogger("hierlens")


def _reusable(run_dir: Path, step: int, patterns: list[str]):
    """A complete store of the same checkpoint weights already at ``step`` that holds every
    hook ``patterns`` names (names or globs), with those hooks; None if there is none."""
    from hierlens.models.checkpoint_capture import activations_dir
    from hierlens.models.run import open_run
    from hierlens.models.store import ActivationStore

    path = activations_dir(run_dir, step)
    if not (path / "manifest.json").exists():
        return None
    try:
        store = ActivationStore.open(path)
    except (ValueError, OSError):
        return None  # incomplete or damaged: a fresh capture resumes or replaces it
    if store.model_id != json.loads(json.dumps(open_run(run_dir).model_id(step))):
        return None
    hooks = [h for h in store.hooks if any(fnmatch.fnmatchcase(h, p) for p in patterns)]
    if not all(any(fnmatch.fnmatchcase(h, p) for h in store.hooks) for p in patterns):
        return None
    return store, hooks


#: the flags that make a pretrained run, by the setting each one fixes
SOURCE_FLAGS = {
    "model": "--model",
    "treebank": "--treebank",
    "format": "--format",
    "drop_punct": "--drop-punct",
    "special_tokens": "--special-tokens",
}


def prepare_run(args: argparse.Namespace):
    """The run ``args.run_dir``; with ``--model PATH --treebank FILE`` a pretrained run is
    made there first (see :func:`hierlens.models.pretrained_run.open_pretrained_run`).

    The flags that make a run (:data:`SOURCE_FLAGS`) fix its settings: on an existing run a
    given flag must agree with the run, since every result in it was computed with the
    stored settings; one that does not is an error saying what to do, never ignored. A run
    directory that holds no results yet (a command failed before writing any) takes new
    settings; one whose only results are activations takes them with ``--overwrite``."""
    from hierlens.models.pretrained_run import PretrainedRunConflict, open_pretrained_run
    from hierlens.models.run import Run

    given = {
        "model": getattr(args, "model", None),
        "treebank": getattr(args, "treebank", None),
        "format": getattr(args, "format", None),
        "drop_punct": True if getattr(args, "drop_punct", False) else None,
        "special_tokens": getattr(args, "special_tokens", None),
    }
    run = Run(args.run_dir)
    new = not run.has(run.config_path)
    incomplete = given["model"] is None or given["treebank"] is None
    if new and incomplete and any(v is not None for v in given.values()):
        others = [SOURCE_FLAGS[k] for k, v in given.items() if v is not None]
        raise CLIError(
            f"--model and --treebank go together (a pretrained model on a corpus); "
            f"{args.run_dir} holds no run for {', '.join(others)} to apply to"
        )
    try:
        return open_pretrained_run(
            args.run_dir,
            given["model"],
            given["treebank"],
            format=given["format"],
            drop_punct=given["drop_punct"],
            special_tokens=given["special_tokens"],
            overwrite=bool(getattr(args, "overwrite", False)),
        )
    except PretrainedRunConflict as exc:
        raise CLIError(_conflict_text(exc, args)) from None


def _conflict_text(exc, args: argparse.Namespace) -> str:
    """What to do about a run whose settings differ from the flags."""
    if "kind" in exc.differs:
        flags = ", ".join(f for k, f in SOURCE_FLAGS.items() if _given(args, k))
        return (
            f"{exc.path} is a trained run; {flags} make a pretrained run: choose another run "
            "directory for them, or drop them to work on the trained run"
        )
    rows = "; ".join(
        f"{SOURCE_FLAGS[k]}: {a!r} in the run, {b!r} given" for k, (a, b) in exc.differs.items()
    )
    text = f"{exc.path} holds a run with other settings ({rows})"
    if exc.outputs:
        text += f" and results computed with them ({', '.join(exc.outputs)})"
    fixes = []
    if set(exc.differs) == {"drop_punct"}:
        fixes.append(
            "--drop-punct fixes how a run reads its corpus, for every stage; tree-score drops "
            "punctuation by default (--keep-punct keeps it), whatever the run's corpus"
        )
    if exc.outputs == ["activations"] and not getattr(args, "overwrite", False):
        fixes.append("pass --overwrite (with --model and --treebank) to replace its activations")
    elif not _given(args, "model") or not _given(args, "treebank"):
        fixes.append("drop these flags to use the run's settings")
    fixes.append("choose another run directory for these settings")
    return f"{text}; " + "; or ".join(fixes)


def _given(args: argparse.Namespace, key: str) -> bool:
    value = getattr(args, key, None)
    return value is not None and value is not False


def _capture(args: argparse.Namespace, run, patterns: list[str], steps, **kwargs):
    """``capture_checkpoints`` with the command's data options; a store of other data in
    the way is a one-line error naming ``--overwrite``."""
    from hierlens.models.checkpoint_capture import capture_checkpoints
    from hierlens.models.store_writer import StoreMismatchError

    try:
        return capture_checkpoints(
            run,
            patterns,
            steps=steps,
            **capture_data(args, run),
            device=args.device,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            allow_nonfinite=args.allow_nonfinite,
            **kwargs,
        )
    except StoreMismatchError as exc:
        raise CLIError(
            f"{exc.path} holds a different capture (differs in: {', '.join(exc.diffs)}); "
            "pass --overwrite to replace it"
        ) from None
    except MemoryError as exc:
        raise CLIError(
            f"--n {args.n}: not enough memory to draw and capture that many sequences "
            f"({exc}); capture fewer"
        ) from None


def capture_one_step(args: argparse.Namespace, patterns: list[str]):
    """The activation store of one checkpoint (``--step``, default the newest) of
    ``args.run_dir`` and the hook names ``patterns`` resolve to: ``(store, hooks)``.

    Without ``--n``, ``--split``, ``--seed`` or ``--pool``, a capture already in the run that
    holds the hooks (e.g. one ``hierlens capture`` made of every layer) is reused as it is;
    otherwise the checkpoint is captured with the given (or default) data."""
    run = prepare_run(args)
    step = args.step if args.step is not None else newest_step(run.path)
    explicit = any(getattr(args, k) is not None for k in ("n", "split", "seed", "pool"))
    if not explicit and not args.overwrite:
        found = _reusable(run.path, step, patterns)
        if found is not None:
            log.info("reusing the activations captured at step %d (%s)", step, found[0].path)
            return found
    store = _capture(args, run, patterns, [step])[step]
    return store, store.hooks


def capture_data(args: argparse.Namespace, run) -> dict:
    """``split``, ``n``, ``seed`` and ``pool`` of the capture, the defaults of
    :meth:`CaptureStage.data <hierlens.analysis.pipeline.CaptureStage.data>` where not given
    (``seed``: 0)."""
    from ..pipeline.config import CaptureStage

    stage = config_from_flags(args, CaptureStage, n=args.n)
    return {**stage.data(run.is_pretrained), "seed": args.seed if args.seed is not None else 0}


def add_source_flags(p: argparse.ArgumentParser) -> None:
    """``--model PATH --treebank FILE [--format F] [--drop-punct] [--special-tokens P]``:
    analyse a pretrained model on a corpus (the run directory is made a pretrained run; see
    :func:`prepare_run`). They fix the run's settings: on an existing run they must agree
    with it."""
    from hierlens.models.special_tokens import SPECIAL_TOKEN_POLICIES, SpecialTokens

    g = p.add_argument_group(
        "pretrained model (makes a new run; on an existing run each given flag must agree "
        "with the run's settings)"
    )
    g.add_argument("--model", type=Path, default=None, help="a local Hugging Face model folder")
    g.add_argument(
        "--treebank", type=Path, default=None, help="sentences: PTB brackets, CoNLL-U or text"
    )
    g.add_argument(
        "--format", choices=("ptb", "conllu", "text"), default=None, help="(default: suffix)"
    )
    g.add_argument(
        "--drop-punct",
        action="store_true",
        help="read the corpus without its punctuation words, for every stage of the run",
    )
    g.add_argument(
        "--special-tokens",
        choices=SPECIAL_TOKEN_POLICIES,
        default=None,
        help="special tokens around each sentence: bos (the tokenizer's frame, its BOS token "
        "first, e.g. GPT-2's <|endoftext|>), template (the tokenizer's frame only) or none; "
        f"stored in the run (default: {SpecialTokens().policy})",
    )


#: the capture flags of every command that captures (the ``CaptureStage`` fields)
CAPTURE_FIELDS = ("split", "pool")


def add_capture_data_flags(p: argparse.ArgumentParser, fields: tuple = CAPTURE_FIELDS) -> None:
    """The model/data options shared by every command that captures: ``--model`` and
    ``--treebank`` (a pretrained model on a corpus), the :class:`CaptureStage` flags
    ``fields``, ``--overwrite`` and ``--allow-nonfinite`` (``--n`` and ``--seed`` are shared
    flags)."""
    from ..pipeline.config import CaptureStage

    add_source_flags(p)
    add_config_flags(p.add_argument_group("capture (CaptureStage)"), CaptureStage, only=fields)
    p.add_argument(
        "--overwrite", action="store_true", help="replace a store captured from other data"
    )
    p.add_argument(
        "--allow-nonfinite",
        action="store_true",
        help="keep NaN/inf activations (counted in the store) instead of stopping at the first",
    )


def cmd_capture(args: argparse.Namespace) -> int:
    from .common import check_seed_applies

    run = prepare_run(args)
    check_seed_applies(args, run)
    if args.all_checkpoints:
        steps = None
        newest_step(run.path)  # a clear error for a run without checkpoints
    else:
        steps = args.steps or [newest_step(run.path)]
    from ..pipeline.config import CaptureStage

    stage = config_from_flags(args, CaptureStage, n=args.n)
    stores = _capture(args, run, list(stage.hooks), steps, batch_size=stage.batch_size)
    for step, store in stores.items():
        log.info(
            "step %d: %d rows x %d hooks in %s",
            step,
            store.n_tokens,
            len(store.hooks),
            store.path,
        )
    return 0


def add_capture_command(sub: argparse._SubParsersAction) -> None:
    from ..pipeline.config import CaptureStage

    p = sub.add_parser(
        "capture",
        help="capture activations of a run's checkpoints to disk",
        parents=shared_flags("run_dir", "device", "seed", "n", "progress"),
    )
    add_capture_data_flags(p, ("hooks", *CAPTURE_FIELDS, "batch_size"))
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--steps", type=ints, default=None, help="checkpoint steps (default: newest)"
    )
    add_config_flags(which, CaptureStage, only=("all_checkpoints",))
    p.set_defaults(func=cmd_capture)
