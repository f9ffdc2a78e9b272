"""Benchmark: batched activation patching vs one forward per intervention; DAS over all
hooks stacked vs one hook at a time. Both in one run, on the same model and pairs.

Patching: a TL-native Dyck transformer (random weights: the cost does not depend on them),
``--pairs`` same-length minimal pairs for ``stack_top``, every (hook, position) site of the
residual stream before the first block and after every block, plus every head of each
block's ``attn.hook_z``. The baseline runs one forward of one row per (pair, site) with one
edit hook (the plain reference the tests compare with); the batched sweep runs the patched
rows in batches of ``--batch-size``. Reported: the ratio of median times (baseline / batched)
and the largest |difference| of the patched metric over all sites (goal: >= 10x on the CPU at
<= 1e-5).

DAS: ``--das-steps`` steps of a rank-``--rank`` search at every residual hook, as one
stacked program (every step one forward of hooks x batch rows) vs one search per hook;
reported: the time ratio and the largest |difference| between the learned bases (the stacked
loss gives every hook the gradient it would get alone).

    python benchmarks/patching.py           # full size
    python benchmarks/patching.py --quick   # tiny, seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from hierlens.analysis.causal.alignment import DASConfig, fit_subspaces, hook_widths
from hierlens.analysis.causal.patching import activation_patching, query_metric
from hierlens.analysis.causal.sites import capture_sites, editing_hooks, forward_logits
from hierlens.models import ModelConfig, build_transformer, get_task
from hierlens.models.hooks import resolve_hook_names
from hierlens.models.tasks.variables import minimal_pairs


def one_forward_per_intervention(model, pairs, hooks) -> dict[str, torch.Tensor]:
    """Denoising, logit difference: one row, one site, one forward at a time."""
    L = pairs.base_lengths
    _, donor = capture_sites(model, pairs.base, L, hooks)
    out = {}
    B, T = pairs.base.shape
    for name in hooks:
        act = donor[name]
        heads = act.shape[2] if act.dim() == 4 else 0
        res = torch.full((B, T, heads) if heads else (B, T), float("nan"), dtype=torch.float64)
        for b in range(B):
            for t in range(int(pairs.base_query[b]) + 1):
                for k in range(max(heads, 1)):

                    def edit(x, b=b, t=t, k=k, heads=heads, act=act):
                        x = x.clone()
                        if heads:
                            x[0, t, k] = act[b, t, k]
                        else:
                            x[0, t] = act[b, t]
                        return x

                    with torch.no_grad(), editing_hooks(model, {name: edit}):
                        logits = forward_logits(model, pairs.source[b : b + 1], L[b : b + 1])
                    value = query_metric(
                        logits, pairs.base_query[b : b + 1], pairs.base_label[b : b + 1],
                        pairs.source_label[b : b + 1], pairs.candidates[b : b + 1], "logit_diff",
                    )  # fmt: skip
                    if heads:
                        res[b, t, k] = float(value)
                    else:
                        res[b, t] = float(value)
        out[name] = res
    return out


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true")
    p.add_argument("--pairs", type=int, default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--rank", type=int, default=2)
    p.add_argument("--das-steps", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    n_pairs = args.pairs or (4 if args.quick else 16)
    n_layers = args.layers or (2 if args.quick else 4)
    repeats = args.repeats or (1 if args.quick else 3)
    steps = args.das_steps or (10 if args.quick else 100)
    task = get_task("dyck", n_types=2, max_depth=6, min_length=4, max_length=24)
    config = ModelConfig.for_task(task, d_model=64, n_layers=n_layers, n_heads=4, seed=0)
    model = build_transformer(config, device="cpu").eval()
    pairs = minimal_pairs(task, "stack_top", n_pairs, seed=0)
    resid = ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(n_layers)]
    hooks = resolve_hook_names(model, resid + ["blocks.*.attn.hook_z"])

    def batched():
        return activation_patching(model, pairs, hooks, batch_size=args.batch_size).patched

    fast, got = _median_time(batched, repeats)
    slow, ref = _median_time(lambda: one_forward_per_intervention(model, pairs, hooks), repeats)
    n_sites = sum(int((~torch.isnan(v)).sum()) for v in ref.values())
    diff = max(float((got[h] - ref[h]).abs().nan_to_num(0).max()) for h in hooks)

    das_cfg = DASConfig(rank=args.rank, steps=steps, batch_size=32, n_pairs=n_pairs)
    das_pairs = minimal_pairs(task, "stack_top", max(64, 4 * n_pairs), seed=1)
    widths = hook_widths(model, das_pairs, resid, "query", torch.device("cpu"))

    def stacked():
        return fit_subspaces(model, das_pairs, resid, widths, das_cfg, torch.device("cpu"))[0]

    def one_by_one():
        out = {}
        for h in resid:
            out.update(
                fit_subspaces(model, das_pairs, [h], widths, das_cfg, torch.device("cpu"))[0]
            )
        return out

    t_stack, b_stack = _median_time(stacked, repeats)
    t_each, b_each = _median_time(one_by_one, repeats)
    basis_diff = max(float((b_stack[h] - b_each[h]).abs().max()) for h in resid)
    print(json.dumps({
        "model": f"TL-native Dyck transformer, {n_layers} layers, d_model 64, 4 heads (CPU, {args.threads} thread)",
        "pairs": n_pairs, "hooks": len(hooks), "patched_sites": n_sites,
        "patching_batched_s": round(fast, 3), "patching_one_per_intervention_s": round(slow, 3),
        "patching_speedup": round(slow / fast, 1), "patching_max_abs_diff": diff,
        "das_hooks": len(resid), "das_steps": steps, "das_rank": args.rank,
        "das_stacked_s": round(t_stack, 3), "das_one_hook_at_a_time_s": round(t_each, 3),
        "das_speedup": round(t_each / t_stack, 2), "das_max_basis_diff": basis_diff,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
