"""Causal models of the sentence-transformation tasks: question formation and tense inflection.

Inputs are sentences of the grammar of :mod:`..grammar` with subjects of every kind (bare,
with a prepositional phrase, with a relative clause), drawn for ``train`` or ``test_id`` by
the task's sentence hash (``test_ood``: the task's own out-of-distribution sentences).

Question formation (``quest`` inputs ``<bos> words quest``; the query is the marker, the
output the first word of the question, the main auxiliary):

- ``main_aux``: the auxiliary of the main clause; setting it from a source makes the output
  the source's main auxiliary;
- ``subject_extent``: the number of words in the subject. The hierarchical rule fronts the
  first auxiliary after the subject; setting the extent to the source's makes the output the
  first auxiliary of the base sentence at or after that word (``None`` where there is none).

Tense inflection (``PRESENT`` inputs up to the position that predicts the main verb of the
output; the output is the main verb agreeing with its subject):

- ``subject_number``: the number (0 singular, 1 plural) of the main subject's head noun;
  setting it from a source makes the output the verb form of the source's number;
- ``attractor_number``: the number of the noun nearest before the main verb (the cue of the
  linear "agree with the last noun" rule). The task's rule ignores it: its counterfactual is
  the base output (a null variable).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..grammar import NOUNS, VERBS_INTR, VERBS_TR, Tree
from ..question_formation import QuestionFormationTask, main_aux_index
from ..tense_inflection import TenseInflectionTask
from .base import CausalInput, CausalModel, register_causal_model

_KINDS = ("none", "pp", "rc")
_OTHER_NUMBER = {sg: pl for sg, pl in NOUNS} | {pl: sg for sg, pl in NOUNS}
_PLURAL = frozenset(pl for _, pl in NOUNS)
_PRESENT = {f: (v[1], v[0]) for v in VERBS_INTR + VERBS_TR for f in v}  # form -> (sg, pl)


def replace_word(tree: Tree, index: int, word: str) -> Tree:
    """A copy of ``tree`` whose ``index``-th word is ``word`` (same part of speech)."""
    counter = [0]

    def walk(node: Tree) -> Tree:
        if node.is_preterminal:
            i = counter[0]
            counter[0] += 1
            return Tree(node.label, (word,)) if i == index else node
        return Tree(node.label, tuple(walk(c) for c in node.children))  # type: ignore[arg-type]

    return walk(tree)


def _draw_trees(task, n: int, split: str, rng: np.random.Generator, marker: str) -> list[Tree]:
    """``n`` sentence trees of ``split`` (subjects of every kind for train/test_id)."""
    out: list[Tree] = []
    for _ in range(200 * n + 1000):
        if split == "test_ood":
            tree, _ = task._draw(rng, split)
        else:
            kind = _KINDS[int(rng.integers(0, len(_KINDS)))]
            tree = task.generator.sentence(rng, kind)
            if task.is_test_id_sentence(tree.words()) != (split == "test_id"):
                continue
        out.append(tree)
        if len(out) == n:
            return out
    raise RuntimeError(f"{task.name}: could not draw {n} {split} sentences")


@register_causal_model
class QuestionFormationVariables(CausalModel):
    """Causal model of :class:`~hierlens.models.tasks.QuestionFormationTask`."""

    task_name = "question_formation"

    @property
    def variables(self) -> Mapping[str, str]:
        return {
            "main_aux": "the main clause's auxiliary (the one the question fronts)",
            "subject_extent": "number of words in the subject (the main auxiliary follows it)",
        }

    def make(self, tree: Tree) -> CausalInput:
        """The ``quest`` causal input of a sentence tree (cut after the marker)."""
        task: QuestionFormationTask = self.task  # type: ignore[assignment]
        ex = task.example(tree, "quest")
        n = len(tree.words())
        main = main_aux_index(tree)
        return CausalInput(
            tokens=ex.tokens[: n + 2],
            query=n + 1,
            output=ex.tokens[n + 2],  # the question's first word
            values={"main_aux": ex.tokens[1 + main], "subject_extent": main},
            state=tree,
        )

    def draw(self, n: int, split: str, rng: np.random.Generator) -> list[CausalInput]:
        return [self.make(t) for t in _draw_trees(self.task, n, split, rng, "quest")]

    def candidates(self, inp: CausalInput) -> tuple[int, ...]:
        return tuple(self.task.aux_ids.tolist())  # type: ignore[attr-defined]

    def counterfactual(self, base: CausalInput, source: CausalInput, variable: str) -> int | None:
        self.check_variable(variable)
        if variable == "main_aux":
            return source.values["main_aux"]
        aux = set(self.candidates(base))
        extent = source.values["subject_extent"]
        words = base.tokens[1 : base.query]
        return next((t for t in words[extent:] if t in aux), None)

    def regenerate(
        self, inp: CausalInput, variable: str, value: int, rng: np.random.Generator
    ) -> CausalInput | None:
        self.check_variable(variable)
        if variable != "main_aux" or value not in self.candidates(inp):
            return None  # a subject of another extent is another sentence
        tree = replace_word(inp.state, inp.values["subject_extent"], self.task.vocab[value])
        return self.make(tree)


@register_causal_model
class TenseInflectionVariables(CausalModel):
    """Causal model of :class:`~hierlens.models.tasks.TenseInflectionTask`."""

    task_name = "tense_inflection"
    null_variables = frozenset({"attractor_number"})

    @property
    def variables(self) -> Mapping[str, str]:
        return {
            "subject_number": "number of the main subject's head noun (1 = plural)",
            "attractor_number": "number of the noun nearest before the main verb (ignored by "
            "the task's rule)",
        }

    def make(self, tree: Tree) -> CausalInput:
        """The ``PRESENT`` causal input of a sentence tree (cut at the position that
        predicts the output's main verb)."""
        task: TenseInflectionTask = self.task  # type: ignore[assignment]
        ex = task.example(tree, "PRESENT")
        words = tree.words()
        n = len(words)
        main = len(tree.children[0].words())  # type: ignore[union-attr]
        tagged = tree.tagged()
        nouns = [i for i, (pos, _) in enumerate(tagged[:main]) if pos == "N"]
        query = n + 1 + main
        return CausalInput(
            tokens=ex.tokens[: query + 1],
            query=query,
            output=ex.tokens[query + 1],
            values={
                "subject_number": int(words[1] in _PLURAL),
                "attractor_number": int(words[nouns[-1]] in _PLURAL),
            },
            state=(tree, main, nouns[-1]),
        )

    def draw(self, n: int, split: str, rng: np.random.Generator) -> list[CausalInput]:
        return [self.make(t) for t in _draw_trees(self.task, n, split, rng, "PRESENT")]

    def candidates(self, inp: CausalInput) -> tuple[int, ...]:
        verb = self.task.vocab[inp.output]
        return tuple(self.task.encode(list(_PRESENT[verb])))

    def counterfactual(self, base: CausalInput, source: CausalInput, variable: str) -> int | None:
        self.check_variable(variable)
        if variable == "attractor_number":
            return base.output
        return self.candidates(base)[source.values["subject_number"]]

    def regenerate(
        self, inp: CausalInput, variable: str, value: int, rng: np.random.Generator
    ) -> CausalInput | None:
        self.check_variable(variable)
        tree, _, nearest = inp.state
        index = 1 if variable == "subject_number" else nearest
        if variable == "attractor_number" and nearest == 1:
            return None  # the nearest noun is the subject itself
        word = tree.words()[index]
        if int(word in _PLURAL) == value:
            return inp
        if value not in (0, 1):
            return None
        return self.make(replace_word(tree, index, _OTHER_NUMBER[word]))
