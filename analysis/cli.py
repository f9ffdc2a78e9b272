"""The ``hierlens`` command line.

hierlens tasks                      list tasks and their parameters
hierlens train --task dyck ...      train a model, writing a run directory
hierlens eval RUN_DIR               evaluate a run's checkpoint on its task's splits
hierlens capture / fit-sae / probe  activations, SAE grids (MDL), sparse probes of a run
hierlens tree-score / track / sweep tree projections, grokking curves, depth sweeps
hierlens run CONFIG                 the whole pipeline; hierlens demo: the embedded demo
hierlens report RUN_DIR             the self-contained HTML report of a run
hierlens reproduce NAME [--quick]   a paper figure (PNG, PDF and its data); NAME=list lists them
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("hierlens")

# flag -> (type, help, choices)
_MODEL_FLAGS: dict[str, tuple[type, str, tuple[str, ...] | None]] = {
    "d_model": (int, "residual width (default 128)", None),
    "n_layers": (int, "number of blocks (default 2)", None),
    "n_heads": (int, "attention heads (default 4)", None),
    "d_mlp": (int, "MLP width (default 4 * d_model)", None),
    "act_fn": (str, "MLP activation", ("gelu", "gelu_new", "relu", "silu", "solu_ln")),
    "attention_dir": (str, "attention direction", ("causal", "bidirectional")),
    "positional_embedding_type": (str, "positions", ("standard", "rotary")),
}
_TRAIN_FLAGS: dict[str, tuple[type, str, tuple[str, ...] | None]] = {
    "steps": (int, "optimizer steps (default 2000)", None),
    "batch_size": (int, "sequences per step (default 64)", None),
    "lr": (float, "peak learning rate (default 1e-3)", None),
    "warmup_steps": (int, "linear warmup steps (default 100)", None),
    "schedule": (str, "learning-rate decay", ("cosine", "linear", "constant")),
    "weight_decay": (float, "AdamW weight decay on matrices (default 0.01)", None),
    "grad_clip": (float, "gradient-norm clip (default 1.0)", None),
    "log_every": (int, "steps between train-loss records (default 50)", None),
    "eval_every": (int, "steps between evaluations, 0 = off (default 500)", None),
    "eval_log_points": (int, "extra log-spaced evaluations (default 0)", None),
    "eval_n": (int, "examples per evaluated split (default 500)", None),
    "checkpoint_every": (int, "steps between checkpoints (default 500)", None),
    "checkpoint_log_points": (int, "extra log-spaced checkpoints (default 0)", None),
    "train_pool": (int, "training examples sampled up front (default 20000)", None),
}


class CLIError(Exception):
    """A user error: reported as one line, exit status 2."""


def _coerce(text: str, default: Any) -> Any:
    """Parse a ``--task-param`` value with the type of the parameter's default."""
    if isinstance(default, bool):
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true/false, got {text!r}")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    if isinstance(default, str):
        return text
    return json.loads(text)


def _task_from_args(name: str, params: Sequence[str]) -> Any:
    from hierlens.models.tasks import get_task, task_class

    cls = task_class(name)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for item in params:
        if "=" not in item:
            raise CLIError(f"--task-param expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        if key not in defaults:
            raise CLIError(
                f"task {name!r} has no parameter {key!r}; parameters: {', '.join(defaults)}"
            )
        try:
            kwargs[key] = _coerce(value, defaults[key])
        except ValueError as exc:
            raise CLIError(f"--task-param {key}: {exc}") from exc
    return get_task(name, **kwargs)


def cmd_tasks(args: argparse.Namespace) -> int:
    from hierlens.models.tasks import list_tasks, task_class, task_parameters

    for name in list_tasks():
        print(f"{name}: {task_class(name).description}")
        for pname, ptype, default in task_parameters(name):
            print(f"    {pname} ({ptype}) = {default!r}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from hierlens.models.train import TrainConfig, train
    from hierlens.models.transformer import ModelConfig, build_transformer

    task = _task_from_args(args.task, args.task_param)
    model_kwargs = {k: getattr(args, k) for k in _MODEL_FLAGS if getattr(args, k) is not None}
    model_config = ModelConfig.for_task(task, seed=args.seed, **model_kwargs)
    train_kwargs = {k: getattr(args, k) for k in _TRAIN_FLAGS if getattr(args, k) is not None}
    config = TrainConfig(seed=args.seed, device=args.device, **train_kwargs)
    model = build_transformer(model_config, device=config.device)
    log.info("training %s on %s into %s", model_config.to_dict(), task.to_dict(), args.run_dir)
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
    log.info("finished at step %d; train loss %s", result.step, result.train_loss)
    for split, metrics in result.eval.items():
        log.info("%s: %s", split, _fmt(metrics))
    return 0


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(
        f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
    )


def cmd_eval(args: argparse.Namespace) -> int:
    from hierlens.models.run import open_run

    run = open_run(args.run_dir)
    task = run.task
    model = run.load_model(args.step, device=args.device)
    splits = args.splits.split(",")
    results = {
        s: task.evaluate(model, s, n=args.n, seed=args.seed, device=args.device) for s in splits
    }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for split, metrics in results.items():
            print(f"{split}: {_fmt(metrics)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    path = write_report(
        args.run_dir,
        args.out,
        max_sentences=args.max_sentences,
        device=args.device,
        progress=not args.no_progress,
    )
    print(f"report: {path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import run

    run_dir = run(args.config, progress=not args.no_progress)
    print(f"run directory: {run_dir}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hierlens.models.run import open_run

    from .pipeline import DEMO_CONFIG, run

    config = {**DEMO_CONFIG, "out_dir": str(args.out_dir)}
    if args.device:
        config["train"] = {**config["train"], "device": args.device}
    log.info(
        "demo: Dyck-(2,6) -> 2-layer transformer -> capture -> SAEs -> probes -> tree tracking -> report"
    )
    run_dir = run(config, progress=not args.no_progress)
    final = {r["split"]: r for r in open_run(run_dir).metrics() if r["split"] != "train"}
    for split, name in (("test_id", "in-domain"), ("test_ood", "out-of-domain")):
        print(f"{name:14s} ({split}) closing-bracket accuracy: {final[split]['closing_acc']:.4f}")
    print(f"report: {run_dir / 'report.html'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hierlens",
        description="Train small models on hierarchical tasks and analyse their structure.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("tasks", help="list tasks and their parameters")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("train", help="train a model on a task into a run directory")
    p.add_argument("--task", required=True, help="task name (see `hierlens tasks`)")
    p.add_argument(
        "--task-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="task parameter, repeatable (e.g. --task-param max_depth=8)",
    )
    p.add_argument("--run-dir", required=True, type=Path, help="where to write the run")
    g = p.add_argument_group("model")
    for flag, (typ, text, choices) in _MODEL_FLAGS.items():
        g.add_argument(
            "--" + flag.replace("_", "-"),
            dest=flag,
            type=typ,
            default=None,
            help=text,
            choices=choices,
        )
    g = p.add_argument_group("training")
    for flag, (typ, text, choices) in _TRAIN_FLAGS.items():
        g.add_argument(
            "--" + flag.replace("_", "-"),
            dest=flag,
            type=typ,
            default=None,
            help=text,
            choices=choices,
        )
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation, data and batches")
    p.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)"
    )
    p.add_argument("--no-resume", action="store_true", help="do not continue an existing run")
    p.add_argument(
        "--overwrite", action="store_true", help="with --no-resume: replace an existing run"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run's checkpoint on its task")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    p.add_argument("--splits", default="test_id,test_ood", help="comma-separated splits")
    p.add_argument("--n", type=int, default=1000, help="examples per split")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("report", help="write RUN_DIR/report.html (self-contained, works offline)")
    p.add_argument("run_dir", type=Path)
    p.add_argument(
        "--out", type=Path, default=None, help="output file (default RUN_DIR/report.html)"
    )
    p.add_argument("--max-sentences", type=int, default=4, help="span-score heatmaps to draw")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("run", help="run (or resume) the whole pipeline from a TOML/JSON config")
    p.add_argument("config", type=Path, help="pipeline config (see hierlens.analysis.pipeline)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="the demo pipeline on Dyck; writes runs/demo/report.html")
    p.add_argument(
        "--out-dir", type=Path, default=Path("runs"), help="parent of the demo run directory"
    )
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)

    from .cli_capture import add_capture_command
    from .cli_figures import add_figures_command
    from .cli_probe import add_probe_command
    from .cli_sae import add_sae_command
    from .cli_tree import add_tree_commands

    add_capture_command(sub)
    add_probe_command(sub)
    add_sae_command(sub)
    add_tree_commands(sub)
    add_figures_command(sub)
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
    try:
        return args.func(args)
    except (CLIError, ValueError, TypeError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
