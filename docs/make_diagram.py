"""Draw the pipeline (docs/pipeline.svg) from its declaration, analyzer/pipeline.py's STEPS.

The boxes, the arrows and the column counts on them are read from the code: the packets table's schema
(reading/schema.py), the columns matching reads (`match_columns`), the probes table's columns, and each step's
`needs`, `packet_columns` and `probe_columns`. A step added to STEPS, or a column added to one, changes the
drawing; tests/test_docs_pages.py fails until it is redrawn:

    python3 docs/make_diagram.py            # writes docs/pipeline.svg
    python3 docs/make_diagram.py --check    # exit 1 if docs/pipeline.svg is not what the code draws

Plain SVG text, written here (no plotting library, no date, no version): the same code draws the same bytes.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from html import escape
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "pipeline.svg"

CHAR_W = 7.2  # px per character of 12 px monospace
BOX_H = 44
STEP_W = 190
GAP = 24
LANE_H = 26
COLOURS = {"read": "#e8f0fb", "table": "#fdf3dc", "step": "#e6f4ea", "render": "#f3e8fb"}


def _box(x: float, y: float, w: float, h: float, fill: str, lines: list[str]) -> list[str]:
    out = [f'<rect x="{x:g}" y="{y:g}" width="{w:g}" height="{h:g}" rx="5" fill="{fill}" stroke="#555"/>']
    first = y + h / 2 - (len(lines) - 1) * 8 + 4
    for i, text in enumerate(lines):
        weight = ' font-weight="bold"' if i == 0 else ""
        out.append(f'<text x="{x + w / 2:g}" y="{first + i * 16:g}" text-anchor="middle"{weight}>{escape(text)}</text>')
    return out


def _lane(x: float, y: float, w: float, name: str, text: str) -> list[str]:
    """A table the steps draw from: a band across the drawing, named."""
    return [f'<rect x="{x:g}" y="{y:g}" width="{w:g}" height="{LANE_H}" fill="{COLOURS["table"]}" stroke="#555"/>',
            f'<text x="{x + 10:g}" y="{y + 17:g}" font-weight="bold">{escape(name)}</text>',
            f'<text x="{x + 130:g}" y="{y + 17:g}">{escape(text)}</text>']


def _arrow(x1: float, y1: float, x2: float, y2: float, label: str = "", dashed: bool = False) -> list[str]:
    dash = ' stroke-dasharray="4 3"' if dashed else ""
    out = [f'<line x1="{x1:g}" y1="{y1:g}" x2="{x2:g}" y2="{y2:g}" stroke="#333"{dash} marker-end="url(#head)"/>']
    if label:
        out.append(f'<text x="{(x1 + x2) / 2 + 5:g}" y="{(y1 + y2) / 2 + 4:g}" class="n">{escape(label)}</text>')
    return out


def _columns(n: int | None) -> str:
    return "all columns" if n is None else f"{n} column{'s' * (n != 1)}"


def draw() -> str:
    """The pipeline as SVG text."""
    sys.path.insert(0, str(ROOT))
    from analyzer.analysis.match import PROBE_COLUMNS, match_columns
    from analyzer.pipeline import STEPS
    from analyzer.reading.schema import PACKET_COLUMNS

    steps = list(STEPS.values())
    for step in steps:  # each step's code is the analysis module named after it
        if not (ROOT / "analyzer" / "analysis" / f"{step.name}.py").exists():
            raise SystemExit(f"make_diagram: no analyzer/analysis/{step.name}.py for step {step.name!r}")
    left = 20
    width = left * 2 + len(steps) * STEP_W + (len(steps) - 1) * GAP
    body: list[str] = []

    # Row 1: the capture, read into the packets table (a lane the steps draw from).
    y1 = 20
    body += _box(left, y1, 200, BOX_H, "#ffffff", ["capture file", "pcap, pcapng, gzip"])
    body += _arrow(left + 200, y1 + BOX_H / 2, left + 240, y1 + BOX_H / 2)
    body += _box(left + 240, y1, 220, BOX_H, COLOURS["read"], ["read", "reading/packets.py"])
    lane_packets = y1 + BOX_H + 30
    body += _arrow(left + 350, y1 + BOX_H, left + 350, lane_packets)
    body += _lane(left, lane_packets, width - 2 * left, "packets table", f"one row per frame; {len(PACKET_COLUMNS)} "
                  "columns (reading/schema.py), only those the steps asked for are read")

    # Row 2: matching, from the packets lane into the probes lane, in the widest space the steps' arrows from
    # the packets lane (which cross this row) leave.
    at = {s.name: left + i * (STEP_W + GAP) for i, s in enumerate(steps)}
    crossing = sorted([left, width - left] + [at[s.name] + 30 for s in steps if "packets" in s.needs])
    a, b = max(itertools.pairwise(crossing), key=lambda gap: gap[1] - gap[0])
    mx = (a + b) / 2 - 110
    y2 = lane_packets + LANE_H + 30
    body += _arrow(mx + 110, lane_packets + LANE_H, mx + 110, y2, _columns(len(match_columns())))
    body += _box(mx, y2, 220, BOX_H, COLOURS["read"], ["match", "analysis/match.py"])
    lane_probes = y2 + BOX_H + 30
    body += _arrow(mx + 110, y2 + BOX_H, mx + 110, lane_probes)
    body += _lane(left, lane_probes, width - 2 * left, "probes table",
                  f"one row per probe, its reply and RTT; {len(PROBE_COLUMNS)} columns (analysis/match.py)")

    # Row 3: the steps, in the order they run, each fed by the tables and the steps it needs.
    y3 = lane_probes + LANE_H + 44
    for step in steps:
        x = at[step.name]
        body += _box(x, y3, STEP_W, BOX_H, COLOURS["step"], [step.name, f"analysis/{step.name}.py"])
        if "packets" in step.needs:  # (dashed, and under the probes lane: it passes it by)
            body.append(f'<line x1="{x + 30}" y1="{lane_packets + LANE_H}" x2="{x + 30}" y2="{lane_probes}" '
                        'stroke="#333" stroke-dasharray="4 3"/>')
            body += _arrow(x + 30, lane_probes + LANE_H, x + 30, y3, dashed=True)
            body.append(f'<text x="{x + 35}" y="{lane_probes - 8}" class="n">{_columns(_len(step.packet_columns))}'
                        '</text>')
        if "probes" in step.needs:
            body += _arrow(x + STEP_W - 40, lane_probes + LANE_H, x + STEP_W - 40, y3)
            body.append(f'<text x="{x + STEP_W - 35}" y="{y3 - 14}" class="n" text-anchor="end">'
                        f'{_columns(_len(step.probe_columns))}</text>')
        for need in step.needs:
            if need in at:  # an earlier step's result
                body += _arc(at[need] + STEP_W / 2, x + STEP_W / 2, y3 + BOX_H, need)

    # Row 4: rendering, from every step's result.
    y4 = y3 + BOX_H + 70
    for step in steps:
        body += _arrow(at[step.name] + STEP_W / 2, y3 + BOX_H, at[step.name] + STEP_W / 2, y4)
    body += _box(left, y4, width - 2 * left, BOX_H, COLOURS["render"],
                 ["render", "text, JSON, CSV (render/output.py); the HTML report (render/report.py, html.py, plots.py)"])
    height = y4 + BOX_H + 20
    head = [
        (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="12" fill="#222">'),
        "<title>synlens pipeline (analyzer/pipeline.py STEPS)</title>",
        ('<defs><marker id="head" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>'),
        "<style>.n { font-size: 11px; fill: #555; }</style>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    return "\n".join(head + body + ["</svg>"]) + "\n"


def _len(columns: tuple[str, ...] | None) -> int | None:
    return None if columns is None else len(columns)


def _arc(x_from: float, x_to: float, y: float, label: str) -> list[str]:
    """An arrow below the steps' row from one step's box to a later one's (a result handed on)."""
    mid, depth = (x_from + x_to) / 2, 34
    return [(f'<path d="M{x_from + 20:g},{y:g} Q{mid:g},{y + depth:g} {x_to - 20:g},{y:g}" fill="none" stroke="#333" '
            'marker-end="url(#head)"/>'),
            f'<text x="{mid:g}" y="{y + depth / 2 + 12:g}" class="n" text-anchor="middle">{escape(label)} result</text>']


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/pipeline.svg differs from the drawing")
    args = ap.parse_args(argv)
    svg = draw()
    if args.check:
        same = OUT.exists() and OUT.read_text() == svg
        print(f"{OUT}: {'as drawn' if same else 'differs from the code: run python3 docs/make_diagram.py'}")
        return 0 if same else 1
    OUT.write_text(svg)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
