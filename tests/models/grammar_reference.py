"""An independent reference for the tests of the grammar tasks (question formation, tense
inflection): their shared word classes and noun-phrase rules, a recursive-descent recogniser
over parts of speech, bracketed trees read back with their yields and spans, and a model
that predicts each row's next token."""

from __future__ import annotations

import torch

from hierlens.models.tasks.grammar import NOUNS, VERBS_INTR, VERBS_TR


def parts_of_speech(verb_form: int) -> dict[str, set[str]]:
    """The word classes the task grammars share: determiners, prepositions and relativisers
    written out independently, singular and plural nouns, and the intransitive and transitive
    verbs in form ``verb_form`` of the grammar's verb tuples."""
    return {
        "Det": {"the", "some", "my", "your", "our", "her"},
        "P": {"around", "near", "with", "upon", "by", "behind", "above", "below"},
        "Rel": {"who", "that"},
        "Nsg": {sg for sg, _ in NOUNS},
        "Npl": {pl for _, pl in NOUNS},
        "Vi": {v[verb_form] for v in VERBS_INTR},
        "Vt": {v[verb_form] for v in VERBS_TR},
    }


# noun phrases: a bare NP, one with a prepositional phrase, or one with a relative clause
# (the RC rule itself differs between the grammars)
NOUN_PHRASE_RULES = {
    "NP": [["NPb", "PP"], ["NPb", "RC"], ["NPb"]],
    "NPb": [["Det", "N"]],
    "N": [["Nsg"], ["Npl"]],
    "PP": [["P", "NPb"]],
}


def recognises(words: list[str], pos: dict, rules: dict, start: str = "S") -> bool:
    """Whether ``words`` derive from ``start``: ``rules`` maps a symbol to its right-hand
    sides (no left recursion), ``pos`` a part of speech to its words."""

    def ends(sym: str, i: int):
        if sym in pos:
            if i < len(words) and words[i] in pos[sym]:
                yield i + 1
            return
        for rhs in rules[sym]:
            yield from seq(rhs, i)

    def seq(rhs: list[str], i: int):
        if not rhs:
            yield i
            return
        for j in ends(rhs[0], i):
            yield from seq(rhs[1:], j)

    return len(words) in set(ends(start, 0))


def parse_brackets(s: str):
    """'(S (NP (Det the) ...))' -> nested (label, [children]) with words as str leaves."""
    toks = s.replace("(", " ( ").replace(")", " ) ").split()
    pos = 0

    def node():
        nonlocal pos
        assert toks[pos] == "("
        label = toks[pos + 1]
        pos += 2
        kids = []
        while toks[pos] != ")":
            if toks[pos] == "(":
                kids.append(node())
            else:
                kids.append(toks[pos])
                pos += 1
        pos += 1
        return (label, kids)

    tree = node()
    assert pos == len(toks)
    return tree


def leaves(t) -> list[str]:
    """The words of a parsed tree, left to right."""
    return [w for k in t[1] for w in ([k] if isinstance(k, str) else leaves(k))]


def spans(t, start=0, out=None):
    """``(end, spans)``: the word spans ``(i, j)`` of the constituents of two words or more,
    children before parents."""
    out = [] if out is None else out
    kids = t[1]
    if len(kids) == 1 and isinstance(kids[0], str):
        return start + 1, out
    end = start
    for k in kids:
        end, _ = spans(k, end, out)
    if end - start >= 2:
        out.append((start, end))
    return end, out


class NextTokenOracle(torch.nn.Module):
    """Logits with all mass on the next token of each row (a teacher-forcing oracle)."""

    def __init__(self, d_vocab: int):
        super().__init__()
        self.d_vocab = d_vocab

    def forward(self, tokens):
        out = torch.zeros(*tokens.shape, self.d_vocab)
        out[:, :-1].scatter_(2, tokens[:, 1:, None], 1.0)
        return out
