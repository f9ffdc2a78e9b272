"""Treebank writers: gold trees from anywhere as files the readers of
:mod:`hierlens.models.treebank` take.

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

from pathlib import Path

from .head_rules import tree_heads
from .sentence import PTB_PUNCT, Sentence
from .treebank import PTB_UNESCAPE, prune_empty

__all__ = ["exportable_tasks", "heads_from_tree", "task_trees", "write_conllu", "write_ptb"]

_ESCAPE = {v: k for k, v in PTB_UNESCAPE.items()}

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
    tree = prune_empty(_preterminal_tree(tree))
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
