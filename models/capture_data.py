"""The data a capture reads and the rows it stores.

:func:`~hierlens.models.capture.capture` takes token sequences in several forms (a
``(n_sequences, seq_len)`` tensor, a list of sequences, task ``Example`` s or a task split);
here they become one flat token array with offsets and per-token labels, checked against the
model's context and vocabulary, and the tokens to store become one flat mask: the selected
positions, or with word pooling each word's first token. The data's digest is part of the
store's identity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import torch

#: a per-sequence position selector: ``f(tokens_1d)`` -> a boolean mask or the indices to keep
PositionSelector = Callable[[torch.Tensor], torch.Tensor | np.ndarray | Sequence[int]]
#: what ``positions`` may be: None (every real token), a boolean ``(n_sequences, >= len)``
#: mask (tensor or array), a list of per-sequence boolean masks, or a :data:`PositionSelector`
Positions: TypeAlias = (
    torch.Tensor
    | np.ndarray
    | Sequence[Sequence[bool] | np.ndarray | torch.Tensor]
    | PositionSelector
    | None
)


@dataclass
class _Data:
    """Sequences as one flat token array plus offsets (CSR layout), and per-token labels."""

    tokens: torch.Tensor  # (n_input_tokens,) int64
    offsets: torch.Tensor  # (n_sequences + 1,) int64
    labels: dict[str, torch.Tensor] = field(default_factory=dict)  # flat, aligned with tokens
    source: dict[str, Any] = field(default_factory=dict)
    #: per sequence, the half-open token span of each word (Examples only; else None)
    word_spans: list[list[tuple[int, int]]] | None = None

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def __len__(self) -> int:
        return len(self.offsets) - 1


def _as_int_tensor(x: Any, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.numel() == 0:
        return t.to(torch.int64).cpu()
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{what} must hold integers, got dtype {t.dtype}")
    return t.to(torch.int64).cpu()


def _flatten_sequences(seqs: Sequence[Any], what: str) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [_as_int_tensor(s, f"{what}[{i}]").reshape(-1) for i, s in enumerate(seqs)]
    for i, p in enumerate(parts):
        if p.numel() == 0:
            raise ValueError(f"{what}[{i}] is empty; every sequence needs at least one token")
    lengths = torch.tensor([len(p) for p in parts], dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    return torch.cat(parts), offsets


def _is_task_split(data: Any) -> bool:
    from .tasks.base import Task

    return (
        isinstance(data, tuple)
        and len(data) == 4
        and isinstance(data[0], (Task, str))
        and isinstance(data[1], str)
    )


def _prepare_data(data: Any, labels: Mapping[str, Any] | None) -> _Data:
    from .tasks.base import Example, check_split
    from .tasks.registry import get_task

    source: dict[str, Any] = {}
    if _is_task_split(data):
        task, split, n, seed = data
        check_split(split)
        task = get_task(task) if isinstance(task, str) else task
        source = {"task": task.name, "params": task.to_dict(), "split": split}
        source.update(n=int(n), seed=int(seed))
        data = task.sample(n, split, seed)
    if isinstance(data, (torch.Tensor, np.ndarray)):
        tokens = _as_int_tensor(data, "data")
        if tokens.dim() != 2 or tokens.numel() == 0:
            raise ValueError(
                f"a token tensor must be (n_sequences, seq_len) and non-empty, got shape "
                f"{tuple(tokens.shape)}"
            )
        n, t = tokens.shape
        out = _Data(tokens.reshape(-1), torch.arange(n + 1, dtype=torch.int64) * t, source=source)
    elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        if len(data) == 0:
            raise ValueError("data is empty")
        if all(isinstance(e, Example) for e in data):
            flat, offsets = _flatten_sequences([e.tokens for e in data], "data")
            out = _Data(flat, offsets, source=source)
            names = set(data[0].token_labels)
            for e in data:
                if set(e.token_labels) != names:
                    raise ValueError("all examples must carry the same token_labels")
            for name in sorted(names):
                out.labels[name], _ = _flatten_sequences(
                    [e.token_labels[name] for e in data], f"token_labels[{name!r}]"
                )
            out.word_spans = [
                [tuple(s) for s in e.word_spans]
                if e.word_spans
                else [(p, p + 1) for p in e.word_positions]
                for e in data
            ]
        else:
            flat, offsets = _flatten_sequences(data, "data")
            out = _Data(flat, offsets, source=source)
    else:
        raise TypeError(
            "data must be a (n_sequences, seq_len) token tensor, a list of token sequences, "
            "a list of Examples or a task split (task, split, n, seed); got "
            f"{type(data).__name__}"
        )
    if out.tokens.numel() and int(out.tokens.min()) < 0:
        raise ValueError("token ids must be non-negative")
    for name, value in (labels or {}).items():
        flat = _flat_like(value, out, f"labels[{name!r}]", torch.int64)
        if name in out.labels:
            raise ValueError(f"label {name!r} is given twice (by the examples and by labels=)")
        out.labels[name] = flat
    for name, value in out.labels.items():
        if value.shape != out.tokens.shape:
            raise ValueError(f"token label {name!r} is not aligned with the tokens")
    return out


def _flat_like(value: Any, data: _Data, what: str, dtype: torch.dtype) -> torch.Tensor:
    """A per-token array given as a padded 2-D array ``(n_sequences, >= max_len)`` or as a
    list of per-sequence arrays, flattened to ``data``'s layout."""
    lengths = data.lengths
    if isinstance(value, (torch.Tensor, np.ndarray)):
        t = torch.as_tensor(value).cpu()
        if t.dim() != 2 or t.shape[0] != len(data) or t.shape[1] < int(lengths.max()):
            raise ValueError(
                f"{what}: expected shape ({len(data)}, >= {int(lengths.max())}), "
                f"got {tuple(t.shape)}"
            )
        valid = torch.arange(t.shape[1])[None, :] < lengths[:, None]
        return t[valid].to(dtype)
    if isinstance(value, Sequence) and len(value) == len(data):
        parts = [torch.as_tensor(np.asarray(v)).reshape(-1) for v in value]
        for i, p in enumerate(parts):
            if len(p) != int(lengths[i]):
                raise ValueError(f"{what}[{i}] has {len(p)} entries, sequence {i} has {lengths[i]}")
        return torch.cat(parts).to(dtype)
    raise ValueError(f"{what} must be a 2-D array or a list of {len(data)} per-sequence arrays")


def _position_mask(positions: Positions, data: _Data) -> torch.Tensor:
    """The flat boolean selection mask (True = store this token)."""
    if positions is None:
        return torch.ones(data.tokens.shape, dtype=torch.bool)
    if callable(positions):
        parts = []
        for i in range(len(data)):
            seq = data.tokens[data.offsets[i] : data.offsets[i + 1]]
            chosen = torch.as_tensor(positions(seq.clone())).reshape(-1)
            mask = torch.zeros(len(seq), dtype=torch.bool)
            if chosen.dtype == torch.bool:
                if len(chosen) != len(seq):
                    raise ValueError(
                        f"positions(sequence {i}) returned a mask of length {len(chosen)} "
                        f"for a sequence of {len(seq)} tokens"
                    )
                mask = chosen.cpu()
            else:
                idx = chosen.to(torch.int64).cpu()
                if len(idx) and (int(idx.min()) < -len(seq) or int(idx.max()) >= len(seq)):
                    raise ValueError(f"positions(sequence {i}) returned an out-of-range index")
                mask[idx] = True
            parts.append(mask)
        return torch.cat(parts)
    mask = _flat_like(positions, data, "positions", torch.bool)
    if isinstance(positions, (torch.Tensor, np.ndarray)) and torch.as_tensor(
        positions
    ).dtype not in (torch.bool,):
        raise TypeError("a positions mask must be boolean")
    return mask


POOLS = ("first", "last", "mean")


def _word_rows(data: _Data) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For word pooling: the flat mask of each word's first token (one stored row per word,
    in word order), and, aligned with the tokens, each word's length in tokens and its word
    index (both set at the word's first token, 0 elsewhere)."""
    if data.word_spans is None:
        raise ValueError(
            "pool needs data given as Examples with words (word_spans or word_positions), "
            "e.g. from hierlens.models.tokenize_words"
        )
    n = len(data.tokens)
    starts, lens, words = [], [], []
    for i, spans in enumerate(data.word_spans):
        length, base = int(data.lengths[i]), int(data.offsets[i])
        if not spans:
            raise ValueError(f"example {i} has no words to pool")
        prev_end = 0
        for w, (a, b) in enumerate(spans):
            if not (prev_end <= a < b <= length):
                raise ValueError(
                    f"example {i}: word {w} spans tokens [{a}, {b}); word spans must be "
                    f"non-empty, in order, non-overlapping and within the {length} tokens"
                )
            prev_end = b
            starts.append(base + a)
            lens.append(b - a)
            words.append(w)
    idx = torch.tensor(starts, dtype=torch.int64)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[idx] = True
    word_len = torch.zeros(n, dtype=torch.int64)
    word_len[idx] = torch.tensor(lens, dtype=torch.int64)
    word_index = torch.zeros(n, dtype=torch.int64)
    word_index[idx] = torch.tensor(words, dtype=torch.int64)
    return mask, word_len, word_index


def _select_rows(
    model: torch.nn.Module, d: _Data, positions: Positions, pool: str | None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The flat mask of the tokens :func:`capture` stores (one per word with ``pool``), after
    checking the data against the model's context length and vocabulary; returns the mask and,
    with ``pool``, each word's token count and each token's word index (else None, None)."""
    n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
    if isinstance(n_ctx, int) and n_ctx > 0 and int(d.lengths.max()) > n_ctx:
        k = int(torch.argmax(d.lengths))
        raise ValueError(
            f"sequence {k} has {int(d.lengths[k])} tokens, longer than the model's context "
            f"n_ctx={n_ctx}; drop or shorten it (tokenize_words(..., max_length=n_ctx))"
        )
    word_len = word_index = None
    if pool is None:
        mask = _position_mask(positions, d)
    else:
        mask, word_len, word_index = _word_rows(d)
    d_vocab = getattr(getattr(model, "cfg", None), "d_vocab", None)
    if isinstance(d_vocab, int) and d_vocab > 0 and int(d.tokens.max()) >= d_vocab:
        raise ValueError(f"token id {int(d.tokens.max())} is out of range for d_vocab={d_vocab}")
    n_rows = int(mask.sum())
    if n_rows == 0:
        raise ValueError("positions select no token: nothing to capture")

    return mask, word_len, word_index


def _data_sha256(data: _Data, mask: torch.Tensor) -> str:
    h = hashlib.sha256()
    for name, t in [("tokens", data.tokens), ("offsets", data.offsets), ("mask", mask)]:
        h.update(name.encode())
        h.update(t.numpy().tobytes())
    for name in sorted(data.labels):
        h.update(f"label.{name}".encode())
        h.update(data.labels[name].numpy().tobytes())
    return h.hexdigest()
