"""``build_model``: one entry point for every architecture family."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import ArchConfig
from .encoder import TransformerEncoder
from .memory import MemoryRNN
from .recurrent import RecurrentModel


def build_model(config: ArchConfig | dict[str, Any]) -> nn.Module:
    """Build the model ``config.arch`` (initialised from ``config.seed``; the global RNG is
    left untouched). A dict is read with :meth:`ArchConfig.from_dict`.

    The model maps ``(B, T)`` int64 tokens to ``(B, T, vocab_size)`` logits and keeps the
    config as ``model.cfg`` and ``model.hierlens_config`` (what :func:`~hierlens.models.train`
    saves in ``config.json`` so that :meth:`~hierlens.models.Run.load_model` rebuilds it).
    """
    if isinstance(config, dict):
        config = ArchConfig.from_dict(config)
    if not isinstance(config, ArchConfig):
        raise TypeError(f"config must be an ArchConfig or dict, got {type(config).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model: nn.Module
        if config.arch in ("rnn", "lstm"):
            model = RecurrentModel(config)
        elif config.arch in ("stack_rnn", "tape_rnn"):
            model = MemoryRNN(config)
        else:
            model = TransformerEncoder(config)
    model.hierlens_config = config
    return model
