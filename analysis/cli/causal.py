"""``hierlens patch`` and ``hierlens das``: causal evidence on a run's model and task.

``hierlens patch RUN_DIR``: activation patching (and attribution patching) of every hook x
position before the query for the task's variables, written to ``causal/patching.json``.
``hierlens das RUN_DIR``: distributed alignment search at every hook with its controls and
the probe accuracy beside it, written to ``causal/das.jsonl``. Every setting is a field of
:class:`~hierlens.analysis.causal.sweep.PatchConfig` or
:class:`~hierlens.analysis.causal.alignment.DASConfig`, and ``--variables`` / ``--hooks``
are those of the pipeline's :class:`~hierlens.analysis.pipeline.config.CausalStage`.
"""

from __future__ import annotations

import argparse
import json
import logging

from ..pipeline.config import CausalStage
from .common import CLIError, add_config_flags, config_from_flags, shared_flags

log = logging.getLogger("hierlens")


def _sweep(args: argparse.Namespace, part: str, config):
    """Under the run's lock: load its model and task, run the ``part`` ("patch" or "das") of
    the causal sweep with ``config`` and write it to ``causal/patching.json`` or
    ``causal/das.jsonl``; returns the path and the records."""
    from hierlens.analysis.causal.sweep import causal_sweep
    from hierlens.core.atomic_io import write_checked_json, write_checked_jsonl
    from hierlens.models.run import Run, open_run
    from hierlens.models.tasks.variables import causal_model

    with Run(args.run_dir).lock():
        run = open_run(args.run_dir)
        if run.is_pretrained:
            raise CLIError(
                f"{run.path} is a pretrained run without a task: build MinimalPairs from your "
                "own sentence pairs and call hierlens.analysis.causal from Python"
            )
        task = run.task
        cm = causal_model(task)  # a task without variables fails before the model loads
        stage = config_from_flags(args, CausalStage)
        variables = list(stage.variables) or list(cm.variables)
        for v in variables:
            cm.check_variable(v)
        model = run.load_model(args.step, device=args.device)
        parts = {"patch": None, "das": None, part: config}
        result = causal_sweep(model, task, variables, list(stage.hooks) or None, **parts,
                              progress=not args.no_progress)  # fmt: skip
        if part == "patch":
            write_checked_json(run.patching_path, {"config": config.to_dict(), **result})
            return run.patching_path, result["patching"]
        write_checked_jsonl(run.das_path, result["das"])
        return run.das_path, result["das"]


def cmd_patch(args: argparse.Namespace) -> int:
    from hierlens.analysis.causal.sweep import PatchConfig

    path, records = _sweep(args, "patch", config_from_flags(args, PatchConfig))
    for record in records:
        shown = {"variable": record["variable"], "n_pairs": record["n_pairs"]}
        if "agreement" in record:
            shown["attribution_pearson"] = round(record["agreement"]["pearson"], 4)
        print(json.dumps(shown))
    log.info("patching of %d variable(s) written to %s", len(records), path)
    return 0


def cmd_das(args: argparse.Namespace) -> int:
    from hierlens.analysis.causal.alignment import DASConfig

    path, records = _sweep(args, "das", config_from_flags(args, DASConfig))
    for r in records:
        keys = ("variable", "hook", "das", "random_model", "random_subspace", "probe", "chance")
        print(json.dumps({k: (round(r[k], 4) if isinstance(r[k], float) else r[k]) for k in keys}))
    log.info("%d DAS records written to %s", len(records), path)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    add_config_flags(p, CausalStage, only=("variables", "hooks"))


def add_causal_commands(sub: argparse._SubParsersAction) -> None:
    from hierlens.analysis.causal.alignment import DASConfig
    from hierlens.analysis.causal.sweep import PatchConfig

    commands = (
        ("patch", "activation and attribution patching of a run's model for the task's "
         "variables", "patching", PatchConfig, cmd_patch),
        ("das", "distributed alignment search per hook, with controls and probe accuracy",
         "search", DASConfig, cmd_das),
    )  # fmt: skip
    for name, help_text, group, config_class, func in commands:
        p = sub.add_parser(
            name, parents=shared_flags("run_dir", "step", "device", "progress"), help=help_text
        )
        _common(p)
        add_config_flags(p.add_argument_group(group), config_class)
        p.set_defaults(func=func)
