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

The writers, which produce files these readers take, are in
:mod:`hierlens.models.treebank_export`.
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
    "PTB_UNESCAPE",
    "parse_conllu",
    "parse_ptb",
    "prune_empty",
    "read_conllu",
    "read_ptb",
    "sentence_from_tree",
    "shipped_treebank",
]

#: Penn Treebank bracket escapes and the characters they stand for.
PTB_UNESCAPE = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}


def prune_empty(tree):
    """``tree`` without ``-NONE-`` elements and the constituents they empty, or None."""
    from nltk import Tree

    if not isinstance(tree, Tree):
        return tree
    if tree.label() == "-NONE-":
        return None
    kids = [k for k in (prune_empty(c) for c in tree) if k is not None]
    return Tree(tree.label(), kids) if kids else None


def sentence_from_tree(tree) -> Sentence:
    """A :class:`Sentence` from one ``nltk.Tree`` in PTB style (preterminals over words):
    its constituency spans, and dependency heads by the head rules of
    :mod:`hierlens.models.head_rules` (relations ``dep``, ``root`` for the root word)."""
    from nltk import Tree

    while isinstance(tree, Tree) and tree.label() in ("", "ROOT", "TOP") and len(tree) == 1:
        tree = tree[0]
    pruned = prune_empty(tree)
    if not isinstance(pruned, Tree):
        raise ValueError(f"tree has no words after dropping empty elements: {tree}")
    words: list[str] = []
    pos: list[str] = []
    constituent: list[str] = []
    spans: dict[tuple[int, int], str] = {}

    def walk(node, parent_label: str) -> None:
        label = base_label(node.label())
        if len(node) == 1 and not isinstance(node[0], Tree):  # preterminal
            words.append(PTB_UNESCAPE.get(node[0], node[0]))
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
