"""The optimisation settings of the fused SAE trainer, as one frozen config."""

from __future__ import annotations

import dataclasses
import math

import torch

from hierlens.core.config import Config
from hierlens.core.loggers import check_trackers
from hierlens.core.validate import check_int, check_number


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
        dead_after_tokens: a latent that has not fired for this many tokens is dead: in the
            metrics (``dead``) and, for the TopK family, in the AuxK loss [Gao2024] (switched
            on at the first metric record that finds a dead latent).
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
        check_int("SAETrainConfig.steps", self.steps, none=True)
        check_int("SAETrainConfig.tokens", self.tokens, none=True)
        if self.steps is not None and self.tokens is not None:
            raise ValueError("give exactly one of steps= or tokens=")
        check_int("SAETrainConfig.batch_size", self.batch_size)
        f = self.heldout_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
            raise ValueError(f"heldout_fraction must be a number in [0, 1), got {f!r}")
        lrs = self.lr if isinstance(self.lr, tuple) else (self.lr,)
        if not lrs:
            raise ValueError("lr must be a positive number or one positive number per SAE")
        for lr in lrs:
            check_number("SAETrainConfig.lr", lr, strict=True)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        check_number("SAETrainConfig.eps", self.eps, strict=True)
        check_int("SAETrainConfig.warmup_steps", self.warmup_steps, minimum=0)
        if not isinstance(self.decay_fraction, (int, float)) or not 0 <= self.decay_fraction <= 1:
            raise ValueError(f"decay_fraction must be in [0, 1], got {self.decay_fraction}")
        check_number("SAETrainConfig.grad_clip", self.grad_clip, strict=True, none=True)
        check_int("SAETrainConfig.dead_after_tokens", self.dead_after_tokens)
        check_int("SAETrainConfig.log_every", self.log_every)
        check_int("SAETrainConfig.checkpoint_every", self.checkpoint_every, none=True)
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
