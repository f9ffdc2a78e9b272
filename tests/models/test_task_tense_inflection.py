"""Tense inflection: grammar, gold trees, agreement, split logic and the main-verb metric."""

from __future__ import annotations

import pytest
import torch

from hierlens.models import get_task, list_tasks
from hierlens.models.tasks import IGNORE_INDEX, pad_examples
from hierlens.models.tasks.tense_inflection import TenseInflectionTask

from . import grammar_reference as ref

POS = ref.parts_of_speech(verb_form=2)
RULES = {
    "S": [["NP", "VP"]],
    "VP": [["Vt", "NP"], ["Vi"]],
    **ref.NOUN_PHRASE_RULES,
    "RC": [["Rel", "VP"]],
}
# past -> (3rd singular present, plural present), written out independently
PRESENT = {
    "giggled": ("giggles", "giggle"), "smiled": ("smiles", "smile"),
    "slept": ("sleeps", "sleep"), "swam": ("swims", "swim"), "waited": ("waits", "wait"),
    "moved": ("moves", "move"), "changed": ("changes", "change"),
    "laughed": ("laughs", "laugh"), "entertained": ("entertains", "entertain"),
    "amused": ("amuses", "amuse"), "applauded": ("applauds", "applaud"),
    "confused": ("confuses", "confuse"), "admired": ("admires", "admire"),
    "accepted": ("accepts", "accept"), "remembered": ("remembers", "remember"),
    "comforted": ("comforts", "comfort"),
}  # fmt: skip


def hierarchical_present(tree) -> list[str]:
    """Hand-written rule: each verb agrees with the head noun of its clause's subject."""
    out = []

    def head_plural(np_):
        bare = np_ if np_[1][0][0] == "Det" else np_[1][0]
        return bare[1][1][1][0] in POS["Npl"]

    def walk(t, subj_pl):
        label, kids = t
        if isinstance(kids[0], str):
            w = kids[0]
            out.append(PRESENT[w][1 if subj_pl else 0] if label == "V" else w)
            return
        if label == "S":
            walk(kids[0], False)
            walk(kids[1], head_plural(kids[0]))
            return
        if label == "NP" and len(kids) == 2 and kids[1][0] == "RC":
            walk(kids[0], False)
            walk(kids[1], head_plural(t))
            return
        for k in kids:
            walk(k, subj_pl)

    walk(tree, False)
    return out


def linear_present(words) -> list[str]:
    """Linear rule: each verb agrees with the most recent noun."""
    out, last_pl = [], False
    for w in words:
        if w in PRESENT:
            out.append(PRESENT[w][1 if last_pl else 0])
        else:
            out.append(w)
            if w in POS["Nsg"] | POS["Npl"]:
                last_pl = w in POS["Npl"]
    return out


def input_words(task, ex):
    m = next(i for i, t in enumerate(ex.tokens) if task.vocab[t] in ("PAST", "PRESENT"))
    return [task.vocab[t] for t in ex.tokens[1:m]], m


def rule_outputs(task, exs, rule):
    outs = []
    for e in exs:
        words, m = input_words(task, e)
        if task.vocab[e.tokens[m]] == "PAST":
            outs.append(words)
        else:
            outs.append(
                rule(ref.parse_brackets(e.labels["tree"]))
                if rule != "linear"
                else linear_present(words)
            )
    return outs


def fake_logits(task, tokens, outputs_by_row):
    logits = torch.zeros(*tokens.shape, len(task.vocab))
    for b, out in enumerate(outputs_by_row):
        m = next(
            i for i, t in enumerate(tokens[b].tolist()) if task.vocab[t] in ("PAST", "PRESENT")
        )
        for k, tok in enumerate([*task.encode(out), task.eos_id]):
            if m + k < tokens.shape[1]:
                logits[b, m + k, tok] = 5.0
    return logits


class RuleModel(torch.nn.Module):
    """A causal 'model' whose logits follow a hand-written rule from the input words."""

    def __init__(self, task, rule):
        super().__init__()
        self.task, self.rule = task, rule

    def forward(self, tokens):
        outs = []
        for row in tokens.tolist():
            m = next(i for i, t in enumerate(row) if self.task.vocab[t] in ("PAST", "PRESENT"))
            words = [self.task.vocab[t] for t in row[1:m]]
            if self.task.vocab[row[m]] == "PAST":
                outs.append(words)
            elif self.rule == "linear":
                outs.append(linear_present(words))
            else:
                outs.append(self.rule(words))
        return fake_logits(self.task, tokens, outs)


def parse_to_tree(words):
    """Recover the bracketed tree of a past-tense sentence by the test's own parser."""

    def np_(i):
        bare = ("NP", [("Det", [words[i]]), ("N", [words[i + 1]])])
        j = i + 2
        if j < len(words) and words[j] in POS["P"]:
            pp = (
                "PP",
                [("P", [words[j]]), ("NP", [("Det", [words[j + 1]]), ("N", [words[j + 2]])])],
            )
            return ("NP", [bare, pp]), j + 3
        if j < len(words) and words[j] in POS["Rel"]:
            vp, k = vp_(j + 1, bare_object=True)
            return ("NP", [bare, ("RC", [("Rel", [words[j]]), vp])]), k
        return bare, j

    def vp_(i, bare_object=False):
        if words[i] in POS["Vi"]:
            return ("VP", [("V", [words[i]])]), i + 1
        if bare_object:
            obj = ("NP", [("Det", [words[i + 1]]), ("N", [words[i + 2]])])
            return ("VP", [("V", [words[i]]), obj]), i + 3
        obj, k = np_(i + 1)
        return ("VP", [("V", [words[i]]), obj]), k

    subj, i = np_(0)
    vp, j = vp_(i)
    assert j == len(words)
    return ("S", [subj, vp])


# ----------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def task():
    return TenseInflectionTask()


@pytest.fixture(scope="module")
def samples(task):
    return {s: task.sample(300, s, seed=0) for s in ("train", "test_id", "test_ood")}


def test_registered(task):
    assert "tense_inflection" in list_tasks()
    assert get_task("tense_inflection") == task
    assert task.vocab[:3] == ("<pad>", "<bos>", "<eos>")
    assert TenseInflectionTask.from_dict(task.to_dict()) == task


def test_sentences_parse_and_outputs_agree(task, samples):
    for exs in samples.values():
        for ex in exs:
            words, m = input_words(task, ex)
            assert ref.recognises(words, POS, RULES), words
            tree = ref.parse_brackets(ex.labels["tree"])
            assert ref.leaves(tree) == words
            assert tree == parse_to_tree(words)
            _, sp = ref.spans(tree)
            assert sorted(set(sp)) == sorted(ex.tree)
            marker = task.vocab[ex.tokens[m]]
            want = hierarchical_present(tree) if marker == "PRESENT" else words
            assert task.decode(ex.tokens[m + 1 :]) == [*want, "<eos>"]
            assert all(t == IGNORE_INDEX for t in ex.targets[:m])
            assert list(ex.targets[m:-1]) == list(ex.tokens[m + 1 :])
            assert ex.token_labels["is_main_verb"].index(1) == 1 + len(ref.leaves(tree[1][0]))


def test_split_logic(task, samples):
    def linear_agrees(e):
        words, _ = input_words(task, e)
        tree = ref.parse_brackets(e.labels["tree"])
        i = len(ref.leaves(tree[1][0]))
        return linear_present(words)[i] == hierarchical_present(tree)[i]

    present = [
        e
        for s in ("train", "test_id")
        for e in samples[s]
        if e.labels["transformation"] == "PRESENT"
    ]
    assert len(present) > 100
    assert all(linear_agrees(e) for e in present)
    assert any(e.labels["has_attractor"] for e in samples["train"])  # PAST ones may have one
    for e in samples["test_ood"]:
        words, m = input_words(task, e)
        assert task.vocab[e.tokens[m]] == "PRESENT"
        assert e.labels["has_attractor"] and not linear_agrees(e)
    kinds = {e.labels["subject_modifier"] for e in samples["test_ood"]}
    assert kinds == {"pp", "rc"}
    train = {e.labels["sentence"] for e in task.sample(2000, "train", seed=1)}
    test = {e.labels["sentence"] for e in task.sample(300, "test_id", seed=1)}
    assert not train & test


def test_metric_oracle_and_linear_rule(task, samples):
    for split in ("train", "test_ood"):
        exs = samples[split]
        batch = pad_examples(exs, task.pad_id)
        good = fake_logits(task, batch.tokens, rule_outputs(task, exs, hierarchical_present))
        c = task.metric_counts(batch, good)
        assert float(c["main_verb_acc"][0] / c["main_verb_acc"][1]) == 1.0
        assert float(c["seq_acc"][0] / c["seq_acc"][1]) == 1.0
        lin = fake_logits(task, batch.tokens, rule_outputs(task, exs, "linear"))
        c = task.metric_counts(batch, lin)
        acc = float(c["main_verb_acc"][0] / c["main_verb_acc"][1])
        assert acc == (1.0 if split == "train" else 0.0)


def test_metric_requires_matching_parts_of_speech(task, samples):
    exs = samples["test_ood"][:30]
    batch = pad_examples(exs, task.pad_id)
    outs = rule_outputs(task, exs, hierarchical_present)
    # right main verb but the determiner before it replaced by a noun: POS mismatch
    for o in outs:
        o[0] = "yak"
    c = task.metric_counts(batch, fake_logits(task, batch.tokens, outs))
    assert int(c["main_verb_acc"][0]) == 0


def test_greedy_evaluate(task, samples):
    exs = samples["test_ood"][:40] + samples["train"][:40]
    oracle = RuleModel(task, lambda words: hierarchical_present(parse_to_tree(words)))
    res = task.greedy_evaluate(oracle, examples=exs, batch_size=16)
    assert res["main_verb_acc"] == 1.0 and res["seq_acc"] == 1.0 and res["n"] == 80
    res = task.greedy_evaluate(RuleModel(task, "linear"), examples=samples["test_ood"][:40])
    assert res["main_verb_acc"] == 0.0 and res["pos_acc"] == 1.0

    # a model that never stops is cut at max_len and scores 0
    class Babbler(torch.nn.Module):
        def forward(self, tokens):
            out = torch.zeros(*tokens.shape, len(task.vocab))
            out[..., task.token_id("the")] = 1.0
            return out

    res = task.greedy_evaluate(Babbler(), examples=exs[:8])
    assert res["pos_acc"] == 0.0 and res["seq_acc"] == 0.0


def test_evaluate_runs(task):
    res = task.evaluate(ref.NextTokenOracle(len(task.vocab)), "test_ood", n=30)
    assert res["main_verb_acc"] == 1.0 and res["seq_acc"] == 1.0


@pytest.mark.parametrize(
    "params,name",
    [
        ({"n_nouns": 0}, "n_nouns"),
        ({"n_verbs": 0}, "n_verbs"),
        ({"p_subject_rc": 0.0, "p_subject_pp": 0.0}, "p_subject_pp"),
        ({"p_subject_pp": 2.0}, "p_subject_pp"),
        ({"present_fraction": 1.1}, "present_fraction"),
        ({"p_transitive": -1.0}, "p_transitive"),
        ({"test_id_fraction": 1.0}, "test_id_fraction"),
    ],
)
def test_bad_parameters(params, name):
    with pytest.raises(ValueError, match=name):
        TenseInflectionTask(**params)


def test_greedy_decoding_on_a_transformer_matches_a_slow_loop(task):
    """Batched greedy decoding equals one-example-at-a-time decoding with a real model."""
    from hierlens.models import ModelConfig, build_transformer

    model = build_transformer(
        ModelConfig.for_task(task, d_model=16, n_layers=1, n_heads=2), device="cpu"
    )
    exs = task.sample(3, "test_ood", seed=3)
    fast = task.greedy_continuations(model, exs, batch_size=2, device="cpu")
    for ex, got in zip(exs, fast):
        m = next(i for i, t in enumerate(ex.tokens) if task.vocab[t] in ("PAST", "PRESENT"))
        seq = list(ex.tokens[: m + 1])
        with torch.no_grad():
            while len(seq) < task.max_len:
                nxt = int(model(torch.tensor([seq]))[0, -1].argmax())
                if nxt == task.eos_id:
                    break
                seq.append(nxt)
        assert got == [t for t in seq[m + 1 :] if t != task.pad_id]
    res = task.evaluate(model, "test_ood", n=4, device="cpu")
    assert set(res) >= {"main_verb_acc", "seq_acc", "loss", "n"}
