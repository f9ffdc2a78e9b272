"""The one layer numbering of hierlens' per-layer results and plots.

Layer 0 is the embeddings (what block 0 reads, ``blocks.0.hook_resid_pre``) and layer ``l``
(1 to ``n_blocks``) is the output of block ``l - 1`` (``blocks.{l-1}.hook_resid_post``), as
in [Hewitt2019]. Tree scores, structural probes and every per-layer chart use it,
and every per-layer record says so in its ``settings`` (:data:`LAYER_NUMBERING`). Functions
that take a *block* (``span_scores(layer=b)``, ``--mask-from-layer``) name block indices.
"""

from __future__ import annotations

from typing import Any

from hierlens.core.validate import is_int

__all__ = ["LAYER_NUMBERING", "block_of_layer", "check_projected_layer", "layer_of_block"]

#: how per-layer records number their layers (stored in each record's ``settings``)
LAYER_NUMBERING = "0 = embeddings; layer l = output of block l-1"


def block_of_layer(layer: int, n_blocks: int) -> int:
    """The block whose output is ``layer`` (1 to ``n_blocks``; negative counts from the last,
    ``-1`` being layer ``n_blocks``). Layer 0, the embeddings, is the output of no block: a
    ``ValueError``, as is any layer out of range."""
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"a layer must be an integer, got {layer!r}")
    if layer < 0:
        layer += n_blocks + 1
    if layer == 0:
        raise ValueError(
            "layer 0 is the embeddings, the output of no block; layers 1.."
            f"{n_blocks} are the outputs of blocks 0..{n_blocks - 1}"
        )
    if not 0 < layer <= n_blocks:
        raise ValueError(f"layer out of range: the model has layers 0..{n_blocks} (0 = embeddings)")
    return layer - 1


def check_projected_layer(name: str, layer: Any) -> None:
    """``ValueError`` unless ``layer`` can name a layer with a tree projection without
    knowing the model: an integer other than 0 (layer 0, the embeddings, is the output of no
    block). :func:`block_of_layer` checks the range once the model is known."""
    if not is_int(layer) or layer == 0:
        raise ValueError(
            f"{name} must be 1..n_blocks or negative (from the last), got {layer!r}; "
            "layer 0, the embeddings, has no tree projection"
        )


def layer_of_block(block: int, n_blocks: int) -> int:
    """The layer number of block ``block``'s output (negative blocks count from the last)."""
    if not -n_blocks <= block < n_blocks:
        raise ValueError(f"block {block} out of range for a model of {n_blocks} blocks")
    return block % n_blocks + 1
