"""The ReLU SAE with a decoder-norm-weighted L1 penalty ([Bricken2023]; the penalty of
[Conerly2024])."""

from __future__ import annotations

import dataclasses

import torch

from .base import SAE
from .config import SAEConfig, check_nonneg
from .outputs import Encoded
from .stacked import encoder_preacts


@dataclasses.dataclass(frozen=True)
class ReluSAEConfig(SAEConfig):
    """Config of :class:`ReluSAE` (see :class:`SAEConfig` for the shared fields).

    Parameters:
        l1_coefficient: weight of the sparsity penalty ``sum_i f_i * ||W_dec[i]||``.
        unit_norm_decoder: off by default: the penalty weights each code by its decoder
            row norm instead, so rows are free to grow.
    """

    unit_norm_decoder: bool = False
    l1_coefficient: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonneg(self, "l1_coefficient")


class ReluSAE(SAE, name="relu", aliases=("standard",)):
    """``f = ReLU((x - b_dec) W_enc + b_enc)``, ``x_hat = f W_dec + b_dec``.

    Loss: ``||x - x_hat||^2 + l1_coefficient * sum_i f_i ||W_dec[i]||`` (per row, averaged
    over the batch). Decoder rows start at norm ``0.1`` [Conerly2024].

    ``ReluSAE(d_in, d_sae, *, device=None, **fields)`` with the fields of
    :class:`ReluSAEConfig` (``l1_coefficient``, ...).
    """

    architecture = "standard"
    config_class = ReluSAEConfig
    continuous_hparams = ("l1_coefficient",)
    saelens_fields = {"l1_coefficient": "l1_coefficient"}
    grid_knob = "l1_coefficient"

    def _init_tensors(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        t = super()._init_tensors(gen)
        if not self.cfg.unit_norm_decoder:
            t["W_dec"] = t["W_dec"] * 0.1
            t["W_enc"] = t["W_dec"].T.clone()
        return t

    @classmethod
    def stacked_encode(cls, cfg, p, x):
        return torch.relu(encoder_preacts(x, p, cfg.apply_b_dec_to_input))

    @classmethod
    def train_encode(cls, cfg, p, hp, x, ctx) -> Encoded:
        return Encoded(cls.stacked_encode(cfg, p, x))

    @classmethod
    def penalties(cls, cfg, p, hp, x, enc, recon):
        norms = p["W_dec"].float().norm(dim=-1)  # (S, d_sae)
        l1 = (enc.codes.float() * norms.unsqueeze(1)).sum(-1).mean(-1)
        return {"l1": (l1, hp["l1_coefficient"])}
