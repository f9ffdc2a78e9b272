"""The configuration of the sequence architectures (:func:`build_model`)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from hierlens.core.config import Config
from hierlens.core.validate import check_int

if TYPE_CHECKING:  # pragma: no cover
    from ..tasks.base import Task

ARCHS = ("rnn", "lstm", "stack_rnn", "tape_rnn", "transformer")
POS_ENCODINGS = ("none", "sincos", "learned", "relative", "rope", "alibi")


@dataclasses.dataclass(frozen=True)
class ArchConfig(Config):
    """One model of the architecture families compared by [Deletang2023].

    Attributes:
        arch: ``rnn``, ``lstm``, ``stack_rnn``, ``tape_rnn`` or ``transformer``.
        vocab_size: number of token ids (input and output share one vocabulary).
        d_model: embedding and hidden width (recurrent controllers and transformer residual).
        n_layers, n_heads, d_mlp: transformer depth, heads and MLP width (0: ``4 * d_model``).
        pos_encoding: transformer positional encoding, one of ``none``, ``sincos``,
            ``learned``, ``relative``, ``rope``, ``alibi``.
        max_len: longest sequence (learned positions are a table of this size).
        causal: causal transformer attention (the paper's encoder is bidirectional).
        relative_max_distance: clipping distance of the ``relative`` position biases.
        memory_size: stack cells (Stack-RNN) or tape cells (Tape-RNN).
        memory_dim: width of one stack or tape cell.
        pad_id, blank_id: token ids not counted in the input length the Tape-RNN jumps by.
        seed: initialisation seed.
    """

    bidirectional_archs: ClassVar[tuple[str, ...]] = ("transformer",)
    FIELD_CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "arch": ARCHS,
        "pos_encoding": POS_ENCODINGS,
    }

    arch: str = "lstm"
    vocab_size: int = 16
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_mlp: int = 0
    pos_encoding: str = "sincos"
    max_len: int = 512
    causal: bool = False
    relative_max_distance: int = 32
    memory_size: int = 32
    memory_dim: int = 8
    pad_id: int = 0
    blank_id: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        self.check_choices()
        for field in (
            "vocab_size",
            "d_model",
            "n_layers",
            "n_heads",
            "max_len",
            "relative_max_distance",
            "memory_size",
            "memory_dim",
        ):
            check_int(field, getattr(self, field))
        check_int("d_mlp", self.d_mlp, minimum=0)
        if self.arch == "transformer" and self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.pos_encoding == "rope" and (self.d_model // self.n_heads) % 2:
            raise ValueError("rope needs an even head dimension (d_model / n_heads)")

    @classmethod
    def for_task(cls, task: Task, **kwargs: Any) -> ArchConfig:
        """A config whose vocabulary, ``max_len`` and pad/blank ids fit ``task`` (other
        fields from ``kwargs``)."""
        kwargs.setdefault("vocab_size", len(task.vocab))
        kwargs.setdefault("max_len", task.max_len)
        kwargs.setdefault("pad_id", task.pad_id)
        blank = getattr(task, "blank_id", None)
        if blank is not None:
            kwargs.setdefault("blank_id", blank)
        return cls(**kwargs)

    @property
    def n_ctx(self) -> int | float:
        """Longest sequence the model accepts: ``max_len`` for the transformer; recurrent
        models take any length (``inf``)."""
        return self.max_len if self.arch == "transformer" else float("inf")

    @property
    def d_vocab(self) -> int:
        """Alias of ``vocab_size`` (the name hierlens' capture checks token ids against)."""
        return self.vocab_size

    @property
    def attention_dir(self) -> str:
        """``bidirectional`` for a non-causal transformer, else ``causal``."""
        if self.arch in self.bidirectional_archs and not self.causal:
            return "bidirectional"
        return "causal"
