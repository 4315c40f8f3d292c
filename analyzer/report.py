"""Capture → one self-contained HTML report: the capture, hosts, scans, port tables, RTT families, plots.

Self-contained: styles and plots (inline SVG, see analyzer.report_plots) are in the file and there is no
script at all, so it opens offline in any browser and nothing is fetched; a Content-Security-Policy meta tag
forbids the page to load anything but its own inline styles and data: images. A capture is untrusted input:
every string taken from it goes through `html.escape` (`_e`) before it reaches the page.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import html
import math
import os
import re
import sys
import tempfile
import time
import warnings

import numpy as np
import pandas as pd

from . import report_plots as plots
from .errors import CaptureWarning
from .families import families
from .hosts import hosts
from .match import match
from .output import service_name
from .scans import scans
from .stats import DEFAULT_TRIM, rtt_samples

MAX_ROWS = 500  # rows a table shows; the rest are counted, not listed
HIDE_OVER = 25  # a port table longer than this leaves out its commonest state, as nmap does
MAX_PLOTS = 12  # plots of one kind (scan phases, scanners, targets); the largest are kept
STAGES = ("reading", "matching", "scans", "families", "plotting", "writing")
LINKTYPES = {0: "BSD loopback", 1: "Ethernet", 12: "raw IP", 14: "raw IP", 101: "raw IP", 108: "OpenBSD loopback",
             113: "Linux cooked (SLL)", 228: "raw IPv4", 229: "raw IPv6", 276: "Linux cooked v2 (SLL2)"}


class Raw(str):
    """Markup built here from escaped parts: `_e` passes it through unchanged."""


def _e(value: object) -> str:
    """Any value as escaped HTML text; missing values (None, NaN, NA) as a dash."""
    if isinstance(value, Raw):
        return value
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return html.escape(str(value), quote=True)


class _Progress:
    """One line per stage on stderr: "synlens report [2/6] matching (0.4 s)"."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.start = enabled, time.monotonic()

    def __call__(self, stage: str, detail: str = "") -> None:
        if self.enabled:
            print(f"synlens report [{STAGES.index(stage) + 1}/{len(STAGES)}] {stage}{': ' + detail if detail else ''}"
                  f" ({time.monotonic() - self.start:.1f} s)", file=sys.stderr, flush=True)


def _read(capture: str, engine: str) -> pd.DataFrame:
    if engine == "tshark":
        from .engine_tshark import read_tshark

        return read_tshark(capture)
    if engine != "native":
        raise ValueError(f"engine must be 'native' or 'tshark', not {engine!r}")
    from .packets import read

    return read(capture)


def write_report(capture: str, output: str, *, engine: str = "native", progress: bool = False) -> None:
    """Analyse `capture` and write the HTML report to `output` (atomically: a failed run leaves no file)."""
    step = _Progress(progress)
    step("reading", capture)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        packets = _read(capture, engine)
    for w in caught:  # still shown as usual; the capture's own warnings also go into the report
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    notes = [str(w.message) for w in caught if issubclass(w.category, CaptureWarning)]
    step("matching", f"{len(packets)} packets")
    probes = match(packets)
    step("scans", f"{len(probes)} probes")
    found, states = scans(packets, probes)
    host_table = hosts(packets, probes, states)
    step("families")
    fams = families(probes)
    step("plotting")
    plots.reset_ids()
    t0 = float(packets["ts_ns"].min()) / 1e9 if len(packets) else 0.0
    body = [
        _capture_section(capture, engine, packets, probes, notes),
        _hosts_section(host_table),
        _scans_section(packets, probes, found, states, t0),
        _ports_section(found, states),
        _families_section(probes, fams),
    ]
    step("writing", output)
    page = _page(os.path.basename(capture), found, host_table, fams, body)
    directory = os.path.dirname(os.path.abspath(output))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".synlens-report-", suffix=".html")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    except BaseException:
        os.unlink(tmp)
        raise


# ------------------------------------------------------------------------------------------- formatting


def _utc(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _num(value: object, fmt: str = "{:.1f}") -> str:
    return "–" if value is None or pd.isna(value) else fmt.format(value)


def _state(state: str) -> Raw:
    return Raw(f'<span class="st st-{re.sub("[^a-z]", "", state)}">{_e(state)}</span>')


def _swatch(c: str) -> Raw:
    return Raw(f'<span class="sw" style="background:{c}"></span>')


def _table(head: list[str], rows: list[list[object]], numeric: set[int] = frozenset(), what: str = "rows") -> str:
    cls = lambda i: ' class="num"' if i in numeric else ""  # noqa: E731
    out = ["<table><thead><tr>" + "".join(f"<th{cls(i)}>{_e(h)}</th>" for i, h in enumerate(head)) + "</tr></thead><tbody>"]
    for row in rows[:MAX_ROWS]:
        out.append("<tr>" + "".join(f"<td{cls(i)}>{_e(c)}</td>" for i, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    if len(rows) > MAX_ROWS:
        out.append(f'<p class="note">{len(rows) - MAX_ROWS} more {_e(what)} not shown.</p>')
    return "\n".join(out)


def _figure(svg_note: tuple[str, str], caption: str, fig_id: str) -> str:
    svg, note = svg_note
    return (f'<figure id="{_e(fig_id)}">{svg}<figcaption>{_e(caption)}'
            f'{" " + _e(note) if note else ""}</figcaption></figure>')


def _section(sid: str, title: str, content: list[str], empty: str | None = None) -> str:
    inner = "\n".join(content) if content else f'<p class="empty">{_e(empty)}</p>'
    return f'<section id="{sid}">\n<h2>{_e(title)}</h2>\n{inner}\n</section>'


def _dl(items: list[tuple[str, object]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items) + "</dl>"


def _phase_label(rows: pd.DataFrame) -> str:
    r = rows.iloc[0]
    targets = r["target"] if len(rows) == 1 else f"{len(rows)} targets"
    return f"phase {int(r['phase'])}: {r['type']} {r['scanner']} → {targets}"


# --------------------------------------------------------------------------------------------- sections


def _capture_section(capture: str, engine: str, packets: pd.DataFrame, probes: pd.DataFrame, notes: list[str]) -> str:
    digest = hashlib.sha256()
    with open(capture, "rb") as f:
        for block in iter(functools.partial(f.read, 1 << 20), b""):
            digest.update(block)
    size = os.path.getsize(capture)
    fmt = str(packets.attrs.get("format", "?")) + (" (gzip-compressed)" if packets.attrs.get("compressed") else "")
    items: list[tuple[str, object]] = [
        ("file", capture), ("size", f"{size:,} bytes"), ("SHA-256", Raw(f"<code>{digest.hexdigest()}</code>")),
        ("format", f"{fmt}, read by the {engine} engine"), ("packets", f"{len(packets):,}"),
    ]
    if len(packets):
        first, last = packets["ts_ns"].min() / 1e9, packets["ts_ns"].max() / 1e9
        links = packets["linktype"].value_counts().sort_index()
        items += [("duration", _duration(last - first)), ("first packet", _utc(first)), ("last packet", _utc(last)),
                  ("link types", "; ".join(f"{LINKTYPES.get(int(k), 'link type')} ({int(k)}): {n:,} frames"
                                           for k, n in links.items()))]
    answered = int(probes["reply_frame"].notna().sum()) if len(probes) else 0
    items += [("malformed packets", f"{packets.attrs.get('malformed', 0):,}"),
              ("probes", f"{len(probes):,} ({answered:,} answered)"),
              ("unsolicited replies", f"{probes.attrs.get('unsolicited_replies', 0):,}")]
    if notes:
        items.append(("reader warnings", Raw("<br>".join(_e(n) for n in notes))))
    return _section("capture", "The capture", [_dl(items)])


def _hosts_section(table: pd.DataFrame) -> str:
    rows = []
    for h in table.itertuples():
        os_name = h.os
        if isinstance(os_name, str) and h.os_evidence and os_name.endswith(f" ({h.os_evidence})"):
            os_name = os_name[: -len(h.os_evidence) - 3]  # the evidence has its own column
        rows.append([h.address, h.mac, h.vendor, os_name, h.os_evidence or None, f"{h.packets:,}"])
    content = [_table(["address", "MAC", "vendor", "OS hint", "evidence", "packets"], rows, {5}, "hosts")] if rows else []
    if rows:
        content.insert(0, '<p class="note">OS hints are evidence, not verdicts: initial TTL, SYN/ACK window and '
                       "option layout, IP ID sequence, RFC 793 compliance.</p>")
    return _section("hosts", f"Hosts ({len(rows)})", content, "no hosts: no IP packets in the capture")


def _scans_section(packets: pd.DataFrame, probes: pd.DataFrame, found: pd.DataFrame, states: pd.DataFrame,
                   t0: float) -> str:
    if found.empty:
        return _section("scans", "Scans (0)", [], "no scans found")
    rows = []
    for s in found.itertuples():
        technique = f"{s.type} ({s.flags})" if s.flags else s.type
        host = getattr(s, "host_state", None)
        rows.append([int(s.phase), Raw(f"{_e(s.scanner)} → {_e(s.target)}"), technique, s.shape,
                     f"{_utc(s.first)} (+{s.first - t0:.3f} s)", _duration(s.last - s.first), f"{s.probes:,}",
                     f"{s.ports_probed:,}", f"{s.rate:.1f}", host, s.tool, s.tool_evidence or None])
    head = ["phase", "scanner → target", "technique", "shape", "start", "duration", "probes", "ports", "probes/s",
            "host", "tool", "tool evidence"]
    content = [_table(head, rows, {6, 7, 8}, "scans")]
    phase = plots.phase_of_probes(probes, found)
    phases = found.groupby("phase", sort=True)
    biggest = found.groupby("phase")["probes"].sum().sort_values(ascending=False).index[:MAX_PLOTS]
    labels = {int(k): _phase_label(rows) for k, rows in phases if k in set(biggest) and (phase == k).any()}
    skipped = f" Only the {MAX_PLOTS} largest phases are plotted." if found["phase"].nunique() > MAX_PLOTS else ""
    content.append("<h3>How each scan walked the ports</h3>")
    for k, label in labels.items():
        mine = probes[phase == k]
        content.append(_figure(plots.port_walk(mine, states[states["phase"] == k], t0, label),
                               "Destination port of every probe against time, coloured by the state the scan found; "
                               f"time 0 is the first packet ({_utc(t0)}).{skipped}", f"walk-{k}"))
    if labels:
        content.append("<h3>Probes per second</h3>")
        content.append(_figure(plots.probe_rate(probes, phase, labels, t0), "Probe rate of each scan phase.", "rate"))
        content.append("<h3>What gives the tool away</h3>")
        rows_of = np.searchsorted(packets["frame"].to_numpy(), probes["probe_frame"].to_numpy())
        scanners = found.groupby("scanner")["probes"].sum().sort_values(ascending=False).index[:MAX_PLOTS]
        for i, scanner in enumerate(scanners):
            mine = (probes["src"].astype(str) == scanner).to_numpy() & (probes["protocol"].astype(str) != "icmp").to_numpy()
            pk = packets.iloc[rows_of[mine]]
            own = {k: v for k, v in labels.items() if found.loc[found["phase"] == k, "scanner"].iloc[0] == scanner}
            content.append(_figure(plots.fingerprint(pk, phase[mine], own, t0, f"probes sent by {scanner}"),
                                   "TTL, IP ID and source port of each probe (first transmission) against time: "
                                   "tools show in fixed or patterned header fields.", f"fingerprint-{i}"))
    return _section("scans", f"Scans ({len(found)})", content)


def _ports_section(found: pd.DataFrame, states: pd.DataFrame) -> str:
    content = []
    for s in found.itertuples():
        mine = states[(states["phase"] == s.phase) & (states["target"] == s.target)]
        shown, note = mine, ""
        if len(mine) > HIDE_OVER:
            common = mine["state"].mode().iloc[0]
            shown = mine[mine["state"] != common]
            reasons = ", ".join(f"{n} {r}" for r, n in mine.loc[mine["state"] == common, "reason"].value_counts().items())
            note = f"Not shown: {len(mine) - len(shown):,} {common} ports ({reasons})."
        rows = [[f"{int(r.port)}/{r.protocol}", _state(str(r.state)), _service(int(r.port), str(r.protocol)), r.reason,
                 int(r.probes), _num(r.reply_ttl, "{:.0f}")] for r in shown.itertuples()]
        title = f"{s.target}: {s.type} scan by {s.scanner} (phase {int(s.phase)}, {s.tool})"
        content.append(f"<h3>{_e(title)}</h3>")
        if note:
            content.append(f'<p class="note">{_e(note)}</p>')
        content.append(_table(["PORT", "STATE", "SERVICE", "REASON", "probes", "reply TTL"], rows, {4, 5}, "ports")
                       if rows else '<p class="empty">no ports</p>')
    return _section("ports", "Ports, as each scanner saw them", content, "no port states: no scans found")


@functools.lru_cache(maxsize=None)
def _service(port: int, protocol: str) -> str:
    return service_name(port, protocol)


def _test_text(attrs: dict) -> str:
    method, conf = attrs.get("method", "robust"), attrs.get("confidence", 0.99)
    probes = "bare SYN probes" if attrs.get("probes", "syn") == "syn" else "every probe"
    if method == "robust":
        test = (f"Method robust: Welch's heteroscedastic ANOVA on {DEFAULT_TRIM:.0%}-trimmed log RTTs, divisive; "
                f"confidence {conf} (family-wise α = {1 - conf:.3g}); a cut also needs the ports' floors at least "
                f"{attrs.get('min_ratio')}× and {attrs.get('min_diff_us')} µs apart.")
    else:
        test = (f"Method {method}: nmap qscan's greedy pooled-variance Student t in port order, confidence {conf} "
                f"({'qscan’s table as shipped' if method == 'qscan-table' else 'exact t quantiles'}).")
    return f"{test} RTTs from {probes}; Karn's rule drops ambiguous samples. Ports with no reply form one “no answer” family."


def _families_section(probes: pd.DataFrame, fams: pd.DataFrame) -> str:
    if fams.empty:
        return _section("families", "RTT families", [], "no RTT families: no probes to draw RTTs from")
    content = [f'<p class="note">{_e(_test_text(fams.attrs))}</p>']
    samples = rtt_samples(probes, probes=fams.attrs.get("probes", "syn"))
    groups = list(fams.groupby(["target", "protocol"], sort=False))
    groups.sort(key=lambda g: -int(g[1]["sent"].sum()))
    for i, ((target, proto), rows) in enumerate(groups):
        colours = {f: plots.colour(f) for f in sorted(set(rows["family"].astype(int)))}
        table = []
        for r in rows.itertuples():
            fam = str(r.family) if r.family >= 0 else "–"
            if r.family_kind != "answered":
                fam += f" ({r.family_kind})"
            mark = _swatch(colours[int(r.family)]) if r.family_kind == "answered" else ""
            table.append([int(r.port), Raw(mark + _e(fam)), _num(r.mean_us, "{:.2f}"), _num(r.stddev_us, "{:.2f}"),
                          f"{100 * r.loss:.1f}%", f"{r.received}/{r.sent}", r.samples, _num(r.min_us), _num(r.median_us),
                          _num(r.p95_us)])
        content.append(f"<h3>{_e(target)} ({_e(proto)})</h3>")
        content.append(_table(["PORT", "FAMILY", "MEAN (µs)", "STDDEV", "LOSS", "answered", "samples", "min", "median",
                               "p95"], table, {2, 3, 4, 5, 6, 7, 8, 9}, "ports"))
        if i < MAX_PLOTS and rows["samples"].sum() > 0:
            content.append(_figure(plots.rtt_strip(rows, samples, colours, f"{target} ({proto}): RTT per port"),
                                   "Each port's RTT samples (points) with box (quartiles, median) and whiskers "
                                   "(5th–95th percentile), coloured by family.", f"rtt-{i}"))
    if len(groups) > MAX_PLOTS:
        content.append(f'<p class="note">RTT plots are drawn for the {MAX_PLOTS} most probed targets only.</p>')
    return _section("families", "RTT families", content)


# ------------------------------------------------------------------------------------------------- page

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
figure svg{display:block;max-width:100%;height:auto}
figcaption{color:var(--muted);font-size:12.5px;max-width:900px}
svg text{font-family:"DejaVu Sans",Verdana,sans-serif}
.note{color:var(--muted);font-size:13px;max-width:900px}
.empty{color:var(--muted);font-style:italic}
.st{font-weight:600}.st-open{color:#1e7b1e}.st-closed{color:#c62828}.st-filtered{color:#6b6b6b}
.st-openfiltered{color:#c66900}.st-unfiltered{color:#1f5fa8}.st-unknown{color:#7b3fa0}
.sw{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:6px;vertical-align:baseline}
footer{color:var(--muted);font-size:12px;border-top:1px solid var(--line);margin-top:30px;padding-top:8px}
@media print{nav{display:none}header{background:none;color:#000}header p{color:#333}main{max-width:none}}
"""


def _page(name: str, found: pd.DataFrame, host_table: pd.DataFrame, fams: pd.DataFrame, body: list[str]) -> str:
    try:
        from importlib.metadata import version

        ver = version("synlens")
    except Exception:  # noqa: BLE001 — not installed (run from a checkout)
        ver = "dev"
    n_fams = int(fams.loc[fams["family_kind"] == "answered"].groupby(["target", "protocol"])["family"].nunique().sum()) if len(fams) else 0
    summary = f"{len(host_table)} hosts · {len(found)} scans · {n_fams} RTT families"
    nav = "".join(f'<a href="#{sid}">{text}</a>' for sid, text in (
        ("capture", "Capture"), ("hosts", "Hosts"), ("scans", "Scans"), ("ports", "Ports"), ("families", "RTT families")))
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>synlens report: {_e(name)}</title>
<style>{CSS}</style>
</head>
<body>
<header><h1>synlens report: {_e(name)}</h1><p>{_e(summary)}</p></header>
<nav>{nav}</nav>
<main>
{chr(10).join(body)}
<footer>Written by synlens {_e(ver)} on {now}. Self-contained: nothing in this file is fetched from a network.</footer>
</main>
</body>
</html>
"""
