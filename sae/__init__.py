"""hierlens.sae: sparse autoencoders (MP-SAE, Matryoshka and the ReLU/TopK/BatchTopK/JumpReLU family) in
one registry, the fused multi-SAE trainer and its config, SAE metrics, SAELens-format files,
grids, and description length / MDL selection [Ayonrinde2024]."""

from .base import SAE, sae_class
from .batch_topk import BatchTopKSAE, BatchTopKSAEConfig
from .config import SAEConfig
from .digits import load_digits_images, load_mnist, read_idx
from .files import is_saved, load_sae
from .frontier import FrontierSpec, frontier_curves, frontier_records, frontier_saes, train_frontier
from .grid import SAEGridConfig, build_sae_grid, grid_name
from .grid_train import GridSpec, SAEGridFit, grid_table, train_sae_grid
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
)
from .outputs import Encoded, SAEOutput, StackedOutput, StepContext
from .relu import ReluSAE, ReluSAEConfig
from .spliced_loss import spliced_ce
from .topk import TopKSAE, TopKSAEConfig
from .train import SAETrainResult, train_saes
from .train_config import SAETrainConfig

__all__ = [
    "DescriptionLength",
    "GridSpec",
    "MDLFit",
    "SAEGridConfig",
    "SAEGridFit",
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
    "grid_table",
    "ground_truth_recovery",
    "l0",
    "is_saved",
    "load_sae",
    "mse",
    "sae_class",
    "spliced_ce",
    "train_frontier",
    "train_sae_grid",
    "train_saes",
]
