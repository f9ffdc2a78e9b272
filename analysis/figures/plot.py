"""Pure plotting functions of the paper figures: each takes a figure's data (a JSON-able dict,
as written to ``NAME.json`` by :func:`hierlens.analysis.figures.reproduce`) and returns a
matplotlib ``Figure``; :func:`save_figure` writes it as PNG and PDF.

Figures are drawn on matplotlib's Agg canvas through the object-oriented API (no pyplot, so
the global backend and pyplot's figure list are left alone); nothing here trains or reads
files.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hierlens.core.atomic_io import atomic_write_bytes

DPI = 150
FORMATS = ("png", "pdf")


def save_figure(
    fig: Figure,
    out_dir: str | os.PathLike,
    name: str,
    formats: Sequence[str] = FORMATS,
    dpi: int = DPI,
) -> list[Path]:
    """Write ``fig`` as ``out_dir/name.<format>`` for each format (atomically)."""
    paths = []
    for fmt in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
        path = Path(out_dir) / f"{name}.{fmt}"
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths


def _figure(figsize: tuple[float, float], layout: str | None = None) -> Figure:
    """A figure on its own Agg canvas (not registered with pyplot), with matplotlib's
    ``layout`` engine (e.g. ``"constrained"``; None: the default)."""
    fig = Figure(figsize=figsize, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _positive(steps: Sequence[int], *series: Sequence[Any]) -> tuple[list, ...]:
    """Drop step 0 (and its values) so the step axis can be logarithmic."""
    keep = [i for i, s in enumerate(steps) if s > 0]
    return tuple([list(seq)[i] for i in keep] for seq in (steps, *series))


def _none_to_nan(values: Sequence[Any]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def _mark_summary(ax: Any, data: dict[str, Any]) -> None:
    summary = data.get("summary") or {}
    marks = (
        ("id_saturation_step", "tab:blue", f"ID ≥ {data.get('saturation', 0.98):g}"),
        ("ood_threshold_step", "tab:red", f"OOD ≥ {data.get('ood_threshold', 0.8):g}"),
    )
    for key, color, label in marks:
        step = summary.get(key)
        if step:
            ax.axvline(step, color=color, ls=":", lw=1.2, label=f"{label} (step {step})")


def plot_grokking_curves(data: dict[str, Any]) -> Figure:
    """In-domain vs out-of-domain accuracy over training steps (log scale), with the steps
    where in-domain accuracy saturates and OOD accuracy crosses its threshold, and the
    training loss below ([Murty2023b], Fig. 1)."""
    steps, id_acc, ood_acc = _positive(data["steps"], data["test_id"], data["test_ood"])
    fig = _figure((6.4, 5.2))
    ax, ax_loss = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2.2, 1]})
    ax.plot(steps, id_acc, "o-", color="tab:blue", ms=3, label="in-domain (test_id)")
    ax.plot(steps, ood_acc, "s-", color="tab:red", ms=3, label="out-of-domain (test_ood)")
    _mark_summary(ax, data)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel(data["metric"])
    ax.set_title(f"{data['task']}: accuracy over training", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    t_steps, loss = _positive(data["train"]["steps"], data["train"]["loss"])
    ax_loss.plot(t_steps, loss, color="0.3", lw=1)
    if loss and min(loss) > 0:
        ax_loss.set_yscale("log")
    ax_loss.set_ylabel("train loss")
    ax_loss.set_xlabel("training step")
    fig.tight_layout()
    return fig


def plot_tree_score_over_training(data: dict[str, Any]) -> Figure:
    """Tree score and parse F1 of the tree projections over training, beside OOD accuracy
    ([Murty2023b]: OOD generalisation comes with tree-structured computation)."""
    steps, ood, f1, score = _positive(
        data["steps"],
        data["test_ood"],
        _none_to_nan(data["parse_f1"]),
        _none_to_nan(data["tree_score"]),
    )
    fig = _figure((6.4, 5.2))
    ax_top, ax_score = fig.subplots(2, 1, sharex=True)
    ax_top.plot(steps, ood, "s-", color="tab:red", ms=3, label="OOD accuracy (test_ood)")
    ax_top.plot(steps, f1, "^-", color="tab:green", ms=3, label="parse F1 vs gold trees")
    _mark_summary(ax_top, data)
    ax_top.set_xscale("log")
    ax_top.set_ylim(-0.02, 1.02)
    ax_top.set_title(f"{data['task']}: tree-structuredness over training", fontsize=10)
    ax_top.legend(fontsize=7, loc="best")
    ax_score.plot(steps, score, "o-", color="tab:purple", ms=3, label="tree score")
    _mark_summary(ax_score, data)
    ax_score.set_ylabel("tree score")
    ax_score.set_xlabel("training step")
    fig.tight_layout()
    return fig


def plot_mpsae_hierarchy(data: dict[str, Any]) -> Figure:
    """Best-match and Hungarian-matched cosine of the true concepts per tree level for
    MP-SAE, TopK and ReLU at matched L0 [Costa2025]."""
    names = list(data["methods"])
    levels = sorted(data["methods"][names[0]]["per_level"], key=int)
    fig = _figure((9, 3.6))
    axes = fig.subplots(1, 2, sharey=True)
    width = 0.8 / len(names)
    for ax, metric, title in (
        (axes[0], "mean_best_cosine", "best-match cosine"),
        (axes[1], "hungarian_cosine", "Hungarian-matched cosine"),
    ):
        for i, name in enumerate(names):
            m = data["methods"][name]
            vals = [m["per_level"][lv][metric] for lv in levels]
            label = f"{name} (L0 {m['l0']:.2f}, FVU {m['fvu']:.3f})"
            xs = [int(lv) + (i - (len(names) - 1) / 2) * width for lv in levels]
            ax.bar(xs, vals, width, label=label)
        ax.set_xticks([int(lv) for lv in levels], [f"level {lv}" for lv in levels])
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, 1.05)
    axes[0].set_ylabel("cosine to true concepts")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=len(names))
    fig.suptitle(
        f"Concept recovery by tree level at matched L0 (true L0 {data['true_l0']:.2f})",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def plot_mdl_digits(data: dict[str, Any]) -> Figure:
    """Description length vs dictionary width (best k per width, the MDL choice starred)
    and the decoder atoms of the narrowest, the selected and the widest SAE (Ayonrinde et
    al. 2024)."""
    points = [p for p in data["curve"] if p["bits"] is not None]
    side = int(data["side"])
    fig = _figure((15, 4.6))
    grid = fig.add_gridspec(
        1, 1 + len(data["atoms"]), width_ratios=[1.3] + [1] * len(data["atoms"])
    )
    ax = fig.add_subplot(grid[0])
    ax.plot([p["width"] for p in points], [p["bits"] for p in points], "o-")
    for p in points:
        ax.annotate(
            f"k={p['k']}",
            (p["width"], p["bits"]),
            fontsize=7,
            xytext=(3, 4),
            textcoords="offset points",
        )
    selected = [p for p in points if p["name"] == data["selected"]]
    if selected:
        ax.plot([selected[0]["width"]], [selected[0]["bits"]], "r*", ms=14, label="selected")
        ax.legend()
    ax.set_xscale("log", base=2)
    ax.set_xlabel("dictionary width d_sae")
    ax.set_ylabel("description length (bits / image)")
    ax.set_title(f"MDL at FVU ≤ {data['max_fvu']:g}")
    for j, panel in enumerate(data["atoms"]):
        atoms = np.asarray(panel["atoms"], dtype=float).reshape(-1, side, side)
        n = len(atoms)
        cols = max(1, math.ceil(math.sqrt(n)))
        rows = max(1, math.ceil(n / cols))
        sub = grid[j + 1].subgridspec(rows, cols, wspace=0.05, hspace=0.05)
        for i, img in enumerate(atoms):
            a = fig.add_subplot(sub[i // cols, i % cols])
            lim = float(np.abs(img).max()) or 1.0
            a.imshow(img, cmap="RdBu_r", vmin=-lim, vmax=lim)
            a.set_xticks([])
            a.set_yticks([])
            if i == 0:
                label = f"{panel['title']}: {panel['name']}"
                if panel["n_latents"] > n:
                    label += f" ({n} most used)"
                a.set_title(label, fontsize=8, loc="left")
    return fig


def plot_sparse_probing(data: dict[str, Any]) -> Figure:
    """Test F1 of k-sparse probes vs k, one panel per label and one line per layer
    [Gurnee2023]."""
    labels, ks = data["labels"], data["ks"]
    fig = _figure((3.4 * len(labels), 3.2))
    axes = fig.subplots(1, len(labels), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, label in zip(axes, labels):
        for hook in data["hooks"]:
            ax.plot(ks, data["f1"][label][hook], marker="o", ms=3, label=hook)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("k (neurons)")
    axes[0].set_ylabel("test F1")
    axes[0].set_ylim(0, 1.02)
    axes[-1].legend(fontsize=7)
    trained = f"{data['steps']} training steps" if data["steps"] else "untrained"
    fig.suptitle(f"{data['selection']} k-sparse probes, Dyck transformer ({trained})", fontsize=10)
    fig.tight_layout()
    return fig


def plot_filtering_vs_bp(data: dict[str, Any]) -> Figure:
    """Root accuracy of the transformer and of exact belief propagation (the Bayes optimum)
    per filtering level [GarnierBrun2025]."""
    levels = data["filter_levels"]
    fig = _figure((5.2, 3.6))
    ax = fig.subplots()
    ax.plot(levels, data["bp_acc"], "o--", color="0.3", label="exact BP (Bayes-optimal)")
    ax.plot(levels, data["model_acc"], "s-", color="tab:orange", label="transformer")
    ax.set_xticks(levels)
    ax.set_xlabel("filtering level k (intact levels above the leaves)")
    ax.set_ylabel("root accuracy (test_id)")
    ax.set_ylim(0, 1.02)
    ax.axhline(1 / data["q"], color="0.7", lw=0.8, ls=":", label=f"chance (1/{data['q']})")
    ax.set_title(
        f"q={data['q']}, L={data['depth']}, {data['steps']} steps, {data['n_eval']} sequences",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


_STRUCTURAL_PANELS = (
    ("uuas", "UUAS (distance probe)"),
    ("spearman", "distance Spearman"),
    ("root_acc", "root accuracy (depth probe)"),
    ("norm_spearman", "norm Spearman (depth probe)"),
)


def plot_structural_probe_layers(data: dict[str, Any]) -> Figure:
    """Structural-probe metrics per layer [Hewitt2019] for the trained model and
    its random-weights control, with the linear-chain baseline on the UUAS and Spearman
    panels; layer 0 is the embeddings."""
    fig = _figure((8.4, 6.2))
    axes = fig.subplots(2, 2, sharex=True).ravel()
    base = data["baseline"]["test"]
    for ax, (key, title) in zip(axes, _STRUCTURAL_PANELS):
        for which, style, color, label in (
            ("trained", "o-", "tab:blue", "trained"),
            ("random", "s--", "tab:gray", "random weights"),
        ):
            recs = data[which]
            ax.plot(
                [r["layer"] for r in recs],
                _none_to_nan([r.get(key) for r in recs]),
                style,
                color=color,
                ms=4,
                label=label,
            )
        if key in base:
            ax.axhline(base[key], color="tab:red", ls=":", lw=1.2, label="linear chain")
        ax.set_title(title, fontsize=9)
        values = [r.get(key) for w in ("trained", "random") for r in data[w]]
        low = min((v for v in values if v is not None), default=0.0)
        ax.set_ylim(min(0.0, low - 0.05), 1.02)  # Spearman can be negative
        if low < 0:
            ax.axhline(0, color="0.8", lw=0.8)
        ax.set_xticks(data["layers"])
    for ax in axes[2:]:
        ax.set_xlabel("layer (0 = embeddings)")
    axes[0].legend(fontsize=7, loc="best")
    split = data["split"]
    fig.suptitle(
        f"Structural probes per layer: {data['model']}, {data['n_sentences']} sentences "
        f"(train/dev/test {split['n_train']}/{split['n_dev']}/{split['n_test']})",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def plot_mpsae_correlation(data: dict[str, Any]) -> Figure:
    """Costa et al.'s correlation sweep: child and parent recovery (Hungarian cosine),
    absorption and FVU vs within-group cosine, one line per architecture (mean over seeds,
    band: min to max)."""
    panels = (
        ("child_hungarian", "child recovery (Hungarian cosine)"),
        ("parent_hungarian", "parent recovery (Hungarian cosine)"),
        ("absorption", "parent absorbed into child (rate)"),
        ("fvu", "FVU"),
    )
    fig = _figure((11.0, 7.5))
    axes = fig.subplots(2, 2).ravel()
    x = data["cosines"]
    for ax, (metric, title) in zip(axes, panels):
        for name in data["methods"]:
            stats = data["summary"][name][metric]
            mean = _none_to_nan(stats["mean"])
            (line,) = ax.plot(x, mean, marker="o", ms=3, label=name)
            ax.fill_between(
                x,
                _none_to_nan(stats["min"]),
                _none_to_nan(stats["max"]),
                color=line.get_color(),
                alpha=0.15,
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("within-group cosine")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"MP-SAE vs baselines on Costa et al.'s toy (target L0 {data['target_l0']:.2f}, "
        f"{len(data['seeds'])} seed(s))",
        fontsize=11,
    )
    return fig
