"""Reading treebank and corpus files so that every error names its place: text that is not
UTF-8 names the file and line; a CoNLL-U sentence that does not parse, or a word line without
the ten columns, names the sentence (number, first line, ``sent_id``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["CONLLU_FIELDS", "conllu_sentences", "read_text_file"]


def read_text_file(path: str | Path) -> str:
    """The UTF-8 text of a treebank or corpus file; bytes that are not UTF-8 are a
    ``ValueError`` naming the file and the line."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(
            f"{path}: line {line} is not UTF-8 text ({exc.reason}); save the file as UTF-8"
        ) from None


#: the ten tab-separated fields of a CoNLL-U word line
CONLLU_FIELDS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")


def _conllu_blocks(text: str) -> list[tuple[int, str]]:
    """``(first line number, text)`` of each sentence block (blank-line separated)."""
    blocks, lines, start = [], [], 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            if not lines:
                start = number
            lines.append(line)
        elif lines:
            blocks.append((start, "\n".join(lines) + "\n\n"))
            lines = []
    if lines:
        blocks.append((start, "\n".join(lines) + "\n\n"))
    return blocks


def conllu_sentences(text: str) -> list[tuple[str, Any]]:
    """``(where, tokenlist)`` per sentence of CoNLL-U ``text``: ``where`` names the sentence
    (its number, first line and ``sent_id``); a sentence that does not parse, or a word line
    without the ten columns, is a ``ValueError`` naming it."""
    import conllu
    from conllu.exceptions import ParseException

    out = []
    for k, (line, block) in enumerate(_conllu_blocks(text)):
        where = f"sentence {k + 1} (line {line})"
        try:
            parsed = conllu.parse(block)
        except ParseException as exc:
            raise ValueError(f"{where}: {exc}") from None
        for tokenlist in parsed:
            sent_id = tokenlist.metadata.get("sent_id")
            name = f"{where}{f' sent_id {sent_id}' if sent_id else ''}"
            for t in tokenlist:
                missing = [f for f in CONLLU_FIELDS if f not in t]
                if missing:
                    raise ValueError(
                        f"{name}: word {t.get('id')!r} has {len(CONLLU_FIELDS) - len(missing)} "
                        f"of the 10 tab-separated CoNLL-U columns (missing {', '.join(missing)})"
                    )
            out.append((name, tokenlist))
    return out
