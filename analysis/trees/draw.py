"""Drawing trees over words: the bracketing string and a small inline SVG (the report's
tree pictures and the notebook display of projected trees)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

Span = tuple[int, int]


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def children(tree: Iterable[Span], n: int) -> dict[Span, list[Span]]:
    """Children of every node of a tree given as constituent spans over ``n`` words: the
    maximal spans strictly inside it, with uncovered words as one-word spans ``(i, i + 1)``."""
    spans = sorted({tuple(s) for s in tree} | {(0, n)}, key=lambda s: (s[0], -s[1]))
    out: dict[Span, list[Span]] = {}
    for parent in spans:
        a, b = parent
        inner = [s for s in spans if a <= s[0] and s[1] <= b and s != parent]
        kids: list[Span] = []
        i = a
        while i < b:
            longest = max((s for s in inner if s[0] == i), key=lambda s: s[1], default=None)
            kids.append(longest if longest is not None else (i, i + 1))
            i = kids[-1][1]
        out[parent] = kids
    return out


def bracketing(tree: Iterable[Span], words: Sequence[str]) -> str:
    """The tree as a bracketed string, e.g. ``[[( )] [( )]]`` (not escaped)."""
    n = len(words)
    kids = children(tree, n)

    def show(span: Span) -> str:
        if span[1] - span[0] == 1:
            return words[span[0]]
        return "[" + " ".join(show(c) for c in kids[span]) + "]"

    return show((0, n))


def tree_svg(tree: Iterable[Span], words: Sequence[str], title: str, highlight=()) -> str:
    """A small inline SVG drawing of the tree over ``words``; spans in ``highlight`` (e.g. the
    ones shared with the gold tree) are drawn in a second colour."""
    n = len(words)
    kids = children(tree, n)
    dx, dy, pad = 34, 28, 14
    height_of: dict[Span, int] = {}

    def height(span: Span) -> int:
        if span not in height_of:
            sub = kids.get(span)
            height_of[span] = 0 if not sub else 1 + max(height(c) for c in sub)
        return height_of[span]

    top = height((0, n))
    width = max(n * dx, 60) + 2 * pad
    h = (top + 1) * dy + 2 * pad + 14

    def x(span: Span) -> float:
        return pad + dx * ((span[0] + span[1] - 1) / 2) + dx / 2

    def y(span: Span) -> float:
        return pad + 14 + (top - height(span)) * dy

    marks = set(highlight)
    parts = [
        f'<svg class="tree" width="{width}" height="{h}" '
        f'viewBox="0 0 {width} {h}" role="img"><title>{esc(title)}</title>',
        f'<text x="{pad}" y="{pad}" class="tree-title">{esc(title)}</text>',
    ]
    for parent, sub in kids.items():
        for c in sub:
            parts.append(
                f'<line x1="{x(parent):.1f}" y1="{y(parent):.1f}" x2="{x(c):.1f}" '
                f'y2="{y(c):.1f}" stroke="#888"/>'
            )
    for parent in kids:
        colour = "#d62728" if parent in marks else "#1f77b4"
        parts.append(f'<circle cx="{x(parent):.1f}" cy="{y(parent):.1f}" r="4" fill="{colour}"/>')
    for i, word in enumerate(words):
        leaf = (i, i + 1)
        parts.append(
            f'<text x="{x(leaf):.1f}" y="{y(leaf) + 4:.1f}" text-anchor="middle" '
            f'class="leaf">{esc(word)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
