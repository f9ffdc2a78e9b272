"""Sequence architectures of [Deletang2023]: vanilla RNN, LSTM, Stack-RNN, Tape-RNN and a
transformer encoder with six positional encodings. All are plain ``nn.Module`` s mapping
``(B, T)`` int64 tokens to ``(B, T, vocab_size)`` logits, with TransformerLens ``HookPoint``
submodules (module names such as ``hook_hidden`` , ``hook_stack`` ) that hierlens' ``capture``
reads like any module.
"""

from .build import build_model
from .config import ARCHS, POS_ENCODINGS, ArchConfig
from .encoder import TransformerEncoder
from .memory import STACK_ACTIONS, TAPE_ACTIONS, MemoryRNN, stack_update, tape_update
from .recurrent import RecurrentModel

__all__ = [
    "ARCHS",
    "POS_ENCODINGS",
    "STACK_ACTIONS",
    "TAPE_ACTIONS",
    "ArchConfig",
    "MemoryRNN",
    "RecurrentModel",
    "TransformerEncoder",
    "build_model",
    "stack_update",
    "tape_update",
]
