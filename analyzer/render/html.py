"""HTML building blocks of the report (private to analyzer.report): escaping, tables, figures, the page.

Markup is written by hand around escaped text: every value that reaches the page passes through `e`
(`html.escape`), except `Raw` strings, which are markup built here from escaped parts. The page carries a
Content-Security-Policy that lets it load nothing (no script, no network): only its inline CSS and data: images.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import re

import pandas as pd

MAX_ROWS = 500  # rows a table shows; the rest are counted, not listed
FOLD_OVER = 40  # a table with more rows starts folded (<details>)
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


class Raw(str):
    """Markup built here from escaped parts: `e` passes it through unchanged."""


def e(value: object) -> str:
    """Any value as escaped HTML text; missing values (None, NaN, NA) as a dash."""
    if isinstance(value, Raw):
        return value
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return html.escape(str(value), quote=True)


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def num(value: object, fmt: str = "{:.1f}") -> str:
    return "–" if value is None or pd.isna(value) else fmt.format(value)


def state(name: str) -> Raw:
    return Raw(f'<span class="st st-{re.sub("[^a-z]", "", name)}">{e(name)}</span>')


def swatch(c: str) -> Raw:
    return Raw(f'<span class="sw" style="background:{c}"></span>')


def table(head: list[str], rows: list[list[object]], numeric: set[int] = frozenset(), what: str = "rows",
           total: int | None = None) -> str:
    """An HTML table of the first MAX_ROWS rows; `total` counts rows the caller did not build."""
    cls = lambda i: ' class="num"' if i in numeric else ""
    out = ["<table><thead><tr>" + "".join(f"<th{cls(i)}>{e(h)}</th>" for i, h in enumerate(head)) + "</tr></thead><tbody>"]
    for row in rows[:MAX_ROWS]:
        out.append("<tr>" + "".join(f"<td{cls(i)}>{e(c)}</td>" for i, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    total = len(rows) if total is None else total
    if total > MAX_ROWS:
        out.append(f'<p class="note">{total - MAX_ROWS:,} more {e(what)} not shown.</p>')
    return "\n".join(out)


def fold(content: str, rows: int, summary: str) -> str:
    """A long table behind a <details> toggle (HTML alone, no script): closed when over FOLD_OVER rows."""
    if rows <= FOLD_OVER:
        return content
    return f"<details><summary>{e(summary)}</summary>\n{content}\n</details>"


def figure(svg_note: tuple[str, str], caption: str, fig_id: str) -> str:
    svg, note = svg_note
    return (f'<figure id="{e(fig_id)}">{svg}<figcaption>{e(caption)}'
            f'{" " + e(note) if note else ""}</figcaption></figure>')


def section(sid: str, title: str, content: list[str], empty: str | None = None) -> str:
    inner = "\n".join(content) if content else f'<p class="empty">{e(empty)}</p>'
    return f'<section id="{e(sid)}">\n<h2>{e(title)}</h2>\n{inner}\n</section>'


def dl(items: list[tuple[str, object]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in items) + "</dl>"


CSS = """
:root{--fg:#1d1d1f;--muted:#5f6368;--line:#dadce0;--bg:#fff;--alt:#f6f8fa;--accent:#1a5fb4}
*{box-sizing:border-box}
body{margin:0;color:var(--fg);background:var(--bg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
header{background:#24292f;color:#fff;padding:14px 28px}
header h1{margin:0;font-size:20px;font-weight:600;overflow-wrap:anywhere}
header p{margin:4px 0 0;color:#c9d1d9}
nav{position:sticky;top:0;z-index:1;background:#f6f8fa;border-bottom:1px solid var(--line);padding:6px 28px}
nav a{color:var(--accent);margin-right:18px;text-decoration:none;font-weight:500}
main{max-width:1180px;margin:0 auto;padding:8px 28px 40px}
section{margin-top:22px}
h2{font-size:18px;border-bottom:2px solid var(--line);padding-bottom:4px;margin:18px 0 10px}
h3{font-size:15px;margin:18px 0 6px;overflow-wrap:anywhere}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:3px 10px;text-align:left;vertical-align:top}
th{background:var(--alt);font-weight:600;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#fbfbfc}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:3px 18px;margin:0}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0;overflow-wrap:anywhere}
code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12.5px}
figure{margin:10px 0 18px;break-inside:avoid}
figure svg{display:block;width:100%;max-width:900px;height:auto}
figcaption{color:var(--muted);font-size:12.5px;max-width:900px}
svg text{font-family:"DejaVu Sans",Verdana,sans-serif}
.note{color:var(--muted);font-size:13px;max-width:900px}
.empty{color:var(--muted);font-style:italic}
.st{font-weight:600}.st-open{color:#1e7b1e}.st-closed{color:#c62828}.st-filtered{color:#6b6b6b}
.st-openfiltered{color:#c66900}.st-unfiltered{color:#1f5fa8}.st-unknown{color:#7b3fa0}
.sw{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:6px;vertical-align:baseline}
details{margin:6px 0 10px}summary{cursor:pointer;color:var(--accent)}
footer{color:var(--muted);font-size:12px;border-top:1px solid var(--line);margin-top:30px;padding-top:8px}
@media print{nav{display:none}header{background:none;color:#000}header p{color:#333}main{max-width:none}}
"""


def page(title: str, summary: str, nav: list[tuple[str, str]], body: list[str]) -> str:
    """The whole document: head (CSP, inline CSS), title bar, section links, the sections, a footer."""
    try:
        from importlib.metadata import version

        ver = version("synlens")
    except Exception:  # noqa: BLE001 — not installed (run from a checkout)
        ver = "dev"
    links = "".join(f'<a href="#{e(sid)}">{e(text)}</a>' for sid, text in nav)
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>{e(title)}</title>
<style>{CSS}</style>
</head>
<body>
<header><h1>{e(title)}</h1><p>{e(summary)}</p></header>
<nav>{links}</nav>
<main>
{chr(10).join(body)}
<footer>Written by synlens {e(ver)} on {now}. Self-contained: nothing in this file is fetched from a network.</footer>
</main>
</body>
</html>
"""
