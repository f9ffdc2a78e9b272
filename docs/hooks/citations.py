"""Citations by short key: ``[Murty2023]`` in a page or a docstring links to that entry of the
bibliography (``docs/bibliography.md``, where each entry carries an anchor ``[](){#Murty2023}``).

A key is a surname and a year, optionally with a letter (``Murty2023a``); only keys that the
bibliography defines are turned into links, so ``[1, d_sae]`` or ``x[i]`` are left alone. A
link to a key that is not defined never happens: a docstring citing an unknown key is caught by
``tests/test_docs.py``, which checks every ``[Key]`` in the code against the bibliography.
"""

from __future__ import annotations

import re
from pathlib import Path

BIBLIOGRAPHY = Path(__file__).resolve().parent.parent / "bibliography.md"
KEY = r"[A-Z][A-Za-z]+[0-9]{4}[a-z]?"
_ANCHOR = re.compile(r"\[\]\(\)\{#(" + KEY + r")\}")
# a key in brackets that is not already a link ("[Key](", "[Key][") nor its target ("][Key]")
CITATION = re.compile(r"(?<![\]\\])\[(" + KEY + r")\](?![\[(])")


def bibliography_keys(path: Path = BIBLIOGRAPHY) -> set[str]:
    """The keys the bibliography defines (its ``[](){#Key}`` anchors)."""
    return set(_ANCHOR.findall(path.read_text(encoding="utf-8")))


def link_citations(text: str, keys: set[str]) -> str:
    """``[Key]`` -> a cross-reference to the bibliography entry, for every defined key."""

    def repl(m: re.Match[str]) -> str:
        key = m.group(1)
        return f"[\\[{key}\\]][{key}]" if key in keys else m.group(0)

    return CITATION.sub(repl, text)


_keys: set[str] = set()


def on_config(config):
    _keys.clear()
    _keys.update(bibliography_keys())
    return config


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri == "bibliography.md":
        return markdown
    return link_citations(markdown, _keys)
