"""A small English fragment with constituency trees, shared by the grammar-based tasks.

The fragment follows the kind of grammar used by [McCoy2020] and [Murty2023b]: determiners,
singular/plural nouns, prepositional phrases, relative clauses with *who*/*that*, and either
auxiliaries with bare verbs (question formation) or tensed verbs (tense inflection). The lexicon
is our own. Every word has a
single part of speech. Rules (binary; ``NPb`` is written ``NP`` in the trees)::

    S    -> NP Pred
    Pred -> Aux VP          (mode "aux")         |  VP (mode "tense": S -> NP VP)
    VP   -> V_intr | V_tr NP
    NP   -> Det N | NPb PP | NPb RC                (NPb = Det N)
    PP   -> P NPb
    RC   -> Rel Pred

A relative clause's object is a bare ``Det N``; modifiers do not nest, so sentences have at
most :data:`MAX_WORDS` words. Agreement: *does/doesn't* need a singular subject, *do/don't*
a plural one (modals agree with both); present-tense verbs agree with their subject; the
subject of a relative clause is the noun it modifies.

The tasks built on it share :class:`~hierlens.models.tasks.transduction.TransductionTask`
(:mod:`.transduction`), the base of question formation and tense inflection.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "AUX_ANY",
    "AUX_PL",
    "AUX_SG",
    "DETS",
    "NOUNS",
    "PREPS",
    "RELS",
    "VERBS_INTR",
    "VERBS_TR",
    "MAX_WORDS",
    "Lexicon",
    "SentenceGenerator",
    "Tree",
    "all_words",
    "first_unless_after",
]

#: the longest sentence: subject with a relative clause (7 words), auxiliary, transitive verb
#: and an object with a relative clause (7 words)
MAX_WORDS = 16

DETS = ("the", "some", "my", "your", "our", "her")
#: (singular, plural)
NOUNS = (
    ("newt", "newts"),
    ("yak", "yaks"),
    ("orangutan", "orangutans"),
    ("peacock", "peacocks"),
    ("walrus", "walruses"),
    ("raven", "ravens"),
    ("salamander", "salamanders"),
    ("unicorn", "unicorns"),
    ("vulture", "vultures"),
    ("zebra", "zebras"),
    ("quail", "quails"),
    ("xylophone", "xylophones"),
)
PREPS = ("around", "near", "with", "upon", "by", "behind", "above", "below")
RELS = ("who", "that")
AUX_ANY = ("can", "can't", "will", "won't")
AUX_SG = ("does", "doesn't")
AUX_PL = ("do", "don't")
#: (bare/plural present, singular present, past)
VERBS_INTR = (
    ("giggle", "giggles", "giggled"),
    ("smile", "smiles", "smiled"),
    ("sleep", "sleeps", "slept"),
    ("swim", "swims", "swam"),
    ("wait", "waits", "waited"),
    ("move", "moves", "moved"),
    ("change", "changes", "changed"),
    ("laugh", "laughs", "laughed"),
)
VERBS_TR = (
    ("entertain", "entertains", "entertained"),
    ("amuse", "amuses", "amused"),
    ("applaud", "applauds", "applauded"),
    ("confuse", "confuses", "confused"),
    ("admire", "admires", "admired"),
    ("accept", "accepts", "accepted"),
    ("remember", "remembers", "remembered"),
    ("comfort", "comforts", "comforted"),
)


@dataclasses.dataclass(frozen=True)
class Tree:
    """A constituency tree. A preterminal has ``label`` = its part of speech and a single
    ``str`` child (the word); other nodes have :class:`Tree` children."""

    label: str
    children: tuple[Tree | str, ...]
    #: whether this node is a part of speech over one word (computed)
    is_preterminal: bool = dataclasses.field(init=False, repr=False, compare=False)
    _tagged: tuple[tuple[str, str], ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pre = len(self.children) == 1 and isinstance(self.children[0], str)
        tagged = (
            ((self.label, self.children[0]),)
            if pre
            else tuple(tw for c in self.children for tw in c._tagged)  # type: ignore[union-attr]
        )
        object.__setattr__(self, "is_preterminal", pre)
        object.__setattr__(self, "_tagged", tagged)

    def words(self) -> list[str]:
        """The yield (the sentence)."""
        return [w for _, w in self._tagged]

    def tagged(self) -> list[tuple[str, str]]:
        """``(part of speech, word)`` for each word."""
        return list(self._tagged)

    def spans(self, min_len: int = 2) -> list[tuple[str, int, int]]:
        """``(label, i, j)`` for every node covering at least ``min_len`` words (half-open
        word spans), in pre-order."""
        out: list[tuple[str, int, int]] = []

        def walk(node: Tree, start: int) -> int:
            if node.is_preterminal:
                end = start + 1
                if min_len <= 1:
                    out.append((node.label, start, end))
                return end
            idx = len(out)
            out.append((node.label, start, start))
            end = start
            for c in node.children:
                end = walk(c, end)  # type: ignore[arg-type]
            if end - start >= min_len:
                out[idx] = (node.label, start, end)
            else:
                out.pop(idx)
            return end

        walk(self, 0)
        return out

    def bracketed(self) -> str:
        """Penn-style bracketing, e.g. ``(S (NP (Det the) (N newt)) ...)``."""
        if self.is_preterminal:
            return f"({self.label} {self.children[0]})"
        return f"({self.label} " + " ".join(c.bracketed() for c in self.children) + ")"  # type: ignore[union-attr]

    def iter_nodes(self) -> Iterator[Tree]:
        yield self
        if not self.is_preterminal:
            for c in self.children:
                yield from c.iter_nodes()  # type: ignore[union-attr]


def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    """A uniform element of ``seq`` (one ``rng.random()`` draw: much cheaper than
    ``rng.integers`` for scalars)."""
    return seq[min(int(rng.random() * len(seq)), len(seq) - 1)]


def _pt(pos: str, word: str) -> Tree:
    return Tree(pos, (word,))


def first_unless_after(is_target: torch.Tensor, is_blocker: torch.Tensor) -> torch.Tensor:
    """Index (per row) of the first position where ``is_target`` holds and the previous
    position is not ``is_blocker``; -1 where there is none. Both are ``(B, T)`` bool tensors.

    In the fragment's subject relative clauses the verb or auxiliary follows the relative
    pronoun, so the main-clause auxiliary/verb is the first one not preceded by *who/that*
    (object relative clauses, an option of question formation, break this cue).
    """
    ok = is_target.clone()
    ok[:, 1:] &= ~is_blocker[:, :-1]
    T = ok.shape[1]
    pos = torch.arange(T, device=ok.device).expand_as(ok)
    first = torch.where(ok, pos, T).min(1).values
    return torch.where(first == T, -1, first)


@dataclasses.dataclass(frozen=True)
class Lexicon:
    """The words a task uses (a prefix of each list, or a chosen set of auxiliaries)."""

    n_nouns: int = len(NOUNS)
    n_verbs: int = len(VERBS_INTR)
    auxiliaries: tuple[str, ...] = AUX_ANY + AUX_SG + AUX_PL

    def aux_for(self, plural: bool) -> tuple[str, ...]:
        """Auxiliaries that agree with a subject of that number."""
        return _aux_for(self.auxiliaries, plural)

    @property
    def nouns(self) -> tuple[tuple[str, str], ...]:
        return NOUNS[: self.n_nouns]

    @property
    def verbs_intr(self) -> tuple[tuple[str, str, str], ...]:
        return VERBS_INTR[: self.n_verbs]

    @property
    def verbs_tr(self) -> tuple[tuple[str, str, str], ...]:
        return VERBS_TR[: self.n_verbs]


@dataclasses.dataclass(frozen=True)
class SentenceGenerator:
    """Random sentences of the fragment, with their trees.

    Parameters:
        lexicon: the words to use.
        mode: "aux" (auxiliary + bare verb) or "tense" (past-tense verbs; present forms are
            produced by :meth:`inflect`).
        p_transitive: probability that a verb (main or relative clause) is transitive.
        p_object_modifier: probability that a main-clause object gets a PP or RC (half each).
        p_object_rc: probability that a relative clause is object-extracted,
            ``RC -> Rel NP Aux V_tr`` (*the newt who the yak can amuse*): its auxiliary then
            agrees with its own subject and does not follow the relative pronoun. Mode "aux"
            only; 0 draws no random number for it, so the other sentences are unchanged.
    """

    lexicon: Lexicon
    mode: str = "aux"
    p_transitive: float = 0.5
    p_object_modifier: float = 0.3
    p_object_rc: float = 0.0

    def __post_init__(self) -> None:
        if self.p_object_rc and self.mode != "aux":
            raise ValueError("SentenceGenerator: object relative clauses need mode 'aux'")

    @functools.cached_property
    def _numbers(self) -> tuple[bool, ...]:
        return tuple(self.numbers())

    def numbers(self) -> list[bool]:
        """Subject numbers (``plural`` flags) that have an agreeing auxiliary."""
        if self.mode != "aux":
            return [False, True]
        return [pl for pl in (False, True) if self.lexicon.aux_for(pl)]

    # ---------------------------------------------------------------- pieces
    def _noun(self, rng: np.random.Generator, plural: bool) -> Tree:
        sg, pl = _pick(rng, self.lexicon.nouns)
        return _pt("N", pl if plural else sg)

    def np_bare(self, rng: np.random.Generator, plural: bool) -> Tree:
        return Tree("NP", (_pt("Det", _pick(rng, DETS)), self._noun(rng, plural)))

    def _plural(self, rng: np.random.Generator) -> bool:
        return bool(_pick(rng, self._numbers))

    def vp(
        self,
        rng: np.random.Generator,
        allow_object_modifier: bool,
        object_plural: bool | None = None,
    ) -> Tree:
        """``VP -> V_intr | V_tr NP`` with past-tense verbs in mode "tense", bare otherwise;
        ``object_plural`` forces a transitive verb with a bare object of that number."""
        form = 2 if self.mode == "tense" else 0
        if object_plural is not None or rng.random() < self.p_transitive:
            verb = _pick(rng, self.lexicon.verbs_tr)[form]
            if object_plural is not None:
                obj = self.np_bare(rng, object_plural)
            elif allow_object_modifier and rng.random() < self.p_object_modifier:
                kind = "pp" if rng.random() < 0.5 else "rc"
                obj = self.np_modified(rng, self._plural(rng), kind)
            else:
                obj = self.np_bare(rng, self._plural(rng))
            return Tree("VP", (_pt("V", verb), obj))
        verb = _pick(rng, self.lexicon.verbs_intr)[form]
        return Tree("VP", (_pt("V", verb),))

    def pred(
        self,
        rng: np.random.Generator,
        plural: bool,
        main: bool,
        aux: str | None = None,
        object_plural: bool | None = None,
    ) -> Tree:
        """The predicate of a clause whose subject has the given number (objects of
        relative clauses are bare; ``object_plural`` forces a transitive verb)."""
        vp = self.vp(rng, allow_object_modifier=main, object_plural=object_plural)
        if self.mode != "aux":
            return vp
        if aux is None:
            choices = self.lexicon.aux_for(plural)
            aux = _pick(rng, choices)
        return Tree("Pred", (_pt("Aux", aux), vp))

    def np_modified(
        self,
        rng: np.random.Generator,
        plural: bool,
        kind: str,
        rc_aux: str | None = None,
        inner_plural: bool | None = None,
    ) -> Tree:
        """``NP -> NPb | NPb PP | NPb RC`` (``kind`` "none", "pp" or "rc"); ``inner_plural``
        fixes the number of the PP's noun, or makes the RC transitive with an object of that
        number."""
        head = self.np_bare(rng, plural)
        if kind == "none":
            return head
        if kind == "pp":
            pl = self._plural(rng) if inner_plural is None else inner_plural
            pp = Tree("PP", (_pt("P", _pick(rng, PREPS)), self.np_bare(rng, pl)))
            return Tree("NP", (head, pp))
        if kind == "rc":
            rel = _pt("Rel", _pick(rng, RELS))
            if self.p_object_rc and rng.random() < self.p_object_rc:
                # a given auxiliary was chosen to agree with the head: the inner subject
                # then takes the head's number
                inner = plural if inner_plural is None and rc_aux is not None else inner_plural
                return Tree("NP", (head, self.object_rc(rng, rel, rc_aux, inner)))
            pred = self.pred(rng, plural, False, rc_aux, object_plural=inner_plural)
            return Tree("NP", (head, Tree("RC", (rel, pred))))
        raise ValueError(f"unknown modifier kind {kind!r}")

    def object_rc(
        self,
        rng: np.random.Generator,
        rel: Tree,
        aux: str | None = None,
        plural: bool | None = None,
    ) -> Tree:
        """``RC -> Rel NP Pred`` with a gap for the object: ``Pred -> Aux VP``,
        ``VP -> V_tr``; the auxiliary agrees with the clause's bare subject (number
        ``plural``, drawn when None)."""
        pl = self._plural(rng) if plural is None else plural
        subject = self.np_bare(rng, pl)
        verb = _pick(rng, self.lexicon.verbs_tr)[0]
        if aux is None:
            aux = _pick(rng, self.lexicon.aux_for(pl))
        pred = Tree("Pred", (_pt("Aux", aux), Tree("VP", (_pt("V", verb),))))
        return Tree("RC", (rel, subject, pred))

    def sentence(
        self,
        rng: np.random.Generator,
        subject_modifier: str,
        plural: bool | None = None,
        main_aux: str | None = None,
        rc_aux: str | None = None,
        inner_plural: bool | None = None,
    ) -> Tree:
        """``S -> NP Pred`` (mode "aux") or ``S -> NP VP`` (mode "tense")."""
        pl = self._plural(rng) if plural is None else plural
        subj = self.np_modified(rng, pl, subject_modifier, rc_aux, inner_plural)
        return Tree("S", (subj, self.pred(rng, pl, True, main_aux)))

    # ---------------------------------------------------------------- transformations
    def inflect(self, tree: Tree) -> list[str]:
        """The words of a mode-"tense" sentence with every verb in the present tense,
        agreeing with its subject (the noun the clause's subject NP is headed by)."""
        if self.mode != "tense":
            raise ValueError("inflect needs a mode='tense' generator")
        present = {v[2]: (v[1], v[0]) for v in VERBS_INTR + VERBS_TR}
        plural_nouns = {pl for _, pl in NOUNS}
        out: list[str] = []

        def head_plural(np_: Tree) -> bool:
            bare = np_ if np_.children[0].is_preterminal else np_.children[0]  # type: ignore[union-attr]
            return bare.children[1].children[0] in plural_nouns  # type: ignore[union-attr]

        def walk(node: Tree, subject_plural: bool) -> None:
            if node.is_preterminal:
                w = node.children[0]
                if node.label == "V":
                    sg, pl = present[w]  # type: ignore[index]
                    w = pl if subject_plural else sg
                out.append(w)  # type: ignore[arg-type]
                return
            if node.label == "S":
                walk(node.children[0], False)  # type: ignore[arg-type]
                walk(node.children[1], head_plural(node.children[0]))  # type: ignore[arg-type]
                return
            if (
                node.label == "NP"
                and len(node.children) == 2
                and not node.children[0].is_preterminal
            ):  # type: ignore[union-attr]
                walk(node.children[0], False)  # type: ignore[arg-type]
                walk(node.children[1], head_plural(node))  # type: ignore[arg-type]
                return
            for c in node.children:
                walk(c, subject_plural)  # type: ignore[arg-type]

        walk(tree, False)
        return out


@functools.lru_cache(maxsize=64)
def _aux_for(auxiliaries: tuple[str, ...], plural: bool) -> tuple[str, ...]:
    agree = AUX_PL if plural else AUX_SG
    return tuple(a for a in auxiliaries if a in AUX_ANY or a in agree)


def all_words(lexicon: Lexicon | None = None) -> dict[str, list[str]]:
    """Every word of the fragment by part of speech (both modes)."""
    lx = lexicon or Lexicon()
    verbs = [f for v in lx.verbs_intr + lx.verbs_tr for f in v]
    return {
        "Det": list(DETS),
        "N": [w for pair in lx.nouns for w in pair],
        "P": list(PREPS),
        "Rel": list(RELS),
        "Aux": [a for a in AUX_ANY + AUX_SG + AUX_PL if a in lx.auxiliaries],
        "V": verbs,
    }
