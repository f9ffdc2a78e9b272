"""Attribution patching: the first-order (gradient) estimate of every site's patching effect.

Follows Nanda, "Attribution Patching: Activation Patching At Industrial Scale" (2023) and
Syed, Rager & Conmy, "Attribution Patching Outperforms Automated Circuit Discovery" (2023):
the metric after patching site ``s`` of the recipient run is estimated as
``M(recipient) + (a_donor[s] - a_recipient[s]) . dM/da[s]``, with the gradient taken on the
recipient run. One forward and one backward give every site at once. The gradient at each
hook is read through a zero tensor added to the activation, so the estimate needs no
parameter to require gradients and leaves the model untouched.

:func:`agreement` compares the estimate with real patching (:mod:`.patching`): Pearson and
Spearman correlations of the per-site effects and whether the top site is the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import stats

from hierlens.core.device import model_device
from hierlens.models.tasks.variables import MinimalPairs

from .patching import Direction, Metric, PatchingResult, _check, _unpatched, query_metric
from .sites import check_hooks, check_layout, editing_hooks, forward_logits

__all__ = ["agreement", "attribution_patching"]


def attribution_patching(
    model: torch.nn.Module,
    pairs: MinimalPairs,
    hooks: str | Sequence[str],
    *,
    direction: Direction = "denoise",
    metric: Metric = "logit_diff",
    per_head: bool = True,
    device: str | torch.device | None = None,
) -> PatchingResult:
    """The gradient estimate of :func:`~.patching.activation_patching`'s result (same
    arguments, same layout): ``patched[hook]`` ``(B, T[, H])`` holds the estimated metric."""
    _check(pairs, direction, metric)
    names = check_hooks(model, hooks)
    dev = model_device(model, device)
    lengths = pairs.base_lengths.to(dev)
    runs = _unpatched(model, pairs, names, direction, metric, dev)
    recipient, donor = runs.recipient, runs.donor
    zeros: dict[str, torch.Tensor] = {}
    acts: dict[str, torch.Tensor] = {}

    def tap(name: str):
        def fn(x: torch.Tensor) -> torch.Tensor:
            check_layout(name, x, recipient)
            acts[name] = x.detach()
            zeros[name] = torch.zeros_like(x, requires_grad=True)
            return x + zeros[name]

        return fn

    with torch.enable_grad(), editing_hooks(model, {h: tap(h) for h in names}):
        logits = forward_logits(model, recipient, lengths)
        value = query_metric(logits, *runs.answers, metric)
        grads = torch.autograd.grad(value.sum(), [zeros[h] for h in names], allow_unused=True)
    base = value.detach().double().cpu()
    B, T = pairs.base.shape
    valid = (torch.arange(T)[None, :] < pairs.base_lengths[:, None]).to(dev)
    patched = {}
    for name, grad in zip(names, grads):
        delta = donor[name] - acts[name]
        g = torch.zeros_like(delta) if grad is None else grad
        prod = (delta * g).double()
        if per_head and prod.dim() == 4:
            est = prod.flatten(3).sum(3)
            mask = valid[:, :, None].expand_as(est)
        else:
            est = prod.flatten(2).sum(2)
            mask = valid
        out = base.to(dev)[(...,) + (None,) * (est.dim() - 1)] + est
        patched[name] = torch.where(mask, out, torch.nan).cpu()
    return PatchingResult(names, direction, metric, patched, runs.m_clean, runs.m_corrupt)


def agreement(real: PatchingResult, estimate: PatchingResult) -> dict[str, float | bool]:
    """How well attribution patching ranks the sites real patching measured: Pearson and
    Spearman correlations of the mean (over pairs) per-site effects, and whether both put
    the same site first (largest absolute effect)."""
    if real.hooks != estimate.hooks:
        raise ValueError("the two results cover different hooks")
    a = np.concatenate([real.effect(h).flatten().numpy() for h in real.hooks])
    b = np.concatenate([estimate.effect(h).flatten().numpy() for h in real.hooks])
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 2:
        raise ValueError("fewer than two sites to compare")
    pearson = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    spearman = (
        float(stats.spearmanr(a, b).statistic) if a.std() > 0 and b.std() > 0 else float("nan")
    )
    return {
        "pearson": pearson,
        "spearman": spearman,
        "same_top_site": bool(np.argmax(np.abs(a)) == np.argmax(np.abs(b))),
        "n_sites": int(len(a)),
    }
