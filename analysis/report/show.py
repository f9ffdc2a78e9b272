"""One report section of a run, for a notebook cell: :func:`show`.

The plotting library (plotly.js, about 4.8 MB) is inlined into the first section with
charts that a notebook kernel displays, and only there: later sections draw their charts
with the copy already on the page. Outside a notebook (no IPython kernel running) every
section's HTML carries its own copy, so it stays self-contained offline. A restarted kernel
brings the library again with its first section; ``show(..., library=True)`` brings it in
any case (for a notebook whose first output was cleared).
"""

from __future__ import annotations

import os
import sys
import uuid
from typing import Any

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
    "frontier": "saes/frontier.json (hierlens.analysis.sae_frontier.fit_sae_frontier)",
    "probes": "probes/results.jsonl (hierlens probe)",
    "causal": "causal/patching.json or causal/das.jsonl (hierlens patch, hierlens das, the "
    "pipeline's [causal] stage)",
    "representations": "tracking.jsonl with representation metrics "
    "(hierlens track --representations) or saes/",
    "bp": "a trained run of a task with exact belief propagation",
}

_LOADED = "_hierlens_plotly_on_page"  # set on the IPython shell that received the library


def _kernel() -> Any | None:
    """The running IPython shell, or None outside IPython (never imports IPython)."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    return get() if callable(get) else None


class Section:
    """One built report section; a notebook shows it (``_repr_html_``).

    ``library``: None brings plotly.js with the first section with charts that the notebook
    kernel displays (every time outside a notebook); True always; False never.
    """

    def __init__(
        self, name: str, heading: str, body: str, plotly: bool, library: bool | None = None
    ) -> None:
        self.name, self.heading, self.body, self.plotly = name, heading, body, plotly
        self.library = library

    def __repr__(self) -> str:
        return f"Section({self.name!r})"

    def _needs_library(self) -> bool:
        if not self.plotly or self.library is False:
            return False
        kernel = _kernel()
        if self.library or kernel is None:
            return True
        if getattr(kernel, _LOADED, False):
            return False
        setattr(kernel, _LOADED, True)
        return True

    def _repr_html_(self) -> str:
        lib = plotly_script(notebook=True) if self._needs_library() else ""
        return f"<div><style>{CSS}</style>{lib}<h2>{esc(self.heading)}</h2>{self.body}</div>"


def show(
    run_dir: str | os.PathLike,
    section: str = "summary",
    *,
    max_sentences: int = 4,
    device: str | torch.device | None = None,
    library: bool | None = None,
) -> Section:
    """Build the report section ``section`` (a name from
    :data:`hierlens.analysis.report.SECTIONS`: ``summary``, ``training``, ``grokking``,
    ``trees``, ...) of the run in ``run_dir``; offline like the report. ``library``: when the
    section carries plotly.js (see the module docstring). A section whose inputs the run
    lacks is a ``ValueError``."""
    from .write import SECTIONS

    names = [a for a, _, _ in SECTIONS]
    if section not in names:
        raise ValueError(f"unknown report section {section!r}; sections: {names}")
    if library not in (None, True, False):
        raise TypeError(f"library must be None, True or False, got {library!r}")
    run = open_run(run_dir)
    # a notebook cell is shown after its page loaded, beside other cells: charts drawn as
    # soon as plotly.js is there, with ids that do not collide with other cells'
    charts = Charts(notebook=True, prefix=f"{uuid.uuid4().hex[:8]}-")
    ctx = ReportContext(run=run, charts=charts, max_sentences=max_sentences, device=device)
    _, heading, build = SECTIONS[names.index(section)]
    body = build(ctx)
    if body is None:
        raise ValueError(
            f"{run.path}: the run has no data for the {section!r} section "
            f"({SECTION_INPUTS[section]}); sections with data in this run: "
            f"{', '.join(sections_with_data(run))}"
        )
    return Section(section, heading, body, charts.count > 0, library)


def sections_with_data(run_dir: str | os.PathLike) -> list[str]:
    """The report sections whose inputs the run holds (a cheap check of the files each one
    reads, :data:`SECTION_INPUTS`): the names :func:`show` can build for it."""
    run = open_run(run_dir)
    tracking = run.read_records(run.tracking_path)
    has_trees = run.corpus.has_trees if run.is_pretrained else True
    bp = not run.is_pretrained and hasattr(run.task, "bp_accuracy") and bool(run.steps)
    present = {
        "summary": True,
        "training": not run.is_pretrained and run.has(run.metrics_path),
        "grokking": bool(tracking),
        "trees": bool(run.steps) and has_trees,
        "layers": run.has(run.tree_scores_path) or run.has(run.structural_probe_path),
        "saes": bool(run.sae_dirs()),
        "frontier": run.has(run.sae_frontier_path),
        "probes": run.has(run.probe_results_path),
        "representations": bool(run.sae_dirs())
        or any("cka_to_final" in r or "rank_residual" in r for r in tracking),
        "causal": run.has(run.patching_path) or run.has(run.das_path),
        "bp": bp,
    }
    return [name for name in SECTION_INPUTS if present[name]]
