"""``hierlens tasks``, ``hierlens train`` and ``hierlens eval``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .common import (
    DIVERGED,
    CLIError,
    add_config_flags,
    config_from_flags,
    flag_values,
    fmt,
    given,
    shared_flags,
    task_from_args,
)

log = logging.getLogger("hierlens")


def cmd_tasks(args: argparse.Namespace) -> int:
    from hierlens.models.tasks import task_class, task_parameters
    from hierlens.models.tasks.registry import list_tasks

    for name in list_tasks():
        print(f"{name}: {task_class(name).description}")
        for pname, ptype, default in task_parameters(name):
            print(f"    {pname} ({ptype}) = {default!r}")
    return 0


_CONFLICT_TEXT = {
    "exists": "{path} already holds a run; drop --no-resume to continue it, or add --overwrite "
    "to delete it and start again",
    "config": "{path} holds a run with a different configuration; use another --run-dir, or "
    "--no-resume --overwrite to replace it",
}


#: ModelConfig flags that also set the architecture families' config (``--arch``)
SHARED_ARCH_FIELDS = ("d_model", "n_layers", "n_heads", "d_mlp")


def _arch_config(args: argparse.Namespace, task) -> object:
    """The :class:`ArchConfig` of ``--arch`` and its flags (shared sizes from the model
    flags); a TL-transformer-only flag is an error."""
    from hierlens.models.architectures import ArchConfig
    from hierlens.models.transformer import ModelConfig

    model_flags = flag_values(args, ModelConfig)
    other = sorted(set(model_flags) - set(SHARED_ARCH_FIELDS))
    if other:
        flags = ", ".join("--" + f.replace("_", "-") for f in other)
        raise CLIError(f"{flags} configure the TL-native transformer only; drop them with --arch")
    shared = {k: v for k, v in model_flags.items() if k in SHARED_ARCH_FIELDS}
    if shared.get("d_mlp") is None:
        shared.pop("d_mlp", None)
    try:
        return ArchConfig.for_task(
            task, **given(args, "seed"), **shared, **flag_values(args, ArchConfig)
        )
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc)) from exc


def cmd_train(args: argparse.Namespace) -> int:
    from hierlens.models import TrainConfig
    from hierlens.models.architectures import build_model
    from hierlens.models.train import train
    from hierlens.models.train_run import RunConflictError
    from hierlens.models.transformer import ModelConfig, build_transformer

    task = task_from_args(args.task, args.task_param)
    config = config_from_flags(args, TrainConfig, **given(args, "seed"), device=args.device)
    if args.arch is not None:
        model_config = _arch_config(args, task)
        model = build_model(model_config)
    else:
        try:
            model_config = ModelConfig.for_task(
                task, **given(args, "seed"), **flag_values(args, ModelConfig)
            )
        except (TypeError, ValueError) as exc:
            raise CLIError(str(exc)) from exc
        model = build_transformer(model_config, device=config.device)
    log.info("training %s on %s into %s", model_config.to_dict(), task.to_dict(), args.run_dir)
    try:
        result = train(
            model,
            task,
            config,
            args.run_dir,
            model_config=model_config,
            resume=not args.no_resume,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except RunConflictError as exc:
        raise CLIError(_CONFLICT_TEXT[exc.kind].format(path=args.run_dir)) from None
    if result.stopped:
        log.error(
            "%s: %s; the checkpoints written before it are kept%s",
            args.run_dir,
            result.stopped,
            "" if args.allow_divergence else " (--allow-divergence: exit status 0)",
        )
        return 0 if args.allow_divergence else DIVERGED
    log.info("finished at step %d; train loss %s", result.step, result.train_loss)
    for split, metrics in result.eval.items():
        log.info("%s: %s", split, fmt(metrics))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from hierlens.models.run import open_run

    run = open_run(args.run_dir)
    task = run.task
    model = run.load_model(args.step, device=args.device)
    splits = args.splits.split(",")
    kwargs = given(args, "n", "seed")
    results = {s: task.evaluate(model, s, **kwargs, device=args.device) for s in splits}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for split, metrics in results.items():
            print(f"{split}: {fmt(metrics)}")
    return 0


def add_train_commands(sub: argparse._SubParsersAction) -> None:
    from hierlens.models.architectures import ArchConfig
    from hierlens.models.train_config import TrainConfig
    from hierlens.models.transformer import ModelConfig

    p = sub.add_parser("tasks", help="list tasks and their parameters")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser(
        "train",
        help="train a model on a task into a run directory",
        parents=shared_flags("device", "seed", "progress"),
    )
    p.add_argument("--task", required=True, help="task name (see `hierlens tasks`)")
    p.add_argument(
        "--task-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="task parameter, repeatable (e.g. --task-param max_depth=8)",
    )
    p.add_argument("--run-dir", required=True, type=Path, help="where to write the run")
    # one flag per config field; help and defaults come from the configs themselves
    model = p.add_argument_group("model (ModelConfig; unset: its default)")
    add_config_flags(model, ModelConfig, exclude=("d_vocab", "n_ctx", "seed"))
    family = p.add_argument_group(
        "architecture families (ArchConfig; with --arch, which selects rnn, lstm, stack_rnn, "
        "tape_rnn or the plain transformer encoder instead of the TL-native transformer; "
        "--d-model, --n-layers, --n-heads, --d-mlp apply to both)"
    )
    add_config_flags(
        family,
        ArchConfig,
        exclude=("vocab_size", "seed", "pad_id", "blank_id", *SHARED_ARCH_FIELDS),
    )
    training = p.add_argument_group("training (TrainConfig; unset: its default)")
    add_config_flags(training, TrainConfig, exclude=("seed", "device"))
    p.add_argument("--no-resume", action="store_true", help="do not continue an existing run")
    p.add_argument(
        "--overwrite", action="store_true", help="with --no-resume: replace an existing run"
    )
    p.add_argument(
        "--allow-divergence",
        action="store_true",
        help=f"exit 0 when the loss turns NaN/inf (training stops either way; else exit {DIVERGED})",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval",
        help="evaluate a run's checkpoint on its task",
        parents=shared_flags("run_dir", "step", "device", "seed", "n"),
    )
    p.add_argument("--splits", default="test_id,test_ood", help="comma-separated splits")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_eval)
