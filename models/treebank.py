"""Treebank readers: Penn-Treebank brackets (nltk) and CoNLL-U dependencies (conllu).

- :func:`read_ptb` / :func:`parse_ptb`: bracketed trees, one per line or spread over lines
  (``.mrg``). The PTB's empty top bracket ``( (S ...) )`` is unwrapped, ``-NONE-`` empty
  elements are dropped with every constituent they leave empty, function tags and indices
  are stripped from labels (``NP-SBJ-1`` -> ``NP``) and bracket escapes in words are
  undone (``-LRB-`` -> ``(``). Each sentence also gets a dependency tree converted from its
  constituency tree by head rules (:mod:`hierlens.models.head_rules`), which tree
  distances, depths and UUAS then use.
- :func:`read_conllu` / :func:`parse_conllu`: CoNLL-U sentences; multiword-token ranges
  (``1-2``) and empty nodes (``3.1``) are skipped.
- :func:`shipped_treebank`: the small English treebank installed with hierlens, in either
  format (the same sentences, with consistent trees).

All return :class:`~hierlens.models.sentence.Sentence` lists; ``drop_punct=True`` removes
punctuation and re-numbers spans and heads.

Writers, so that gold trees from elsewhere feed the same readers:

- :func:`write_ptb`: one bracketed tree per line (``nltk.Tree``), words under their
  part-of-speech preterminal (``X`` where none is known).
- :func:`write_conllu`: CoNLL-U (the ``conllu`` package's serializer); the heads are the
  sentence's own when it has a dependency tree (PTB sentences get theirs from head rules
  when read), else derived from the constituency tree by :func:`heads_from_tree` (the
  head rules of :mod:`hierlens.models.head_rules`).
- :func:`task_trees`: the gold trees of a task's examples (the English grammar tasks,
  :func:`exportable_tasks`).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

from .head_rules import base_label, tree_heads
from .sentence import PTB_PUNCT, Sentence, dependency_spans
from .treebank_files import conllu_sentences, read_text_file

__all__ = [
    "exportable_tasks",
    "heads_from_tree",
    "parse_conllu",
    "parse_ptb",
    "read_conllu",
    "read_ptb",
    "sentence_from_tree",
    "shipped_treebank",
    "task_trees",
    "write_conllu",
    "write_ptb",
]

_UNESCAPE = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}


def _prune(tree):
    """``tree`` without ``-NONE-`` elements and the constituents they empty, or None."""
    from nltk import Tree

    if not isinstance(tree, Tree):
        return tree
    if tree.label() == "-NONE-":
        return None
    kids = [k for k in (_prune(c) for c in tree) if k is not None]
    return Tree(tree.label(), kids) if kids else None


def sentence_from_tree(tree) -> Sentence:
    """A :class:`Sentence` from one ``nltk.Tree`` in PTB style (preterminals over words):
    its constituency spans, and dependency heads by the head rules of
    :mod:`hierlens.models.head_rules` (relations ``dep``, ``root`` for the root word)."""
    from nltk import Tree

    while isinstance(tree, Tree) and tree.label() in ("", "ROOT", "TOP") and len(tree) == 1:
        tree = tree[0]
    pruned = _prune(tree)
    if not isinstance(pruned, Tree):
        raise ValueError(f"tree has no words after dropping empty elements: {tree}")
    words: list[str] = []
    pos: list[str] = []
    constituent: list[str] = []
    spans: dict[tuple[int, int], str] = {}

    def walk(node, parent_label: str) -> None:
        label = base_label(node.label())
        if len(node) == 1 and not isinstance(node[0], Tree):  # preterminal
            words.append(_UNESCAPE.get(node[0], node[0]))
            pos.append(label)
            constituent.append(parent_label)
            return
        start = len(words)
        for child in node:
            if not isinstance(child, Tree):
                raise ValueError(f"word {child!r} is not under a part-of-speech tag in {node}")
            walk(child, label)
        span = (start, len(words))
        if span[1] - span[0] >= 2:
            spans[span] = label  # post-order: a unary chain ends with its top label

    walk(pruned, base_label(pruned.label()))
    order = sorted(spans, key=lambda s: (s[0], -s[1]))
    heads = tree_heads(pruned)
    return Sentence(
        words=tuple(words),
        pos=tuple(pos),
        spans=tuple(order),
        span_labels=tuple(spans[s] for s in order),
        constituent=tuple(constituent),
        punct=tuple(p in PTB_PUNCT for p in pos),
        heads=heads,
        deprels=tuple("root" if h == -1 else "dep" for h in heads),
    )


def parse_ptb(text: str, drop_punct: bool = False) -> list[Sentence]:
    """Sentences from bracketed trees in ``text`` (one per line or multi-line), read with
    nltk's s-expression block reader and ``nltk.Tree.fromstring``."""
    from nltk import Tree
    from nltk.corpus.reader.util import read_sexpr_block

    stream, blocks = io.StringIO(text), []
    while True:
        block = read_sexpr_block(stream)
        if not block:
            break
        blocks.extend(b for b in block if b.strip())
    out = []
    for k, block in enumerate(blocks):
        try:
            tree = Tree.fromstring(block, remove_empty_top_bracketing=True)
        except ValueError as err:
            raise ValueError(f"tree {k} is not well-formed brackets: {err}") from None
        s = sentence_from_tree(tree)
        out.append(s.without_punct() if drop_punct else s)
    return out


def _in_file(path: str | Path, parse: Callable, drop_punct: bool) -> list[Sentence]:
    """``parse(text)`` of the file ``path``, its errors naming the file."""
    text = read_text_file(path)
    try:
        return parse(text, drop_punct=drop_punct)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def read_ptb(path: str | Path, drop_punct: bool = False) -> list[Sentence]:
    """Sentences from a file of PTB bracketed trees (``.mrg``, ``.ptb``, ``.txt``)."""
    return _in_file(path, parse_ptb, drop_punct)


def parse_conllu(text: str, drop_punct: bool = False) -> list[Sentence]:
    """Sentences from CoNLL-U ``text``: words, UPOS, heads and relations (see module doc).
    An error names the sentence (number, first line, ``sent_id``)."""
    out = []
    for where, tokenlist in conllu_sentences(text):
        rows = [t for t in tokenlist if isinstance(t["id"], int)]
        if not rows:
            continue
        index = {t["id"]: i for i, t in enumerate(rows)}
        bad = [t["head"] for t in rows if t["head"] != 0 and t["head"] not in index]
        if bad:
            raise ValueError(f"{where}: head {bad[0]!r} is not a word id of the sentence")
        heads = tuple(-1 if t["head"] == 0 else index[t["head"]] for t in rows)
        try:
            dependency_spans(heads)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        upos = tuple(str(t["upos"]) for t in rows)
        spans = dependency_spans(heads)
        n = len(rows)

        def head_of(span: tuple[int, int], heads=heads) -> int:
            return next(w for w in range(*span) if not span[0] <= heads[w] < span[1])

        labels = tuple(f"{upos[head_of(s)]}P" for s in spans)
        constituent = []
        for w in range(n):
            inside = [(s[1] - s[0], lab) for s, lab in zip(spans, labels) if s[0] <= w < s[1]]
            constituent.append(min(inside)[1] if inside else f"{upos[w]}P")
        s = Sentence(
            words=tuple(str(t["form"]) for t in rows),
            pos=upos,
            spans=spans,
            span_labels=labels,
            constituent=tuple(constituent),
            punct=tuple(p == "PUNCT" for p in upos),
            heads=heads,
            deprels=tuple(str(t["deprel"]) for t in rows),
        )
        out.append(s.without_punct() if drop_punct else s)
    return out


def read_conllu(path: str | Path, drop_punct: bool = False) -> list[Sentence]:
    """Sentences from a CoNLL-U file (an error names the file and the sentence)."""
    return _in_file(path, parse_conllu, drop_punct)


def shipped_treebank(format: str = "ptb", drop_punct: bool = False) -> list[Sentence]:
    """The small English treebank installed with hierlens (``format="ptb"`` or ``"conllu"``):
    the same sentences in both, covering relative clauses, PPs, coordination, questions,
    passives, embedded clauses and punctuation."""
    names = {"ptb": "treebank_en.mrg", "conllu": "treebank_en.conllu"}
    if format not in names:
        raise ValueError(f"format must be 'ptb' or 'conllu', got {format!r}")
    text = (files("hierlens.models") / "data" / names[format]).read_text(encoding="utf-8")
    return parse_ptb(text, drop_punct) if format == "ptb" else parse_conllu(text, drop_punct)


# --- writers -------------------------------------------------------------------------------

_ESCAPE = {v: k for k, v in _UNESCAPE.items()}

#: Universal POS of the task grammar's and the Penn Treebank's parts of speech (others are
#: written ``X``).
_UPOS = {"Det": "DET", "N": "NOUN", "V": "VERB", "Aux": "AUX", "Rel": "PRON", "P": "ADP"}
_UPOS.update({"CC": "CCONJ", "CD": "NUM", "DT": "DET", "PDT": "DET", "EX": "PRON", "FW": "X"})
_UPOS.update({"IN": "ADP", "RP": "ADP", "TO": "PART", "POS": "PART", "MD": "AUX", "UH": "INTJ"})
_UPOS.update({t: "ADJ" for t in ("JJ", "JJR", "JJS")} | {t: "ADV" for t in ("RB", "RBR", "RBS")})
_UPOS.update({"NN": "NOUN", "NNS": "NOUN", "NNP": "PROPN", "NNPS": "PROPN", "SYM": "SYM"})
_UPOS.update({t: "VERB" for t in ("VB", "VBD", "VBG", "VBN", "VBP", "VBZ")})
_UPOS.update({"PRP": "PRON", "PRP$": "PRON", "WP": "PRON", "WP$": "PRON", "WDT": "PRON"})
_UPOS.update({"WRB": "ADV", "$": "SYM", "#": "SYM", "LS": "X"} | dict.fromkeys(PTB_PUNCT, "PUNCT"))
_UPOS_TAGS = frozenset(_UPOS.values()) | {"SCONJ"}  # the 17 Universal POS tags


def _as_upos(tags: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_UPOS.get(t, "X") for t in tags)


def exportable_tasks() -> list[str]:
    """The registered tasks whose examples carry gold trees over English words (the
    grammar tasks), and so can be written as a treebank."""
    from .tasks.registry import list_tasks, task_class
    from .tasks.transduction import TransductionTask

    return [n for n in list_tasks() if issubclass(task_class(n), TransductionTask)]


def task_trees(task: str | object, n: int, split: str = "train", seed: int = 0) -> list:
    """The gold trees (``nltk.Tree``, part-of-speech preterminals over words) of ``n``
    examples of ``split`` of a grammar task (a name or a task object).

    Raises:
        ValueError: the task has no gold trees over words (only :func:`exportable_tasks` do),
            before sampling.
    """
    from nltk import Tree

    from .tasks.registry import get_task
    from .tasks.transduction import TransductionTask

    obj = get_task(task) if isinstance(task, str) else task
    if not isinstance(obj, TransductionTask):
        name = getattr(obj, "name", type(obj).__name__)
        raise ValueError(
            f"task {name!r} has no gold trees over words to export; tasks that can export: "
            f"{', '.join(exportable_tasks())}"
        )
    return [Tree.fromstring(ex.labels["tree"]) for ex in obj.sample(n, split, seed)]


def _tree_from_sentence(s: Sentence):
    """An ``nltk.Tree`` of a :class:`Sentence`: its spans with their labels, words under
    their part-of-speech tags."""
    from nltk import Tree

    from .sentence import _children

    labels = dict(zip(s.spans, s.span_labels))

    def build(span: tuple[int, int]):
        i, j = span
        if j - i == 1:
            return Tree(s.pos[i] or "X", [s.words[i]])
        return Tree(labels.get(span, "X"), [build(c) for c in _children(span, s.spans)])

    return build((0, len(s))) if len(s) >= 2 else Tree("X", [build((0, 1))])


def _as_tree(item: object):
    """``nltk.Tree`` of a tree-like item: an ``nltk.Tree``, a bracketed string, a task
    :class:`~hierlens.models.tasks.Example` (its ``labels["tree"]``), a grammar
    :class:`~hierlens.models.tasks.grammar.Tree` or a :class:`Sentence`."""
    from nltk import Tree

    if isinstance(item, Tree):
        return item
    if isinstance(item, Sentence):
        return _tree_from_sentence(item)
    if isinstance(item, str):
        return Tree.fromstring(item)
    bracketed = getattr(item, "bracketed", None)
    if callable(bracketed):
        return Tree.fromstring(bracketed())
    labels = getattr(item, "labels", None)
    if isinstance(labels, dict) and isinstance(labels.get("tree"), str):
        return Tree.fromstring(labels["tree"])
    raise TypeError(
        f"cannot write a {type(item).__name__} as a tree: need an nltk.Tree, a bracketed "
        "string, a grammar task's Example or Tree, or a Sentence"
    )


def _preterminal_tree(tree):
    """``tree`` with every bare word put under an ``X`` preterminal and brackets escaped."""
    from nltk import Tree

    def fix(node):
        if not isinstance(node, Tree):
            return Tree("X", [_ESCAPE.get(node, node)])
        if len(node) == 1 and not isinstance(node[0], Tree):
            return Tree(node.label() or "X", [_ESCAPE.get(node[0], node[0])])
        return Tree(node.label() or "X", [fix(c) for c in node])

    return fix(tree)


def write_ptb(items: object, path: str | Path) -> Path:
    """Write trees as Penn-Treebank brackets, one tree per line, readable by
    :func:`read_ptb`.

    Args:
        items: trees (see :func:`_as_tree`: ``nltk.Tree``, bracketed strings, grammar-task
            examples or trees, :class:`Sentence` s); a word without a part-of-speech tag is
            written under ``X``.
        path: the file to write (its folder must exist).

    Returns:
        the path written.
    """
    trees = [_preterminal_tree(_as_tree(item)) for item in items]  # type: ignore[attr-defined]
    if not trees:
        raise ValueError("no trees to write")
    text = "".join(t.pformat(margin=10**9) + "\n" for t in trees)
    out = Path(path)
    out.write_text(text, encoding="utf-8")
    return out


def heads_from_tree(tree) -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]:
    """Words, parts of speech and dependency heads (0-based, ``-1`` for the root) of a
    constituency tree (an ``nltk.Tree``; bare words get an ``X`` preterminal, empty
    ``-NONE-`` elements are dropped), by the head rules of :mod:`hierlens.models.head_rules`
    (Collins 1999's table with content words as heads). One word heads the whole tree, so
    the result is a single-rooted tree."""
    from nltk import Tree

    while isinstance(tree, Tree) and tree.label() in ("", "ROOT", "TOP") and len(tree) == 1:
        tree = tree[0]
    tree = _prune(_preterminal_tree(tree))
    if tree is None:
        raise ValueError("the tree has no words after dropping empty elements")
    words = tuple(str(w) for w in tree.leaves())
    pos = tuple(label for _, label in tree.pos())
    return words, pos, tree_heads(tree)


def write_conllu(items: object, path: str | Path) -> Path:
    """Write trees as CoNLL-U, readable by :func:`read_conllu`.

    A :class:`Sentence` with dependency heads keeps them and its relations (its POS is
    written as UPOS when it is a Universal POS tag, else as XPOS with the matching UPOS); any
    other item (see :func:`write_ptb`) gets the heads of :func:`heads_from_tree`, the
    relation ``dep`` (``root`` for the root), its part of speech as XPOS and the matching
    Universal POS as UPOS (``X`` where none matches).

    Returns:
        the path written.
    """
    from conllu.models import Token, TokenList

    lists = []
    for k, item in enumerate(items):  # type: ignore[attr-defined]
        if isinstance(item, Sentence) and item.heads is not None:
            words, heads, rels = item.words, item.heads, item.deprels
            if all(p in _UPOS_TAGS for p in item.pos):  # read from CoNLL-U
                upos, xpos = item.pos, ("_",) * len(words)
            else:  # read from PTB brackets: the tags are XPOS
                upos, xpos = _as_upos(item.pos), item.pos
        else:
            words, xpos, heads = heads_from_tree(_as_tree(item))
            upos = _as_upos(xpos)
            rels = tuple("root" if h == -1 else "dep" for h in heads)
        rows = [
            Token(
                id=i + 1,
                form=w,
                lemma="_",
                upos=u,
                xpos=x,
                feats=None,
                head=h + 1,
                deprel=r,
                deps=None,
                misc=None,
            )  # fmt: skip
            for i, (w, u, x, h, r) in enumerate(zip(words, upos, xpos, heads, rels))
        ]
        meta = {"sent_id": str(k + 1), "text": " ".join(words)}
        lists.append(TokenList(rows, metadata=meta).serialize())
    if not lists:
        raise ValueError("no trees to write")
    out = Path(path)
    out.write_text("".join(lists), encoding="utf-8")
    return out
