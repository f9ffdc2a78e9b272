"""Which activation rows an SAE trains on, and its FVU on rows it never saw.

:func:`prepare_rows` is what :func:`~hierlens.sae.train_saes` does to a tensor source before
training: it sets aside a seeded share of the rows (``SAETrainConfig.heldout_fraction``) and
caps the batch size at the number of rows left, with a warning naming both numbers (a batch
larger than the data only repeats rows: 252 rows in batches of 4096 cost sixteen passes per
step for the gradient of one). :func:`heldout_evaluation` then gives each trained SAE's FVU on
its training rows and on the held-out rows, so an SAE that memorised a small corpus shows it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from .metrics import evaluate_sae
from .train_config import SAETrainConfig

__all__ = ["HeldOut", "heldout_evaluation", "heldout_split", "prepare_rows", "split_evaluation"]

#: fewer held-out rows than this get a warning: their FVU is a noisy estimate
MIN_HELDOUT_ROWS = 100
#: rows of each split that :func:`heldout_evaluation` reads at most (a seeded subset beyond)
MAX_EVAL_ROWS = 100_000


class HeldOut:
    """The rows of a tensor source set aside from training: ``rows`` ``(m, d_in)`` (None when
    nothing was held out) and their indices ``index`` into the original tensor."""

    def __init__(self, rows: torch.Tensor | None, index: torch.Tensor | None) -> None:
        self.rows, self.index = rows, index

    def __len__(self) -> int:
        return 0 if self.rows is None else int(self.rows.shape[0])


def heldout_split(n_rows: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train_index, heldout_index)``: a seeded random split of ``range(n_rows)`` holding
    out ``round(fraction * n_rows)`` rows (at least 2 when ``fraction > 0``; none when fewer
    than 4 rows). Both index tensors are sorted, so training keeps the rows' order."""
    if not isinstance(n_rows, int) or n_rows < 0:
        raise ValueError(f"n_rows must be an int >= 0, got {n_rows!r}")
    n_held = 0 if fraction <= 0 or n_rows < 4 else max(2, round(fraction * n_rows))
    n_held = min(n_held, n_rows - 2) if n_held else 0
    gen = torch.Generator().manual_seed((seed * 7_919 + 17) % (2**63))
    perm = torch.randperm(n_rows, generator=gen)
    return perm[n_held:].sort().values, perm[:n_held].sort().values


def prepare_rows(source: Any, config: SAETrainConfig) -> tuple[Any, HeldOut, SAETrainConfig]:
    """The training source, the held-out rows and the config the trainer runs with.

    For a tensor source ``(n, d_in)``: ``config.heldout_fraction`` of the rows (seeded by
    ``config.seed``) are held out, and ``batch_size`` is capped at the number of training rows
    (a ``UserWarning`` names both numbers; with ``tokens=`` as the run length the steps grow
    to keep the rows consumed). Other sources (iterables, callables) are returned unchanged
    with nothing held out: their length is unknown.
    """
    if not isinstance(source, torch.Tensor) or source.dim() != 2:
        return source, HeldOut(None, None), config
    n = int(source.shape[0])
    if n == 0:
        return source, HeldOut(None, None), config  # the trainer reports the empty tensor
    train_idx, held_idx = heldout_split(n, config.heldout_fraction, config.seed)
    heldout = HeldOut(None, None)
    if config.heldout_fraction > 0 and len(held_idx) == 0:
        warnings.warn(
            f"{n} activation rows are too few to hold any out; training on all of them "
            "(no held-out FVU)",
            stacklevel=3,
        )
    if len(held_idx):
        heldout = HeldOut(source.index_select(0, held_idx.to(source.device)), held_idx)
        source = source.index_select(0, train_idx.to(source.device))
        if len(held_idx) < MIN_HELDOUT_ROWS:
            warnings.warn(
                f"only {len(held_idx)} activation rows are held out (heldout_fraction="
                f"{config.heldout_fraction} of {n}); their FVU is a noisy estimate",
                stacklevel=3,
            )
    rows = int(source.shape[0])
    if config.batch_size > rows:
        warnings.warn(
            f"batch_size {config.batch_size} is larger than the {rows} training rows; "
            f"using batch_size {rows} (a larger batch would only repeat rows)",
            stacklevel=3,
        )
        config = config.replace(batch_size=rows)
    return source, heldout, config


def _subset(rows: torch.Tensor, seed: int) -> torch.Tensor:
    if rows.shape[0] <= MAX_EVAL_ROWS:
        return rows
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(rows.shape[0], generator=gen)[:MAX_EVAL_ROWS].sort().values
    return rows.index_select(0, idx.to(rows.device))


@torch.no_grad()
def heldout_evaluation(
    saes: Sequence[Any], train_rows: Any, heldout: HeldOut, seed: int = 0
) -> list[dict[str, Any]]:
    """Per SAE (in order): ``sae`` (its index), ``fvu_train`` (on the training rows),
    ``fvu_heldout`` (on the held-out rows; None when none were held out), ``l0_heldout``,
    ``n_train_rows`` and ``n_heldout_rows``. Each split is read up to
    :data:`MAX_EVAL_ROWS` rows (a seeded subset beyond). Empty for a source that is not a
    tensor (nothing to evaluate on without reading the stream again)."""
    if not isinstance(train_rows, torch.Tensor) or train_rows.shape[0] < 2:
        return []
    train = _subset(train_rows, seed)
    held = _subset(heldout.rows, seed) if len(heldout) >= 2 else None
    out = []
    for i, sae in enumerate(saes):
        was_training = sae.training
        sae.eval()
        on_train = evaluate_sae(sae, train)
        on_held = evaluate_sae(sae, held) if held is not None else None
        sae.train(was_training)
        out.append(
            {
                "sae": i,
                "fvu_train": on_train["fvu"],
                "fvu_heldout": None if on_held is None else on_held["fvu"],
                "l0_heldout": None if on_held is None else on_held["l0"],
                "n_train_rows": int(train_rows.shape[0]),
                "n_heldout_rows": len(heldout),
            }
        )
    return out


def split_evaluation(
    saes: Sequence[Any], activations: torch.Tensor, config: SAETrainConfig
) -> list[dict[str, Any]]:
    """:func:`heldout_evaluation` of SAEs trained earlier by :func:`~hierlens.sae.train_saes`
    on ``activations`` with ``config``: the same seeded split is drawn again (it depends only
    on the number of rows, ``heldout_fraction`` and ``seed``)."""
    n = int(activations.shape[0])
    train_idx, held_idx = heldout_split(n, config.heldout_fraction, config.seed)
    held = HeldOut(activations[held_idx], held_idx) if len(held_idx) else HeldOut(None, None)
    return heldout_evaluation(saes, activations[train_idx], held, config.seed)
