"""Capture containers → an index of records (where each packet's bytes lie, when, on which link).

pcap (µs or ns magic, either byte order), pcapng (any number of sections and interfaces, each with its own
link type, timestamp resolution and offset) and gzip-compressed files of either. The file is mapped (or
decompressed) into one buffer; walking the record chain is a per-record loop (each record's length says where
the next begins, so it cannot be vectorised), and it keeps no Python object per record: offsets, lengths and
timestamps go into typed arrays. The walk is compiled C where analyzer._fast was built (a classic pcap's
records, pcapng's runs of enhanced packet blocks); else, and for every other pcapng block, it is the numpy
and Python code here, which is the reference (tests/test_compiled.py reads captures both ways).

Damage policy: a capture cut short, or a record whose length is absurd, ends the walk at the last good
record with a `CaptureWarning`; an unreadable file raises `CaptureError` naming the file and the problem.
"""

from __future__ import annotations

import dataclasses
import itertools
import mmap
import os
import struct
import warnings
import zlib
from array import array
from dataclasses import dataclass
from types import ModuleType
from typing import BinaryIO

import numpy as np

from .. import accel as compiled
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

    def __len__(self) -> int:
        return len(self.offset)

    def take(self, index: np.ndarray | slice) -> Records:
        """The records at `index` (an array of positions: copies of their entries; a slice: views), sharing
        `data`."""
        return dataclasses.replace(self, offset=self.offset[index], caplen=self.caplen[index],
                                   wirelen=self.wirelen[index], ts_ns=self.ts_ns[index],
                                   linktype=self.linktype[index], iface=self.iface[index])

    def release(self, start: int, stop: int) -> None:
        """Records start … stop-1 are decoded: when `data` maps the file, give their pages back to the
        kernel (they stay in the page cache; touching them again maps them again)."""
        if self.mapping is not None and start < stop:
            _give_back(self.mapping, int(self.offset[start]), int(self.offset[stop - 1] + self.caplen[stop - 1]))


def _give_back(mapping: mmap.mmap, start: int, end: int) -> None:
    """The whole pages of mapping[start:end] go back to the kernel (they stay in the page cache; touching
    them again maps them again). The partial pages at either end are kept: neighbours may still need them."""
    lo = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
    hi = (end // mmap.PAGESIZE) * mmap.PAGESIZE
    if hi > lo:
        mapping.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


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


def records_of(path: str, raw: bytes | bytearray | mmap.mmap, compressed: bool = False) -> Records:
    """`read_records` of a capture's bytes (decompressed) already in memory, `path` naming it in messages (the
    fuzz harness reads each case from an exact-size copy, so that AddressSanitizer sees a read past its end)."""
    if len(raw) == 0:
        raise CaptureError(path, "empty file (0 bytes), not a capture")
    if len(raw) < 4:
        raise CaptureError(path, f"too short to be a capture ({len(raw)} bytes)")
    magic_le = struct.unpack_from("<I", raw)[0]
    magic_be = struct.unpack_from(">I", raw)[0]
    if magic_le in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
        return _pcap(path, raw, "<", magic_le == PCAP_MAGIC_NS, compressed)
    if magic_be in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
        return _pcap(path, raw, ">", magic_be == PCAP_MAGIC_NS, compressed)
    if magic_le == PCAPNG_SHB:
        return _pcapng(path, raw, compressed)
    if magic_le in (0xA1B2CD34, 0x34CDB2A1):
        raise CaptureError(path, "Kuznetzov's modified pcap format is not supported")
    raise CaptureError(path, f"not a pcap or pcapng file (starts with bytes {raw[:4].hex()})")


class _Releaser:
    """Gives a mapped file's pages back to the kernel behind a walk, every few MB (no-op for bytes)."""

    STEP = 1 << 24

    def __init__(self, raw: bytes | mmap.mmap) -> None:
        self.mapping = raw if isinstance(raw, mmap.mmap) else None
        self.done = 0

    def __call__(self, pos: int) -> None:
        if self.mapping is not None and pos - self.done >= self.STEP:
            _give_back(self.mapping, self.done, pos)
            self.done = pos


def _walked(raw: bytes | mmap.mmap) -> mmap.mmap | None:
    """After the record walk: a mapped file's pages go back to the kernel (the decoder maps them again, a
    chunk at a time). Returns the mapping, or None for bytes in memory."""
    if not isinstance(raw, mmap.mmap):
        return None
    _give_back(raw, 0, len(raw))
    return raw


def _u32_view(raw: bytes, big: bool) -> np.ndarray:
    """The 32-bit integer starting at every byte of `raw` (overlapping views, stride 1): one gather reads a field."""
    return np.ndarray((max(len(raw) - 3, 0),), ">u4" if big else "<u4", buffer=raw, strides=(1,))


# Record walk: after this many records walked one by one, try to predict the next ones (see _walk_pcap).
_SPECULATE_AFTER = 16
_SPECULATE_MAX = 1 << 16


def _walk_pcap(raw: bytes, endian: str, limit: int, snaplen: int) -> tuple[np.ndarray, int, str | None]:
    """Record starts of a classic pcap, the position where the walk stopped, and the damage found (or None).

    Each record's length says where the next begins, so the walk is sequential; but captures repeat
    themselves (a scan's probe and reply lengths alternate for millions of records). So after a few records
    walked one by one, the walk guesses that the last one or two record lengths repeat, computes where the
    next K records would start, and checks the guess with numpy: the caplen read at each guessed start must
    be the guessed one. The records up to the first wrong guess are exactly those the one-by-one walk would
    have found (it reads nothing else); it resumes there. K doubles while guesses hold, and guessing backs
    off while they fail, so captures that do not repeat pay almost nothing for it.
    """
    caplen_at = struct.Struct(endian + "I").unpack_from
    view = _u32_view(raw, endian == ">")
    release = _Releaser(raw)
    chunks: list[np.ndarray] = []  # record starts found, in order: walked arrays and verified guesses
    done = 0  # records in chunks
    pos, end = 24, len(raw)
    damage = None
    k = 64  # records guessed at once
    budget = _SPECULATE_AFTER
    while True:
        starts = array("q")
        append = starts.append
        for _ in range(budget):
            if pos + 16 > end:
                break
            cap = caplen_at(raw, pos + 8)[0]
            if cap > limit:
                damage = f"record {done + len(starts) + 1} at byte {pos} claims {cap} bytes (snaplen {snaplen}); stopping there"
                break
            nxt = pos + 16 + cap
            if nxt > end:
                damage = f"capture cut short inside record {done + len(starts) + 1} (byte {pos})"
                break
            append(pos)
            pos = nxt
        else:
            starts_np = np.frombuffer(starts, np.int64)
            chunks.append(starts_np)
            done += len(starts_np)
            guessed = _guess(view, starts_np, pos, end, k)
            if guessed is None:
                budget = min(budget * 2, 4096)  # nothing to guess from, or a wrong guess: walk longer first
                continue
            found, pos = guessed
            chunks.append(found)
            done += len(found)
            release(pos)
            if len(found) == k:
                k = min(k * 2, _SPECULATE_MAX)
                budget = 2
            else:
                k = 64
                budget = _SPECULATE_AFTER if len(found) else min(budget * 2, 4096)
            continue
        chunks.append(np.frombuffer(starts, np.int64))
        break
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.int64)), pos, damage


def _guess(view: np.ndarray, walked: np.ndarray, pos: int, end: int, k: int) -> tuple[np.ndarray, int] | None:
    """Guess the next k records repeat the last one's or last two's lengths; keep the verified prefix."""
    if len(walked) < 4:
        return None
    s = walked[-4:].tolist() + [pos]
    sizes = [b - a for a, b in itertools.pairwise(s)]
    if sizes[3] == sizes[2] == sizes[1]:
        period = sizes[3:]
    elif sizes[3] == sizes[1] and sizes[2] == sizes[0]:
        period = sizes[2:]
    else:
        return None
    step = sum(period)
    k = min(k, ((end - pos) // step) * len(period))  # every guessed record must end inside the file
    if k <= 0:
        return None
    i = np.arange(k)
    phase = i % len(period)
    size = np.array(period, np.int64)[phase]
    prefix = np.array([0] + period[:-1], np.int64).cumsum()  # where each phase starts within a period
    start = pos + (i // len(period)) * step + prefix[phase]
    wrong = np.flatnonzero(view[start + 8] != size - 16)
    m = int(wrong[0]) if len(wrong) else k
    if m == 0:
        return None
    return start[:m], int(start[m - 1] + size[m - 1])


def _pcap(path: str, raw: bytes, endian: str, nano: bool, compressed: bool) -> Records:
    if len(raw) < 24:
        raise CaptureError(path, f"pcap global header cut short ({len(raw)} of 24 bytes)")
    _, _, _, _, snaplen, network = struct.unpack_from(endian + "HHiIII", raw, 4)
    linktype, fcs = _link_field(network)
    limit = max(min(MAX_RECORD, max(snaplen, 65535) * 4), 65535 + 64)
    fast = compiled.FAST
    if fast is not None:
        (offset, caplen, wirelen, ts_ns), pos, damage = _walk_pcap_compiled(fast, raw, endian, nano, limit, snaplen)
    else:
        hdr, pos, damage = _walk_pcap(raw, endian, limit, snaplen)
        offset, caplen, wirelen, ts_ns = _pcap_headers(raw, endian, nano, hdr)
    end = len(raw)
    if damage is None and pos != end:
        damage = f"capture cut short inside record header {len(offset) + 1} (byte {pos})"
    if damage:
        warnings.warn(CaptureWarning(path, damage + f"; read {len(offset)} records"))
    # One link type and one interface for every record: one value each, not an array of copies.
    return _records(path, raw, "pcap", compressed, offset=offset, caplen=caplen, wirelen=wirelen, ts_ns=ts_ns,
                    linktype=np.broadcast_to(np.uint16(linktype), (len(offset),)),
                    iface=np.broadcast_to(np.uint16(0), (len(offset),)), fcs=fcs)


def _link_field(network: int) -> tuple[int, int]:
    """A classic pcap header's 32-bit link-type field → (link type, FCS bytes ending each frame), as libpcap's
    pcap-common.c (LT_LINKTYPE, LT_FCS_LENGTH_PRESENT, LT_FCS_LENGTH) and Wireshark's libpcap reader define it:
    the link type is the low 16 bits; bit 26 says the top 4 bits hold the FCS length, in 16-bit units. The
    bits between are reserved: libpcap ignores them, and so does this."""
    fcs = ((network >> 28) & 0xF) * 2 if network & 0x04000000 else 0
    return network & 0xFFFF, fcs


def _records(path: str, raw: bytes | mmap.mmap, fmt: str, compressed: bool, **columns: np.ndarray) -> Records:
    """The Records of a walked capture: its per-record columns, over the file's bytes (a mapped file's pages given
    back now that the walk is done: `_walked`)."""
    return Records(path=path, data=np.frombuffer(raw, np.uint8), format=fmt, compressed=compressed,
                   mapping=_walked(raw), **columns)


def _pcap_headers(raw: bytes, endian: str, nano: bool, hdr: np.ndarray) -> tuple[np.ndarray, ...]:
    """Packet offsets, caplen, wirelen and ts_ns of the records whose headers start at `hdr` (numpy)."""
    view = _u32_view(raw, endian == ">")
    caplen, wirelen, ts_ns = (np.empty(len(hdr), np.int64) for _ in range(3))
    release = _Releaser(raw)
    for a in range(0, len(hdr), 1 << 18):  # the record headers, a block at a time, pages given back behind
        at = hdr[a : a + (1 << 18)]
        b = a + len(at)
        caplen[a:b], wirelen[a:b] = view[at + 8], view[at + 12]
        frac = view[at + 4].astype(np.int64)
        ts_ns[a:b] = view[at].astype(np.int64) * 1_000_000_000 + (frac if nano else frac * 1000)
        release(int(at[-1]))
    hdr += 16  # (in place: each record's packet bytes start after its 16-byte header)
    return hdr, caplen, wirelen, ts_ns


# Records the compiled walk takes per call: the pages behind it are given back between calls.
_COMPILED_RECORDS = 1 << 20


def _walk_pcap_compiled(fast: ModuleType, raw: bytes, endian: str, nano: bool, limit: int,
                        snaplen: int) -> tuple[tuple[np.ndarray, ...], int, str | None]:
    """`_walk_pcap` and `_pcap_headers` in one pass of analyzer._fast.walk_pcap: the same records, the same
    damage, the same stopping place."""
    release = _Releaser(raw)
    out = _RecordArrays((np.int64,) * 4, len(raw), 16)
    pos = 24
    while True:
        room = [a[:_COMPILED_RECORDS] for a in out.room()]
        k, pos, status, claimed = fast.walk_pcap(raw, pos, endian == ">", nano, limit, *room)
        out.count += k
        release(pos)
        if status or k < len(room[0]) or not len(room[0]) or pos + 16 > len(raw):
            break
    done = out.count
    damage = None
    if status == 1:
        damage = f"record {done + 1} at byte {pos} claims {claimed} bytes (snaplen {snaplen}); stopping there"
    elif status == 2:
        damage = f"capture cut short inside record {done + 1} (byte {pos})"
    return out.filled(), pos, damage


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


class _RecordArrays:
    """Per-record columns the compiled walks fill in file order. Sized for a guess of the record count (a record
    every 64 bytes of file), and grown (doubled, up to as many as the file's smallest records could make) when
    the guess falls short: a capture of many tiny records costs a copy, and none costs an allocation of a file's
    size in every column (which a machine short of memory may refuse outright)."""

    def __init__(self, types: tuple, size: int, smallest: int) -> None:
        self.most = size // smallest + 1
        self.columns = [np.empty(min(self.most, size // 64 + 1024), t) for t in types]
        self.count = 0

    def room(self, need: int = 1) -> list[np.ndarray]:
        """The free part of each column (at least `need` entries, where the file could hold that many)."""
        size = len(self.columns[0])
        if size - self.count < need and size < self.most:
            size = min(self.most, max(2 * size, self.count + need))
            self.columns = [np.concatenate([c[: self.count], np.empty(size - self.count, c.dtype)])
                            for c in self.columns]
        return [c[self.count :] for c in self.columns]

    def filled(self) -> tuple[np.ndarray, ...]:
        return tuple(c[: self.count] for c in self.columns)


class _Packets:
    """The packet records of a pcapng as the block walk finds them, in file order: appended one by one, or
    taken a run of enhanced packet blocks at a time by the compiled walk (analyzer._fast.walk_epb)."""

    def __init__(self, size: int) -> None:
        # offset, caplen, wirelen, ts_units, iface; the smallest packet block (simple) takes 16 bytes
        self.arrays = _RecordArrays(_PCAPNG_TYPES, size, 16)
        self.one_by_one: tuple[array, ...] = tuple(array(code) for code in "qqqQH")

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

    def run(self, fast: ModuleType, raw: bytes, pos: int, endian: str, interfaces: int, base: int) -> int:
        """Take the run of enhanced packet blocks at `pos` (compiled); returns where it stopped."""
        self._flush()
        while True:
            room = self.arrays.room()
            k, pos = fast.walk_epb(raw, pos, endian == ">", interfaces, base, MAX_RECORD + 64, *room)
            self.arrays.count += k
            if k < len(room[0]) or not len(room[0]):
                return pos

    def __len__(self) -> int:
        return self.arrays.count + len(self.one_by_one[0])

    def filled(self) -> tuple[np.ndarray, ...]:
        self._flush()
        return self.arrays.filled()


# The fixed fields of each block type read here, in bytes: interface description, enhanced, simple and obsolete
# packet blocks.
_PCAPNG_BODY_MIN = {1: 8, 6: 20, 3: 4, 2: 20}
_PCAPNG_TYPES = (np.int64, np.int64, np.int64, np.uint64, np.uint16)


def _pcapng(path: str, raw: bytes, compressed: bool) -> Records:
    end = len(raw)
    view = memoryview(raw)
    packets = _Packets(len(raw))
    add = packets.add
    fast = compiled.FAST
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
        btype = struct.unpack_from(endian + "I", raw, pos)[0]
        if btype == 6 and fast is not None:
            pos = packets.run(fast, raw, pos, endian, len(interfaces), base)
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
    if not all_ifaces and not len(packets) and damage:
        raise CaptureError(path, damage)
    if bad_options:
        warnings.warn(CaptureWarning(path, f"{bad_options} interface description(s) hold an option that runs past "
                                     f"the block's end (the first at byte {first_bad_option}); the options from "
                                     "there on are not read"))
    if damage:
        warnings.warn(CaptureWarning(path, damage + f"; read {len(packets)} packets"))
    offset, caplen, wirelen, ts_units, ifid = packets.filled()
    ts_ns, outside = _timestamps_ns(ts_units, ifid, all_ifaces)
    if outside:
        warnings.warn(CaptureWarning(path, f"{outside} packet timestamp(s) lie beyond what 64-bit nanoseconds "
                                     "since 1970 hold (years 1677 to 2262); each is held at the nearer end"))
    linktype = np.array([i.linktype for i in all_ifaces], np.uint16)[ifid] if all_ifaces else ifid
    return _records(path, raw, "pcapng", compressed, offset=offset, caplen=caplen, wirelen=wirelen, ts_ns=ts_ns,
                    linktype=linktype, iface=ifid)


_NS = 10**9
_INT64 = (-(1 << 63), (1 << 63) - 1)
# An interface's timestamp of fewer than 2^32 whole seconds, and an offset of fewer than 2^32 seconds either
# way, sum to fewer than 2^63 ns: such packets (every real capture's, until the year 2106) take int64 arithmetic.
_SAFE_SECONDS = 1 << 32


def _timestamps_ns(units: np.ndarray, ifid: np.ndarray, ifaces: list[_Iface]) -> tuple[np.ndarray, int]:
    """Each packet's timestamp (in its interface's units, uint64) → integer ns since 1970, exactly, with its
    interface's if_tsoffset added (seconds, signed 64-bit, as the pcapng spec and Wireshark take it); and how
    many lie beyond int64 ns (held at the nearer end). Per if_tsresol in use (at most 256), not per interface:
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
            # Beyond int64 on the way, or at the end: in Python integers, exactly, then held within int64.
            off = offset if np.ndim(offset) == 0 else offset[rows][wide].astype(object)
            exact = units[rows][wide].astype(object) * _NS // ((2 if binary else 10) ** exp) + off * _NS
            held = np.clip(exact, *_INT64)
            outside += int((held != exact).sum())
            local[wide] = held.astype(np.int64)
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
