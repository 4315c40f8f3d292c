"""Packets a batch at a time → the rows `scans` and `hosts` read, and what `hosts` counts of the others.

`scans` reads a capture's probes and replies, and reads the rest of its packets only as sets: which 4-tuples
carried data, which talked, which sent the ACK or RST that follows a SYN (analysis/exchanges.py, scans.py).
On a sensor's capture most packets are the segments of connections already open, and most of those add
nothing to any such set. `Screen` takes the packets in merged order, as `ChunkedMatch` lets them go (each
probe among them already given out), keeps every row a reading of `scans` could take, and lets the others go,
counting for `hosts` what it counts of them (`Tallies`: per sender, its packets, TTLs and MACs). `scans` and
`hosts` of the rows kept, with the tallies, are those of the whole capture.

A row is let go when it is one of (the others are all kept: probes, replies, SYNs, RSTs, ICMP, ARP, …)

=============================  ==================================================================================
rows                           unless
=============================  ==================================================================================
TCP segments without SYN or    the first of their 4-tuple in the batch (a 4-tuple that talks, `tcp_in_conversation`),
RST, with ACK or FIN; and      or the first SYN (the sender's own SYN), or the first with data (it carries data; its
SYNs without ACK that are no   first frame: `_connections`), or the first whose seq is a SYN's + 1 on its 4-tuple
probe (a SYN sent again)       (the ACK or reset that follows a SYN: `_scanner_followups`) or whose ack is a
                               SYN/ACK's + 1 the other way (the handshake's last ACK: `_connects`)
UDP datagrams                  none: a datagram that is no probe is read by no reading
either, when                   a probe (`ChunkedMatch` gave it out), sent to a group (`to_group`: NetBIOS, SSDP, …
                               queries), or between two hosts one of which sent the other an IP protocol other than
                               ICMP, TCP and UDP (an IP protocol scan reads all their packets)
=============================  ==================================================================================

Of the packets let go, those that send a probe again (a 64-bit hash of their addresses and `sent_identity` is
that of a probe given out with more than one transmission) are tallied apart: `hosts` reads the TTL a tool
wrote in each transmission of its probes as the tool's, not its host's, and learns which senders' scans name a
tool only once the scans are read.

Each "first" is per batch, so a set that holds a combination holds it whatever the batches. The SYNs are
remembered across batches by a 64-bit hash of (4-tuple, seq + 1): a collision keeps a row more, never one less.
What a batch cannot show: an ACK that comes a batch before the SYN it follows (the capture's clock stepped back
across the batches, which `ChunkedMatch` refuses beyond a reply window), and packets between two hosts before
the first IP protocol other than ICMP, TCP and UDP between them, a batch earlier, in an IP protocol scan's
figures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..protocols import ACK, FIN, RST, SYN
from ..reading.merge import in_frame_order
from .columns import int_column, int_column_at
from .exchanges import PacketKeys, other_protocol, to_group
from .groups import first_rows, group_ids, hash_rows, hashed_in
from .match import IDENTITY_FIELDS, PROBE_IDENTITY_FIELDS, probe_identity, sent_identity

# The packets-table columns the screen reads.
PACKET_FIELDS = tuple(dict.fromkeys(("frame", "src", "dst", "eth_src", "eth_dst", "ip_version", "ip_proto", "sport",
                                    "dport", "tcp_flags", "seq", "ack", "payload_len", "ttl", *IDENTITY_FIELDS)))
# The probes-table columns the screen reads.
PROBE_FIELDS = ("probe_frame", "src", "dst", "transmissions", *PROBE_IDENTITY_FIELDS)
Tally = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # (sender, value, rows, first frame)
_COMPACT = 32  # tallies held before they are added up into one
_FILTER_BITS = (16, 24)  # a hash set's filter: 2^16 flags at first, at most 2^24 (`_Hashes`)


def tally(sender: np.ndarray, values: np.ndarray, frames: np.ndarray) -> Tally:
    """The distinct (sender, value) pairs of the rows that hold a value (>= 0): sender, value, rows, first frame
    (rows in frame order)."""
    present = values >= 0
    sender, values, frames = sender[present], values[present], frames[present]
    if not len(sender):
        return sender.astype(np.int64), values.astype(np.int64), np.zeros(0, np.int64), frames.astype(np.int64)
    ids = group_ids(sender, values)
    first = first_rows(ids)
    return sender[first].astype(np.int64), values[first].astype(np.int64), np.bincount(ids), frames[first]


_EMPTY: Tally = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))


def source_macs(eth_src: pd.Series, rows: np.ndarray) -> np.ndarray:
    """The source MACs at `rows` as `hosts` reads them: 48-bit integers, -1 where absent or all zero (loopback
    and cooked captures carry no address, not Xerox's 00:00:00:00:00:00)."""
    eth = int_column_at(eth_src, rows, dtype=np.int64)
    eth[eth == 0] = -1
    return eth


def added(tallies: list[Tally]) -> Tally:
    """Tallies as one: each (sender, value) once, its rows added up and its first frame the least."""
    sender, values, rows, first = (np.concatenate(parts) for parts in zip(*tallies))
    if not len(sender):
        return sender, values, rows, first
    ids = group_ids(sender, values)
    one = first_rows(ids)
    earliest = np.full(len(one), np.iinfo(np.int64).max)
    np.minimum.at(earliest, ids, first)
    return sender[one], values[one], np.bincount(ids, weights=rows).astype(np.int64), earliest


@dataclass(frozen=True)
class Tallies:
    """What `hosts` counts of the packets the screen let go, per sender (ids into `names`, address texts):
    packets, the (sender, TTL) and (sender, source MAC) tallies (`tally`), and apart, the (sender, TTL) tally of
    the packets that send a probe again (`again`: a tool's, where the sender's scan names a tool)."""

    names: np.ndarray
    packets: np.ndarray
    ttl: Tally
    mac: Tally
    again: Tally


def merged(parts: list[Tallies]) -> Tallies:
    """Tallies of several screens (each its own address ids) as one, by address."""
    names = np.unique(np.concatenate([np.zeros(0, str), *(p.names for p in parts)]))
    packets = np.zeros(len(names), np.int64)
    held: tuple[list[Tally], list[Tally], list[Tally]] = ([], [], [])
    for p in parts:
        to = np.searchsorted(names, p.names)
        np.add.at(packets, to[:len(p.packets)], p.packets)
        for into, t in zip(held, (p.ttl, p.mac, p.again)):
            into.append((to[t[0]], *t[1:]))
    return Tallies(names, packets, *(added(h) if h else _EMPTY for h in held))


class _Hashes:
    """A set of uint64 hashes, held as a few sorted runs (each new run merged into the last while not smaller),
    and a filter: a flag per value of the hashes' top bits, set where a hash held has them, with at least 8
    flags a hash held (up to 2^24). Most hashes asked about (an ACK's, where a SYN's are sought) find their
    flag unset and take no search of the runs; a flag set is no answer, only a search's reason."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []
        self.filter = np.zeros(1 << _FILTER_BITS[0], bool)

    def add(self, values: np.ndarray) -> None:
        run = np.unique(values)
        held = len(run) + sum(len(r) for r in self.runs)
        if held * 8 > len(self.filter) and len(self.filter) < 1 << _FILTER_BITS[1]:
            bits = min(max(int(held * 8 - 1).bit_length(), _FILTER_BITS[0]), _FILTER_BITS[1])
            self.filter = np.zeros(1 << bits, bool)
            for r in self.runs:
                self.filter[self._slots(r)] = True
        self.filter[self._slots(run)] = True
        while self.runs and len(self.runs[-1]) <= 2 * len(run):
            run = np.union1d(self.runs.pop(), run)
        self.runs.append(run)

    def has(self, values: np.ndarray) -> np.ndarray:
        out = np.zeros(len(values), bool)
        maybe = np.flatnonzero(self.filter[self._slots(values)])
        if len(maybe):
            # Sorted once, for every run (`hashed_in` would sort them again for each run past IN_ORDER).
            maybe = maybe[np.argsort(values[maybe])]
            asked, found = values[maybe], np.zeros(len(maybe), bool)
            for run in self.runs:
                found |= hashed_in(asked, run, ascending=True)
            out[maybe] = found
        return out

    def _slots(self, values: np.ndarray) -> np.ndarray:
        """The filter's flag of each hash: its top bits."""
        return values >> np.uint64(64 - (len(self.filter).bit_length() - 1))


def _pair(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The two address ids, either way round, as one number."""
    return np.minimum(src, dst) * (1 << 32) + np.maximum(src, dst)


def odd_pairs(t: pd.DataFrame) -> pd.DataFrame:
    """The (src, dst) address pairs of a table's packets of an IP protocol other than ICMP, TCP and UDP, once
    each (what another screen of the capture's other packets must know: `Screen.knowing`)."""
    odd = other_protocol(t["ip_version"].to_numpy(), int_column(t["ip_proto"]))
    return t.loc[odd, ["src", "dst"]].astype(str).drop_duplicates().reset_index(drop=True)


@dataclass(frozen=True)
class _Keys:
    """A batch's columns the screen compares, as integers (address ids across batches)."""

    src: np.ndarray
    dst: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    seq: np.ndarray
    ack: np.ndarray
    flags: np.ndarray  # -1 where none
    tcp: np.ndarray  # TCP segments with ports and flags
    udp: np.ndarray  # UDP datagrams with ports
    syn: np.ndarray  # TCP segments with SYN
    talks: np.ndarray  # TCP segments without SYN or RST, with ACK or FIN
    bare_syn: np.ndarray  # TCP segments with SYN, without ACK or RST
    odd: np.ndarray  # IP packets of a protocol other than ICMP, TCP, UDP, ICMPv6
    pair: np.ndarray  # the two addresses, either way round

    @classmethod
    def of(cls, t: pd.DataFrame, ids: Callable[[pd.Series], np.ndarray]) -> _Keys:
        proto, flags = int_column(t["ip_proto"]), int_column(t["tcp_flags"])
        ports = t["sport"].notna().to_numpy()
        tcp = (proto == 6) & (flags >= 0) & ports
        src, dst = ids(t["src"]), ids(t["dst"])
        return cls(src, dst, int_column(t["sport"], 0), int_column(t["dport"], 0), int_column(t["seq"], 0),
                   int_column(t["ack"], 0), flags, tcp, (proto == 17) & ports, tcp & ((flags & SYN) != 0),
                   tcp & ((flags & (SYN | RST)) == 0) & ((flags & (ACK | FIN)) != 0),
                   tcp & ((flags & (SYN | ACK | RST)) == SYN),
                   other_protocol(t["ip_version"].to_numpy(), proto), _pair(src, dst))

    def tuple4(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        return self.src[rows], self.dst[rows], self.sport[rows], self.dport[rows]

    def reversed4(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        return self.dst[rows], self.src[rows], self.dport[rows], self.sport[rows]


class Screen:
    """The rows kept of the packets given (`add`, in merged order; `given` the probes first), of the columns
    named, and the tallies of the others (`finish`)."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = list(dict.fromkeys(("frame", *columns)))
        self.names = pd.Index([], dtype=object)  # address texts, by id
        self.syns = _Hashes()  # (4-tuple, seq + 1) of every SYN and SYN/ACK
        self.again = _Hashes()  # (addresses, `probe_identity`) of the probes sent more than once
        self.odd: set[int] = set()  # pairs of address ids that carried an IP protocol other than ICMP, TCP, UDP
        self.probes = np.zeros(0, np.int64)  # frames of probes given out whose packets have not come yet
        self.kept: list[pd.DataFrame] = []
        self.packets = np.zeros(0, np.int64)
        self.ttl: list[Tally] = []
        self.mac: list[Tally] = []
        self.again_ttl: list[Tally] = []

    def given(self, probes: pd.DataFrame) -> None:
        """Probes given out (their packets come later, or came in this batch)."""
        self.probes = np.concatenate([self.probes, probes["probe_frame"].to_numpy(np.int64)])
        again = probes[probes["transmissions"].to_numpy() > 1]
        if len(again):
            self.again.add(hash_rows([self._ids(again["src"]), self._ids(again["dst"]), *probe_identity(again)]))

    def knowing(self, pairs: pd.DataFrame) -> None:
        """Address pairs (src, dst texts: `odd_pairs`) that carried an IP protocol other than ICMP, TCP and UDP in
        packets this screen is not given (another shard's)."""
        if len(pairs):
            self.odd.update(np.unique(_pair(self._text_ids(pairs["src"]), self._text_ids(pairs["dst"]))).tolist())

    def _text_ids(self, texts: pd.Index | pd.Series) -> np.ndarray:
        """The address ids of address texts (new ones added)."""
        at = self.names.get_indexer(texts)
        if (at < 0).any():
            self.names = self.names.append(pd.Index(pd.unique(np.asarray(texts, object)[at < 0]), dtype=object))
            at = self.names.get_indexer(texts)
        return at

    def _ids(self, column: pd.Series) -> np.ndarray:
        """The address ids of a categorical column (-1 where absent)."""
        return np.append(self._text_ids(column.cat.categories), -1)[column.cat.codes.to_numpy()]

    def add(self, t: pd.DataFrame) -> None:
        """The next packets (in frame order)."""
        if not len(t):
            return
        frame = t["frame"].to_numpy()
        probe = np.isin(frame, self.probes)
        if probe.any():
            self.probes = self.probes[~np.isin(self.probes, frame[probe])]
        k = _Keys.of(t, self._ids)
        if k.syn.any():
            self.syns.add(hash_rows([*k.tuple4(k.syn), (k.seq[k.syn] + 1) % (1 << 32)]))
        self.odd.update(np.unique(k.pair[k.odd]).tolist())
        gone = self._let_go(t, k, probe)
        self.kept.append(t.loc[~gone, self.columns].reset_index(drop=True) if gone.any() else t[self.columns])
        if gone.any():
            self._tally(t, k, gone, frame)

    def _let_go(self, t: pd.DataFrame, k: _Keys, probe: np.ndarray) -> np.ndarray:
        """Which packets no reading of `scans` takes (the module's table)."""
        gone = (k.talks | k.bare_syn | k.udp) & ~probe
        if self.odd:
            gone &= ~np.isin(k.pair, np.fromiter(self.odd, np.int64, len(self.odd)))
        rows = np.flatnonzero(gone)
        gone[rows[to_group(PacketKeys(t), rows)]] = False
        d = np.flatnonzero(gone & k.tcp)
        if not len(d):
            return gone
        tuple4 = group_ids(*k.tuple4(d))
        acks = d[(k.flags[d] & (RST | SYN | ACK)) == ACK]
        follows, last = np.zeros(len(t), bool), np.zeros(len(t), bool)
        follows[acks] = self.syns.has(hash_rows([*k.tuple4(acks), k.seq[acks]]))
        last[acks] = self.syns.has(hash_rows([*k.reversed4(acks), k.ack[acks]]))
        data = t["payload_len"].to_numpy(np.int64, na_value=0) > 0
        # The first of each 4-tuple that talks, that sends a SYN again, that carries data; the first of each
        # (4-tuple, seq) that follows a SYN, and of each (4-tuple, ack) that acknowledges a SYN/ACK.
        for chosen, number in ((k.talks, None), (k.bare_syn, None), (data, None), (follows, k.seq), (last, k.ack)):
            at = np.flatnonzero(chosen[d])
            ids = group_ids(tuple4[at]) if number is None else group_ids(tuple4[at], number[d[at]])
            gone[d[at[first_rows(ids)]]] = False
        return gone

    def _tally(self, t: pd.DataFrame, k: _Keys, gone: np.ndarray, frame: np.ndarray) -> None:
        rows = np.flatnonzero(gone)
        count = np.bincount(k.src[rows], minlength=len(self.names))
        self.packets = np.pad(self.packets, (0, len(count) - len(self.packets))) + count
        self.mac.append(tally(k.src[rows], source_macs(t["eth_src"], rows), frame[rows]))
        again = np.zeros(len(rows), bool)
        if self.again.runs:
            again = self.again.has(hash_rows([k.src[rows], k.dst[rows], *sent_identity(t, rows)]))
        for held, part in ((self.ttl, rows[~again]), (self.again_ttl, rows[again])):
            held.append(tally(k.src[part], int_column_at(t["ttl"], part), frame[part]))
        for held in (self.ttl, self.mac, self.again_ttl):
            if len(held) > _COMPACT:
                held[:] = [added(held)]

    def finish(self) -> tuple[pd.DataFrame | None, Tallies]:
        """The rows kept, in frame order (None: none), and the tallies of the others."""
        parts = [t for t in self.kept if len(t)]
        self.kept.clear()
        table = in_frame_order(parts, consume=True) if parts else None
        tallies = Tallies(self.names.to_numpy(str) if len(self.names) else np.zeros(0, str), self.packets,
                          *(added(held) if held else _EMPTY for held in (self.ttl, self.mac, self.again_ttl)))
        return table, tallies
