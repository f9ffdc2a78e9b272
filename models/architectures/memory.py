"""Memory-augmented recurrent networks of [Deletang2023]: the Stack-RNN [Joulin2015] and the
Tape-RNN.

At every step the controller (a vanilla RNN cell) reads the token embedding concatenated with
the memory cell under the head (the stack top, the tape cell at the head), then emits logits,
a softmax over memory actions and a value (``tanh``) to write; the memory becomes the
action-weighted mixture of the memories each action would produce (:func:`stack_update`,
:func:`tape_update`). With one-hot actions this is an exact stack or tape.

Hook points (each called once per forward after the time loop, shapes for ``(B, T)`` tokens):
``hook_embed`` ``(B, T, d_model)``, ``hook_read`` ``(B, T, memory_dim)`` (the cell read at
each step, before the update), ``hook_hidden`` ``(B, T, d_model)``, ``hook_actions``
``(B, T, n_actions)`` (probabilities), and ``hook_stack`` ``(B, T, memory_size, memory_dim)``
(top first) or ``hook_tape`` ``(B, T, memory_size, memory_dim)`` (head cell first), the memory
after each step's update.
"""

from __future__ import annotations

import torch
from torch import nn
from transformer_lens.hook_points import HookPoint

from .config import ArchConfig
from .recurrent import check_tokens, rnn_step

#: Stack-RNN actions, in the order of ``hook_actions``' last axis
STACK_ACTIONS = ("push", "pop", "no_op")
#: Tape-RNN actions: every action writes the value at the head, then moves the head
TAPE_ACTIONS = ("write_stay", "write_left", "write_right", "jump_left", "jump_right")


def stack_update(stack: torch.Tensor, actions: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """One soft stack step: ``push * [value, stack[:-1]] + pop * [stack[1:], 0] + no_op *
    stack``.

    Args:
        stack: ``(B, S, D)``, top cell first.
        actions: ``(B, 3)`` probabilities of push, pop, no-op.
        value: ``(B, D)`` the value a push writes on top.

    Returns:
        The new stack ``(B, S, D)`` (a push drops the bottom cell; a pop shifts in zeros).
    """
    pushed = torch.cat([value[:, None], stack[:, :-1]], 1)
    popped = torch.cat([stack[:, 1:], torch.zeros_like(stack[:, :1])], 1)
    a = actions[:, :, None, None]
    return a[:, 0] * pushed + a[:, 1] * popped + a[:, 2] * stack


def tape_update(
    tape: torch.Tensor, actions: torch.Tensor, value: torch.Tensor, jump: torch.Tensor
) -> torch.Tensor:
    """One soft tape step: write ``value`` at the head, then move the head by 0, -1, +1,
    ``-jump`` or ``+jump`` cells (circular tape), mixing the five results by ``actions``.

    The tape is stored relative to the head (cell 0 is under the head), so moving the head by
    ``k`` rolls the tape: ``new[i] = written[(i + k) mod M]``.

    Args:
        tape: ``(B, M, D)``, the cell under the head first.
        actions: ``(B, 5)`` probabilities in the order of :data:`TAPE_ACTIONS`.
        value: ``(B, D)`` the value written under the head.
        jump: ``(B,)`` int64 jump distance (the paper jumps by the input length).

    Returns:
        The new tape ``(B, M, D)``.
    """
    M = tape.shape[1]
    written = torch.cat([value[:, None], tape[:, 1:]], 1)
    idx = torch.arange(M, device=tape.device)
    moved = [written, written.roll(1, 1), written.roll(-1, 1)]
    for sign in (-1, 1):
        where = (idx[None, :] + sign * jump[:, None]) % M  # (B, M)
        moved.append(written.gather(1, where[:, :, None].expand_as(written)))
    stacked = torch.stack(moved, 1)  # (B, 5, M, D)
    return (actions[:, :, None, None] * stacked).sum(1)


class MemoryRNN(nn.Module):
    """Stack-RNN (``cfg.arch == "stack_rnn"``) or Tape-RNN (``"tape_rnn"``).

    ``forward(tokens)``: ``(B, T)`` int64 -> logits ``(B, T, vocab_size)``. Causal. The
    Tape-RNN's jump distance is each sequence's count of tokens that are neither
    ``cfg.pad_id`` nor ``cfg.blank_id`` (the input length in the Chomsky tasks' layout).
    """

    def __init__(self, cfg: ArchConfig) -> None:
        super().__init__()
        if cfg.arch not in ("stack_rnn", "tape_rnn"):
            raise ValueError(f"MemoryRNN builds stack_rnn or tape_rnn, not {cfg.arch!r}")
        self.cfg = cfg
        d, m = cfg.d_model, cfg.memory_dim
        self.is_stack = cfg.arch == "stack_rnn"
        self.n_actions = len(STACK_ACTIONS if self.is_stack else TAPE_ACTIONS)
        self.embed = nn.Embedding(cfg.vocab_size, d)
        self.cell = nn.RNNCell(d + m, d)
        self.action_head = nn.Linear(d, self.n_actions)
        self.value_head = nn.Linear(d, m)
        self.unembed = nn.Linear(d, cfg.vocab_size)
        self.hook_embed = HookPoint()
        self.hook_read = HookPoint()
        self.hook_hidden = HookPoint()
        self.hook_actions = HookPoint()
        if self.is_stack:
            self.hook_stack = HookPoint()
        else:
            self.hook_tape = HookPoint()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        check_tokens(tokens, self.cfg.vocab_size)
        x = self.hook_embed(self.embed(tokens))
        B, T, d = x.shape
        h = x.new_zeros(B, d)
        memory = x.new_zeros(B, self.cfg.memory_size, self.cfg.memory_dim)
        jump = ((tokens != self.cfg.pad_id) & (tokens != self.cfg.blank_id)).sum(1)
        reads, hs, acts, mems = [], [], [], []
        for t in range(T):
            read = memory[:, 0]
            h = rnn_step(self.cell, torch.cat([x[:, t], read], -1), h)
            actions = self.action_head(h).softmax(-1)
            value = torch.tanh(self.value_head(h))
            if self.is_stack:
                memory = stack_update(memory, actions, value)
            else:
                memory = tape_update(memory, actions, value, jump)
            reads.append(read)
            hs.append(h)
            acts.append(actions)
            mems.append(memory)
        self.hook_read(torch.stack(reads, 1))
        hidden = self.hook_hidden(torch.stack(hs, 1))
        self.hook_actions(torch.stack(acts, 1))
        hook = self.hook_stack if self.is_stack else self.hook_tape
        hook(torch.stack(mems, 1))
        return self.unembed(hidden)
