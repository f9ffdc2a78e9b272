"""The ``causal-dyck`` figure: where a Dyck transformer uses the stack, by intervention.

Trains a causal transformer on Dyck-(2, 6) (or loads the newest checkpoint of ``run_dir``
when it has one), then for the task's variables (:mod:`hierlens.models.tasks.variables`):
``stack_top`` activation patching of the residual stream (hook x position before the
query), and DAS (Geiger et al. 2024) at every residual hook with its controls (random
subspace, random-weights model) beside the probe accuracy for the same variable at the same
hook (:func:`hierlens.analysis.causal.sweep.causal_sweep`).
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .plot import _figure

__all__ = ["causal_dyck", "plot_causal_dyck"]


def causal_dyck(
    steps: int = 1500,
    d_model: int = 64,
    n_layers: int = 2,
    n_pairs: int = 64,
    das_pairs: int = 600,
    das_steps: int = 300,
    rank: int = 1,
    *,
    seed: int = 0,
    run_dir: str | None = None,
    device: str | None = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Train (or load) the Dyck transformer and run the causal sweep; returns
    ``closing_acc``, ``hooks``, ``patching`` and ``das`` records (JSON-ready)."""
    from hierlens.models import ModelConfig, TrainConfig, build_transformer, get_task, open_run
    from hierlens.models.run_load import latest_valid_checkpoint

    from ..causal.alignment import DASConfig
    from ..causal.sweep import PatchConfig, causal_sweep

    task = get_task("dyck", n_types=2, max_depth=6, min_length=4, max_length=24)
    if run_dir is not None and latest_valid_checkpoint(run_dir) is not None:
        run = open_run(run_dir)
        model, task = run.load_model(device=device), run.task
    else:
        config = ModelConfig.for_task(
            task, d_model=d_model, n_layers=n_layers, n_heads=4, seed=seed
        )
        model = build_transformer(config, device=device)
        cfg = TrainConfig(steps=steps, batch_size=64, lr=3e-3, warmup_steps=min(50, steps),
                          eval_every=0, checkpoint_every=steps, train_pool=8000, seed=seed,
                          device=device)  # fmt: skip
        from hierlens.models import train

        with tempfile.TemporaryDirectory() as tmp:
            train(model, task, cfg, run_dir or tmp, model_config=config, progress=progress)
    model.eval()
    closing = task.evaluate(model, "test_id", 1000, device=device)["closing_acc"]
    n = int(model.cfg.n_layers)
    hooks = ["blocks.0.hook_resid_pre"]
    for i in range(n):
        hooks += [f"blocks.{i}.hook_resid_mid", f"blocks.{i}.hook_resid_post"]
    result = causal_sweep(
        model, task, ["depth", "stack_top"], hooks, patch=PatchConfig(n_pairs=n_pairs, seed=seed),
        das=DASConfig(rank=rank, steps=das_steps, lr=0.02, n_pairs=das_pairs, seed=seed),
        progress=progress,
    )  # fmt: skip
    return {"closing_acc": closing, "rank": rank, **result}


def plot_causal_dyck(data: dict[str, Any]) -> Figure:
    """Left: ``stack_top`` patching effect per hook x position before the query. Right: held-out
    DAS IIA per hook for each variable, beside probe accuracy and the random-weights control."""
    fig = _figure((10.5, 3.8))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    rec = next((r for r in data["patching"] if r["variable"] == "stack_top"), None)
    if rec is not None:
        z = np.array([rec["effect"][h] for h in rec["hooks"]], dtype=float)
        im = left.imshow(z, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
        left.set_yticks(range(len(rec["hooks"])), [h.replace("blocks.", "") for h in rec["hooks"]],
                        fontsize=7)  # fmt: skip
        left.set_xticks(range(len(rec["offsets"])), [str(o) for o in rec["offsets"]], fontsize=7)
        left.set_xlabel("position relative to the query")
        left.set_title(f"stack_top: denoising patching ({rec['n_pairs']} pairs)", fontsize=9)
        fig.colorbar(im, ax=left, fraction=0.046)
    hooks = data["hooks"]
    x = np.arange(len(hooks))
    colors = {"depth": "tab:blue", "stack_top": "tab:orange"}
    for var in sorted({r["variable"] for r in data["das"]}):
        rs = {r["hook"]: r for r in data["das"] if r["variable"] == var}
        c = colors.get(var)
        right.plot(x, [rs[h]["das"] for h in hooks], "o-", color=c, label=f"{var}: DAS IIA")
        right.plot(x, [rs[h]["probe"] for h in hooks], "s:", color=c, label=f"{var}: probe acc.")
        right.plot(x, [rs[h]["random_model"] for h in hooks], "x--", color=c, alpha=0.5,
                   label=f"{var}: DAS, random weights")  # fmt: skip
    if data["das"]:
        right.axhline(data["das"][0]["chance"], color="0.6", lw=0.8, label="chance")
    right.set_xticks(x, [h.replace("blocks.", "").replace("hook_", "") for h in hooks], fontsize=7,
                     rotation=20)  # fmt: skip
    right.set_ylim(-0.02, 1.02)
    right.set_title(f"rank-{data['rank']} DAS per hook (closing acc. {data['closing_acc']:.3f})",
                    fontsize=9)  # fmt: skip
    right.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return fig
