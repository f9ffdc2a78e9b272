"""Input checks of tree projections [Murty2023a]: token sequences and word spans.

A sentence is a token sequence and the half-open token spans ``(start, end)`` of its words,
disjoint and in order; tokens in no word (special tokens) stay visible in every isolated run.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hierlens.models.tasks.base import Example

from .forward_runner import model_limits

__all__ = ["TokenizedSentence", "WordSpan", "prepare_sentences"]

WordSpan = tuple[int, int]


@dataclass(frozen=True)
class TokenizedSentence:
    """A checked input of a tree projection: the token ids of one sequence and the
    half-open token spans of its words (disjoint, increasing), as :func:`prepare_sentences`
    gives them. Not :class:`hierlens.models.Sentence`, a treebank sentence with gold trees."""

    tokens: tuple[int, ...]
    words: tuple[WordSpan, ...]  # token spans (half-open) of the words, increasing


def _as_tokens(seq: object, index: int) -> tuple[int, ...]:
    if isinstance(seq, Example):
        return tuple(int(t) for t in seq.tokens)
    if isinstance(seq, torch.Tensor):
        if seq.dim() != 1 or seq.is_floating_point() or seq.is_complex():
            raise TypeError(
                f"sequences[{index}] must be a 1-D integer tensor of token ids, "
                f"got shape {tuple(seq.shape)} dtype {seq.dtype}"
            )
        return tuple(int(t) for t in seq.tolist())
    if isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence):
        raise TypeError(
            f"sequences[{index}] must be an Example, a 1-D token tensor or a sequence of token "
            f"ids, got {type(seq).__name__}"
        )
    out = []
    for t in seq:
        if isinstance(t, bool) or not isinstance(t, numbers.Integral):
            raise TypeError(
                f"sequences[{index}] must hold integer token ids, got {type(t).__name__}"
            )
        out.append(int(t))
    return tuple(out)


def _check_words(words: object, n_tokens: int, index: int) -> tuple[WordSpan, ...]:
    if isinstance(words, (str, bytes)) or not isinstance(words, Sequence):
        raise TypeError(f"word_spans[{index}] must be a sequence of (start, end) token spans")
    out: list[WordSpan] = []
    prev_end = 0
    for k, span in enumerate(words):
        try:
            start, end = (int(x) for x in span)
        except (TypeError, ValueError):
            raise ValueError(
                f"word_spans[{index}][{k}] must be a (start, end) pair of token positions, "
                f"got {span!r}"
            ) from None
        if not 0 <= start < end <= n_tokens:
            raise ValueError(
                f"word_spans[{index}][{k}] = ({start}, {end}) does not lie in the sequence's "
                f"{n_tokens} tokens: expected 0 <= start < end <= {n_tokens}"
            )
        if start < prev_end:
            raise ValueError(
                f"word_spans[{index}][{k}] = ({start}, {end}) overlaps or precedes the previous "
                f"word (which ends at token {prev_end}); word spans must be disjoint and in order"
            )
        out.append((start, end))
        prev_end = end
    if not out:
        raise ValueError(f"sentence {index} has no words (empty sentence)")
    return tuple(out)


def prepare_sentences(
    model: torch.nn.Module,
    sequences: Sequence[object],
    word_spans: Sequence[Sequence[WordSpan]] | None,
) -> list[TokenizedSentence]:
    """Checked sentences (ValueError/TypeError naming the bad entry) of ``sequences`` (Examples,
    1-D token tensors or token-id sequences) with ``word_spans`` (default: an Example's ``word_spans`` when
    it has them, else its ``word_positions``, else every token a word); lengths and ids checked against the model's
    context and vocabulary where its config gives them."""
    if isinstance(sequences, (Example, torch.Tensor, str, bytes)) or not isinstance(
        sequences, Sequence
    ):
        raise TypeError(
            "sequences must be a list of Examples, 1-D token tensors or token-id sequences"
        )
    if len(sequences) == 0:
        raise ValueError("sequences is empty: nothing to score")
    if word_spans is not None and len(word_spans) != len(sequences):
        raise ValueError(
            f"word_spans has {len(word_spans)} entries but there are {len(sequences)} sequences"
        )
    n_ctx, d_vocab = model_limits(model)
    sentences = []
    for index, seq in enumerate(sequences):
        tokens = _as_tokens(seq, index)
        if not tokens:
            raise ValueError(f"sequence {index} is empty")
        if n_ctx is not None and len(tokens) > n_ctx:
            raise ValueError(
                f"sequence {index} has {len(tokens)} tokens, longer than the model's context "
                f"n_ctx={n_ctx}"
            )
        bad = [t for t in tokens if t < 0 or (d_vocab is not None and t >= d_vocab)]
        if bad:
            raise ValueError(
                f"sequence {index} holds token id {bad[0]} outside the vocabulary [0, {d_vocab})"
            )
        if word_spans is not None:
            words = word_spans[index]
        elif isinstance(seq, Example) and seq.word_spans:
            words = seq.word_spans  # sub-word tokens grouped into words (real sentences)
        elif isinstance(seq, Example):
            words = [(p, p + 1) for p in seq.word_positions]
        else:
            words = [(t, t + 1) for t in range(len(tokens))]
        sentences.append(TokenizedSentence(tokens, _check_words(words, len(tokens), index)))
    return sentences
