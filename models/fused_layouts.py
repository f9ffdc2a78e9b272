"""Where the real tokens of padded batches sit, for the fused forward of :mod:`.fused`.

With ``keep`` the fused forward computes the norms, products and MLPs on the real tokens of a
padded batch only, packed as rows, and attention on padded layouts of rows of similar length
(attention costs grow with the square of the padded width):

- :class:`Grouped`: one model's ``(B, T)`` batch; its rows are sorted by sequence length so
  that each of :data:`ATTENTION_GROUPS` attention groups is a contiguous run of rows;
- :class:`StackRows`: a stack of S models' ``(S, B, T)`` batches as one flat run of rows,
  model by model (no model is padded to another's count of real tokens). Products run per
  model on its run of rows (:func:`segment_linear`) and attention on groups of
  :data:`STACK_GROUP_SEQUENCES` sequences sorted by length across all models.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["ATTENTION_GROUPS", "STACK_GROUP_SEQUENCES", "Grouped", "StackRows", "segment_linear"]

# One model's attention runs on this many groups of rows of similar length, each padded to
# its own longest row (benchmarks/train_loop.py measures the gain).
ATTENTION_GROUPS = 4
# A stack attends in groups of this many sequences of similar length, taken across its
# models. For a step of 8 Dyck models (benchmarks/train_many.py's setting, one thread) on the
# padded per-model layout: 16: 137 ms, 32: 123 ms, 64: 123 ms, 128: 163 ms; on the flat rows
# of StackRows 16, 32, 64 and 128 all measured 114-130 ms (within this machine's noise).
STACK_GROUP_SEQUENCES = 32


@dataclasses.dataclass(frozen=True)
class _Group:
    start: int  # its rows are [start, stop) of the rows in group order
    stop: int
    dst: torch.Tensor  # (stop - start,) flat slots in its (rows, width) layout
    shape: tuple[int, int]
    masked_keys: torch.Tensor | None  # (rows, width), True at padding (bidirectional)


def _groups(
    seq_rank: torch.Tensor,
    col: torch.Tensor,
    sorted_lengths: list[int],
    per: int,
    mask: bool,
) -> tuple[_Group, ...]:
    """Attention groups of ``per`` sequences each, over rows in group order: ``seq_rank`` the
    rank of each row's sequence by length (longest first), ``col`` its position."""
    groups, start = [], 0
    for first in range(0, len(sorted_lengths), per):
        count = min(per, len(sorted_lengths) - first)
        tokens = sum(sorted_lengths[first : first + count])
        if tokens == 0:
            continue
        width = sorted_lengths[first]
        dst = (seq_rank[start : start + tokens] - first) * width + col[start : start + tokens]
        masked = None
        if mask:
            slots = torch.zeros(count * width, dtype=torch.bool, device=col.device)
            masked = ~slots.index_fill(0, dst, True).view(count, width)
        groups.append(_Group(start, start + tokens, dst, (count, width), masked))
        start += tokens
    return tuple(groups)


def _attend_groups(groups: tuple[_Group, ...], rows: torch.Tensor, fn: Callable) -> torch.Tensor:
    """``fn(padded, masked_keys)`` on each group's padded layout of ``rows`` ``(n, k)`` (in
    group order), packed back to ``(n, k_out)``."""
    k = rows.shape[-1]
    outs = []
    # split, not slices: the backward of a slice fills a zero tensor of all rows per group
    parts = rows.split([g.stop - g.start for g in groups])
    for g, part in zip(groups, parts, strict=True):
        padded = rows.new_zeros(g.shape[0] * g.shape[1], k)
        padded = padded.index_copy(0, g.dst, part).view(*g.shape, k)
        out = fn(padded, g.masked_keys)
        outs.append(out.reshape(-1, out.shape[-1]).index_select(0, g.dst))
    return torch.cat(outs) if len(outs) > 1 else outs[0]


def _rank(lengths: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Each sequence's rank by length (longest first, ties in order) and the sorted lengths."""
    order = torch.argsort(lengths, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=lengths.device)
    return rank, lengths[order].tolist()


@dataclasses.dataclass(frozen=True)
class Grouped:
    """The real tokens of one model's padded ``(B, T)`` batch in group order (rows sorted by
    length, longest first, then by position): ``keep`` lists their flat indices into
    ``B * T`` in that order, ``inverse`` maps back to the caller's order."""

    keep: torch.Tensor
    inverse: torch.Tensor
    groups: tuple[_Group, ...]

    @classmethod
    def build(cls, keep: torch.Tensor, shape: tuple[int, int], n_groups: int, mask: bool):
        batch, width = shape
        row, col = keep // width, keep % width
        rank, sorted_lengths = _rank(torch.bincount(row, minlength=batch))
        perm = torch.argsort(rank[row] * width + col)
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(len(perm), device=keep.device)
        per = -(-batch // n_groups)
        groups = _groups(rank[row][perm], col[perm], sorted_lengths, per, mask)
        return cls(keep[perm], inverse, groups)

    def attend(self, rows: torch.Tensor, fn: Callable) -> torch.Tensor:
        """``fn(padded, masked_keys)`` on each group's padded layout, packed back."""
        return _attend_groups(self.groups, rows, fn)


@dataclasses.dataclass(frozen=True)
class StackRows:
    """The real tokens of a stack's ``(S, B, T)`` batches as ``M`` flat rows, model by model
    (model ``i``'s rows are ``[bounds[i], bounds[i + 1])``, in the order of its ``keep``).

    ``model`` ``(M,)``: each row's model; ``slots`` ``(M,)``: its flat index into the
    caller's ``(S * n)`` ``keep`` entries (where its logits go); ``token_slots`` ``(M,)``: its
    flat index into ``S * B * T``; ``positions`` ``(M,)``: its position in its sequence.
    Attention runs on groups of ``rows_per_group`` sequences sorted by length across models;
    ``order`` puts the rows in group order and ``inverse`` back."""

    bounds: tuple[int, ...]
    model: torch.Tensor
    slots: torch.Tensor
    token_slots: torch.Tensor
    positions: torch.Tensor
    order: torch.Tensor
    inverse: torch.Tensor
    groups: tuple[_Group, ...]

    @classmethod
    def build(
        cls,
        keep: torch.Tensor,
        real: torch.Tensor,
        mask: bool,
        rows_per_group: int | None = None,
    ) -> StackRows:
        """``keep`` ``(S, n)`` flat slots into each model's ``(B, T)`` batch (entries at
        padding are skipped), ``real`` ``(S, B, T)`` True at real tokens; ``mask``: build
        key masks for bidirectional attention."""
        per = STACK_GROUP_SEQUENCES if rows_per_group is None else rows_per_group
        n_models, batch, width = real.shape
        is_real = real.reshape(n_models, -1).gather(1, keep)  # (S, n)
        slots = is_real.reshape(-1).nonzero().squeeze(1)  # ascending: model by model
        counts = is_real.sum(1).tolist()
        bounds = [0]
        for c in counts:
            bounds.append(bounds[-1] + c)
        model = slots // keep.shape[1]
        slot = keep.reshape(-1)[slots]  # into the model's own B * T
        seq = model * batch + slot // width  # into S * B
        col = slot % width
        rank, sorted_lengths = _rank(real.sum(-1).reshape(-1))
        order = torch.argsort(rank[seq] * width + col)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order), device=keep.device)
        groups = _groups(rank[seq][order], col[order], sorted_lengths, per, mask)
        token_slots = model * (batch * width) + slot
        return cls(tuple(bounds), model, slots, token_slots, col, order, inverse, groups)

    def attend(self, rows: torch.Tensor, fn: Callable) -> torch.Tensor:
        """``fn(padded, masked_keys)`` on each group's padded layout of ``rows`` ``(M, k)``,
        back in row order."""
        out = _attend_groups(self.groups, rows.index_select(0, self.order), fn)
        return out.index_select(0, self.inverse)

    def per_row(self, param: torch.Tensor) -> torch.Tensor:
        """A stacked ``(S, d)`` parameter as each row's ``(M, d)``."""
        return param.index_select(0, self.model)


class _SegmentLinear(torch.autograd.Function):
    """``x[a:b] @ weight[i].T + bias[i]`` for each model's run of rows ``[a, b)``, written
    into one output (no padding to a common count, no concatenation)."""

    @staticmethod
    def forward(ctx, x, weight, bias, bounds):
        out = x.new_empty(x.shape[0], weight.shape[1])
        for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
            if b > a:
                if bias is None:
                    torch.mm(x[a:b], weight[i].t(), out=out[a:b])
                else:
                    torch.addmm(bias[i], x[a:b], weight[i].t(), out=out[a:b])
        ctx.save_for_backward(x, weight)
        ctx.bounds = bounds
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        bounds = ctx.bounds
        grad = grad.contiguous()
        gx = gw = gb = None
        spans = [(i, a, b) for i, (a, b) in enumerate(zip(bounds, bounds[1:])) if b > a]
        if ctx.needs_input_grad[0]:
            gx = x.new_empty(x.shape)  # the runs cover every row
            for i, a, b in spans:
                torch.mm(grad[a:b], weight[i], out=gx[a:b])
        if ctx.needs_input_grad[1]:
            gw = torch.zeros_like(weight)
            for i, a, b in spans:
                torch.mm(grad[a:b].t(), x[a:b], out=gw[i])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = grad.new_zeros(weight.shape[0], weight.shape[1])
            for i, a, b in spans:
                torch.sum(grad[a:b], 0, out=gb[i])
        return gx, gw, gb, None


def segment_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, bounds: tuple[int, ...]
) -> torch.Tensor:
    """Rows ``[bounds[i], bounds[i + 1])`` of ``x`` ``(M, in)`` through model ``i``'s
    ``weight`` ``(S, out, in)`` and ``bias`` ``(S, out)``: ``(M, out)``."""
    if torch.is_autocast_enabled(x.device.type):  # mixed dtypes: the plain ops autocast
        parts = [
            F.linear(x[a:b], weight[i], None if bias is None else bias[i])
            for i, (a, b) in enumerate(zip(bounds, bounds[1:]))
        ]
        return torch.cat(parts)
    return _SegmentLinear.apply(x, weight, bias, bounds)
