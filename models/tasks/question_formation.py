"""Question formation: front the main auxiliary, a test of hierarchical generalisation.

Follows [McCoy2020] and [Murty2023b], with the English fragment of
:mod:`.grammar`. Language-model format::

    <bos> the newt who can't giggle will amuse the yak quest will the newt who can't giggle amuse the yak <eos>

Two transformations, marked by a task token: ``decl`` copies the declarative; ``quest``
fronts the *main* auxiliary (the auxiliary of the main clause, hierarchical rule) — not the
first one (linear "move-first" rule).

Splits:

- ``train``: ``decl`` examples of every shape; ``quest`` examples only whose subject has no
  relative clause, so the first auxiliary is the main one and both rules agree;
- ``test_id``: the same distribution; sentences are reserved for it by a seeded hash of
  their words (``test_id_fraction``), so ``train`` and ``test_id`` share no sentence;
- ``test_ood``: ``quest`` examples whose subject carries a relative clause with an
  auxiliary different from the main one, so the two rules always disagree, already on the
  first output word.

Metric: ``first_word_acc``, over ``quest`` examples, whether the argmax of the logits at
the ``quest`` marker, restricted to the auxiliaries, is the main auxiliary. Errors are split
into ``error_move_first`` (the prediction is the sentence's first auxiliary: the linear
rule) and ``error_other`` (each a fraction of the errors). ``seq_acc``: all output tokens
right under teacher forcing (every example).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import numpy as np
import torch

from hierlens.core.validate import require

from .base import Batch, Example, require_probabilities
from .grammar import (
    AUX_ANY,
    AUX_PL,
    AUX_SG,
    RELS,
    Lexicon,
    Tree,
)
from .registry import register_task
from .transduction import TransductionTask, subject_kind, subject_modifier

ALL_AUX = AUX_ANY + AUX_SG + AUX_PL


def main_aux_index(tree: Tree) -> int:
    """Word index of the main-clause auxiliary: the first word of the top-level ``Pred``."""
    subject, _ = tree.children
    return len(subject.words())  # type: ignore[union-attr]


def first_aux_index(tree: Tree) -> int:
    """Word index of the first auxiliary of the sentence."""
    return next(i for i, (pos, _) in enumerate(tree.tagged()) if pos == "Aux")


def form_question(tree: Tree) -> list[str]:
    """The question: the main auxiliary moved to the front."""
    words = tree.words()
    i = main_aux_index(tree)
    return [words[i], *words[:i], *words[i + 1 :]]


@register_task
@dataclasses.dataclass(frozen=True)
class QuestionFormationTask(TransductionTask):
    """Declarative-to-question transformation (front the main auxiliary).

    Parameters:
        auxiliaries: the auxiliaries used (a non-empty subset of can, can't, will, won't,
            does, doesn't, do, don't; at least two must agree with the same subject number).
        p_subject_rc, p_subject_pp: probabilities that a subject carries a relative clause or a
            prepositional phrase (``train``/``test_id``; both in [0, 1], sum <= 1).
        quest_fraction: fraction of ``quest`` examples in ``train``/``test_id`` (in [0, 1]).
        p_object_rc: fraction of relative clauses that are object-extracted (*the newt who
            the yak can amuse*), whose auxiliary does not follow *who/that*; without them the
            main auxiliary is also "the first one not right after a relative pronoun", a
            surface cue that solves ``test_ood`` without hierarchy. In [0, 1]; 0 keeps the
            subject-relative fragment.
        n_nouns, n_verbs, p_transitive, p_object_modifier, test_id_fraction, split_seed:
            see :class:`~.transduction.TransductionTask`.
    """

    _seed_salt: ClassVar[int] = 0x0F5
    name: ClassVar[str] = "question_formation"
    description: ClassVar[str] = (
        "front the main auxiliary (McCoy et al.); OOD = subjects with a relative clause, where "
        "the linear rule fails"
    )
    markers: ClassVar[tuple[str, ...]] = ("decl", "quest")
    mode: ClassVar[str] = "aux"
    main_metric: ClassVar[str] = "first_word_acc"

    auxiliaries: tuple[str, ...] = ALL_AUX
    p_subject_rc: float = 0.3
    p_subject_pp: float = 0.2
    quest_fraction: float = 0.5
    p_object_rc: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.auxiliaries, list):
            object.__setattr__(self, "auxiliaries", tuple(self.auxiliaries))
        self._validate_common()
        require(
            self,
            isinstance(self.auxiliaries, tuple)
            and len(self.auxiliaries) > 0
            and all(a in ALL_AUX for a in self.auxiliaries)
            and len(set(self.auxiliaries)) == len(self.auxiliaries),
            f"auxiliaries must be a non-empty subset of {', '.join(ALL_AUX)} without repeats, "
            f"got {self.auxiliaries!r}",
        )
        require(
            self,
            max(len(self.lexicon.aux_for(pl)) for pl in (False, True)) >= 2,
            "auxiliaries must include at least two that agree with the same subject number "
            f"(e.g. two of can, can't, will, won't), got {self.auxiliaries!r}",
        )
        require_probabilities(self, "p_subject_rc", "p_subject_pp", "quest_fraction", "p_object_rc")
        require(
            self,
            self.p_subject_rc + self.p_subject_pp <= 1.0,
            "p_subject_rc + p_subject_pp must be <= 1, got "
            f"{self.p_subject_rc} + {self.p_subject_pp}",
        )

    @functools.cached_property
    def lexicon(self) -> Lexicon:  # type: ignore[override]
        return Lexicon(n_nouns=self.n_nouns, n_verbs=self.n_verbs, auxiliaries=self.auxiliaries)

    @property
    def aux_ids(self) -> torch.Tensor:
        """Token ids of all auxiliaries in the vocabulary (the metric's restricted set)."""
        return self.ids_of(self.words_by_pos["Aux"])

    # ----------------------------------------------------------------- sampling
    def _draw(self, rng: np.random.Generator, split: str) -> tuple[Tree, str]:
        gen = self.generator
        if split == "test_ood":
            nums = [pl for pl in (False, True) if len(self.lexicon.aux_for(pl)) >= 2]
            pl = nums[min(int(rng.random() * len(nums)), len(nums) - 1)]
            choices = self.lexicon.aux_for(pl)
            main, rc = rng.choice(len(choices), size=2, replace=False)
            tree = gen.sentence(rng, "rc", pl, main_aux=choices[main], rc_aux=choices[rc])
            return tree, "quest"
        quest = rng.random() < self.quest_fraction
        u = rng.random()
        if quest:
            rest = 1.0 - self.p_subject_rc
            kind = "pp" if rest > 0 and u * rest < self.p_subject_pp else "none"
        else:
            kind = subject_kind(u, self.p_subject_rc, self.p_subject_pp)
        return gen.sentence(rng, kind), "quest" if quest else "decl"

    def example(self, tree: Tree, marker: str) -> Example:
        """The :class:`Example` of a sentence tree under ``marker`` ("decl" or "quest")."""
        words = tree.words()
        main, first = main_aux_index(tree), first_aux_index(tree)
        output = form_question(tree) if marker == "quest" else words
        kind = subject_modifier(tree)
        subj = tree.children[0]
        is_aux = [int(pos == "Aux") for pos, _ in tree.tagged()]
        return self.make_example(
            tree,
            marker,
            output,
            labels={
                "transformation": marker,
                "main_aux": words[main],
                "first_aux": words[first],
                "rules_agree": main == first,
                "subject_modifier": kind,
                "object_rc": kind == "rc" and len(subj.children[1].children) == 3,  # type: ignore[union-attr]
            },
            token_labels={
                "is_aux": is_aux,
                "is_main_aux": [int(i == main) for i in range(len(words))],
            },
        )

    # ----------------------------------------------------------------- metric
    def metric_counts(
        self, batch: Batch, logits: torch.Tensor
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        dev = batch.tokens.device
        aux_ids = self.aux_ids.to(dev)
        quest_id = self.token_id("quest")
        m = self.marker_positions(batch, torch.tensor([quest_id, self.token_id("decl")]))
        rows = torch.arange(batch.tokens.shape[0], device=dev)
        is_quest = (m >= 0) & (batch.tokens[rows, m.clamp(min=0)] == quest_id)
        mq = m.clamp(min=0)
        gold = batch.targets[rows, mq]
        pred = aux_ids[logits[rows, mq][:, aux_ids].argmax(-1)]
        # linear rule: the first auxiliary of the input
        pos = torch.arange(batch.tokens.shape[1], device=dev)
        in_input = pos[None, :] < mq[:, None]
        is_aux = torch.isin(batch.tokens, aux_ids) & in_input
        first = torch.where(is_aux, pos, batch.tokens.shape[1]).min(1).values
        first_tok = batch.tokens[rows, first.clamp(max=batch.tokens.shape[1] - 1)]
        correct = is_quest & (pred == gold)
        err = is_quest & (pred != gold)
        err_first = err & (pred == first_tok)
        seq_ok = self.teacher_forced_seq_correct(batch, logits)
        n_err = err.sum()
        return {
            "first_word_acc": (correct.sum(), is_quest.sum()),
            "error_move_first": (err_first.sum(), n_err),
            "error_other": ((err & ~err_first).sum(), n_err),
            "seq_acc": (seq_ok.sum(), torch.tensor(batch.tokens.shape[0], device=dev)),
        }

    def main_aux_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B,)`` token position of the main auxiliary in the input part of ``tokens``,
        recomputed from the words: a subject's relative clause holds the sentence's first
        auxiliary, so the main one is the second auxiliary when *who*/*that* comes before the
        first, and the first otherwise (-1 where there is none)."""
        dev = tokens.device
        is_aux = torch.isin(tokens, self.aux_ids.to(dev))
        is_rel = torch.isin(tokens, self.ids_of(list(RELS)).to(dev))
        T = tokens.shape[1]
        pos = torch.arange(T, device=dev).expand_as(tokens)
        rank = is_aux.cumsum(1)  # 1 from the first auxiliary on, 2 from the second, ...
        first = torch.where(is_aux & (rank == 1), pos, T).min(1).values
        second = torch.where(is_aux & (rank == 2), pos, T).min(1).values
        rel_first = torch.where(is_rel, pos, T).min(1).values < first
        out = torch.where(rel_first, second, first)
        return torch.where(out >= T, -1, out)
