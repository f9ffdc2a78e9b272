"""Grammar-task gold trees written as PTB and CoNLL-U treebanks and read back, and
``hierlens export-treebank``."""

from __future__ import annotations

import pytest

from hierlens.analysis.cli import main
from hierlens.models import get_task
from hierlens.models.treebank import read_conllu, read_ptb, shipped_treebank
from hierlens.models.treebank_export import (
    exportable_tasks,
    heads_from_tree,
    task_trees,
    write_conllu,
    write_ptb,
)

GRAMMAR_TASKS = ("question_formation", "tense_inflection")


def _examples(name: str):
    task = get_task(name)
    return task.sample(30, "train", seed=3) + task.sample(20, "test_ood", seed=3)


def test_exportable_tasks_are_the_grammar_tasks():
    assert exportable_tasks() == sorted(GRAMMAR_TASKS)


@pytest.mark.parametrize("name", GRAMMAR_TASKS)
def test_ptb_round_trip_keeps_words_and_spans(name, tmp_path):
    examples = _examples(name)
    path = write_ptb(examples, tmp_path / "t.mrg")
    back = read_ptb(path)
    assert len(back) == len(examples)
    for ex, s in zip(examples, back):
        assert " ".join(s.words) == ex.labels["sentence"]
        assert s.spans == ex.tree
        assert "RC" in s.span_labels or "(RC " not in ex.labels["tree"]
    # the task's parts of speech are the preterminals
    assert back[0].pos[0] == "Det"


@pytest.mark.parametrize("name", GRAMMAR_TASKS)
def test_conllu_round_trip_gives_single_rooted_trees(name, tmp_path):
    examples = _examples(name)
    back = read_conllu(write_conllu(examples, tmp_path / "t.conllu"))
    assert len(back) == len(examples)
    for ex, s in zip(examples, back):
        assert " ".join(s.words) == ex.labels["sentence"]
        assert s.heads.count(-1) == 1  # Sentence also rejects cycles
        root = s.heads.index(-1)
        assert s.pos[root] == "VERB"  # the main verb heads the clause
        assert s.deprels[root] == "root"
        # every constituent of the gold tree has exactly one word whose head is outside it
        for i, j in ex.tree:
            outside = [w for w in range(i, j) if not i <= s.heads[w] < j]
            assert len(outside) == 1, (ex.labels["tree"], (i, j), s.heads)


def test_head_rules_on_a_known_tree():
    from nltk import Tree

    tree = Tree.fromstring(
        "(S (NP (NP (Det the) (N newt)) (RC (Rel who) (Pred (Aux can) (VP (V giggle)))))"
        " (Pred (Aux will) (VP (V amuse) (NP (Det the) (N yak)))))"
    )
    words, pos, heads = heads_from_tree(tree)
    assert words == ("the", "newt", "who", "can", "giggle", "will", "amuse", "the", "yak")
    assert pos[0] == "Det"
    # the -> newt, newt -> amuse, who -> giggle, can -> giggle, giggle -> newt,
    # will -> amuse, amuse root, the -> yak, yak -> amuse
    assert heads == (1, 6, 4, 4, 1, 6, -1, 8, 6)
    # no rule for a label: the last child heads; bare words get an X preterminal
    assert heads_from_tree(Tree("Q", ["a", "b", "c"])) == (("a", "b", "c"), ("X",) * 3, (2, 2, -1))


def test_sentences_round_trip_through_both_writers(tmp_path):
    ptb = shipped_treebank("ptb")[:10]
    back = read_ptb(write_ptb(ptb, tmp_path / "s.mrg"))
    assert [s.words for s in back] == [s.words for s in ptb]
    assert [s.spans for s in back] == [s.spans for s in ptb]
    dep = shipped_treebank("conllu")[:10]
    back = read_conllu(write_conllu(dep, tmp_path / "s.conllu"))
    assert [s.heads for s in back] == [s.heads for s in dep]
    assert [s.deprels for s in back] == [s.deprels for s in dep]


def test_non_grammar_task_and_bad_items_are_refused(tmp_path):
    with pytest.raises(ValueError, match="question_formation, tense_inflection"):
        task_trees("dyck", 5)
    with pytest.raises(TypeError, match="cannot write"):
        write_ptb([42], tmp_path / "x.mrg")
    with pytest.raises(ValueError, match="no trees"):
        write_conllu([], tmp_path / "x.conllu")


def test_cli_export_treebank(tmp_path, capsys, caplog):
    out = tmp_path / "qf.conllu"
    argv = ["export-treebank", "question_formation", "--format", "conllu", "--n", "7"]
    assert main([*argv, "--split", "test_ood", "--seed", "2", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    want = task_trees("question_formation", 7, split="test_ood", seed=2)
    assert [list(s.words) for s in read_conllu(out)] == [t.leaves() for t in want]
    out = tmp_path / "ti.mrg"
    assert main(["export-treebank", "tense_inflection", "--n", "3", "--out", str(out)]) == 0
    assert len(read_ptb(out)) == 3
    assert main(["export-treebank", "dyck", "--out", str(tmp_path / "d.mrg")]) == 2
    assert "tasks that can export: question_formation, tense_inflection" in caplog.text
    assert not (tmp_path / "d.mrg").exists()
