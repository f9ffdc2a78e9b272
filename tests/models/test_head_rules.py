"""Dependencies from PTB constituency trees by head rules (Collins' table, content words as
heads): hand-written trees whose heads are known, the shipped treebank against its
hand-annotated CoNLL-U twin, and gold edges that follow the tree, not the word order."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from nltk import Tree

from hierlens.models import shipped_treebank
from hierlens.models.treebank import parse_ptb, read_conllu
from hierlens.models.treebank_export import heads_from_tree, write_conllu
from hierlens.probes.structural_metrics import mst_edges


def _deps(bracketed: str) -> dict[str, str]:
    """``{word: its head word}`` (``ROOT`` for the root) of a tree whose words are distinct."""
    (s,) = parse_ptb(bracketed)
    assert len(set(s.words)) == len(s.words)
    return {w: "ROOT" if h == -1 else s.words[h] for w, h in zip(s.words, s.heads)}


def test_simple_clause():
    got = _deps("(S (NP (DT The) (NN dog)) (VP (VBD barked)) (. .))")
    assert got == {"The": "dog", "dog": "barked", "barked": "ROOT", ".": "barked"}


def test_temporal_noun_does_not_head_the_clause():
    # the last child of the VP is not its head: the verb is (a root of "yesterday" before)
    got = _deps("( (S (NP-SBJ (PRP I)) (VP (VBD left) (NP-TMP (NN yesterday))) (. .)) )")
    assert got == {"I": "left", "left": "ROOT", "yesterday": "left", ".": "left"}


def test_pp_attachment_follows_the_bracketing():
    noun = _deps(
        "(S (NP (PRP I)) (VP (VBD saw) (NP (NP (DT the) (NN man)) (PP (IN with) (NP (DT a)"
        " (NN telescope))))) (. .))"
    )
    verb = _deps(
        "(S (NP (PRP I)) (VP (VBD saw) (NP (DT the) (NN man)) (PP (IN with) (NP (DT a)"
        " (NN telescope)))) (. .))"
    )
    # the object of the preposition heads the PP and hangs on what the PP modifies
    assert noun["telescope"] == "man" and verb["telescope"] == "saw"
    for got in (noun, verb):
        assert got["with"] == "telescope" and got["a"] == "telescope"
        assert got["man"] == "saw" and got["saw"] == "ROOT"


def test_coordination_first_conjunct_heads():
    got = _deps(
        "(S (NP (NP (NNS cats)) (CC and) (NP (NNS dogs))) (VP (VP (VBD ran)) (CC but)"
        " (VP (VBD stopped))) (. .))"
    )
    assert got["cats"] == "ran" and got["dogs"] == "cats" and got["and"] == "dogs"
    assert got["ran"] == "ROOT" and got["stopped"] == "ran" and got["but"] == "stopped"
    # bare coordinated nouns: the right-most noun would head by Collins' NP rule alone
    assert _deps("(NP (NN salt) (CC and) (NN pepper))") == {
        "salt": "ROOT",
        "and": "pepper",
        "pepper": "salt",
    }
    # a sentence-initial conjunction is no coordination
    assert _deps("(S (CC But) (NP (PRP he)) (VP (VBD left)))")["But"] == "left"


def test_copula_predicate_heads():
    got = _deps("(S (NP (DT The) (NN book)) (VP (VBD was) (ADJP (JJ long))) (. .))")
    assert got == {"The": "book", "book": "long", "was": "long", "long": "ROOT", ".": "long"}
    got = _deps("(S (NP (PRP She)) (VP (VBZ is) (NP (DT a) (NN doctor))))")
    assert got["doctor"] == "ROOT" and got["is"] == "doctor" and got["She"] == "doctor"
    got = _deps("(SQ (VBZ Is) (NP (PRP he)) (ADJP (JJ happy)))")
    assert got == {"Is": "happy", "he": "happy", "happy": "ROOT"}
    # "have" with an object is the main verb
    assert _deps("(S (NP (PRP We)) (VP (VBP have) (NP (NNS dogs))))")["have"] == "ROOT"


def test_auxiliaries_modals_passive_and_infinitival_to_depend_on_the_verb():
    got = _deps("(S (NP (PRP He)) (VP (MD will) (VP (VB have) (VP (VBN left)))) (. .))")
    assert got == {"He": "left", "will": "left", "have": "left", "left": "ROOT", ".": "left"}
    got = _deps(
        "(S (NP (DT The) (NN cake)) (VP (VBD was) (VP (VBN eaten) (PP (IN by) (NP (DT a)"
        " (NN dog))))))"
    )
    assert got["eaten"] == "ROOT" and got["was"] == "eaten" and got["dog"] == "eaten"
    assert got["by"] == "dog" and got["cake"] == "eaten"
    got = _deps("(S (NP (PRP I)) (VP (VBD wanted) (S (VP (TO to) (VP (VB go))))))")
    assert got == {"I": "wanted", "wanted": "ROOT", "to": "go", "go": "wanted"}
    got = _deps("(SBARQ (WHNP (WP What)) (SQ (VBD did) (NP (PRP he)) (VP (VB see))) (. ?))")
    assert got == {"What": "see", "did": "see", "he": "see", "see": "ROOT", "?": "see"}


def test_clauses_possessives_traces_and_function_tags():
    got = _deps(
        "(S (NP (PRP I)) (VP (VBP think) (SBAR (IN that) (S (NP (PRP he)) (VP (VBD left))))))"
    )
    assert got == {"I": "think", "think": "ROOT", "that": "left", "he": "left", "left": "think"}
    got = _deps(
        "( (S (NP-SBJ (NP (DT The) (NN book)) (SBAR (WHNP-1 (WDT that)) (S (NP-SBJ (PRP I))"
        " (VP (VBD read) (NP (-NONE- *T*-1)))))) (VP (VBD was) (ADJP (JJ long))) (. .)) )"
    )
    assert got["read"] == "book" and got["that"] == "read" and got["long"] == "ROOT"
    got = _deps("(NP (NP (NNP John) (POS 's)) (NN dog))")
    assert got == {"John": "dog", "'s": "John", "dog": "ROOT"}


def test_shipped_ptb_matches_its_hand_annotated_conllu():
    """The two shipped files were annotated separately (brackets; UD dependencies): the
    head rules reproduce every head of the CoNLL-U file, punctuation included."""
    ptb, ud = shipped_treebank("ptb"), shipped_treebank("conllu")
    heads = [h for s in ptb for h in s.heads]
    assert heads == [h for s in ud for h in s.heads]


def test_written_conllu_keeps_the_converted_heads(tmp_path):
    ptb = shipped_treebank("ptb")[:12]
    back = read_conllu(write_conllu(ptb, tmp_path / "t.conllu"))
    assert [s.heads for s in back] == [s.heads for s in ptb]
    assert [s.punct for s in back] == [s.punct for s in ptb]  # PTB tags written as UPOS
    assert back[0].pos[:2] == ("DET", "NOUN")
    # a bare nltk tree goes through the same rules
    tree = Tree.fromstring("(S (NP-SBJ (PRP I)) (VP (VBD left) (NP-TMP (NN yesterday))) (. .))")
    assert heads_from_tree(tree) == (("I", "left", "yesterday", "."), ("PRP", "VBD", "NN", "."),
                                     (1, -1, 1, 1))  # fmt: skip


def _mirror(s):
    """The sentence with its words in reverse order and its trees mirrored with them."""
    n = len(s)
    spans = {(n - j, n - i): lab for (i, j), lab in zip(s.spans, s.span_labels)}
    order = sorted(spans, key=lambda x: (x[0], -x[1]))
    heads = None if s.heads is None else tuple(-1 if h == -1 else n - 1 - h for h in s.heads)
    return dataclasses.replace(
        s,
        words=s.words[::-1],
        pos=s.pos[::-1],
        constituent=s.constituent[::-1],
        punct=s.punct[::-1],
        spans=tuple(order),
        span_labels=tuple(spans[x] for x in order),
        heads=None if heads is None else heads[::-1],
        deprels=None if s.deprels is None else s.deprels[::-1],
    )


def _gold_edges(s) -> set[tuple[int, int]]:
    keep = np.flatnonzero(~np.asarray(s.punct))
    d = s.distances()[np.ix_(keep, keep)]
    return {(int(keep[a]), int(keep[b])) for a, b in mst_edges(d)}


@pytest.mark.parametrize("gold", ["dependency", "constituency"])
def test_gold_edges_follow_the_tree_not_the_word_order(gold):
    """Reversing a sentence (its tree mirrored with it) must mirror the UUAS gold edges. The
    dependency tree's are its own edges, so they do, exactly; the spanning tree over
    binarised-constituency distances is full of ties broken by word order, so it does not:
    that is why UUAS is scored against dependencies."""
    kept = total = 0
    for s in shipped_treebank("ptb"):
        if gold == "constituency":
            s = dataclasses.replace(s, heads=None, deprels=None)
        n = len(s)
        back = {tuple(sorted((n - 1 - i, n - 1 - j))) for i, j in _gold_edges(_mirror(s))}
        ours = _gold_edges(s)
        kept += len(back & ours)
        total += len(ours)
    if gold == "dependency":
        assert kept == total
    else:
        assert kept < 0.95 * total
