"""Dependency trees from constituency trees by head percolation.

Every constituent has one *head child*, found by the search of :data:`HEAD_RULES` for its
label; the head word of a constituent is the head word of its head child, and the head word
of every other child depends on it (Magerman 1995; Collins 1999, appendix A, whose table
this one follows, label by label). The structural-probe literature scores against
dependency trees obtained this way from the Penn Treebank (Hewitt & Manning 2019).

Convention: content words head, as in Universal Dependencies (and as the CoNLL-U treebank
shipped with hierlens is annotated), where Collins' table picks function words:

- **auxiliaries and modals**: a verb followed by a VP complement in a VP, SQ or SINV is an
  auxiliary when it is a modal, infinitival ``to`` or a form of *be*, *have*, *do*; the VP
  complement heads (``will go``, ``has gone``, ``was eaten``, ``Did he go``: *go*, *gone*,
  *eaten*, *go* head);
- **copula**: a form of *be* with a predicate (ADJP, NP, PP or UCP after it, the last such)
  and no VP complement: the predicate heads (``The book was long``: *long* heads);
- **prepositions and complementisers**: a PP is headed by its object (``on the mat``: *mat*),
  an SBAR by its clause (``that I read``: *read*);
- **possessives**: ``'s`` (POS) never heads its NP (``John 's dog``: *John* -> *dog*);
- **coordination**: the first conjunct heads; a conjunction (CC, CONJP) depends on the
  conjunct after it (``cats and dogs``: *dogs* -> *cats*, *and* -> *dogs*);
- **punctuation** never heads a constituent that has another child.

A search ``(direction, labels)`` is Collins': ``"left"``/``"right"`` tries each label in
turn and takes the first child with it scanning from that side; ``"left_any"``/``"right_any"``
takes the first child from that side whose label is any of ``labels`` (Collins' NP rule); an
empty ``labels`` takes the first child from that side. When no search matches, the first
child from the side of the label's first search heads (the last child for a label without a
rule). The grammar tasks' labels (``Pred``, ``RC``, ``V``, ``N``, ``Aux``, ``P``) are in the
same table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .sentence import PTB_PUNCT

__all__ = ["HEAD_RULES", "base_label", "tree_heads"]

Search = tuple[str, tuple[str, ...]]

_NOUNS = ("NN", "NNP", "NNPS", "NNS", "NX", "JJR", "N")
_NP: tuple[Search, ...] = (
    ("right_any", _NOUNS),
    ("left", ("NP",)),
    ("right_any", ("$", "ADJP", "PRN")),
    ("right", ("CD",)),
    ("right_any", ("JJ", "JJS", "RB", "QP")),
    ("right", ()),
)

#: label -> the searches that find its head child (see the module docstring)
HEAD_RULES: dict[str, tuple[Search, ...]] = {
    "ADJP": (("left", ("NNS", "QP", "NN", "$", "ADVP", "JJ", "VBN", "VBG", "ADJP", "JJR",
                       "NP", "JJS", "DT", "FW", "RBR", "RBS", "SBAR", "RB")),),
    "ADVP": (("right", ("RB", "RBR", "RBS", "FW", "ADVP", "TO", "CD", "JJR", "JJ", "IN", "NP",
                        "JJS", "NN")),),
    "CONJP": (("right", ("CC", "RB", "IN")),),
    "FRAG": (("right", ()),),
    "INTJ": (("left", ()),),
    "LST": (("right", ("LS", ":")),),
    "NAC": (("left", ("NN", "NNS", "NNP", "NNPS", "NP", "NAC", "EX", "$", "CD", "QP", "PRP",
                      "VBG", "JJ", "JJS", "JJR", "ADJP", "FW")),),
    "NP": _NP,
    "NX": _NP,
    "PP": (("left", ("NP", "WHNP", "S", "SBAR", "SQ", "VP", "ADJP", "ADVP", "PP", "QP", "UCP")),
           ("right", ("IN", "TO", "VBG", "VBN", "RP", "FW", "P"))),
    "PRN": (("left", ()),),
    "PRT": (("right", ("RP",)),),
    "QP": (("right", ("CD", "QP")),
           ("left", ("$", "IN", "NNS", "NN", "JJ", "RB", "DT", "NCD", "JJR", "JJS"))),
    "RRC": (("right", ("VP", "NP", "ADVP", "ADJP", "PP")),),
    "S": (("left", ("VP", "Pred", "S", "SBAR", "ADJP", "UCP", "NP")),),
    "SBAR": (("left", ("S", "SQ", "SINV", "SBAR", "FRAG", "WHNP", "WHPP", "WHADVP", "WHADJP",
                       "IN", "DT")),),
    "SBARQ": (("left", ("SQ", "S", "SINV", "SBARQ", "FRAG")),),
    "SINV": (("left", ("VBZ", "VBD", "VBP", "VB", "MD", "VP", "S", "SINV", "ADJP", "NP")),),
    "SQ": (("left", ("VBZ", "VBD", "VBP", "VB", "MD", "VP", "SQ")),),
    "UCP": (("right", ()),),
    "VP": (("left", ("TO", "VBD", "VBN", "MD", "VBZ", "VB", "VBG", "VBP", "V", "Aux", "VP",
                     "ADJP", "NN", "NNS", "NP")),),
    "WHADJP": (("left", ("ADJP", "JJ", "JJR", "JJS")), ("left", ("WRB", "CC"))),
    "WHADVP": (("right", ("WRB", "CC")),),
    "WHNP": (("right_any", _NOUNS), ("left", ("WHNP", "NP")),
             ("left", ("WDT", "WP", "WP$", "WHADJP", "WHPP"))),
    "WHPP": (("left", ("WHNP", "NP")), ("right", ("IN", "TO", "FW"))),
    "X": (("right", ()),),
    # the grammar tasks' phrases (models.tasks.grammar)
    "Pred": (("left", ("VP",)),),
    "RC": (("left", ("Pred", "VP")),),
}  # fmt: skip

_VERBAL = frozenset({"MD", "TO", "VB", "VBD", "VBG", "VBN", "VBP", "VBZ", "Aux", "AUX", "V"})
_CLAUSAL_AUX = frozenset({"VP", "SQ", "SINV", "Pred"})
_PREDICATES = frozenset({"ADJP", "NP", "PP", "UCP"})
_BE = frozenset({"be", "is", "are", "was", "were", "been", "being", "am", "'s", "'re", "'m"})
_AUX_WORDS = _BE | {"have", "has", "had", "having", "'ve", "'d", "do", "does", "did", "to"}
_CONJUNCTIONS = frozenset({"CC", "CONJP"})


def base_label(raw: str) -> str:
    """A constituent label without function tags and indices: ``NP-SBJ-1`` -> ``NP``,
    ``NP=2`` -> ``NP``; labels in dashes (``-LRB-``, ``-NONE-``) stay."""
    if raw.startswith("-") and raw.endswith("-"):
        return raw
    return raw.split("=")[0].split("-")[0] or raw


def _is_punct(label: str) -> bool:
    return label in PTB_PUNCT or label == "PUNCT"


def _search(labels: Sequence[str], rules: Sequence[Search]) -> int | None:
    """Index of the head child among children labelled ``labels`` (punctuation skipped)."""
    order = {"left": 1, "left_any": 1, "right": -1, "right_any": -1}
    idx = [k for k, lab in enumerate(labels) if not _is_punct(lab)] or list(range(len(labels)))
    for direction, wanted in rules:
        scan = idx if order[direction] == 1 else idx[::-1]
        if not wanted:
            return scan[0]
        if direction.endswith("_any"):
            hit = next((k for k in scan if labels[k] in wanted), None)
            if hit is not None:
                return hit
            continue
        for want in wanted:
            hit = next((k for k in scan if labels[k] == want), None)
            if hit is not None:
                return hit
    first = rules[0][0] if rules else "right"
    return idx[0] if order[first] == 1 else idx[-1]


def _head_child(label: str, kids: list[tuple[str, int]], words: Sequence[str]) -> int:
    """Index of the head child of a constituent labelled ``label`` whose children are
    ``(label, head word index)``, after the content-head adjustments of the module doc."""
    labels = [lab for lab, _ in kids]
    rules = HEAD_RULES.get(label, (("right", ()),))
    conj = [k for k, lab in enumerate(labels) if lab in _CONJUNCTIONS and k > 0]
    if conj and any(not _is_punct(lab) for lab in labels[: conj[0]]):
        # coordination: the head among the children before the first conjunction
        labels = labels[: conj[0]]
    pick = _search(labels, rules)
    if label in _CLAUSAL_AUX and labels[pick] in _VERBAL:
        word = words[kids[pick][1]].lower()
        after = range(pick + 1, len(labels))
        vp = next((k for k in after if labels[k] in ("VP", "Pred")), None)
        if vp is not None and (labels[pick] in ("MD", "TO", "Aux", "AUX") or word in _AUX_WORDS):
            return vp
        if vp is None and word in _BE:
            pred = [k for k in after if labels[k] in _PREDICATES]
            if pred:
                return pred[-1]
    return pick


def tree_heads(tree: Any) -> tuple[int, ...]:
    """Dependency heads (0-based word indices, ``-1`` for the root) of the words of a
    constituency tree (an ``nltk.Tree`` whose every word sits under a part-of-speech
    preterminal; empty elements already removed), by :data:`HEAD_RULES` and the
    content-head convention of the module docstring. One word heads the whole tree, so the
    result is a single-rooted tree."""
    from nltk import Tree

    words = [str(w) for w in tree.leaves()]
    heads = [-1] * len(words)

    def walk(node: Tree, start: int) -> tuple[int, int]:
        """(head word index, end) of ``node`` starting at word ``start``."""
        if len(node) == 1 and not isinstance(node[0], Tree):
            return start, start + 1
        kids, end = [], start
        for child in node:
            if not isinstance(child, Tree):
                raise ValueError(f"word {child!r} is not under a part-of-speech tag in {node}")
            h, end = walk(child, end)
            kids.append((base_label(child.label()), h))
        pick = _head_child(base_label(node.label()), kids, words)
        head = kids[pick][1]
        for k, (lab, h) in enumerate(kids):
            if k == pick:
                continue
            target = head
            if lab in _CONJUNCTIONS and k > 0:  # a conjunction hangs on the next conjunct
                nxt = next(
                    (kids[j][1] for j in range(k + 1, len(kids)) if not _is_punct(kids[j][0])),
                    None,
                )
                if nxt is not None and nxt != head:
                    target = nxt
            heads[h] = target
        return head, end

    walk(tree, 0)
    return tuple(heads)
