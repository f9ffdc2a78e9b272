"""The SAE section of the run report: the SAE table, description length against width, and
feature cards (top-activating tokens in context and the activation histogram of a latent)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from hierlens.models.run import Run
from hierlens.models.store import ActivationStore

from .html import esc, fmt, table
from .sections import ReportContext

log = logging.getLogger(__name__)

PREFERRED = (
    "name",
    "architecture",
    "hook_name",
    "d_sae",
    "k",
    "fvu",
    "fvu_train",
    "fvu_heldout",
    "n_heldout_rows",
    "l0",
    "dead",
    "dead_fraction",
    "ce_recovered",
    "description_length_bits",
)
MAX_ROWS = 50_000  # activation rows read for metrics and feature cards


class _StoreCache:
    """Opens the newest store holding a hook (each store opened once)."""

    def __init__(self, run: Run) -> None:
        self.candidates = sorted(run.activation_dirs().items(), reverse=True)
        self.opened: dict[Path, ActivationStore | None] = {}

    def find(self, hook: str | None) -> tuple[int, ActivationStore] | None:
        for step, path in self.candidates:
            if path not in self.opened:
                try:
                    self.opened[path] = ActivationStore.open(path)
                except (OSError, ValueError) as err:
                    log.warning("report: skipping activation store %s: %s", path, err)
                    self.opened[path] = None
            store = self.opened[path]
            if store is None:
                continue
            if hook is None and len(store.hooks) == 1:
                return step, store
            if hook in store.hooks:
                return step, store
        return None


def sae_section(ctx: ReportContext) -> str | None:
    """SAE table, DL-vs-width curve and feature cards (``saes/``)."""
    from hierlens.sae import evaluate_sae, load_sae

    dirs = ctx.run.sae_dirs()
    table_rows = {str(r.get("name")): r for r in ctx.run.read_records(ctx.run.sae_table_path)}
    if not dirs and not table_rows:
        return None
    stores = _StoreCache(ctx.run)
    rows: dict[str, dict[str, Any]] = {}
    loaded: dict[str, tuple[Any, tuple[int, ActivationStore] | None]] = {}
    for name, path in dirs.items():
        sae = load_sae(path, device="cpu", verify=True)
        hook = sae.cfg.hook_name
        found = stores.find(hook)
        loaded[name] = (sae, found)
        row: dict[str, Any] = {
            "name": name,
            "architecture": sae.architecture,
            "hook_name": hook,
            "d_sae": sae.d_sae,
        }
        if getattr(sae.cfg, "k", None) is not None:
            row["k"] = sae.cfg.k
        if name in table_rows:
            row.update(table_rows[name])
        elif found is not None and found[1].token_shape(_hook_of(found[1], hook))[-1] == sae.d_in:
            acts = found[1][_hook_of(found[1], hook)][:MAX_ROWS].float()
            metrics = evaluate_sae(sae, acts)
            row.update(fvu=metrics["fvu"], l0=metrics["l0"], dead=metrics["dead_fraction"])
        rows[name] = row
    for name, r in table_rows.items():  # rows whose SAE files are not in the run
        rows.setdefault(name, dict(r))
    columns = [c for c in PREFERRED if any(c in r for r in rows.values())]
    columns += sorted({c for r in rows.values() for c in r} - set(columns) - {"description"})
    parts = [table(columns, rows.values())]
    if "fvu_heldout" in columns:
        parts.append(
            '<p class="note"><code>fvu_train</code>: fraction of variance unexplained on the '
            "rows the SAE trained on; <code>fvu_heldout</code>: on the rows held out from "
            "training (a seeded split, <code>n_heldout_rows</code> of them). A held-out FVU "
            "well above the training FVU means the SAE fits its training rows, not the "
            "activations.</p>"
        )
    dl = _dl_chart(ctx, list(rows.values()))
    if dl:
        parts.append(dl)
    cards = []
    for name, (sae, found) in list(loaded.items())[: ctx.max_saes]:
        if found is None:
            continue
        step, store = found
        hook = _hook_of(store, sae.cfg.hook_name)
        if store.token_shape(hook)[-1] != sae.d_in:
            continue
        cards.append(_feature_cards(ctx, name, sae, store, hook, step))
    if cards:
        parts.append("<h3>Feature cards</h3>" + "".join(cards))
    elif loaded and all(found is None for _, found in loaded.values()):
        parts.append(
            '<p class="note">No activation store of the run holds the SAEs\' hooks '
            "(activations/step_NNNNNNN/), so there are no feature cards.</p>"
        )
    return "".join(parts)


def _hook_of(store: ActivationStore, hook: str | None) -> str:
    return hook if hook in store.hooks else store.hooks[0]


def _dl_chart(ctx: ReportContext, rows: list[dict[str, Any]]) -> str | None:
    """Description length against dictionary width, one line per architecture."""
    import plotly.graph_objects as go

    points = [
        r
        for r in rows
        if isinstance(r.get("description_length_bits"), (int, float))
        and math.isfinite(r["description_length_bits"])
        and isinstance(r.get("d_sae"), int)
    ]
    if not points:
        return None
    fig = go.Figure()
    for arch in sorted({str(r.get("architecture", "?")) for r in points}):
        pts = sorted(
            (r for r in points if str(r.get("architecture", "?")) == arch), key=lambda r: r["d_sae"]
        )
        fig.add_trace(
            go.Scatter(
                x=[r["d_sae"] for r in pts],
                y=[r["description_length_bits"] for r in pts],
                text=[esc(r.get("name", "")) for r in pts],
                mode="lines+markers",
                name=esc(arch),
            )
        )
    fig.update_layout(
        title="Description length vs dictionary width",
        xaxis=dict(title="d_sae", type="log"),
        yaxis=dict(title="description length (bits)"),
    )
    return ctx.charts.add(fig)


def _sequences(store: ActivationStore, n_rows: int) -> dict[int, list[int]]:
    """Token ids of the stored sequences among the first ``n_rows`` rows, rebuilt from the
    store's index (a sequence cut by the limit keeps its first tokens)."""
    seq = store.index["sequence"][:n_rows].tolist()
    pos = store.index["position"][:n_rows].tolist()
    tok = store.index["token"][:n_rows].tolist()
    out: dict[int, dict[int, int]] = {}
    for s, p, t in zip(seq, pos, tok):
        out.setdefault(s, {})[p] = t
    return {s: [d[p] for p in sorted(d)] for s, d in out.items()}


def _feature_cards(
    ctx: ReportContext,
    name: str,
    sae: Any,
    store: ActivationStore,
    hook: str,
    step: int,
    notes: dict[int, str] | None = None,
) -> str:
    """Cards of the latents with the largest activations, or of the latents ``notes``
    names (in its order), each with its note (e.g. the true feature it matched)."""
    import plotly.graph_objects as go

    acts = store[hook][:MAX_ROWS].float()
    with torch.inference_mode():
        codes = sae.encode(acts).float()
    peak = codes.max(0).values
    alive = int((peak > 0).sum())
    if notes:
        order = torch.tensor(list(notes)[: ctx.max_features], dtype=torch.long)
    else:
        order = torch.argsort(peak, descending=True)[: min(ctx.max_features, alive)]
    sequences = _sequences(store, codes.shape[0])
    seq_index = store.index["sequence"][: codes.shape[0]].tolist()
    pos_index = store.index["position"][: codes.shape[0]].tolist()
    head = (
        f"<p><b>{esc(name)}</b> on <code>{esc(hook)}</code> (activations of checkpoint "
        f"{fmt(step)}, {codes.shape[0]} tokens; {alive} of {sae.d_sae} latents fire)</p>"
    )
    cards = []
    for f in order.tolist():
        col = codes[:, f]
        firing = col > 0
        top = torch.argsort(col, descending=True)[: ctx.n_contexts]
        lines = []
        for row in top.tolist():
            if col[row] <= 0:
                break
            tokens = sequences[seq_index[row]]
            at = pos_index[row]
            lo, hi = max(0, at - 8), min(len(tokens), at + 5)
            words = []
            for p in range(lo, hi):
                text = esc(ctx.token_string(tokens[p]))
                words.append(f"<mark>{text}</mark>" if p == at else text)
            prefix = "&hellip; " if lo > 0 else ""
            suffix = " &hellip;" if hi < len(tokens) else ""
            lines.append(
                f'<div class="ctx">{fmt(float(col[row]), 3)}: {prefix}{" ".join(words)}{suffix}</div>'
            )
        values = col[firing].tolist()
        hist = go.Figure(go.Histogram(x=values, nbinsx=30, name="activation"))
        hist.update_layout(
            title=f"latent {f}: non-zero activations",
            xaxis_title="activation",
            yaxis_title="tokens",
            showlegend=False,
        )
        density = float(firing.float().mean())
        cards.append(
            f'<div class="card"><div class="grid"><div><p>latent <b>{f}</b>: fires on '
            f"{fmt(100 * density, 3)}% of tokens, max {fmt(float(peak[f]), 3)}</p>"
            + (f'<p class="note">{esc((notes or {}).get(f, ""))}</p>' if notes else "")
            + f"{''.join(lines)}</div><div>{ctx.charts.add(hist, height=240)}</div></div></div>"
        )
    if not cards:
        cards.append('<p class="note">No latent fires on the stored activations.</p>')
    return head + "".join(cards)
