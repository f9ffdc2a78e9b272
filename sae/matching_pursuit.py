"""The matching-pursuit SAE, MP-SAE [Costa2025].

The encoder unrolls matching pursuit over the unit-norm decoder atoms ``W_dec[i]``: starting
from the residual ``r_0 = x - b_dec`` (or ``x`` without pre-centering), each step picks the
atom with the largest rectified inner product with the residual, adds that inner product to
the atom's code and subtracts the atom's contribution from the residual. Because each step
explains away what earlier atoms already captured, the codes can express conditional,
hierarchical structure that a one-shot thresholding encoder cannot.

Memory: the atom choices are made under ``torch.no_grad`` (the ``(B, d_sae)`` score matrix of
a step is freed at the next one); the chosen atoms are then gathered once and the codes
recomputed from them with gradients, so autograd keeps ``O(B * k * d_in)`` numbers, never
``O(B * k * d_sae)``.
"""

from __future__ import annotations

import dataclasses

import torch

from hierlens.core.validate import check_int, check_number

from .base import SAE
from .config import SAEConfig, check_k
from .outputs import Encoded
from .stacked import gather_rows


@dataclasses.dataclass(frozen=True)
class MatchingPursuitSAEConfig(SAEConfig):
    """Config of :class:`MatchingPursuitSAE` (see :class:`SAEConfig` for shared fields).

    Parameters:
        k: matching-pursuit steps in training (each step may re-pick an atom, so at most
            ``k`` latents are active).
        apply_b_dec_to_input: pre-centering, off by default: when on, the pursuit starts
            from ``x - b_dec`` with a learned ``b_dec`` that is added back in decoding;
            when off, it starts from ``x`` and ``b_dec`` stays zero (not trained).
        residual_threshold: inference only: a row stops once its residual norm is below
            this value (adaptive sparsity); ``None`` never stops early.
        max_iterations: inference only: pursuit steps (``None``: ``k``).
        stop_on_duplicate_support: inference only: a row stops when the atom it would pick
            is already in its support (the support stopped changing); that pick is not
            applied.
        stop_in_training: training also runs the inference pursuit (``max_iterations``
            steps with the stopping rules) instead of exactly ``k`` steps, as Costa et al.'s
            toy experiments do (residual-norm threshold 0.05 and a stable support).
        unit_norm_decoder: must be True (atoms are renormalised after every step).
    """

    apply_b_dec_to_input: bool = False
    k: int = 16
    residual_threshold: float | None = None
    max_iterations: int | None = None
    stop_on_duplicate_support: bool = False
    stop_in_training: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_k(self)
        if not self.unit_norm_decoder:
            raise ValueError("MatchingPursuitSAE needs unit-norm atoms: unit_norm_decoder=True")
        check_number("residual_threshold", self.residual_threshold, none=True)
        check_int("max_iterations", self.max_iterations, none=True)


@torch.no_grad()
def select_atoms(
    W: torch.Tensor,
    r: torch.Tensor,
    steps: int,
    residual_threshold: float | None = None,
    stop_on_duplicate_support: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run matching pursuit without gradients and return the chosen atoms.

    Args:
        W: ``(S, d_sae, d)`` unit-norm atoms. r: ``(S, B, d)`` initial residuals.
        steps: number of pursuit steps.
        residual_threshold, stop_on_duplicate_support: the inference stopping rules.

    Returns:
        ``idx`` ``(S, B, T)`` chosen atom per step and ``live`` ``(S, B, T)`` bool, False
        where a row had stopped (its pick is not applied); ``T <= steps`` (the loop ends
        early once every row has stopped).
    """
    S, B, _ = r.shape
    r = r.clone()
    live = torch.ones(S, B, dtype=torch.bool, device=r.device)
    support = (
        torch.zeros(S, B, W.shape[1], dtype=torch.bool, device=r.device)
        if stop_on_duplicate_support
        else None
    )
    stopping = residual_threshold is not None or stop_on_duplicate_support
    picks, lives = [], []
    for _ in range(steps):
        if residual_threshold is not None:
            live = live & (r.norm(dim=-1) > residual_threshold)
        scores = torch.bmm(r, W.transpose(1, 2))
        best, j = scores.max(dim=-1)
        del scores
        if support is not None:
            dup = support.gather(-1, j.unsqueeze(-1)).squeeze(-1)
            live = live & ~dup
            support.scatter_(-1, j.unsqueeze(-1), live.unsqueeze(-1) | dup.unsqueeze(-1))
        v = torch.relu(best) * live
        r -= v.unsqueeze(-1) * gather_rows(W, j)
        picks.append(j)
        lives.append(live)
        if stopping and not bool(live.any()):
            break
    return torch.stack(picks, dim=-1), torch.stack(lives, dim=-1)


def pursue(
    W: torch.Tensor, r0: torch.Tensor, idx: torch.Tensor, live: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Recompute the pursuit values along given choices, with gradients.

    ``W`` ``(S, d_sae, d)``, ``r0`` ``(S, B, d)``, ``idx``/``live`` ``(S, B, T)``. Returns
    the values ``(S, B, T)`` (the rectified inner product of each chosen atom with the
    residual at its step) and the gathered atoms ``(S, B, T, d)``.
    """
    atoms = gather_rows(W, idx)  # one gather: its backward is a single index_add
    r = r0
    values = []
    for t in range(idx.shape[-1]):
        a = atoms[:, :, t]
        v = torch.relu((r * a).sum(-1)) * live[:, :, t]
        r = r - v.unsqueeze(-1) * a
        values.append(v)
    return torch.stack(values, dim=-1), atoms


class MatchingPursuitSAE(SAE, name="mp", aliases=("matching_pursuit",)):
    """MP-SAE [Costa2025]: a matching-pursuit encoder over the decoder's atoms.

    The encoder is tied to the decoder: ``W_enc`` is ``W_dec.T`` (a read-only property) and
    ``b_enc`` is zero; the trainable tensors are ``W_dec`` (and ``b_dec`` with
    pre-centering). Training runs exactly ``k`` pursuit steps; inference runs
    ``max_iterations`` (default ``k``) with the optional stopping rules. Loss: squared error.

    ``MatchingPursuitSAE(d_in, d_sae, *, device=None, **fields)`` with the fields of
    :class:`MatchingPursuitSAEConfig` (``k``, the inference stopping rules, pre-centering).
    """

    architecture = "matching_pursuit"
    config_class = MatchingPursuitSAEConfig
    continuous_hparams = ()
    tensor_names = ("W_dec", "b_dec")
    # the same names in cfg.json
    saelens_fields = {
        n: n
        for n in (
            "k",
            "residual_threshold",
            "max_iterations",
            "stop_on_duplicate_support",
            "stop_in_training",
        )
    }
    grid_knob = "k"

    def _init_tensors(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        t = super()._init_tensors(gen)
        return {"W_dec": t["W_dec"], "b_dec": t["b_dec"]}

    def trainable_names(self) -> tuple[str, ...]:
        return ("W_dec", "b_dec") if self.cfg.apply_b_dec_to_input else ("W_dec",)

    @property
    def W_enc(self) -> torch.Tensor:
        """The tied encoder ``W_dec.T`` ``(d_in, d_sae)``."""
        return self.W_dec.T

    @property
    def b_enc(self) -> torch.Tensor:
        """Zero encoder bias ``(d_sae,)`` (MP-SAE has none)."""
        return torch.zeros(self.d_sae, device=self.device, dtype=self.dtype)

    @classmethod
    def _run(cls, cfg, p, x, training: bool):
        W = p["W_dec"]
        S = W.shape[0]
        r0 = (
            x.unsqueeze(0) - p["b_dec"].unsqueeze(1)
            if cfg.apply_b_dec_to_input
            else x.expand(S, -1, -1)
        )
        if training and not cfg.stop_in_training:
            idx, live = select_atoms(W, r0, cfg.k)
        else:
            idx, live = select_atoms(
                W,
                r0,
                cfg.max_iterations or cfg.k,
                cfg.residual_threshold,
                cfg.stop_on_duplicate_support,
            )
        values, atoms = pursue(W, r0, idx, live)
        recon = p["b_dec"].unsqueeze(1) + torch.einsum("sbt,sbtd->sbd", values, atoms)
        codes = torch.zeros(*r0.shape[:2], cfg.d_sae, device=x.device, dtype=values.dtype)
        codes = codes.scatter_add(-1, idx, values)
        return codes, recon

    @classmethod
    def stacked_encode(cls, cfg, p, x):
        return cls._run(cfg, p, x, training=False)[0]

    @classmethod
    def train_encode(cls, cfg, p, hp, x, ctx) -> Encoded:
        codes, recon = cls._run(cfg, p, x, training=ctx.training)
        return Encoded(codes, recon=recon)
