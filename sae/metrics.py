"""SAE reconstruction and sparsity metrics on activations: MSE, fraction of variance
unexplained, L0, dead and dense latents (:func:`evaluate_sae`).

With a model, the reconstruction spliced into its forward pass is scored by
:mod:`hierlens.sae.spliced_loss`; scores against known features (directions and
activations) live in :mod:`hierlens.sae.ground_truth`.
"""

from __future__ import annotations

import torch

from .base import SAE


def mse(x: torch.Tensor, recon: torch.Tensor) -> float:
    """Mean over rows of the squared error summed over features."""
    return float((recon.detach().float() - x.detach().float()).pow(2).sum(-1).mean())


def fvu(x: torch.Tensor, recon: torch.Tensor) -> float:
    """Fraction of variance unexplained: ``sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``
    over rows ``(n, d)``."""
    x = x.detach().float().reshape(-1, x.shape[-1])
    recon = recon.detach().float().reshape(-1, x.shape[-1])
    total = (x - x.mean(0)).pow(2).sum()
    if total <= 0:
        raise ValueError("fvu needs activations with non-zero variance")
    return float((x - recon).pow(2).sum() / total)


def l0(codes: torch.Tensor) -> float:
    """Mean number of non-zero codes per row."""
    return float((codes != 0).sum(-1).float().mean())


def firing_counts(codes: torch.Tensor) -> torch.Tensor:
    """How many rows each latent fires on: ``(..., d_sae)`` -> ``(d_sae,)`` int64."""
    return (codes.reshape(-1, codes.shape[-1]) != 0).sum(0)


def dead_latents(counts: torch.Tensor) -> torch.Tensor:
    """Bool mask ``(d_sae,)`` of latents that never fired, from :func:`firing_counts`."""
    return counts == 0


def dense_latents(counts: torch.Tensor, n_rows: int, threshold: float = 0.1) -> torch.Tensor:
    """Bool mask of latents firing on more than ``threshold`` of ``n_rows`` rows."""
    if n_rows < 1:
        raise ValueError("dense_latents needs n_rows >= 1")
    return counts.float() / n_rows > threshold


class SAEEvaluation(dict):
    """The metrics of :func:`evaluate_sae`: a dict that shows itself as a table in notebooks."""

    def _repr_html_(self) -> str:
        from hierlens.core.html_table import key_value_table

        return key_value_table(self, "SAE evaluation")


@torch.no_grad()
def evaluate_sae(
    sae: SAE, activations: torch.Tensor, batch_size: int = 4096, dense_threshold: float = 0.1
) -> dict[str, float]:
    """Reconstruction and sparsity of ``sae`` (inference behaviour) on ``activations``
    ``(n, d_in)``: ``mse``, ``fvu``, ``l0``, ``dead_fraction`` (latents that never fire on
    these rows), ``dense_fraction`` (firing on more than ``dense_threshold`` of them)."""
    if not isinstance(activations, torch.Tensor) or activations.dim() != 2:
        raise ValueError("activations must be a tensor of shape (n, d_in)")
    if activations.shape[1] != sae.d_in:
        raise ValueError(
            f"activations have width {activations.shape[1]}, the SAE expects d_in={sae.d_in}"
        )
    if activations.shape[0] < 2:
        raise ValueError("evaluate_sae needs at least 2 rows")
    n = activations.shape[0]
    sse, l0_sum = 0.0, 0.0
    counts = torch.zeros(sae.d_sae, dtype=torch.long, device=sae.device)
    mean = activations.float().mean(0).to(sae.device)
    sst = 0.0
    for start in range(0, n, batch_size):
        x = activations[start : start + batch_size].to(sae.device)
        codes = sae.encode(x)
        recon = sae.decode(codes)
        sse += float((recon.float() - x.float()).pow(2).sum())
        sst += float((x.float() - mean).pow(2).sum())
        l0_sum += float((codes != 0).sum())
        counts += firing_counts(codes)
    return SAEEvaluation(
        {
            "mse": sse / n,
            "fvu": sse / sst if sst > 0 else float("nan"),
            "l0": l0_sum / n,
            "dead_fraction": float(dead_latents(counts).float().mean()),
            "dense_fraction": float(dense_latents(counts, n, dense_threshold).float().mean()),
        }
    )
