"""The shared base of the sentence-transformation tasks (question formation, tense
inflection): sentences of the English fragment of :mod:`.grammar` written as
``<bos> input-words <marker> output-words <eos>``, with the gold tree and token labels of
the input words, and held-out splits decided by a hash of the sentence.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import zlib
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from hierlens.core.validate import is_int, require

from .base import (
    BOS,
    EOS,
    IGNORE_INDEX,
    PAD,
    SPLITS,
    Batch,
    Example,
    Task,
    gold_depths,
    require_probabilities,
)
from .grammar import MAX_WORDS, NOUNS, VERBS_INTR, Lexicon, SentenceGenerator, Tree, all_words
from .ground_truth import GroundTruth, KnownLatents, constituent_ground_truth

__all__ = ["TransductionTask", "subject_kind", "subject_modifier"]

_MAX_ROUNDS = 100_000


@dataclasses.dataclass(frozen=True)
class TransductionTask(Task, KnownLatents):
    """Base of the sentence-transformation tasks (language-model format).

    Tokens: ``<bos> w_1 .. w_n <marker> o_1 .. o_m <eos>``; the targets are the next tokens
    from the marker on (the marker position predicts ``o_1``, ``o_m``'s position predicts
    ``<eos>``), :data:`IGNORE_INDEX` elsewhere. The gold tree, ``depth`` and the other token
    labels describe the input words ``w_1 .. w_n`` (token positions ``1 .. n``).
    """

    markers: ClassVar[tuple[str, ...]] = ()
    mode: ClassVar[str] = "aux"

    n_nouns: int = len(NOUNS)
    n_verbs: int = len(VERBS_INTR)
    p_transitive: float = 0.5
    p_object_modifier: float = 0.3
    test_id_fraction: float = 0.1
    split_seed: int = 0

    def _validate_common(self) -> None:
        require(
            self,
            is_int(self.n_nouns) and 1 <= self.n_nouns <= len(NOUNS),
            f"n_nouns must be an integer in [1, {len(NOUNS)}], got {self.n_nouns!r}",
        )
        require(
            self,
            is_int(self.n_verbs) and 1 <= self.n_verbs <= len(VERBS_INTR),
            f"n_verbs must be an integer in [1, {len(VERBS_INTR)}], got {self.n_verbs!r}",
        )
        require_probabilities(self, "p_transitive", "p_object_modifier")
        require(
            self,
            0.0 < self.test_id_fraction < 1.0,
            f"test_id_fraction must be in (0, 1), got {self.test_id_fraction!r}",
        )

    # ----------------------------------------------------------------- grammar
    # (cached_property stores in the instance __dict__, which frozen dataclasses allow; the
    # caches are derived from the fields and are not part of equality or to_dict)
    @functools.cached_property
    def lexicon(self) -> Lexicon:
        return Lexicon(n_nouns=self.n_nouns, n_verbs=self.n_verbs)

    @functools.cached_property
    def generator(self) -> SentenceGenerator:
        return SentenceGenerator(
            self.lexicon,
            self.mode,
            self.p_transitive,
            self.p_object_modifier,
            getattr(self, "p_object_rc", 0.0),
        )

    @functools.cached_property
    def words_by_pos(self) -> dict[str, tuple[str, ...]]:
        """The words of the task's vocabulary by part of speech."""
        words = all_words(self.lexicon)
        if self.mode != "aux":
            words.pop("Aux")
        return {k: tuple(v) for k, v in words.items()}

    @functools.cached_property
    def pos_index(self) -> dict[str, int]:
        """Word to part-of-speech index (in the order of :attr:`words_by_pos`)."""
        return {w: p for p, ws in enumerate(self.words_by_pos.values()) for w in ws}

    # ----------------------------------------------------------------- vocabulary
    @functools.cached_property
    def vocab(self) -> tuple[str, ...]:  # type: ignore[override]
        return (
            PAD,
            BOS,
            EOS,
            *type(self).markers,
            *(w for ws in self.words_by_pos.values() for w in ws),
        )

    @property
    def max_len(self) -> int:
        return 2 * MAX_WORDS + 3

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Token strings to ids (a cached lookup table)."""
        index = _index(self.vocab)
        try:
            return [index[t] for t in tokens]
        except KeyError as err:
            raise ValueError(f"{err.args[0]!r} is not in the {self.name} vocabulary") from None

    def ids_of(self, words: Sequence[str]) -> torch.Tensor:
        """Token ids of some words, as a tensor."""
        return torch.tensor(self.encode(words), dtype=torch.int64)

    def pos_table(self) -> torch.Tensor:
        """``(d_vocab,)`` part-of-speech index of each token (-1 for non-words), in the order
        of :attr:`words_by_pos`."""
        table = torch.full((len(self.vocab),), -1, dtype=torch.int64)
        for p, words in enumerate(self.words_by_pos.values()):
            table[self.ids_of(words)] = p
        return table

    # ----------------------------------------------------------------- examples
    #: salt of the per-split sampling RNG (differs between tasks)
    _seed_salt: ClassVar[int] = 0

    @abc.abstractmethod
    def _draw(self, rng: np.random.Generator, split: str) -> tuple[Tree, str]:
        """One candidate sentence tree and its marker for ``split``."""

    @abc.abstractmethod
    def example(self, tree: Tree, marker: str) -> Example:
        """The :class:`Example` of a sentence tree under ``marker``."""

    def _sample(self, n: int, split: str, seed: int) -> list[Example]:
        """Draw candidates until ``n`` belong to ``split`` (``train``/``test_id`` are told apart
        by the sentence hash; ``test_ood`` candidates come from ``_draw`` directly)."""
        rng = np.random.default_rng([seed, SPLITS.index(split), self._seed_salt])
        out: list[Example] = []
        for _ in range(_MAX_ROUNDS + 100 * n):
            tree, marker = self._draw(rng, split)
            if split != "test_ood" and self.is_test_id_sentence(tree.words()) != (
                split == "test_id"
            ):
                continue
            out.append(self.example(tree, marker))
            if len(out) == n:
                return out
        raise RuntimeError(f"{type(self).__name__}: could not draw {n} {split} examples")

    def is_test_id_sentence(self, words: Sequence[str]) -> bool:
        """Whether a sentence is reserved for ``test_id`` (a seeded hash of its words)."""
        key = f"{self.name}-{self.split_seed}|{' '.join(words)}".encode()
        return zlib.crc32(key) / 2**32 < self.test_id_fraction

    def make_example(
        self,
        tree: Tree,
        marker: str,
        output: Sequence[str],
        labels: dict[str, Any],
        token_labels: dict[str, Sequence[int]],
    ) -> Example:
        """The :class:`Example` for a sentence tree, its marker and its output words;
        ``token_labels`` hold one value per input word (padded with -1 here)."""
        words = tree.words()
        n = len(words)
        tokens = [self.bos_id, *self.encode(words), self.token_id(marker)]
        tokens += [*self.encode(output), self.eos_id]
        targets = [IGNORE_INDEX] * (n + 1) + tokens[n + 2 :] + [IGNORE_INDEX]
        spans = sorted({(i, j) for _, i, j in tree.spans()}, key=lambda s: (s[0], -s[1]))
        rest = [-1] * (len(tokens) - n - 1)
        pos_index = self.pos_index
        tl = {
            "depth": (0, *gold_depths(n, spans), *([0] * len(rest))),
            "pos": (-1, *(pos_index[w] for w in words), *rest),
        }
        in_rc = [0] * n
        for label, i, j in tree.spans():
            if label == "RC":
                in_rc[i:j] = [1] * (j - i)
        tl["in_relative_clause"] = (-1, *in_rc, *rest)
        for key, values in token_labels.items():
            tl[key] = (-1, *values, *rest)
        return Example(
            tokens=tuple(tokens),
            targets=tuple(targets),
            word_positions=tuple(range(1, n + 1)),
            tree=tuple(spans),
            token_labels=tl,
            labels={"sentence": " ".join(words), "tree": tree.bracketed(), **labels},
        )

    def ground_truth(self, data: Sequence[Example]) -> GroundTruth:
        """Constituent labels of the input words, as label paths from the root (``S>NP``,
        ``S>NP>RC>Pred``, ...; see
        :func:`~hierlens.models.tasks.ground_truth.constituent_ground_truth`); the marker
        and output tokens are all zero."""
        examples = list(data)
        if not examples or not all(isinstance(e, Example) for e in examples):
            raise ValueError("ground_truth needs a non-empty list of this task's Examples")
        return constituent_ground_truth(examples, [e.labels["tree"] for e in examples])

    @staticmethod
    def marker_positions(batch: Batch, marker_ids: torch.Tensor) -> torch.Tensor:
        """``(B,)`` position of the first marker token in each row (-1 if none)."""
        is_m = torch.isin(batch.tokens, marker_ids.to(batch.tokens.device))
        pos = torch.arange(batch.tokens.shape[1], device=batch.tokens.device)
        first = torch.where(is_m, pos, batch.tokens.shape[1]).min(1).values
        return torch.where(first == batch.tokens.shape[1], -1, first)

    @staticmethod
    def teacher_forced_seq_correct(batch: Batch, logits: torch.Tensor) -> torch.Tensor:
        """``(B,)`` bool: every trained position's argmax is its target."""
        sel = batch.targets != IGNORE_INDEX
        wrong = sel & (logits.argmax(-1) != batch.targets)
        return sel.any(1) & ~wrong.any(1)


def subject_kind(u: float, p_rc: float, p_pp: float) -> str:
    """The subject modifier that a uniform draw ``u`` in ``[0, 1)`` picks: ``"rc"`` with
    probability ``p_rc``, ``"pp"`` with probability ``p_pp``, else ``"none"``."""
    if u < p_rc:
        return "rc"
    return "pp" if u < p_rc + p_pp else "none"


def subject_modifier(tree: Tree) -> str:
    """What modifies the main subject of a sentence tree: ``"rc"``, ``"pp"`` or ``"none"``."""
    subject = tree.children[0]
    if subject.children[0].is_preterminal:  # type: ignore[union-attr]
        return "none"
    return subject.children[1].label.lower()  # type: ignore[union-attr]


@functools.lru_cache(maxsize=32)
def _index(vocab: tuple[str, ...]) -> dict[str, int]:
    return {t: i for i, t in enumerate(vocab)}
