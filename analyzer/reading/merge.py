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


def merged_order(keys: np.ndarray, file: np.ndarray, place: np.ndarray) -> np.ndarray:
    """The merged order of records given by their running-maximum times (`running_max`), files and places in
    their files: positions into those arrays."""
    return np.lexsort((place, file, keys))


_BLOCK = 64  # bytes hashed per step
NO_HASH = np.uint64(0)  # a frame not hashed (no other file's packets come near it); no hash is made 0
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
    h[h == NO_HASH] = 1
    return h


def duplicates(ts: np.ndarray, file: np.ndarray, hashes: np.ndarray, tail: dict[str, np.ndarray] | None,
               window_ns: int, overlap: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Which rows (in merged order; their times, files and hashes) are a second sensor's copies (see the module):
    in time order, a row is a copy of the earliest row before it with its bytes that is from another file whose
    capture overlaps its own (`overlap[a, b]`), within `window_ns`, kept, and not yet the original of another
    copy (each frame has at most one copy per other file: a frame the traffic itself repeated is met by the
    other sensor's repeat). The rows meet the previous chunks' last `window_ns` of rows (`tail`, with their own
    verdicts; None: the first chunk); returns the verdicts and the new tail."""
    n_tail = 0 if tail is None else len(tail["ts"])
    all_ts = ts if tail is None else np.concatenate([tail["ts"], ts])
    all_file = file if tail is None else np.concatenate([tail["file"], file])
    all_hash = hashes if tail is None else np.concatenate([tail["hash"], hashes])
    copy = np.zeros(len(all_ts), bool)
    used = np.zeros(len(all_ts), bool)  # kept rows that are already the original of a copy
    if tail is not None:
        copy[:n_tail], used[:n_tail] = tail["copy"], tail["used"]
    order = np.lexsort((np.arange(len(all_ts)), all_ts, all_hash))
    h = all_hash[order]
    starts = np.flatnonzero(np.r_[True, h[1:] != h[:-1]])
    sizes = np.diff(np.r_[starts, len(h)])
    for g in np.flatnonzero(sizes > 1).tolist():  # (frames seen more than once: few, and mostly twice)
        rows = order[starts[g]:starts[g] + sizes[g]].tolist()
        for k, r in enumerate(rows):
            if r < n_tail:
                continue  # (its verdict was given with its own chunk)
            for q in rows[:k]:
                if (not copy[q] and not used[q] and all_file[q] != all_file[r] and overlap[all_file[r], all_file[q]]
                        and all_ts[r] - all_ts[q] <= window_ns):
                    copy[r] = used[q] = True
                    break
    recent = all_ts >= (all_ts.max(initial=0) - window_ns)
    new_tail = dict(ts=all_ts[recent], file=all_file[recent], hash=all_hash[recent], copy=copy[recent],
                    used=used[recent])
    return copy[n_tail:], new_tail


def overlapping(first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """overlap[a, b]: whether files a and b captured at some common time (each file's first and last packet)."""
    return (first[:, None] < last[None, :]) & (first[None, :] < last[:, None])


def in_frame_order(tables: list[pd.DataFrame], *, consume: bool = False) -> pd.DataFrame:
    """Packets tables of the same columns as one (`concat_tables`, which `consume` is passed to), its rows in frame
    order: the replies that chunks, or a cluster's shards, give out each in their own order."""
    if len(tables) == 1:
        return tables[0].take(np.argsort(tables[0]["frame"].to_numpy(), kind="stable")).reset_index(drop=True)
    return concat_tables(tables, np.argsort(np.concatenate([t["frame"].to_numpy() for t in tables]), kind="stable"),
                         consume=consume)


def union_addresses(tables: list[pd.DataFrame]) -> pd.Index:
    """The address categories of several tables as one list, in the reader's order (IPv4 by value, then IPv6)."""
    lists = {id(t[c].cat.categories): t[c].cat.categories for t in tables for c in ADDRESS_COLUMNS if c in t.columns}
    if len(lists) == 1:  # (slices of one table: its own list)
        return next(iter(lists.values()))
    texts: set[str] = set()
    for t in tables:
        for c in ADDRESS_COLUMNS:
            if c in t.columns:
                texts.update(t[c].cat.categories.tolist())
    key = {a: (ip.version, int(ip)) for a, ip in ((a, ipaddress.ip_address(a)) for a in texts)}
    return pd.Index(sorted(texts, key=key.__getitem__), dtype=object)


def concat_tables(tables: list[pd.DataFrame], order: np.ndarray | None = None, *, consume: bool = False
                  ) -> pd.DataFrame:
    """Packets tables of the same columns as one (rows in `order`: positions in their concatenation), the
    address columns sharing one category list, as one capture's do. `consume`: the list is emptied and each
    column of the parts let go as soon as it is joined (the caller holds no other reference to them), so that
    the parts and the whole are not held twice."""
    columns = tables[0].columns
    categories = union_addresses(tables)
    parts = [{c: t[c] for c in columns} for t in tables]
    if consume:
        tables.clear()
    out = {}
    for c in columns:
        if c in ADDRESS_COLUMNS:
            # Each table's codes through its categories' places in the union (code -1, absent, to the last: -1).
            codes = np.concatenate([np.append(categories.get_indexer(t[c].cat.categories), -1)[t[c].cat.codes.to_numpy()]
                                    for t in parts])
            if order is not None:
                codes = codes[order]
            out[c] = pd.Categorical.from_codes(codes, categories=categories)
        else:
            values = pd.concat([t[c] for t in parts], ignore_index=True).array
            out[c] = values if order is None else values.take(order)
        if consume:
            for t in parts:
                del t[c]
    frame = pd.DataFrame(out, copy=False)
    return frame
