"""Per-token probing labels from task examples, aligned with the tokens' activations.

A task :class:`~hierlens.models.tasks.Example` carries per-token labels (``token_labels``:
always ``"depth"`` in the gold tree; Dyck adds ``"nesting"``, ``"bracket_type"``,
``"is_close"``; other tasks add their own, e.g. clause membership) and per-example labels
(``labels``). This module flattens them into one array per label, in the order of the
examples' tokens, which is the row order of :func:`flatten_activations` on a right-padded
batch of the same examples (row-major, pad positions dropped). ``-1`` marks tokens where a
label does not apply; :func:`hierlens.probes.probe_sweep` ignores them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from hierlens.models.tasks.base import Example

__all__ = [
    "IGNORE_LABEL",
    "aggregate_spans",
    "flatten_activations",
    "token_labels",
    "tree_token_labels",
]

IGNORE_LABEL = -1


def tree_token_labels(example: Example) -> dict[str, np.ndarray]:
    """Labels read off the gold tree of one example, ``(T,)`` each (``-1`` off words):

    - ``"opens"``: the number of constituents of two or more words that start at the word;
    - ``"closes"``: the number of constituents of two or more words that end at the word.
    """
    T = len(example.tokens)
    opens = np.full(T, IGNORE_LABEL, dtype=np.int64)
    closes = np.full(T, IGNORE_LABEL, dtype=np.int64)
    pos = np.asarray(example.word_positions, dtype=np.int64)
    opens[pos] = 0
    closes[pos] = 0
    for i, j in example.tree:
        if j - i >= 2:
            opens[pos[i]] += 1
            closes[pos[j - 1]] += 1
    return {"opens": opens, "closes": closes}


def token_labels(
    examples: Sequence[Example],
    names: Iterable[str] | None = None,
    *,
    example_labels: bool = False,
    tree_labels: bool = False,
) -> dict[str, np.ndarray]:
    """Concatenate per-token labels over ``examples``: ``{name: (n_tokens,) int64}``.

    Args:
        examples: task examples; their tokens, in order, are the rows of the result.
        names: which ``token_labels`` to take (default: all that every example has).
        example_labels: also broadcast each example's integer and boolean ``labels`` to all
            of its tokens (floats and strings are skipped).
        tree_labels: also add :func:`tree_token_labels` (``"opens"``, ``"closes"``).

    Raises:
        ValueError: no examples, a requested label missing from an example, or a label whose
            length differs from the example's number of tokens.
    """
    if len(examples) == 0:
        raise ValueError("token_labels needs at least one example")
    common = set(examples[0].token_labels)
    for ex in examples[1:]:
        common &= set(ex.token_labels)
    if names is None:
        wanted = [n for n in examples[0].token_labels if n in common]
    else:
        wanted = list(names)
        missing = [n for n in wanted if n not in common]
        if missing:
            raise ValueError(
                f"token label(s) {missing} are not given for every example; "
                f"available in all: {sorted(common)}"
            )
    out: dict[str, list[np.ndarray]] = {n: [] for n in wanted}
    ex_names: list[str] = []
    if example_labels:
        ex_names = [
            n
            for n, v in examples[0].labels.items()
            if isinstance(v, (bool, int, np.integer, np.bool_))
            and all(
                isinstance(e.labels.get(n), (bool, int, np.integer, np.bool_)) for e in examples
            )
        ]
        for n in ex_names:
            out.setdefault(n, [])
    if tree_labels:
        out.setdefault("opens", [])
        out.setdefault("closes", [])
    for idx, ex in enumerate(examples):
        T = len(ex.tokens)
        for n in wanted:
            arr = np.asarray(ex.token_labels[n], dtype=np.int64)
            if arr.shape != (T,):
                raise ValueError(
                    f"example {idx}: token label {n!r} has {arr.size} entries for {T} tokens"
                )
            out[n].append(arr)
        for n in ex_names:
            out[n].append(np.full(T, int(ex.labels[n]), dtype=np.int64))
        if tree_labels:
            for n, arr in tree_token_labels(ex).items():
                out[n].append(arr)
    return {n: np.concatenate(parts) for n, parts in out.items()}


def flatten_activations(acts: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``(B, T, d)`` activations of a right-padded batch -> ``(n_tokens, d)`` real tokens,
    row-major (example by example), the order of :func:`token_labels`."""
    if acts.ndim != 3 or tuple(attention_mask.shape) != tuple(acts.shape[:2]):
        raise ValueError(
            f"need acts (B, T, d) and attention_mask (B, T), got {tuple(acts.shape)} and "
            f"{tuple(attention_mask.shape)}"
        )
    return acts[attention_mask.to(device=acts.device, dtype=torch.bool)]


def aggregate_spans(
    acts: torch.Tensor, spans: torch.Tensor | Sequence[tuple[int, int, int]], how: str = "mean"
) -> torch.Tensor:
    """Pool token activations over spans: ``(B, T, d)`` and ``(S, 3)`` rows ``(b, i, j)``
    (half-open token range ``[i, j)`` of batch row ``b``) -> ``(S, d)`` mean or max.

    Spans may overlap or nest (e.g. all constituents of a gold tree); all are pooled at once.
    """
    if how not in ("mean", "max"):
        raise ValueError(f"how must be 'mean' or 'max', got {how!r}")
    if acts.ndim != 3:
        raise ValueError(f"acts must be (B, T, d), got shape {tuple(acts.shape)}")
    sp = torch.as_tensor(spans, dtype=torch.long, device=acts.device).reshape(-1, 3)
    B, T, d = acts.shape
    if len(sp) == 0:
        return acts.new_zeros(0, d)
    b, i, j = sp.unbind(-1)
    if bool(((b < 0) | (b >= B) | (i < 0) | (j > T) | (j <= i)).any()):
        raise ValueError(f"every span needs 0 <= b < {B} and 0 <= i < j <= {T}")
    width = int((j - i).max())
    offs = torch.arange(width, device=acts.device)
    pos = i[:, None] + offs[None]  # (S, width)
    valid = pos < j[:, None]
    vals = acts[b[:, None], pos.clamp_max(T - 1)]  # (S, width, d)
    if how == "mean":
        vals = torch.where(valid[..., None], vals, torch.zeros((), dtype=acts.dtype))
        return vals.sum(1) / (j - i)[:, None].to(acts.dtype)
    vals = torch.where(valid[..., None], vals, torch.full((), -torch.inf, dtype=acts.dtype))
    return vals.amax(1)
