"""The JumpReLU SAE [Rajamanoharan2024]."""

from __future__ import annotations

import dataclasses

import torch

from .base import SAE
from .config import SAEConfig, check_nonneg
from .outputs import Encoded
from .stacked import encoder_preacts


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
    """JumpReLU with the straight-through threshold gradient ([Rajamanoharan2024], eq. 11)."""
    return _JumpReLU.apply(z, theta, bandwidth)


def heaviside_step(z: torch.Tensor, theta: torch.Tensor, bandwidth: torch.Tensor) -> torch.Tensor:
    """``H(z - theta)`` with the straight-through threshold gradient (eq. 12)."""
    return _Step.apply(z, theta, bandwidth)


class JumpReLUSAE(SAE, name="jumprelu"):
    """``f = z * H(z - theta)`` with ``z = (x - b_dec) W_enc + b_enc`` and a learned threshold
    ``theta`` per latent (parameter ``threshold``), ``x_hat = f W_dec + b_dec``.

    Loss: ``||x - x_hat||^2 + l0_coefficient * sum_i H(z_i - theta_i)``; the threshold learns
    through a straight-through estimator with a rectangle kernel of width ``bandwidth``.
    Thresholds are clamped at 0 after each optimiser step.

    ``JumpReLUSAE(d_in, d_sae, *, device=None, **fields)`` with the fields of
    :class:`JumpReLUSAEConfig` (``l0_coefficient``, ``bandwidth``, ``init_threshold``, ...).
    """

    architecture = "jumprelu"
    config_class = JumpReLUSAEConfig
    continuous_hparams = ("l0_coefficient", "bandwidth")
    tensor_names = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")
    saelens_fields = {
        "l0_coefficient": "l0_coefficient",
        "bandwidth": "jumprelu_bandwidth",
        "init_threshold": "jumprelu_init_threshold",
    }
    grid_knob = "l0_coefficient"

    def _init_tensors(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        t = super()._init_tensors(gen)
        t["threshold"] = torch.full(
            (self.cfg.d_sae,), float(self.cfg.init_threshold), dtype=torch.float64
        )
        return t

    def trainable_names(self) -> tuple[str, ...]:
        return ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")

    @classmethod
    def stacked_encode(cls, cfg, p, x):
        pre = encoder_preacts(x, p, cfg.apply_b_dec_to_input)
        return pre * (pre > p["threshold"].unsqueeze(1))

    @classmethod
    def train_encode(cls, cfg, p, hp, x, ctx) -> Encoded:
        pre = encoder_preacts(x, p, cfg.apply_b_dec_to_input)
        theta = p["threshold"].unsqueeze(1)  # (S, 1, d_sae)
        eps = hp["bandwidth"].to(pre.dtype).view(-1, 1, 1)
        return Encoded(jumprelu(pre, theta, eps), pre=pre, extras={"theta": theta, "eps": eps})

    @classmethod
    def penalties(cls, cfg, p, hp, x, enc, recon):
        l0 = heaviside_step(enc.pre, enc.extras["theta"], enc.extras["eps"])
        return {"l0_penalty": (l0.float().sum(-1).mean(-1), hp["l0_coefficient"])}

    @classmethod
    @torch.no_grad()
    def post_step_stacked(cls, cfg, p):
        super().post_step_stacked(cfg, p)
        p["threshold"].clamp_(min=0.0)
