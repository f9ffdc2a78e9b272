"""hierlens.sae: sparse autoencoders (MP-SAE, Matryoshka and the ReLU/TopK/BatchTopK/JumpReLU family) in
one registry, the fused multi-SAE trainer and its config, SAE metrics, SAELens-format files,
grids, and description length / MDL selection [Ayonrinde2024]."""

import warnings as _warnings

from .base import SAE, Encoded, SAEConfig, SAEOutput, StackedOutput, StepContext, sae_class
from .batch_topk import BatchTopKSAE, BatchTopKSAEConfig
from .digits import load_digits_images, load_mnist, read_idx
from .files import load_sae, save_sae
from .frontier import FrontierSpec, frontier_curves, frontier_records, frontier_saes, train_frontier
from .grid import build_sae_grid, grid_name
from .ground_truth import (
    correlation_matrix,
    cosine_matrix,
    evaluate_ground_truth,
    feature_recovery,
    ground_truth_recovery,
)
from .jumprelu import JumpReLUSAE, JumpReLUSAEConfig
from .matching_pursuit import MatchingPursuitSAE, MatchingPursuitSAEConfig
from .matryoshka import MatryoshkaBatchTopKSAE, MatryoshkaBatchTopKSAEConfig
from .mdl import DescriptionLength, PrecisionSearch, description_length, quantise, search_bin_width
from .mdl_fit import MDLFit, fit_mdl_sae
from .mdl_select import MDLSelection, NoSAEMeetsBoundError, mdl_select
from .metrics import (
    dead_latents,
    dense_latents,
    evaluate_sae,
    firing_counts,
    fvu,
    l0,
    mse,
    spliced_ce,
)
from .relu import ReluSAE, ReluSAEConfig
from .topk import TopKSAE, TopKSAEConfig
from .train import SAETrainResult, lr_multiplier, train_saes
from .train_config import SAETrainConfig

load = load_sae
save = save_sae


def __getattr__(name: str):
    if name == "TrainResult":
        _warnings.warn(
            "hierlens.sae.TrainResult was renamed hierlens.sae.SAETrainResult (the old name "
            "will be removed in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        return SAETrainResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "Encoded",
    "FrontierSpec",
    "JumpReLUSAE",
    "JumpReLUSAEConfig",
    "MatchingPursuitSAE",
    "MatchingPursuitSAEConfig",
    "MatryoshkaBatchTopKSAE",
    "MatryoshkaBatchTopKSAEConfig",
    "ReluSAE",
    "ReluSAEConfig",
    "SAEConfig",
    "SAEOutput",
    "SAETrainConfig",
    "SAETrainResult",
    "StackedOutput",
    "StepContext",
    "TopKSAE",
    "TopKSAEConfig",
    "build_sae_grid",
    "correlation_matrix",
    "cosine_matrix",
    "dead_latents",
    "dense_latents",
    "evaluate_ground_truth",
    "evaluate_sae",
    "feature_recovery",
    "firing_counts",
    "frontier_curves",
    "frontier_records",
    "frontier_saes",
    "fvu",
    "grid_name",
    "ground_truth_recovery",
    "l0",
    "load",
    "load_sae",
    "lr_multiplier",
    "mse",
    "sae_class",
    "save",
    "save_sae",
    "spliced_ce",
    "train_frontier",
    "train_saes",
]
