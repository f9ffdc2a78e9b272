"""Pure plotting functions of the representation figures (data from
:mod:`.representations`): each takes the figure's data and returns a matplotlib ``Figure``."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .plot import _figure, _none_to_nan


def plot_cka_across_seeds(data: dict[str, Any]) -> Figure:
    """Two layer x layer CKA heatmaps: seed A vs seed B (final checkpoints), and seed A's
    first checkpoint vs its final one."""
    fig = _figure((10, 4.4), "constrained")
    axes = fig.subplots(1, 2)
    labels = data["labels"]
    sa, sb = data["seeds"]
    panels = [
        (data["across_seeds"], f"seed {sa} (final)", f"seed {sb} (final)", "across seeds"),
        (
            data["early_vs_final"],
            f"seed {sa}, step {data['early_step']}",
            f"seed {sa}, step {data['final_step']}",
            "early vs final checkpoint",
        ),
    ]
    im = None
    for ax, (m, ylab, xlab, title) in zip(axes, panels, strict=True):
        z = np.array([_none_to_nan(r) for r in m], dtype=float)
        im = ax.imshow(z, vmin=0, vmax=1, cmap="viridis", origin="upper")
        ax.set_xticks(range(z.shape[1]), labels[: z.shape[1]], rotation=45)
        ax.set_yticks(range(z.shape[0]), labels[: z.shape[0]])
        ax.set_xlabel(xlab)
        ax.set_ylabel(ylab)
        ax.set_title(f"linear CKA, {title}")
        for i in range(z.shape[0]):
            for j in range(z.shape[1]):
                if np.isfinite(z[i, j]):
                    colour = "black" if z[i, j] > 0.6 else "white"
                    ax.text(j, i, f"{z[i, j]:.2f}", ha="center", va="center", fontsize=7, c=colour)
    if im is not None:
        fig.colorbar(im, ax=list(axes), shrink=0.8)
    fig.suptitle(f"{data.get('task', '')}: layer x layer linear CKA")
    return fig


def plot_rank_collapse_depth(data: dict[str, Any]) -> Figure:
    """Relative residual from token-uniform rank 1 (log scale) against depth, one line per
    path (Dong et al. 2021, their figure 2 in spirit)."""
    fig = _figure((6.4, 4.4), "constrained")
    ax = fig.subplots()
    layers = data["layers"]
    for path, values in data["paths"].items():
        v = np.array(_none_to_nan(values))
        v = np.where(v > 0, v, np.nan)  # exact zeros (underflow) cannot be drawn on log axes
        ax.plot(layers, v, marker="o", ms=3, label=data.get("labels", {}).get(path, path))
    ax.set_yscale("log")
    ax.set_xlabel("depth (blocks)")
    ax.set_ylabel("relative residual ‖X − 1xᵀ‖_F / ‖X‖_F")
    ax.set_title(f"rank collapse at initialisation (mean of {len(data.get('seeds', []))} seeds)")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    return fig


def plot_sae_geometry_spectrum(data: dict[str, Any]) -> Figure:
    """Left: eigenvalue spectra of each layer's SAE decoder (log-log). Right: fitted
    power-law slope per layer."""
    fig = _figure((10, 4.2), "constrained")
    left, right = fig.subplots(1, 2)
    labels = data["labels"]
    for lab, lam in zip(labels, data["spectra"], strict=True):
        v = np.array(lam, dtype=float)
        v = v[v > 0]
        left.loglog(np.arange(1, len(v) + 1), v, label=lab)
    left.set_xlabel("rank")
    left.set_ylabel("eigenvalue")
    left.set_title(f"SAE decoder spectra (d_sae {data['d_sae']}, k {data['k']})")
    left.legend(fontsize=8)
    slopes = _none_to_nan(data["slopes"])
    right.plot(range(len(labels)), slopes, marker="o")
    right.set_xticks(range(len(labels)), labels)
    right.set_xlabel("layer (L0 = embeddings)")
    right.set_ylabel("power-law slope of the spectrum")
    right.set_title("spectrum slope per layer")
    right.grid(alpha=0.3)
    return fig
