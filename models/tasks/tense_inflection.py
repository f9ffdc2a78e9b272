"""Tense inflection: re-inflect past-tense sentences to the present, agreeing with the subject.

Follows the tense-reinflection task of [McCoy2020], also used by [Murty2023b], with the English
fragment of :mod:`.grammar`. Language-model
format::

    <bos> my newt near the yaks giggled PRESENT my newt near the yaks giggles <eos>

``PAST`` copies the sentence; ``PRESENT`` puts every verb in the present tense, agreeing
with its own subject (the main verb with the main subject, a relative clause's verb with the
noun it modifies).

Splits:

- ``train``: ``PAST`` examples of every shape; ``PRESENT`` examples only where no noun of the
  other number stands between the subject's head noun and the main verb, so agreeing with
  the most recent noun (linear rule) and with the subject (hierarchical rule) coincide;
- ``test_id``: the same distribution, sentences reserved by a seeded hash of their words;
- ``test_ood``: ``PRESENT`` examples whose subject carries a prepositional phrase or a
  relative clause with a noun of the other number (an *attractor*) right before the main
  verb, so the two rules disagree on the main verb.

Metrics (``PRESENT`` examples): ``main_verb_acc``, under teacher forcing, the predicted
parts of speech of the whole output match the gold ones and the main verb is right;
``seq_acc``: the whole output right (every example). :meth:`TenseInflectionTask.greedy_evaluate`
measures the same on the model's greedy continuation after the marker (the paper's metric).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from hierlens.core.device import model_device
from hierlens.core.validate import require

from ..forward import evaluating, model_logits
from .base import (
    IGNORE_INDEX,
    Batch,
    Example,
    iter_batches,
    require_probabilities,
)
from .grammar import NOUNS, RELS, Tree, first_unless_after
from .registry import register_task
from .transduction import TransductionTask, subject_kind, subject_modifier

_PLURAL_NOUNS = frozenset(pl for _, pl in NOUNS)


def subject_and_attractors(tree: Tree) -> tuple[bool, list[bool]]:
    """The main subject's number (``True`` = plural) and the numbers of the nouns between
    its head and the main verb."""
    tagged = tree.tagged()
    n_subj = len(tree.children[0].words())  # type: ignore[union-attr]
    nouns = [w in _PLURAL_NOUNS for pos, w in tagged[:n_subj] if pos == "N"]
    return nouns[0], nouns[1:]


@register_task
@dataclasses.dataclass(frozen=True)
class TenseInflectionTask(TransductionTask):
    """Past-to-present re-inflection with subject-verb agreement across attractors.

    Parameters:
        p_subject_rc, p_subject_pp: probabilities that a subject carries a relative clause or a
            prepositional phrase (``train``/``test_id``; both in [0, 1], sum <= 1; ``test_ood``
            draws PP and RC subjects in the same proportion, needing a positive sum).
        present_fraction: fraction of ``PRESENT`` examples in ``train``/``test_id`` (in [0, 1]).
        n_nouns, n_verbs, p_transitive, p_object_modifier, test_id_fraction, split_seed:
            see :class:`~.transduction.TransductionTask`.
    """

    _seed_salt: ClassVar[int] = 0x7E5
    name: ClassVar[str] = "tense_inflection"
    description: ClassVar[str] = (
        "re-inflect past-tense sentences to the present (McCoy et al.); OOD = an attractor noun "
        "of the other number before the main verb"
    )
    markers: ClassVar[tuple[str, ...]] = ("PAST", "PRESENT")
    mode: ClassVar[str] = "tense"
    main_metric: ClassVar[str] = "main_verb_acc"

    p_subject_rc: float = 0.3
    p_subject_pp: float = 0.3
    present_fraction: float = 0.5

    def __post_init__(self) -> None:
        self._validate_common()
        require_probabilities(self, "p_subject_rc", "p_subject_pp", "present_fraction")
        require(
            self,
            0.0 < self.p_subject_rc + self.p_subject_pp <= 1.0,
            "p_subject_rc + p_subject_pp must be in (0, 1], got "
            f"{self.p_subject_rc} + {self.p_subject_pp}",
        )

    @property
    def verb_ids(self) -> torch.Tensor:
        return self.ids_of(self.words_by_pos["V"])

    # ----------------------------------------------------------------- sampling
    def _draw(self, rng: np.random.Generator, split: str) -> tuple[Tree, str]:
        gen = self.generator
        if split == "test_ood":
            share = self.p_subject_rc / (self.p_subject_rc + self.p_subject_pp)
            kind = "rc" if rng.random() < share else "pp"
            pl = bool(rng.random() < 0.5)
            return gen.sentence(rng, kind, pl, inner_plural=not pl), "PRESENT"
        present = rng.random() < self.present_fraction
        while True:
            tree = gen.sentence(
                rng, subject_kind(rng.random(), self.p_subject_rc, self.p_subject_pp)
            )
            subj, attractors = subject_and_attractors(tree)
            if not present or all(a == subj for a in attractors):
                return tree, "PRESENT" if present else "PAST"

    def example(self, tree: Tree, marker: str) -> Example:
        """The :class:`Example` of a past-tense sentence tree under ``marker``."""
        words = tree.words()
        output = self.generator.inflect(tree) if marker == "PRESENT" else words
        main = len(tree.children[0].words())  # type: ignore[union-attr]
        subj, attractors = subject_and_attractors(tree)
        number = [(int(w in _PLURAL_NOUNS) if pos == "N" else -1) for pos, w in tree.tagged()]
        return self.make_example(
            tree,
            marker,
            output,
            labels={
                "transformation": marker,
                "subject_plural": subj,
                "has_attractor": any(a != subj for a in attractors),
                "main_verb": output[main],
                "subject_modifier": subject_modifier(tree),
            },
            token_labels={
                "is_main_verb": [int(i == main) for i in range(len(words))],
                "noun_number": number,
            },
        )

    # ----------------------------------------------------------------- metric
    def main_verb_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B,)`` token position of the main verb of the input: the first verb not right
        after *who*/*that* (relative clauses start with their verb)."""
        is_v = torch.isin(tokens, self.verb_ids.to(tokens.device))
        is_rel = torch.isin(tokens, self.ids_of(list(RELS)).to(tokens.device))
        return first_unless_after(is_v, is_rel)

    def metric_counts(
        self, batch: Batch, logits: torch.Tensor
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        dev = batch.tokens.device
        present_id = self.token_id("PRESENT")
        m = self.marker_positions(batch, torch.tensor([present_id, self.token_id("PAST")]))
        rows = torch.arange(batch.tokens.shape[0], device=dev)
        is_present = (m >= 0) & (batch.tokens[rows, m.clamp(min=0)] == present_id)
        # output word j (1-based) is the target at position m + j - 1; the input main verb
        # at token position p is word p
        t = (m + self.main_verb_positions(batch.tokens) - 1).clamp(0, batch.tokens.shape[1] - 1)
        pred = logits.argmax(-1)
        verb_ok = pred[rows, t] == batch.targets[rows, t]
        table = self.pos_table().to(dev)
        sel = batch.targets != IGNORE_INDEX
        tgt = batch.targets.clamp(min=0)
        pos_ok = ~(sel & (table[pred] != table[tgt])).any(1)
        seq_ok = self.teacher_forced_seq_correct(batch, logits)
        return {
            "main_verb_acc": ((is_present & pos_ok & verb_ok).sum(), is_present.sum()),
            "seq_acc": (seq_ok.sum(), torch.tensor(batch.tokens.shape[0], device=dev)),
        }

    # ----------------------------------------------------------------- greedy decoding
    def greedy_continuations(
        self,
        model: torch.nn.Module,
        examples: Sequence[Example],
        *,
        batch_size: int = 256,
        device: str | torch.device | None = None,
        progress: bool = False,
    ) -> list[list[int]]:
        """The model's greedy continuation after each example's marker (token ids, up to and
        excluding ``<eos>``; at most ``MAX_WORDS + 1`` tokens). The model must be causal."""
        dev = model_device(model, device)
        marker_ids = torch.tensor([self.token_id(k) for k in self.markers])
        out: list[list[int]] = []
        with evaluating(model):
            batches = iter_batches(examples, batch_size, self.pad_id)
            for batch in tqdm(batches, disable=not progress, desc="greedy decoding"):
                batch = batch.to(dev)
                m = self.marker_positions(batch, marker_ids)
                if (m < 0).any():
                    raise ValueError("every example needs a PAST/PRESENT marker")
                B = batch.tokens.shape[0]
                buf = torch.full((B, self.max_len), self.pad_id, device=dev)
                pos = torch.arange(self.max_len, device=dev)
                keep = pos[None, : batch.tokens.shape[1]] <= m[:, None]
                buf[:, : batch.tokens.shape[1]] = torch.where(keep, batch.tokens, self.pad_id)
                rows = torch.arange(B, device=dev)
                cur = m.clone()
                done = torch.zeros(B, dtype=torch.bool, device=dev)
                while not bool(done.all()):
                    logits = model_logits(model, buf)
                    nxt = logits[rows, cur].argmax(-1)
                    write = ~done & (cur + 1 < self.max_len)
                    buf[rows[write], cur[write] + 1] = nxt[write]
                    done |= ~write | (nxt == self.eos_id)
                    cur = torch.where(done, cur, cur + 1)
                for b in range(B):
                    seq = buf[b, int(m[b]) + 1 :].tolist()
                    cut = seq.index(self.eos_id) if self.eos_id in seq else len(seq)
                    out.append([t for t in seq[:cut] if t != self.pad_id])
        return out

    def score_continuations(
        self, examples: Sequence[Example], continuations: Sequence[Sequence[int]]
    ) -> dict[str, float]:
        """``main_verb_acc`` (``PRESENT`` examples: same parts of speech as the gold output
        and the right main verb), ``pos_acc`` and ``seq_acc`` (all examples) of decoded
        continuations."""
        table = self.pos_table().tolist()
        n_present = mv = pos_ok = seq_ok = 0
        for ex, cont in zip(examples, continuations):
            m = next(i for i, t in enumerate(ex.tokens) if self.vocab[t] in self.markers)
            gold = list(ex.tokens[m + 1 : -1])
            same_pos = len(cont) == len(gold) and all(
                table[a] == table[b] for a, b in zip(cont, gold)
            )
            pos_ok += same_pos
            seq_ok += list(cont) == gold
            if self.vocab[ex.tokens[m]] == "PRESENT":
                n_present += 1
                main = ex.token_labels["is_main_verb"].index(1) - 1
                mv += same_pos and cont[main] == gold[main]
        n = len(examples)
        return {
            "main_verb_acc": mv / n_present if n_present else float("nan"),
            "pos_acc": pos_ok / n,
            "seq_acc": seq_ok / n,
            "n": n,
        }

    def greedy_evaluate(
        self,
        model: torch.nn.Module,
        split: str = "test_ood",
        n: int = 1000,
        *,
        seed: int = 12345,
        batch_size: int = 256,
        device: str | torch.device | None = None,
        examples: Sequence[Example] | None = None,
        progress: bool = False,
    ) -> dict[str, float]:
        """The paper's metric on greedy decoding: :meth:`score_continuations` of
        :meth:`greedy_continuations` on ``n`` fresh examples of ``split``."""
        if examples is None:
            examples = self.sample(n, split, seed)
        cont = self.greedy_continuations(
            model, examples, batch_size=batch_size, device=device, progress=progress
        )
        return self.score_continuations(examples, cont)
