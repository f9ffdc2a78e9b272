"""Transformer encoder with a choice of positional encodings, as compared by [Deletang2023].

A plain ``nn.Module`` (pre-LayerNorm blocks, bidirectional unless ``cfg.causal``), not a
TransformerLens config: TransformerLens' native models offer neither relative-bias nor ALiBi
encoders in bidirectional form, and one module keeps every encoding in one code path.

Positional encodings (``cfg.pos_encoding``):

- ``none``: no position information;
- ``sincos``: sinusoidal vectors added to the embeddings [Vaswani2017];
- ``learned``: a learned table of ``max_len`` vectors added to the embeddings;
- ``relative``: a learned per-head bias for each clipped relative distance
  ``clip(j - i, ±relative_max_distance)`` added to the attention scores ([Shaw2018]
  style; the paper uses Transformer-XL's relative encodings, of which this is the bias-only
  form);
- ``rope``: rotary embeddings of queries and keys [Su2021];
- ``alibi``: a per-head linear penalty ``-slope_h * |i - j|`` on the scores ([Press2022];
  symmetric since the encoder is bidirectional).

Hook points (module names; called once per forward): ``hook_embed`` ``(B, T, d_model)``
(after positions are added), ``blocks.{l}.hook_resid_pre``, ``blocks.{l}.attn.hook_pattern``
``(B, T, n_heads, T)`` (query position first), ``blocks.{l}.hook_attn_out``,
``blocks.{l}.hook_mlp_out``, ``blocks.{l}.hook_resid_post`` ``(B, T, d_model)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformer_lens.hook_points import HookPoint

from .config import ArchConfig
from .recurrent import check_tokens


def sincos_table(T: int, d: int) -> torch.Tensor:
    """Sinusoidal position vectors ``(T, d)``: ``sin``/``cos`` of ``pos / 10000^(2i/d)``."""
    pos = torch.arange(T, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, dtype=torch.float32) / d)
    table = torch.zeros(T, d)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : d // 2]
    return table


def rotate(x: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of ``x`` ``(B, H, T, d_head)``: pairs ``(x[2i], x[2i+1])`` rotated by
    ``pos * 10000^(-2i/d_head)``."""
    T, dh = x.shape[2], x.shape[3]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dh, 2, device=x.device) / dh)
    angle = torch.arange(T, device=x.device)[:, None] * freq  # (T, dh/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).flatten(-2)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi head slopes ``2^(-8 h / n_heads)``, ``h = 1..n_heads``."""
    return torch.pow(2.0, -8.0 * torch.arange(1, n_heads + 1) / n_heads)


class Attention(nn.Module):
    """Multi-head self-attention with the configured position scheme."""

    def __init__(self, cfg: ArchConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        if cfg.pos_encoding == "relative":
            self.rel_bias = nn.Embedding(2 * cfg.relative_max_distance + 1, cfg.n_heads)
        if cfg.pos_encoding == "alibi":
            self.register_buffer("slopes", alibi_slopes(cfg.n_heads), persistent=False)
        self.hook_pattern = HookPoint()

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        B, T, d = x.shape
        H = self.cfg.n_heads
        q, k, v = self.qkv(x).view(B, T, 3, H, d // H).permute(2, 0, 3, 1, 4)
        if self.cfg.pos_encoding == "rope":
            q, k = rotate(q), rotate(k)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // H)  # (B, H, T, T)
        rel = torch.arange(T, device=x.device)
        rel = rel[None, :] - rel[:, None]  # j - i
        if self.cfg.pos_encoding == "relative":
            r = self.cfg.relative_max_distance
            scores = scores + self.rel_bias(rel.clamp(-r, r) + r).permute(2, 0, 1)[None]
        elif self.cfg.pos_encoding == "alibi":
            scores = scores - self.slopes[:, None, None] * rel.abs()[None].to(scores.dtype)
        allowed = torch.ones(T, T, dtype=torch.bool, device=x.device)
        if self.cfg.causal:
            allowed = allowed.tril()
        allowed = allowed[None, None]
        if key_mask is not None:
            allowed = allowed & key_mask[:, None, None, :]
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        pattern = scores.softmax(-1)
        self.hook_pattern(pattern.permute(0, 2, 1, 3))
        z = (pattern @ v).transpose(1, 2).reshape(B, T, d)
        return self.out(z)


class Block(nn.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, cfg: ArchConfig) -> None:
        super().__init__()
        d_mlp = cfg.d_mlp or 4 * cfg.d_model
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, d_mlp), nn.GELU(), nn.Linear(d_mlp, cfg.d_model)
        )
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.hook_resid_pre(x)
        x = x + self.hook_attn_out(self.attn(self.ln1(x), key_mask))
        x = x + self.hook_mlp_out(self.mlp(self.ln2(x)))
        return self.hook_resid_post(x)


class TransformerEncoder(nn.Module):
    """Token embedding, positions, ``n_layers`` blocks, final LayerNorm and unembedding.

    ``forward(tokens, attention_mask=None)``: ``(B, T)`` int64 (and an optional ``(B, T)``
    mask, True/1 at real tokens, so that padding is never attended to) -> logits
    ``(B, T, vocab_size)``.
    """

    def __init__(self, cfg: ArchConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        if cfg.pos_encoding == "learned":
            self.pos_embed = nn.Embedding(cfg.max_len, cfg.d_model)
        self.hook_embed = HookPoint()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = nn.LayerNorm(cfg.d_model)
        self.unembed = nn.Linear(cfg.d_model, cfg.vocab_size)

    def forward(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_tokens(tokens, self.cfg.vocab_size)
        T = int(tokens.shape[1])
        if tokens.shape[1] > self.cfg.max_len:
            raise ValueError(f"sequence length {T} exceeds max_len={self.cfg.max_len}")
        if attention_mask is not None and attention_mask.shape != tokens.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} != tokens {tuple(tokens.shape)}"
            )
        x = self.embed(tokens) * math.sqrt(self.cfg.d_model)
        if self.cfg.pos_encoding == "sincos":
            x = x + sincos_table(T, self.cfg.d_model).to(x.device, x.dtype)
        elif self.cfg.pos_encoding == "learned":
            x = x + self.pos_embed.weight[:T]
        x = self.hook_embed(x)
        key_mask = None if attention_mask is None else attention_mask.bool()
        for block in self.blocks:
            x = block(x, key_mask)
        return self.unembed(self.ln_final(x))
