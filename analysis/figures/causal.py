"""The causal figures: where a trained transformer uses its task's variables, by intervention.

:func:`causal_study` is what the ``causal-dyck`` and ``causal-question`` figures share: for
a model and the variables of its task (:mod:`hierlens.models.tasks.variables`) it runs
activation patching of the residual stream (hook x position before the query) for the
variables whose pairs change the output, DAS (Geiger et al. 2024) at every residual hook with
its controls (random subspace, random-weights model) beside the probe accuracy for the same
variable at the same hook (:func:`hierlens.analysis.causal.sweep.causal_sweep`), the
interchange map (IIA of swapping the whole activation at one hook and one position,
:func:`interchange_map`) and, per variable, a plain statement of where it is used and
whether the probes agree (:func:`variable_statement`).

``causal-dyck`` trains a causal transformer on Dyck-(2, 6) (or loads the newest checkpoint
of ``run_dir``); ``causal-question`` (:mod:`.causal_question`) does the same on question
formation.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from hierlens.core.device import model_device
from hierlens.core.validate import check_int

from ..causal.sites import capture_sites, check_hooks, editing_hooks, forward_logits
from .plot import _figure

__all__ = [
    "causal_dyck",
    "causal_study",
    "interchange_map",
    "plot_causal",
    "plot_causal_dyck",
    "residual_hooks",
    "train_or_load",
    "variable_statement",
]

#: IIA (and probe accuracy) from which a variable counts as used (decodable) at a hook
USED = 0.9


def residual_hooks(n_layers: int) -> list[str]:
    """The residual stream of a TL-native transformer: before block 0, then after each
    block's attention and after each block (``2 * n_layers + 1`` hooks)."""
    hooks = ["blocks.0.hook_resid_pre"]
    for i in range(int(n_layers)):
        hooks += [f"blocks.{i}.hook_resid_mid", f"blocks.{i}.hook_resid_post"]
    return hooks


def train_or_load(
    task: Any,
    model: Mapping[str, Any],
    training: Mapping[str, Any],
    *,
    run_dir: str | None = None,
    device: str | None = "cpu",
    progress: bool = False,
) -> tuple[torch.nn.Module, Any]:
    """``(model, task)``: the newest valid checkpoint of ``run_dir`` (and its run's task)
    when it has one, otherwise a transformer built from ``ModelConfig.for_task(task,
    **model)`` and trained with ``hierlens.models.train`` under ``TrainConfig(**training)``
    (into ``run_dir``, or a temporary folder). The model is returned in eval mode."""
    from hierlens.models import ModelConfig, TrainConfig, build_transformer, open_run, train
    from hierlens.models.run_load import latest_valid_checkpoint

    if run_dir is not None and latest_valid_checkpoint(run_dir) is not None:
        run = open_run(run_dir)
        net, task = run.load_model(device=device), run.task
    else:
        config = ModelConfig.for_task(task, **dict(model))
        net = build_transformer(config, device=device)
        cfg = TrainConfig(**{"device": device, **dict(training)})
        with tempfile.TemporaryDirectory() as tmp:
            train(net, task, cfg, run_dir or tmp, model_config=config, progress=progress)
    net.eval()
    return net, task


def interchange_map(
    model: torch.nn.Module, pairs: Any, hooks: Sequence[str], *, batch_size: int = 256
) -> torch.Tensor:
    """Interchange hits ``(H, B, T)`` of swapping the *whole* activation at one hook and one
    position: entry ``[h, b, p]`` is 1.0 when pair ``b``'s base, run with hook ``h``'s
    activation at position ``p`` replaced by its source's, outputs (argmax over the
    candidates at the query) the counterfactual, 0.0 when not, and NaN where nothing is
    measured: past the input and, for a causal model, after the query (which cannot change
    it). Averaged over pairs, a row is the interchange-intervention accuracy (Geiger et al.
    2021) per position: activation patching with IIA as its metric, defined also for
    variables whose pairs keep the output.

    Needs same-length pairs (base and source share length and query). The sources run once;
    then every (pair, position) row runs once per hook, ``H x batch_size`` rows per forward
    (row group ``h`` edited at hook ``h`` only), each batch cut after its last query."""
    names = check_hooks(model, hooks)
    if not pairs.same_length:
        raise ValueError("an interchange map needs pairs of equal length (same_length=True)")
    check_int("batch_size", batch_size)
    dev = model_device(model)
    B, T = pairs.base.shape
    H = len(names)
    _, src = capture_sites(model, pairs.source.to(dev), pairs.source_lengths.to(dev), names)
    last = pairs.base_query if pairs.causal else pairs.base_lengths - 1
    pos = torch.arange(T)
    b_all, p_all = (pos[None, :] <= last[:, None]).nonzero(as_tuple=True)  # (R,) rows
    out = torch.full((H, B, T), float("nan"), dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(b_all), batch_size):
            b, p = b_all[start : start + batch_size], p_all[start : start + batch_size]
            n = len(b)
            cut = int(pairs.base_query[b].max()) + 1 if pairs.causal else T
            tokens = pairs.base[b, :cut].repeat(H, 1).to(dev)
            lengths = pairs.base_lengths[b].clamp(max=cut).repeat(H).to(dev)
            bd, pd = b.to(dev), p.to(dev)

            def edit(h: int, name: str, n=n, bd=bd, pd=pd):
                def fn(x: torch.Tensor) -> torch.Tensor:
                    rows = torch.arange(h * n, (h + 1) * n, device=x.device)
                    return x.index_put((rows, pd), src[name][bd, pd].to(x.dtype))

                return fn

            with editing_hooks(model, {name: edit(h, name) for h, name in enumerate(names)}):
                logits = forward_logits(model, tokens, lengths)
            q = pairs.base_query[b].repeat(H).to(dev)
            cand = pairs.candidates[b].repeat(H, 1).to(dev)
            at = logits[torch.arange(H * n, device=dev), q].gather(1, cand)
            pred = cand.gather(1, at.argmax(-1, keepdim=True))[:, 0]
            hit = (pred == pairs.counterfactual[b].repeat(H).to(dev)).double().cpu()
            out[:, b, p] = hit.reshape(H, n)
    return out


def _at(hits: torch.Tensor, positions: torch.Tensor) -> list[float | None]:
    """Mean over pairs of ``hits`` ``(H, B, T)`` at each pair's own position ``(B,)``."""
    vals = hits[:, torch.arange(hits.shape[1]), positions]
    return [None if bool(v.isnan().all()) else float(v.nanmean()) for v in vals]


def _no_intervention(model: torch.nn.Module, pairs: Any) -> dict[str, float]:
    """Fraction of pairs whose unintervened base output is the counterfactual
    (``baseline``) and the base's own label (``base_acc``)."""
    dev = model_device(model)
    with torch.no_grad():
        logits = forward_logits(model, pairs.base.to(dev), pairs.base_lengths.to(dev))
    at = logits[torch.arange(len(pairs), device=dev), pairs.base_query.to(dev)]
    cand = pairs.candidates.to(dev)
    pred = cand.gather(1, at.gather(1, cand).argmax(-1, keepdim=True))[:, 0].cpu()
    return {
        "baseline": float((pred == pairs.counterfactual).double().mean()),
        "base_acc": float((pred == pairs.base_label).double().mean()),
    }


def causal_study(
    model: torch.nn.Module,
    task: Any,
    variables: Sequence[str],
    hooks: Sequence[str],
    *,
    n_pairs: int = 64,
    das_pairs: int = 600,
    das_steps: int = 300,
    rank: int = 1,
    span: int = 8,
    anchors: Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Patching, DAS with controls, interchange maps and statements for ``variables``.

    Returns the :func:`~hierlens.analysis.causal.sweep.causal_sweep` records (``task``,
    ``hooks``, ``patching``, ``das``) plus ``rank``, ``interchange`` (per variable: the mean
    :func:`interchange_map` per hook at ``offsets`` before the query, and at each named
    anchor position), ``controls`` (per variable: the no-intervention ``baseline`` and the
    model's ``base_acc`` on the DAS pairs) and ``statements`` (:func:`variable_statement`).
    ``anchors`` maps a name to a function of the pairs giving ``(B,)`` base positions (e.g.
    the question's main auxiliary)."""
    from hierlens.models.tasks.variables import causal_model, minimal_pairs

    from ..causal.alignment import DASConfig
    from ..causal.sweep import PatchConfig, causal_sweep

    patch = PatchConfig(n_pairs=n_pairs, seed=seed, span=span)
    das = DASConfig(rank=rank, steps=das_steps, lr=0.02, n_pairs=das_pairs, seed=seed)
    result = causal_sweep(model, task, list(variables), list(hooks), patch=patch, das=das,
                          progress=progress)  # fmt: skip
    cm = causal_model(task)
    result.update({"rank": rank, "interchange": [], "controls": [], "statements": []})
    for v in variables:
        pairs = minimal_pairs(cm, v, n_pairs, split=patch.split, seed=patch.seed)
        hits = interchange_map(model, pairs, result["hooks"])
        width = min(span, int(pairs.base_query.min()) + 1)
        offsets = list(range(-(width - 1), 1))
        per_offset = [_at(hits, pairs.base_query + o) for o in offsets]  # [offset][hook]
        rec = {
            "variable": v,
            "n_pairs": len(pairs),
            "offsets": offsets,
            "by_offset": {h: [row[i] for row in per_offset] for i, h in enumerate(result["hooks"])},
        }
        rec["at"] = {
            name: dict(zip(result["hooks"], _at(hits, fn(pairs))))
            for name, fn in (anchors or {}).items()
        }
        result["interchange"].append(rec)
        das_set = minimal_pairs(cm, v, das_pairs, split=patch.split, seed=seed + 1)
        result["controls"].append({"variable": v, **_no_intervention(model, das_set)})
    result["statements"] = [variable_statement(result, v) for v in variables]
    return result


def _short(hook: str) -> str:
    return hook.replace("blocks.", "").replace("hook_", "")


def variable_statement(data: Mapping[str, Any], variable: str) -> dict[str, Any]:
    """Where ``variable`` is used (DAS IIA at the query per hook, and the interchange map's
    best hook and position) against where a probe decodes it, as numbers and one sentence.

    ``used``: the hooks where an interchange at the query reaches held-out IIA >= 0.9, with
    the learned rank-k subspace or the whole activation (``used_subspace``: the subspace
    alone); ``decodable``: the hooks with probe accuracy >= 0.9; ``agree``: ``used`` and
    ``decodable`` are the same hooks; ``text``: the statement."""
    rs = [r for r in data["das"] if r["variable"] == variable]
    if not rs:
        raise ValueError(f"no DAS records for {variable!r}")
    best = max(rs, key=lambda r: r["das"])
    best_probe = max(rs, key=lambda r: r["probe"] if r["probe"] is not None else -1.0)
    used = [r["hook"] for r in rs if max(r["das"], r.get("full") or 0.0) >= USED]
    best_full = max(rs, key=lambda r: r.get("full") or 0.0)
    decodable = [r["hook"] for r in rs if r["probe"] is not None and r["probe"] >= USED]
    rand = [r["random_model"] for r in rs if r["random_model"] is not None]
    out: dict[str, Any] = {
        "variable": variable,
        "best_hook": best["hook"],
        "best_das": best["das"],
        "best_probe_hook": best_probe["hook"],
        "best_probe": best_probe["probe"],
        "best_full_hook": best_full["hook"],
        "best_full": best_full.get("full"),
        "used": used,
        "used_subspace": [r["hook"] for r in rs if r["das"] >= USED],
        "decodable": decodable,
        "agree": used == decodable,
        "random_model_max": max(rand) if rand else None,
        "random_subspace_max": max(r["random_subspace"] for r in rs),
        "chance": best["chance"],
    }
    imap = next((r for r in data.get("interchange", []) if r["variable"] == variable), None)
    where = ""
    if imap is not None:
        cells = [(v, h, o) for h, row in imap["by_offset"].items()
                 for o, v in zip(imap["offsets"], row) if v is not None]  # fmt: skip
        v, h, o = max(cells, key=lambda c: (c[0], -abs(c[2])))
        out.update({"map_best": v, "map_hook": h, "map_offset": o})
        where = f"; swapping the whole activation is best at {_short(h)}, position {o} ({v:.2f})"
        for name, per_hook in imap.get("at", {}).items():
            hv = [(x, hh) for hh, x in per_hook.items() if x is not None]
            if hv:
                x, hh = max(hv)
                out.setdefault("anchors", {})[name] = {"hook": hh, "iia": x}
                where += f", at the {name} {x:.2f} ({_short(hh)})"
    verdict = "the probe agrees" if out["agree"] else "the probe disagrees"
    extra = []
    if not out["agree"]:
        only_probe = [_short(h) for h in decodable if h not in used]
        only_das = [_short(h) for h in used if h not in decodable]
        if only_probe:
            extra.append("decodable but not used at " + ", ".join(only_probe))
        if only_das:
            extra.append("used but not decodable at " + ", ".join(only_das))
    full = (
        f", whole activation {best_full['full']:.2f}" if best_full.get("full") is not None else ""
    )
    out["text"] = (
        f"{variable}: at the query, IIA >= {USED} at {', '.join(map(_short, used)) or 'no hook'} "
        f"(rank-{best.get('rank', '?')} DAS best at {_short(best['hook'])}, {best['das']:.2f}"
        f"{full}){where}; probe best "
        f"at {_short(best_probe['hook'])} ({best_probe['probe']:.2f}; decodable at "
        f"{', '.join(map(_short, decodable)) or 'no hook'}): {verdict}"
        + (f" ({'; '.join(extra)})" if extra else "")
    )
    return out


def plot_causal(data: dict[str, Any], patch_variable: str, title: str) -> Figure:
    """Left: ``patch_variable``'s patching effect per hook x position before the query. Right:
    held-out DAS IIA per hook for each variable, beside probe accuracy and the random-weights
    control; ``title`` heads the right panel."""
    fig = _figure((10.5, 3.8))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    rec = next((r for r in data["patching"] if r["variable"] == patch_variable), None)
    if rec is not None:
        z = np.array([rec["effect"][h] for h in rec["hooks"]], dtype=float)
        im = left.imshow(z, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
        left.set_yticks(range(len(rec["hooks"])), [h.replace("blocks.", "") for h in rec["hooks"]],
                        fontsize=7)  # fmt: skip
        left.set_xticks(range(len(rec["offsets"])), [str(o) for o in rec["offsets"]], fontsize=7)
        left.set_xlabel("position relative to the query")
        left.set_title(f"{patch_variable}: denoising patching ({rec['n_pairs']} pairs)", fontsize=9)
        fig.colorbar(im, ax=left, fraction=0.046)
    hooks = data["hooks"]
    x = np.arange(len(hooks))
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for i, var in enumerate(sorted({r["variable"] for r in data["das"]})):
        rs = {r["hook"]: r for r in data["das"] if r["variable"] == var}
        c = palette[i % len(palette)]
        right.plot(x, [rs[h]["das"] for h in hooks], "o-", color=c, label=f"{var}: DAS IIA")
        right.plot(x, [rs[h]["probe"] for h in hooks], "s:", color=c, label=f"{var}: probe acc.")
        right.plot(x, [rs[h]["random_model"] for h in hooks], "x--", color=c, alpha=0.5,
                   label=f"{var}: DAS, random weights")  # fmt: skip
    if data["das"]:
        right.axhline(data["das"][0]["chance"], color="0.6", lw=0.8, label="chance")
    right.set_xticks(x, [_short(h) for h in hooks], fontsize=7, rotation=20)
    right.set_ylim(-0.02, 1.02)
    right.set_title(title, fontsize=9)
    right.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return fig


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
    """Train (or load) the Dyck transformer and run :func:`causal_study` for ``depth`` and
    ``stack_top``; returns ``closing_acc`` and the study's records (JSON-ready)."""
    from hierlens.models import get_task

    task = get_task("dyck", n_types=2, max_depth=6, min_length=4, max_length=24)
    training = {"steps": steps, "batch_size": 64, "lr": 3e-3, "warmup_steps": min(50, steps),
                "eval_every": 0, "checkpoint_every": steps, "train_pool": 8000, "seed": seed}  # fmt: skip
    model, task = train_or_load(
        task, {"d_model": d_model, "n_layers": n_layers, "n_heads": 4, "seed": seed}, training,
        run_dir=run_dir, device=device, progress=progress,
    )  # fmt: skip
    closing = task.evaluate(model, "test_id", 1000, device=device)["closing_acc"]
    result = causal_study(
        model, task, ["depth", "stack_top"], residual_hooks(int(model.cfg.n_layers)),
        n_pairs=n_pairs, das_pairs=das_pairs, das_steps=das_steps, rank=rank, seed=seed,
        progress=progress,
    )  # fmt: skip
    return {"closing_acc": closing, **result}


def plot_causal_dyck(data: dict[str, Any]) -> Figure:
    """:func:`plot_causal` of the Dyck study: ``stack_top`` patching, DAS per hook."""
    title = f"rank-{data['rank']} DAS per hook (closing acc. {data['closing_acc']:.3f})"
    return plot_causal(data, "stack_top", title)
