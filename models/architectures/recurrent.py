"""Vanilla RNN and LSTM sequence models (the recurrent baselines of Delétang et al., "Neural
Networks and the Chomsky Hierarchy", ICLR 2023).

Both map tokens ``(B, T)`` int64 to logits ``(B, T, vocab_size)``. Hook points (each called
once per forward, after the time loop): ``hook_embed`` ``(B, T, d_model)``, ``hook_hidden``
``(B, T, d_model)`` and, for the LSTM, ``hook_cell`` ``(B, T, d_model)``.
"""

from __future__ import annotations

import torch
from torch import nn
from transformer_lens.hook_points import HookPoint

from .config import ArchConfig


def check_tokens(tokens: torch.Tensor, vocab_size: int) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``tokens`` is a ``(B, T)`` integer tensor."""
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
    if tokens.dim() != 2:
        raise ValueError(f"tokens must have shape (batch, pos), got {tuple(tokens.shape)}")
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise TypeError(f"tokens must be integer ids, got dtype {tokens.dtype}")
    if tokens.shape[1] == 0:
        raise ValueError("tokens must have at least one position")


class RecurrentModel(nn.Module):
    """Embedding, a single-layer recurrent core run step by step, and a linear read-out.

    ``forward(tokens)``: ``(B, T)`` int64 -> logits ``(B, T, vocab_size)``. Causal, so right
    padding never affects real positions.
    """

    def __init__(self, cfg: ArchConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.embed = nn.Embedding(cfg.vocab_size, d)
        self.cell: nn.Module = nn.LSTMCell(d, d) if cfg.arch == "lstm" else nn.RNNCell(d, d)
        self.unembed = nn.Linear(d, cfg.vocab_size)
        self.hook_embed = HookPoint()
        self.hook_hidden = HookPoint()
        if cfg.arch == "lstm":
            self.hook_cell = HookPoint()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        check_tokens(tokens, self.cfg.vocab_size)
        x = self.hook_embed(self.embed(tokens))
        B, T, d = x.shape
        h = x.new_zeros(B, d)
        c = x.new_zeros(B, d)
        hs, cs = [], []
        lstm = self.cfg.arch == "lstm"
        for t in range(T):
            if lstm:
                h, c = self.cell(x[:, t], (h, c))
                cs.append(c)
            else:
                h = self.cell(x[:, t], h)
            hs.append(h)
        hidden = self.hook_hidden(torch.stack(hs, 1))
        if lstm:
            self.hook_cell(torch.stack(cs, 1))
        return self.unembed(hidden)
