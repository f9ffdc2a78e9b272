"""Real sentences as task examples: plain-text readers, word/sub-word alignment, pooling.

- :func:`read_text`: one sentence per line (``.txt``) or JSON lines with a ``"words"`` list
  or a ``"text"`` string (``.jsonl``); text is split into words with nltk's Treebank word
  tokenizer (rule-based, needs no downloaded data).
- :func:`tokenize_words`: words -> :class:`~hierlens.models.tasks.Example` through a fast
  Hugging Face tokenizer (``is_split_into_words=True`` and ``word_ids()``), so every wing
  of hierlens accepts real sentences. Sub-word tokens of a word share its labels; special
  tokens (``[CLS]``, ``[SEP]``, ``<|endoftext|>``, framing the words as the
  :class:`~hierlens.models.special_tokens.SpecialTokens` policy says) belong to no word and
  get ``-1``.
- :func:`pool_words`: token activations -> one vector per word (first, last or mean
  sub-token).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .sentence import Sentence
from .special_tokens import SpecialTokens
from .tasks.base import IGNORE_INDEX, Example

__all__ = ["label_vocabulary", "pool_words", "read_text", "tokenize_words"]

log = logging.getLogger(__name__)
OFF_WORD = -1  # the probes' ignore label (hierlens.probes.IGNORE_LABEL)


def _split(text: str) -> tuple[str, ...]:
    from nltk.tokenize import TreebankWordTokenizer

    return tuple(TreebankWordTokenizer().tokenize(text))


def read_text(path: str | Path) -> list[tuple[str, ...]]:
    """Word lists from ``path``: ``.jsonl`` (``"words"`` or ``"text"`` per line) or plain
    text, one sentence per line; blank lines are skipped."""
    from .treebank_files import read_text_file

    path = Path(path)
    out = []
    for k, line in enumerate(read_text_file(path).splitlines()):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{k + 1}: not JSON ({err})") from None
            if isinstance(row, dict) and isinstance(row.get("words"), list):
                words = tuple(str(w) for w in row["words"])
            elif isinstance(row, dict) and isinstance(row.get("text"), str):
                words = _split(row["text"])
            else:
                raise ValueError(f"{path}:{k + 1}: needs a 'words' list or a 'text' string")
        else:
            words = _split(line)
        if words:
            out.append(words)
    return out


def label_vocabulary(sentences: Sequence[Sentence]) -> dict[str, tuple[str, ...]]:
    """Sorted names of the string labels (``pos``, ``constituent``) over ``sentences``;
    a label's integer id is its index here."""
    return {
        "pos": tuple(sorted({p for s in sentences for p in s.pos})),
        "constituent": tuple(sorted({c for s in sentences for c in s.constituent})),
    }


def _word_labels(s: Sentence, vocab: Mapping[str, Sequence[str]]) -> dict[str, list[int]]:
    index = {name: {v: i for i, v in enumerate(vals)} for name, vals in vocab.items()}
    out = {
        "depth": list(s.depth),
        "pos": [index["pos"][p] for p in s.pos],
        "constituent": [index["constituent"][c] for c in s.constituent],
        "is_punct": [int(p) for p in s.punct],
    }
    if s.heads is not None:
        out["dep_depth"] = list(s.dep_depth)
    return out


def tokenize_words(
    tokenizer: Any,
    sentences: Sequence[Sentence | Sequence[str]],
    max_length: int | None = None,
    on_long: str = "skip",
    label_vocab: Mapping[str, Sequence[str]] | None = None,
    special_tokens: SpecialTokens | str | None = None,
) -> list[Example]:
    """Tokenise word-split sentences into :class:`Example` s aligned with their words.

    The words are tokenised alone (``add_special_tokens=False``) and framed by the ids of
    ``special_tokens`` (:class:`~hierlens.models.special_tokens.SpecialTokens`), so the
    frame never depends on how a tokenizer object happens to be configured.

    Args:
        tokenizer: a fast Hugging Face tokenizer (``word_ids()`` is needed); a byte-level BPE
            one must have ``add_prefix_space=True`` (as :func:`load_pretrained` sets it).
        sentences: :class:`Sentence` s, or plain word lists (then no gold tree: ``tree`` is
            empty and the only token label is ``"word"``).
        max_length: most tokens per example, special tokens included (default: the
            tokenizer's ``model_max_length`` when it is finite).
        on_long: ``"skip"`` too-long sentences (their number is logged) or ``"error"``.
        label_vocab: names of the string labels (default :func:`label_vocabulary`).
        special_tokens: the frame: a resolved :class:`SpecialTokens` (a run's stored one), or
            a policy (``"bos"``, ``"template"``, ``"none"``) resolved for ``tokenizer``;
            None: the default policy of :class:`SpecialTokens`.

    Returns:
        one example per kept sentence: ``tokens`` with the special tokens, ``targets`` all
        :data:`IGNORE_INDEX`, ``word_spans`` (half-open token range of each word),
        ``word_positions`` (first token of each word), ``tree`` (the n-ary gold spans), and
        ``token_labels`` ``word`` (word index), ``depth``, ``pos``, ``constituent``,
        ``is_punct`` and (with heads) ``dep_depth``, all ``-1`` at special tokens.
        ``labels`` holds ``index`` (position in ``sentences``), ``sentence`` (the words
        joined by spaces, for display), ``words`` (the words themselves: a word may contain
        a space) and the names of the string labels (``pos_names``, ``constituent_names``).
    """
    if on_long not in ("skip", "error"):
        raise ValueError(f"on_long must be 'skip' or 'error', got {on_long!r}")
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("tokenize_words needs a fast tokenizer (one with word_ids())")
    if max_length is None:
        m = getattr(tokenizer, "model_max_length", None)
        max_length = int(m) if isinstance(m, int) and m < 1_000_000 else None
    words = [s.words if isinstance(s, Sentence) else tuple(s) for s in sentences]
    for k, w in enumerate(words):
        if not w or not all(isinstance(x, str) and x for x in w):
            raise ValueError(f"sentence {k} must be a non-empty list of non-empty words")
    trees = [s for s in sentences if isinstance(s, Sentence)]
    vocab = label_vocabulary(trees) if label_vocab is None else label_vocab
    if special_tokens is None:
        special_tokens = SpecialTokens()
    elif isinstance(special_tokens, str):
        special_tokens = SpecialTokens(special_tokens)
    elif not isinstance(special_tokens, SpecialTokens):
        raise TypeError(
            f"special_tokens must be a SpecialTokens or a policy name, got {special_tokens!r}"
        )
    frame = special_tokens.resolve(tokenizer)
    if not words:
        return []
    enc = tokenizer([list(w) for w in words], is_split_into_words=True, add_special_tokens=False)
    pre, post = list(frame.prefix), list(frame.suffix)
    out, skipped = [], []
    for k, (sent, ws) in enumerate(zip(sentences, words)):
        ids = pre + list(enc["input_ids"][k]) + post
        wids = [None] * len(pre) + list(enc.word_ids(k)) + [None] * len(post)
        if max_length is not None and len(ids) > max_length:
            if on_long == "error":
                raise ValueError(f"sentence {k} has {len(ids)} tokens > max_length {max_length}")
            skipped.append(k)
            continue
        spans: list[list[int]] = [[] for _ in ws]
        for t, w in enumerate(wids):
            if w is not None:
                spans[w].append(t)
        for w, toks in enumerate(spans):
            if not toks:
                raise ValueError(f"sentence {k}: word {ws[w]!r} got no token")
            if toks != list(range(toks[0], toks[-1] + 1)):
                raise ValueError(f"sentence {k}: the tokens of word {ws[w]!r} are not contiguous")
        word_spans = tuple((t[0], t[-1] + 1) for t in spans)
        per_word = {"word": list(range(len(ws)))}
        if isinstance(sent, Sentence):
            per_word.update(_word_labels(sent, vocab))
        token_labels = {
            name: tuple(OFF_WORD if w is None else vals[w] for w in wids)
            for name, vals in per_word.items()
        }
        labels: dict[str, Any] = {"index": k, "sentence": " ".join(ws), "words": tuple(ws)}
        if isinstance(sent, Sentence):
            labels.update({f"{n}_names": tuple(v) for n, v in vocab.items()})
        out.append(
            Example(
                tokens=tuple(int(i) for i in ids),
                targets=(IGNORE_INDEX,) * len(ids),
                word_positions=tuple(s[0] for s in word_spans),
                tree=sent.spans if isinstance(sent, Sentence) else (),
                token_labels=token_labels,
                labels=labels,
                word_spans=word_spans,
            )
        )
    if skipped:
        shown = ", ".join(map(str, skipped[:10])) + (" ..." if len(skipped) > 10 else "")
        log.warning(
            "skipped %d of %d sentences longer than %d tokens (sentences %s, counted from 0)",
            len(skipped),
            len(words),
            max_length,
            shown,
        )
    return out


def pool_words(
    acts: torch.Tensor, word_spans: Sequence[tuple[int, int]], how: str = "mean"
) -> torch.Tensor:
    """One vector per word from token activations.

    Args:
        acts: ``(T, d)`` activations of one example's tokens.
        word_spans: half-open token range ``(i, j)`` of each of the ``n`` words.
        how: ``"first"`` sub-token, ``"last"`` sub-token or ``"mean"`` over the word.

    Returns:
        ``(n, d)`` word vectors.
    """
    if how not in ("first", "last", "mean"):
        raise ValueError(f"how must be 'first', 'last' or 'mean', got {how!r}")
    if acts.ndim != 2:
        raise ValueError(f"acts must be (T, d), got shape {tuple(acts.shape)}")
    sp = torch.as_tensor(list(word_spans), dtype=torch.long, device=acts.device).reshape(-1, 2)
    T = acts.shape[0]
    if len(sp) == 0 or bool(((sp[:, 0] < 0) | (sp[:, 1] > T) | (sp[:, 1] <= sp[:, 0])).any()):
        raise ValueError(f"word_spans must be non-empty ranges 0 <= i < j <= {T}")
    if how == "first":
        return acts[sp[:, 0]]
    if how == "last":
        return acts[sp[:, 1] - 1]
    csum = torch.cat([acts.new_zeros(1, acts.shape[1]), acts.cumsum(0)])
    return (csum[sp[:, 1]] - csum[sp[:, 0]]) / (sp[:, 1] - sp[:, 0])[:, None].to(acts.dtype)
