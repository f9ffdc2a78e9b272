"""``hierlens tree-score``, ``hierlens track`` and ``hierlens sweep``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .backend import add_backend_flags, backend_kwargs
from .capture import add_source_flags
from .common import CLIError, check_seed_applies, ints, task_from_args


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
        seed=args.seed if args.seed is not None else 0,
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
    from ..grokking import TrackFailed, grokking_summary, track

    try:
        track(
            args.run_dir,
            steps=args.steps,
            n=args.n,
            n_trees=args.n_trees,
            layer=args.layer,
            compare=args.representations,
            n_compare=args.n_compare,
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
    from hierlens.models.train import TrainConfig

    from ..sweep import SweepFailed, sweep

    task = task_from_args(args.task, args.task_param)
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        checkpoint_every=args.checkpoint_every,
        eval_every=0,
        device=args.device,
    )
    model = {"d_model": args.d_model, "n_heads": args.n_heads}
    try:
        rows = sweep(
            task,
            args.depths,
            args.seeds,
            config,
            args.out_dir,
            model=model,
            track_options={"n": args.n, "n_trees": args.n_trees},
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
    p = sub.add_parser(
        "tree-score",
        help="tree score and parse F1 of a run's tree projections",
        description="Tree projections (Murty et al., ICLR 2023) of each layer scored against "
        "the gold trees, beside right-/left-branching and random trees. Layers are numbered "
        "0 = embeddings, layer l = the output of block l-1 (as structural probes and the "
        "report number them); punctuation is dropped unless --keep-punct.",
    )
    p.add_argument("run_dir", type=Path)
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
    p.add_argument("--n", type=int, default=None, help="sentences (default 200; corpus: all)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default newest)")
    p.add_argument("--seed", type=int, default=None, help="draws the --n sentences (default 0)")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_tree_score)

    p = sub.add_parser("track", help="evaluate every checkpoint of a run (grokking curves)")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--steps", type=ints, default=None, help="comma-separated steps (default all)")
    p.add_argument("--n", type=int, default=500, help="examples per split for accuracy")
    p.add_argument("--n-trees", type=int, default=100, help="sentences for tree score / parse F1")
    p.add_argument("--layer", type=int, default=-1)
    p.add_argument(
        "--representations",
        action="store_true",
        help="also record each layer's linear CKA to the final checkpoint and its "
        "rank-collapse residual",
    )
    p.add_argument(
        "--n-compare", type=int, default=64, help="sentences for --representations (default 64)"
    )
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    add_backend_flags(p)
    p.set_defaults(func=cmd_track)

    p = sub.add_parser("sweep", help="train and track models of several depths and seeds")
    p.add_argument("--task", required=True)
    p.add_argument("--task-param", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--depths", type=ints, required=True, help="e.g. 2,4,6")
    p.add_argument("--seeds", type=ints, default=[0], help="e.g. 0,1,2")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--n-trees", type=int, default=100)
    p.add_argument("--device", default=None)
    add_backend_flags(p)
    p.set_defaults(func=cmd_sweep)
