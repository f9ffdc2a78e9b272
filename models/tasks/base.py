"""The task protocol: what every hierarchical task in hierlens provides.

A task is a frozen, JSON-serialisable dataclass (its fields are its parameters) that

- names its ``vocab`` (token strings; ``<pad>``, ``<bos>``, ``<eos>`` first, then task markers
  and symbols);
- samples examples for a split (``train``, ``test_id``: in-distribution and disjoint from
  train, ``test_ood``: the generalisation split) deterministically from a seed;
- gives every example its token ids, training targets (which positions are trained, and on
  what), the gold tree over the input words as nested spans, per-token labels (at least the
  depth in the gold tree) and per-example labels;
- evaluates a model on a split with the task's own metric.

Targets are aligned with positions: ``targets[t]`` is what the model's output at position
``t`` is trained to predict (the next token for language-model tasks, the original token at a
masked position for masked tasks) or :data:`IGNORE_INDEX` where nothing is trained.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from hierlens.core.config import Config
from hierlens.core.device import model_device
from hierlens.core.validate import check_int, require

from ..forward import evaluating, model_logits

IGNORE_INDEX = -100
SPLITS = ("train", "test_id", "test_ood")
PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"

Span = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Example:
    """One sequence of a task.

    Attributes:
        tokens: input token ids, ``(T,)``, including ``<bos>``/``<eos>`` and task markers.
        targets: ``(T,)`` training targets, :data:`IGNORE_INDEX` where nothing is trained.
        word_positions: token position of each input word (the leaves of the gold tree).
        tree: the gold tree as constituent spans over word indices, half-open ``(i, j)``,
            including the whole-sentence span ``(0, n_words)``; sorted by start, longest first.
        token_labels: per-token integer labels aligned with ``tokens`` (``-1`` where a label
            does not apply); always holds ``"depth"``, the number of gold constituents (the
            root included) that contain the token's word, so 1 for a word directly under the
            root and 0 for tokens that are not words.
        labels: per-example labels (ints, floats, bools or strings).
        word_spans: half-open token range ``(i, j)`` of each input word, for inputs whose words
            span several sub-word tokens (real sentences); empty when each word is the one
            token at ``word_positions``.
    """

    tokens: tuple[int, ...]
    targets: tuple[int, ...]
    word_positions: tuple[int, ...]
    tree: tuple[Span, ...]
    token_labels: Mapping[str, tuple[int, ...]]
    labels: Mapping[str, Any]
    word_spans: tuple[Span, ...] = ()

    @property
    def loss_mask(self) -> tuple[bool, ...]:
        """Which positions are trained."""
        return tuple(t != IGNORE_INDEX for t in self.targets)

    def __len__(self) -> int:
        return len(self.tokens)


@dataclasses.dataclass
class Batch:
    """Right-padded tensors for a list of examples.

    Attributes:
        tokens: ``(B, T)`` int64, padded with the task's pad id.
        targets: ``(B, T)`` int64, :data:`IGNORE_INDEX` at untrained and pad positions.
        attention_mask: ``(B, T)`` bool, True at real tokens.
        lengths: ``(B,)`` int64 number of real tokens.
    """

    tokens: torch.Tensor
    targets: torch.Tensor
    attention_mask: torch.Tensor
    lengths: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(
            *(
                t.to(device, non_blocking=non_blocking)
                for t in (self.tokens, self.targets, self.attention_mask, self.lengths)
            )
        )


def pad_examples(examples: Sequence[Example], pad_id: int, length: int | None = None) -> Batch:
    """Stack examples into a right-padded :class:`Batch` (length = longest example unless given)."""
    if not examples:
        raise ValueError("cannot build a batch from zero examples")
    lengths = np.fromiter((len(e.tokens) for e in examples), dtype=np.int64, count=len(examples))
    T = int(lengths.max()) if length is None else int(length)
    if lengths.max() > T:
        raise ValueError(f"length {T} is shorter than the longest example ({lengths.max()})")
    tokens = np.full((len(examples), T), pad_id, dtype=np.int64)
    targets = np.full((len(examples), T), IGNORE_INDEX, dtype=np.int64)
    for row, ex in enumerate(examples):
        tokens[row, : len(ex.tokens)] = ex.tokens
        targets[row, : len(ex.targets)] = ex.targets
    lengths_t = torch.from_numpy(lengths)
    mask = torch.arange(T)[None, :] < lengths_t[:, None]
    return Batch(torch.from_numpy(tokens), torch.from_numpy(targets), mask, lengths_t)


def require_probabilities(owner: object, *fields: str) -> None:
    """:func:`require` that each of ``owner``'s ``fields`` is in ``[0, 1]``."""
    for field in fields:
        value = getattr(owner, field)
        require(owner, 0.0 <= value <= 1.0, f"{field} must be in [0, 1], got {value!r}")


def gold_depths(n_words: int, tree: Sequence[Span]) -> list[int]:
    """Depth of each word: the number of constituents (root included) that contain it."""
    depth = [0] * n_words
    for i, j in tree:
        for w in range(i, j):
            depth[w] += 1
    return depth


@dataclasses.dataclass(frozen=True)
class Task(Config, abc.ABC):
    """Base class of all tasks; subclasses are frozen dataclasses whose fields are parameters.

    Subclasses set ``name`` and ``description``, implement :attr:`vocab`, :attr:`max_len`,
    :meth:`_sample` and :meth:`metric_counts`, and are registered with
    :func:`hierlens.models.tasks.register_task`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: "next_token" (targets are the next token: needs a causal model) or "masked"
    #: (targets at masked positions: any attention direction).
    objective: ClassVar[str] = "next_token"
    #: the headline metric among those :meth:`evaluate` returns
    main_metric: ClassVar[str] = "accuracy"

    # ----------------------------------------------------------------- vocabulary
    @property
    @abc.abstractmethod
    def vocab(self) -> tuple[str, ...]:
        """Token strings; index = token id. Starts with ``<pad>``, ``<bos>``, ``<eos>``."""

    @property
    @abc.abstractmethod
    def max_len(self) -> int:
        """Upper bound on the number of tokens of any example of any split."""

    @property
    def pad_id(self) -> int:
        return self.vocab.index(PAD)

    @property
    def bos_id(self) -> int:
        return self.vocab.index(BOS)

    @property
    def eos_id(self) -> int:
        return self.vocab.index(EOS)

    def token_id(self, token: str) -> int:
        try:
            return self.vocab.index(token)
        except ValueError:
            raise ValueError(f"{token!r} is not in the {self.name} vocabulary") from None

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Token strings to ids."""
        return [self.token_id(t) for t in tokens]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> list[str]:
        """Token ids to strings (pad ids dropped)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return [self.vocab[i] for i in ids if i != self.pad_id]

    # ----------------------------------------------------------------- sampling
    def sample(self, n: int, split: str = "train", seed: int = 0) -> list[Example]:
        """``n`` examples of ``split``, a deterministic function of ``(self, n, split, seed)``."""
        check_split(split)
        check_int("n", n, numpy=True)
        return self._sample(int(n), split, int(seed))

    @abc.abstractmethod
    def _sample(self, n: int, split: str, seed: int) -> list[Example]:
        """Subclass hook behind :meth:`sample` (arguments already validated)."""

    # ----------------------------------------------------------------- evaluation
    @abc.abstractmethod
    def metric_counts(
        self, batch: Batch, logits: torch.Tensor
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The task metric's numerators and denominators for one batch.

        ``logits`` is ``(B, T, d_vocab)`` on the batch's device. Returns ``{metric: (num, den)}``
        with 0-dim tensors; :meth:`evaluate` sums them over batches and reports ``num / den``.
        """

    def evaluate(
        self,
        model: torch.nn.Module,
        split: str = "test_id",
        n: int = 1000,
        *,
        seed: int = 12345,
        batch_size: int = 256,
        device: str | torch.device | None = None,
        examples: Sequence[Example] | None = None,
    ) -> dict[str, float]:
        """Evaluate ``model`` on ``n`` fresh examples of ``split`` (or on ``examples``).

        Returns the task's metrics plus ``loss`` (mean cross-entropy over trained positions)
        and ``n``. The model is run in eval mode under ``torch.inference_mode()`` and put back
        in its previous mode afterwards.
        """
        dev = model_device(model, device)
        if examples is None:
            examples = self.sample(n, split, seed)
        totals = self.evaluation_totals(model, examples, batch_size=batch_size, device=dev)
        return metrics_from_totals(totals, len(examples))

    def batch_counts(
        self, batch: Batch, logits: torch.Tensor
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`metric_counts` of one batch plus the ``loss`` (summed cross-entropy over
        the trained positions, and their count)."""
        counts = self.metric_counts(batch, logits)
        counts["loss"] = _loss_counts(logits, batch.targets)
        return counts

    def evaluation_totals(
        self,
        model: torch.nn.Module,
        examples: Sequence[Example],
        *,
        batch_size: int = 256,
        device: str | torch.device | None = None,
    ) -> dict[str, list[torch.Tensor]]:
        """The sums behind :meth:`evaluate`: ``{metric: [numerator, denominator]}`` (float64
        tensors) over ``examples``. Sums over disjoint shards add up to the sums over their
        union, which is how evaluation is sharded across processes."""
        dev = model_device(model, device)
        totals: dict[str, list[torch.Tensor]] = {}
        with evaluating(model):
            for batch in iter_batches(examples, batch_size, self.pad_id):
                batch = batch.to(dev)
                logits = model_logits(model, batch.tokens, batch.attention_mask)
                add_counts(totals, self.batch_counts(batch, logits))
        return totals


def add_counts(
    totals: dict[str, list[torch.Tensor]], counts: Mapping[str, tuple[torch.Tensor, torch.Tensor]]
) -> None:
    """Add one batch's ``{metric: (num, den)}`` to the float64 ``totals``."""
    for key, (num, den) in counts.items():
        acc = totals.get(key)
        if acc is None:
            totals[key] = [num.double(), den.double()]
        else:
            totals[key] = [acc[0] + num.double(), acc[1] + den.double()]


def metrics_from_totals(totals: Mapping[str, Sequence[torch.Tensor]], n: int) -> dict[str, float]:
    """``{metric: num / den}`` (NaN where nothing was counted) and ``n`` examples."""
    out = {
        k: (float(num / den) if float(den) > 0 else float("nan"))
        for k, (num, den) in totals.items()
    }
    out["n"] = n
    return out


def _loss_counts(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return flat, (targets != IGNORE_INDEX).sum()


def iter_batches(examples: Sequence[Example], batch_size: int, pad_id: int) -> Iterator[Batch]:
    """Consecutive padded batches of ``examples``."""
    check_int("batch_size", batch_size)
    for start in range(0, len(examples), batch_size):
        yield pad_examples(examples[start : start + batch_size], pad_id)


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
