"""Capture containers → an index of records (where each packet's bytes lie, when, on which link).

pcap (µs or ns magic, either byte order), pcapng (any number of sections and interfaces, each with its own
link type, timestamp resolution and offset) and gzip-compressed files of either. The file is mapped (or
decompressed) into one buffer; walking the record chain is a per-record loop (each record's length says where
the next begins, so it cannot be vectorised), and it keeps no Python object per record: offsets, lengths and
timestamps go into typed arrays. A classic pcap's records and pcapng's runs of enhanced packet blocks are
walked by accel/walk.py (compiled where it was built); every other pcapng block, and every enhanced packet
block where nothing was compiled, is read here.

Damage policy: a capture cut short, or a record whose length is absurd, ends the walk at the last good
record with a `CaptureWarning`; an unreadable file raises `CaptureError` naming the file and the problem.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import struct
import warnings
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from ..accel import walk
from ..accel.buffers import RecordArrays, give_back, walked
from ..errors import CaptureError, CaptureWarning, capture_file_errors

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D
# A record longer than this is damage, not a packet: the largest link MTUs (and pcap's own
# MAXIMUM_SNAPLEN, 262144) are far below it. Refusing it up front avoids allocating a forged length.
MAX_RECORD = 1 << 20


@dataclass(frozen=True)
class Records:
    """Where each record's packet bytes are in `data`, with its header fields, as parallel arrays."""

    path: str
    data: np.ndarray  # uint8 view of the whole (decompressed) file
    offset: np.ndarray  # int64: first byte of the packet
    caplen: np.ndarray  # int64
    wirelen: np.ndarray  # int64
    ts_ns: np.ndarray  # int64
    linktype: np.ndarray  # uint16
    iface: np.ndarray  # uint16
    format: str  # "pcap" | "pcapng"
    compressed: bool
    mapping: mmap.mmap | None = None  # the file mapped read-only, when `data` is that mapping
    fcs: int = 0  # bytes of frame check sequence that end each frame on the wire (not packet data)
    first: int = 0  # records of the file before these (a chunk of a file read a chunk at a time)
    frame: np.ndarray | None = None  # each record's frame number in its file, where they do not follow `first`

    def __len__(self) -> int:
        return len(self.offset)

    def frames(self) -> np.ndarray:
        """Each record's frame number in its file (as Wireshark numbers them, from 1)."""
        if self.frame is not None:
            return self.frame
        return np.arange(self.first + 1, self.first + len(self) + 1, dtype=np.int64)

    def take(self, index: np.ndarray | slice, numbered: bool = True) -> Records:
        """The records at `index` (an array of positions: copies of their entries; a slice: views), sharing
        `data`, each keeping its frame number (unless not `numbered`: the decoder's own pieces need none)."""
        numbering: dict[str, object] = {}
        if numbered and self.frame is None and isinstance(index, slice) and index.step in (None, 1):
            numbering = dict(first=self.first + (index.indices(len(self))[0]))
        elif numbered:
            numbering = dict(frame=self.frames()[index])
        return dataclasses.replace(self, offset=self.offset[index], caplen=self.caplen[index],
                                   wirelen=self.wirelen[index], ts_ns=self.ts_ns[index],
                                   linktype=self.linktype[index], iface=self.iface[index], **numbering)

    def release(self, start: int, stop: int) -> None:
        """Records start … stop-1 are decoded: when `data` maps the file, give their pages back to the
        kernel (they stay in the page cache; touching them again maps them again)."""
        if self.mapping is not None and start < stop:
            give_back(self.mapping, int(self.offset[start]), int(self.offset[stop - 1] + self.caplen[stop - 1]))


def _load(path: str) -> tuple[bytes | bytearray | mmap.mmap, bool]:
    """The file's bytes: mapped read-only when it is not compressed (pages are mapped as the walk and the
    decoder reach them, and given back behind them), else decompressed into memory (`_inflate`)."""
    with capture_file_errors(path), open(path, "rb") as f:
        head = f.read(2)
        size = os.fstat(f.fileno()).st_size
        if head != b"\x1f\x8b":
            if size == 0 or not os.path.isfile(path):
                return head + f.read(), False
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), False
        return _inflate(path, f, size, head), True


# A compressed capture is decompressed into memory (the reader needs its bytes whole), so what it may inflate to
# is bounded: at most MAX_INFLATED bytes, and at most INFLATE_RATIO times its compressed size beyond the first
# INFLATE_FLOOR bytes. Real captures compress 2 to 16 times (the samples and the third-party captures here);
# a decompression bomb, about 1,000 times. Past the bound the capture is read up to it, with a warning; its
# uncompressed file is mapped, not held, and is read whole.
MAX_INFLATED = 1 << 32
INFLATE_RATIO = 100
INFLATE_FLOOR = 64 << 20
_INFLATE_CHUNK = 1 << 20  # compressed bytes read at a time
_INFLATE_STEP = 1 << 22  # decompressed bytes made at a time (one chunk of a bomb would inflate a thousandfold)


def _inflate(path: str, f: BinaryIO, size: int, head: bytes) -> bytearray:
    """A gzip file's decompressed bytes (concatenated members are one stream), streamed a chunk at a time and
    never past the bound above. A stream cut short, damaged or past the bound gives what came before, with a
    `CaptureWarning`; memory running out, a `CaptureError`."""
    limit = min(MAX_INFLATED, max(INFLATE_FLOOR, INFLATE_RATIO * size))
    out = bytearray()
    d = zlib.decompressobj(wbits=31)
    pending = head  # (the bytes already read from `f`)
    try:
        while len(out) <= limit:
            if not pending:
                pending = f.read(_INFLATE_CHUNK)
                if not pending:
                    out += d.flush(min(limit + 1 - len(out), _INFLATE_STEP))
                    break
            if d.eof:  # another member follows
                d = zlib.decompressobj(wbits=31)
            out += d.decompress(pending, min(limit + 1 - len(out), _INFLATE_STEP))
            pending = d.unused_data if d.eof else d.unconsumed_tail
    except zlib.error as e:
        warnings.warn(CaptureWarning(path, f"gzip data damaged ({e}); reading what was decompressed"))
        return out
    except MemoryError:
        raise CaptureError(path, f"not enough memory to decompress it ({len(out):,} bytes so far)") from None
    if len(out) > limit:
        del out[limit:]
        warnings.warn(CaptureWarning(path, f"gzip data inflates past {limit:,} bytes, the most synlens decompresses "
                                     f"({INFLATE_RATIO} times the file, at most {MAX_INFLATED:,}: a decompression "
                                     "bomb?); reading those bytes (gunzip it to read it all)"))
    elif not d.eof:
        warnings.warn(CaptureWarning(path, "gzip stream cut short; reading what was decompressed"))
    return out


def read_records(path: str | os.PathLike[str]) -> Records:
    """Index every record of a capture file. Raises `CaptureError`; warns `CaptureWarning` on damage."""
    path = os.fspath(path)
    raw, compressed = _load(path)
    return records_of(path, raw, compressed)


def iter_records(path: str | os.PathLike[str], chunk: int) -> Iterator[Records]:
    """`read_records` a chunk of at most `chunk` records at a time, in file order (`Records.first`: the records
    before each chunk), so that the index of a file of any size is never whole in memory. The same records,
    damage and warnings (given once the last chunk is read) as `read_records`."""
    path = os.fspath(path)
    raw, compressed = _load(path)
    return _chunks(path, raw, compressed, chunk)


def pcap_range(path: str | os.PathLike[str], pos: int, first: int, count: int) -> Records:
    """Records `first` … `first + count - 1` of a classic pcap file (not compressed) whose record header `first`
    starts at byte `pos` (as a chunk of `iter_records` found them: its first packet's offset, less the 16 bytes of
    its header): a record range read on its own, as a worker reads its part of a big capture. The damage and
    warning of the file's end, when the range reaches it, as `read_records` gives them."""
    path = os.fspath(path)
    raw, compressed = _load(path)
    if compressed or len(raw) < 4 or PCAPNG_SHB in struct.unpack_from("<I", raw):
        raise CaptureError(path, "not an uncompressed classic pcap file: its records cannot be read by range")
    return next(_chunks(path, raw, compressed, count, start=(pos, first)))


def records_of(path: str, raw: bytes | bytearray | mmap.mmap, compressed: bool = False) -> Records:
    """`read_records` of a capture's bytes (decompressed) already in memory, `path` naming it in messages (the
    fuzz harness reads each case from an exact-size copy, so that AddressSanitizer sees a read past its end)."""
    [records] = _chunks(path, raw, compressed, None)
    return records


def _chunks(path: str, raw: bytes | bytearray | mmap.mmap, compressed: bool, chunk: int | None,
            start: tuple[int, int] = (24, 0)) -> Iterator[Records]:
    """The records of a capture's bytes, `chunk` at a time (None: all at once: one Records, even when empty); a
    classic pcap's from `start` (the byte of a record header, and the records before it)."""
    if len(raw) == 0:
        raise CaptureError(path, "empty file (0 bytes), not a capture")
    if len(raw) < 4:
        raise CaptureError(path, f"too short to be a capture ({len(raw)} bytes)")
    magic_le = struct.unpack_from("<I", raw)[0]
    magic_be = struct.unpack_from(">I", raw)[0]
    if magic_le in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
        return _pcap(path, raw, "<", magic_le == PCAP_MAGIC_NS, compressed, chunk, start)
    if magic_be in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
        return _pcap(path, raw, ">", magic_be == PCAP_MAGIC_NS, compressed, chunk, start)
    if magic_le == PCAPNG_SHB:
        return _pcapng(path, raw, compressed, chunk)
    if magic_le in (0xA1B2CD34, 0x34CDB2A1):
        raise CaptureError(path, "Kuznetzov's modified pcap format is not supported")
    raise CaptureError(path, f"not a pcap or pcapng file (starts with bytes {raw[:4].hex()})")


def _pcap(path: str, raw: bytes, endian: str, nano: bool, compressed: bool, chunk: int | None,
          start: tuple[int, int]) -> Iterator[Records]:
    if len(raw) < 24:
        raise CaptureError(path, f"pcap global header cut short ({len(raw)} of 24 bytes)")
    _, _, _, _, snaplen, network = struct.unpack_from(endian + "HHiIII", raw, 4)
    linktype, fcs = _link_field(network)
    limit = max(min(MAX_RECORD, max(snaplen, 65535) * 4), 65535 + 64)
    return _pcap_chunks(path, raw, endian, nano, compressed, chunk, linktype, fcs, limit, snaplen, start)


def _pcap_chunks(path: str, raw: bytes, endian: str, nano: bool, compressed: bool, chunk: int | None, linktype: int,
                 fcs: int, limit: int, snaplen: int, start: tuple[int, int]) -> Iterator[Records]:
    (pos, done), end = start, len(raw)
    while True:
        (offset, caplen, wirelen, ts_ns), pos, damage = walk.pcap_records(raw, endian, nano, limit, snaplen, pos,
                                                                          chunk, done)
        last = chunk is None or damage is not None or len(offset) < chunk or pos + 16 > end
        if last and damage is None and pos != end:
            damage = f"capture cut short inside record header {done + len(offset) + 1} (byte {pos})"
        if last and damage:
            warnings.warn(CaptureWarning(path, damage + f"; read {done + len(offset)} records"))
        if len(offset) or done == 0:
            # One link type and one interface for every record: one value each, not an array of copies.
            yield _records(path, raw, "pcap", compressed, offset=offset, caplen=caplen, wirelen=wirelen,
                           ts_ns=ts_ns, linktype=np.broadcast_to(np.uint16(linktype), (len(offset),)),
                           iface=np.broadcast_to(np.uint16(0), (len(offset),)), fcs=fcs, first=done)
        done += len(offset)
        if last:
            return


def _link_field(network: int) -> tuple[int, int]:
    """A classic pcap header's 32-bit link-type field → (link type, FCS bytes ending each frame), as libpcap's
    pcap-common.c (LT_LINKTYPE, LT_FCS_LENGTH_PRESENT, LT_FCS_LENGTH) and Wireshark's libpcap reader define it:
    the link type is the low 16 bits; bit 26 says the top 4 bits hold the FCS length, in 16-bit units. The
    bits between are reserved: libpcap ignores them, and so does this."""
    fcs = ((network >> 28) & 0xF) * 2 if network & 0x04000000 else 0
    return network & 0xFFFF, fcs


def _records(path: str, raw: bytes | mmap.mmap, fmt: str, compressed: bool, **columns: np.ndarray) -> Records:
    """The Records of a walked capture: its per-record columns, over the file's bytes (a mapped file's pages given
    back now that the walk is done)."""
    return Records(path=path, data=np.frombuffer(raw, np.uint8), format=fmt, compressed=compressed,
                   mapping=walked(raw), **columns)


@dataclass(frozen=True)
class _Iface:
    linktype: int
    snaplen: int
    tsresol: tuple[bool, int]  # (binary?, exponent): units of 10^-e or 2^-e seconds
    tsoffset_s: int


def _idb_options(body: memoryview, endian: str) -> tuple[tuple[bool, int], int, bool]:
    """An interface description's if_tsresol and if_tsoffset (defaults: µs, 0 s), and whether an option ran past
    the end of the block (that option and the ones after it are not read)."""
    tsresol, tsoffset = (False, 6), 0
    pos = 8
    while pos + 4 <= len(body):
        code, length = struct.unpack_from(endian + "HH", body, pos)
        if code == 0:
            break
        if pos + 4 + length > len(body):
            return tsresol, tsoffset, True
        value = body[pos + 4 : pos + 4 + length]
        if code == 9 and length >= 1:
            tsresol = (bool(value[0] & 0x80), value[0] & 0x7F)
        elif code == 14 and length == 8:
            tsoffset = struct.unpack_from(endian + "q", value)[0]
        pos += 4 + length + (-length % 4)
    return tsresol, tsoffset, False


def _described(body: memoryview, endian: str) -> tuple[_Iface, bool]:
    """An interface description block's body → the interface, and whether an option ran past the block."""
    lt, _, snap = struct.unpack_from(endian + "HHI", body, 0)
    res, off, cut = _idb_options(body, endian)
    return _Iface(lt, snap, res, off), cut


class _Packets:
    """The packet records of a pcapng as the block walk finds them, in file order: appended one by one, or
    taken a run of enhanced packet blocks at a time (accel.walk.epb_run)."""

    def __init__(self, size: int, most: int | None = None) -> None:
        # offset, caplen, wirelen, ts_units, iface; the smallest packet block (simple) takes 16 bytes
        self.size, self.most = size, most
        self.arrays = RecordArrays(_PCAPNG_TYPES, size, 16, most)
        self.one_by_one: tuple[array, ...] = tuple(array(code) for code in "qqqQH")

    def clear(self) -> None:
        """Empty, for the next chunk (`filled` has been taken)."""
        self.arrays = RecordArrays(_PCAPNG_TYPES, self.size, 16, self.most)

    def add(self, start: int, iface: int, ts_hi: int, ts_lo: int, cap: int, wire: int) -> None:
        for column, value in zip(self.one_by_one, (start, cap, wire, (ts_hi << 32) | ts_lo, iface)):
            column.append(value)

    def _flush(self) -> None:
        k = len(self.one_by_one[0])
        if k:
            for room, values, t in zip(self.arrays.room(k), self.one_by_one, _PCAPNG_TYPES):
                room[:k] = np.frombuffer(values, t)
                del values[:]
            self.arrays.count += k

    def run(self, raw: bytes, pos: int, endian: str, interfaces: int, base: int) -> int:
        """Take the run of enhanced packet blocks at `pos`; returns where it stopped (`pos` where the run is read
        block by block instead)."""
        self._flush()
        most = None if self.most is None else self.most - self.arrays.count
        return walk.epb_run(self.arrays, raw, pos, endian == ">", interfaces, base, MAX_RECORD + 64, most)

    def __len__(self) -> int:
        return self.arrays.count + len(self.one_by_one[0])

    def filled(self) -> tuple[np.ndarray, ...]:
        self._flush()
        return self.arrays.filled()


# The fixed fields of each block type read here, in bytes: interface description, enhanced, simple and obsolete
# packet blocks.
_PCAPNG_BODY_MIN = {1: 8, 6: 20, 3: 4, 2: 20}
_PCAPNG_TYPES = (np.int64, np.int64, np.int64, np.uint64, np.uint16)


def _pcapng(path: str, raw: bytes, compressed: bool, chunk: int | None) -> Iterator[Records]:
    end = len(raw)
    view = memoryview(raw)
    packets = _Packets(len(raw), chunk)
    done = 0  # packets in the chunks yielded
    outside = 0  # timestamps held at an end of int64 ns
    add = packets.add
    interfaces: list[_Iface] = []
    all_ifaces: list[_Iface] = []  # across sections, so iface ids stay unique in the table
    base = 0  # index in all_ifaces of this section's interface 0
    endian = "<"
    pos = 0
    damage = None
    skipped = 0
    bad_options = first_bad_option = 0  # interface descriptions with an option past their end; the first's byte
    described: dict[tuple[str, bytes], tuple[_Iface, bool]] = {}
    while pos + 12 <= end:
        if chunk is not None and len(packets) >= chunk:
            records, held = _pcapng_records(path, raw, compressed, packets, all_ifaces, done)
            outside += held
            done += len(records)
            yield records
        btype = struct.unpack_from(endian + "I", raw, pos)[0]
        if btype == 6:
            stop = packets.run(raw, pos, endian, len(interfaces), base)
            if stop != pos:
                pos = stop
                if chunk is not None and len(packets) >= chunk:
                    continue  # (the chunk is full: taken first, then the block at pos)
                if pos + 12 > end:
                    break
                btype = struct.unpack_from(endian + "I", raw, pos)[0]  # the block the run stopped at: read below
        if btype == PCAPNG_SHB:
            bom = raw[pos + 8 : pos + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                endian = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                endian = ">"
            else:
                damage = f"section header at byte {pos} has no valid byte-order mark"
                break
            base = len(all_ifaces)
            interfaces = []
        blen = struct.unpack_from(endian + "I", raw, pos + 4)[0]
        if blen < 12 or blen % 4 or blen > MAX_RECORD + 64:
            damage = f"block at byte {pos} claims length {blen}; stopping there"
            break
        if pos + blen > end:
            damage = f"capture cut short inside block at byte {pos}"
            break
        body = view[pos + 8 : pos + blen - 4]
        if len(body) < _PCAPNG_BODY_MIN.get(btype, 0):
            damage = f"block at byte {pos} (type {btype}) is too short for its fields ({blen} bytes)"
            break
        if btype == 1:  # interface description
            if len(all_ifaces) == 1 << 16:  # the table's iface column is 16-bit, as pcapng's own interface ids
                damage = f"interface description at byte {pos} is the 65,537th; stopping there"
                break
            key = (endian, bytes(body))  # (a capture's interfaces are mostly alike: each description read once)
            iface, cut = described.get(key) or described.setdefault(key, _described(body, endian))
            if cut and not bad_options:
                first_bad_option = pos
            bad_options += cut
            interfaces.append(iface)
            all_ifaces.append(iface)
        elif btype == 6:  # enhanced packet
            ifid, hi, lo, cap, wire = struct.unpack_from(endian + "IIIII", body, 0)
            if ifid >= len(interfaces) or 20 + cap > len(body):
                damage = f"enhanced packet block at byte {pos} is inconsistent (interface {ifid}, caplen {cap})"
                break
            add(pos + 28, base + ifid, hi, lo, cap, wire)
        elif btype in (3, 2):  # simple packet (no timestamp), obsolete packet block
            if not interfaces:
                damage = f"packet block at byte {pos} before any interface description"
                break
            if btype == 3:
                wire = struct.unpack_from(endian + "I", body, 0)[0]
                add(pos + 12, base, 0, 0, min(wire, len(body) - 4, interfaces[0].snaplen or wire), wire)
            else:
                ifid, _, hi, lo, cap, wire = struct.unpack_from(endian + "HHIIII", body, 0)
                if ifid >= len(interfaces) or 20 + cap > len(body):
                    damage = f"packet block at byte {pos} is inconsistent"
                    break
                add(pos + 28, base + ifid, hi, lo, cap, wire)
        elif btype != PCAPNG_SHB:
            skipped += 1  # name resolution, statistics, custom, decryption secrets …: not packets
        pos += blen
    if damage is None and pos != end:
        damage = f"capture cut short inside block header at byte {pos}"
    if not all_ifaces and not done + len(packets) and damage:
        raise CaptureError(path, damage)
    if bad_options:
        warnings.warn(CaptureWarning(path, f"{bad_options} interface description(s) hold an option that runs past "
                                     f"the block's end (the first at byte {first_bad_option}); the options from "
                                     "there on are not read"))
    if damage:
        warnings.warn(CaptureWarning(path, damage + f"; read {done + len(packets)} packets"))
    records, held = _pcapng_records(path, raw, compressed, packets, all_ifaces, done)
    if held + outside:
        warnings.warn(CaptureWarning(path, f"{held + outside} packet timestamp(s) lie outside the years 1823 to 2116 "
                                     "(2^62 ns either side of 1970); each is held at the nearer end"))
    if len(records) or not done:
        yield records


def _pcapng_records(path: str, raw: bytes, compressed: bool, packets: _Packets, ifaces: list[_Iface],
                    done: int) -> tuple[Records, int]:
    """The packets taken so far as Records (`done` packets before them), and how many of their timestamps were
    held within ±HELD_NS; `packets` is emptied for the next chunk."""
    offset, caplen, wirelen, ts_units, ifid = packets.filled()
    packets.clear()
    ts_ns, outside = _timestamps_ns(ts_units, ifid, ifaces)
    linktype = np.array([i.linktype for i in ifaces], np.uint16)[ifid] if ifaces else ifid
    return _records(path, raw, "pcapng", compressed, offset=offset, caplen=caplen, wirelen=wirelen, ts_ns=ts_ns,
                    linktype=linktype, iface=ifid, first=done), outside


_NS = 10**9
# Timestamps are held within 2^62 - 1 ns of 1970 (late 1823 to early 2116; a classic pcap's unsigned seconds end
# in 2106), so that the difference of any two, and a time plus any window up to 146 years, fit in 64 bits
# wherever the analysis takes them.
HELD_NS = (1 << 62) - 1
# An interface's timestamp of fewer than 2^32 whole seconds, and an offset of fewer than 2^32 seconds either
# way, sum to fewer than 2^63 ns: such packets (every real capture's, until the year 2106) take int64 arithmetic.
_SAFE_SECONDS = 1 << 32


def _timestamps_ns(units: np.ndarray, ifid: np.ndarray, ifaces: list[_Iface]) -> tuple[np.ndarray, int]:
    """Each packet's timestamp (in its interface's units, uint64) → integer ns since 1970, exactly, with its
    interface's if_tsoffset added (seconds, signed 64-bit, as the pcapng spec and Wireshark take it); and how
    many lie beyond ±HELD_NS (held at the nearer end). Per if_tsresol in use (at most 256), not per interface:
    a capture of 65,536 interfaces reads as fast as one of one."""
    ts_ns = np.zeros(len(units), np.int64)
    if not len(units):
        return ts_ns, 0
    used = np.flatnonzero(np.bincount(ifid, minlength=len(ifaces)))
    offsets = np.array([ifaces[i].tsoffset_s for i in used.tolist()], np.int64)
    offset: np.ndarray | int = int(offsets[0]) if (offsets == offsets[0]).all() else \
        np.array([i.tsoffset_s for i in ifaces], np.int64)[ifid]
    resols = np.array([ifaces[i].tsresol[0] << 7 | ifaces[i].tsresol[1] for i in used.tolist()], np.uint8)
    codes = np.unique(resols)
    resol_of = None if len(codes) == 1 else np.array([i.tsresol[0] << 7 | i.tsresol[1] for i in ifaces], np.uint8)[ifid]
    far = (offset <= -_SAFE_SECONDS) | (offset >= _SAFE_SECONDS)  # an offset int64 arithmetic may not take
    offset_ns = np.where(far, 0, offset) * _NS  # (exact: under 2^32 × 10^9)
    outside = 0
    for code in codes.tolist():
        rows = slice(None) if resol_of is None else np.flatnonzero(resol_of == code)
        binary, exp = bool(code >> 7), code & 0x7F
        local, wide = _local_ns(units[rows], binary, exp)
        local += offset_ns if np.ndim(offset_ns) == 0 else offset_ns[rows]
        wide |= far if np.ndim(far) == 0 else far[rows]
        if wide.any():
            # Beyond int64 on the way, or at the end: in Python integers, exactly, then held.
            off = offset if np.ndim(offset) == 0 else offset[rows][wide].astype(object)
            exact = units[rows][wide].astype(object) * _NS // ((2 if binary else 10) ** exp) + off * _NS
            held = np.clip(exact, -HELD_NS, HELD_NS)
            outside += int((held != exact).sum())
            local[wide] = held.astype(np.int64)
        if np.any(offset_ns):  # (without an offset the others are below 2^32 s + 1 s: inside)
            beyond = (local > HELD_NS) | (local < -HELD_NS)
            outside += int(beyond.sum())
            np.clip(local, -HELD_NS, HELD_NS, out=local)
        ts_ns[rows] = local
    return ts_ns, outside


def _local_ns(units: np.ndarray, binary: bool, exp: int) -> tuple[np.ndarray, np.ndarray]:
    """floor(units × 10^9 / resolution) (units of 10^-exp or 2^-exp s) as int64, where the whole seconds are
    fewer than 2^32; and which rows are not (their values here are meaningless: `_timestamps_ns` redoes them).
    Integer arithmetic throughout, exact for every resolution pcapng allows (exponents 0 to 127)."""
    if not binary and exp <= 9:
        wide = units >= np.uint64(_SAFE_SECONDS * 10**exp)
        return (units * np.uint64(10 ** (9 - exp))).view(np.int64), wide
    if binary:
        sec = units >> np.uint64(exp) if exp < 64 else np.zeros_like(units)
        frac = units & np.uint64((1 << exp) - 1) if exp < 64 else units
        sub = _binary_fraction_ns(frac, exp)
    else:
        sec = units // np.uint64(10**exp) if exp <= 19 else np.zeros_like(units)  # (10^20 > any uint64)
        rem = units % np.uint64(10**exp) if exp <= 19 else units
        sub = rem // np.uint64(10 ** (exp - 9)) if exp - 9 <= 19 else np.zeros_like(units)
    wide = sec >= np.uint64(_SAFE_SECONDS)
    return (sec * np.uint64(_NS) + sub).view(np.int64), wide


def _binary_fraction_ns(frac: np.ndarray, exp: int) -> np.ndarray:
    """floor(frac × 10^9 / 2^exp) for frac < 2^min(exp, 64), in uint64 without overflow: 10^9 = 5^9 × 2^9, and
    frac × 5^9 is taken as two 32-bit halves (each product under 2^53), so the division by 2^(exp-9) is shifts."""
    if exp <= 32:
        return (frac * np.uint64(_NS)) >> np.uint64(exp)  # (frac < 2^32: the product is under 2^62)
    shift = exp - 9  # > 23
    high = (frac >> np.uint64(32)) * np.uint64(5**9)
    low = (frac & np.uint64(0xFFFFFFFF)) * np.uint64(5**9)
    if shift >= 32:  # floor((high·2^32 + low) / 2^shift) = (high + low // 2^32) >> (shift - 32)
        return (high + (low >> np.uint64(32))) >> np.uint64(shift - 32) if shift - 32 < 64 else np.zeros_like(frac)
    # high·2^(32-shift) is at most the result, which is under 10^9: no overflow
    return (high << np.uint64(32 - shift)) + (low >> np.uint64(shift))
