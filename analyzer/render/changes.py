"""A series of captures (`analysis/changes.py`) → text for people, JSON and CSV for programs.

Text: the captures, one line each; then per target and protocol its families in each capture (a run of
captures between which nothing changed is one block, its RTT medians given as a range), and the changes from
one capture to the next. JSON: every capture's families and every comparison, with its changes (docs/fleet.md
describes the document). CSV: one row per change, and a row "none" for a comparison that found none.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import orjson
import pandas as pd

from ..analysis.changes import CHANGE_COLUMNS, FAMILY_CHANGES, CaptureSeries
from .output import INDENT_UP_TO_ROWS, port_ranges, utc

# How the text names a change of ports (the family changes and signals are worded where they are made).
_PORT_WORDS = {"appeared": "appeared (answer now)", "went_silent": "went silent", "newly_probed": "newly probed",
               "no_longer_probed": "no longer probed"}


def _seconds(ns: int | None) -> float | None:
    return None if ns is None else round(ns / 1e9, 6)


def _first_packet(ns: int | None) -> str:
    return "-" if ns is None else utc(ns / 1e9)


def changes_table(series: CaptureSeries, meta: dict[str, object]) -> str:
    return "\n".join(changes_table_lines(series, meta))


def changes_table_lines(series: CaptureSeries, meta: dict[str, object]) -> Iterator[str]:
    """The text, a line at a time: the captures, then each target's families per capture and its changes."""
    snaps = series.snapshots
    yield (f"# {len(snaps)} capture{'s' if len(snaps) != 1 else ''}, each analysed on its own: method "
           f"{meta['method']}, confidence {meta['confidence']}, signals {meta['signals']}")
    rows = [["CAPTURE", "FIRST PACKET", "PACKETS", "PROBES ANSWERED", "FILE"]]
    rows += [[str(n), _first_packet(s.start_ns), str(s.counts.get("packets", "-")),
              str(s.counts.get("probes_matched", "-")), s.name] for n, s in enumerate(snaps, 1)]
    yield from _aligned(rows)
    signals = meta["signals"] == "all"
    by_key = {key: rows for key, rows in series.families.groupby(["target", "protocol"], sort=False)}
    states = {key: dict(zip(rows["capture"], rows["state"]))
              for key, rows in series.states.groupby(["target", "protocol"], sort=False)}
    changes = {key: rows for key, rows in series.changes.groupby(["target", "protocol"], sort=False)}
    pairs = {key: rows for key, rows in series.pairs.groupby(["target", "protocol"], sort=False)}
    for key, state in states.items():
        yield ""
        yield f"{key[0]} ({key[1]})"
        fams = by_key.get(key, series.families.iloc[0:0])
        found = changes.get(key, series.changes.iloc[0:0])
        yield from _aligned(_family_rows(fams, state, _runs(state, found, pairs.get(key)), signals))
        yield from (line for kind, line in _LEGEND.items() if (fams["kind"] == kind).any())
        yield from _change_lines(found, fams, pairs.get(key))


def _runs(state: dict[int, str], found: pd.DataFrame, pairs: pd.DataFrame | None) -> list[list[int]]:
    """The captures as runs shown as one block: consecutive captures that hold the target, between which no
    change (nor anything that cannot be told) was found."""
    quiet = set() if pairs is None else {(b, a) for b, a in zip(pairs["before"], pairs["after"]) if a == b + 1}
    quiet -= set(zip(found["before"], found["after"]))
    runs: list[list[int]] = []
    for n in sorted(state):
        if runs and (runs[-1][-1], n) in quiet:
            runs[-1].append(n)
        else:
            runs.append([n])
    return runs


def _family_rows(fams: pd.DataFrame, state: dict[int, str], runs: list[list[int]], signals: bool) -> list[list[str]]:
    """The table of a target's families, a block per run of captures."""
    rows = [["CAPTURE", "FAMILY", "PORTS", "MEDIAN (us)"] + (["APART BY"] if signals else [])]
    of = {n: f for n, f in fams.groupby("capture")}
    for run in runs:
        label = str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"
        first = of.get(run[0])
        if state[run[0]] == "absent" or first is None:
            rows.append([label, "-", "(not probed in this capture)", "", *([""] if signals else [])])
            continue
        for f in first.itertuples(index=False):
            medians = [m for n in run for m in of[n].loc[(of[n]["kind"] == f.kind)
                                                        & (of[n]["ports"] == f.ports), "median_us"]]
            rows.append([label, _MARKS.get(f.kind, "{}").format(f.family), port_ranges(f.ports),
                         _median_range(medians), *([", ".join(f.signals) or "-"] if signals else [])])
            label = ""
    return rows


# The FAMILY column's text per kind of family row, and the line that explains each mark.
_MARKS = {"no answer": "{}*", "untestable": "-+"}
_LEGEND = {"no answer": "* no reply to any probe: the \"no answer\" family",
           "untestable": "+ answered, no family: RTT could not test them and no other signal placed them"}


def _median_range(medians: list[float]) -> str:
    values = [m for m in medians if not np.isnan(m)]
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return f"{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}-{hi:.2f}"


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _change_lines(found: pd.DataFrame, fams: pd.DataFrame, pairs: pd.DataFrame | None) -> Iterator[str]:
    """The changes of a target, a comparison at a time ("2 -> 3"), the captures it skipped named."""
    if pairs is None or not len(pairs):
        yield "one capture holds it: nothing to compare"
        return
    members = {(n, k, f): p for n, k, f, p in zip(fams["capture"], fams["kind"], fams["family"], fams["ports"])}
    by_pair = {key: rows for key, rows in found.groupby(["before", "after"], sort=False)}
    lines = []
    for before, after in zip(pairs["before"], pairs["after"]):
        rows = by_pair.get((before, after))
        texts = [_change_text(r, members) for r in ([] if rows is None else rows.to_dict("records"))]
        if after > before + 1:  # (the captures between do not hold the target: said, with what was found)
            texts = [f"({_captures(range(before + 1, after))}: not probed)"] + (texts or ["no change"])
        if texts:
            lines.append([f"{before} -> {after}", texts[0]])
            lines += [["", t] for t in texts[1:]]
    if not lines:
        yield f"no change across captures {pairs['before'].iat[0]}-{pairs['after'].iat[-1]}"
        return
    yield "changes:"
    yield from ("  " + line for line in _aligned(lines))


def _captures(numbers: range) -> str:
    return f"capture {numbers[0]}" if len(numbers) == 1 else f"captures {numbers[0]}-{numbers[-1]}"


def _change_text(r: dict, members: dict) -> str:
    """One change in words."""
    ports = port_ranges(r["ports"], most=10)
    change = r["change"]
    if change in FAMILY_CHANGES:
        was, now = int(r["before_family"]), int(r["after_family"])
        old = members.get((r["before"], "answered", was), ())
        new = members.get((r["after"], "answered", now), ())
        stayed = port_ranges(sorted(set(old) - set(r["ports"])), most=10)
        joined = port_ranges(sorted(set(new) - set(r["ports"])), most=10)
        if change == "moved":
            return f"moved: {ports} from family {was} (with {stayed}) to family {now} (with {joined})"
        if change == "split":
            return (f"split: {ports} from family {was} (with {stayed}) into a new family {now}"
                    + (f" (with {joined})" if joined else ""))
        return f"merged: {ports} of family {was}, gone, into family {now} (with {joined})"
    if change == "signal":
        return f"{r['signal']}: {r['was']} -> {r['now']} on {ports}"
    if change == "untestable":
        return f"cannot tell whether {ports} moved: no family in capture {r['capture']} (untestable)"
    return f"{_PORT_WORDS[change]}: {ports}"


# The JSON's change records: the columns of `CHANGE_COLUMNS` each change kind fills (besides change, ports).
_CHANGE_FIELDS = {"moved": ("before_family", "after_family"), "split": ("before_family", "after_family"),
                  "merged": ("before_family", "after_family"), "signal": ("signal", "was", "now"),
                  "untestable": ("capture",)}


def changes_json(series: CaptureSeries, meta: dict[str, object]) -> bytes:
    """The series as JSON (UTF-8; indented up to INDENT_UP_TO_ROWS family rows): docs/fleet.md describes it."""
    captures = [{"capture": n, "name": s.name, "first_packet": _seconds(s.start_ns), **s.counts,
                 "notes": list(s.notes), "warnings": list(s.warnings)} for n, s in enumerate(series.snapshots, 1)]
    families = {key: rows for key, rows in series.families.groupby(["target", "protocol"], sort=False)}
    changes = {key: rows for key, rows in series.changes.groupby(["target", "protocol", "before", "after"],
                                                                  sort=False)}
    pairs = {key: rows for key, rows in series.pairs.groupby(["target", "protocol"], sort=False)}
    targets = []
    for key, states in series.states.groupby(["target", "protocol"], sort=False):
        fams = families.get(key, series.families.iloc[0:0])
        per_capture = []
        for n, state in zip(states["capture"], states["state"]):
            mine = fams[fams["capture"] == n]
            per_capture.append({"capture": int(n), "state": state, "families": [
                {"family": int(f.family) if f.family >= 0 else None, "kind": f.kind, "ports": list(f.ports),
                 "median_us": None if np.isnan(f.median_us) else round(float(f.median_us), 2),
                 "signals": list(f.signals), "evidence": list(f.evidence)} for f in mine.itertuples(index=False)]})
        comparisons = []
        mine = pairs.get(key)
        for p in ([] if mine is None else mine.itertuples(index=False)):
            found = changes.get((*key, p.before, p.after), series.changes.iloc[0:0])
            comparisons.append({"before": int(p.before), "after": int(p.after), "changed": bool(p.changed),
                                "continued": [list(map(int, c)) for c in p.continued],
                                "changes": [_change_record(r) for r in found.to_dict("records")]})
        targets.append({"address": key[0], "protocol": key[1], "captures": per_capture, "comparisons": comparisons})
    document = {**meta, "captures": captures, "targets": targets}
    indent = orjson.OPT_INDENT_2 if len(series.families) <= INDENT_UP_TO_ROWS else 0
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY | indent, default=str)


def _change_record(r: dict) -> dict:
    out = {"change": r["change"], "ports": list(r["ports"])}
    for name in _CHANGE_FIELDS.get(r["change"], ()):
        value = r[name]
        out[name] = int(value) if isinstance(value, (int, np.integer)) else value
    return out


def changes_csv(series: CaptureSeries) -> str:
    """One row per change (`CHANGE_COLUMNS`, ports space-separated, the captures' names beside their numbers),
    and a row with change "none" for each comparison that found none."""
    by_pair: dict[tuple, list[dict]] = {}
    for r in series.changes.to_dict("records"):
        by_pair.setdefault((r["target"], r["protocol"], r["before"], r["after"]), []).append(r)
    names = {n: s.name for n, s in enumerate(series.snapshots, 1)}
    rows = []
    for key in zip(series.pairs["target"], series.pairs["protocol"], series.pairs["before"], series.pairs["after"]):
        found = by_pair.get(key) or [dict(zip(CHANGE_COLUMNS, (*key, "none", ())))]
        rows += [r | {"ports": " ".join(map(str, r["ports"])), "before_capture": names[key[2]],
                      "after_capture": names[key[3]]} for r in found]
    columns = CHANGE_COLUMNS[:4] + ["before_capture", "after_capture"] + CHANGE_COLUMNS[4:]
    return pd.DataFrame(rows, columns=columns, dtype=object).to_csv(index=False)  # (integers stay integers)
