"""The sentences a pretrained run analyses: a treebank or a text file, read once, split the
same way every time.

A :class:`Corpus` names its file and format (``ptb``: Penn-Treebank brackets, ``conllu``:
CoNLL-U dependencies, ``text``: one sentence per line or JSON lines, without gold trees).
Its splits are fixed by the file alone: ``all``, or ``train`` / ``dev`` / ``test``, the
first 70% / next 15% / last 15% of the sentences in a permutation drawn with
:data:`SPLIT_SEED` (so a probe fitted on ``train`` never sees a ``test`` sentence, whatever
seed a stage uses to sample from its split).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from hierlens.core.validate import check_choice, check_int

from .sentence import Sentence
from .special_tokens import SpecialTokens
from .tasks.base import Example

FORMATS = ("ptb", "conllu", "text")
SPLITS = ("all", "train", "dev", "test")
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
SPLIT_SEED = 0
_SUFFIXES = {".mrg": "ptb", ".ptb": "ptb", ".tree": "ptb", ".trees": "ptb", ".conllu": "conllu"}
_SUFFIXES.update({".txt": "text", ".jsonl": "text"})


def infer_format(path: str | os.PathLike) -> str:
    """The format of a corpus file from its suffix (``.mrg``/``.ptb``/``.tree``: ptb,
    ``.conllu``: conllu, ``.txt``/``.jsonl``: text)."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise ValueError(
            f"cannot tell the format of {str(path)!r} from its suffix; pass one of {FORMATS}"
        )
    return _SUFFIXES[suffix]


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A treebank or text file as a run's data.

    Parameters:
        path: the file (absolute once resolved).
        format: ``ptb``, ``conllu`` or ``text`` (default: from the suffix).
        drop_punct: drop punctuation words (trees re-indexed), as structural probes often do.
    """

    path: str
    format: str | None = None
    drop_punct: bool = False

    def __post_init__(self) -> None:
        path = Path(self.path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no treebank or text file at {str(self.path)!r}")
        object.__setattr__(self, "path", str(path.resolve()))
        fmt = self.format or infer_format(path)
        check_choice("format", fmt, FORMATS)
        object.__setattr__(self, "format", fmt)
        if not isinstance(self.drop_punct, bool):
            raise TypeError(f"drop_punct must be a bool, got {type(self.drop_punct).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Corpus:
        return cls(**d)

    @property
    def has_trees(self) -> bool:
        """Whether the sentences come with gold trees (``ptb``, ``conllu``)."""
        return self.format != "text"

    def read(self) -> list[Sentence] | list[tuple[str, ...]]:
        """Every sentence of the file, in file order (word tuples for ``text``)."""
        from .text import read_text
        from .treebank import read_conllu, read_ptb

        if self.format == "ptb":
            sentences = read_ptb(self.path, drop_punct=self.drop_punct)
        elif self.format == "conllu":
            sentences = read_conllu(self.path, drop_punct=self.drop_punct)
        else:
            sentences = read_text(self.path)
        if not sentences:
            raise ValueError(f"{self.path}: no sentences")
        return sentences

    def sentences(self, split: str = "all") -> list[Sentence] | list[tuple[str, ...]]:
        """The sentences of ``split`` (see the module docstring), in file order."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} of a corpus; splits: {', '.join(SPLITS)}")
        everything = self.read()
        if split == "all":
            return everything
        order = np.random.default_rng(SPLIT_SEED).permutation(len(everything))
        n_train = int(round(SPLIT_FRACTIONS[0] * len(everything)))
        n_dev = int(round(SPLIT_FRACTIONS[1] * len(everything)))
        bounds = {"train": (0, n_train), "dev": (n_train, n_train + n_dev)}
        lo, hi = bounds.get(split, (n_train + n_dev, len(everything)))
        return [everything[i] for i in sorted(order[lo:hi].tolist())]

    def sample(self, split: str = "all", n: int | None = None, seed: int = 0) -> list:
        """The sentences of ``split``: all of them, or ``n`` drawn with ``seed`` (kept in
        file order)."""
        sentences = self.sentences(split)
        if n is not None:
            check_int("n", n, numpy=True)
            if n < len(sentences):
                keep = np.random.default_rng(seed).choice(len(sentences), n, replace=False)
                sentences = [sentences[i] for i in sorted(keep.tolist())]
        return sentences

    def examples(
        self,
        tokenizer: Any,
        split: str = "all",
        n: int | None = None,
        seed: int = 0,
        max_length: int | None = None,
        special_tokens: SpecialTokens | str | None = None,
    ) -> list[Example]:
        """Tokenised examples (:func:`~hierlens.models.text.tokenize_words`, framed by
        ``special_tokens``) of :meth:`sample`; too-long sentences are skipped (and logged),
        and ``example.labels["index"]`` is the example's position in :meth:`sample`'s list."""
        from .text import tokenize_words

        sentences = self.sample(split, n, seed)
        return tokenize_words(
            tokenizer,
            sentences,
            max_length=max_length,
            label_vocab=self.label_names(),
            special_tokens=special_tokens,
        )

    def label_names(self) -> dict[str, tuple[str, ...]] | None:
        """The names of the string labels (``pos``, ``constituent``) over the whole file, so
        every split and sample shares one vocabulary (a label's id is its index); None for
        ``text``, which has no labels."""
        from .text import label_vocabulary

        return label_vocabulary(self.read()) if self.has_trees else None
