"""One report section of a run, for a notebook cell: :func:`show`."""

from __future__ import annotations

import os
import uuid

import torch

from hierlens.models.run import open_run

from .html import CSS, Charts, esc, plotly_script
from .sections import ReportContext

__all__ = ["SECTION_INPUTS", "Section", "sections_with_data", "show"]

#: what each report section is drawn from (shown when a run lacks it)
SECTION_INPUTS = {
    "summary": "config.json",
    "training": "metrics.jsonl, written by training; a pretrained run has none",
    "grokking": "tracking.jsonl, written by hierlens track on a trained run",
    "trees": "a checkpoint and sentences with gold trees",
    "layers": "tree_scores.jsonl (hierlens tree-score) or probes/structural.jsonl "
    "(hierlens structural-probe)",
    "saes": "saes/ (hierlens fit-sae)",
    "probes": "probes/results.jsonl (hierlens probe)",
    "representations": "tracking.jsonl with representation metrics "
    "(hierlens track --representations) or saes/",
    "bp": "a trained run of a task with exact belief propagation",
}


class Section:
    """One built report section; a notebook shows it (``_repr_html_``)."""

    def __init__(self, name: str, heading: str, body: str, plotly: bool) -> None:
        self.name, self.heading, self.body, self.plotly = name, heading, body, plotly

    def __repr__(self) -> str:
        return f"Section({self.name!r})"

    def _repr_html_(self) -> str:
        lib = plotly_script() if self.plotly else ""
        return f"<div><style>{CSS}</style>{lib}<h2>{esc(self.heading)}</h2>{self.body}</div>"


def show(
    run_dir: str | os.PathLike,
    section: str = "summary",
    *,
    max_sentences: int = 4,
    device: str | torch.device | None = None,
) -> Section:
    """Build the report section ``section`` (a name from
    :data:`hierlens.analysis.report.SECTIONS`: ``summary``, ``training``, ``grokking``,
    ``trees``, ...) of the run in ``run_dir``; offline and self-contained like the report.
    A section whose inputs the run lacks is a ``ValueError``."""
    from .write import SECTIONS

    names = [a for a, _, _ in SECTIONS]
    if section not in names:
        raise ValueError(f"unknown report section {section!r}; sections: {names}")
    run = open_run(run_dir)
    charts = Charts()
    ctx = ReportContext(run=run, charts=charts, max_sentences=max_sentences, device=device)
    _, heading, build = SECTIONS[names.index(section)]
    body = build(ctx)
    if body is None:
        raise ValueError(
            f"{run.path}: the run has no data for the {section!r} section "
            f"({SECTION_INPUTS[section]}); sections with data in this run: "
            f"{', '.join(sections_with_data(run))}"
        )
    # a notebook cell is shown after its page loaded: draw the charts at once, with ids
    # that do not collide with other cells'
    body = (
        body.replace('document.addEventListener("DOMContentLoaded",function(){', "(function(){")
        .replace("s.config);});</script>", "s.config);})();</script>")
        .replace('"chart-', f'"chart-{uuid.uuid4().hex[:8]}-')
    )
    return Section(section, heading, body, charts.count > 0)


def sections_with_data(run_dir: str | os.PathLike) -> list[str]:
    """The report sections whose inputs the run holds (a cheap check of the files each one
    reads, :data:`SECTION_INPUTS`): the names :func:`show` can build for it."""
    from hierlens.models.atomic_io import read_jsonl

    run = open_run(run_dir)
    tracking = read_jsonl(run.tracking_path) if run.tracking_path.exists() else []
    has_trees = run.corpus.has_trees if run.is_pretrained else True
    bp = not run.is_pretrained and hasattr(run.task, "bp_accuracy") and bool(run.steps)
    present = {
        "summary": True,
        "training": not run.is_pretrained and run.metrics_path.exists(),
        "grokking": bool(tracking),
        "trees": bool(run.steps) and has_trees,
        "layers": run.tree_scores_path.exists() or run.structural_probe_path.exists(),
        "saes": bool(run.sae_dirs()),
        "probes": run.probe_results_path.exists(),
        "representations": bool(run.sae_dirs())
        or any("cka_to_final" in r or "rank_residual" in r for r in tracking),
        "bp": bp,
    }
    return [name for name in SECTION_INPUTS if present[name]]
