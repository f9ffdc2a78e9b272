"""Isolated runs for tree projections [Murty2023a]: packed rows, length buckets.

An isolated run of a span shows the model only the span's tokens and the tokens that belong to
no word. A hidden token is a key of no query and its output is never read, so it is dropped
rather than masked: each row is *packed* to the tokens it may see, in their original order and
with their original position ids, and rows of equal length run together (no padding, no mask).
:func:`isolated_run` does the packing and the bucketing; a backend supplies the forward pass
of one bucket:

- :class:`NativeRows` runs the blocks of a TL-native bridge through
  :class:`~hierlens.analysis.trees.block_runner.BlockRunner` (fused kernels), sharing the
  blocks below ``mask_from_layer`` with the full-context run;
- :class:`hierlens.analysis.trees.forward_runner.ForwardRows` runs the model's own forward
  (any ``TransformerBridge``, or a plain ``nn.Module`` that takes an attention mask).

Both expose ``full(tokens, is_pad)`` (the full-context run of a group of sentences, ``(S, T)``
-> ``(S, T, d)``) and ``isolated(src, keep, pool_weight=None)`` (rows of those sentences that
see only the tokens where ``keep`` ``(R, T)`` holds; ``src`` ``(R,)`` the sentence of each
row).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .block_runner import BlockRunner

__all__ = ["NativeRows", "isolated_run"]

# Isolated rows run in groups of equal length (no padding, no mask); a length with fewer rows
# than this joins the next length up (its rows padded) so that no forward pass is tiny.
_MIN_BUCKET_ROWS = 32

# (part (P,) row indices, order (P, W) original position of each packed slot, valid (P, W)
# True at real slots or None when no row is padded) -> outputs (P, W, d)
RunPacked = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def isolated_run(
    run_packed: RunPacked, keep: torch.Tensor, pool_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Run rows that see only the tokens where ``keep`` ``(R, T)`` holds, packed.

    Each row is packed to its kept tokens (original order; ``order`` gives their original
    positions, which the backend uses as position ids) and the rows are sorted by length; rows
    of equal length run as one call of ``run_packed``. A length with fewer than
    :data:`_MIN_BUCKET_ROWS` rows joins the next longer one; its rows are right-padded and
    ``valid`` marks the real slots (the backend hides the pad keys where that matters).

    Returns the outputs ``(R, T, d)`` at the original positions (zeros at dropped ones), or,
    with ``pool_weight`` ``(R, T)`` (zero wherever ``keep`` is False), only their weighted
    sums over the tokens, ``(R, d)`` in float64. A backend of S stacked models returns
    ``(S, P, W, d)`` per call, and the result then has the same leading ``S`` axis.
    """
    rows, seq = keep.shape
    lengths = keep.sum(1)
    result: torch.Tensor | None = None
    by_length = torch.argsort(lengths, stable=True)
    for part in _length_buckets(lengths[by_length].tolist(), by_length):
        part_keep, part_len = keep[part], lengths[part]
        width = int(part_len.max())
        # Kept positions first, in order (a stable sort of "dropped" flags), then the rest.
        order = torch.sort((~part_keep).to(torch.uint8), dim=1, stable=True).indices[:, :width]
        valid = None
        if not bool((part_len == width).all()):
            valid = torch.arange(width, device=keep.device)[None, :] < part_len[:, None]
        out = run_packed(part, order, valid)
        if valid is not None:
            out = out * valid[..., None].to(out.dtype)
        lead, d = out.shape[:-3], out.shape[-1]
        if pool_weight is not None:
            if result is None:
                result = torch.zeros(*lead, rows, d, dtype=torch.float64, device=keep.device)
            weight = pool_weight[part].gather(1, order).to(torch.float64)  # (P, W)
            flat = out.to(torch.float64).reshape(-1, *out.shape[-3:])  # (L, P, W, d)
            pooled = [torch.bmm(weight[:, None, :], o)[:, 0] for o in flat]
            result[..., part, :] = torch.stack(pooled).view(*lead, len(part), d)
        else:
            if result is None:
                result = out.new_zeros(*lead, rows, seq, d)
            where = order[..., None].expand(*lead, -1, -1, d)
            result[..., part, :, :] = out.new_zeros(*lead, len(part), seq, d).scatter_(
                -2, where, out
            )
    assert result is not None  # keep has at least one row
    return result


def _length_buckets(sorted_lengths: list[int], order: torch.Tensor) -> list[torch.Tensor]:
    """Split row indices ``order`` (sorted by length, ``sorted_lengths``) into runs of equal
    length, each run with fewer than :data:`_MIN_BUCKET_ROWS` rows merged into the next."""
    parts, start = [], 0
    for end in range(1, len(sorted_lengths) + 1):
        boundary = end == len(sorted_lengths) or sorted_lengths[end] != sorted_lengths[end - 1]
        if boundary and (end - start >= _MIN_BUCKET_ROWS or end == len(sorted_lengths)):
            parts.append(order[start:end])
            start = end
    return parts


class NativeRows:
    """The fused-kernel backend for TL-native bridges: blocks ``0..layer`` through
    :class:`BlockRunner`, the key mask applied from block ``mask_from`` on (blocks below it
    are run once per sentence and shared by its isolated rows)."""

    def __init__(self, runner: BlockRunner, *, layer: int, mask_from: int, causal: bool) -> None:
        self.runner = runner
        self.device = runner.device
        self.layer, self.mask_from, self.causal = layer, mask_from, causal
        self._shared: torch.Tensor | None = None

    def full(self, tokens: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
        """Full-context outputs ``(S, T, d)`` of right-padded ``tokens`` ``(S, T)``."""
        pad_mask = None if self.causal or not bool(is_pad.any()) else is_pad
        run = self.runner
        self._shared = run.blocks(run.embed(tokens), 0, self.mask_from - 1, pad_mask)
        return run.blocks(self._shared, self.mask_from, self.layer, pad_mask)

    def isolated(
        self, src: torch.Tensor, keep: torch.Tensor, pool_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Isolated rows of the sentences ``src`` ``(R,)`` of the last :meth:`full` call; see
        :func:`isolated_run` for ``keep``, ``pool_weight`` and the result."""
        assert self._shared is not None, "full() runs first"
        hidden = self._shared[..., src, :, :]  # (R, T, d), or (S, R, T, d) for a stack
        lead, d = hidden.shape[:-3], hidden.shape[-1]

        def run_packed(part, order, valid):
            where = order[..., None].expand(*lead, -1, -1, d)
            packed = hidden[..., part, :, :].gather(-2, where)
            masked = None if valid is None or self.causal else ~valid
            return self.runner.blocks(packed, self.mask_from, self.layer, masked, positions=order)

        return isolated_run(run_packed, keep, pool_weight)
