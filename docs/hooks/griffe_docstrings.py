"""A griffe extension that lets the code's docstrings, written with reStructuredText-style
markup (``` ``code`` ```, ``:class:`Name` ``), render as Markdown on the site, and turns their
citations (``[Murty2023]``) into links to the bibliography."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import griffe

_spec = importlib.util.spec_from_file_location(
    "hierlens_docs_citations", Path(__file__).with_name("citations.py")
)
citations = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(citations)

_SECTION = re.compile(
    r"^(\s*)(Args|Arguments|Parameters|Params|Other Parameters|Keyword Args):\s*$"
)
_COMBINED = re.compile(r"^(\s+)(\w+(?:, \w+)+):(.*)$")
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):`~?([^`]+)`")
_DOUBLE = re.compile(r"``(.+?)``", re.DOTALL)


def split_combined_parameters(text: str) -> str:
    """A parameter entry naming several parameters (``lr, tol: ...``, the project's way of
    documenting parameters that go together) -> one entry per parameter with the same text, so
    that each renders and each is checked against the signature."""
    lines = text.splitlines()
    out: list[str] = []
    section_indent: int | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        indent = len(line) - len(line.lstrip())
        header = _SECTION.match(line)
        if header:
            section_indent = len(header.group(1))
        elif section_indent is not None and line.strip() and indent <= section_indent:
            section_indent = None
        combined = _COMBINED.match(line) if section_indent is not None else None
        if not combined:
            out.append(line)
            i += 1
            continue
        pad, names, rest = combined.group(1), combined.group(2).split(", "), combined.group(3)
        body = [rest]
        i += 1
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(pad)
        ):
            if not lines[i].strip() and (i + 1 >= len(lines) or not lines[i + 1].strip()):
                break
            body.append(lines[i])
            i += 1
        for name in names:
            out.append(f"{pad}{name}:{body[0]}")
            out.extend(body[1:])
    return "\n".join(out)


def markdown_docstring(text: str, keys: set[str]) -> str:
    """Combined parameter entries split; reST roles and double backticks -> Markdown code;
    citations -> links."""
    text = split_combined_parameters(text)
    text = _ROLE.sub(lambda m: f"`{m.group(1)}`", text)
    text = _DOUBLE.sub(lambda m: "`" + m.group(1).replace("`", "") + "`", text)
    return citations.link_citations(text, keys)


class MarkdownDocstrings(griffe.Extension):
    def __init__(self) -> None:
        super().__init__()
        self.keys = citations.bibliography_keys()

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_docstring(obj.docstring.value, self.keys)
