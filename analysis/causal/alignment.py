"""Distributed alignment search (DAS): a learned orthonormal rank-k subspace per hook.

Follows Geiger, Wu, Potts, Icard & Goodman, "Finding Alignments Between Interpretable Causal
Variables and Distributed Neural Representations" (CLeaR 2024): the subspace in which an
interchange intervention (:mod:`.interchange`) makes the model's output follow the causal
model's counterfactual is learned by gradient descent on the cross-entropy of the
intervened output (over the task's candidate outputs) against the counterfactual output.
The subspace of a hook of width ``d`` is the span of ``R = Q^T``, ``Q`` the orthonormal
factor of the QR decomposition of a free ``(d, k)`` matrix: any rank-k orthonormal frame,
as DAS's rotation restricted to its first ``k`` rows.

All hooks train as one stacked program: every step runs one forward of ``H x batch`` rows
(row group ``h`` intervened at hook ``h`` with its own subspace) and one backward, and the
one optimizer step of :class:`hierlens.core.optim.StackedAdamW` updates every hook's matrix
(Adam, no weight decay or clipping).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from hierlens.core.config import Config
from hierlens.core.device import model_device
from hierlens.core.optim import StackedAdamW
from hierlens.core.validate import check_int, check_number
from hierlens.models.tasks.variables import MinimalPairs

from .interchange import (
    Alignment,
    aligned_positions,
    check_basis,
    interchange_accuracy,
    intervened_logits,
    source_activations,
)
from .sites import check_hooks

__all__ = ["DASConfig", "DASResult", "das", "fit_subspaces", "parse_positions", "random_basis"]


def parse_positions(text: str) -> str | tuple[int, ...]:
    """``"query"`` or a tuple of absolute positions from ``"3,4"`` (a ``ValueError``
    otherwise)."""
    if not isinstance(text, str):
        raise TypeError(f"positions must be a string ('query' or '3,4'), got {text!r}")
    if text == "query":
        return text
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(
            f"positions must be 'query' or comma-separated integers, got {text!r}"
        ) from None
    if not out:
        raise ValueError("positions must name at least one position")
    return out


@dataclasses.dataclass(frozen=True)
class DASConfig(Config):
    """Settings of a DAS search.

    Parameters:
        rank: dimension k of the learned subspace at every hook.
        positions: "query" (each input's query position) or comma-separated absolute
            positions such as "3,4" (pairs of equal length only).
        steps: optimizer steps.
        batch_size: pairs per step (every hook sees the same pairs).
        lr: Adam learning rate of the free matrices.
        test_fraction: fraction of the pairs held out to measure IIA.
        seed: initialisation, train/test split and batch order.
        n_pairs: minimal pairs a sweep draws per variable (:func:`das` itself takes pairs).
        controls: sweeps also search a random-weights copy of the model.
    """

    rank: int = 1
    positions: str = "query"
    steps: int = 200
    batch_size: int = 64
    lr: float = 0.01
    test_fraction: float = 0.3
    seed: int = 0
    n_pairs: int = 400
    controls: bool = True

    def __post_init__(self) -> None:
        for name in ("rank", "steps", "batch_size", "n_pairs"):
            check_int(f"DASConfig.{name}", getattr(self, name))
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(
                f"DASConfig.test_fraction must be in (0, 1), got {self.test_fraction!r}"
            )
        check_number("DASConfig.lr", self.lr, strict=True)
        parse_positions(self.positions)


@dataclasses.dataclass
class DASResult:
    """One DAS search: per hook, the learned basis and the IIA on train and held-out pairs.

    Attributes:
        variable: the variable searched for.
        hooks: the hook names.
        rank: the subspace rank.
        bases: ``{hook: (rank, d)}`` orthonormal rows.
        iia_train, iia_test: ``{hook: float}``.
        loss: the training loss every 10 steps (summed over hooks).
    """

    variable: str
    hooks: list[str]
    rank: int
    bases: dict[str, torch.Tensor]
    iia_train: dict[str, float]
    iia_test: dict[str, float]
    loss: list[float]


def orthonormal(free: torch.Tensor) -> torch.Tensor:
    """Orthonormal rows ``(..., k, d)`` spanning the columns of ``free`` ``(..., d, k)``."""
    q, r = torch.linalg.qr(free)
    # fix the signs so the map is smooth and unique: R's diagonal positive
    sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return (q * sign[..., None, :]).transpose(-1, -2)


def random_basis(width: int, rank: int, seed: int = 0) -> torch.Tensor:
    """A uniformly random orthonormal ``(rank, width)`` basis (the same-rank control)."""
    if rank > width:
        raise ValueError(f"rank {rank} exceeds the width {width}")
    g = torch.Generator().manual_seed(seed)
    return orthonormal(torch.randn(width, rank, generator=g))


def fit_subspaces(
    model: torch.nn.Module,
    train: MinimalPairs,
    hooks: Sequence[str],
    widths: dict[str, int],
    config: DASConfig,
    device: torch.device,
    progress: bool = False,
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Train one rank-``config.rank`` subspace per hook, all hooks in one stacked program;
    returns ``({hook: (rank, d)}, losses)``."""
    free = {  # each hook's start depends on the seed and the hook only
        h: torch.nn.Parameter(_start(widths[h], config.rank, config.seed, h).to(device))
        for h in hooks
    }
    # Adam (the one optimizer step, no weight decay or clipping) over every hook's matrix:
    # elementwise, so each hook moves as it would searched alone
    opt = StackedAdamW(free, stacked=False)
    rng = np.random.default_rng(config.seed)
    counterfactual = (train.candidates == train.counterfactual[:, None]).float().argmax(1)
    positions = parse_positions(config.positions)
    losses: list[float] = []
    was_training = model.training
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        for step in tqdm(range(config.steps), disable=not progress, desc="DAS"):
            idx = torch.from_numpy(
                rng.choice(len(train), min(config.batch_size, len(train)), replace=False)
            )
            part = train.subset(idx)
            with torch.no_grad():
                src = source_activations(model, part, hooks, positions, device)
            bases = {h: orthonormal(free[h]) for h in hooks}
            logits = intervened_logits(model, part, hooks, src, bases, positions)
            target = counterfactual[idx].to(device).repeat(len(hooks))
            per_row = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), target, reduction="none"
            )
            # a sum over hooks of each hook's mean: every hook gets the gradient it would get
            # alone, so the stacked search equals one search per hook
            loss = per_row.reshape(len(hooks), -1).mean(1).sum()
            loss.backward()
            opt.step(config.lr)
            opt.zero_grad()
            if step % 10 == 0 or step == config.steps - 1:
                losses.append(float(loss.detach()))
    finally:
        for p in params:
            p.requires_grad_(True)
        model.train(was_training)
    with torch.no_grad():
        return {h: orthonormal(free[h]).detach().cpu() for h in hooks}, losses


def _start(width: int, rank: int, seed: int, hook: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(hook.encode()))
    return torch.randn(width, rank, generator=g)


def hook_widths(
    model: torch.nn.Module, pairs: MinimalPairs, hooks: Sequence[str], positions, device
) -> dict[str, int]:
    """Flattened feature width of each hook's activation (one forward of one pair)."""
    with torch.no_grad():
        src = source_activations(model, pairs.subset(slice(0, 1)), hooks, positions, device)
    return {h: int(src[h].shape[-1]) for h in hooks}


def das(
    model: torch.nn.Module,
    pairs: MinimalPairs,
    hooks: str | Sequence[str],
    config: DASConfig | None = None,
    *,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> DASResult:
    """Learn a rank-``config.rank`` subspace at every hook for ``pairs.variable`` and measure
    its IIA on the training and held-out pairs.

    Raises ``ValueError`` before training for an unknown hook, pairs that differ in more than
    their variable, positions outside the inputs, or a rank larger than a hook's width.
    """
    config = config or DASConfig()
    if not isinstance(config, DASConfig):
        raise TypeError(f"config must be a DASConfig, got {type(config).__name__}")
    if not isinstance(pairs, MinimalPairs):
        raise TypeError(f"pairs must be MinimalPairs, got {type(pairs).__name__}")
    pairs.validate()
    names = check_hooks(model, hooks)
    positions = parse_positions(config.positions)
    aligned_positions(pairs, positions)
    dev = model_device(model, device)
    widths = hook_widths(model, pairs, names, positions, dev)
    for h in names:
        if config.rank > widths[h]:
            raise ValueError(f"rank {config.rank} is larger than the width of {h!r} ({widths[h]})")
    train, test = pairs.split(config.test_fraction, seed=config.seed)
    bases, losses = fit_subspaces(model, train, names, widths, config, dev, progress)
    for h in names:
        check_basis(bases[h], widths[h], h)
    aligns = [Alignment(h, positions, bases[h]) for h in names]
    iia_train = interchange_accuracy(model, train, aligns, device=dev, check_minimal=False)
    iia_test = interchange_accuracy(model, test, aligns, device=dev, check_minimal=False)
    return DASResult(
        variable=pairs.variable,
        hooks=names,
        rank=config.rank,
        bases=bases,
        iia_train=dict(zip(names, iia_train)),
        iia_test=dict(zip(names, iia_test)),
        loss=losses,
    )
