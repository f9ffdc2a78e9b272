"""What a run directory holds, as the rows of the table a notebook shows for a
:class:`~hierlens.models.Run` (``Run._repr_html_``)."""

from __future__ import annotations

from typing import Any

__all__ = ["run_summary"]

_SHOWN = 8  # list items shown before "... (N in all)"


def _listed(items: list[Any]) -> str:
    head = ", ".join(str(x) for x in items[:_SHOWN])
    return head + (f", ... ({len(items)} in all)" if len(items) > _SHOWN else "") or "none"


def run_summary(run: Any) -> dict[str, Any]:
    """``{row name: value}`` describing ``run``: its path, model and data, checkpoints,
    activation stores, SAEs and which result files exist. Reads only small files
    (``config.json`` and directory listings); a folder that is not a run yet says so."""
    rows: dict[str, Any] = {"path": str(run.path)}
    if not run.has(run.config_path):
        rows["state"] = "no config.json yet (not a run, or one being created)"
        return rows
    try:
        config = run.config
    except (OSError, ValueError) as err:  # a corrupt config is shown, not raised
        rows["config.json"] = f"unreadable: {err}"
        return rows
    if run.is_pretrained:
        rows["model"] = f"pretrained: {config.get('pretrained', {}).get('path', '?')}"
        data = config.get("data", {})
        rows["data"] = (
            f"corpus {data.get('path', '?')} ({data.get('format') or 'format from suffix'})"
        )
    else:
        model = config.get("model", {})
        shape = {k: model[k] for k in ("arch", "n_layers", "d_model", "n_heads") if k in model}
        rows["model"] = "trained: " + ", ".join(f"{k}={v}" for k, v in shape.items())
        task = config.get("task", {})
        rows["data"] = f"task {task.get('name', '?')} {task.get('params', {}) or ''}".strip()
    rows["checkpoints (steps)"] = _listed(run.steps)
    rows["activation stores (steps)"] = _listed(sorted(run.activation_dirs()))
    rows["SAEs"] = _listed(sorted(run.sae_dirs()))
    files = {
        "metrics.jsonl": run.metrics_path,
        "tree_scores.jsonl": run.tree_scores_path,
        "probes/results.jsonl": run.probe_results_path,
        "probes/structural.jsonl": run.structural_probe_path,
        "report.html": run.report_path,
    }
    rows["results"] = _listed([name for name, path in files.items() if run.has(path)])
    return rows
