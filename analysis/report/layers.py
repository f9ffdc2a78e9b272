"""The report's per-layer section: how tree-structured each layer is.

- Tree projections per layer (``tree_scores.jsonl``, written by ``hierlens tree-score
  --layers``): parse F1 of the projected trees against the gold trees beside the
  right-branching, left-branching and random-tree baselines on the same sentences, and the
  tree score [Murty2023a].
- Structural probes per layer (``probes/structural.jsonl``, written by ``hierlens
  structural-probe``): UUAS and distance Spearman of the distance probe, root accuracy of the
  depth probe, beside the random-weights control and the linear-chain baseline [Hewitt2019].

Omitted when neither file exists.
"""

from __future__ import annotations

import json
from typing import Any

from ..layer_numbering import LAYER_NUMBERING
from ..tree_scores import read_tree_scores
from .html import esc, fmt, settings_note, table
from .sections import ReportContext, _go

_BASELINES = (("parse_f1_right", "right-branching"), ("parse_f1_left", "left-branching"))
_BASELINES += (("parse_f1_random", "random trees"),)
_LAYER_AXIS = f"layer ({LAYER_NUMBERING})"


def _standard(settings: dict[str, Any]) -> bool:
    return settings.get("punct") != "kept" and settings.get("mask_from_block") in (0, None)


def _tree_part(ctx: ReportContext, records: list[dict[str, Any]]) -> str:
    go = _go()
    step = max(r["step"] for r in records)
    # the newest checkpoint's records of one setting, one per layer: the newest record's
    # among those scored as the literature scores them (punctuation dropped, every block
    # masked), else the newest record's
    at_step = [r for r in records if r["step"] == step]
    standard = [r for r in at_step if _standard(r["settings"])]
    settings = (standard or at_step)[-1]["settings"]
    latest = {}
    for r in records:
        if r["step"] == step and r["settings"] == settings:
            latest[r["layer"]] = r
    rows = [latest[k] for k in sorted(latest)]
    layers = [r["layer"] for r in rows]
    fig = go.Figure()
    fig.add_trace(_with_intervals(go, rows, "parse_f1", "projected trees"))
    for key, label in _BASELINES:
        fig.add_trace(
            go.Scatter(x=layers, y=[r[key] for r in rows], name=label, line=dict(dash="dot"))
        )
    fig.update_layout(
        title="Parse F1 of tree projections per layer",
        xaxis_title=_LAYER_AXIS,
        yaxis_title="F1",
    )
    cols = ["layer", "parse_f1", "parse_f1 95% CI", "parse_f1_right", "parse_f1_left"]
    cols += ["parse_f1_random", "tree_score", "n", "split", "method"]
    shown = [{**r, "parse_f1 95% CI": _ci(r.get("parse_f1_ci"))} for r in rows]
    shown = [{k: v for k, v in r.items() if v is not None} for r in shown]
    note = (
        f'<p class="note">Checkpoint step {fmt(step)}; {fmt(rows[0]["n"])} sentences. Layer '
        "l is the output of block l-1 (layer 0, the embeddings, has no tree projection). The "
        "baselines are the same sentences parsed as right- or left-branching or random binary "
        "trees. Gold trees: the constituency trees of the sentences. The interval is a 95% "
        "percentile bootstrap over the sentences.</p>"
    )
    other = len({json.dumps(r["settings"], sort_keys=True) for r in records}) - 1
    if other:
        note += (
            f'<p class="note">tree_scores.jsonl also holds records of {other} other '
            "setting(s), not shown.</p>"
        )
    note += _warnings(rows)
    return (
        "<h3>Tree projections per layer</h3>"
        + note
        + settings_note(settings)
        + ctx.charts.add(fig)
        + table(cols, shown)
    )


def _ci(pair: Any) -> str | None:
    """``[low, high]`` as ``"low – high"`` (None when absent)."""
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        return None
    return f"{fmt(pair[0], 3)} – {fmt(pair[1], 3)}"


def _with_intervals(go: Any, rows: list[dict[str, Any]], key: str, name: str) -> Any:
    """The line of the rows' ``key`` per layer, with plotly asymmetric error bars from each
    row's ``<key>_ci`` (none without intervals)."""
    cis = [r.get(f"{key}_ci") for r in rows]
    bars = None
    if all(isinstance(c, (list, tuple)) and len(c) == 2 for c in cis):
        bars = dict(
            type="data",
            symmetric=False,
            array=[max(0.0, c[1] - r[key]) for c, r in zip(cis, rows)],
            arrayminus=[max(0.0, r[key] - c[0]) for c, r in zip(cis, rows)],
        )
    return go.Scatter(
        x=[r["layer"] for r in rows], y=[r[key] for r in rows], name=name, error_y=bars
    )


def _warnings(records: list[dict[str, Any]]) -> str:
    notes = sorted({w for r in records for w in r.get("warnings") or []})
    return "".join(f'<p class="note"><b>Warning:</b> {esc(w)}</p>' for w in notes)


def _probe_part(ctx: ReportContext, records: list[dict[str, Any]]) -> str:
    go = _go()
    by_model: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_model.setdefault(r["model"], []).append(r)
    trained = sorted(by_model.get("trained", []), key=lambda r: r["layer"])
    random = {r["layer"]: r for r in by_model.get("random", [])}
    baseline = (by_model.get("baseline") or [None])[0]
    rows = []
    for r in trained:
        c = random.get(r["layer"], {})
        rows.append(
            {
                "layer": r["layer"],
                "UUAS": r["uuas"],
                "UUAS 95% CI": _ci(r.get("uuas_ci")),
                "UUAS (random weights)": c.get("uuas"),
                "Spearman": r["spearman"],
                "Spearman 95% CI": _ci(r.get("spearman_ci")),
                "Spearman (random weights)": c.get("spearman"),
                "root accuracy": r["root_acc"],
                "root accuracy (random weights)": c.get("root_acc"),
            }
        )
    rows = [{k: v for k, v in row.items() if v is not None} for row in rows]
    layers = [r["layer"] for r in trained]
    fig = go.Figure()
    fig.add_trace(_with_intervals(go, trained, "uuas", "UUAS"))
    if random:
        y = [random.get(x, {}).get("uuas") for x in layers]
        fig.add_trace(
            go.Scatter(x=layers, y=y, name="UUAS, random weights", line=dict(dash="dash"))
        )
    fig.add_trace(
        go.Scatter(x=layers, y=[r["spearman"] for r in trained], name="distance Spearman")
    )
    if baseline is not None:
        fig.add_hline(y=baseline["uuas"], line_dash="dot", annotation_text="linear chain UUAS")
    fig.update_layout(title="Structural probes per layer", xaxis_title=_LAYER_AXIS)
    cols = ["layer", "UUAS", "UUAS 95% CI", "UUAS (random weights)", "Spearman"]
    cols += ["Spearman 95% CI", "Spearman (random weights)"]
    cols += ["root accuracy", "root accuracy (random weights)"]
    split = trained[0] if trained else {}
    note = (
        '<p class="note">Distance and depth probes (Hewitt &amp; Manning, 2019) fitted on '
        f"{fmt(split.get('n_train'))} sentences, early-stopped on {fmt(split.get('n_dev'))}, "
        f"scored on {fmt(split.get('n_test'))}. Layer 0 is the embeddings; the random-weights "
        "control is the same architecture freshly initialised. Intervals: 95% percentile "
        "bootstrap over the test sentences.</p>"
    )
    gold = split.get("gold_tree")
    note += (
        f'<p class="note">Gold trees for UUAS, Spearman and root accuracy: {esc(gold)}.</p>'
        if gold
        else '<p class="note">Gold trees: not recorded (written before hierlens recorded '
        "them; earlier versions scored PTB input against constituency distances).</p>"
    )
    note += settings_note(split.get("settings"))
    if baseline is not None:
        ci = _ci(baseline.get("uuas_ci"))
        note += (
            f'<p class="note">Linear-chain baseline on the test sentences: UUAS '
            f"{fmt(baseline['uuas'])}{f' (95% CI {ci})' if ci else ''}, Spearman "
            f"{fmt(baseline['spearman'])}.</p>"
        )
    note += _warnings(trained)
    return "<h3>Structural probes per layer</h3>" + note + ctx.charts.add(fig) + table(cols, rows)


def layers_section(ctx: ReportContext) -> str | None:
    """Per-layer tree projections and structural probes (omitted without either)."""
    parts = []
    records = read_tree_scores(ctx.run)
    if records:
        parts.append(_tree_part(ctx, records))
    if ctx.run.has(ctx.run.structural_probe_path):
        records = ctx.run.read_records(ctx.run.structural_probe_path)
        if any(r.get("model") == "trained" for r in records):
            parts.append(_probe_part(ctx, records))
    return "".join(parts) or None


__all__ = ["layers_section"]
