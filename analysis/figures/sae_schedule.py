"""The SAE training schedule the SAE figures share (concept recovery, the correlation sweep,
the L0 frontier): a linear warmup over the first 5% of the steps and ``records`` metric
records over the run."""

from __future__ import annotations

import torch

from hierlens.sae import SAETrainConfig

__all__ = ["sae_schedule"]


def sae_schedule(
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: str | torch.device | None = None,
    records: int = 5,
) -> SAETrainConfig:
    """The :class:`~hierlens.sae.SAETrainConfig` of an SAE figure's fused run: ``steps``
    steps of ``batch_size`` rows at learning rate ``lr`` after a warmup of ``steps // 20``,
    a metric record every ``steps // records`` steps (at least 1), seeded by ``seed``, on
    ``device`` (None: the config's own default)."""
    return SAETrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup_steps=steps // 20,
        log_every=max(1, steps // records),
        seed=seed,
        device=None if device is None else str(device),
    )
