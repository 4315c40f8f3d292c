"""Packets tables a chunk at a time → the probes table, in memory bounded by the traffic of a few reply windows,
the same table `match` makes of the whole capture.

The chunks (`reading/stream.py`: records in merged order, numbered) are gathered into a *context*, and each time
it has grown by as many rows as it held, it is matched whole (`match.match_detail`). Of what that finds, the
probe groups whose first transmission is before a *cut* are final, and given out:

- the cut is 3 windows before the context's latest packet, and earlier than any group still sending (its last
  transmission less than 3 windows before the latest packet: a retransmission, or a reply, may still come);
- a group, its retransmissions and replies all lie in the context, with 2 windows of traffic before the group's
  first transmission: one window to tell a group's start from a retransmission and to find every transmission a
  reply could answer, one more to tell whether those datagrams are probes or replies (a UDP reply follows a
  datagram the other way within the window);
- answers no probe claims are counted by their time in the same ranges (each once).

The context then lets go of the packets more than 2 windows before the cut. What they said about TCP connections
(a SYN/ACK opens one, a RST closes it: a segment inside one is no probe, whatever came before) is carried as
state (`match.Connections`): the last event on each 4-tuple.

The chunks must come in time order within a window: a packet more than a window older than the context's latest
(a capture whose clock stepped back) could belong to what was given out. That raises `Disordered`, and the
caller matches the capture whole (`pipeline.analyze` reads it again).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..reading.merge import concat_tables
from ..reading.schema import empty_packets
from .columns import int_column_at
from .match import (
    DEFAULT_WINDOW_S,
    PROBE_COLUMNS,
    Connections,
    answering,
    connection_events,
    match,
    match_columns,
    match_detail,
    own_addresses,
    tcp_segments,
)

_KEYS = {"exact": ["a", "b", "x", "y"], "loose": ["b", "x", "y"]}


class Disordered(Exception):
    """A packet came more than a reply window earlier than packets already matched: the capture must be matched
    whole."""


class Matched(NamedTuple):
    """Probes given out: their rows of the probes table, and the packets that answered them (the columns
    asked for), or None."""

    probes: pd.DataFrame
    replies: pd.DataFrame | None


class ChunkedMatch:
    """Matches the packets tables it is fed (`feed`, then `finish`), giving out `Matched` parts whose
    concatenation is `match(whole)` (with `columns`), and counting `unsolicited_replies` and `nat_pairs` as
    `match` does. `reply_columns`: packets columns of the replies to give out beside the probes (signals read
    them), or None. `rows`: the least number of new rows a round waits for. `passing`: packets columns of every
    packet to give out (`passed`) once the context lets it go, when each of its probes has been given out (the
    rows `scans` reads are screened from them: analysis/screen.py), or None."""

    def __init__(self, *, window_s: float = DEFAULT_WINDOW_S, columns: Iterable[str] | None = None,
                 reply_columns: Iterable[str] | None = None, rows: int = 1 << 16,
                 passing: Iterable[str] | None = None):
        self.window_s = window_s
        self.w = int(window_s * 1e9)
        self.columns = tuple(c for c in PROBE_COLUMNS if columns is None or c in set(columns))
        self.reply_columns = None if reply_columns is None else tuple(dict.fromkeys(("frame", *reply_columns)))
        self.wanted = set(self.columns) | {"ts_ns", "probe_frame"} | ({"reply_frame"} if reply_columns else set())
        self.rows = rows
        self.passing = None if passing is None else tuple(dict.fromkeys(("frame", *passing)))
        self._passed: list[pd.DataFrame] = []
        self.context: pd.DataFrame | None = None
        self.pending: list[pd.DataFrame] = []
        self.pending_rows = 0
        self.cut: int | None = None  # groups first sent before it are given out (None: none yet)
        self.latest: int | None = None  # the latest packet's time when the cut was last moved
        self.ids: dict[str, int] = {}
        self.connections = {k: pd.DataFrame({c: np.zeros(0, np.int64) for c in v} | {"open": np.zeros(0, np.int8)})
                            for k, v in _KEYS.items()}
        self.unsolicited_replies = 0
        self.nat_pairs = 0

    def packet_columns(self) -> tuple[str, ...]:
        """The packets columns the chunks must hold."""
        return tuple(dict.fromkeys((*match_columns(self.columns), *(self.reply_columns or ()), *(self.passing or ()))))

    def passed(self) -> list[pd.DataFrame]:
        """The packets let go since last asked (`passing` columns, in frame order within each table): every probe
        among them is in a part given out already."""
        out, self._passed = self._passed, []
        return out

    def feed(self, chunk: pd.DataFrame) -> Iterator[Matched]:
        """Take a chunk (the next packets, in merged order); give out what became final."""
        if not len(chunk):
            return
        if self.latest is not None and int(chunk["ts_ns"].min()) <= self.latest - self.w:
            raise Disordered
        self.pending.append(chunk)
        self.pending_rows += len(chunk)
        if self.pending_rows >= max(self.rows, 0 if self.context is None else len(self.context)):
            yield from self._round(final=False)

    def finish(self) -> Iterator[Matched]:
        """Give out the rest."""
        yield from self._round(final=True)

    def parts(self, chunks: Iterable[pd.DataFrame]) -> Iterator[Matched]:
        """Every chunk fed, then the rest: all the parts."""
        for chunk in chunks:
            yield from self.feed(chunk)
            del chunk  # (held by the context now: not by this loop as the next chunk is read)
        yield from self.finish()

    def _round(self, *, final: bool) -> Iterator[Matched]:
        tables = ([self.context] if self.context is not None else []) + self.pending
        self.pending, self.pending_rows = [], 0
        if not tables:
            return
        context = concat_tables(tables) if len(tables) > 1 else tables[0].reset_index(drop=True)
        ts = context["ts_ns"].to_numpy()
        latest = int(ts.max())
        ids = np.array([self.ids.setdefault(a, len(self.ids)) for a in context["src"].cat.categories], np.int64)
        carried = Connections(self.connections["exact"], self.connections["loose"], ids)
        probes, detail = match_detail(context, self.window_s, self.wanted, carried)
        first = probes["ts_ns"].to_numpy()
        if final:
            cut = np.iinfo(np.int64).max
        else:
            cut = latest - 3 * self.w
            sending = detail.last_ns > cut
            if sending.any():
                cut = min(cut, int(first[sending].min()))
        start = np.iinfo(np.int64).min if self.cut is None else self.cut
        if cut > start:
            mine = (first >= start) & (first < cut)
            out = own_addresses(probes[mine].reset_index(drop=True))
            self.unsolicited_replies += int(((detail.answer_ns >= start) & (detail.answer_ns < cut)
                                             & ~detail.claimed).sum())
            self.nat_pairs += int(((detail.nat_ns >= start) & (detail.nat_ns < cut)).sum())
            replies = None
            if self.reply_columns is not None:
                replies = context.loc[answering(context, out), list(self.reply_columns)].reset_index(drop=True)
            if len(out) or (replies is not None and len(replies)):
                yield Matched(out[list(self.columns)], replies)
            self.cut, self.latest = cut, latest
        if final:
            if self.passing is not None:
                self._passed.append(context[list(self.passing)])
            self.context = None
            return
        gone = ts < (self.cut if self.cut is not None else np.iinfo(np.int64).min) - 2 * self.w
        if gone.any():
            if self.passing is not None:
                self._passed.append(context.loc[gone, list(self.passing)].reset_index(drop=True))
            self._carry(context, np.flatnonzero(gone), ids)
            context = context[~gone].reset_index(drop=True)
        self.context = context

    def _carry(self, context: pd.DataFrame, gone: np.ndarray, ids: np.ndarray) -> None:
        """The connections' state after the packets let go (the context's rows `gone`), for the segments that
        come later. (The columns read, at those rows: not every column of the table.)"""
        sport, flags = context["sport"].array[gone], context["tcp_flags"].array[gone]
        tcp = tcp_segments(int_column_at(context["ip_proto"], gone, 0, np.int16), context["fragment"].to_numpy(bool)[gone],
                           ~sport.isna(), ~flags.isna())
        if not tcp.any():
            return
        rows = gone[tcp]
        ev = connection_events(np.ones(len(rows), bool), flags[tcp].to_numpy(np.int64),
                               ids[context["src"].cat.codes.to_numpy()[rows]], ids[context["dst"].cat.codes.to_numpy()[rows]],
                               sport[tcp].to_numpy(np.int64), int_column_at(context["dport"], rows),
                               context["ts_ns"].to_numpy()[rows])
        for kind, keys in _KEYS.items():
            both = pd.concat([self.connections[kind], ev[[*keys, "open"]]], ignore_index=True)
            self.connections[kind] = both.drop_duplicates(keys, keep="last").reset_index(drop=True)


def match_chunks(chunks: Iterable[pd.DataFrame], *, window_s: float = DEFAULT_WINDOW_S,
                 columns: Iterable[str] | None = None, rows: int = 1 << 16) -> pd.DataFrame:
    """`match` of the packets tables `chunks` (consecutive, in merged order) as if they were one table."""
    m = ChunkedMatch(window_s=window_s, columns=columns, rows=rows)
    return joined([part.probes for part in m.parts(chunks)], m)


SLICE_ROWS = 1 << 22  # rows of a big packets table matched at a time (`match_in_slices`)
SLICED_ABOVE = 1 << 24  # rows of a packets table above which it is matched in slices


def match_in_slices(packets: pd.DataFrame, *, window_s: float = DEFAULT_WINDOW_S,
                    columns: Iterable[str] | None = None, rows: int | None = None,
                    above: int | None = None) -> pd.DataFrame:
    """`match` of a whole packets table; above `above` rows, fed to a `ChunkedMatch` a slice of `rows` at a
    time: the same table, with the temporaries of a slice and a few reply windows' packets instead of the
    whole's, which take as much again as the table. (Below, whole: slices match the windows at their edges
    twice, which costs a scan that probes each port again and again from one source port a fifth more time.)
    Matched whole where the capture's clock steps back too far for slices. (rows, above: None for
    `SLICE_ROWS`, `SLICED_ABOVE`.)"""
    rows = SLICE_ROWS if rows is None else rows
    if len(packets) <= (SLICED_ABOVE if above is None else above):
        return match(packets, window_s=window_s, columns=columns)
    try:
        return match_chunks((packets.iloc[i:i + rows] for i in range(0, len(packets), rows)), window_s=window_s,
                            columns=columns, rows=rows)
    except Disordered:
        return match(packets, window_s=window_s, columns=columns)


def joined(parts: list[pd.DataFrame], m: ChunkedMatch) -> pd.DataFrame:
    """The probes table of the parts a `ChunkedMatch` gave out."""
    if len(parts) > 1:
        # Column by column, each let go of the parts once joined; each address column with its own categories
        # (the addresses it holds), as match gives them.
        out = concat_tables(parts, consume=True)
        for c in {"src", "dst"} & set(out.columns):
            out[c] = out[c].cat.remove_unused_categories()
    elif parts:
        out = parts[0]
    else:
        out = match(empty_packets(), window_s=m.window_s, columns=m.columns)
    out.attrs.update(unsolicited_replies=m.unsolicited_replies, window_s=m.window_s, nat_pairs=m.nat_pairs)
    return out
