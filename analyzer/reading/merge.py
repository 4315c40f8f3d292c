"""Several captures → one packets table, as if one file held all their packets in the order they were captured.

Order: a merge by time, as mergecap's (Wireshark's merge, wiretap/merge.c): repeatedly the earliest of the
files' next records. When every file is in time order that is a sort by time; when a file holds a record
earlier than one before it (clocks step, interfaces stamp apart), that record waits behind the later one.
Equivalently, and computed at once: a stable sort by each record's *running maximum* time in its own file,
then by file, then by place in the file (`merged_order`). Records of one time in two files come in the order
of the files (by first packet), as they were in a capture cut into those files; mergecap takes the file named
last first. tests/test_sources.py checks the order against mergecap's, named so that the two agree.

Frames: each packet keeps a frame number (`frame`) counting records in that merged order, so every stage that
orders or joins by frame works as on one file; `FrameIndex` maps it back to the file and the frame within that
file, which is what outputs name ("sensor-b.pcap:1207") and what Wireshark shows when that file is opened.

Duplicates: two sensors on one link see each frame twice. A frame is a duplicate when the same bytes (every
captured byte, the captured and the wire length) were captured within `DEDUP_WINDOW_NS` before it in another file whose capture
overlaps its own in time, and that frame was kept: the copy in the file merged first is kept. Files that
follow one another (a sensor's rotated files) are never compared: a frame repeated across their boundary is
the traffic's own, as is a frame repeated within one file (a retransmission, a loop); a packet seen on two
links (other MAC addresses, a TTL lower by a hop) is two frames. Matching is by a 64-bit hash of the bytes
(`frame_hashes`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .formats import Records

DEDUP_WINDOW_NS = 10_000_000  # 10 ms: sensors' clocks on NTP agree closer; no stack resends a frame that soon
ADDRESS_COLUMNS = ("src", "dst", "q_src", "q_dst")  # one category list for all four (their codes compare)


@dataclass(frozen=True, eq=False)
class FrameIndex:
    """Merged frame numbers (1, 2, … in capture order) → (file, frame within that file), held as runs of
    consecutive frames of one file: rotated files are a run each, interleaved ones more."""

    names: tuple[str, ...]  # the files, as outputs name them
    start: np.ndarray  # merged frame at which each run starts (ascending, the first 1)
    file: np.ndarray  # each run's file
    file_start: np.ndarray  # each run's first frame within its file

    def __deepcopy__(self, memo: dict) -> FrameIndex:  # (immutable: pandas copies attrs deeply at every step)
        return self

    @classmethod
    def of(cls, names: tuple[str, ...], file_of: np.ndarray, frame_in_file: np.ndarray) -> FrameIndex:
        """From each merged frame's file and frame within it (merged order)."""
        n = len(file_of)
        new = np.ones(n, bool)
        if n > 1:
            new[1:] = (file_of[1:] != file_of[:-1]) | (frame_in_file[1:] != frame_in_file[:-1] + 1)
        at = np.flatnonzero(new)
        return cls(names, at.astype(np.int64) + 1, file_of[at].astype(np.int64), frame_in_file[at].astype(np.int64))

    def locate(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(file, frame within the file) of merged frame numbers."""
        frames = np.asarray(frames, np.int64)
        run = np.searchsorted(self.start, frames, side="right") - 1
        return self.file[run], self.file_start[run] + (frames - self.start[run])

    def frame_of(self, name: str, local: int) -> int:
        """The merged frame of a file's frame (its name as `names` holds it)."""
        file = self.names.index(name)
        runs = np.flatnonzero((self.file == file) & (self.file_start <= local))
        lengths = np.diff(np.append(self.start, np.iinfo(np.int64).max))
        run = int(runs[np.argmax(self.file_start[runs])])
        if local - self.file_start[run] >= lengths[run]:
            raise KeyError(f"{name}:{local}")
        return int(self.start[run] + (local - self.file_start[run]))

    def label(self, frame: int) -> str:
        """A frame as outputs name it: "file:frame within the file"."""
        file, local = self.locate(np.array([frame]))
        return f"{self.names[int(file[0])]}:{int(local[0])}"


def running_max(ts_ns: np.ndarray, before: int | None = None) -> np.ndarray:
    """Each record's running maximum time in its file (`before`: the maximum of the records before these)."""
    out = np.maximum.accumulate(ts_ns) if len(ts_ns) else ts_ns.copy()
    if before is not None and len(out):
        np.maximum(out, before, out=out)
    return out


def merged_order(keys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """mergecap's order of several files' records, from each file's running maxima (`running_max`): (file, place
    in its file) of each merged record."""
    file = np.concatenate([np.full(len(k), i, np.int32) for i, k in enumerate(keys)] + [np.zeros(0, np.int32)])
    place = np.concatenate([np.arange(len(k), dtype=np.int64) for k in keys] + [np.zeros(0, np.int64)])
    key = np.concatenate(list(keys) + [np.zeros(0, np.int64)])
    order = np.lexsort((place, file, key))
    return file[order], place[order]


_BLOCK = 64  # bytes hashed per step
_PRIME = np.uint64(0x9E3779B97F4A7C15)


def frame_hashes(records: Records) -> np.ndarray:
    """A 64-bit hash of each record's captured bytes and lengths, eight bytes at a time over all records at once
    (a block of 64 bytes per step, gathered as one copy per record; bytes past a record's end count as zero)."""
    n = len(records)
    h = (records.caplen.astype(np.uint64) << np.uint64(32)) ^ records.wirelen.astype(np.uint64)
    h *= _PRIME
    data = records.data
    view = np.ndarray((max(len(data) - _BLOCK + 1, 0),), f"V{_BLOCK}", buffer=data, strides=(1,))
    pad = np.zeros(2 * _BLOCK, np.uint8)  # (a block within 64 bytes of the buffer's end is copied through this)
    lane = np.arange(_BLOCK)
    rows = np.arange(n)
    at = 0
    with np.errstate(over="ignore"):
        while True:
            rows = rows[records.caplen[rows] > at]
            if not len(rows):
                break
            left = np.minimum(records.caplen[rows] - at, _BLOCK)
            start = records.offset[rows] + at
            near_end = start > len(data) - _BLOCK
            block = np.empty((len(rows), _BLOCK), np.uint8)
            block[~near_end] = view[start[~near_end]].view(np.uint8).reshape(-1, _BLOCK)
            for i in np.flatnonzero(near_end).tolist():
                tail = data[start[i]:]
                pad[:len(tail)] = tail
                block[i] = pad[:_BLOCK]
            block[lane >= left[:, None]] = 0
            words = block.view(np.uint64)
            mixed = h[rows]
            for w in range(_BLOCK // 8):
                mixed ^= words[:, w]
                mixed *= _PRIME
                mixed ^= mixed >> np.uint64(29)
            h[rows] = mixed
            at += _BLOCK
    return h


def duplicates(hashes: np.ndarray, ts_ns: np.ndarray, file: np.ndarray, window_ns: int = DEDUP_WINDOW_NS,
               overlap: np.ndarray | None = None) -> np.ndarray:
    """Which records (in merged order) are copies of one in another file within `window_ns` before them: each
    record's nearest earlier record with its bytes, when that one is from another file whose capture overlaps
    its own in time (`overlap[a, b]`; None: all do), close enough, and itself kept (a record is a copy of at
    most one)."""
    n = len(hashes)
    drop = np.zeros(n, bool)
    if n < 2 or window_ns <= 0:
        return drop
    order = np.lexsort((np.arange(n), ts_ns, hashes))
    h, t, f = hashes[order], ts_ns[order], file[order]
    pair = (h[1:] == h[:-1]) & (f[1:] != f[:-1]) & (t[1:] - t[:-1] <= window_ns)
    if overlap is not None:
        pair &= overlap[f[1:], f[:-1]]
    # A record is kept when its own pair does not hold; a copy of a record that is itself a copy is kept.
    copy = np.zeros(n, bool)
    copy[1:] = pair
    copy[1:] &= ~copy[:-1]
    drop[order] = copy
    return drop


def overlapping(first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """overlap[a, b]: whether files a and b captured at some common time (each file's first and last packet)."""
    return (first[:, None] < last[None, :]) & (first[None, :] < last[:, None])


def union_addresses(tables: list[pd.DataFrame]) -> pd.Index:
    """The address categories of several tables as one list, in the reader's order (IPv4 by value, then IPv6)."""
    texts: set[str] = set()
    for t in tables:
        for c in ADDRESS_COLUMNS:
            if c in t.columns:
                texts.update(t[c].cat.categories.tolist())
    key = {a: (ip.version, int(ip)) for a, ip in ((a, ipaddress.ip_address(a)) for a in texts)}
    return pd.Index(sorted(texts, key=key.__getitem__), dtype=object)


def concat_tables(tables: list[pd.DataFrame], order: np.ndarray | None = None) -> pd.DataFrame:
    """Packets tables of the same columns as one (rows in `order`: positions in their concatenation), the
    address columns sharing one category list, as one capture's do."""
    columns = tables[0].columns
    categories = union_addresses(tables)
    out = {}
    for c in columns:
        if c in ADDRESS_COLUMNS:
            # Each table's codes through its categories' places in the union (code -1, absent, to the last: -1).
            codes = np.concatenate([np.append(categories.get_indexer(t[c].cat.categories), -1)[t[c].cat.codes.to_numpy()]
                                    for t in tables])
            if order is not None:
                codes = codes[order]
            out[c] = pd.Categorical.from_codes(codes, categories=categories)
        else:
            values = pd.concat([t[c] for t in tables], ignore_index=True).array
            out[c] = values if order is None else values.take(order)
    frame = pd.DataFrame(out, copy=False)
    return frame
