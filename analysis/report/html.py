"""HTML building blocks of the run report: escaping, tables, inline plotly charts, tree drawings.

Everything here produces strings of HTML for one self-contained page. Every string that comes
from data (config values, token strings, hook and SAE names) goes through :func:`esc`; chart
specifications are embedded as JSON with ``<``, ``>`` and ``&`` written as unicode escapes, so
no data can close a ``<script>`` element. Nothing here refers to a network resource.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hierlens.core.atomic_io import json_safe

Span = tuple[int, int]


def esc(value: object) -> str:
    """``str(value)`` with HTML special characters (quotes included) escaped."""
    return html.escape(str(value), quote=True)


def fmt(value: object, digits: int = 4) -> str:
    """A short, escaped display form of a number or other value."""
    if isinstance(value, bool) or value is None:
        return esc(value)
    if isinstance(value, int):
        return esc(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return esc(f"{value:.{digits - 1}e}")
        return esc(f"{value:.{digits}g}")
    if isinstance(value, (list, tuple)):
        return esc(json.dumps(value))
    return esc(value)


def table(columns: Sequence[str], rows: Iterable[Mapping[str, Any]], cls: str = "") -> str:
    """An HTML table with one column per name in ``columns`` (missing values left blank)."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = "".join(f"<td>{fmt(row[c]) if c in row else ''}</td>" for c in columns)
        body.append(f"<tr>{cells}</tr>")
    attr = f' class="{esc(cls)}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def key_values(items: Mapping[str, Any]) -> str:
    """A two-column table of names and values (nested dicts shown as compact JSON)."""
    rows = []
    for key, value in items.items():
        shown = esc(json.dumps(value, default=str)) if isinstance(value, dict) else fmt(value)
        rows.append(f"<tr><th>{esc(key)}</th><td>{shown}</td></tr>")
    return f'<table class="kv"><tbody>{"".join(rows)}</tbody></table>'


_SETTING_NAMES = {
    "layer_numbering": "layers",
    "punct": "punctuation",
    "special_tokens": "special tokens",
    "mask_from_block": "first masked block",
    "pool": "word vector",
    "control_seed": "control seed",
}


def settings_note(settings: Mapping[str, Any] | None) -> str:
    """The settings a result was computed with (a record's ``settings``), as one note."""
    if not settings:
        return ""
    shown = [(_SETTING_NAMES.get(k, k), v) for k, v in settings.items() if v is not None]
    items = "; ".join(f"{esc(k)}: {esc(v)}" for k, v in shown)
    return f'<p class="note">Settings: {items}.</p>'


def _script_json(obj: object) -> str:
    """JSON safe to place inside a ``<script>`` element."""
    text = json.dumps(obj, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class Charts:
    """Collects plotly figures of one page; each gets a ``div.chart`` and an inline script.

    ``notebook=True``: for a notebook cell, shown after its page loaded and beside other
    cells: each chart is drawn as soon as plotly.js is on the page (which the first cell
    that needs it brings, see :mod:`hierlens.analysis.report.show`), and the chart ids
    start with ``prefix`` so that they do not collide with other cells'.
    """

    def __init__(self, notebook: bool = False, prefix: str = "") -> None:
        self.count = 0
        self.notebook, self.prefix = notebook, prefix

    def add(self, figure: Any, height: int = 360) -> str:
        """HTML for ``figure`` (a ``plotly.graph_objects.Figure``): a div and the script that
        draws it with the page's inlined plotly.js."""
        import plotly.io as pio

        self.count += 1
        div_id = f"chart-{self.prefix}{self.count}"
        figure.update_layout(
            template="plotly_white",
            height=height,
            margin=dict(l=60, r=60, t=40, b=50),
            legend=dict(orientation="h", x=0, y=-0.2, yanchor="top"),
        )
        if len(figure.data) > 1:  # room for the legend below the x axis title
            figure.update_layout(height=height + 40, margin_b=110)
        spec = json_safe(json.loads(pio.to_json(figure, validate=True)))
        config = {"displaylogo": False, "showLink": False}
        payload = _script_json(
            {"data": spec.get("data", []), "layout": spec.get("layout", {}), "config": config}
        )
        height = int(figure.layout.height)
        div = f'<div class="chart" id="{div_id}" style="height:{height}px"></div>'
        if self.notebook:  # wait (5 s at most) for the cell that brings plotly.js
            return (
                f"{div}<script>(function(){{var s={payload},n=0;function draw(){{"
                f'if(window.Plotly){{Plotly.newPlot("{div_id}",s.data,s.layout,s.config);}}'
                "else if(n++<100){setTimeout(draw,50);}"
                f'else{{document.getElementById("{div_id}").textContent={_script_json(MISSING)};}}'
                "}draw();})();</script>"
            )
        return (
            div
            # drawn once the page is laid out, so the chart takes its final width
            + f'<script>document.addEventListener("DOMContentLoaded",function(){{var s={payload};'
            f'Plotly.newPlot("{div_id}",s.data,s.layout,s.config);}});</script>'
        )


#: what a notebook chart says when plotly.js never arrives on its page
MISSING = (
    "plotly.js is not on this page (it comes with the first section shown in this kernel, "
    "whose output may have been cleared): show the section with show(..., library=True)"
)


def plotly_script(notebook: bool = False) -> str:
    """The plotly.js library as an inline ``<script>`` element (no network access). In a
    ``notebook`` page an AMD loader (``define``, as the classic Jupyter notebook has) is
    hidden while the library runs, so that a bundle built as a UMD module still sets
    ``window.Plotly``."""
    from plotly.offline import get_plotlyjs

    js = "<script>" + get_plotlyjs().replace("</script", "<\\/script") + "</script>"
    if not notebook:
        return js
    return (
        "<script>window.__hierlensDefine=window.define;window.define=undefined;</script>"
        f"{js}<script>window.define=window.__hierlensDefine;</script>"
    )


# ----------------------------------------------------------------------------- page
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;
color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:22px}
nav{padding:6px 24px;background:#eceff1;font-size:14px}
nav a{margin-right:14px;color:#1565c0;text-decoration:none}
main{padding:0 24px 40px}
section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;margin:18px 0;padding:8px 18px}
h2{font-size:18px;border-bottom:1px solid #eee;padding-bottom:4px}
h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
thead th{background:#f5f5f5}
table.kv th{background:#f5f5f5;font-weight:600}
.grid{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.grid>div{flex:1 1 420px;min-width:320px}
.chart{width:100%;min-height:200px}
.note{color:#666;font-size:13px}
.error{color:#b71c1c;background:#ffebee;border:1px solid #ef9a9a;padding:6px 10px}
.card{border:1px solid #e0e0e0;border-radius:4px;padding:6px 10px;margin:8px 0}
.ctx{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;margin:2px 0}
.ctx mark{background:#ffe082;padding:0 2px}
code.br{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px}
svg.tree text{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
svg.tree .tree-title{font-family:system-ui,sans-serif;font-size:12px;fill:#555}
"""


def page(title: str, sections: Sequence[tuple[str, str, str]], plotly: bool) -> str:
    """The whole document; ``sections`` are ``(anchor, heading, body_html)``."""
    nav = "".join(f'<a href="#{esc(a)}">{esc(h)}</a>' for a, h, _ in sections)
    body = "".join(
        f'<section id="{esc(a)}"><h2>{esc(h)}</h2>{content}</section>' for a, h, content in sections
    )
    lib = plotly_script() if plotly else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style>{lib}</head><body>"
        f"<header><h1>{esc(title)}</h1></header><nav>{nav}</nav><main>{body}</main>"
        "</body></html>\n"
    )
