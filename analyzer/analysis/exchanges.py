"""Which probes open an exchange: a scan's probes do; packets of a conversation already going do not.

`match` pairs every packet that asks for an answer with its answer. Not every such packet is a scanner's
probe: the capture may start in the middle of connections (their ACKs and FIN/ACKs come first), keep-alives
and their ACKs ride on idle sessions, hosts query broadcast and multicast groups and their neighbours answer.
A scan reads only the probes that open an exchange (`opens_exchange`):

=====================  ==================================================================================
a probe is not a        because
scanner's when …
=====================  ==================================================================================
its sender sent data    clients send requests; scanners, connect() scanners included, send none (a
on the 4-tuple          server's banner after a connect() scan's handshake does not count: servers speak
                        first)
it is not a SYN and     a segment inside a connection: data either way, the peer's own ACK or FIN (a
the 4-tuple carries     scan's target answers with RST or SYN/ACK only), or the sender's own SYN before
data, the peer's        it (the ACK that completes its handshake, the FIN or RST that ends it)
ACK/FIN, or the
sender's own SYN
its destination is a    a broadcast or multicast group is not a host to scan (IPv4 224/3, which holds
group                   255.255.255.255; IPv6 ff00::/8; but for TCP, an Ethernet group address)
it answers a group      a datagram from port p to (A, q) after A queried a group from port q on port p:
query                   NetBIOS, SSDP, mDNS, LLMNR and DHCP answers
=====================  ==================================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd

from ..protocols import ACK, FIN, RST, SYN
from .columns import column_codes, column_values, int_column, int_column_at, masked_parts
from .groups import first_rows, group_ids, hash_rows, hashed_in, rows_in

Columns = dict[str, np.ndarray]  # aligned integer columns: a table without pandas' per-frame costs

PACKET_KEYS = ("frame", "sport", "dport", "seq", "ack", "tcp_flags", "payload_len", "ip_proto")
_WIDE_KEYS = ("frame", "seq", "ack", "payload_len", "eth_dst")  # 32-bit fields (with -1 for missing) need int64
# The packets-table columns this module reads.
PACKET_FIELDS = ("frame", "ts_ns", "src", "dst", "eth_dst", "ip_proto", "sport", "dport", "tcp_flags", "seq", "ack",
                 "payload_len")


SCREEN_ROWS = 1 << 22  # marked rows past which `PacketKeys.screened` screens the packets table a slice at a time
_NS_MIN, _NS_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


def span(ts_ns: np.ndarray, before: int = 0, after: int = 0) -> tuple[int, int]:
    """(least - before, greatest + after) of nanosecond times, held within int64 (a damaged capture's times sit
    at its ends: no margin may wrap them around)."""
    return max(int(ts_ns.min()) - before, _NS_MIN), min(int(ts_ns.max()) + after, _NS_MAX)


def take(table: Columns, rows: np.ndarray, names: Iterable[str] | None = None) -> Columns:
    """The rows `rows` (a mask, or positions) of the table, or of its columns `names`. A mask of every row
    takes the columns themselves, not copies (no reader writes into a table's columns)."""
    names = table.keys() if names is None else names
    if rows.dtype == bool and rows.all():
        return {name: table[name] for name in names}
    return {name: table[name][rows] for name in names}


class PacketKeys:
    """The packets' columns the probe readings compare, as integers (-1 where missing), made only for the
    rows a reading takes (the packets with payload, the resets, the ACKs, the probes: rarely all of a
    capture's millions): in int32 where the values fit (address codes, 8- and 16-bit fields), int64 for
    frame numbers, MAC addresses and 32-bit fields."""

    NAMES = ("src", "dst") + PACKET_KEYS

    def __init__(self, packets: pd.DataFrame) -> None:
        self.packets = packets
        self.narrow = np.int32 if len(packets) < 2**31 else np.int64
        self.frame = packets["frame"].to_numpy()
        self._flags: np.ndarray | None = None
        self._proto: np.ndarray | None = None
        self._tcp_payload: np.ndarray | None = None

    def at(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Column `name` at `rows`."""
        column = self.packets[name]
        if name in ("src", "dst"):  # (a categorical's codes: a view, taken at the rows)
            categorical = isinstance(column.dtype, pd.CategoricalDtype)
            codes = column.cat.codes.to_numpy() if categorical else column_codes(column)[0]
            return codes[rows].astype(self.narrow)
        return int_column_at(column, rows, dtype=np.int64 if name in _WIDE_KEYS else self.narrow)

    def take(self, rows: np.ndarray, names: Iterable[str] | None = None) -> Columns:
        """Every key column (or those named) at `rows`."""
        return {name: self.at(name, rows) for name in (self.NAMES if names is None else names)}

    def marked(self, mask: np.ndarray) -> Iterator[np.ndarray]:
        """The rows `mask` marks: all at once, or (past `SCREEN_ROWS` of them) a slice of the table at a time."""
        if np.count_nonzero(mask) <= SCREEN_ROWS:
            yield np.flatnonzero(mask)
        else:
            yield from _slices(mask)

    def screened(self, mask: np.ndarray, names: Iterable[str], on: list[np.ndarray], by: Iterable[str] = ("src", "dst", "sport", "dport"),
                 distinct: bool = False) -> Columns:
        """Columns `names` at the rows `mask` marks, or (past `SCREEN_ROWS` of them) only at those whose `by`
        columns hold one of the combinations `on` does (a list of arrays, in `by`'s order), or one whose hash
        (`hash_rows`) is a combination's, screened a slice of the table at a time: a reading that compares a
        capture's packets with its probes needs no other rows, and a busy capture marks millions (every ACK
        of every connection) that are never all taken at once. The combinations are held as one sorted array
        of their hashes (8 bytes each, where a table of them would take several times that for millions of
        probes). The caller compares what it is given with `on` anyway: the screen changes no reading.
        `distinct`: the caller reads the rows as a set, so screened rows are given each combination of
        `names` once (in the order first seen)."""
        by, names = list(by), list(names)
        if np.count_nonzero(mask) <= SCREEN_ROWS:
            return self.take(np.flatnonzero(mask), names)
        wanted = np.sort(hash_rows(on))
        parts = []
        for rows in _slices(mask):
            part = self.take(rows[hashed_in(hash_rows([self.at(c, rows) for c in by]), wanted)], names)
            parts.append(_distinct(part) if distinct else part)
        joined = {name: np.concatenate([part[name] for part in parts]) for name in names}
        return _distinct(joined) if distinct else joined

    def flags(self) -> np.ndarray:
        """Every packet's TCP flags, 0 where none."""
        if self._flags is None:
            self._flags = int_column(self.packets["tcp_flags"], 0, self.narrow)
        return self._flags

    def proto(self) -> np.ndarray:
        """Every packet's IP protocol, -1 where none."""
        if self._proto is None:
            self._proto = int_column(self.packets["ip_proto"], -1, self.narrow)
        return self._proto

    def tcp_payload(self) -> np.ndarray:
        """Which packets are TCP segments with payload (made once: three readings of scans ask)."""
        if self._tcp_payload is None:
            p = self.packets
            self._tcp_payload = ((p["payload_len"] > 0).to_numpy(bool, na_value=False) & p["sport"].notna().to_numpy()
                                 & (self.proto() == 6))
        return self._tcp_payload


def other_protocol(ip_version: np.ndarray, proto: np.ndarray) -> np.ndarray:
    """IP packets of a protocol other than ICMP, TCP, UDP and ICMPv6 (`proto`: -1 where none): what an IP
    protocol scan sends, and whose packets have no ports."""
    return (ip_version > 0) & (proto >= 0) & (proto != 1) & (proto != 6) & (proto != 17) & (proto != 58)


def _slices(mask: np.ndarray) -> Iterator[np.ndarray]:
    """The rows `mask` marks, a slice of `SCREEN_ROWS` of the table at a time."""
    for start in range(0, len(mask), SCREEN_ROWS):
        yield np.flatnonzero(mask[start:start + SCREEN_ROWS]) + start


def _distinct(table: Columns) -> Columns:
    """Each row of the table once (in the order first seen)."""
    return take(table, first_rows(group_ids(*table.values())))


_TUPLE = ("src", "dst", "sport", "dport")
_REVERSED = ("dst", "src", "dport", "sport")


def reverse(tuples: list[np.ndarray]) -> list[np.ndarray]:
    """4-tuples (src, dst, sport, dport) seen the other way."""
    return [tuples[1], tuples[0], tuples[3], tuples[2]]


def both_ways(tuples: list[np.ndarray]) -> list[np.ndarray]:
    """4-tuples, then the same seen the other way."""
    return [np.concatenate([a, b]) for a, b in zip(tuples, reverse(tuples))]


def _bare_syn(flags: np.ndarray) -> np.ndarray:
    """SYN without ACK or RST (ECN's ECE and CWR allowed): a connection's first segment."""
    return (flags & (SYN | ACK | RST)) == SYN


def tcp_in_conversation(keys: PacketKeys, pk: Columns) -> np.ndarray:
    """Per probe: a TCP probe that belongs to a conversation rather than opening an exchange (see the module's
    table). pk: the probes' columns src, dst, sport, dport, flags and tcp (whether each is TCP)."""
    tcp = pk["tcp"]
    out = np.zeros(len(tcp), bool)
    if not tcp.any():
        return out
    mine = [pk[c] for c in _TUPLE]
    payload = keys.screened(keys.tcp_payload(), _TUPLE, both_ways([m[tcp] for m in mine]), distinct=True)
    if len(payload["src"]):
        out = rows_in(mine, [payload[c] for c in _TUPLE]) & tcp  # its sender sent data on the 4-tuple
    later = np.flatnonzero(tcp & ~_bare_syn(pk["flags"]) & ~out)  # (few in a SYN scan: none)
    if not len(later):
        return out
    at = [m[later] for m in mine]
    flags = keys.flags()
    tcp_rows = keys.proto() == 6
    talking = keys.screened(tcp_rows & ((flags & (SYN | RST)) == 0) & ((flags & (ACK | FIN)) != 0), _TUPLE,
                            reverse(at), distinct=True)
    syns = keys.screened(tcp_rows & _bare_syn(flags), _TUPLE, at, distinct=True)
    inside = np.zeros(len(later), bool)
    if len(payload["src"]):  # data the other way
        inside |= rows_in(at, [payload[c] for c in _REVERSED])
    if len(talking["src"]):  # the peer's own ACK or FIN
        inside |= rows_in(at, [talking[c] for c in _REVERSED])
    if len(syns["src"]):  # the sender's own SYN: its handshake's ACK, its FIN or RST
        inside |= rows_in(at, [syns[c] for c in _TUPLE])
    out[later] = inside
    return out


def _group_address(addresses: np.ndarray) -> np.ndarray:
    """Which address texts are group addresses: IPv4 multicast or reserved (224/3, which holds
    255.255.255.255), IPv6 multicast (ff00::/8)."""
    text = pd.Series(addresses, dtype=object).astype(str)
    v6 = text.str.contains(":", regex=False).to_numpy(bool)
    first = pd.to_numeric(text.str.split(".", n=1).str[0], errors="coerce").to_numpy(float)
    return np.where(v6, text.str.lower().str.startswith("ff").to_numpy(bool), first >= 224)


def to_group(keys: PacketKeys, rows: np.ndarray, tcp: np.ndarray | None = None) -> np.ndarray:
    """Which packets at `rows` go to a group: a group IP destination, or (but for the rows `tcp` marks: a TCP
    stack sends no segment to a link's broadcast, and a big scan's SYNs need no look at their MACs) an Ethernet
    group address (the I/G bit: broadcast and multicast, subnet-directed broadcasts included)."""
    out = np.zeros(len(rows), bool)
    other = np.arange(len(rows)) if tcp is None else np.flatnonzero(~tcp)
    if len(other):
        values, absent = masked_parts(keys.packets["eth_dst"])  # (the I/G bit of the raw 48-bit values)
        out[other] = ((values[rows[other]] >> 40) & 1).astype(bool)
        if absent is not None:
            out[other] &= ~absent[rows[other]]
    dst = keys.at("dst", rows)
    names = column_values(keys.packets["dst"])
    if len(names):
        group = _group_address(names)
        if group.any():
            out |= (dst >= 0) & np.append(group, False)[dst]  # (code -1: the appended False)
    return out


def answers_group_query(keys: PacketKeys, pk: Columns) -> np.ndarray:
    """Per probe: a UDP datagram from port p to (A, q) sent after A sent a datagram from port q to a group on
    port p (a NetBIOS name query to the broadcast address, an SSDP M-SEARCH, an mDNS or LLMNR query, a DHCP
    discover): an answer to that query, not a probe."""
    udp = pk["udp"]
    out = np.zeros(len(udp), bool)
    if not udp.any():
        return out
    rows = np.flatnonzero(keys.proto() == 17)
    queries = rows[to_group(keys, rows)]
    if not len(queries):
        return out
    q = keys.take(queries, ("src", "sport", "dport"))
    u = np.flatnonzero(udp)
    # (querier, its port, the port asked) of the queries, then of the datagrams' destinations and sources
    key = group_ids(np.concatenate([q["src"], pk["dst"][u]]), np.concatenate([q["sport"], pk["dport"][u]]),
                    np.concatenate([q["dport"], pk["sport"][u]]))
    first_query = np.full(int(key.max()) + 1, np.iinfo(np.int64).max)
    np.minimum.at(first_query, key[:len(queries)], keys.packets["ts_ns"].to_numpy()[queries])
    out[u] = pk["ts_ns"][u] >= first_query[key[len(queries):]]
    return out
