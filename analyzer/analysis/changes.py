"""A series of captures of the same targets → each target's families per capture, and what changed between them.

A fleet of sensors runs synlens-agent against the same targets every hour; each capture is a measurement of its
own (analysed alone: `pipeline.analyze_each`, never pooled with the next), and the question is what changed
from one to the next. Each capture's result is a `Snapshot` (its families and its per-port signals); `changes`
compares, per target and protocol, each capture with the next one that holds the target.

Family numbers are not stable between captures (they are numbered by speed), so families are matched by their
ports (`continuation`):

placed ports
    of a target in two captures: the ports in an answered family in both. Ports no family holds (RTT could not
    test them and no other signal placed them) and ports with no reply are left out: they are said otherwise.
continuation
    the earlier capture's answered families and the later one's, each cut down to the placed ports, are paired
    greedily by overlap: the pair sharing the most ports first (ties: the pair with fewer ports outside their
    overlap, then the lower earlier family number, then the lower later one), each family paired at most once,
    only pairs that share a port. A later family paired with an earlier one *continues* it.
a family change
    every placed port whose later family does not continue its earlier family; such ports are grouped by
    (earlier family, later family) and each group is one change:

    - ``moved``: both families are paired, each with another: the ports left a family whose continuation they
      are not in (its other members did not move with them) for a family that continues another one;
    - ``split``: the later family continues none (it is new): the ports split off into a new family;
    - ``merged``: the earlier family has no continuation: its ports joined a family that continues another.

    An unpaired earlier family and an unpaired later one never share a port (the greedy pairing would have
    paired them), so these three cover every placed port that changed family.

The other changes, per port: ``appeared`` (answers now, was probed and answered nothing before),
``went_silent`` (answered before, probed and answers nothing now), ``newly_probed`` / ``no_longer_probed``
(the ports probed differ), and ``signal``: a port's trusted TTL, SYN/ACK stack (window and option layout) or RST
behaviour changed (`PORT_SIGNALS`).

What cannot be told is said, not guessed: a capture that does not hold the target (state ``absent``: the
target's next comparison skips it), a capture where the target answered but RTT could not test it and no
other signal placed its ports (state ``untestable``: no family to compare), and ports placed in one capture but
not in the other (``untestable``, with the capture: whether they moved cannot be told).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .families import family_medians
from .signals import SIGNALS

# One row per change between two captures of a target; `ports` a tuple. `before`/`after`: the captures
# compared (numbered from 1, in capture order); `capture`: the capture an "untestable" row is about.
CHANGE_COLUMNS = ["target", "protocol", "before", "after", "change", "ports", "before_family", "after_family",
                  "signal", "was", "now", "capture"]
# What each change means, in the order outputs give them: family changes first, then ports, then signals,
# then what cannot be told.
CHANGES = {
    "moved": "left their family, whose other members stayed, for another family that existed before",
    "split": "split off their family into a new family",
    "merged": "their family is gone: they joined a family that existed before",
    "appeared": "answer now; answered no probe before",
    "went_silent": "answered before; answer no probe now",
    "newly_probed": "probed now, not before",
    "no_longer_probed": "probed before, not now",
    "signal": "a trusted TTL, SYN/ACK stack or RST behaviour changed",
    "untestable": "no family in one of the captures (RTT could not test them, no other signal placed them): "
                  "whether they moved cannot be told",
}
FAMILY_CHANGES = ("moved", "split", "merged")
CANNOT_TELL = ("untestable",)
# A target's state in one capture.
STATES = {
    "tested": "families found",
    "untestable": "answered, but RTT could not test it and no other signal placed its ports: no family",
    "silent": "probed, no port answered",
    "absent": "not probed in this capture",
}
FAMILY_COLUMNS = ["capture", "target", "protocol", "family", "kind", "ports", "median_us", "signals", "evidence"]


@dataclass(frozen=True)
class PortSignal:
    """A signal of a port's replies compared between captures: the columns of the ports table that make its
    value, when a port's value can be trusted (column-wise), and its value as text."""

    name: str
    columns: tuple[str, ...]
    trusted: Callable[[pd.DataFrame], np.ndarray]
    text: Callable[[dict], object]


def _ttl_trusted(ports: pd.DataFrame) -> np.ndarray:
    # The families' own rule (analysis/signals.py), over the ports table: its replies are the port's `received`.
    rule = next(s for s in SIGNALS if s.name == "ttl").trusted
    return rule(ports.assign(replies=ports["received"])).to_numpy(bool)


def _most_common_trusted(column: str) -> Callable[[pd.DataFrame], np.ndarray]:
    """A value that is the most common of a port's replies, trusted where it has one and the port two replies or
    more (the ports table keeps no count of the replies agreeing with it, as it does for the TTL)."""
    return lambda ports: (ports[column].notna() & (ports["received"] >= 2)).to_numpy(bool)


PORT_SIGNALS = (
    PortSignal("ttl", ("ttl",), _ttl_trusted, lambda v: int(v["ttl"])),
    PortSignal("stack", ("window", "options"), _most_common_trusted("options"),
               lambda v: f"window {int(v['window'])} [{v['options']}]"),
    PortSignal("rst", ("rst",), _most_common_trusted("rst"), lambda v: str(v["rst"])),
)


@dataclass(frozen=True)
class Snapshot:
    """One capture's result, as `changes` compares it. `families`: one row per (target, protocol, family):
    family (-1 for the row of ports no family holds), kind ("answered", "no answer", "untestable"), ports (a
    tuple), median_us (the family's RTT median, `family_medians`), signals and evidence (tuples: what set it
    apart, from `signal_families`; empty for RTT alone). `ports`: per port, its family, replies (`received`) and
    the signals of `PORT_SIGNALS` (absent for RTT alone). `counts`: packets, malformed_packets, probes_matched,
    unsolicited_replies."""

    name: str
    families: pd.DataFrame
    ports: pd.DataFrame
    start_ns: int | None = None  # the capture's first packet (ns since 1970)
    counts: Mapping[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @classmethod
    def of(cls, analysis: object, start_ns: int | None = None) -> Snapshot:
        """The snapshot of a pipeline `Analysis` that ran `signals` or `families`."""
        signals = getattr(analysis, "signals", None)
        ports, table = signals if signals is not None else (getattr(analysis, "families", None), None)
        if ports is None:
            raise ValueError("an analysis with the signals or families step")
        counts = {"packets": analysis.packet_count, "malformed_packets": analysis.malformed,
                  "probes_matched": analysis.probes_matched, "unsolicited_replies": analysis.unsolicited_replies}
        return snapshot(analysis.capture, ports, table, start_ns=start_ns, counts=counts, notes=analysis.notes,
                        warnings=analysis.warnings)


def snapshot(name: str, ports: pd.DataFrame, family_table: pd.DataFrame | None = None, *,
             start_ns: int | None = None, counts: Mapping[str, int] | None = None, notes: tuple[str, ...] = (),
             warnings: tuple[str, ...] = ()) -> Snapshot:
    """A capture's `Snapshot` from its ports table (`analyzer.families`, or the ports of
    `analyzer.signal_families`) and, for the latter, its family table (with the evidence)."""
    signal_columns = [c for s in PORT_SIGNALS for c in (*s.columns, "ttl_agree") if c in ports.columns]
    keep = list(dict.fromkeys(["target", "protocol", "port", "family", "family_kind", "received", *signal_columns]))
    return Snapshot(name, family_rows(ports, family_table), ports[keep].reset_index(drop=True), start_ns,
                    dict(counts or {}), tuple(notes), tuple(warnings))


def family_rows(ports: pd.DataFrame, family_table: pd.DataFrame | None = None) -> pd.DataFrame:
    """One capture's families, one row per (target, protocol, family), in the ports table's target order: its
    answered families by number, its "no answer" family, then (family -1, kind "untestable") the ports that
    answered but no family holds. From the family table with evidence when given, else from the ports' RTT
    families."""
    medians = family_medians(ports)
    rows = []
    if family_table is not None:
        for f in family_table.itertuples(index=False):
            rows.append((f.target, f.protocol, int(f.family), f.kind, tuple(int(p) for p in f.ports),
                         tuple(f.signals), tuple(f.evidence)))
    else:
        placed = ports[ports["family"] >= 0]
        grouped = placed.groupby(["target", "protocol", "family"], sort=False)
        for (target, protocol, family), members in grouped[["port", "family_kind"]]:
            kind = "no answer" if members["family_kind"].iat[0] == "no answer" else "answered"
            rows.append((target, protocol, int(family), kind, _port_tuple(members["port"]), (), ()))
    unplaced = ports[(ports["family"] < 0) & (ports["received"] > 0)]
    for (target, protocol), members in unplaced.groupby(["target", "protocol"], sort=False)["port"]:
        rows.append((target, protocol, -1, "untestable", _port_tuple(members), (), ()))
    out = pd.DataFrame(rows, columns=["target", "protocol", "family", "kind", "ports", "signals", "evidence"])
    out["median_us"] = [medians.get((t, p, f), np.nan) if k == "answered" else np.nan
                        for t, p, f, k in zip(out["target"], out["protocol"], out["family"], out["kind"])]
    order = {key: i for i, key in enumerate(dict.fromkeys(zip(ports["target"], ports["protocol"])))}
    rank = {"answered": 0, "no answer": 1, "untestable": 2}
    at = sorted(range(len(out)), key=lambda i: (order[out["target"].iat[i], out["protocol"].iat[i]],
                                                rank[out["kind"].iat[i]], out["family"].iat[i]))
    return out.iloc[at].reset_index(drop=True)[FAMILY_COLUMNS[1:]]


def _port_tuple(ports: pd.Series) -> tuple[int, ...]:
    return tuple(sorted(ports.astype(int).tolist()))


@dataclass(frozen=True)
class _View:
    """One target (and protocol) in one capture: its answered families, its ports by what they did, and the
    trusted value of each port signal per port."""

    families: dict[int, frozenset[int]]
    probed: frozenset[int]
    answered: frozenset[int]
    unplaced: frozenset[int]
    signals: dict[str, dict[int, object]]

    @property
    def state(self) -> str:
        if not self.answered:
            return "silent"
        return "tested" if self.families else "untestable"


def _views(snap: Snapshot) -> dict[tuple[str, str], _View]:
    """Each (target, protocol) of a snapshot as the comparison reads it."""
    fams: dict[tuple[str, str], dict[int, frozenset[int]]] = {}
    unplaced: dict[tuple[str, str], frozenset[int]] = {}
    for f in snap.families.itertuples(index=False):
        key = (str(f.target), str(f.protocol))
        if f.kind == "answered":
            fams.setdefault(key, {})[int(f.family)] = frozenset(f.ports)
        elif f.kind == "untestable":
            unplaced[key] = frozenset(f.ports)
    ports = snap.ports
    present = [s for s in PORT_SIGNALS if all(c in ports.columns for c in s.columns)]
    trusted = {s.name: s.trusted(ports) for s in present}
    records = ports.to_dict("records")
    rows_of: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(zip(ports["target"].astype(str), ports["protocol"].astype(str))):
        rows_of.setdefault(key, []).append(i)
    out: dict[tuple[str, str], _View] = {}
    for key, rows in rows_of.items():
        port = {i: int(records[i]["port"]) for i in rows}
        values = {s.name: {port[i]: s.text(records[i]) for i in rows if trusted[s.name][i]} for s in present}
        out[key] = _View(fams.get(key, {}), frozenset(port.values()),
                         frozenset(port[i] for i in rows if records[i]["received"] > 0),
                         unplaced.get(key, frozenset()), values)
    return out


def continuation(before: Mapping[int, Iterable[int]], after: Mapping[int, Iterable[int]]) -> dict[int, int]:
    """Which later family continues which earlier one (earlier family → later family): the families, as sets of
    ports, paired greedily by overlap (see the module: the most shared ports first; ties by fewer ports outside
    the overlap, then by the earlier family's number, then the later one's), each at most once, only families
    that share a port."""
    a = {f: set(p) for f, p in before.items()}
    b = {f: set(p) for f, p in after.items()}
    pairs = sorted(((len(a[i] & b[j]), len(a[i] ^ b[j]), i, j) for i in a for j in b if a[i] & b[j]),
                   key=lambda t: (-t[0], t[1], t[2], t[3]))
    out: dict[int, int] = {}
    taken: set[int] = set()
    for _, _, i, j in pairs:
        if i not in out and j not in taken:
            out[i] = j
            taken.add(j)
    return out


def family_changes(before: Mapping[int, Iterable[int]], after: Mapping[int, Iterable[int]]
                   ) -> tuple[dict[int, int], list[tuple[str, tuple[int, ...], int, int]]]:
    """The continuation of two captures' families over their placed ports (those in a family in both), and the
    family changes (module docstring): (change, ports, earlier family, later family), in the order of the
    earlier family, then the later one."""
    placed = set().union(*map(set, before.values())) & set().union(*map(set, after.values())) \
        if before and after else set()
    a = {f: frozenset(p) & placed for f, p in before.items()}
    b = {f: frozenset(p) & placed for f, p in after.items()}
    a = {f: p for f, p in a.items() if p}
    b = {f: p for f, p in b.items() if p}
    continues = continuation(a, b)
    paired_after = set(continues.values())
    found = []
    for i, j in itertools.product(sorted(a), sorted(b)):
        ports = a[i] & b[j]
        if not ports or continues.get(i) == j:
            continue
        kind = "merged" if i not in continues else "split" if j not in paired_after else "moved"
        found.append((kind, tuple(sorted(ports)), i, j))
    return continues, found


def _compare(key: tuple[str, str], before: int, after: int, a: _View, b: _View) -> tuple[dict[int, int], list[dict]]:
    """The continuation and the change rows of one target between two captures that both hold it."""
    rows: list[dict] = []

    def add(change: str, ports: Iterable[int], **more: object) -> None:
        ports = tuple(sorted(ports))
        if ports:
            rows.append(dict(target=key[0], protocol=key[1], before=before, after=after, change=change, ports=ports,
                             **more))

    continues, moves = family_changes(a.families, b.families)
    for kind, ports, i, j in moves:
        add(kind, ports, before_family=i, after_family=j)
    add("appeared", (b.answered - a.answered) & a.probed)
    add("went_silent", (a.answered - b.answered) & b.probed)
    add("newly_probed", b.probed - a.probed)
    add("no_longer_probed", a.probed - b.probed)
    for signal in PORT_SIGNALS:
        was, now = a.signals.get(signal.name, {}), b.signals.get(signal.name, {})
        differ: dict[tuple[object, object], list[int]] = {}
        for port in sorted(set(was) & set(now)):
            if was[port] != now[port]:
                differ.setdefault((was[port], now[port]), []).append(port)
        for (old, new), ports in differ.items():
            add("signal", ports, signal=signal.name, was=old, now=new)
    # Ports placed in one capture only, that answered in both: whether they moved cannot be told.
    placed_a, placed_b = (frozenset().union(*v.families.values()) for v in (a, b))
    both = a.answered & b.answered
    for capture, view, other in ((before, a, placed_b), (after, b, placed_a)):
        add("untestable", view.unplaced & other & both, capture=capture)
    return continues, rows


def _snapshot(item: object) -> Snapshot:
    if isinstance(item, Snapshot):
        return item
    if isinstance(item, tuple):  # (a file of reading/sources.py and its analysis)
        source, analysis = item
        return Snapshot.of(analysis, source.first_ns)
    return Snapshot.of(item)


@dataclass(frozen=True)
class CaptureSeries:
    """Each target's families per capture and what changed between them (see the module). Captures are numbered
    from 1 in capture order. `families`: `FAMILY_COLUMNS` (every capture's `Snapshot.families`, with its number);
    `states`: target, protocol, capture, state (`STATES`) for every target in every capture; `pairs`: target,
    protocol, before, after (the captures compared: consecutive among those that hold the target), continued
    (tuple of (earlier family, later family)), changed (a change other than "untestable" was found);
    `changes`: `CHANGE_COLUMNS`, one row per change (`CHANGES`)."""

    snapshots: tuple[Snapshot, ...]
    families: pd.DataFrame
    states: pd.DataFrame
    pairs: pd.DataFrame
    changes: pd.DataFrame


def changes(snapshots: Iterable[Snapshot | object]) -> CaptureSeries:
    """Compare a series of captures, in capture order: `Snapshot`s, pipeline `Analysis`es of `signals` or
    `families`, or the (file, analysis) pairs `pipeline.analyze_each` yields. Per target and protocol, each
    capture that holds it is compared with the next one that does."""
    snaps = tuple(_snapshot(s) for s in snapshots)
    views = [_views(s) for s in snaps]
    keys = list(dict.fromkeys(k for v in views for k in v))
    states, pairs, rows = [], [], []
    for key in keys:
        held = [n for n, v in enumerate(views, 1) if key in v]
        for n, v in enumerate(views, 1):
            states.append((*key, n, v[key].state if key in v else "absent"))
        for before, after in itertools.pairwise(held):
            continues, found = _compare(key, before, after, views[before - 1][key], views[after - 1][key])
            pairs.append((*key, before, after, tuple(sorted(continues.items())),
                          any(r["change"] not in CANNOT_TELL for r in found)))
            rows += found
    order = {name: i for i, name in enumerate(CHANGES)}
    table = pd.DataFrame(rows, columns=CHANGE_COLUMNS)
    for name in ("signal", "was", "now"):  # (None where missing; a TTL stays an integer beside texts)
        table[name] = pd.Series([r.get(name) for r in rows], index=table.index, dtype=object)
    if len(table):  # (within a comparison: in the order of CHANGES, then as found)
        key_rank = table[["target", "protocol"]].apply(tuple, axis=1).map({k: i for i, k in enumerate(keys)})
        table = table.assign(_k=key_rank, _c=table["change"].map(order), _n=np.arange(len(table)))
        table = table.sort_values(["_k", "before", "_c", "_n"], kind="stable").drop(columns=["_k", "_c", "_n"])
    table = table.astype({c: "Int64" for c in ("before_family", "after_family", "capture")}).reset_index(drop=True)
    families = pd.concat([s.families.assign(capture=n) for n, s in enumerate(snaps, 1)], ignore_index=True) \
        if snaps else pd.DataFrame(columns=FAMILY_COLUMNS)
    return CaptureSeries(snaps, families[FAMILY_COLUMNS],
                         pd.DataFrame(states, columns=["target", "protocol", "capture", "state"]),
                         pd.DataFrame(pairs, columns=["target", "protocol", "before", "after", "continued", "changed"]),
                         table)
