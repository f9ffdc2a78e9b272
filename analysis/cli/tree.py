"""``hierlens tree-score``, ``hierlens track`` and ``hierlens sweep``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .backend import add_backend_flags, backend_kwargs
from .capture import add_source_flags
from .common import (
    CLIError,
    add_config_flags,
    check_seed_applies,
    config_from_flags,
    flag_values,
    given,
    ints,
    shared_flags,
    task_from_args,
)


def cmd_tree_score(args: argparse.Namespace) -> int:
    from ..tree_scores import tree_scores_by_layer
    from .capture import prepare_run

    run = prepare_run(args)
    if args.keep_punct and not run.is_pretrained:
        raise CLIError(
            f"{run.path} is a trained run: its task's sequences mark no punctuation; "
            "--keep-punct applies to a corpus (a pretrained run)"
        )
    if args.keep_punct and run.corpus.drop_punct:
        raise CLIError(
            f"{run.path} reads its corpus without punctuation (it was made with "
            "--drop-punct), so --keep-punct cannot apply; make a run without --drop-punct "
            "to score sentences with their punctuation"
        )
    check_seed_applies(args, run)
    layers = None if args.layers == "all" else ints(args.layers or str(args.layer))
    records = tree_scores_by_layer(
        run,
        layers,
        step=args.step,
        split=args.split,
        n=args.n,
        **given(args, "seed"),
        method=args.method,
        mask_from_layer=args.mask_from_layer,
        drop_punct=not args.keep_punct,
        device=args.device,
        progress=not args.no_progress,
    )
    for record in records:
        print(json.dumps(record))
    return 0


def cmd_track(args: argparse.Namespace) -> int:
    from ..grokking import TrackConfig, TrackFailed, grokking_summary, track

    try:
        track(
            args.run_dir,
            steps=args.steps,
            **flag_values(args, TrackConfig),
            **given(args, "seed"),
            device=args.device,
            progress=not args.no_progress,
            **backend_kwargs(args),
        )
    except TrackFailed as exc:  # the other checkpoints' records are written
        for step, error in exc.failed.items():
            logging.getLogger("hierlens").error("track: step %d failed: %s", step, error)
        return 1
    print(json.dumps(grokking_summary(args.run_dir).to_dict(), indent=2))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from hierlens.models import ModelConfig, TrainConfig

    from ..grokking import TrackConfig
    from ..sweep import SweepFailed, sweep

    task = task_from_args(args.task, args.task_param)
    config = config_from_flags(args, TrainConfig, eval_every=0, device=args.device)
    try:
        rows = sweep(
            task,
            args.depths,
            args.seeds,
            config,
            args.out_dir,
            model=flag_values(args, ModelConfig),
            track_options=flag_values(args, TrackConfig),
            **backend_kwargs(args),
        )
    except SweepFailed as exc:
        for row in exc.summary["runs"]:
            print(json.dumps(row))
        for failure in exc.summary["failed"]:
            logging.getLogger("hierlens").error(
                "sweep run %s failed: %s", failure["run"], failure["error"]
            )
        return 1
    for row in rows:
        print(json.dumps(row))
    return 0


def add_tree_commands(sub: argparse._SubParsersAction) -> None:
    from hierlens.models.train_config import TrainConfig
    from hierlens.models.transformer import ModelConfig

    from ..grokking import TrackConfig

    p = sub.add_parser(
        "tree-score",
        help="tree score and parse F1 of a run's tree projections",
        description="Tree projections [Murty2023a] of each layer scored against the gold "
        "trees, beside right-/left-branching and random trees. Layers are numbered 0 = "
        "embeddings, layer l = the output of block l-1 (as structural probes and the report "
        "number them); punctuation is dropped unless --keep-punct.",
        parents=shared_flags("run_dir", "step", "device", "seed", "n", "progress"),
    )
    p.add_argument(
        "--layer",
        type=int,
        default=-1,
        help="layer scored: 1..n_blocks, the output of block layer-1 (default -1: the last)",
    )
    p.add_argument(
        "--layers",
        default=None,
        help="several layers, e.g. 1,3,6, or 'all' (1..n_blocks; one record each)",
    )
    p.add_argument(
        "--mask-from-layer",
        type=int,
        default=0,
        help="first masked block, a block index (t-shaped variant; default 0: all blocks)",
    )
    p.add_argument("--method", default="greedy", choices=("greedy", "exact"))
    add_source_flags(p)
    p.add_argument(
        "--keep-punct",
        action="store_true",
        help="score a corpus's sentences with their punctuation (default: dropped, as the "
        "tree-projection papers score them; keeping it warns)",
    )
    p.add_argument(
        "--split", default=None, help="task split (default test_id) or corpus split (default all)"
    )
    p.set_defaults(func=cmd_tree_score)

    p = sub.add_parser(
        "track",
        help="evaluate every checkpoint of a run (grokking curves)",
        parents=shared_flags("run_dir", "device", "seed", "progress"),
    )
    p.add_argument("--steps", type=ints, default=None, help="comma-separated steps (default all)")
    add_config_flags(p.add_argument_group("tracking (TrackConfig)"), TrackConfig, exclude=_OWN)
    add_backend_flags(p)
    p.set_defaults(func=cmd_track)

    p = sub.add_parser(
        "sweep",
        help="train and track models of several depths and seeds",
        parents=shared_flags("device"),
    )
    p.add_argument("--task", required=True)
    p.add_argument("--task-param", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--depths", type=ints, required=True, help="e.g. 2,4,6")
    p.add_argument("--seeds", type=ints, default=[0], help="e.g. 0,1,2")
    p.add_argument("--out-dir", type=Path, required=True)
    model = p.add_argument_group("model (ModelConfig; unset: its default)")
    add_config_flags(model, ModelConfig, exclude=("n_layers", "seed", "d_vocab", "n_ctx"))
    training = p.add_argument_group("training (TrainConfig; unset: its default)")
    add_config_flags(training, TrainConfig, exclude=("seed", "device", "eval_every"))
    add_config_flags(p.add_argument_group("tracking (TrackConfig)"), TrackConfig, exclude=_OWN)
    add_backend_flags(p)
    p.set_defaults(func=cmd_sweep)


# TrackConfig fields a command takes from its shared flags
_OWN = ("seed",)
