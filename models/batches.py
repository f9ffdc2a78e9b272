"""Training batches: a pre-sampled pool of a task's training examples on the device, and
the batch of every step drawn from it as a pure function of ``(seed, step)`` (so a resumed
run sees the batches an uninterrupted one would), whole or as one rank's shard."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from hierlens.core import distributed as D

from .tasks.base import IGNORE_INDEX, Task, pad_examples
from .train_config import TrainConfig

__all__ = ["Batch", "BatchSampler", "next_token_targets"]


def next_token_targets(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Language-model targets for padded ``(N, T)`` tokens: position ``t`` predicts token
    ``t + 1``; the last real position and the padding get :data:`IGNORE_INDEX`."""
    targets = torch.full_like(tokens, IGNORE_INDEX)
    targets[:, :-1] = tokens[:, 1:]
    pos = torch.arange(tokens.shape[1])
    targets[pos[None, :] >= (lengths[:, None] - 1)] = IGNORE_INDEX
    return targets


class Batch(NamedTuple):
    """One step's batch on the device: ``tokens``, ``targets`` and ``mask`` ``(B, T)``
    (right-padded, ``mask`` True at real tokens), ``n_tokens`` real tokens, and ``keep``:
    ``None`` or the flat indices ``(n,)`` into ``B * T`` of the real tokens (for the
    unpadded forward)."""

    tokens: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    n_tokens: int
    keep: torch.Tensor | None = None


class BatchSampler:
    """Draws training batches from a padded pool of examples; the rows of step ``s`` are a
    pure function of ``(seed, s)`` and each batch is cut to its longest sequence.

    The pool lives on the training device, so a step moves only its row indices there (no
    per-step host allocations or copies of batch tensors). ``unpad``: also give the flat
    indices of the real tokens (``Batch.keep``); ``width_multiple``: round each batch's
    width up to a multiple of this (few distinct shapes, for CUDA graphs).
    """

    def __init__(
        self,
        task: Task,
        config: TrainConfig,
        device: torch.device,
        *,
        unpad: bool = False,
        width_multiple: int = 1,
    ) -> None:
        examples = task.sample(config.train_pool, "train", config.seed)
        pool = pad_examples(examples, task.pad_id)
        targets = pool.targets
        if config.loss_on == "sequence":
            targets = next_token_targets(pool.tokens, pool.lengths)
        self.tokens = pool.tokens.to(device)
        self.targets = targets.to(device)
        self._host_targets = targets  # for counting trained targets without a device sync
        self.lengths = pool.lengths.numpy()
        self.seed = config.seed
        self.batch_size = config.batch_size
        self.device = device
        self.unpad = unpad
        self.width_multiple = width_multiple

    def rows(self, step: int) -> np.ndarray:
        return np.random.default_rng([self.seed, step, 0xBA7C]).integers(
            0, len(self.lengths), self.batch_size
        )

    def _width(self, lengths: np.ndarray) -> int:
        width = int(lengths.max())
        m = self.width_multiple
        return min(-(-width // m) * m, self.tokens.shape[1])

    def _batch(self, rows: np.ndarray, width: int, n_tokens: int) -> Batch:
        lengths = self.lengths[rows]
        real = np.arange(width)[None, :] < lengths[:, None]  # (B, T) on the host
        nb = self.device.type == "cuda"
        idx = torch.from_numpy(rows).to(self.device, non_blocking=nb)
        keep = None
        if self.unpad:
            keep = torch.from_numpy(np.flatnonzero(real)).to(self.device, non_blocking=nb)
        return Batch(
            self.tokens[idx, :width],
            self.targets[idx, :width],
            torch.from_numpy(real).to(self.device, non_blocking=nb),
            n_tokens,
            keep,
        )

    def __call__(self, step: int) -> Batch:
        """The batch of ``step``."""
        rows = self.rows(step)
        lengths = self.lengths[rows]
        return self._batch(rows, self._width(lengths), int(lengths.sum()))

    def shard(self, step: int, rank: int, world: int) -> tuple[Batch, int]:
        """Rank ``rank``'s contiguous slice of step ``step``'s global batch (the rows a
        single process would draw, padded to the same width), with ``n_tokens`` the real
        tokens of the whole global batch, and the number of trained targets in the global
        batch."""
        rows = self.rows(step)
        lengths = self.lengths[rows]
        width = self._width(lengths)
        n_targets = int((self._host_targets[torch.from_numpy(rows), :width] != IGNORE_INDEX).sum())
        a, b = D.shard_range(len(rows), rank, world)
        return self._batch(rows[a:b], width, int(lengths.sum())), n_targets
