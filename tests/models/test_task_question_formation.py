"""Question formation: grammar, gold trees, split logic and the first-word metric."""

from __future__ import annotations

import pytest
import torch

from hierlens.models import get_task, list_tasks
from hierlens.models.tasks import IGNORE_INDEX, pad_examples
from hierlens.models.tasks.question_formation import QuestionFormationTask

from . import grammar_reference as ref

# ----------------------------------------------------------------------------- independent grammar

POS = {
    **ref.parts_of_speech(verb_form=0),
    "Aux": {"can", "can't", "will", "won't", "does", "doesn't", "do", "don't"},
}
# recursive-descent grammar over parts of speech (no left recursion)
RULES = {
    "S": [["NP", "Pred"]],
    "Pred": [["Aux", "VP"]],
    "VP": [["Vt", "NP"], ["Vi"]],
    **ref.NOUN_PHRASE_RULES,
    "RC": [["Rel", "Pred"]],
}


def head_is_plural(np_node) -> bool:
    label, kids = np_node
    bare = np_node if kids[0][0] == "Det" else kids[0]
    return bare[1][1][1][0] in POS["Npl"]


def check_agreement(t) -> None:
    """does/doesn't need a singular subject, do/don't a plural one (main clause and RCs)."""
    label, kids = t
    if isinstance(kids[0], str):
        return
    subject_pred = []
    if label == "S":
        subject_pred.append((kids[0], kids[1]))
    if label == "NP" and len(kids) == 2 and kids[1][0] == "RC":
        subject_pred.append((t, kids[1][1][1]))
    for subj, pred in subject_pred:
        aux = pred[1][0][1][0]
        if aux in ("does", "doesn't"):
            assert not head_is_plural(subj)
        if aux in ("do", "don't"):
            assert head_is_plural(subj)
    for k in kids:
        check_agreement(k)


def main_aux_from_tree(t) -> int:
    """Hand-written hierarchical rule: the Aux of the S node's predicate."""
    return len(ref.leaves(t[1][0]))


def input_words(task, ex):
    m = next(i for i, t in enumerate(ex.tokens) if task.vocab[t] in ("decl", "quest"))
    return [task.vocab[t] for t in ex.tokens[1:m]], m


def oracle_output(words, tree, marker):
    if marker == "decl":
        return list(words)
    i = main_aux_from_tree(tree)
    return [words[i], *words[:i], *words[i + 1 :]]


def linear_output(words, marker):
    if marker == "decl":
        return list(words)
    i = next(j for j, w in enumerate(words) if w in POS["Aux"])
    return [words[i], *words[:i], *words[i + 1 :]]


def logits_for(task, examples, outputs):
    """Fake logits putting all mass on `outputs` (then <eos>) from each marker on."""
    batch = pad_examples(examples, task.pad_id)
    logits = torch.zeros(*batch.tokens.shape, len(task.vocab))
    for b, (ex, out) in enumerate(zip(examples, outputs)):
        _, m = input_words(task, ex)
        for k, tok in enumerate([*task.encode(out), task.eos_id]):
            logits[b, m + k, tok] = 5.0
    return batch, logits


# ----------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def task():
    return QuestionFormationTask()


@pytest.fixture(scope="module")
def samples(task):
    return {s: task.sample(300, s, seed=0) for s in ("train", "test_id", "test_ood")}


def test_registered(task):
    assert "question_formation" in list_tasks()
    assert get_task("question_formation") == task
    assert task.vocab[:3] == ("<pad>", "<bos>", "<eos>")
    assert task.objective == "next_token"
    assert QuestionFormationTask.from_dict(task.to_dict()) == task


def test_sentences_parse_and_trees_are_derivations(task, samples):
    shapes = set()
    for split, exs in samples.items():
        for ex in exs:
            words, m = input_words(task, ex)
            assert ref.recognises(words, POS, RULES), words
            tree = ref.parse_brackets(ex.labels["tree"])
            assert ref.leaves(tree) == words  # the gold tree's yield is the sentence
            assert ex.labels["sentence"] == " ".join(words)
            _, sp = ref.spans(tree)
            assert sorted(set(sp)) == sorted(ex.tree)
            assert ex.tree[0] == (0, len(words))
            check_agreement(tree)
            assert len(ex.tokens) <= task.max_len
            assert list(ex.word_positions) == list(range(1, m))
            # depth label counts the constituents containing each word
            depth = [sum(i <= w < j for i, j in ex.tree) for w in range(len(words))]
            assert list(ex.token_labels["depth"][1:m]) == depth
            shapes.add((split, ex.labels["subject_modifier"], ex.labels["transformation"]))
    assert {("train", k, "decl") for k in ("none", "pp", "rc")} <= shapes


def test_outputs_follow_the_hierarchical_rule(task, samples):
    for exs in samples.values():
        for ex in exs:
            words, m = input_words(task, ex)
            marker = task.vocab[ex.tokens[m]]
            out = oracle_output(words, ref.parse_brackets(ex.labels["tree"]), marker)
            assert task.decode(ex.tokens[m + 1 :]) == [*out, "<eos>"]
            # targets: next tokens from the marker on, nothing trained before it
            assert all(t == IGNORE_INDEX for t in ex.targets[:m])
            assert list(ex.targets[m:-1]) == list(ex.tokens[m + 1 :])
            assert ex.targets[-1] == IGNORE_INDEX


def test_split_logic(task, samples):
    train_quest = [e for e in samples["train"] if e.labels["transformation"] == "quest"]
    assert len(train_quest) > 100
    for e in train_quest + [e for e in samples["test_id"] if e.labels["transformation"] == "quest"]:
        words, _ = input_words(task, e)
        first = next(i for i, w in enumerate(words) if w in POS["Aux"])
        assert first == main_aux_from_tree(ref.parse_brackets(e.labels["tree"]))
    for e in samples["test_ood"]:
        words, m = input_words(task, e)
        assert task.vocab[e.tokens[m]] == "quest"
        first = next(i for i, w in enumerate(words) if w in POS["Aux"])
        main = main_aux_from_tree(ref.parse_brackets(e.labels["tree"]))
        assert first != main and words[first] != words[main]
        assert e.labels["subject_modifier"] == "rc"
    train_sents = {e.labels["sentence"] for e in task.sample(2000, "train", seed=1)}
    test_sents = {e.labels["sentence"] for e in task.sample(300, "test_id", seed=1)}
    assert not train_sents & test_sents


def test_metric_oracle_and_linear_rule(task, samples):
    for split in ("train", "test_ood"):
        exs = samples[split]
        trees = [ref.parse_brackets(e.labels["tree"]) for e in exs]
        parsed = [input_words(task, e) for e in exs]
        markers = [task.vocab[e.tokens[m]] for e, (_, m) in zip(exs, parsed)]
        oracle = [oracle_output(w, t, mk) for (w, _), t, mk in zip(parsed, trees, markers)]
        linear = [linear_output(w, mk) for (w, _), mk in zip(parsed, markers)]
        batch, logits = logits_for(task, exs, oracle)
        c = task.metric_counts(batch, logits)
        assert float(c["first_word_acc"][0] / c["first_word_acc"][1]) == 1.0
        assert float(c["seq_acc"][0] / c["seq_acc"][1]) == 1.0
        assert int(c["error_move_first"][1]) == 0
        batch, logits = logits_for(task, exs, linear)
        c = task.metric_counts(batch, logits)
        acc = float(c["first_word_acc"][0] / c["first_word_acc"][1])
        if split == "train":
            assert acc == 1.0
        else:
            assert acc == 0.0
            assert float(c["error_move_first"][0] / c["error_move_first"][1]) == 1.0
            assert int(c["error_other"][0]) == 0


def test_metric_other_errors_and_restriction(task, samples):
    exs = samples["test_ood"][:20]
    batch = pad_examples(exs, task.pad_id)
    logits = torch.zeros(*batch.tokens.shape, len(task.vocab))
    # the largest logit is a noun, but the metric restricts the argmax to auxiliaries
    logits[..., task.token_id("newt")] = 100.0
    # predict an auxiliary that is neither the main nor the first one (when one exists)
    for b, e in enumerate(exs):
        words, m = input_words(task, e)
        others = [a for a in POS["Aux"] if a not in words]
        logits[b, m, task.token_id(sorted(others)[0])] = 10.0
    c = task.metric_counts(batch, logits)
    assert int(c["first_word_acc"][0]) == 0
    assert int(c["error_other"][0]) == len(exs) == int(c["error_other"][1])


def test_main_aux_positions_from_tokens(task, samples):
    exs = samples["test_ood"] + samples["train"]
    batch = pad_examples(exs, task.pad_id)
    pos = task.main_aux_positions(batch.tokens)
    for p, e in zip(pos.tolist(), exs):
        assert e.token_labels["is_main_aux"][p] == 1


def test_evaluate_runs_on_a_model(task):
    res = task.evaluate(ref.NextTokenOracle(len(task.vocab)), "test_ood", n=50)
    assert res["first_word_acc"] == 1.0 and res["seq_acc"] == 1.0 and res["n"] == 50


@pytest.mark.parametrize(
    "params,name",
    [
        ({"auxiliaries": ()}, "auxiliaries"),
        ({"auxiliaries": ("does", "do")}, "auxiliaries"),
        ({"auxiliaries": ("can", "may")}, "auxiliaries"),
        ({"n_nouns": 0}, "n_nouns"),
        ({"n_verbs": 99}, "n_verbs"),
        ({"p_subject_rc": 1.5}, "p_subject_rc"),
        ({"p_subject_rc": 0.6, "p_subject_pp": 0.6}, "p_subject_pp"),
        ({"quest_fraction": -0.1}, "quest_fraction"),
        ({"test_id_fraction": 0.0}, "test_id_fraction"),
    ],
)
def test_bad_parameters(params, name):
    with pytest.raises(ValueError, match=name):
        QuestionFormationTask(**params)


def test_bad_n_and_split(task):
    with pytest.raises(ValueError, match="n must be"):
        task.sample(0)
    with pytest.raises(ValueError, match="split"):
        task.sample(3, "dev")


# ----------------------------------------------------------------------------- object relatives
# ``RC -> Rel NPb Aux Vt``: the relative clause's object is the gap
RULES_OBJECT_RC = {**RULES, "RC": [["Rel", "Pred"], ["Rel", "NPb", "Aux", "Vt"]]}


@pytest.fixture(scope="module")
def object_rc_task():
    return get_task("question_formation", p_object_rc=0.5)


def test_object_relatives_are_grammatical_and_move_the_main_aux(object_rc_task):
    task = object_rc_task
    exs = task.sample(400, "test_ood", 3) + task.sample(400, "train", 3)
    n_object = 0
    for e in exs:
        words = e.labels["sentence"].split()
        assert ref.recognises(words, POS, RULES_OBJECT_RC), words
        tree = ref.parse_brackets(e.labels["tree"])
        assert ref.leaves(tree) == words
        rc = [k for k in tree[1][0][1] if not isinstance(k, str) and k[0] == "RC"]
        is_object = bool(rc) and len(rc[0][1]) == 3
        assert e.labels["object_rc"] == is_object
        if is_object:
            n_object += 1
            inner_subject, pred = rc[0][1][1], rc[0][1][2]
            aux = pred[1][0][1][0]
            if aux in ("does", "doesn't"):
                assert not head_is_plural(inner_subject)
            if aux in ("do", "don't"):
                assert head_is_plural(inner_subject)
            assert len(pred[1][1][1]) == 1  # the gap: a transitive verb without object
            assert pred[1][1][1][0][1][0] in POS["Vt"]
    assert n_object > 100
    ood = [e for e in exs if e.labels["transformation"] == "quest" and e.labels["object_rc"]]
    assert ood and all(not e.labels["rules_agree"] for e in ood)


def test_object_relatives_remove_the_surface_cue(object_rc_task):
    """With object RCs, "the first auxiliary not right after who/that" is no longer the
    main auxiliary, while ``main_aux_positions`` still finds it."""
    from hierlens.models.tasks.grammar import RELS, first_unless_after

    task = object_rc_task
    exs = task.sample(300, "test_ood", 5)
    batch = pad_examples(exs, task.pad_id)
    pos = task.main_aux_positions(batch.tokens)
    assert all(e.token_labels["is_main_aux"][p] == 1 for p, e in zip(pos.tolist(), exs))
    cue = first_unless_after(
        torch.isin(batch.tokens, task.aux_ids),
        torch.isin(batch.tokens, task.ids_of(list(RELS))),
    )
    for p, e in zip(cue.tolist(), exs):
        assert (e.token_labels["is_main_aux"][p] == 1) != e.labels["object_rc"]


def test_default_fragment_has_no_object_relatives():
    exs = get_task("question_formation").sample(300, "test_ood", 9)
    assert not any(e.labels["object_rc"] for e in exs)
    assert all(e.labels["subject_modifier"] == "rc" for e in exs)


def test_object_rc_validated():
    with pytest.raises(ValueError, match="p_object_rc"):
        get_task("question_formation", p_object_rc=1.5)


def test_sampling_more_than_the_base_round_budget(monkeypatch):
    """The number of draws allowed grows with ``n`` (``test_id`` keeps ~10% of draws)."""
    from hierlens.models.tasks import transduction

    monkeypatch.setattr(transduction, "_MAX_ROUNDS", 10)
    exs = get_task("question_formation").sample(30, "test_id", 0)
    assert len(exs) == 30
