"""The L0-frontier section of the run report (``saes/frontier.json``, written by
:func:`hierlens.analysis.sae_frontier.fit_sae_frontier`): FVU, spliced CE, MCC, F1 and
absorption against L0 with one line per architecture, then the feature cards of the chosen
SAE (the highest MCC against the task's known features; without them the highest CE loss
recovered), each latent annotated with the true feature it matched and that feature's tree
level."""

from __future__ import annotations

import math
from typing import Any

from hierlens.core.atomic_io import read_json
from hierlens.models.store import ActivationStore

from .html import esc, fmt, table
from .saes import _feature_cards
from .sections import ReportContext

METRICS = (
    ("fvu", "FVU"),
    ("ce_loss_recovered", "CE loss recovered"),
    ("mcc", "MCC"),
    ("mean_f1", "mean F1"),
    ("absorption", "absorption"),
)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def chosen_record(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The SAE the section shows: highest ``mcc``, else highest ``ce_loss_recovered``."""
    for key in ("mcc", "ce_loss_recovered"):
        rows = [r for r in records if _finite(r.get(key))]
        if rows:
            return max(rows, key=lambda r: r[key])
    return None


def frontier_section(ctx: ReportContext) -> str | None:
    """The frontier charts and the chosen SAE's annotated feature cards."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from hierlens.sae import load_sae

    path = ctx.run.sae_frontier_path
    if not ctx.run.has(path):
        return None
    data = read_json(path)
    records = data["records"]
    parts = [
        f"<p>{len(records)} SAEs at checkpoint {fmt(data['step'])} on "
        f"{esc(', '.join(data['hooks']))}; scored on held-out sequences"
        + (" against the task's known features" if data.get("ground_truth") else "")
        + ".</p>"
    ]
    shown = [(k, label) for k, label in METRICS if any(_finite(r.get(k)) for r in records)]
    for hook in data["hooks"]:
        rows = [r for r in records if r["hook"] == hook]
        fig = make_subplots(rows=1, cols=len(shown), subplot_titles=[lab for _, lab in shown])
        archs = list(dict.fromkeys(r["architecture"] for r in rows))
        for a, arch in enumerate(archs):
            pts = sorted((r for r in rows if r["architecture"] == arch), key=lambda r: r["l0"])
            for j, (key, _) in enumerate(shown):
                keep = [r for r in pts if _finite(r.get(key)) and r["l0"] > 0]
                fig.add_trace(
                    go.Scatter(
                        x=[r["l0"] for r in keep], y=[r[key] for r in keep],
                        text=[esc(r["name"]) for r in keep], mode="lines+markers",
                        name=esc(arch), legendgroup=arch, showlegend=j == 0,
                        line=dict(color=f"hsl({int(360 * a / max(1, len(archs)))},60%,45%)"),
                    ),
                    row=1, col=j + 1,
                )  # fmt: skip
        fig.update_xaxes(type="log", title_text="L0")
        fig.update_layout(title=f"L0 frontier on {esc(hook)}")
        parts.append(ctx.charts.add(fig, height=360))
    columns = ["sae", "architecture", "value", "l0", *(k for k, _ in shown)]
    parts.append(table(columns, [{c: r.get(c) for c in columns} for r in records]))
    best = chosen_record(records)
    if best is None:
        return "".join(parts)
    parts.append(
        f"<h3>Chosen SAE: {esc(best['sae'])}</h3><p>"
        + ("highest MCC" if _finite(best.get("mcc")) else "highest CE loss recovered")
        + "; each card names the true feature the latent matched (Hungarian matching on "
        "activations), its tree level, correlation and F1.</p>"
    )
    matches = sorted(best.get("matches", []), key=lambda m: -m["correlation"])
    notes = {
        int(m["latent"]): (
            f"matched true feature {m['name']} (tree level {m['level']}): correlation "
            f"{fmt(m['correlation'], 3)}, F1 {fmt(m['f1'], 3)}"
        )
        for m in matches
    }
    store_dir = ctx.run.activations_dir(data["step"])
    if ctx.run.has(store_dir / "manifest.json"):
        sae = load_sae(ctx.run.sae_dir(best["sae"]), device="cpu", verify=True)
        store = ActivationStore.open(store_dir)
        parts.append(
            _feature_cards(ctx, best["sae"], sae, store, best["hook"], data["step"], notes or None)
        )
    return "".join(parts)
