"""The special tokens around a sentence's words: one explicit policy, resolved to token ids.

A pretrained model reads a sentence as its words' sub-word tokens inside a frame of special
tokens, and the frame changes every number the model gives: a GPT-2 reads its first word
differently after ``<|endoftext|>``. hierlens therefore never leaves the frame to a library's
defaults (a tokenizer's ``add_bos_token``, TransformerLens' ``prepend_bos``); it picks one
policy and turns it into token ids:

- ``"bos"`` (the default): the tokenizer's own frame (``[CLS] ... [SEP]`` for BERT,
  ``<s> ... </s>`` for RoBERTa), with the tokenizer's beginning-of-sequence token put first
  where it has one and the frame does not already start with it (a GPT-2's
  ``<|endoftext|>``, the token that separated its training documents);
- ``"template"``: the tokenizer's own frame only, as its ``add_special_tokens=True`` adds it
  (nothing at all for a GPT-2);
- ``"none"``: no special tokens.

:meth:`SpecialTokens.resolve` turns a policy into the ``prefix`` and ``suffix`` ids for one
tokenizer. :func:`~hierlens.models.text.tokenize_words` tokenises the words alone
(``add_special_tokens=False``) and puts those ids around them, so the same policy gives the
same ids through the Python API, the command line and the pipeline. A pretrained run stores
the resolved ids in its ``config.json`` (key ``"special_tokens"``) when it is created, and
every later command and stage on that run reuses them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hierlens.core.config import Config
from hierlens.core.validate import check_choice

__all__ = ["SPECIAL_TOKEN_POLICIES", "SpecialTokens"]

SPECIAL_TOKEN_POLICIES = ("bos", "template", "none")
_PROBE_WORDS = ["a"]  # the word the tokenizer's frame is read around


def _ids(value: Any, name: str) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list of token ids, got {value!r}")
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value):
        raise ValueError(f"{name} must hold non-negative integer token ids, got {list(value)}")
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class SpecialTokens(Config):
    """Which special tokens frame every sentence (see the module docstring).

    Parameters:
        policy: ``bos`` (the tokenizer's frame with its BOS token first), ``template`` (the
            tokenizer's frame only) or ``none`` (no special tokens).
        prefix: token ids put before the words (None until resolved for a tokenizer).
        suffix: token ids put after the words (None until resolved for a tokenizer).
    """

    policy: str = "bos"
    prefix: tuple[int, ...] | None = None
    suffix: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        check_choice("special-token policy", self.policy, SPECIAL_TOKEN_POLICIES)
        if (self.prefix is None) != (self.suffix is None):
            raise ValueError("prefix and suffix are resolved together: give both or neither")
        if self.prefix is not None:
            object.__setattr__(self, "prefix", _ids(self.prefix, "prefix"))
            object.__setattr__(self, "suffix", _ids(self.suffix, "suffix"))

    @property
    def resolved(self) -> bool:
        """Whether ``prefix`` and ``suffix`` are known."""
        return self.prefix is not None

    def resolve(self, tokenizer: Any) -> SpecialTokens:
        """The policy's ``prefix``/``suffix`` ids for ``tokenizer`` (a fast Hugging Face
        tokenizer); ``self`` when already resolved.

        The tokenizer's frame is read from how it encodes one word with
        ``add_special_tokens=True``: the ids before and after the word's own tokens (those
        ``word_ids()`` maps to no word). A tokenizer whose word tokens change when special
        tokens are added is refused (``ValueError``), since the frame could not be put
        around the words afterwards.
        """
        if self.resolved:
            return self
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError("special tokens are read from a fast tokenizer (one with word_ids())")
        if self.policy == "none":
            return dataclasses.replace(self, prefix=(), suffix=())
        framed = tokenizer([_PROBE_WORDS], is_split_into_words=True, add_special_tokens=True)
        bare = tokenizer([_PROBE_WORDS], is_split_into_words=True, add_special_tokens=False)
        ids = [int(i) for i in framed["input_ids"][0]]
        in_word = [k for k, w in enumerate(framed.word_ids(0)) if w is not None]
        if not in_word:
            raise ValueError(f"the tokenizer gives no token for the word {_PROBE_WORDS[0]!r}")
        first, last = in_word[0], in_word[-1] + 1
        if ids[first:last] != [int(i) for i in bare["input_ids"][0]]:
            raise ValueError(
                "the tokenizer tokenises words differently with and without its special "
                "tokens; hierlens cannot frame its sentences explicitly"
            )
        prefix, suffix = tuple(ids[:first]), tuple(ids[last:])
        bos = getattr(tokenizer, "bos_token_id", None)
        if self.policy == "bos" and isinstance(bos, int) and prefix[:1] != (bos,):
            prefix = (bos, *prefix)
        return dataclasses.replace(self, prefix=prefix, suffix=suffix)

    def describe(self, tokenizer: Any | None = None) -> str:
        """A short text for reports: the policy and, when resolved, the frame (token strings
        when ``tokenizer`` is given, else ids), e.g. ``bos: <|endoftext|> words``."""
        if not self.resolved:
            return self.policy

        def show(ids: tuple[int, ...]) -> list[str]:
            if tokenizer is None:
                return [str(i) for i in ids]
            return [str(t) for t in tokenizer.convert_ids_to_tokens(list(ids))]

        frame = " ".join([*show(self.prefix), "words", *show(self.suffix)])
        return f"{self.policy}: {frame}"
