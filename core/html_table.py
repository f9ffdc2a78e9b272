"""A small self-contained HTML table, for the ``_repr_html_`` of results shown in notebooks
(the wings below :mod:`hierlens.analysis` cannot use the report's helpers)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["cell", "html_table", "key_value_table"]


def cell(value: object) -> str:
    """A short, escaped display form of a value (floats to 4 significant digits)."""
    if isinstance(value, float) and not isinstance(value, bool):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return html.escape(f"{value:.3e}")
        return html.escape(f"{value:.4g}")
    if isinstance(value, (list, tuple, dict)):
        return html.escape(json.dumps(value, default=str))
    return html.escape(str(value))


def html_table(columns: Sequence[str], rows: Iterable[Mapping[str, Any]], caption: str = "") -> str:
    """An HTML table with one column per name in ``columns`` (missing values blank)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(r[c]) if c in r else ''}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def key_value_table(items: Mapping[str, Any], caption: str = "") -> str:
    """A two-column table of names and values."""
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{cell(v)}</td></tr>" for k, v in items.items()
    )
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<tbody>{rows}</tbody></table>"
