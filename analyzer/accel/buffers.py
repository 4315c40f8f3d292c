"""Buffers the reader's walks share: a mapped capture's pages given back behind a walk, 32-bit fields gathered
from any byte offset, and per-record columns that grow as a walk fills them. No compiled code: the compiled
walks (walk.py) and the numpy references fill the same arrays."""

from __future__ import annotations

import mmap

import numpy as np


def give_back(mapping: mmap.mmap, start: int, end: int) -> None:
    """The whole pages of mapping[start:end] go back to the kernel (they stay in the page cache; touching
    them again maps them again). The partial pages at either end are kept: neighbours may still need them."""
    lo = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
    hi = (end // mmap.PAGESIZE) * mmap.PAGESIZE
    if hi > lo:
        mapping.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


class Releaser:
    """Gives a mapped file's pages back to the kernel behind a walk, every few MB (no-op for bytes)."""

    STEP = 1 << 24

    def __init__(self, raw: bytes | mmap.mmap) -> None:
        self.mapping = raw if isinstance(raw, mmap.mmap) else None
        self.done = 0

    def __call__(self, pos: int) -> None:
        if self.mapping is not None and pos - self.done >= self.STEP:
            give_back(self.mapping, self.done, pos)
            self.done = pos


def walked(raw: bytes | mmap.mmap) -> mmap.mmap | None:
    """After the record walk: a mapped file's pages go back to the kernel (the decoder maps them again, a
    chunk at a time). Returns the mapping, or None for bytes in memory."""
    if not isinstance(raw, mmap.mmap):
        return None
    give_back(raw, 0, len(raw))
    return raw


def u32_view(raw: bytes, big: bool) -> np.ndarray:
    """The 32-bit integer starting at every byte of `raw` (overlapping views, stride 1): one gather reads a field."""
    return np.ndarray((max(len(raw) - 3, 0),), ">u4" if big else "<u4", buffer=raw, strides=(1,))


class RecordArrays:
    """Per-record columns the compiled walks fill in file order. Sized for a guess of the record count (a record
    every 64 bytes of file), and grown (doubled, up to as many as the file's smallest records could make) when
    the guess falls short: a capture of many tiny records costs a copy, and none costs an allocation of a file's
    size in every column (which a machine short of memory may refuse outright). `most`: at most that many records
    (a walk taken a chunk at a time)."""

    def __init__(self, types: tuple, size: int, smallest: int, most: int | None = None) -> None:
        self.most = size // smallest + 1 if most is None else min(size // smallest + 1, most)
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
