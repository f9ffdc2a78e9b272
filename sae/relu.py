"""The ReLU SAE with a decoder-norm-weighted L1 penalty (Bricken et al. 2023, "Towards
Monosemanticity"; the penalty of Anthropic's April 2024 update, Conerly et al.)."""

from __future__ import annotations

import dataclasses

import torch

from .base import (
    SAE,
    SAEConfig,
    StackedOutput,
    StepContext,
    check_nonneg,
    config_kwargs,
    dense_decode,
    encoder_preacts,
    squared_error,
)


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


class ReluSAE(SAE):
    """``f = ReLU((x - b_dec) W_enc + b_enc)``, ``x_hat = f W_dec + b_dec``.

    Loss: ``||x - x_hat||^2 + l1_coefficient * sum_i f_i ||W_dec[i]||`` (per row, averaged
    over the batch). Decoder rows start at norm ``0.1`` (Conerly et al. 2024).

    Args:
        d_in: activation width. d_sae: number of latents.
        l1_coefficient: weight of the decoder-norm-weighted L1 penalty.
        hook_name, apply_b_dec_to_input, unit_norm_decoder, seed, dtype: see :class:`SAEConfig`.
        device: where the parameters live (``None``: CUDA when available, else CPU).
    """

    architecture = "standard"
    config_class = ReluSAEConfig
    continuous_hparams = ("l1_coefficient",)

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        *,
        l1_coefficient: float = 1.0,
        hook_name: str | None = None,
        apply_b_dec_to_input: bool = True,
        unit_norm_decoder: bool = False,
        seed: int = 0,
        dtype: str = "float32",
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__(ReluSAEConfig(**config_kwargs(locals())), device)

    def _init_tensors(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        t = super()._init_tensors(gen)
        if not self.cfg.unit_norm_decoder:
            t["W_dec"] = t["W_dec"] * 0.1
            t["W_enc"] = t["W_dec"].T.clone()
        return t

    @classmethod
    def _stacked_encode(cls, cfg, p, x):
        return torch.relu(encoder_preacts(x, p, cfg.apply_b_dec_to_input))

    @classmethod
    def stacked_forward(
        cls,
        cfg: ReluSAEConfig,
        p: dict[str, torch.Tensor],
        hp: dict[str, torch.Tensor],
        x: torch.Tensor,
        ctx: StepContext,
    ) -> StackedOutput:
        codes = cls._stacked_encode(cfg, p, x)
        recon = dense_decode(codes, p)
        mse = squared_error(x, recon)
        norms = p["W_dec"].float().norm(dim=-1)  # (S, d_sae)
        l1 = (codes.float() * norms.unsqueeze(1)).sum(-1).mean(-1)
        loss = mse + hp["l1_coefficient"] * l1
        return StackedOutput(recon, codes, loss, {"mse": mse, "l1": l1})
