"""``hierlens export-treebank TASK --format ptb|conllu``: a grammar task's gold trees as a
treebank (PTB brackets or CoNLL-U), readable by the treebank readers."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import given, shared_flags

SUFFIX = {"ptb": ".mrg", "conllu": ".conllu"}
N_SENTENCES = 100  # sentences written when --n is not given


def cmd_export_treebank(args: argparse.Namespace) -> int:
    from hierlens.models.treebank_export import task_trees, write_conllu, write_ptb

    n = args.n if args.n is not None else N_SENTENCES
    if n <= 0:
        raise ValueError(f"--n must be positive, got {n}")
    out = args.out or Path(f"{args.task}_{args.split}{SUFFIX[args.format]}")
    trees = task_trees(args.task, n, split=args.split, **given(args, "seed"))
    write = write_ptb if args.format == "ptb" else write_conllu
    print(write(trees, out))
    return 0


def add_treebank_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-treebank",
        parents=shared_flags("seed", "n"),
        help="write a grammar task's gold trees as a PTB or CoNLL-U treebank",
        description="Sample a grammar task (question_formation, tense_inflection) and write "
        "its gold trees: PTB brackets (part-of-speech preterminals) or CoNLL-U (heads by the "
        "head rules of hierlens.models.treebank.HEAD_RULES, else the last child).",
    )
    p.add_argument("task", help="task name (a grammar task)")
    p.add_argument(
        "--format", choices=sorted(SUFFIX), default="ptb", help="ptb (default) or conllu"
    )
    p.add_argument("--split", default="train", help="task split (train)")
    p.add_argument(
        "--out", type=Path, default=None, help="output file (default TASK_SPLIT.mrg/.conllu)"
    )
    p.set_defaults(func=cmd_export_treebank)
