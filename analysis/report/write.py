"""A run's results as one self-contained HTML page (``run_dir/report.html``).

The page works offline: plotly.js is inlined once and nothing is fetched from the network.
Sections, each omitted when the stage that produces its inputs did not run:

- run summary and configuration (``config.json``, final evaluation, grokking summary);
- training curves: loss, in-domain and out-of-domain accuracy (``metrics.jsonl``);
- grokking view: accuracies, tree score and parse F1 over checkpoints (``tracking.jsonl``,
  [Murty2023b];
- span-score heatmaps of example sentences with the greedy tree projection and the gold tree,
  computed from the newest checkpoint [Murty2023a];
- structure per layer (:mod:`.layers`): parse F1 of tree projections beside the branching
  baselines (``tree_scores.jsonl``) and structural probes beside their controls
  (``probes/structural.jsonl``);
- SAEs (``saes/``): table of metrics, description length against width, feature cards built
  from the run's activation stores (``activations/step_NNNNNNN/``);
- the SAE L0 frontier (``saes/frontier.json``, :mod:`.frontier`): FVU, spliced CE, MCC, F1
  and absorption against L0 per architecture, and the chosen SAE's feature cards annotated
  with the true feature each latent matched and its tree level;
- sparse probes (``probes/results.jsonl``): F1 against k per hook [Gurnee2023];
- representations: linear CKA of each layer to the final checkpoint and rank collapse over
  checkpoints (``hierlens track --compare true``), SAE decoder spectra (``saes/``);
- model accuracy against exact belief propagation for tasks that have it
  (hierarchical filtering, [GarnierBrun2025]).

A section whose inputs exist but cannot be read is shown as an error box naming the problem
(and logged); the other sections are still written.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from hierlens.core.atomic_io import atomic_write_bytes
from hierlens.models.run import open_run

from .causal import causal_section
from .frontier import frontier_section
from .html import Charts, esc, page
from .layers import layers_section
from .representations import representations_section
from .saes import sae_section
from .sections import (
    ReportContext,
    bp_section,
    grokking_section,
    probe_section,
    span_section,
    summary_section,
    training_section,
)

log = logging.getLogger(__name__)

__all__ = ["SECTIONS", "write_report"]

SECTIONS: tuple[tuple[str, str, Callable[[ReportContext], str | None]], ...] = (
    ("summary", "Run summary", summary_section),
    ("training", "Training curves", training_section),
    ("grokking", "Grokking over checkpoints", grokking_section),
    ("trees", "Span scores and tree projections", span_section),
    ("layers", "Structure per layer", layers_section),
    ("saes", "Sparse autoencoders", sae_section),
    ("frontier", "SAE L0 frontier", frontier_section),
    ("probes", "Sparse probes", probe_section),
    ("causal", "Causal evidence: patching and DAS", causal_section),
    ("representations", "Representations", representations_section),
    ("bp", "Belief-propagation comparison", bp_section),
)


def write_report(
    run_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    max_sentences: int = 4,
    max_saes: int = 4,
    max_features: int = 3,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> Path:
    """Write the HTML report of a run directory and return its path.

    Args:
        run_dir: a run directory (needs ``config.json``; everything else is optional).
        out: where to write (default ``run_dir/report.html``).
        max_sentences: example sentences (``test_id`` split, drawn with ``seed``) shown with
            span-score heatmaps and trees (0: no such section).
        max_saes, max_features: SAEs that get feature cards, and cards (the latents with
            the largest activations) per SAE.
        seed: seed of the example sentences and of the BP-comparison examples.
        device: where the checkpoint model runs for span scores and the BP comparison
            (``None``: CUDA when available, else CPU).
        progress: show progress bars.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``config.json``.
        ValueError: negative ``max_sentences`` / ``max_saes`` / ``max_features``.
    """
    for name, value in (
        ("max_sentences", max_sentences),
        ("max_saes", max_saes),
        ("max_features", max_features),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    run = open_run(run_dir)
    out_path = Path(out) if out is not None else run.report_path
    charts = Charts()
    ctx = ReportContext(
        run=run,
        charts=charts,
        max_sentences=max_sentences,
        max_saes=max_saes,
        max_features=max_features,
        seed=seed,
        device=device,
        progress=progress,
    )
    sections = []
    for anchor, heading, build in SECTIONS:
        try:
            with run.confined():  # no file of the run is read through a link
                body = build(ctx)
        except Exception as err:  # one broken input must not cost the whole report
            log.warning("report section %r failed: %s: %s", heading, type(err).__name__, err)
            body = (
                f'<p class="error">This section could not be built: '
                f"{esc(type(err).__name__)}: {esc(err)}</p>"
            )
        if body is not None:
            sections.append((anchor, heading, body))
    task_name = "pretrained" if run.is_pretrained else run.config.get("task", {}).get("name", "?")
    title = f"hierlens report: {run.path.name} ({task_name})"
    html = page(title, sections, plotly=charts.count > 0)
    with run.confined():  # the report is replaced atomically, never written through a link
        atomic_write_bytes(out_path, html.encode("utf-8"))
    return out_path
