"""The JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction
Fidelity with JumpReLU Sparse Autoencoders")."""

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
class JumpReLUSAEConfig(SAEConfig):
    """Config of :class:`JumpReLUSAE` (see :class:`SAEConfig` for the shared fields).

    Parameters:
        l0_coefficient: weight of the L0 penalty ``sum_i H(z_i - theta_i)``.
        bandwidth: width ``epsilon`` of the rectangle kernel of the straight-through
            estimator (the threshold's pseudo-derivative is non-zero for ``|z - theta| <
            epsilon / 2``).
        init_threshold: initial value of every threshold.
    """

    l0_coefficient: float = 1.0
    bandwidth: float = 0.001
    init_threshold: float = 0.001

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonneg(self, "l0_coefficient", "init_threshold")
        if not isinstance(self.bandwidth, (int, float)) or not self.bandwidth > 0:
            raise ValueError(f"bandwidth must be > 0, got {self.bandwidth!r}")


def _rect(u: torch.Tensor) -> torch.Tensor:
    return (u.abs() < 0.5).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    """``z * H(z - theta)``; d/dz = ``H(z - theta)``, d/dtheta = ``-(theta/eps) K((z-theta)/eps)``."""

    @staticmethod
    def forward(ctx, z, theta, eps):
        ctx.save_for_backward(z, theta, eps)
        return z * (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        z, theta, eps = ctx.saved_tensors
        gz = grad * (z > theta).to(grad.dtype)
        gt = -(theta / eps) * _rect((z - theta) / eps) * grad
        return gz, gt.sum_to_size(theta.shape), None


class _Step(torch.autograd.Function):
    """``H(z - theta)``; d/dz = 0, d/dtheta = ``-(1/eps) K((z-theta)/eps)``."""

    @staticmethod
    def forward(ctx, z, theta, eps):
        ctx.save_for_backward(z, theta, eps)
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        z, theta, eps = ctx.saved_tensors
        gt = -(1.0 / eps) * _rect((z - theta) / eps) * grad
        return torch.zeros_like(z), gt.sum_to_size(theta.shape), None


def jumprelu(z: torch.Tensor, theta: torch.Tensor, bandwidth: torch.Tensor) -> torch.Tensor:
    """JumpReLU with the straight-through threshold gradient (Rajamanoharan et al., eq. 11)."""
    return _JumpReLU.apply(z, theta, bandwidth)


def heaviside_step(z: torch.Tensor, theta: torch.Tensor, bandwidth: torch.Tensor) -> torch.Tensor:
    """``H(z - theta)`` with the straight-through threshold gradient (eq. 12)."""
    return _Step.apply(z, theta, bandwidth)


class JumpReLUSAE(SAE):
    """``f = z * H(z - theta)`` with ``z = (x - b_dec) W_enc + b_enc`` and a learned threshold
    ``theta`` per latent (parameter ``threshold``), ``x_hat = f W_dec + b_dec``.

    Loss: ``||x - x_hat||^2 + l0_coefficient * sum_i H(z_i - theta_i)``; the threshold learns
    through a straight-through estimator with a rectangle kernel of width ``bandwidth``.
    Thresholds are clamped at 0 after each optimiser step.

    Args:
        d_in: activation width. d_sae: number of latents.
        l0_coefficient, bandwidth, init_threshold: see :class:`JumpReLUSAEConfig`.
        hook_name, apply_b_dec_to_input, unit_norm_decoder, seed, dtype: see :class:`SAEConfig`.
        device: where the parameters live (``None``: CUDA when available, else CPU).
    """

    architecture = "jumprelu"
    config_class = JumpReLUSAEConfig
    continuous_hparams = ("l0_coefficient", "bandwidth")
    tensor_names = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        *,
        l0_coefficient: float = 1.0,
        bandwidth: float = 0.001,
        init_threshold: float = 0.001,
        hook_name: str | None = None,
        apply_b_dec_to_input: bool = True,
        unit_norm_decoder: bool = True,
        seed: int = 0,
        dtype: str = "float32",
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__(JumpReLUSAEConfig(**config_kwargs(locals())), device)

    def _init_tensors(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        t = super()._init_tensors(gen)
        t["threshold"] = torch.full(
            (self.cfg.d_sae,), float(self.cfg.init_threshold), dtype=torch.float64
        )
        return t

    def trainable_names(self) -> tuple[str, ...]:
        return ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")

    @classmethod
    def _pre(cls, cfg, p, x):
        return encoder_preacts(x, p, cfg.apply_b_dec_to_input)

    @classmethod
    def _stacked_encode(cls, cfg, p, x):
        pre = cls._pre(cfg, p, x)
        return pre * (pre > p["threshold"].unsqueeze(1))

    @classmethod
    def stacked_forward(
        cls,
        cfg: JumpReLUSAEConfig,
        p: dict[str, torch.Tensor],
        hp: dict[str, torch.Tensor],
        x: torch.Tensor,
        ctx: StepContext,
    ) -> StackedOutput:
        pre = cls._pre(cfg, p, x)
        theta = p["threshold"].unsqueeze(1)  # (S, 1, d_sae)
        eps = hp["bandwidth"].to(pre.dtype).view(-1, 1, 1)
        codes = jumprelu(pre, theta, eps)
        recon = dense_decode(codes, p)
        mse = squared_error(x, recon)
        l0 = heaviside_step(pre, theta, eps).float().sum(-1).mean(-1)
        loss = mse + hp["l0_coefficient"] * l0
        return StackedOutput(recon, codes, loss, {"mse": mse, "l0_penalty": l0})

    @classmethod
    @torch.no_grad()
    def post_step_stacked(cls, cfg, p):
        super().post_step_stacked(cfg, p)
        p["threshold"].clamp_(min=0.0)
