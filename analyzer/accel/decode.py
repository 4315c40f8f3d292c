"""The dominant layout decoded at once: Ethernet II / IPv4 without options / TCP, straight into the packets table.

Most records of a scan share that layout. Before the reader's general layers run on a chunk,
`tcp4` takes the records whose bytes prove it, with every header and option captured and inside the IP
length: for those every field sits at a fixed offset and every bounds check of the layers is known to pass,
so the values are the layers' values. It returns which records it took; the layers decode the rest (another
link, VLAN, IPv6, IP options, fragments, a header cut short, ...).

Compiled (_reader.c's tcp4, `_compiled_tcp4`) where it was built: one pass, any option layout parsed as the
layers' `_tcp_options` parses it. The numpy reference (`_numpy_tcp4`) gathers the first 54 bytes of every
Ethernet record at once (one copy per record, read as the fields of `_ETH_IP4_TCP`), and matches TCP options
against the option layouts (`_option_layout`) of the first records: the option parser's path depends only on
the kind and length bytes it reads, so a record with the same bytes there parses the same way, and its values
are read from the same positions; a rare layout is left to the layers. tests/test_edge_captures.py decodes
fuzzed records each way and by the layers alone, and compares the tables.
"""

from __future__ import annotations

from types import ModuleType
from typing import Protocol

import numpy as np

from .. import accel
from ..protocols import ETH_IPV4, LINKTYPE_ETHERNET, OPTION_FIELDS


class Records(Protocol):
    """A chunk of a capture's records, as the reader indexes them: where each lies in `data`, how much of it was
    captured, and on which link."""

    data: np.ndarray
    offset: np.ndarray
    caplen: np.ndarray
    linktype: np.ndarray

    def __len__(self) -> int: ...


class ColumnSink(Protocol):
    """The packets table's columns as the decoder fills them: rows `target` of column `name` hold `values`."""

    keep: frozenset[str]  # the columns asked for

    def put(self, name: str, target: np.ndarray | slice, values: np.ndarray | int) -> None: ...
    def arrays(self, name: str) -> tuple[np.ndarray | None, np.ndarray | None]: ...
    def made(self, name: str) -> tuple[np.ndarray | None, np.ndarray | None]: ...


class AddressSink(Protocol):
    """The address columns as the decoder fills them: rows `target` of column `name` hold these IPv4 addresses."""

    def put4(self, name: str, target: np.ndarray | slice, values: np.ndarray) -> None: ...


def tcp4(rec: Records, base: int, out: ColumnSink, addr: AddressSink) -> np.ndarray:
    """Decode the records (table rows base, base + 1, ...) of the dominant layout into `out` and `addr`;
    return which records it decoded."""
    reader = accel.COMPILED.reader
    if reader is not None:
        return _compiled_tcp4(reader, rec, base, out, addr)
    return _numpy_tcp4(rec, base, out, addr)


# The dominant layout, declared as data: Ethernet II, IPv4 without options (IHL 5), TCP fixed header. The
# MAC addresses are read as the 8 bytes from their start (fields may overlap), the top 48 bits kept.
_ETH_IP4_TCP = np.dtype({
    "names": ["eth_dst", "eth_src", "ethertype", "vihl", "ip_len", "ip_id", "frag", "ttl", "ip_proto", "src",
              "dst", "sport", "dport", "seq", "ack", "off_flags", "window"],
    "formats": [">u8", ">u8", ">u2", "u1", ">u2", ">u2", ">u2", "u1", "u1", ">u4", ">u4", ">u2", ">u2", ">u4", ">u4",
                ">u2", ">u2"],
    "offsets": [0, 6, 12, 14, 16, 18, 20, 22, 23, 26, 30, 34, 36, 38, 42, 46, 48],
    "itemsize": 54,
})


_TCP_AT = 34  # the TCP header's offset in that layout


_OPTION_COLUMNS = frozenset(["tcp_options"] + [f[0] for f in OPTION_FIELDS])


_LAYOUTS_PER_SIZE = 8  # option layouts tried per TCP header size and chunk; rarer ones take the general path


def _numpy_tcp4(rec: Records, base: int, out: ColumnSink, addr: AddressSink) -> np.ndarray:
    """Decode the records of the dominant layout at once; return which records it decoded.

    A record qualifies when it is Ethernet II carrying IPv4 with IHL 5, unfragmented (offset 0), TCP, with
    a data offset of at least 20 whose options lie inside both the captured bytes and the IP length, and
    options laid out as one of the layouts found in the chunk (`_option_layout`). Then every field sits at
    a fixed offset, and every bounds check of the general layers holds: caplen >= 34 + data offset and IP
    length >= 20 + data offset. So one gather of 54 bytes per record (`_ETH_IP4_TCP`) gives every field,
    with the values and presence the general layers would give, and such a record is never malformed.
    Everything else (VLAN, other links, IP options, IPv6, fragments, truncation, ICMP, ...) is left to
    the general layers (`_layers`).
    """
    data = rec.data
    n = len(rec)
    fast = np.zeros(n, bool)
    cand = np.flatnonzero((rec.linktype == LINKTYPE_ETHERNET) & (rec.caplen >= _ETH_IP4_TCP.itemsize))
    if not len(cand):
        return fast
    # A 54-byte record starting at every byte of the buffer (stride 1): one gather copies each candidate's
    # headers (as opaque bytes, which numpy copies whole; then viewed as fields).
    size = _ETH_IP4_TCP.itemsize
    view = np.ndarray((len(data) - size + 1,), f"V{size}", buffer=data, strides=(1,))
    h = view[rec.offset[cand]].view(_ETH_IP4_TCP)
    doff = (h["off_flags"] >> 12) * np.uint16(4)  # 0 … 60: uint16 arithmetic below cannot wrap
    ip_len = h["ip_len"]
    ok = ((h["ethertype"] == ETH_IPV4) & (h["vihl"] == 0x45) & (h["ip_proto"] == 6) & ((h["frag"] & 0x1FFF) == 0)
          & (doff >= 20) & (ip_len >= doff + np.uint16(20)) & (rec.caplen[cand] >= doff + np.uint16(_TCP_AT)))
    if _OPTION_COLUMNS & out.keep:
        ok &= _fast_options(data, rec.offset[cand] + _TCP_AT + 20, doff, ok, out, cand + base)
    if not ok.all():
        cand, h, doff, ip_len = cand[ok], h[ok], doff[ok], ip_len[ok]
    fast[cand] = True
    target = slice(base, base + n) if len(cand) == n else cand + base

    for name in ("eth_dst", "eth_src"):
        if name in out.keep:
            out.put(name, target, h[name] >> np.uint64(16))
    for name, value in (("ethertype", ETH_IPV4), ("ip_version", 4), ("ip_proto", 6)):
        out.put(name, target, value)
    for name in ("ip_len", "ip_id", "ttl", "sport", "dport", "seq", "ack", "window"):
        out.put(name, target, h[name])
    out.put("fragment", target, (h["frag"] & 0x2000) != 0)  # offset 0: fragmented only when more follow
    out.put("tcp_flags", target, h["off_flags"] & 0x1FF)
    out.put("payload_len", target, ip_len - (doff + np.uint16(20)))
    addr.put4("src", target, h["src"])
    addr.put4("dst", target, h["dst"])
    return fast


# The columns _reader.c's tcp4 writes, in its order (_reader.c names them in an enum).
COLUMNS = ("eth_dst", "eth_src", "ethertype", "ip_version", "ip_proto", "ip_len", "ip_id", "ttl", "fragment",
                "sport", "dport", "seq", "ack", "tcp_flags", "window", "payload_len",
                "tcp_options", "mss", "wscale", "tsval", "tsecr")


def _compiled_tcp4(reader: ModuleType, rec: Records, base: int, out: ColumnSink, addr: AddressSink) -> np.ndarray:
    """`_numpy_tcp4` in one compiled pass (_reader.c's tcp4): the same records, the same values, written
    straight into the table's columns. It parses every option layout, so it takes the records of the
    dominant layout that `_numpy_tcp4` leaves to the layers for a rare layout; the layers would give them
    the same values (the option parse is `_tcp_options`'s, which the tests compare)."""
    n = len(rec)
    fast = np.zeros(n, bool)
    ethernet = rec.linktype == LINKTYPE_ETHERNET
    if not ethernet.any():
        return fast
    whole = bool(ethernet.all())  # (a classic pcap's records share one link type)
    cand = slice(0, n) if whole else np.flatnonzero(ethernet)
    rows = np.arange(base, base + n) if whole else cand + base
    k = len(rows)
    src, dst, hit = np.empty(k, np.uint32), np.empty(k, np.uint32), np.empty(k, np.uint8)
    offset, caplen = np.ascontiguousarray(rec.offset[cand]), np.ascontiguousarray(rec.caplen[cand])
    wanted = sum(1 << i for i, name in enumerate(COLUMNS) if name in out.keep)
    missing = 0
    while True:  # (twice at most: columns are made only once a record holds a value for them, as `put` does)
        for i, name in enumerate(COLUMNS):
            if missing >> i & 1:
                out.arrays(name)
        columns = tuple(a for name in COLUMNS for a in out.made(name))
        decoded, missing = reader.tcp4(rec.data, offset, caplen, rows, columns, wanted, src, dst, hit)
        if not missing:
            break
    hit = hit.view(bool)
    if decoded == k:
        addr.put4("src", slice(base, base + n) if whole else rows, src)
        addr.put4("dst", slice(base, base + n) if whole else rows, dst)
        fast[cand] = True
    elif decoded:
        addr.put4("src", rows[hit], src[hit])
        addr.put4("dst", rows[hit], dst[hit])
        fast[rows[hit] - base] = True
    return fast


def _fast_options(data: np.ndarray, start: np.ndarray, doff: np.ndarray, ok: np.ndarray, out: ColumnSink,
                  target: np.ndarray) -> np.ndarray:
    """TCP options of the rows `ok` (options at `start`, all captured) laid out as a layout seen in the
    chunk: decode those; return which rows are decoded (rows without options always are)."""
    done = ~ok | (doff == 20)
    has_options = ok & (doff > 20)
    sizes = np.bincount(np.where(has_options, doff >> 2, 0).astype(np.intp), minlength=16)
    for size in (np.flatnonzero(sizes[6:]) * 4 + 24).tolist():
        rows = np.flatnonzero(has_options & (doff == size))
        width = size - 20
        view = np.ndarray((len(data) - width + 1,), f"V{width}", buffer=data, strides=(1,))
        opts = view[start[rows]].view(np.uint8).reshape(len(rows), width)
        words = opts.view(np.uint32)  # compared four bytes at a time (data offsets are multiples of 4)
        todo = np.arange(len(rows))
        for _ in range(_LAYOUTS_PER_SIZE):
            if not len(todo):
                break
            first = opts[todo[0]]
            steer, kinds, fields = _option_layout(first.tobytes())
            mask = np.zeros(width, np.uint8)
            mask[steer] = 0xFF
            mask_words, pattern = mask.view(np.uint32), (first & mask).view(np.uint32)
            candidates = words if len(todo) == len(rows) else words[todo]
            match = ((candidates & mask_words) == pattern).all(axis=1)
            hit = todo[match]
            todo = todo[~match]
            dest = target[rows[hit]]
            out.put("tcp_options", dest, kinds)
            for name, at, vsize in fields:
                field = np.ndarray((len(opts),), f">u{vsize}", buffer=opts, offset=at, strides=(width,))
                out.put(name, dest, field[hit])
            done[rows[hit]] = True
    return done


def _option_layout(opts: bytes) -> tuple[list[int], int, list[tuple[str, int, int]]]:
    """How `_tcp_options` parses these option bytes (all captured, the whole option space, at least one
    byte): the positions whose bytes steer the parse (kinds and lengths), the tcp_options value (present:
    the first kind is always recorded), and where each option value
    the table holds lies (column, offset, size; a later option overrides an earlier one).

    The parse reads nothing else, so options with the same bytes at those positions parse the same way.
    A length byte just past the option space is not steering: that option cannot fit, whatever it says.
    """
    steer: list[int] = []
    kinds = count = cur = 0
    fields: dict[str, tuple[int, int]] = {}
    while cur < len(opts):
        kind = opts[cur]
        steer.append(cur)
        if count < 8:
            kinds, count = (kinds << 8) | kind, count + 1
        if kind in (0, 1):
            if kind == 0:
                break
            cur += 1
            continue
        if cur + 1 >= len(opts):
            break
        length = opts[cur + 1]
        steer.append(cur + 1)
        if length < 2 or cur + length > len(opts):
            break
        for name, k, size, off, vsize in OPTION_FIELDS:
            if kind == k and length == size:
                fields[name] = (cur + off, vsize)
        cur += length
    aligned = kinds << ((8 - count) * 8) if count else 0
    return steer, aligned, [(name, at, vsize) for name, (at, vsize) in fields.items()]
