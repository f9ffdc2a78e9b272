"""One report section of a run, for a notebook cell: :func:`show`."""

from __future__ import annotations

import os
import uuid

import torch

from hierlens.models.run import open_run

from .html import CSS, Charts, esc, plotly_script
from .sections import ReportContext

__all__ = ["Section", "show"]


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
        raise ValueError(f"{run.path}: the run has no data for the {section!r} section yet")
    # a notebook cell is shown after its page loaded: draw the charts at once, with ids
    # that do not collide with other cells'
    body = (
        body.replace('document.addEventListener("DOMContentLoaded",function(){', "(function(){")
        .replace("s.config);});</script>", "s.config);})();</script>")
        .replace('"chart-', f'"chart-{uuid.uuid4().hex[:8]}-')
    )
    return Section(section, heading, body, charts.count > 0)
