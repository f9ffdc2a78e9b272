"""The BatchTopK SAE [Bussmann2024]."""

from __future__ import annotations

import dataclasses

import torch

from hierlens.core.validate import check_number

from .config import check_nonneg
from .outputs import Encoded
from .topk import TopKSAE, TopKSAEConfig, aux_dead_mask


@dataclasses.dataclass(frozen=True)
class BatchTopKSAEConfig(TopKSAEConfig):
    """Config of :class:`BatchTopKSAE` (fields of :class:`TopKSAEConfig` plus):

    Parameters:
        k: mean number of active latents per row: an int, or a float (e.g. ``1.36``) since
            the batch keeps ``round(k * B)`` activations in all.
        topk_threshold_lr: rate of the running average that estimates the inference
            threshold from the smallest positive selected activation of each training batch.
    """

    topk_threshold_lr: float = 0.01

    k: float = 32

    def _check_k(self) -> None:
        k = self.k
        check_number(f"{type(self).__name__}.k", k, strict=True)
        if k > self.d_sae:
            raise ValueError(
                f"{type(self).__name__}.k={k} is larger than the number of latents "
                f"d_sae={self.d_sae}"
            )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonneg(self, "topk_threshold_lr")
        if self.topk_threshold_lr > 1:
            raise ValueError(f"topk_threshold_lr must be in [0, 1], got {self.topk_threshold_lr}")


class BatchTopKSAE(TopKSAE, name="batch_topk", aliases=("batchtopk",)):
    """In training, keep the ``k * B`` largest rectified pre-activations of the whole batch of
    ``B`` rows (so ``k`` per row on average, adaptively distributed); at inference, keep the
    rectified pre-activations above a global threshold ``theta`` learned during training as a
    running average of the smallest positive activation the batch selection kept (the first
    training batch sets it directly).

    The threshold is stored as the buffer ``threshold`` ``(d_sae,)`` (all entries equal), so
    the inference SAE is a JumpReLU SAE with a shared threshold; files say so (architecture
    ``jumprelu``, as SAELens stores a BatchTopK SAE for inference). Loss: squared error plus
    ``aux_coefficient * AuxK`` (as :class:`TopKSAE`).

    ``BatchTopKSAE(d_in, d_sae, *, device=None, **fields)`` with the fields of
    :class:`BatchTopKSAEConfig` (``k`` is the mean number of active latents per row).
    """

    architecture = "jumprelu"
    config_class = BatchTopKSAEConfig
    continuous_hparams = ("aux_coefficient", "topk_threshold_lr")
    tensor_names = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")
    saelens_fields = {**TopKSAE.saelens_fields, "topk_threshold_lr": "topk_threshold_lr"}
    sparse_cpu_step = False  # the batch-wide selection has no per-row sparse step

    def _init_tensors(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        t = super()._init_tensors(gen)
        t["threshold"] = torch.zeros(self.cfg.d_sae, dtype=torch.float64)
        return t

    @classmethod
    def stacked_encode(cls, cfg, p, x):
        pre = torch.relu(cls._pre(cfg, p, x))
        return pre * (pre > p["threshold"].unsqueeze(1))

    @classmethod
    def train_encode(cls, cfg, p, hp, x, ctx) -> Encoded:
        pre = cls._pre(cfg, p, x)
        if ctx.training:
            S, B, d_sae = pre.shape
            flat = torch.relu(pre).reshape(S, B * d_sae)
            vals, idx = flat.topk(max(1, round(cfg.k * B)), dim=-1, sorted=False)
            codes = torch.zeros_like(flat).scatter(-1, idx, vals).view(S, B, d_sae)
            if ctx.update_buffers:
                _update_threshold(p["threshold"], vals.detach(), hp["topk_threshold_lr"])
        else:
            relu = torch.relu(pre)
            codes = relu * (relu > p["threshold"].unsqueeze(1))
        return Encoded(codes, pre=pre, extras={"dead": aux_dead_mask(ctx, hp)})


@torch.no_grad()
def _update_threshold(threshold: torch.Tensor, vals: torch.Tensor, rate: torch.Tensor) -> None:
    """``theta <- theta + rate * (min positive kept value - theta)`` per member, in place.

    A threshold still at its initial 0 is set to the first batch's value directly (so short
    runs do not start from a long ramp); a member whose batch kept no positive value keeps
    its threshold."""
    pos = vals > 0
    min_pos = vals.masked_fill(~pos, float("inf")).amin(-1)  # (S,)
    current = threshold[:, 0].float()
    new = current + rate.float() * (min_pos.float() - current)
    new = torch.where(current == 0, min_pos.float(), new)
    new = torch.where(pos.any(-1), new, current)
    threshold.copy_(new.to(threshold.dtype).unsqueeze(1).expand_as(threshold))
