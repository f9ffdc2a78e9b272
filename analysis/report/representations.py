"""The "Representations" section of the run report: when representations settle over training
and what shape the SAE feature clouds have.

- linear CKA of every layer to the final checkpoint over checkpoints (a layer x checkpoint
  heatmap) and layer x layer CKA of earlier checkpoints to the final one, from the
  ``cka_to_final`` metrics of ``tracking.jsonl`` (``hierlens track --compare true``;
  [Kornblith2019]);
- rank-collapse residual per layer at each tracked checkpoint (``rank_residual``; Dong,
  Cordonnier & Loukas 2021);
- SAE geometry: the eigenvalue spectrum of each saved SAE's decoder rows and its fitted
  power-law slope [Li2024].

The section is omitted when the run has none of these inputs.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ..compare.runs import layer_label
from .html import esc, fmt, table
from .sections import ReportContext, _go

log = logging.getLogger(__name__)

MAX_CURVES = 8  # checkpoints drawn as rank-collapse curves / SAE spectra drawn


def _spread(items: list[Any], k: int) -> list[Any]:
    """At most ``k`` items, evenly spaced, always keeping the first and the last."""
    if len(items) <= k:
        return items
    idx = sorted({round(i * (len(items) - 1) / (k - 1)) for i in range(k)})
    return [items[i] for i in idx]


def _labels(record: dict[str, Any], n: int) -> list[str]:
    hooks = record.get("representation_hooks")
    if isinstance(hooks, list) and len(hooks) == n:
        return [layer_label(str(h)) for h in hooks]
    return [f"layer {i}" for i in range(n)]


def _cka_heatmap(z: list[list[Any]], x: list[str], y: list[str]) -> Any:
    """A figure of CKA values ``z`` (rows ``y``, columns ``x``) on the scale 0 to 1."""
    go = _go()
    return go.Figure(
        go.Heatmap(z=z, x=x, y=y, zmin=0, zmax=1, colorscale="Viridis", colorbar=dict(title="CKA"))
    )


def _cka_parts(ctx: ReportContext, records: list[dict[str, Any]]) -> list[str]:
    rows = [r for r in records if isinstance(r.get("cka_to_final"), list)]
    if not rows:
        return []
    n = len(rows[-1]["cka_to_final"])
    labels = _labels(rows[-1], n)
    steps = [r["step"] for r in rows]
    ref = rows[-1].get("settings", {}).get("reference_step", steps[-1])
    z = [[r["cka_to_final"][i] if i < len(r["cka_to_final"]) else None for r in rows]
         for i in range(n)]  # fmt: skip
    fig = _cka_heatmap(z, [str(s) for s in steps], labels)
    fig.update_layout(
        title=f"Linear CKA of each layer to the final checkpoint (step {fmt(ref)})",
        xaxis_title="checkpoint step",
        yaxis_title="layer (0 = embeddings)",
    )
    parts = [f"<div>{ctx.charts.add(fig)}</div>"]
    with_matrix = [r for r in rows if isinstance(r.get("cka_to_final_matrix"), list)]
    earlier = [r for r in with_matrix if r["step"] != ref]
    for r in _spread(earlier, 2) if len(earlier) > 1 else earlier:
        m = r["cka_to_final_matrix"]
        lab = _labels(r, len(m))
        heat = _cka_heatmap(m, lab, lab)
        heat.update_layout(
            title=f"Layer x layer CKA: step {fmt(r['step'])} vs final step {fmt(ref)}",
            xaxis_title=f"layer at step {fmt(ref)}",
            yaxis_title=f"layer at step {fmt(r['step'])}",
        )
        parts.append(f"<div>{ctx.charts.add(heat)}</div>")
    settle = []
    for i, lab in enumerate(labels):
        first = next(
            (
                r["step"]
                for k, r in enumerate(rows)
                if all(
                    (q["cka_to_final"][i] or 0.0) >= 0.95
                    for q in rows[k:]
                    if i < len(q["cka_to_final"])
                )
            ),
            None,
        )
        settle.append({"layer": lab, "first step with CKA to final >= 0.95 from then on": first})
    parts.append(
        "<div><h3>When each layer settles</h3>"
        + table(["layer", "first step with CKA to final >= 0.95 from then on"], settle)
        + "</div>"
    )
    return parts


def _rank_parts(ctx: ReportContext, records: list[dict[str, Any]]) -> list[str]:
    rows = [r for r in records if isinstance(r.get("rank_residual"), list)]
    if not rows:
        return []
    go = _go()
    fig = go.Figure()
    for r in _spread(rows, MAX_CURVES):
        res = r["rank_residual"]
        fig.add_trace(
            go.Scatter(
                x=_labels(r, len(res)), y=res, mode="lines+markers", name=f"step {r['step']}"
            )
        )
    fig.update_layout(
        title="Rank collapse: residual from token-uniform rank 1 per layer",
        xaxis_title="layer (0 = embeddings)",
        yaxis_title="relative residual ‖X − 1xᵀ‖/‖X‖",
        yaxis_rangemode="tozero",
    )
    return [f"<div>{ctx.charts.add(fig)}</div>"]


def _sae_parts(ctx: ReportContext) -> list[str]:
    dirs = ctx.run.sae_dirs()
    if not dirs:
        return []
    from hierlens.sae import load_sae

    from ..compare.geometry import eigen_spectrum, power_law_slope

    go = _go()
    rows, spectra = [], []
    for name, path in dirs.items():
        sae = load_sae(path, device="cpu")
        row: dict[str, Any] = {
            "name": name,
            "hook_name": sae.cfg.hook_name,
            "d_sae": sae.d_sae,
            "d_in": sae.d_in,
        }
        try:
            lam = eigen_spectrum(sae)
            row["spectrum slope"] = power_law_slope(lam)
            spectra.append((name, lam))
        except ValueError as err:  # too few positive eigenvalues to fit
            row["spectrum slope"] = float("nan")
            log.info("report: no spectrum slope for SAE %s: %s", name, err)
        rows.append(row)
    parts = [
        "<div><h3>SAE feature geometry</h3>"
        '<p class="note">Eigenvalues of the covariance of each SAE\'s decoder rows; the slope is '
        "the least-squares fit of log λ against log rank over ranks 5%-50% (a power law "
        "λ ∝ r^slope; steeper is more concentrated).</p>"
        + table(["name", "hook_name", "d_sae", "d_in", "spectrum slope"], rows)
        + "</div>"
    ]
    if spectra:
        fig = go.Figure()
        for name, lam in spectra[:MAX_CURVES]:
            vals = [float(v) for v in lam if float(v) > 0 and math.isfinite(float(v))]
            fig.add_trace(
                go.Scatter(x=list(range(1, len(vals) + 1)), y=vals, mode="lines", name=esc(name))
            )
        fig.update_layout(
            title="SAE decoder eigenvalue spectra",
            xaxis_title="rank",
            yaxis_title="eigenvalue",
            xaxis_type="log",
            yaxis_type="log",
        )
        parts.append(f"<div>{ctx.charts.add(fig)}</div>")
    return parts


def representations_section(ctx: ReportContext) -> str | None:
    """CKA to the final checkpoint, rank collapse over checkpoints and SAE geometry; ``None``
    when the run has neither representation tracking nor SAEs."""
    records = sorted(ctx.run.read_records(ctx.run.tracking_path), key=lambda r: r["step"])
    parts = _cka_parts(ctx, records) + _rank_parts(ctx, records) + _sae_parts(ctx)
    if not parts:
        return None
    return f'<div class="grid">{"".join(parts)}</div>'
