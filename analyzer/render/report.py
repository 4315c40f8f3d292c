"""Capture → one self-contained HTML report: the capture, hosts, scans, port tables, RTT families, plots.

Self-contained: styles and plots (inline SVG, see render/plots.py) are in the file and there is no
script at all, so it opens offline in any browser and nothing is fetched; a Content-Security-Policy meta tag
forbids the page to load anything but its own inline styles and data: images. A capture is untrusted input:
every string taken from it goes through `html.escape` (render/html.py's `e`) before it reaches the page.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..analysis.families import MIN_TRIPS, family_medians
from ..analysis.groups import group_ids, group_positions
from ..analysis.scans import ScanResult
from ..analysis.stats import rtt_samples
from ..pipeline import Options, analyze
from ..protocols import address_order
from ..reading.sources import Sources, sha256_of
from . import plots
from .frames import frame_list, frame_text, naming, probe_and_reply
from .html import (
    MAX_ROWS,
    Raw,
    dl,
    duration,
    e,
    figure,
    fold,
    num,
    page,
    section,
    state,
    swatch,
    table,
)
from .output import (
    SILENT_TARGETS_OVER,
    first_addresses,
    port_ranges,
    scans_count,
    service_name,
    silent_rows,
    silent_summary,
    silent_targets,
    states_by_scan,
    utc,
)
from .progress import Meter

REPORT_STEPS = ("scans", "hosts", "families")  # the analyses the report shows (families: RTT alone)
HIDE_OVER = 25  # a port table longer than this leaves out its commonest state, as nmap does
MAX_PLOTS = 12  # plots of one kind (scan phases, scanners, targets); the largest are kept
# A sweep's answering targets of at most this many ports (more than SILENT_TARGETS_OVER of them) are rows of one
# table, as zmap and masscan list their answers, not a table each (a 5.5 MB page for 4,096 such targets).
FEW_ROWS = 4
NAV = [("capture", "Capture"), ("hosts", "Hosts"), ("scans", "Scans"), ("ports", "Ports"), ("families", "RTT families")]
STAGES = ("reading", "matching", "scans", "hosts", "families", "plotting", "writing")
LINKTYPES = {0: "BSD loopback", 1: "Ethernet", 12: "raw IP", 14: "raw IP", 101: "raw IP", 108: "OpenBSD loopback",
             113: "Linux cooked (SLL)", 228: "raw IPv4", 229: "raw IPv6", 276: "Linux cooked v2 (SLL2)"}


class _Progress:
    """One line per stage on stderr: "synlens report [2/6] matching (0.4 s)"."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.start = enabled, time.monotonic()

    def __call__(self, stage: str, detail: str = "") -> None:
        if self.enabled:
            print(f"synlens report [{STAGES.index(stage) + 1}/{len(STAGES)}] {stage}{': ' + detail if detail else ''}"
                  f" ({time.monotonic() - self.start:.1f} s)", file=sys.stderr, flush=True)


def write_report(capture: str | Sequence[str] | Sources, output: str, *, engine: str = "native",
                 options: Options | None = None, progress: bool = False) -> None:
    """Analyse `capture` (one file, or several read as one: `analyzer.analyze`) and write the HTML report to
    `output`, atomically: a failed run leaves no file. `options`: the pipeline's (their engine wins over
    `engine`).

    The output file is opened first, so an unwritable destination fails at once, not after the analysis.
    """
    options = options or Options(engine=engine)
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(output)), prefix=".synlens-report-",
                                   suffix=".html")
    except OSError as error:  # name the file asked for, not the temporary one
        raise type(error)(error.errno, error.strerror, output) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(_report(capture, options, _Progress(progress), output))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the report from a web server or a colleague
        os.replace(tmp, output)
    except BaseException:
        os.unlink(tmp)
        raise


def _report(capture: str | Sequence[str] | Sources, options: Options, step: _Progress, output: str) -> str:
    meter = Meter()
    try:
        analysis = analyze(capture, REPORT_STEPS, options, keep=("packets", "probes"), progress=step,
                           reading=meter if meter.enabled else None)
    finally:
        meter.close()
    engine = options.engine
    packets, probes, result, host_table = analysis.packets, analysis.probes, analysis.scans, analysis.hosts
    found, states = result
    fams = analysis.families
    step("plotting")
    plots.reset_ids()
    t0 = float(packets["ts_ns"].min()) / 1e9 if len(packets) else 0.0
    with naming(analysis.frames):
        body = [
            _capture_section(analysis.paths, engine, packets, probes, list(analysis.warnings)),
            _hosts_section(host_table),
            _scans_section(packets, probes, result, t0),
            _ports_section(found, states),
            _families_section(probes, fams),
        ]
    step("writing", output)
    title = f"synlens report: {os.path.basename(analysis.capture) if len(analysis.paths) == 1 else analysis.capture}"
    return page(title, _summary(found, host_table, fams), NAV, body)


# ------------------------------------------------------------------------------------------- formatting


def _phase_label(rows: pd.DataFrame) -> str:
    r = rows.iloc[0]
    targets = r["target"] if len(rows) == 1 else f"{len(rows)} targets"
    return f"phase {int(r['phase'])}: {r['type']} {r['scanner']} → {targets}"


# --------------------------------------------------------------------------------------------- sections


def _capture_section(paths: tuple[tuple[str, str], ...], engine: str, packets: pd.DataFrame, probes: pd.DataFrame,
                     notes: list[str]) -> str:
    fmt = str(packets.attrs.get("format", "?")) + (" (gzip-compressed)" if packets.attrs.get("compressed") else "")
    items: list[tuple[str, object]] = []
    for name, path in paths:  # (each file the capture was read from, in capture order)
        items.append(("file", name))
        if os.path.exists(path):  # (standard input's spool file is gone once read)
            items += [("size", f"{os.path.getsize(path):,} bytes"), ("SHA-256", Raw(f"<code>{sha256_of(path)}</code>"))]
    items += [("format", f"{fmt}, read by the {engine} engine"), ("packets", f"{len(packets):,}")]
    if len(packets):
        first, last = packets["ts_ns"].min() / 1e9, packets["ts_ns"].max() / 1e9
        links = packets["linktype"].value_counts().sort_index()
        items += [("duration", duration(last - first)), ("first packet", utc(first)), ("last packet", utc(last)),
                  ("link types", "; ".join(f"{LINKTYPES.get(int(k), 'link type')} ({int(k)}): {n:,} frames"
                                           for k, n in links.items()))]
    answered = int(probes["reply_frame"].notna().sum()) if len(probes) else 0
    items += [("malformed packets", f"{packets.attrs.get('malformed', 0):,}"),
              ("probes", f"{len(probes):,} ({answered:,} answered)"),
              ("unsolicited replies", f"{probes.attrs.get('unsolicited_replies', 0):,}")]
    if notes:
        items.append(("reader warnings", Raw("<br>".join(e(n) for n in notes))))
    return section("capture", "The capture", [dl(items)])


def _hosts_section(host_table: pd.DataFrame) -> str:
    rows = []
    for h in host_table.itertuples():
        os_name = h.os
        if isinstance(os_name, str) and h.os_evidence and os_name.endswith(f" ({h.os_evidence})"):
            os_name = os_name[: -len(h.os_evidence) - 3]  # the evidence has its own column
        mac, vendor = (h.mac, h.vendor) if isinstance(h.mac, str) else (
            (f"via gateway {h.via}", h.via_vendor) if isinstance(h.via, str) else (None, None))
        rows.append([h.address, mac, vendor, os_name, h.os_evidence or None, frame_list(h.evidence_frames),
                     f"{h.packets:,}"])
    listing = table(["address", "MAC", "vendor", "OS hint", "evidence", "frames", "packets"], rows, {6}, "hosts")
    content = [fold(listing, len(rows), f"all {len(rows):,} hosts")] if rows else []
    if rows:
        content.insert(0, '<p class="note">OS hints are evidence, not verdicts: initial TTL, SYN/ACK window and '
                       "option layout, IP ID sequence, RFC 793 compliance.</p>")
    return section("hosts", f"Hosts ({len(rows)})", content, "no hosts: no IP packets in the capture")


def _scans_section(packets: pd.DataFrame, probes: pd.DataFrame, result: ScanResult, t0: float) -> str:
    found, states = result
    if found.empty:
        return section("scans", "Scans: none", [_notes_table(result.notes)], "no scans found")
    rows = []
    for s in found.itertuples():
        technique = f"{s.type} ({s.flags})" if s.flags else s.type
        host = getattr(s, "host_state", None)
        frames = (f"{frame_text(s.first_frame)}–{frame_text(s.last_frame)}" if pd.notna(s.first_frame) and pd.notna(s.last_frame)
                  else None)
        rows.append([int(s.phase), s.stage, Raw(f"{e(s.scanner)} → {e(s.target)}"), technique, s.shape,
                     f"{utc(s.first, t0)} (+{s.first - t0:.3f} s)", duration(s.last - s.first), f"{s.probes:,}",
                     f"{s.ports_probed:,}", f"{s.rate:.1f}" if pd.notna(s.rate) else None, host or None, frames, s.evidence or None, s.tool,
                     (s.tool_evidence + (f" (frames {frame_list(s.tool_frames)})" if frame_list(s.tool_frames) else ""))
                     if s.tool_evidence else None])
    head = ["phase", "stage", "scanner → target", "technique", "shape", "start", "duration", "probes", "ports",
            "probes/s", "host", "frames", "evidence", "tool", "tool evidence"]
    content = [fold(table(head, rows, {7, 8, 9}, "scans"), len(rows), f"all {len(rows):,} scans")]
    content.append(_notes_table(result.notes))
    # Each probe's phase as the scans stage placed it: the plots count what the tables count.
    placed = result.probes.drop_duplicates("probe_frame").set_index("probe_frame")["phase"]
    phase = probes["probe_frame"].map(placed).fillna(-1).to_numpy(np.int64)
    port_scans = found[found["stage"] == "port scan"]
    biggest = port_scans.groupby("phase")["probes"].sum().sort_values(ascending=False).index[:MAX_PLOTS]
    labels = {int(k): _phase_label(rows) for k, rows in port_scans.groupby("phase", sort=True) if k in set(biggest)}
    skipped = f" Only the {MAX_PLOTS} largest phases are plotted." if port_scans["phase"].nunique() > MAX_PLOTS else ""
    if labels:
        content.append("<h3>How each scan walked the ports</h3>")
    for k, label in labels.items():
        mine = probes[phase == k]
        start = float(mine["ts_ns"].min()) / 1e9
        content.append(figure(plots.port_walk(mine, states[states["phase"] == k], start, label),
                               f"Destination port of each of the phase's {len(mine):,} probes against time, coloured "
                               "by the state the scan found; "
                               f"time 0 is the phase's first probe, {utc(start, t0)}, {start - t0:.3f} s into the "
                               f"capture.{skipped}", f"walk-{k}"))
    if labels:
        content.append("<h3>Probes per second</h3>")
        content.append(figure(plots.probe_rate(probes, phase, labels, t0), "Probe rate of each scan phase.", "rate"))
        content.append("<h3>What gives the tool away</h3>")
        rows_of = np.searchsorted(packets["frame"].to_numpy(), probes["probe_frame"].to_numpy())
        scanners = port_scans.groupby("scanner")["probes"].sum().sort_values(ascending=False).index[:MAX_PLOTS]
        for i, scanner in enumerate(scanners):
            mine = (probes["src"].astype(str) == scanner).to_numpy() & (probes["protocol"].astype(str) != "icmp").to_numpy()
            pk = packets.iloc[rows_of[mine]]
            own = {k: v for k, v in labels.items() if found.loc[found["phase"] == k, "scanner"].iloc[0] == scanner}
            content.append(figure(plots.fingerprint(pk, phase[mine], own, t0, f"probes sent by {scanner}"),
                                   "TTL, IP ID and source port of each probe (first transmission) against time: "
                                   "tools show in fixed or patterned header fields.", f"fingerprint-{i}"))
    return section("scans", f"Scans: {scans_count(found)}", content)


def _notes_table(notes: pd.DataFrame) -> str:
    """What resembles a scan and was not read as one, with the reason."""
    if notes is None or not len(notes):
        return ""
    rows = [[n.kind, n.scanner, f"{int(n.packets):,}", n.evidence, frame_list(n.frames)] for n in notes.itertuples()]
    return ("<h3>Not read as scans</h3>" +
            table(["kind", "sender", "packets", "why not a scan", "frames"], rows, {2}, "notes"))


def _port_rows(st: pd.DataFrame, target: bool = False) -> list[list[object]]:
    """Port-state rows of the report's tables (PORT STATE SERVICE REASON probes reply TTL), after the TARGET when
    asked for."""
    return [([r.target] if target else []) + [f"{int(r.port)}/{r.protocol}", state(str(r.state)),
             service_name(int(r.port), str(r.protocol)), r.reason, int(r.probes), num(r.reply_ttl, "{:.0f}"),
             _decided_by(r)]
            for r in st.itertuples()]


def _decided_by(r: object) -> str | None:
    """The frames behind a port's state: the deciding probe and its reply ("14 → 15")."""
    return probe_and_reply(getattr(r, "probe_frame", None), getattr(r, "reply_frame", None), "→")


def _few_ports(keys: list, sizes: list[int], over: int = SILENT_TARGETS_OVER) -> set:
    """The keys (a target, or a target in a phase) a sweep's answering targets fold into one table under: each of
    at most FEW_ROWS rows, when more than `over` targets are so small."""
    few = {k for k, n in zip(keys, sizes) if n <= FEW_ROWS}
    return few if len(few) > over else set()


def _ports_section(found: pd.DataFrame, states: pd.DataFrame) -> str:
    found = found[found["stage"] == "port scan"]  # (the other stages have no port states)
    content = []
    by_scan = states_by_scan(states)
    silent = silent_targets(found, states, by_scan)
    quiet: dict[int, list[tuple[str, np.ndarray]]] = {}  # phase → its silent targets, listed once at the end
    keys = [(int(ph), str(t)) for ph, t in zip(found["phase"], found["target"])]
    answering = [k for k in keys if k not in silent]
    few = _few_ports(answering, [len(by_scan.get(k, ())) for k in answering])
    small: dict[int, list[tuple]] = {}  # phase → its few-port targets (address order, states), one table at the end
    for s, key in zip(found.itertuples(), keys):
        if key in silent:
            quiet.setdefault(key[0], []).append((key[1], by_scan[key]))
            continue
        if key in few:
            small.setdefault(key[0], []).append((address_order(key[1]), by_scan.get(key, np.zeros(0, np.int64))))
            continue
        mine = states.iloc[by_scan.get(key, np.zeros(0, np.int64))]
        shown, note = mine, ""
        if len(mine) > HIDE_OVER:
            common = mine["state"].mode().iloc[0]
            shown = mine[mine["state"] != common]
            reasons = ", ".join(f"{n} {r}" for r, n in mine.loc[mine["state"] == common, "reason"].value_counts().items())
            note = f"Not shown: {len(mine) - len(shown):,} {common} ports ({reasons})."
        rows = _port_rows(shown.head(MAX_ROWS))
        title = f"{s.target}: {s.type} scan by {s.scanner} (phase {int(s.phase)}, {s.tool})"
        content.append(f"<h3>{e(title)}</h3>")
        if note:
            content.append(f'<p class="note">{e(note)}</p>')
        content.append(fold(table(["PORT", "STATE", "SERVICE", "REASON", "probes", "reply TTL", "frames"], rows, {4, 5},
                                    "ports", total=len(shown)), len(shown), f"{len(shown):,} ports")
                       if rows else '<p class="empty">no ports</p>')
    for phase, targets in small.items():
        positions = [rows for _, rows in sorted(targets, key=lambda t: t[0])]  # in address order
        s = found[found["phase"] == phase].iloc[0]
        st = states.iloc[np.concatenate(positions)]
        content.append(f"<h3>{e(f'{len(positions):,} targets of phase {phase}')}: {e(s['type'])} scan by "
                       f"{e(s['scanner'])} ({e(s['tool'])}), at most {FEW_ROWS} ports each</h3>")
        content.append(fold(table(["TARGET", "PORT", "STATE", "SERVICE", "REASON", "probes", "reply TTL", "frames"],
                                  _port_rows(st.head(MAX_ROWS), target=True), {5, 6}, "ports", total=len(st)),
                            len(st), f"{len(st):,} ports of {len(positions):,} targets"))
    for phase, targets in quiet.items():
        shown_targets, ports = silent_summary(states, [r for _, r in targets], [t for t, _ in targets])
        content.append(f"<h3>{e(f'{len(targets):,} targets of phase {phase} that answered nothing')}</h3>")
        content.append(f'<p class="note">{e(shown_targets)}. Ports: {e(ports)}.</p>')
    return section("ports", "Ports, as each scanner saw them", content, "no port states: no scans found")


def _test_text(attrs: dict) -> str:
    method, conf = attrs.get("method", "robust"), attrs.get("confidence", 0.99)
    probes = "bare SYN probes" if attrs.get("probes", "syn") == "syn" else "every probe"
    if method == "robust":
        test = (f"Method robust: Skillings–Mack's rank test on log RTTs blocked by trip (ports compared only "
                f"within the trips that probed them together), divisive; confidence {conf} (family-wise "
                f"α = {1 - conf:.3g}); a cut also needs the ports' floors at least {attrs.get('min_ratio')}× and "
                f"{attrs.get('min_diff_us')} µs apart. A port with samples in fewer than "
                f"{attrs.get('min_trips', MIN_TRIPS)} trips shared with other ports is untestable: RTT cannot "
                f"set it apart.")
    else:
        test = (f"Method {method}: nmap qscan's greedy pooled-variance Student t in port order, confidence {conf} "
                f"({'qscan’s table as shipped' if method == 'qscan-table' else 'exact t quantiles'}).")
    return f"{test} RTTs from {probes}; Karn's rule drops ambiguous samples. Ports with no reply form one “no answer” family."


_PORT_RTT_HEAD = ["PORT", "FAMILY", "MEAN (µs)", "STDDEV", "LOSS", "answered", "samples", "min", "median", "p95"]


def _port_rtt_rows(rows: pd.DataFrame, target: bool, colours: dict[int, str] | None = None) -> list[list[object]]:
    """Per-port RTT rows of the report's tables (_PORT_RTT_HEAD), after TARGET and PROTOCOL when asked for; a family
    marked by its colour where `colours` gives them."""
    out = []
    for r in rows.itertuples():
        fam = str(r.family) if r.family >= 0 else "–"
        if r.family_kind != "answered":
            fam += f" ({r.family_kind})"
        mark = swatch(colours[int(r.family)]) if colours and r.family_kind == "answered" else ""
        out.append(([r.target, r.protocol] if target else [])
                   + [int(r.port), Raw(mark + e(fam)), num(r.mean_us, "{:.2f}"), num(r.stddev_us, "{:.2f}"),
                      f"{100 * r.loss:.1f}%", f"{r.received}/{r.sent}", r.samples, num(r.min_us), num(r.median_us),
                      num(r.p95_us)])
    return out


def _families_section(probes: pd.DataFrame, fams: pd.DataFrame) -> str:
    if fams.empty:
        return section("families", "RTT families", [], "no RTT families: no probes to draw RTTs from")
    content = [f'<p class="note">{e(_test_text(fams.attrs))}</p>']
    samples = rtt_samples(probes, probes=fams.attrs.get("probes", "syn"))
    # Targets none of whose ports answered have no RTT to group: many of them (a sweep) are one note.
    silent = silent_rows(fams)
    quiet = fams.loc[silent, "target"].astype(str).unique().tolist()
    if len(quiet) > SILENT_TARGETS_OVER:
        fams = fams[~silent]
        content.append(f'<p class="note">{len(quiet):,} targets answered no probe, so have no RTT to group: '
                       f"{e(first_addresses(quiet, count=False))}</p>")
    target_codes, protocol_codes = (pd.factorize(fams[c])[0] for c in ("target", "protocol"))
    groups = group_positions(group_ids(target_codes, protocol_codes))  # (target, protocol) by first appearance
    sent = fams["sent"].to_numpy()
    groups.sort(key=lambda g: -int(sent[g].sum()))
    few = _few_ports(list(range(len(groups))), [len(g) for g in groups])
    if few:
        targets = fams["target"].astype(str).to_numpy()
        small = sorted(few, key=lambda i: (address_order(targets[groups[i][0]]), i))  # address order
        rows = fams.iloc[np.concatenate([groups[i] for i in small])]
        content.append(f"<h3>{len(few):,} targets of at most {FEW_ROWS} ports each</h3>")
        content.append(fold(table(["TARGET", "PROTOCOL"] + _PORT_RTT_HEAD, _port_rtt_rows(rows.head(MAX_ROWS), True),
                                  {4, 5, 6, 7, 8, 9, 10, 11}, "ports", total=len(rows)),
                            len(rows), f"per-port RTT table ({len(rows):,} ports of {len(few):,} targets)"))
        groups = [g for i, g in enumerate(groups) if i not in few]
    for i, positions in enumerate(groups):
        rows = fams.iloc[positions]
        target, proto = rows["target"].iloc[0], rows["protocol"].iloc[0]
        colours = {f: plots.colour(f) for f in sorted(set(rows["family"].astype(int)))}
        per_port = _port_rtt_rows(rows.head(MAX_ROWS), False, colours)
        content.append(f"<h3>{e(target)} ({e(proto)})</h3>")
        summary = []
        medians = family_medians(rows).droplevel([0, 1])  # (the figure the text and JSON give for a family)
        for (fam, kind), members in rows.groupby(["family", "family_kind"], sort=True):
            mark = swatch(colours[int(fam)]) if kind == "answered" else ""
            median = medians.get(fam, np.nan) if kind == "answered" else np.nan
            summary.append([Raw(mark + e(fam if fam >= 0 else "–")), kind, len(members), port_ranges(members["port"]),
                            num(median, "{:.2f}")])
        content.append(table(["FAMILY", "kind", "ports", "which", "median RTT (µs)"], summary, {2, 4}, "families"))
        content.append(fold(table(_PORT_RTT_HEAD, per_port, {2, 3, 4, 5, 6, 7, 8, 9}, "ports", total=len(rows)),
                            len(rows), f"per-port RTT table ({len(rows):,} ports)"))
        if i < MAX_PLOTS and rows["samples"].sum() > 0:
            caption = ("Each port's RTT samples (points) with box (quartiles, median) and whiskers (5th–95th "
                       "percentile), coloured by family." if len(rows) <= plots.MAX_BOXES else
                       "Every RTT sample at its port number, coloured by family (too many ports for a box each).")
            content.append(figure(plots.rtt_strip(rows, samples, colours, f"{target} ({proto}): RTT per port"),
                                  caption, f"rtt-{i}"))
    if len(groups) > MAX_PLOTS:
        content.append(f'<p class="note">RTT plots are drawn for the {MAX_PLOTS} most probed targets only.</p>')
    return section("families", "RTT families", content)


def _summary(found: pd.DataFrame, host_table: pd.DataFrame, fams: pd.DataFrame) -> str:
    answered = fams[fams["family_kind"] == "answered"]
    n_fams = int(answered.groupby(["target", "protocol"])["family"].nunique().sum()) if len(answered) else 0
    return f"{len(host_table)} hosts · {scans_count(found)} · {n_fams} RTT families"
