"""hierlens.sae: sparse autoencoders (MP-SAE and the ReLU/TopK/BatchTopK/JumpReLU family),
the fused multi-SAE trainer, SAE metrics and SAELens-format files."""

from .base import SAE, SAEConfig, SAEOutput, StackedOutput, StepContext
from .batch_topk import BatchTopKSAE, BatchTopKSAEConfig
from .files import load_sae, save_sae
from .jumprelu import JumpReLUSAE, JumpReLUSAEConfig
from .matching_pursuit import MatchingPursuitSAE, MatchingPursuitSAEConfig
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
