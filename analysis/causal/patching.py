"""Activation patching over every hook point x position (x head), batched.

Follows Meng et al., "Locating and Editing Factual Associations in GPT" (NeurIPS 2022) and
the conventions of Heimersheim & Nanda, "How to use and interpret activation patching"
(2024). A minimal pair gives a *clean* input (the base) and a *corrupt* one (the source),
with different answers at the query position. The metric at the query is the logit
difference ``logit[clean answer] - logit[corrupt answer]`` or the probability of the clean
answer among the task's candidate outputs.

- *denoising*: run the corrupt input and patch in the clean activation at one site;
- *noising*: run the clean input and patch in the corrupt activation at one site.

A site is ``(hook, position)``, or ``(hook, position, head)`` for activations with a head
axis (``(batch, pos, heads, d_head)``, e.g. ``blocks.0.attn.hook_z``) when ``per_head``.
All patched copies of the pairs run as batches of rows, one row per (pair, site), with one
edit per hook that writes each row's donor activation at its own site: not one forward per
intervention. In a causal model a position after the query cannot change the query, so
those rows are not run (their effect is exactly the unpatched metric), and each batch of rows
(grouped by query position) is cut after its last query.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal, get_args

import torch
from tqdm.auto import tqdm

from hierlens.core.device import model_device
from hierlens.core.validate import check_choice, check_int
from hierlens.models.tasks.variables import MinimalPairs

from .sites import capture_sites, check_hooks, editing_hooks, forward_logits

__all__ = ["PatchingResult", "activation_patching", "query_metric", "sites_of"]

Direction = Literal["denoise", "noise"]
Metric = Literal["logit_diff", "prob"]
#: the values each patching setting takes
CHOICES = {"direction": get_args(Direction), "metric": get_args(Metric)}


@dataclasses.dataclass
class PatchingResult:
    """Per-pair metric after patching each site.

    Attributes:
        hooks: the hook names, in model order.
        direction: "denoise" or "noise".
        metric: "logit_diff" or "prob".
        patched: ``{hook: (B, T)}`` or ``{hook: (B, T, H)}`` float64 metric of each pair with
            that site patched (NaN at padding).
        clean, corrupt: ``(B,)`` float64 metric of the unpatched clean and corrupt runs.
    """

    hooks: list[str]
    direction: str
    metric: str
    patched: dict[str, torch.Tensor]
    clean: torch.Tensor
    corrupt: torch.Tensor

    def effect(self, hook: str) -> torch.Tensor:
        """Normalised effect of each site, averaged over pairs: the fraction of the mean
        clean-corrupt gap the patch closes (denoising) or opens (noising); ``(T,)`` or
        ``(T, H)``."""
        return self._normalised(self.patched[hook])

    def effect_before_query(self, hook: str, span: int, query: torch.Tensor) -> torch.Tensor:
        """:meth:`effect` with positions counted back from each pair's query (``query``
        ``(B,)``): ``(span,)`` or ``(span, H)``, entry ``j`` for ``span - 1 - j`` tokens
        before the query (the last entry is the query itself)."""
        B = self.patched[hook].shape[0]
        offsets = torch.arange(span)
        pos = query[:, None] - (span - 1 - offsets)[None, :]  # (B, span)
        vals = self.patched[hook][torch.arange(B)[:, None], pos.clamp(min=0)]
        vals[pos < 0] = float("nan")
        return self._normalised(vals)

    def _normalised(self, patched: torch.Tensor) -> torch.Tensor:
        """:meth:`effect` of the per-pair metrics ``patched`` ``(B, ...)`` (NaN ignored)."""
        gap = float((self.clean - self.corrupt).mean())
        if abs(gap) < 1e-12:
            raise ValueError("the clean and corrupt runs have the same mean metric")
        mean = torch.nanmean(patched, 0)
        if self.direction == "denoise":
            return (mean - self.corrupt.mean()) / gap
        return (self.clean.mean() - mean) / gap

    def table(self) -> dict[str, list]:
        """``{hook: effect as nested lists}`` (JSON-ready)."""
        return {h: self.effect(h).tolist() for h in self.hooks}


def query_metric(
    logits: torch.Tensor,
    query: torch.Tensor,
    clean_answer: torch.Tensor,
    corrupt_answer: torch.Tensor,
    candidates: torch.Tensor,
    metric: str,
) -> torch.Tensor:
    """The metric ``(R,)`` at each row's query from logits ``(R, T, V)``."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    at = logits[rows, query]
    if metric == "logit_diff":
        return (
            at.gather(1, clean_answer[:, None])[:, 0] - at.gather(1, corrupt_answer[:, None])[:, 0]
        )
    probs = at.gather(1, candidates).float().softmax(-1)
    return (probs * (candidates == clean_answer[:, None])).sum(1)


def _check(pairs: MinimalPairs, direction: str, metric: str) -> None:
    if not isinstance(pairs, MinimalPairs):
        raise TypeError(f"pairs must be MinimalPairs, got {type(pairs).__name__}")
    check_choice("direction", direction, CHOICES["direction"])
    check_choice("metric", metric, CHOICES["metric"])
    pairs.validate()  # each pair differs in its variable only
    if not pairs.same_length:
        raise ValueError(
            "patching every position needs pairs of equal length and query position "
            "(draw them with same_length=True)"
        )
    if bool((pairs.base_label == pairs.source_label).any()):
        raise ValueError(
            f"some {pairs.variable!r} pairs have the same answer on base and source, so the "
            "logit difference carries no signal; patch a variable whose pairs change the "
            "output, or measure interchange-intervention accuracy instead"
        )


def sites_of(
    model: torch.nn.Module,
    pairs: MinimalPairs,
    hooks: Sequence[str],
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Clean and corrupt activations at ``hooks`` and their logits."""
    lengths = pairs.base_lengths.to(device)
    clean_logits, clean = capture_sites(model, pairs.base.to(device), lengths, hooks)
    corrupt_logits, corrupt = capture_sites(model, pairs.source.to(device), lengths, hooks)
    return clean, corrupt, clean_logits, corrupt_logits


@dataclasses.dataclass
class _Unpatched:
    """The unpatched clean and corrupt runs of a set of pairs, and what patching needs of them.

    Attributes:
        clean, corrupt: ``{hook: (B, T, ...)}`` activations of the base and source runs.
        answers: query position, clean answer, corrupt answer ``(B,)`` and candidates
            ``(B, C)`` on the device: :func:`query_metric`'s arguments after the logits.
        m_clean, m_corrupt: ``(B,)`` float64 metric of each unpatched run (on the CPU).
        recipient: ``(B, T)`` tokens of the run that is patched (on the device).
        donor: the activations patched into it (clean when denoising, corrupt when noising).
    """

    clean: dict[str, torch.Tensor]
    corrupt: dict[str, torch.Tensor]
    answers: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
    m_clean: torch.Tensor
    m_corrupt: torch.Tensor
    recipient: torch.Tensor
    donor: dict[str, torch.Tensor]


def _unpatched(
    model: torch.nn.Module,
    pairs: MinimalPairs,
    hooks: Sequence[str],
    direction: str,
    metric: str,
    device: torch.device,
) -> _Unpatched:
    """Run the clean and corrupt inputs of ``pairs`` once and measure ``metric`` on each."""
    clean, corrupt, clean_logits, corrupt_logits = sites_of(model, pairs, hooks, device)
    answers = (
        pairs.base_query.to(device),
        pairs.base_label.to(device),
        pairs.source_label.to(device),
        pairs.candidates.to(device),
    )
    m_clean = query_metric(clean_logits, *answers, metric).double().cpu()
    m_corrupt = query_metric(corrupt_logits, *answers, metric).double().cpu()
    recipient, donor = (pairs.source, clean) if direction == "denoise" else (pairs.base, corrupt)
    return _Unpatched(clean, corrupt, answers, m_clean, m_corrupt, recipient.to(device), donor)


def activation_patching(
    model: torch.nn.Module,
    pairs: MinimalPairs,
    hooks: str | Sequence[str],
    *,
    direction: Direction = "denoise",
    metric: Metric = "logit_diff",
    per_head: bool = True,
    batch_size: int = 512,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> PatchingResult:
    """Patch every (hook, position[, head]) site of every pair and measure the metric.

    Args:
        model: a TransformerBridge or a plain module with named hook points.
        pairs: same-length minimal pairs (base = clean, source = corrupt) whose answers differ.
        hooks: hook names or glob patterns; every activation is ``(batch, pos, ...)``.
        direction: "denoise" (corrupt run, clean activation patched in) or "noise".
        metric: "logit_diff" or "prob" (see the module docstring).
        per_head: one site per head for ``(batch, pos, heads, d_head)`` activations.
        batch_size: patched rows per forward.
    Returns:
        a :class:`PatchingResult`.
    """
    _check(pairs, direction, metric)
    names = check_hooks(model, hooks)
    check_int("batch_size", batch_size)
    dev = model_device(model, device)
    B, T = pairs.base.shape
    runs = _unpatched(model, pairs, names, direction, metric, dev)
    q, ca, xa, cand = runs.answers
    m_clean, m_corrupt, recipient, donor = runs.m_clean, runs.m_corrupt, runs.recipient, runs.donor
    unpatched = m_corrupt if direction == "denoise" else m_clean
    lengths = pairs.base_lengths

    # rows: (pair, hook index, position, head); head -1 patches every head at once
    rows = []
    n_heads = {}
    for h, name in enumerate(names):
        act = donor[name]
        heads = act.shape[2] if (per_head and act.dim() == 4) else 0
        n_heads[name] = heads
        pos = torch.arange(T)
        valid = pos[None, :] < lengths[:, None]
        if pairs.causal:
            valid &= pos[None, :] <= pairs.base_query[:, None]
        b_idx, t_idx = valid.nonzero(as_tuple=True)
        if heads:
            k = torch.arange(heads)
            b_idx, t_idx, k_idx = (
                b_idx.repeat_interleave(heads), t_idx.repeat_interleave(heads), k.repeat(len(t_idx))
            )  # fmt: skip
        else:
            k_idx = torch.full_like(b_idx, -1)
        rows.append(torch.stack([b_idx, torch.full_like(b_idx, h), t_idx, k_idx], 1))
    table = torch.cat(rows)
    if pairs.causal:  # rows of similar query length share a batch, cut after their queries
        table = table[torch.argsort(pairs.base_query[table[:, 0]], stable=True)]
    table = table.to(dev)
    values = torch.empty(len(table), dtype=torch.float64)
    lengths_d = lengths.to(dev)
    chunks = range(0, len(table), batch_size)
    with torch.no_grad():
        for start in tqdm(chunks, disable=not progress, desc="patching"):
            part = table[start : start + batch_size]
            b, hk, t, k = part.unbind(1)
            edits = {}
            for h, name in enumerate(names):
                sel = (hk == h).nonzero()[:, 0]
                if len(sel):
                    edits[name] = _writer(donor[name], sel, b[sel], t[sel], k[sel], n_heads[name])
            width = int(q[b].max()) + 1 if pairs.causal else T
            with editing_hooks(model, edits):
                logits = forward_logits(model, recipient[b, :width], lengths_d[b].clamp(max=width))
            values[start : start + len(part)] = (
                query_metric(logits, q[b], ca[b], xa[b], cand[b], metric).double().cpu()
            )
    patched = {}
    table = table.cpu()
    for h, name in enumerate(names):
        heads = n_heads[name]
        shape = (B, T, heads) if heads else (B, T)
        out = torch.full(shape, float("nan"), dtype=torch.float64)
        if pairs.causal:  # positions after the query: exactly the unpatched metric
            pos = torch.arange(T)[None, :]
            after = (pos > pairs.base_query[:, None]) & (pos < lengths[:, None])
            fill = unpatched[:, None].expand(B, T)[after]
            out[after] = fill[:, None].expand(-1, heads) if heads else fill
        sel = table[:, 1] == h
        b, _, t, k = table[sel].unbind(1)
        if heads:
            out[b, t, k] = values[sel]
        else:
            out[b, t] = values[sel]
        patched[name] = out
    return PatchingResult(names, direction, metric, patched, m_clean, m_corrupt)


def _writer(donor: torch.Tensor, rows, pair, pos, head, heads: int):
    """The edit writing ``donor[pair, pos(, head)]`` into rows ``rows`` of a batch."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        if heads:
            x[rows, pos, head] = donor[pair, pos, head].to(x.dtype)
        else:
            x[rows, pos] = donor[pair, pos].to(x.dtype)
        return x

    return fn
