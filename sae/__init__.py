"""hierlens.sae: sparse autoencoders (MP-SAE and the ReLU/TopK/BatchTopK/JumpReLU family),
the fused multi-SAE trainer, SAE metrics, SAELens-format files, and description length / MDL
selection (Ayonrinde et al. 2024)."""

from .base import SAE, SAEConfig, SAEOutput, StackedOutput, StepContext
from .batch_topk import BatchTopKSAE, BatchTopKSAEConfig
from .digits import load_digits_images, load_mnist, read_idx
from .files import load_sae, save_sae
from .jumprelu import JumpReLUSAE, JumpReLUSAEConfig
from .matching_pursuit import MatchingPursuitSAE, MatchingPursuitSAEConfig
from .mdl import DescriptionLength, PrecisionSearch, description_length, quantise, search_bin_width
from .mdl_select import MDLFit, MDLSelection, NoSAEMeetsBoundError, fit_mdl_sae, mdl_select
from .metrics import (
    cosine_matrix,
    dead_latents,
    dense_latents,
    evaluate_sae,
    feature_recovery,
    firing_counts,
    fvu,
    l0,
    mse,
    spliced_ce,
)
from .relu import ReluSAE, ReluSAEConfig
from .topk import TopKSAE, TopKSAEConfig
from .train import TrainResult, lr_multiplier, train_saes

load = load_sae
save = save_sae

__all__ = [
    "DescriptionLength",
    "MDLFit",
    "MDLSelection",
    "NoSAEMeetsBoundError",
    "PrecisionSearch",
    "description_length",
    "fit_mdl_sae",
    "load_digits_images",
    "load_mnist",
    "mdl_select",
    "quantise",
    "read_idx",
    "search_bin_width",
    "SAE",
    "BatchTopKSAE",
    "BatchTopKSAEConfig",
    "JumpReLUSAE",
    "JumpReLUSAEConfig",
    "MatchingPursuitSAE",
    "MatchingPursuitSAEConfig",
    "ReluSAE",
    "ReluSAEConfig",
    "SAEConfig",
    "SAEOutput",
    "StackedOutput",
    "StepContext",
    "TopKSAE",
    "TopKSAEConfig",
    "TrainResult",
    "cosine_matrix",
    "dead_latents",
    "dense_latents",
    "evaluate_sae",
    "feature_recovery",
    "firing_counts",
    "fvu",
    "l0",
    "load",
    "load_sae",
    "lr_multiplier",
    "mse",
    "save",
    "save_sae",
    "spliced_ce",
    "train_saes",
]
