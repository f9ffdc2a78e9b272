"""Treebank readers, the Sentence trees and the shipped treebank."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from hierlens.models import read_text, shipped_treebank
from hierlens.models.sentence import binarize_spans
from hierlens.models.treebank import parse_conllu, parse_ptb
from tests.tree_paths import adjacency, bfs_distances, head_adjacency


def test_shipped_files_agree():
    ptb, ud = shipped_treebank("ptb"), shipped_treebank("conllu")
    assert len(ptb) == len(ud) >= 60
    for a, b in zip(ptb, ud):
        assert a.words == b.words
        assert a.punct == b.punct
        assert b.heads.count(-1) == 1  # one root, and Sentence checked there is no cycle
        assert len(a.spans) >= 2 and a.spans[0] == (0, len(a))
        for i, j in a.spans:
            assert i >= 0 and j <= len(a) and j - i >= 2
        for x in a.spans:  # laminar: spans nest or are disjoint
            assert all(not (x[0] < y[0] < x[1] < y[1]) for y in a.spans)
    assert {"?", ",", "."} <= {w for s in ptb for w in s.words}


def test_ptb_empty_top_traces_function_tags_and_unaries():
    text = """( (S (NP-SBJ (DT The) (NN book) (SBAR (WHNP-1 (WDT that))
                (S (NP-SBJ (PRP I)) (VP (VBD read) (NP (-NONE- *T*-1))))))
             (VP (VBD was) (ADJP (JJ long))) (. .)) )
    (S (NP (NP (NNS dogs))) (VP (VBP bark)))"""
    a, b = parse_ptb(text)
    assert a.words == ("The", "book", "that", "I", "read", "was", "long", ".")
    assert a.spans == ((0, 8), (0, 5), (2, 5), (3, 5), (5, 7))
    assert a.span_labels == ("S", "NP", "SBAR", "S", "VP")
    assert a.constituent[4] == "VP" and a.constituent[6] == "ADJP"
    assert a.depth == (2, 2, 3, 4, 4, 2, 2, 1)
    assert b.spans == ((0, 2),) and b.constituent == ("NP", "VP")
    c = a.without_punct()
    assert c.words == a.words[:-1] and c.spans == ((0, 7), (0, 5), (2, 5), (3, 5), (5, 7))
    with pytest.raises(ValueError, match="part-of-speech"):
        parse_ptb("(S (NP (NN x)) y)")
    with pytest.raises(ValueError):
        parse_ptb("(S (NP (NN x)) (VP (VB y))))")


def test_binarize_and_constituency_distances_brute_force():
    spans = ((0, 5), (1, 4))  # (0 (1 2 3) 4)
    assert binarize_spans(spans) == ((0, 5), (1, 5), (1, 4), (2, 4))
    for s in shipped_treebank("ptb")[:15]:
        s = dataclasses.replace(s, heads=None, deprels=None)  # its constituency tree only
        n, binary = len(s), s.binary
        # explicit graph: a node per binarised span and per word; edge to the smallest parent
        nodes = list(binary) + [(w, w + 1) for w in range(n)]
        edges = []
        for k, (i, j) in enumerate(nodes[1:], start=1):
            parent = min(
                (p for p, (a, b) in enumerate(binary) if a <= i and j <= b and (a, b) != (i, j)),
                key=lambda p: binary[p][1] - binary[p][0],
            )
            edges.append((k, parent))
        full = bfs_distances(adjacency(edges, len(nodes)), len(nodes))
        leaves = list(range(len(binary), len(nodes)))
        np.testing.assert_array_equal(s.distances(), full[np.ix_(leaves, leaves)])
        np.testing.assert_array_equal(s.depths(), full[0, leaves])


def test_conllu_dependency_distances_and_skips():
    text = (
        "# text = He doesn't go.\n"
        "1\tHe\t_\tPRON\t_\t_\t3\tnsubj\t_\t_\n"
        "2-3\tdoesn't\t_\t_\t_\t_\t_\t_\t_\t_\n"
        "2\tdoes\t_\tAUX\t_\t_\t4\taux\t_\t_\n"
        "3\tn't\t_\tPART\t_\t_\t4\tadvmod\t_\t_\n"
        "3.1\tgone\t_\tVERB\t_\t_\t_\t_\t_\t_\n"
        "4\tgo\t_\tVERB\t_\t_\t0\troot\t_\t_\n"
        "5\t.\t_\tPUNCT\t_\t_\t4\tpunct\t_\t_\n\n"
    ).replace("\t3\tnsubj", "\t4\tnsubj")
    (s,) = parse_conllu(text)
    assert s.words == ("He", "does", "n't", "go", ".")
    assert s.heads == (3, 3, 3, -1, 3) and s.dep_depth == (1, 1, 1, 0, 1)
    assert s.spans == ((0, 5),) and s.constituent == ("VERBP",) * 5
    d = s.distances()
    assert d[0, 1] == 2 and d[0, 3] == 1 and d[3, 3] == 0
    for sent in shipped_treebank("conllu")[:20]:
        full = bfs_distances(head_adjacency(sent.heads), len(sent))
        np.testing.assert_array_equal(sent.distances(), full)
        np.testing.assert_array_equal(sent.depths(), full[sent.heads.index(-1)])
        dropped = sent.without_punct()
        assert len(dropped) == len(sent) - sum(sent.punct)
        assert dropped.heads.count(-1) == 1


def test_read_text(tmp_path):
    (tmp_path / "a.txt").write_text("The cat sat.\n\nDogs bark, loudly!\n")
    assert read_text(tmp_path / "a.txt") == [
        ("The", "cat", "sat", "."),
        ("Dogs", "bark", ",", "loudly", "!"),
    ]
    rows = [{"words": ["a", "b"]}, {"text": "It's late."}]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert read_text(tmp_path / "b.jsonl") == [("a", "b"), ("It", "'s", "late", ".")]
    (tmp_path / "c.jsonl").write_text('{"sentence": "x"}\n')
    with pytest.raises(ValueError, match="'words'"):
        read_text(tmp_path / "c.jsonl")
