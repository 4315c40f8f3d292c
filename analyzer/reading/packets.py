"""Records → the packets table: every header field decoded for all packets at once, as numpy columns.

Each layer is a vectorised step over the rows that have it: link header → (VLAN tags) → IPv4/IPv6 (with
IPv6 extension headers) → TCP (with options) / UDP / ICMP / ICMPv6 (with the header an ICMP error quotes).
Every byte read is bounds-checked against the record's captured length: a field that lies beyond it is
absent (NA), never read from the next record. Rows whose IP or TCP header is inconsistent are kept with
what could be decoded, and counted in ``attrs["malformed"]``.

Fast path: most records of a scan share one layout, Ethernet II / IPv4 without options / TCP. Before the
layers run on a chunk, accel/decode.py takes the records whose bytes prove that layout (compiled where it was
built) and decodes them at once, with the values the layers would give; the layers decode the rest.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from ..accel.decode import tcp4 as decode_tcp4
from ..errors import CaptureError, NotEnoughMemory
from ..protocols import (
    ETH_ARP,
    ETH_IPV4,
    ETH_IPV6,
    ICMP4_ERRORS,
    ICMP4_QUERIES,
    ICMP6_ERRORS,
    ICMP6_QUERIES,
    IPV6_AH,
    IPV6_EXT,
    IPV6_FRAG,
    LINKTYPE_ETHERNET,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_SLL,
    LINKTYPE_SLL2,
    OPTION_FIELDS,
    RAW_LINKTYPES,
    VLAN_TPIDS,
)
from .formats import Records, read_records
from .schema import empty_packets, frame_from_columns


class _Bytes:
    """Bounds-checked big-endian gathers from the capture buffer for a subset of rows."""

    def __init__(self, data: np.ndarray, end: np.ndarray) -> None:
        self.data = data
        self.end = end  # per row: one past the last captured byte
        # Big-endian views starting at every byte (overlapping, stride 1): one gather reads a field.
        self.views = {1: data}
        for size, fmt in ((2, ">u2"), (4, ">u4")):
            if len(data) >= size:
                self.views[size] = np.ndarray((len(data) - size + 1,), fmt, buffer=data, strides=(1,))
        self._rows: np.ndarray | None = None
        self._rows_end: np.ndarray | None = None

    def release(self) -> None:
        """Drop the references to the capture buffer (decoding is over)."""
        self.data = self.views = self.end = self._rows = self._rows_end = None  # type: ignore[assignment]

    def _end(self, rows: np.ndarray) -> np.ndarray:
        if rows is not self._rows:  # layers call with the same rows many times in a row
            self._rows, self._rows_end = rows, self.end[rows]
        return self._rows_end  # type: ignore[return-value]

    def ok(self, rows: np.ndarray, pos: np.ndarray, size: int) -> np.ndarray:
        return (pos >= 0) & (pos + size <= self._end(rows))

    def u(self, rows: np.ndarray, pos: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        good = self.ok(rows, pos, size)
        everywhere = good.all()  # the usual case: no position to neutralise, no value to clear
        safe = pos if everywhere else np.where(good, pos, 0)
        if size in self.views:
            value = self.views[size][safe].astype(np.uint64)
        elif size == 6 and 4 in self.views:
            value = (self.views[4][safe].astype(np.uint64) << np.uint64(16)) | self.views[2][safe + 4]
        else:
            value = np.zeros(len(rows), np.uint64)
            for i in range(size):
                value = (value << np.uint64(8)) | self.data[safe + i].astype(np.uint64)
        if not everywhere:
            value[~good] = 0
        return value, good


class _Columns:
    """Output arrays, all rows, each in its schema dtype, with absence masks for the nullable ones (the
    mask pandas keeps: True where a row has no value)."""

    def __init__(self, n: int, keep: frozenset[str]) -> None:
        from .schema import PACKET_DTYPES

        self.n = n
        self.keep = keep  # columns asked for: the others are decoded (layers read them) but not stored
        self.rows = np.zeros(0, np.int64)  # table row of each row the layers see (they set relative rows)
        self.span: slice | None = None  # those table rows, when they are consecutive
        self.dtypes = PACKET_DTYPES
        self.values: dict[str, np.ndarray] = {}
        self.absent: dict[str, np.ndarray] = {}

    def _dtype(self, name: str) -> np.dtype:
        dtype = self.dtypes[name]
        return np.dtype(dtype.lower()) if dtype[0] == "U" else np.dtype(dtype)

    def set(self, name: str, rows: np.ndarray, values: np.ndarray, good: np.ndarray | None = None) -> None:
        """Layer rows `rows` (where `good`) hold `values`."""
        if name not in self.keep:
            return
        if good is None or good.all():
            # Layer rows are ascending and distinct: as many as there are rows means all of them.
            every = self.span is not None and len(rows) == len(self.rows)
            self.put(name, self.span if every else self.rows[rows], values)
        else:
            self.put(name, self.rows[rows[good]], values[good])

    def put(self, name: str, target: np.ndarray | slice, values: np.ndarray | int) -> None:
        """Table rows `target` hold `values`."""
        column, absent = self.arrays(name)
        if column is None:
            return
        column[target] = values
        if absent is not None:
            absent[target] = False

    def arrays(self, name: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Column `name`'s values and absence mask (None when not nullable) to write into; (None, None) when
        the column is not kept."""
        if name not in self.keep:
            return None, None
        if name not in self.values:
            self.values[name] = np.zeros(self.n, self._dtype(name))
            if self.dtypes[name][0] == "U":
                self.absent[name] = np.ones(self.n, bool)
        return self.values[name], self.absent.get(name)

    def made(self, name: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Column `name`'s values and absence mask if some row has put a value in it, else (None, None)."""
        return self.values.get(name), self.absent.get(name)

    def pop(self, name: str) -> np.ndarray | pd.arrays.IntegerArray:
        """Column `name` in its schema dtype; the decoder lets go of it. A column no row holds, and the
        mask of a column every row holds, take no memory: one value repeated (a read-only, zero-stride
        view; pandas copies before it writes)."""
        values = self.values.pop(name, None)
        nullable = self.dtypes[name][0] == "U"
        if values is None:
            values = _repeated(0, self._dtype(name), self.n)
            absent = _repeated(True, bool, self.n) if nullable else None
        else:
            absent = self.absent.pop(name, None)
            if absent is not None and not absent.any():
                absent = _repeated(False, bool, self.n)
        return values if absent is None else pd.arrays.IntegerArray(values, absent)


def _repeated(value: object, dtype: np.dtype | type, n: int) -> np.ndarray:
    """n copies of one value in the memory of one (np.broadcast_to: stride 0, read-only)."""
    return np.broadcast_to(np.array(value, dtype), (n,))


def read(path: str | os.PathLike[str], *, engine: str = "native", columns: Iterable[str] | None = None,
         progress: Callable[[float], None] | None = None) -> pd.DataFrame:
    """Read a capture file into the packets table (reading/schema.py), one row per record.

    engine: "native" (synlens's decoder) or "tshark" (Wireshark's dissectors through pyshark; slow).
    columns: only these columns of the schema, in schema order (default: all); ``frame`` always comes along.
    A command that needs a few fields of a big capture keeps only those in memory. `progress(share)` is told
    the share of the file decoded (0 to 1) as decoding goes.
    Raises `CaptureError` when the file cannot be read (memory running out included); warns `CaptureWarning`
    and returns the records before the damage when it is cut short or corrupt. ``attrs``: path, format,
    compressed, malformed.
    """
    keep = _wanted(columns)
    if engine == "tshark":
        from .tshark import read_tshark  # optional dependency: imported only when asked for

        frame = read_tshark(os.fspath(path))
        return frame if columns is None else _subset(frame, keep)
    if engine != "native":
        raise ValueError(f"engine must be 'native' or 'tshark', not {engine!r}")
    try:
        return decode(read_records(path), columns=columns, progress=progress)
    except NotEnoughMemory:  # (a projection said by whoever watches the progress: its own words)
        raise
    except MemoryError:
        raise CaptureError(os.fspath(path), "not enough memory to read it") from None


def _wanted(columns: Iterable[str] | None) -> frozenset[str]:
    from .schema import PACKET_DTYPES

    if columns is None:
        return frozenset(PACKET_DTYPES)
    wanted = frozenset(columns) | {"frame"}
    unknown = sorted(wanted - set(PACKET_DTYPES))
    if unknown:
        raise ValueError(f"not columns of the packets table: {unknown}")
    return wanted


def _subset(frame: pd.DataFrame, keep: frozenset[str]) -> pd.DataFrame:
    out = frame[[c for c in frame.columns if c in keep]]
    out.attrs.update(frame.attrs)
    return out


# Rows decoded at a time: bounds the decoder's temporaries (a few dozen bytes per row and layer) and lets
# the capture's pages be released behind it, whatever the capture's size.
DECODE_ROWS = 1 << 17


def decode(rec: Records, *, columns: Iterable[str] | None = None,
           progress: Callable[[float], None] | None = None) -> pd.DataFrame:
    """Decode every record's headers into the packets table (or the `columns` of it asked for); `progress`
    is told the share of the file's bytes decoded after each block of rows."""
    from .schema import PACKET_COLUMNS

    keep = _wanted(columns)
    n = len(rec)
    if n == 0:
        frame = empty_packets()
        frame = frame if columns is None else _subset(frame, keep)
        frame.attrs.update(path=rec.path, format=rec.format, compressed=rec.compressed, malformed=0)
        return frame
    out = _Columns(n, keep)
    malformed = np.zeros(n, bool)
    addr = _Addresses()
    frames = _without_fcs(rec)
    for a in range(0, n, DECODE_ROWS):
        b = min(n, a + DECODE_ROWS)
        chunk = frames.take(slice(a, b), numbered=False)
        fast = decode_tcp4(chunk, a, out, addr)
        rest = np.flatnonzero(~fast)
        if len(rest):
            _layers(rec.data, chunk if len(rest) == len(chunk) else chunk.take(rest, numbered=False), rest + a, out, addr,
                    malformed)
        rec.release(a, b)  # this chunk's bytes are decoded: a mapped capture gives their pages back
        if progress is not None:
            progress((int(rec.offset[b - 1]) + int(rec.caplen[b - 1])) / max(1, len(rec.data)))
    cols: dict[str, object] = {
        "frame": rec.frames(),
        "ts_ns": rec.ts_ns,
        "iface": rec.iface,
        "linktype": rec.linktype,
        "caplen": rec.caplen.astype(np.uint32) if "caplen" in keep else None,
        "wirelen": rec.wirelen.astype(np.uint32) if "wirelen" in keep else None,
    }
    attrs = dict(path=rec.path, format=rec.format, compressed=rec.compressed)
    # The index's offsets and 64-bit lengths (24 bytes a record) let go before the address columns are made,
    # when the caller holds the records no more (`read`).
    del rec, frames, chunk
    categories = addr.categories()
    for c in PACKET_COLUMNS:
        if c.name in cols or c.name not in keep:
            continue
        if c.dtype == "category":
            codes = addr.codes(c.name, n)
            cols[c.name] = pd.Categorical.from_codes(codes, categories=categories)
        else:
            cols[c.name] = out.pop(c.name)
    frame = frame_from_columns({k: v for k, v in cols.items() if k in keep}, subset=columns is not None)
    frame.attrs.update(attrs, malformed=int(malformed.sum()))
    return frame


def _without_fcs(rec: Records) -> Records:
    """The records with the frame check sequence that ends each frame on the wire (`Records.fcs` bytes) left
    out of the bytes the layers may read, as Wireshark leaves it out of the frame's payload: a frame's packet
    data is its first wirelen - fcs bytes (of which caplen were captured)."""
    if not rec.fcs:
        return rec
    return dataclasses.replace(rec, caplen=np.minimum(rec.caplen, np.maximum(rec.wirelen - rec.fcs, 0)))


def _layers(data: np.ndarray, rec: Records, rows: np.ndarray, out: _Columns, addr: _Addresses,
            malformed: np.ndarray) -> None:
    """The general decoder, layer by layer, for records `rec` (table rows `rows`)."""
    out.rows = addr.rows = rows
    out.span = slice(rows[0], rows[-1] + 1) if rows[-1] - rows[0] + 1 == len(rows) else None
    buf = _Bytes(data, rec.offset + rec.caplen)
    l3, ethertype = _link(buf, rec, out)
    # A frame too short for its own link header is malformed (tshark agrees); unknown link types are not.
    known = np.isin(rec.linktype, (LINKTYPE_ETHERNET, LINKTYPE_SLL, LINKTYPE_SLL2, LINKTYPE_NULL, LINKTYPE_LOOP)
                    + RAW_LINKTYPES)
    bad = known & (l3 < 0)
    _ip(buf, l3, ethertype, out, addr, bad)
    malformed[rows] |= bad
    buf.release()


def _link(buf: _Bytes, rec: Records, out: _Columns) -> tuple[np.ndarray, np.ndarray]:
    """Per row: offset of the network header (-1 when none) and its ethertype."""
    n = len(rec)
    l3 = np.full(n, -1, np.int64)
    etype = np.zeros(n, np.uint64)
    lt = rec.linktype
    start = rec.offset

    rows = np.flatnonzero(lt == LINKTYPE_ETHERNET)
    if len(rows):
        dst, ok = buf.u(rows, start[rows], 6)
        out.set("eth_dst", rows, dst, ok)
        src, ok = buf.u(rows, start[rows] + 6, 6)
        out.set("eth_src", rows, src, ok)
        pos = start[rows] + 12
        et, ok = buf.u(rows, pos, 2)
        vlan = np.zeros(len(rows), np.uint64)
        has_vlan = np.zeros(len(rows), bool)
        for _ in range(3):  # up to three stacked tags (802.1ad + 802.1Q + one spare)
            tagged = ok & np.isin(et, VLAN_TPIDS)
            if not tagged.any():
                break
            tci, tok = buf.u(rows, pos + 2, 2)
            first = tagged & ~has_vlan & tok
            vlan[first] = tci[first] & 0x0FFF
            has_vlan |= first
            pos = np.where(tagged, pos + 4, pos)
            nxt, nok = buf.u(rows, pos, 2)
            et = np.where(tagged, nxt, et)
            ok = np.where(tagged, nok, ok)
        out.set("vlan", rows, vlan, has_vlan)
        ok = ok & (et > 1500)  # 802.3: a value <= 1500 is the frame's length, LLC follows, no ethertype
        out.set("ethertype", rows, et, ok)
        l3[rows] = np.where(ok, pos + 2, -1)
        etype[rows] = et

    for lt_value, proto_at, hdr_len, addr_len_at, addr_at in ((LINKTYPE_SLL, 14, 16, 4, 6), (LINKTYPE_SLL2, 0, 20, 11, 12)):
        rows = np.flatnonzero(lt == lt_value)
        if not len(rows):
            continue
        et, ok = buf.u(rows, start[rows] + proto_at, 2)
        alen, aok = buf.u(rows, start[rows] + addr_len_at, 2 if lt_value == LINKTYPE_SLL else 1)
        mac, mok = buf.u(rows, start[rows] + addr_at, 6)
        out.set("eth_src", rows, mac, mok & aok & (alen == 6))
        out.set("ethertype", rows, et, ok)
        l3[rows] = np.where(ok & buf.ok(rows, start[rows], hdr_len), start[rows] + hdr_len, -1)
        etype[rows] = et

    rows = np.flatnonzero(np.isin(lt, RAW_LINKTYPES))
    if len(rows):
        first, ok = buf.u(rows, start[rows], 1)
        et = np.where(first >> 4 == 6, ETH_IPV6, np.where(first >> 4 == 4, ETH_IPV4, 0)).astype(np.uint64)
        out.set("ethertype", rows, et, ok & (et != 0))
        l3[rows] = np.where(ok, start[rows], -1)
        etype[rows] = et

    for lt_value in (LINKTYPE_NULL, LINKTYPE_LOOP):
        rows = np.flatnonzero(lt == lt_value)
        if not len(rows):
            continue
        fam, ok = buf.u(rows, start[rows], 4)
        if lt_value == LINKTYPE_NULL:  # host byte order of the capturing machine: accept either
            swapped = ((fam & 0xFF) << 24) | ((fam & 0xFF00) << 8) | ((fam >> 8) & 0xFF00) | (fam >> 24)
            fam = np.where(fam > 0xFFFF, swapped, fam)
        # AF_INET is 2 everywhere; AF_INET6 is 10 (Linux), 24 (NetBSD/OpenBSD), 28 (FreeBSD), 30 (macOS)
        et = np.where(fam == 2, ETH_IPV4, np.where(np.isin(fam, (10, 24, 28, 30)), ETH_IPV6, 0)).astype(np.uint64)
        out.set("ethertype", rows, et, ok & (et != 0))
        l3[rows] = np.where(ok, start[rows] + 4, -1)
        etype[rows] = et
    return l3, etype


class _Addresses:
    """Addresses as integers while decoding; text only for the distinct ones, shared by all four columns.

    IPv4 addresses are held as their 32-bit value, IPv6 as 16 raw bytes. One category list serves src, dst,
    q_src and q_dst, so their codes compare directly (the matcher joins on codes). Each segment of rows
    added is reduced to its distinct addresses at once (a capture holds few), so the final sort is of
    those only.
    """

    def __init__(self) -> None:
        # Per column, the (table rows, codes into the segment's distinct values, those values) segments
        # added so far: IPv4, ARP and quoted headers add to the same columns at different rows.
        self.v4: list[tuple[str, np.ndarray | slice, np.ndarray, np.ndarray]] = []
        self.v6: list[tuple[str, np.ndarray | slice, np.ndarray, np.ndarray]] = []
        self.rows = np.zeros(0, np.int64)  # table row of each row the layers see
        self._built = False

    def add4(self, name: str, rows: np.ndarray, value: np.ndarray) -> None:
        self.put4(name, self.rows[rows], value)

    def put4(self, name: str, target: np.ndarray | slice, value: np.ndarray) -> None:
        codes, distinct = pd.factorize(value.astype(np.uint32, copy=False))
        self.v4.append((name, target, _narrow(codes, len(distinct)), distinct))

    def add6(self, name: str, rows: np.ndarray, raw16: np.ndarray) -> None:
        distinct, codes = np.unique(raw16, axis=0, return_inverse=True)
        self.v6.append((name, self.rows[rows], _narrow(codes.reshape(-1), len(distinct)), distinct))

    def _build(self) -> None:
        if self._built:
            return
        self.u4 = np.unique(np.concatenate([d for *_, d in self.v4] + [np.zeros(0, np.uint32)]))
        self.u6 = np.unique(np.concatenate([d for *_, d in self.v6] + [np.zeros((0, 16), np.uint8)]), axis=0)
        index6 = {bytes(a): i for i, a in enumerate(self.u6, len(self.u4))}
        self.dtype = _codes_dtype(len(self.u4) + len(self.u6))
        self.segments: list[tuple[str, np.ndarray | slice, np.ndarray]] = []
        for name, rows, codes, distinct in self.v4:
            self.segments.append((name, rows, np.searchsorted(self.u4, distinct).astype(self.dtype)[codes]))
        for name, rows, codes, distinct in self.v6:
            self.segments.append((name, rows, np.array([index6[bytes(a)] for a in distinct], self.dtype)[codes]))
        self.v4 = self.v6 = []  # (coded again in segments: let go)
        self._built = True

    def categories(self) -> pd.Index:
        self._build()
        text = [str(ipaddress.IPv4Address(int(a))) for a in self.u4]
        text += [str(ipaddress.IPv6Address(bytes(a))) for a in self.u6]
        return pd.Index(text, dtype=object)

    def codes(self, name: str, n: int) -> np.ndarray:
        """Category codes of column `name`, -1 where absent, in the smallest type pandas keeps them in."""
        self._build()
        codes = np.full(n, -1, self.dtype)
        for seg_name, rows, seg_codes in self.segments:
            if seg_name == name:
                codes[rows] = seg_codes
        self.segments = [s for s in self.segments if s[0] != name]  # (each column's codes are made once)
        return codes


def _codes_dtype(k: int) -> type:
    """The integer type pandas keeps the codes of k categories in (and -1 for none)."""
    return next(t for t in (np.int8, np.int16, np.int32, np.int64) if k < np.iinfo(t).max)


def _narrow(codes: np.ndarray, k: int) -> np.ndarray:
    return codes.astype(_codes_dtype(k), copy=False)


def _raw16(buf: _Bytes, rows: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return buf.data[pos[:, None] + np.arange(16)[None, :]]


def _ip(buf: _Bytes, l3: np.ndarray, etype: np.ndarray, out: _Columns, addr: _Addresses, malformed: np.ndarray) -> None:
    # IPv4
    rows = np.flatnonzero((l3 >= 0) & (etype == ETH_IPV4))
    l4 = np.full(len(l3), -1, np.int64)
    l4_end = np.zeros(len(l3), np.int64)
    proto = np.zeros(len(l3), np.uint64)
    if len(rows):
        pos = l3[rows]
        vihl, ok = buf.u(rows, pos, 1)
        hdr_ok = ok & buf.ok(rows, pos, 20) & (vihl >> 4 == 4) & ((vihl & 15) >= 5)
        malformed[rows[ok & ~hdr_ok]] = True
        rows, pos, vihl = rows[hdr_ok], pos[hdr_ok], vihl[hdr_ok]
        ihl = (vihl & 15).astype(np.int64) * 4
        total, _ = buf.u(rows, pos + 2, 2)
        ident, _ = buf.u(rows, pos + 4, 2)
        frag, _ = buf.u(rows, pos + 6, 2)
        ttl, _ = buf.u(rows, pos + 8, 1)
        p, _ = buf.u(rows, pos + 9, 1)
        src, _ = buf.u(rows, pos + 12, 4)
        dst, _ = buf.u(rows, pos + 16, 4)
        out.set("ip_version", rows, np.full(len(rows), 4, np.uint64))
        for name, v in (("ip_len", total), ("ip_id", ident), ("ttl", ttl), ("ip_proto", p)):
            out.set(name, rows, v)
        addr.add4("src", rows, src)
        addr.add4("dst", rows, dst)
        fragmented = ((frag & 0x1FFF) != 0) | ((frag & 0x2000) != 0)
        out.set("fragment", rows, fragmented.astype(np.uint64))
        bad_len = (total.astype(np.int64) < ihl)
        malformed[rows[bad_len]] = True
        # Only the first fragment carries the transport header; judge it by offset 0.
        has_l4 = ~bad_len & ((frag & 0x1FFF) == 0) & buf.ok(rows, pos, 1)
        l4[rows[has_l4]] = (pos + ihl)[has_l4]
        l4_end[rows[has_l4]] = (pos + total.astype(np.int64))[has_l4]
        proto[rows[has_l4]] = p[has_l4]

    # IPv6
    rows = np.flatnonzero((l3 >= 0) & (etype == ETH_IPV6))
    if len(rows):
        pos = l3[rows]
        first, ok = buf.u(rows, pos, 1)
        hdr_ok = ok & buf.ok(rows, pos, 40) & (first >> 4 == 6)
        malformed[rows[ok & ~hdr_ok]] = True
        rows, pos = rows[hdr_ok], pos[hdr_ok]
        plen, _ = buf.u(rows, pos + 4, 2)
        nh, _ = buf.u(rows, pos + 6, 1)
        hlim, _ = buf.u(rows, pos + 7, 1)
        out.set("ip_version", rows, np.full(len(rows), 6, np.uint64))
        out.set("ip_len", rows, plen + 40)
        out.set("ttl", rows, hlim)
        addr.add6("src", rows, _raw16(buf, rows, pos + 8))
        addr.add6("dst", rows, _raw16(buf, rows, pos + 24))
        end = pos + 40 + plen.astype(np.int64)
        cur, fragmented, alive = pos + 40, np.zeros(len(rows), bool), np.ones(len(rows), bool)
        frag_id = np.zeros(len(rows), np.uint64)
        has_frag_id = np.zeros(len(rows), bool)
        no_l4 = np.zeros(len(rows), bool)
        for _ in range(8):  # a longer chain than this is an evasion attempt, not a probe
            ext = alive & np.isin(nh, IPV6_EXT + (IPV6_FRAG, IPV6_AH))
            if not ext.any():
                break
            nxt, ok1 = buf.u(rows, cur, 1)
            hl, ok2 = buf.u(rows, cur + 1, 1)
            size = np.where(nh == IPV6_AH, (hl.astype(np.int64) + 2) * 4, (hl.astype(np.int64) + 1) * 8)
            size = np.where(nh == IPV6_FRAG, 8, size)
            isfrag = ext & (nh == IPV6_FRAG)
            if isfrag.any():
                fo, _ = buf.u(rows, cur + 2, 2)
                fid, fok = buf.u(rows, cur + 4, 4)
                frag_id = np.where(isfrag & fok, fid, frag_id)
                has_frag_id |= isfrag & fok
                fragmented |= isfrag & ((fo & 0xFFF9) != 0)  # offset != 0 or M flag
                later = isfrag & ((fo & 0xFFF8) != 0)
                no_l4 |= later
            else:
                later = np.zeros(len(rows), bool)
            bad = ext & ~(ok1 & ok2)
            alive &= ~bad
            no_l4 |= bad
            nh = np.where(ext & ~bad, nxt, nh)
            cur = np.where(ext & ~bad, cur + size, cur)
            alive &= ~later  # a later fragment's data is not a header: ip_proto is what it announces
        out.set("ip_proto", rows, nh)
        out.set("ip_id", rows, frag_id, has_frag_id)
        out.set("fragment", rows, fragmented.astype(np.uint64))
        bad_len = end < cur
        malformed[rows[bad_len]] = True
        has_l4 = ~no_l4 & ~bad_len
        l4[rows[has_l4]] = cur[has_l4]
        l4_end[rows[has_l4]] = end[has_l4]
        proto[rows[has_l4]] = nh[has_l4]

    _arp(buf, np.flatnonzero((l3 >= 0) & (etype == ETH_ARP)), l3, out, addr)
    _tcp(buf, np.flatnonzero((l4 >= 0) & (proto == 6)), l4, l4_end, out, malformed)
    _udp(buf, np.flatnonzero((l4 >= 0) & (proto == 17)), l4, l4_end, out, malformed)
    _icmp(buf, np.flatnonzero((l4 >= 0) & (proto == 1)), l4, out, addr, v6=False)
    _icmp(buf, np.flatnonzero((l4 >= 0) & (proto == 58)), l4, out, addr, v6=True)


def _arp(buf: _Bytes, rows: np.ndarray, l3: np.ndarray, out: _Columns, addr: _Addresses) -> None:
    """ARP for IPv4 over Ethernet: the operation, and the protocol addresses as src / dst."""
    if not len(rows):
        return
    pos = l3[rows]
    head, ok = buf.u(rows, pos, 6)  # htype(2) ptype(2) hlen(1) plen(1)
    good = ok & (head == 0x000108000604) & buf.ok(rows, pos, 28)
    rows, pos = rows[good], pos[good]
    op, _ = buf.u(rows, pos + 6, 2)
    spa, _ = buf.u(rows, pos + 14, 4)
    tpa, _ = buf.u(rows, pos + 24, 4)
    out.set("arp_op", rows, op)
    addr.add4("src", rows, spa)
    addr.add4("dst", rows, tpa)


def _tcp(buf: _Bytes, rows: np.ndarray, l4: np.ndarray, l4_end: np.ndarray, out: _Columns, malformed: np.ndarray) -> None:
    if not len(rows):
        return
    pos = l4[rows]
    # A field must lie inside both the captured bytes and the IP packet: bytes past the IP length are
    # padding or garbage, never TCP header.
    inside = l4_end[rows]
    complete = buf.ok(rows, pos, 20) & (pos + 20 <= inside)
    # Ports and sequence number sit in the first 8 bytes: keep them even when the header is cut short.
    for name, off, size in (("sport", 0, 2), ("dport", 2, 2), ("seq", 4, 4)):
        v, ok = buf.u(rows, pos + off, size)
        out.set(name, rows, v, ok & (pos + off + size <= inside))
    malformed[rows[~complete]] = True
    rows, pos = rows[complete], pos[complete]
    ack, _ = buf.u(rows, pos + 8, 4)
    off_flags, _ = buf.u(rows, pos + 12, 2)
    win, _ = buf.u(rows, pos + 14, 2)
    doff = ((off_flags >> 12) * 4).astype(np.int64)
    out.set("ack", rows, ack)
    out.set("tcp_flags", rows, off_flags & 0x1FF)
    out.set("window", rows, win)
    seg_len = l4_end[rows] - pos
    bad = (doff < 20) | (seg_len < doff)
    malformed[rows[bad]] = True
    out.set("payload_len", rows, np.maximum(seg_len - doff, 0).astype(np.uint64), ~bad)
    _tcp_options(buf, rows[~bad & (doff > 20)], pos[~bad & (doff > 20)], doff[~bad & (doff > 20)], out)


def _tcp_options(buf: _Bytes, rows: np.ndarray, pos: np.ndarray, doff: np.ndarray, out: _Columns) -> None:
    if not len(rows):
        return
    cur, end = pos + 20, pos + doff
    kinds = np.zeros(len(rows), np.uint64)
    count = np.zeros(len(rows), np.int64)
    alive = np.ones(len(rows), bool)
    for _ in range(40):  # at most 40 option bytes, so at most 40 options
        alive &= cur < end
        if not alive.any():
            break
        kind, ok = buf.u(rows, cur, 1)
        alive &= ok
        record = alive & (count < 8)
        kinds = np.where(record, (kinds << np.uint64(8)) | kind, kinds)
        count += record
        single = alive & ((kind == 0) | (kind == 1))
        length, lok = buf.u(rows, cur + 1, 1)
        multi = alive & ~single & lok & (length >= 2) & (cur + length.astype(np.int64) <= end)
        for name, k, size, off, vsize in OPTION_FIELDS:
            sel = multi & (kind == k) & (length == size)
            if sel.any():
                v, vok = buf.u(rows, cur + off, vsize)
                out.set(name, rows, v, sel & vok)
        alive &= (kind != 0) & (single | multi)
        cur = np.where(single, cur + 1, np.where(multi, cur + length.astype(np.int64), cur))
    # Left-align so the first option is in the top byte: the layout reads the same whatever the count.
    shift = (8 - np.minimum(count, 8)) * 8
    aligned = np.where(count > 0, kinds << shift.astype(np.uint64), 0)
    out.set("tcp_options", rows, aligned, count > 0)


def _udp(buf: _Bytes, rows: np.ndarray, l4: np.ndarray, l4_end: np.ndarray, out: _Columns, malformed: np.ndarray) -> None:
    if not len(rows):
        return
    pos = l4[rows]
    inside = l4_end[rows]
    for name, off in (("sport", 0), ("dport", 2)):
        v, ok = buf.u(rows, pos + off, 2)
        out.set(name, rows, v, ok & (pos + off + 2 <= inside))
    ulen, ok = buf.u(rows, pos + 4, 2)
    ok &= pos + 8 <= inside
    seg = l4_end[rows] - pos
    good = ok & (ulen >= 8)
    malformed[rows[ok & ~good]] = True
    # The IP length is the authority (the UDP length can lie); payload is what the IP packet carries.
    out.set("payload_len", rows, np.maximum(seg - 8, 0).astype(np.uint64), good)


def _icmp(buf: _Bytes, rows: np.ndarray, l4: np.ndarray, out: _Columns, addr: _Addresses, v6: bool) -> None:
    if not len(rows):
        return
    pos = l4[rows]
    typ, ok = buf.u(rows, pos, 1)
    code, cok = buf.u(rows, pos + 1, 1)
    out.set("icmp_type", rows, typ, ok)
    out.set("icmp_code", rows, code, cok)
    queries = ICMP6_QUERIES if v6 else ICMP4_QUERIES
    q = ok & np.isin(typ, queries)
    ident, iok = buf.u(rows, pos + 4, 2)
    seq, sok = buf.u(rows, pos + 6, 2)
    out.set("icmp_id", rows, ident, q & iok)
    out.set("icmp_seq", rows, seq, q & sok)
    err = ok & np.isin(typ, ICMP6_ERRORS if v6 else ICMP4_ERRORS)
    rows, inner = rows[err], pos[err] + 8
    if not len(rows):
        return
    qproto = np.zeros(len(rows), np.uint64)
    ql4 = np.full(len(rows), -1, np.int64)
    if not v6:
        vihl, ok = buf.u(rows, inner, 1)
        good = ok & buf.ok(rows, inner, 20) & (vihl >> 4 == 4) & ((vihl & 15) >= 5)
        ident, _ = buf.u(rows, inner + 4, 2)
        qfrag, _ = buf.u(rows, inner + 6, 2)
        p, _ = buf.u(rows, inner + 9, 1)
        src, _ = buf.u(rows, inner + 12, 4)
        dst, _ = buf.u(rows, inner + 16, 4)
        out.set("q_ip_id", rows, ident, good)
        out.set("q_proto", rows, p, good)
        addr.add4("q_src", rows[good], src[good])
        addr.add4("q_dst", rows[good], dst[good])
        qproto = np.where(good, p, 0)
        # A quoted non-first fragment carries no transport header: its ports would be payload bytes.
        ql4 = np.where(good & ((qfrag & 0x1FFF) == 0), inner + (vihl & 15).astype(np.int64) * 4, -1)
    else:
        first, ok = buf.u(rows, inner, 1)
        good = ok & buf.ok(rows, inner, 40) & (first >> 4 == 6)
        nh, _ = buf.u(rows, inner + 6, 1)
        cur = inner + 40
        quoted_later = np.zeros(len(rows), bool)
        for _ in range(4):
            ext = good & ~quoted_later & np.isin(nh, IPV6_EXT + (IPV6_FRAG,))
            if not ext.any():
                break
            nxt, ok1 = buf.u(rows, cur, 1)
            hl, ok2 = buf.u(rows, cur + 1, 1)
            frag = ext & (nh == IPV6_FRAG)
            fo, _ = buf.u(rows, cur + 2, 2)
            size = np.where(frag, 8, (hl.astype(np.int64) + 1) * 8)
            nh = np.where(ext & ok1 & ok2, nxt, np.where(ext, 255, nh))
            cur = np.where(ext, cur + size, cur)
            quoted_later |= frag & ((fo & 0xFFF8) != 0)
        safe = np.where(good, inner, 0)
        addr.add6("q_src", rows[good], _raw16(buf, rows, safe + 8)[good])
        addr.add6("q_dst", rows[good], _raw16(buf, rows, safe + 24)[good])
        out.set("q_proto", rows, nh, good)
        qproto = np.where(good, nh, 0)
        ql4 = np.where(good & ~quoted_later, cur, -1)
    ports = (qproto == 6) | (qproto == 17)
    for name, off, size in (("q_sport", 0, 2), ("q_dport", 2, 2)):
        v, vok = buf.u(rows, ql4 + off, size)
        out.set(name, rows, v, ports & vok & (ql4 >= 0))
    v, vok = buf.u(rows, ql4 + 4, 4)
    out.set("q_seq", rows, v, (qproto == 6) & vok & (ql4 >= 0))
