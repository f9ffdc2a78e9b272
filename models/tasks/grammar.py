"""A small English fragment with constituency trees, shared by the grammar-based tasks.

The fragment follows the kind of grammar used by McCoy, Frank & Linzen, "Does syntax need to
grow on trees?" (TACL 2020) and Murty et al., "Grokking of Hierarchical Structure in Vanilla
Transformers" (ACL 2023): determiners, singular/plural nouns, prepositional phrases,
relative clauses with *who*/*that*, and either auxiliaries with bare verbs (question
formation) or tensed verbs (tense inflection). The lexicon is our own. Every word has a
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

:class:`TransductionTask` is the shared base of the two sentence-transformation tasks
(:mod:`.question_formation`, :mod:`.tense_inflection`).
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import zlib
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from .base import BOS, EOS, IGNORE_INDEX, PAD, SPLITS, Batch, Example, Task, gold_depths

_MAX_ROUNDS = 100_000

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
    "TransductionTask",
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


# --------------------------------------------------------------------------------------------
# shared task machinery: "<bos> input-words <marker> output-words <eos>"
# --------------------------------------------------------------------------------------------


def _need(cls_name: str, ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(f"{cls_name}: {msg}")


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class TransductionTask(Task):
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
        c = type(self).__name__
        _need(
            c,
            _is_int(self.n_nouns) and 1 <= self.n_nouns <= len(NOUNS),
            f"n_nouns must be an integer in [1, {len(NOUNS)}], got {self.n_nouns!r}",
        )
        _need(
            c,
            _is_int(self.n_verbs) and 1 <= self.n_verbs <= len(VERBS_INTR),
            f"n_verbs must be an integer in [1, {len(VERBS_INTR)}], got {self.n_verbs!r}",
        )
        for field in ("p_transitive", "p_object_modifier"):
            v = getattr(self, field)
            _need(c, 0.0 <= v <= 1.0, f"{field} must be in [0, 1], got {v!r}")
        _need(
            c,
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


@functools.lru_cache(maxsize=32)
def _index(vocab: tuple[str, ...]) -> dict[str, int]:
    return {t: i for i, t in enumerate(vocab)}
