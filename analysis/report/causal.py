"""The report's causal section: patching heatmaps (hook x position before the query), IIA
per layer for each variable, and DAS beside the probe accuracy (``causal/``)."""

from __future__ import annotations

from collections import defaultdict

from hierlens.core.atomic_io import read_json

from .html import esc, fmt, table
from .sections import ReportContext, _go, _hook_order


def causal_section(ctx: ReportContext) -> str | None:
    """Patching heatmaps and DAS tables, from ``causal/patching.json`` and ``causal/das.jsonl``
    (omitted when neither exists)."""
    run = ctx.run
    parts: list[str] = []
    if run.has(run.patching_path):
        go = _go()
        data = read_json(run.patching_path)
        for rec in data.get("patching", []):
            hooks = [h for h in rec["hooks"] if not isinstance(rec["effect"][h][0], list)]
            z = [rec["effect"][h] for h in hooks]
            fig = go.Figure(go.Heatmap(z=z, x=rec["offsets"], y=[esc(h) for h in hooks],
                                       colorscale="RdBu", zmid=0))  # fmt: skip
            fig.update_layout(
                title=f"{esc(rec['variable'])}: {rec['direction']} patching, normalised "
                f"{rec['metric']} ({rec['n_pairs']} pairs)",
                xaxis=dict(title="position relative to the query"),
            )
            note = ""
            if "agreement" in rec:
                a = rec["agreement"]
                note = (f"attribution patching vs real patching: Pearson {fmt(a['pearson'], 3)}, "
                        f"Spearman {fmt(a['spearman'], 3)}, same top site: {a['same_top_site']}")  # fmt: skip
            parts.append(f'<div>{ctx.charts.add(fig)}<p class="note">{esc(note)}</p></div>')
    if run.has(run.das_path):
        go = _go()
        records = run.read_records(run.das_path)
        by_var: dict[str, list[dict]] = defaultdict(list)
        for r in records:
            by_var[r["variable"]].append(r)
        fig = go.Figure()
        for var, rs in by_var.items():
            rs = sorted(rs, key=lambda r: _hook_order(r["hook"]))
            x = [esc(r["hook"]) for r in rs]
            fig.add_trace(go.Scatter(x=x, y=[r["das"] for r in rs], name=f"{esc(var)}: DAS IIA",
                                     mode="lines+markers"))  # fmt: skip
            if any(r.get("probe") is not None for r in rs):
                fig.add_trace(go.Scatter(x=x, y=[r.get("probe") for r in rs],
                                         name=f"{esc(var)}: probe acc.", mode="lines+markers",
                                         line=dict(dash="dot")))  # fmt: skip
        fig.update_layout(title="IIA per layer for each variable, beside probe accuracy",
                          yaxis=dict(range=[-0.02, 1.02]))  # fmt: skip
        parts.append(ctx.charts.add(fig))
        cols = ["variable", "hook", "rank", "das", "full", "random_subspace", "random_model",
                "probe", "chance"]  # fmt: skip
        rows = [{c: round(r[c], 3) if isinstance(r.get(c), float) else r.get(c) for c in cols}
                for r in records]  # fmt: skip
        parts.append(table(cols, rows))
    if not parts:
        return None
    return "".join(parts)
