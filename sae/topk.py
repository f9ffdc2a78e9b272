"""The TopK SAE with the AuxK loss on dead latents [Gao2024]."""

from __future__ import annotations

import dataclasses

import torch

from hierlens.core.validate import check_int

from .base import SAE
from .config import SAEConfig, check_k, check_nonneg
from .outputs import Encoded, StepContext
from .sparse_step import sparse_topk_step, uses_sparse_kernels
from .stacked import encoder_preacts


@dataclasses.dataclass(frozen=True)
class TopKSAEConfig(SAEConfig):
    """Config of :class:`TopKSAE` (see :class:`SAEConfig` for the shared fields).

    Parameters:
        k: number of active latents per row.
        k_aux: latents the AuxK loss may use (``None``: ``d_in // 2``, as in Gao et al.;
            capped at ``d_sae``).
        aux_coefficient: weight of the AuxK loss (Gao et al. use 1/32; 0 turns it off). The
            loss takes the latents the trainer counts as dead (``dead_after_tokens`` of
            ``SAETrainConfig``, the same count its metrics report).
    """

    k: int = 32
    k_aux: int | None = None
    aux_coefficient: float = 1.0 / 32.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_k()
        check_int("k_aux", self.k_aux, none=True)
        check_nonneg(self, "aux_coefficient")

    def _check_k(self) -> None:
        """``ValueError`` unless ``k`` is an int in ``[1, d_sae]``."""
        check_k(self)

    @property
    def effective_k_aux(self) -> int:
        k_aux = self.k_aux if self.k_aux is not None else max(1, self.d_in // 2)
        return min(k_aux, self.d_sae)


def auxk_loss(
    cfg: TopKSAEConfig,
    p: dict[str, torch.Tensor],
    pre: torch.Tensor,
    x: torch.Tensor,
    recon: torch.Tensor,
    dead_mask: torch.Tensor | None,
) -> torch.Tensor:
    """AuxK ([Gao2024], section A.2): reconstruct the main residual ``x - x_hat``
    (detached) from the ``k_aux`` largest pre-activations among dead latents, through the
    decoder without bias; the loss is the squared error, ``0`` for a member with no dead
    latent. ``pre`` ``(S, B, d_sae)``, ``dead_mask`` ``(S, d_sae)`` bool (``None``: no
    member has a dead latent or uses AuxK; each member's coefficient is applied by the caller,
    as it may differ between the members of a stack)."""
    S = pre.shape[0]
    if dead_mask is None:
        return torch.zeros(S, device=pre.device)
    resid = (x.float() - recon.float()).detach()
    masked = pre.masked_fill(~dead_mask.unsqueeze(1), float("-inf"))
    vals, idx = masked.topk(cfg.effective_k_aux, dim=-1, sorted=False)
    vals = torch.relu(vals)
    aux_codes = torch.zeros_like(pre).scatter(-1, idx, vals)
    e_hat = torch.bmm(aux_codes, p["W_dec"]).float()
    loss = (e_hat - resid).pow(2).sum(-1).mean(-1)
    return torch.where(dead_mask.any(-1), loss, torch.zeros_like(loss))


def aux_dead_mask(ctx: StepContext, hp: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The dead-latent mask AuxK works on, or ``None`` when no member uses AuxK this step
    (no dead latent, or every member's ``aux_coefficient`` is 0)."""
    if ctx.dead_mask is None or not bool((hp["aux_coefficient"] != 0).any()):
        return None
    return ctx.dead_mask


class TopKSAE(SAE, name="topk"):
    """``f = TopK_k(ReLU((x - b_dec) W_enc + b_enc))``: keep the ``k`` largest
    pre-activations of each row, rectified; ``x_hat = f W_dec + b_dec``.

    Loss: ``||x - x_hat||^2 + aux_coefficient * AuxK`` [Gao2024]. Decoder rows are
    kept at unit norm by default.

    ``TopKSAE(d_in, d_sae, *, device=None, **fields)`` with the fields of
    :class:`TopKSAEConfig` (``k``, ``k_aux``, ``aux_coefficient``) and
    :class:`SAEConfig` (``hook_name``, ``apply_b_dec_to_input``, ``unit_norm_decoder``,
    ``seed``, ``dtype``); ``device``: where the parameters live (``None``: CUDA when
    available, else CPU).
    """

    architecture = "topk"
    config_class = TopKSAEConfig
    continuous_hparams = ("aux_coefficient",)
    saelens_fields = {"k": "k", "aux_coefficient": "aux_loss_coefficient"}
    grid_knob = "k"
    sparse_cpu_step = True

    @classmethod
    def _pre(cls, cfg, p, x):
        return encoder_preacts(x, p, cfg.apply_b_dec_to_input)

    @classmethod
    def stacked_encode(cls, cfg, p, x):
        pre = cls._pre(cfg, p, x)
        vals, idx = pre.topk(cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))

    @classmethod
    def train_encode(cls, cfg, p, hp, x, ctx) -> Encoded:
        W_dec = p["W_dec"]
        dead = aux_dead_mask(ctx, hp)
        if ctx.sparse_decode and dead is None and uses_sparse_kernels(W_dec.device, W_dec.dtype):
            # The whole step through the k active latents (CPU sparse kernels); AuxK needs
            # the dense pre-activations with gradients, so it takes the path below.
            vals, idx, recon = sparse_topk_step(
                x, p, cfg.k, cfg.apply_b_dec_to_input, ctx.workspace
            )
            return Encoded(None, sparse=(vals, idx), recon=recon)
        if ctx.workspace is not None:  # a dense step: do not hold the sparse step's buffers too
            ctx.workspace.clear()
        pre = cls._pre(cfg, p, x)
        vals, idx = pre.topk(cfg.k, dim=-1, sorted=False)
        vals = torch.relu(vals)
        codes = torch.zeros_like(pre).scatter(-1, idx, vals)
        return Encoded(codes, sparse=(vals, idx), pre=pre, extras={"dead": dead})

    @classmethod
    def penalties(cls, cfg, p, hp, x, enc, recon):
        dead = enc.extras.get("dead")
        if dead is None:
            aux = torch.zeros(recon.shape[0], device=recon.device)
        else:
            aux = auxk_loss(cfg, p, enc.pre, x, recon, dead)
        return {"auxk": (aux, hp["aux_coefficient"])}
