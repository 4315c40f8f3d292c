"""The record chains of a capture: a classic pcap's records, and pcapng's runs of enhanced packet blocks.

Each record's length says where the next begins, so a walk is a per-record loop; it keeps no Python object per
record (offsets, lengths and timestamps go into typed arrays). `pcap_records` walks in _reader.c where it was
built and in the numpy reference here where not (the same records, damage and stopping place: tests/
test_compiled.py reads captures both ways). `epb_run` takes a run of enhanced packet blocks in _reader.c and
is a no-op without it: the reader then reads those blocks one by one, as it reads every other block.
"""

from __future__ import annotations

import itertools
import struct
from array import array
from types import ModuleType

import numpy as np

from .. import accel
from .buffers import RecordArrays, Releaser, u32_view


def pcap_records(raw: bytes, endian: str, nano: bool, limit: int, snaplen: int, start: int = 24,
                 most: int | None = None, before: int = 0) -> tuple[tuple[np.ndarray, ...], int, str | None]:
    """A classic pcap's records from byte `start` (after its 24-byte header, or where an earlier walk stopped), at
    most `most` of them (None: to the end): (offset of each packet's bytes, caplen, wirelen, ts_ns) as int64
    arrays, the position where the walk stopped, and the damage that stopped it (or None). A record claiming
    more than `limit` bytes, or running past the end, ends the walk before it; `before` records precede
    `start` (damage names a record by its number in the file)."""
    reader = accel.COMPILED.reader
    if reader is not None:
        return _pcap_compiled(reader, raw, endian, nano, limit, snaplen, start, most, before)
    hdr, pos, damage = _walk_pcap(raw, endian, limit, snaplen, start, most, before)
    return _pcap_headers(raw, endian, nano, hdr), pos, damage


def epb_run(arrays: RecordArrays, raw: bytes, pos: int, big: bool, interfaces: int, base: int,
            max_block: int, most: int | None = None) -> int:
    """Take the run of pcapng enhanced packet blocks at `pos` into `arrays` (offset, caplen, wirelen, ts_units,
    iface), at most `most` of them (None: the whole run); returns where the run stopped: at the first block that
    is not a well-formed enhanced packet block of a described interface (for the caller to read), or after `most`
    blocks. Without the compiled walk, takes none (returns `pos`)."""
    reader = accel.COMPILED.reader
    if reader is None:
        return pos
    left = (1 << 62) if most is None else most
    while left:
        room = [a[:left] for a in arrays.room()]
        k, pos = reader.walk_epb(raw, pos, big, interfaces, base, max_block, *room)
        arrays.count += k
        left -= k
        if k < len(room[0]) or not len(room[0]):
            return pos
    return pos


# Record walk: after this many records walked one by one, try to predict the next ones (see _walk_pcap).
_SPECULATE_AFTER = 16


_SPECULATE_MAX = 1 << 16


def _walk_pcap(raw: bytes, endian: str, limit: int, snaplen: int, start: int = 24, most: int | None = None,
               before: int = 0) -> tuple[np.ndarray, int, str | None]:
    """Record starts of a classic pcap (from `start`, at most `most`), the position where the walk stopped, and
    the damage found (or None).

    Each record's length says where the next begins, so the walk is sequential; but captures repeat
    themselves (a scan's probe and reply lengths alternate for millions of records). So after a few records
    walked one by one, the walk guesses that the last one or two record lengths repeat, computes where the
    next K records would start, and checks the guess with numpy: the caplen read at each guessed start must
    be the guessed one. The records up to the first wrong guess are exactly those the one-by-one walk would
    have found (it reads nothing else); it resumes there. K doubles while guesses hold, and guessing backs
    off while they fail, so captures that do not repeat pay almost nothing for it.
    """
    caplen_at = struct.Struct(endian + "I").unpack_from
    view = u32_view(raw, endian == ">")
    release = Releaser(raw)
    chunks: list[np.ndarray] = []  # record starts found, in order: walked arrays and verified guesses
    done = 0  # records in chunks
    pos, end = start, len(raw)
    most = (1 << 62) if most is None else most
    damage = None
    k = 64  # records guessed at once
    budget = _SPECULATE_AFTER
    while done < most:
        starts = array("q")
        append = starts.append
        for _ in range(min(budget, most - done)):
            if pos + 16 > end:
                break
            cap = caplen_at(raw, pos + 8)[0]
            if cap > limit:
                damage = (f"record {before + done + len(starts) + 1} at byte {pos} claims {cap} bytes (snaplen "
                          f"{snaplen}); stopping there")
                break
            nxt = pos + 16 + cap
            if nxt > end:
                damage = f"capture cut short inside record {before + done + len(starts) + 1} (byte {pos})"
                break
            append(pos)
            pos = nxt
        else:
            starts_np = np.frombuffer(starts, np.int64)
            chunks.append(starts_np)
            done += len(starts_np)
            if done >= most:
                break
            guessed = _guess(view, starts_np, pos, end, min(k, most - done))
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


def _pcap_headers(raw: bytes, endian: str, nano: bool, hdr: np.ndarray) -> tuple[np.ndarray, ...]:
    """Packet offsets, caplen, wirelen and ts_ns of the records whose headers start at `hdr` (numpy)."""
    view = u32_view(raw, endian == ">")
    caplen, wirelen, ts_ns = (np.empty(len(hdr), np.int64) for _ in range(3))
    release = Releaser(raw)
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


def _pcap_compiled(reader: ModuleType, raw: bytes, endian: str, nano: bool, limit: int, snaplen: int,
                   start: int = 24, most: int | None = None,
                   before: int = 0) -> tuple[tuple[np.ndarray, ...], int, str | None]:
    """`_walk_pcap` and `_pcap_headers` in one pass of _reader.walk_pcap: the same records, the same damage,
    the same stopping place."""
    release = Releaser(raw)
    out = RecordArrays((np.int64,) * 4, len(raw) - start, 16, most)
    pos = start
    while True:
        room = [a[:_COMPILED_RECORDS] for a in out.room()]
        k, pos, status, claimed = reader.walk_pcap(raw, pos, endian == ">", nano, limit, *room)
        out.count += k
        release(pos)
        if status or k < len(room[0]) or not len(room[0]) or pos + 16 > len(raw) or out.count == most:
            break
    done = before + out.count
    damage = None
    if status == 1:
        damage = f"record {done + 1} at byte {pos} claims {claimed} bytes (snaplen {snaplen}); stopping there"
    elif status == 2:
        damage = f"capture cut short inside record {done + 1} (byte {pos})"
    return out.filled(), pos, damage
