"""Captures → the packets table a chunk at a time, merged, filtered and numbered, in bounded memory.

The files of `reading/sources.py` are read a chunk of records at a time (`formats.iter_records`) and merged
into one stream in the order of `reading/merge.py`: a record is given out once no record of another file still
unread could come before it (each file's unread records have running-maximum times at least its last read
one's), so only the files whose packets overlap the stream's present are open, and each holds at most a chunk
or two. Every record gets its frame number in the merged stream (filtered or not: numbers are the capture's,
as Wireshark would number the merged file), the time range drops records before they are decoded, the address
and port filters drop rows after, and a second sensor's copies are dropped as they are met (the last
`dedup_ns` of the stream is kept to meet them). `packet_chunks` yields the packets tables; `read_sources`
(reading/many.py) concatenates them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import said_of
from .filters import Filter
from .formats import Records, iter_records
from .merge import (
    NO_HASH,
    FrameIndex,
    concat_tables,
    duplicates,
    frame_hashes,
    merged_order,
    overlapping,
    running_max,
)
from .packets import decode
from .sources import Source

_NOT_YET = np.iinfo(np.int64).max  # (no key held)
_UNKNOWN = np.iinfo(np.int64).min  # (a file's next keys not known: nothing may pass it)


@dataclass
class _File:
    """One file's place in the merge: its records read and not yet given out (their merge keys, places in the
    file), the packets decoded of them that the filters kept (with their hashes), and what is left to read."""

    index: int
    source: Source
    chunks: Iterator[Records] | None = None
    top: int | None = None  # running maximum so far
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    places: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    kept: list[pd.DataFrame] = field(default_factory=list)  # (frames: places + 1)
    hashes: list[np.ndarray] = field(default_factory=list)
    read_all: bool = False
    first: int = 0  # first packet's time (from the records read), for the overlap of captures
    last: int = 0

    @property
    def exhausted(self) -> bool:
        return self.read_all and not len(self.keys)


@dataclass(frozen=True)
class Reading:
    """How far reading has gone: bytes of the captures' files (on disk) and files read to their end."""

    bytes_done: int
    bytes_total: int
    files_done: int
    files: int


@dataclass
class Stream:
    """A merged stream's state that outlives its chunks: the frame index (merged frame → file, frame there) built
    as records are given out, and the counters the outputs report."""

    names: tuple[str, ...]
    runs: list[tuple[int, int, int]] = field(default_factory=list)  # (merged start, file, its first frame there)
    frames: int = 0  # records given out so far
    malformed: int = 0
    formats: set[str] = field(default_factory=set)
    compressed: bool = False
    paths: tuple[str, ...] = ()  # the files read
    progress: Callable[[Reading], None] | None = None  # told as each chunk of records is read
    read: dict[int, float] = field(default_factory=dict)  # each file begun: the share of it read (0 to 1)
    sizes: tuple[int, ...] = ()  # the files' sizes on disk (bytes), when progress is told

    @classmethod
    def of(cls, files: tuple[Source, ...], progress: Callable[[Reading], None] | None = None) -> Stream:
        """The stream of these files (progress told to `progress`)."""
        return cls(tuple(f.name for f in files), paths=tuple(f.path for f in files), progress=progress)

    def advanced(self, file: int, share: float) -> None:
        """File `file` read to `share` of it: progress told (the files' sizes weigh their shares)."""
        if self.progress is None:
            return
        if not self.sizes:
            self.sizes = tuple(os.path.getsize(p) for p in self.paths)
        self.read[file] = share
        done = sum(self.sizes[i] * r for i, r in self.read.items())
        self.progress(Reading(int(done), sum(self.sizes), sum(r >= 1 for r in self.read.values()), len(self.sizes)))

    def index(self) -> FrameIndex | None:
        """The frame index (None for one file: its frames are the merged ones)."""
        if len(self.names) < 2:
            return None
        start, file, file_start = (np.array(c, np.int64) for c in zip(*self.runs)) if self.runs else (
            np.zeros(0, np.int64),) * 3
        return FrameIndex(self.names, start, file, file_start)

    def add_runs(self, file: np.ndarray, place: np.ndarray) -> None:
        """Records given out (in merged order): their files and places, extending the runs of the index."""
        index = FrameIndex.of(self.names, file, place + 1)
        for s, f, fs in zip((index.start + self.frames).tolist(), index.file.tolist(), index.file_start.tolist()):
            if self.runs:
                ps, pf, pfs = self.runs[-1]
                if pf == f and pfs + (s - ps) == fs:
                    continue  # (the run goes on)
            self.runs.append((s, f, fs))
        self.frames += len(file)


def packet_chunks(files: tuple[Source, ...], columns: list[str], keep: Filter, dedup_ns: int, chunk: int,
                  stream: Stream) -> Iterator[pd.DataFrame]:
    """The kept packets of `files` (columns `columns`, which hold ts_ns and what the filters read), in merged
    order, numbered there, a table of about `chunk` records' packets at a time; `stream` gathers the frame index
    and counts as the chunks go."""
    state = [_File(i, f) for i, f in enumerate(files)]
    hashed = len(files) > 1 and dedup_ns > 0
    tail: dict[str, np.ndarray] | None = None  # the last dedup_ns of kept rows given out, to meet copies
    while True:
        _fill(state, columns, keep, dedup_ns if hashed else 0, chunk, stream)
        live = [f for f in state if not f.exhausted]
        if not live:
            return
        out_file, out_place = _safe_prefix(live)
        if not len(out_file):
            continue  # (a file's reading must go on first: _fill reads the one holding the stream back)
        first_frame = stream.frames + 1
        stream.add_runs(out_file, out_place)
        taken = _take_kept(state, out_file, out_place, first_frame)
        if taken is None:
            continue  # (none of these records was kept)
        table, frames, origin, hashes = taken
        if hashed and len(table):
            spans = np.array([(f.first, f.last) for f in state], np.int64)
            copies = np.zeros(len(table), bool)
            met = hashes != NO_HASH  # (rows no other file's could copy were not hashed: _may_meet_copies)
            if met.any():
                copies[met], tail = duplicates(table["ts_ns"].to_numpy(np.int64)[met], origin[met], hashes[met], tail,
                                               dedup_ns, overlapping(spans[:, 0], spans[:, 1]))
            if copies.any():
                table, frames = table[~copies].reset_index(drop=True), frames[~copies]
        table["frame"] = frames
        yield table


def _fill(state: list[_File], columns: list[str], keep: Filter, dedup_ns: int, chunk: int, stream: Stream) -> None:
    """Read on in the files that hold the merge back: every file begun and not read to the end holds records
    unless its next records could not yet come (it starts later than everything held)."""
    held = [f for f in state if len(f.keys)]
    frontier = min((int(f.keys[-1]) for f in held), default=_NOT_YET)
    for f in state:
        if f.read_all or len(f.keys):
            continue
        if f.chunks is None and f.source.first_ns is not None and f.source.first_ns > frontier and held:
            continue  # (not yet begun, and it starts after what is held: nothing of it can come first)
        _read_chunk(state, f, columns, keep, dedup_ns, chunk, stream)
        return  # (one read at a time: the merge may now give out records)


def _read_chunk(state: list[_File], f: _File, columns: list[str], keep: Filter, dedup_ns: int, chunk: int,
                stream: Stream) -> None:
    """The next chunk of `f` read, decoded and filtered into its hold; its frames hashed (to meet a second
    sensor's copies, `dedup_ns` apart at most: 0, none) unless no other file's packets come near them."""
    with said_of(f.source.path, f.source.name):
        if f.chunks is None:
            f.chunks = iter_records(f.source.path, chunk)
        records = next(f.chunks, None)
    if records is None:
        f.read_all = True
        stream.advanced(f.index, 1.0)
        return
    if len(records):
        end = int(records.offset[-1]) + int(records.caplen[-1])  # (in the decompressed bytes: a share of them)
        stream.advanced(f.index, min(0.999, end / max(1, len(records.data))))
    places = records.frames() - 1
    key = running_max(records.ts_ns, f.top)
    if len(key):
        if f.top is None:
            f.first = int(records.ts_ns[0])
        f.top = f.last = int(key[-1])
    f.keys, f.places = np.concatenate([f.keys, key]), np.concatenate([f.places, places])
    records, table, kept = read_kept(records, columns, keep)
    stream.malformed += int(table.attrs.get("malformed", 0))
    stream.formats.add(str(table.attrs.get("format", "")))
    stream.compressed |= bool(table.attrs.get("compressed"))
    h = None
    if dedup_ns and len(records) and _may_meet_copies(state, f, int(records.ts_ns.min()), int(records.ts_ns.max()),
                                                      dedup_ns):
        h = frame_hashes(records)
        h = h if kept is None else h[kept]
    f.kept.append(table)
    f.hashes.append(h if h is not None else np.full(len(table), NO_HASH, np.uint64))


def read_kept(records: Records, columns: list[str], keep: Filter) -> tuple[Records, pd.DataFrame, np.ndarray | None]:
    """Records as the filters keep them: (the records in the time range, dropped before decoding; the packets table
    of those the address and port filters keep, its attrs the decoder's counts of all of them; which they kept,
    None: all). The stream's reading of a chunk, and a cluster's of a part (reading/parts.py)."""
    in_time = keep.in_time(records.ts_ns)
    if in_time is not None:
        records = records.take(np.flatnonzero(in_time))
    table = decode(records, columns=columns)
    kept = keep.kept(table)
    if kept is not None:
        attrs = table.attrs
        table = table[kept].reset_index(drop=True)
        table.attrs = attrs
    return records, table, kept


def _may_meet_copies(state: list[_File], f: _File, low: int, high: int, dedup_ns: int) -> bool:
    """Whether packets of `f` between `low` and `high` could have a copy in another file, or be one: another file
    holds, or may yet hold, packets within `dedup_ns` of them (a file read to its end: its first and last packet;
    one being read: from its first packet on; one not begun: from its first packet's time, as the captures were
    ordered by). Rotated files, each beginning after the last ended, are then not hashed at all."""
    for g in state:
        if g is f:
            continue
        first = g.first if g.chunks is not None else g.source.first_ns
        if first is None or first - dedup_ns <= high and (not g.read_all or g.last + dedup_ns >= low):
            return True
    return False


def _safe_prefix(live: list[_File]) -> tuple[np.ndarray, np.ndarray]:
    """The held records that can be given out now, in merged order (file, place), taken off the files' holds:
    a record of file g with key k is safe when, for every other file f still reading, no unread record of f can
    come before it: k below f's last held key, or equal to it and g before f."""
    holding = [f for f in live if len(f.keys)]
    if not holding:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keys = np.concatenate([f.keys for f in holding])
    file = np.concatenate([np.full(len(f.keys), f.index, np.int64) for f in holding])
    place = np.concatenate([f.places for f in holding])
    order = merged_order(keys, file, place)
    keys, file, place = keys[order], file[order], place[order]
    safe = np.ones(len(keys), bool)
    for f in live:
        if f.read_all:
            continue  # (nothing unread)
        if len(f.keys):
            limit = int(f.keys[-1])  # (its unread keys are at least its last held one)
        elif f.chunks is not None:
            limit = f.top if f.top is not None else _UNKNOWN  # (begun, all given out: its next keys are ≥ its top)
        else:
            limit = f.source.first_ns if f.source.first_ns is not None else _UNKNOWN  # (not begun)
        safe &= (keys < limit) | ((keys == limit) & (file < f.index)) | (file == f.index)
    cut = len(safe) if safe.all() else int(np.argmin(safe))
    out_file, out_place = file[:cut], place[:cut]
    for f in holding:  # each file's records given out are the first of its hold (merged order keeps file order)
        n = int((out_file == f.index).sum())
        f.keys, f.places = f.keys[n:], f.places[n:]
    return out_file, out_place


def _take_kept(state: list[_File], out_file: np.ndarray, out_place: np.ndarray,
               first_frame: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray] | None:
    """The kept packets among the records given out, in merged order: their table, merged frames, files and
    hashes (taken off the files' holds); None when none was kept."""
    merged_frame = np.arange(first_frame, first_frame + len(out_file), dtype=np.int64)
    parts, frames, origin, hashes = [], [], [], []
    for f in state:
        if not f.kept:
            continue
        mine_out = out_file == f.index
        given = out_place[mine_out]
        if not len(given):
            continue
        table = f.kept[0] if len(f.kept) == 1 else concat_tables(f.kept)
        h = np.concatenate(f.hashes)
        file_frame = table["frame"].to_numpy(np.int64)
        n = int(np.searchsorted(file_frame, int(given[-1]) + 1, side="right"))  # (kept rows of records given out)
        mine = table.iloc[:n]
        parts.append(mine)
        at = np.searchsorted(given, file_frame[:n] - 1)
        frames.append(merged_frame[mine_out][at])
        origin.append(np.full(n, f.index, np.int32))
        hashes.append(h[:n])
        f.kept, f.hashes = ([table.iloc[n:].reset_index(drop=True)], [h[n:]]) if n < len(table) else ([], [])
    if not parts:
        return None
    frame = np.concatenate(frames)
    order = np.argsort(frame, kind="stable")
    table = concat_tables(parts, order) if len(parts) > 1 else parts[0].reset_index(drop=True)
    return table, frame[order], np.concatenate(origin)[order], np.concatenate(hashes)[order]
