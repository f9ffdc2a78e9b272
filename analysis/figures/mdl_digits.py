"""The experiment behind ``mdl-digits`` (shared by ``examples/mdl_digits.py`` and ``hierlens
reproduce``): description length of TopK SAEs vs dictionary width on 8x8 digits, with the
atoms of the MDL-selected, the narrowest and the widest SAE (Ayonrinde, Pearce & Sharkey
2024, "Interpretability as Compression"). Returns the JSON-serialisable data that
:func:`hierlens.analysis.figures.plot.plot_mdl_digits` draws.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hierlens.sae import (
    SAETrainConfig,
    fit_mdl_sae,
)
from hierlens.sae.digits import load_digits_images, load_mnist


def mdl_curve(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per width of an :class:`~hierlens.sae.MDLSelection` table: the shortest description
    among the SAEs meeting the bound (``bits``, ``k``, ``fvu``, ``name``; None when none)."""
    out = []
    for width in sorted({r["width"] for r in table}):
        rows = [r for r in table if r["width"] == width and r["eligible"]]
        best = min(rows, key=lambda r: r["bits"]) if rows else None
        out.append(
            {
                "width": width,
                "bits": None if best is None else best["bits"],
                "k": None if best is None else best["k"],
                "fvu": None if best is None else best["fvu"],
                "name": None if best is None else best["name"],
            }
        )
    return out


def _representative(table: list[dict[str, Any]], width: int) -> str:
    """The SAE of a width shown beside the selected one: its shortest description among
    those meeting the bound, else its most accurate one."""
    rows = [r for r in table if r["width"] == width]
    eligible = [r for r in rows if r["eligible"]]
    if eligible:
        return min(eligible, key=lambda r: r["bits"])["name"]
    return min(rows, key=lambda r: r["fvu_unquantised"])["name"]


def mdl_digits(
    widths: Sequence[int] = (8, 16, 32, 64, 128, 256),
    ks: Sequence[int] = (2, 4, 8, 16, 32),
    *,
    max_fvu: float = 0.2,
    steps: int = 800,
    batch_size: int = 256,
    lr: float = 3e-3,
    seed: int = 0,
    mnist_images: str | os.PathLike | None = None,
    n_atoms: int = 64,
    out_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """TopK SAEs of every ``widths`` x ``ks`` trained in one fused pass on scikit-learn's 8x8
    digits (or MNIST IDX images), each measured by its description length on a held-out
    fifth at the precision the bound ``max_fvu`` allows [Ayonrinde2024].

    Returns ``max_fvu``, ``steps``, ``n_train``/``n_test``/``pixels``, ``curve`` (per width:
    see :func:`mdl_curve`), ``selected`` (name) and ``selected_length`` (its description
    length fields), ``side`` (image side) and ``atoms``: for the narrowest, the selected and
    the widest SAE, ``{"title", "name", "n_latents", "atoms"}`` with up to ``n_atoms``
    decoder rows (most used first), each ``side * side`` pixels. SAEs are saved under
    ``out_dir/saes`` when ``out_dir`` is given.
    """
    if mnist_images is not None:
        images, _ = load_mnist(mnist_images)
    else:
        images, _ = load_digits_images()
    side = int(math.isqrt(images.shape[1]))
    perm = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    n_test = images.shape[0] // 5
    test, train_set = images[perm[:n_test]], images[perm[n_test:]]
    fit = fit_mdl_sae(
        train_set,
        widths=list(widths),
        ks=list(ks),
        architecture="topk",
        max_fvu=max_fvu,
        eval_activations=test,
        config=SAETrainConfig(
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            device=device,
            log_every=max(1, steps // 10),
            dead_after_tokens=20_000,
        ),
        out_dir=None if out_dir is None else Path(out_dir) / "saes",
        progress=progress,
    )
    table = fit.selection.table
    points = mdl_curve(table)
    best = fit.selection.best_name
    shown = [
        ("narrowest", _representative(table, min(widths))),
        ("MDL-selected", best),
        ("widest", _representative(table, max(widths))),
    ]
    panels = []
    for title, name in shown:
        atoms = fit.saes[name].W_dec.detach().float().cpu()
        n = min(atoms.shape[0], n_atoms)
        if name in fit.selection.lengths:
            usage = fit.selection.lengths[name].firing_probability
            order = torch.as_tensor(usage).argsort(descending=True)[:n]
        else:
            order = torch.arange(n)
        panels.append(
            {
                "title": title,
                "name": name,
                "n_latents": int(atoms.shape[0]),
                "atoms": atoms[order].tolist(),
            }
        )
    length = fit.selection.best_length
    return {
        "max_fvu": max_fvu,
        "steps": steps,
        "n_train": int(train_set.shape[0]),
        "n_test": int(test.shape[0]),
        "pixels": int(images.shape[1]),
        "curve": points,
        "selected": best,
        "selected_length": {
            "bits": length.bits,
            "which_bits": length.which_bits,
            "value_bits": length.value_bits,
            "l0": length.l0,
            "fvu": length.fvu,
            "raw_bits": length.raw_bits,
        },
        "side": side,
        "atoms": panels,
    }
