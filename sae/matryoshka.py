"""The Matryoshka BatchTopK SAE [Bussmann2025] [Nabeshima2024].

The dictionary is read as nested prefixes ``W_dec[:m_1] ⊂ W_dec[:m_2] ⊂ … ⊂ W_dec[:d_sae]``.
The codes are chosen once, by BatchTopK over the whole dictionary; each prefix then
reconstructs the input from its own latents alone, ``x_hat_m = f(x)[:m] W_dec[:m] + b_dec``,
and the loss sums every prefix's squared error (the paper's equation):

    L = sum_{m in widths} ||x - x_hat_m||^2 + aux_coefficient * AuxK

so early latents must explain as much as they can on their own (general, parent-like
features) and later ones add detail, which counters feature absorption.
"""

from __future__ import annotations

import dataclasses

import torch

from .batch_topk import BatchTopKSAE, BatchTopKSAEConfig
from .stacked import squared_error


@dataclasses.dataclass(frozen=True)
class MatryoshkaBatchTopKSAEConfig(BatchTopKSAEConfig):
    """Config of :class:`MatryoshkaBatchTopKSAE` (fields of :class:`BatchTopKSAEConfig` plus):

    Parameters:
        matryoshka_widths: the nested prefix sizes ``m_1 < m_2 < …``, each in ``[1, d_sae]``;
            ``d_sae`` is appended when missing (the whole dictionary is always the last
            prefix), so the empty default is a plain BatchTopK loss.
    """

    matryoshka_widths: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        widths = self.matryoshka_widths
        if isinstance(widths, list):
            widths = tuple(widths)
        if not isinstance(widths, tuple) or not all(
            isinstance(w, int) and not isinstance(w, bool) for w in widths
        ):
            raise ValueError(f"matryoshka_widths must be a tuple of ints, got {widths!r}")
        if widths and widths[-1] != self.d_sae:
            widths = (*widths, self.d_sae)
        widths = widths or (self.d_sae,)
        if widths[0] < 1 or any(a >= b for a, b in zip(widths, widths[1:])):
            raise ValueError(
                f"matryoshka_widths must be strictly increasing in [1, d_sae={self.d_sae}], "
                f"got {self.matryoshka_widths!r}"
            )
        object.__setattr__(self, "matryoshka_widths", widths)


def prefix_reconstructions(
    codes: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor, widths: tuple[int, ...]
) -> list[torch.Tensor]:
    """The reconstruction of each nested prefix, built block by block.

    ``codes`` ``(S, B, d_sae)``, ``W_dec`` ``(S, d_sae, d_in)``, ``b_dec`` ``(S, d_in)``;
    returns one ``(S, B, d_in)`` tensor per width: ``codes[..., :m] @ W_dec[:, :m] + b_dec``.
    """
    out, start = [], 0
    recon = b_dec.unsqueeze(1)
    for m in widths:
        recon = recon + torch.bmm(codes[..., start:m], W_dec[:, start:m])
        out.append(recon)
        start = m
    return out


class MatryoshkaBatchTopKSAE(
    BatchTopKSAE, name="matryoshka_batchtopk", aliases=("matryoshka", "MatryoshkaSAE")
):
    """BatchTopK codes (:class:`BatchTopKSAE`: ``k`` active latents per row on average in
    training, a learned global threshold at inference) trained with the Matryoshka loss:
    the squared error of every nested prefix ``matryoshka_widths`` summed, plus
    ``aux_coefficient * AuxK``. The full-width error is the template's ``mse`` term; the
    inner prefixes' errors are the ``matryoshka`` term (coefficient 1).

    At inference it is a JumpReLU SAE with a shared threshold, like BatchTopK; its files keep
    the architecture name ``matryoshka_batchtopk`` and ``matryoshka_widths`` (SAELens' name
    for its training architecture; SAELens itself exports a trained one as ``jumprelu``).

    ``MatryoshkaBatchTopKSAE(d_in, d_sae, *, device=None, **fields)`` with the fields of
    :class:`MatryoshkaBatchTopKSAEConfig` (``matryoshka_widths``, ``k``, ...).
    """

    architecture = "matryoshka_batchtopk"
    config_class = MatryoshkaBatchTopKSAEConfig
    saelens_fields = {**BatchTopKSAE.saelens_fields, "matryoshka_widths": "matryoshka_widths"}

    @classmethod
    def penalties(cls, cfg, p, hp, x, enc, recon):
        terms = super().penalties(cfg, p, hp, x, enc, recon)
        inner = cfg.matryoshka_widths[:-1]
        if inner:
            recons = prefix_reconstructions(enc.codes, p["W_dec"], p["b_dec"], inner)
            total = sum(squared_error(x, r) for r in recons)
        else:
            total = torch.zeros(recon.shape[0], device=recon.device)
        terms["matryoshka"] = (total, torch.ones_like(total))
        return terms
