"""The optimisation settings of the fused SAE trainer, as one frozen config."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from hierlens.core.config import Config
from hierlens.core.loggers import check_trackers


def _positive_int(name: str, value: Any, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        what = "a positive int or None" if optional else "a positive int"
        raise ValueError(f"SAETrainConfig.{name} must be {what}, got {value!r}")


def _positive_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


@dataclasses.dataclass(frozen=True)
class SAETrainConfig(Config):
    """How :func:`hierlens.sae.train_saes` optimises a list of SAEs and which rows of a tensor
    source it holds out (not which SAEs, on what data, or where it logs).

    Parameters:
        steps: optimiser steps; give exactly one of steps and tokens.
        tokens: activation rows to train on, rounded up to whole batches (instead of steps).
        batch_size: activation rows per step; capped at the number of training rows of a
            tensor source, with a warning (see :func:`hierlens.sae.heldout.prepare_rows`).
        heldout_fraction: share of a tensor source's rows held out from training (a seeded
            split, seed ``seed``) to measure each SAE's FVU on rows it never saw
            (``SAETrainResult.evaluation``); 0 trains on every row.
        lr: Adam learning rate: one for all SAEs, or one per SAE.
        betas: Adam's moment decay rates.
        eps: Adam's epsilon.
        warmup_steps: steps of linear learning-rate warmup from 0.
        decay_fraction: final share of the run over which the learning rate decays linearly
            to 0 ([Conerly2024] use 0.2).
        grad_clip: per-SAE gradient-norm clip (None: no clipping).
        dead_after_tokens: a latent that has not fired for this many tokens counts as dead
            in the metrics.
        dense_threshold: a latent firing on more than this share of a logging window's rows
            counts as dense.
        log_every: steps between metric records (the only host-device syncs of the loop;
            AuxK switches on at the first record that finds a dead latent).
        checkpoint_every: steps between checkpoints (None: only at the end, when the
            trainer is given a checkpoint folder).
        shuffle: draw rows from a tensor source in a random order.
        seed: seed of the row order of a tensor source.
        device: where to train (None: CUDA when available, else CPU).
        autocast: bf16 autocast of the forward pass (None: on CUDA only).
        compile: torch.compile each stack's forward.
        fused: fused Adam kernels (None: where PyTorch has one for the device and dtype).
        sparse_decode: TopK steps through the k active latents only (None: when 16 k <=
            d_sae); on the CPU the whole step runs on sparse kernels.
        log_to: experiment trackers that get every SAE's metric records (``sae<i>/<metric>``)
            as they are written, any of "tensorboard", "wandb", "mlflow" (the ``tracking``
            extra; see :mod:`hierlens.core.loggers`).
    """

    steps: int | None = None
    tokens: int | None = None
    batch_size: int = 4096
    heldout_fraction: float = 0.1
    lr: float | tuple[float, ...] = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    decay_fraction: float = 0.2
    grad_clip: float | None = 1.0
    dead_after_tokens: int = 1_000_000
    dense_threshold: float = 0.1
    log_every: int = 100
    checkpoint_every: int | None = None
    shuffle: bool = True
    seed: int = 0
    device: str | None = None
    autocast: bool | None = None
    compile: bool = False
    fused: bool | None = None
    sparse_decode: bool | None = None
    log_to: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.device, torch.device):
            object.__setattr__(self, "device", str(self.device))
        if isinstance(self.lr, (list, tuple)):
            object.__setattr__(self, "lr", tuple(self.lr))
        object.__setattr__(self, "betas", tuple(self.betas))
        object.__setattr__(self, "log_to", check_trackers(self.log_to, "SAETrainConfig.log_to"))
        _positive_int("steps", self.steps, optional=True)
        _positive_int("tokens", self.tokens, optional=True)
        if self.steps is not None and self.tokens is not None:
            raise ValueError("give exactly one of steps= or tokens=")
        _positive_int("batch_size", self.batch_size)
        f = self.heldout_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
            raise ValueError(f"heldout_fraction must be a number in [0, 1), got {f!r}")
        lrs = self.lr if isinstance(self.lr, tuple) else (self.lr,)
        if not lrs or not all(_positive_number(v) for v in lrs):
            raise ValueError("lr must be a positive number or one positive number per SAE")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if not _positive_number(self.eps):
            raise ValueError(f"eps must be > 0, got {self.eps!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {self.warmup_steps!r}")
        if not isinstance(self.decay_fraction, (int, float)) or not 0 <= self.decay_fraction <= 1:
            raise ValueError(f"decay_fraction must be in [0, 1], got {self.decay_fraction}")
        if self.grad_clip is not None and not _positive_number(self.grad_clip):
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        _positive_int("dead_after_tokens", self.dead_after_tokens)
        _positive_int("log_every", self.log_every)
        _positive_int("checkpoint_every", self.checkpoint_every, optional=True)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise TypeError(f"SAETrainConfig.seed must be an int, got {self.seed!r}")
        if self.device is not None and not isinstance(self.device, str):
            raise TypeError(f"device must be a string or None, got {type(self.device).__name__}")

    @property
    def total_steps(self) -> int:
        """Optimiser steps of the run (``tokens`` rounded up to whole batches)."""
        if self.steps is None and self.tokens is None:
            raise ValueError("give exactly one of steps= or tokens=")
        return self.steps if self.steps is not None else math.ceil(self.tokens / self.batch_size)

    def lrs(self, n: int) -> list[float]:
        """The learning rate of each of ``n`` SAEs."""
        if isinstance(self.lr, tuple):
            if len(self.lr) != n:
                raise ValueError(
                    "lr must be a positive number or one positive number per SAE "
                    f"(got {len(self.lr)} for {n} SAEs)"
                )
            return [float(v) for v in self.lr]
        return [float(self.lr)] * n
