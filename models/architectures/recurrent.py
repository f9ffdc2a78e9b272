"""Vanilla RNN and LSTM sequence models (the recurrent baselines of
[Deletang2023]).

Both map tokens ``(B, T)`` int64 to logits ``(B, T, vocab_size)``. Hook points (each called
once per forward, after the time loop): ``hook_embed`` ``(B, T, d_model)``, ``hook_hidden``
``(B, T, d_model)`` and, for the LSTM, ``hook_cell`` ``(B, T, d_model)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


def rnn_step(cell: nn.RNNCell, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``nn.RNNCell``'s step ``tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)`` written out on the
    cell's own parameters (the same ops as its kernel), so that ``torch.func.vmap`` batches
    it over a stack of models (the fused kernel has no batching rule)."""
    return torch.tanh(
        F.linear(h, cell.weight_hh, cell.bias_hh) + F.linear(x, cell.weight_ih, cell.bias_ih)
    )


def lstm_step(
    cell: nn.LSTMCell, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``nn.LSTMCell``'s step written out on the cell's own parameters (gates in its order:
    input, forget, cell, output), vmappable like :func:`rnn_step`."""
    gates = F.linear(h, cell.weight_hh, cell.bias_hh) + F.linear(x, cell.weight_ih, cell.bias_ih)
    i, f, g, o = gates.chunk(4, -1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


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
                h, c = lstm_step(self.cell, x[:, t], h, c)
                cs.append(c)
            else:
                h = rnn_step(self.cell, x[:, t], h)
            hs.append(h)
        hidden = self.hook_hidden(torch.stack(hs, 1))
        if lstm:
            self.hook_cell(torch.stack(cs, 1))
        return self.unembed(hidden)
