"""Matched probes beyond a memory budget, kept on disk by target, so that the RTT analyses read one bucket of
targets at a time.

Families and signals are made per (target, protocol): a target's ports are compared among themselves, never
with another target's, and a port's statistics read only its own probes and their replies. So the probes a
capture's chunks give out (analysis/chunked.py) need not all be in memory at once. While they take less than
a budget they are held; beyond it, they and every later part are dealt into `BUCKETS` temporary files by their
target (the CRC-32 of its address text, so a target's probes all go to one file), each with the replies its
probes read, in the order the chunks gave them out. Each bucket is then joined and analysed alone, and the
buckets' tables, put back in the order of their (target, protocol), are the tables of the whole
(`in_target_order`).

On a Dask cluster the shards' probes are dealt the same way (`deal`), and a worker analyses a bucket of targets
from every shard (analyzer/distributed.py).

What this bounds is the probes held together: the largest bucket's. A capture of one target (a scan of one
machine's 65,535 ports) puts every probe in one bucket: its memory still follows its probes.

The files are pickles (a bucket's rows of each batch dealt: lists of (probes, replies) tables), unnamed temporary
files in the temporary directory (`TMPDIR`, as GNU sort's): gone when closed, or when the process ends.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import BinaryIO, Self

import numpy as np
import pandas as pd

from ..reading.merge import concat_tables
from .chunked import Matched
from .match import answering, own_addresses

BUCKETS = 64  # files the targets are dealt into once the budget is passed
DEFAULT_BUDGET = 256 << 20  # bytes of matched probes (and their replies) held before they go to disk

def _size(part: Matched) -> int:
    return sum(int(t.memory_usage(index=False, deep=True).sum()) for t in part if t is not None)


def target_buckets(dst: pd.Series, n: int) -> np.ndarray:
    """Per probe, its target's bucket: the CRC-32 of the address text, modulo n (the same in every chunk)."""
    codes = dst.cat.codes.to_numpy()
    of_category = np.array([zlib.crc32(str(a).encode()) % n for a in dst.cat.categories], np.int64)
    return np.where(codes >= 0, of_category[np.maximum(codes, 0)], 0)


def deal(probes: pd.DataFrame, replies: pd.DataFrame | None, n: int, bucket: np.ndarray | None = None) -> list[Matched]:
    """A probes table, and the replies its probes read, as n parts, one per bucket of targets (`target_buckets`;
    `bucket`: those already known, and the probes in their order), each in the table's order (a bucket without
    probes: no rows)."""
    if bucket is None:
        bucket = target_buckets(probes["dst"], n)
        order = np.argsort(bucket, kind="stable")
        probes, bucket = probes.take(order), bucket[order]
    bounds = np.searchsorted(bucket, np.arange(n + 1))
    parts = []
    for b in range(n):
        mine = own_addresses(probes.iloc[bounds[b]:bounds[b + 1]].reset_index(drop=True))
        # (the replies these probes read: a reply is its probes' target's)
        theirs = None if replies is None else replies[answering(replies, mine)].reset_index(drop=True)
        parts.append(Matched(mine, theirs))
    return parts


class Buckets:
    """The parts a `ChunkedMatch` gives out (`add`): held in memory while they take at most `budget` bytes;
    past it, dealt by target into `n` files, a batch of a quarter of the budget at a time (a batch is copied
    twice as it is dealt: joined and put in bucket order). `spilled` says which; `held` gives the parts held,
    `buckets` each bucket's parts in turn. A context manager: `close` lets the files go."""

    def __init__(self, budget: int = DEFAULT_BUDGET, n: int = BUCKETS, directory: str | None = None) -> None:
        self.budget, self.n, self.directory = budget, n, directory
        self.held: list[Matched] = []
        self._sizes: list[int] = []
        self.held_bytes = 0  # (of the parts held: their tables' memory_usage)
        self._files: list[BinaryIO] = []
        self._open = ExitStack()  # (the files, open from the first spill to `close`)

    @property
    def spilled(self) -> bool:
        return bool(self._files)

    def add(self, part: Matched) -> None:
        self.held.append(part)
        self._sizes.append(_size(part))
        self.held_bytes += self._sizes[-1]
        with self._disk():
            if not self.spilled and self.held_bytes > self.budget:
                temporary = tempfile.TemporaryFile  # (held open until `close`: the ExitStack closes them)
                self._files = [self._open.enter_context(temporary(prefix="synlens-", dir=self.directory))
                               for _ in range(self.n)]
            if self.spilled and self.held_bytes > self.budget // 4:
                self._flush()

    @contextmanager
    def _disk(self) -> Iterator[None]:
        """The temporary files' errors (no such folder, a full disk) as an OSError that names their folder and
        what goes there."""
        try:
            yield
        except OSError as e:
            where = self.directory or tempfile.gettempdir()
            raise OSError(e.errno, f"{e.strerror or e} (temporary files: the probes past --buffer-size go there; "
                          "TMPDIR names another folder)", where) from e

    def _flush(self) -> None:
        """Every part held dealt into the files, a batch of a quarter of the budget at a time."""
        held, sizes, self.held, self._sizes, self.held_bytes = self.held, self._sizes, [], [], 0
        batch: list[Matched] = []
        size = 0
        for i, part in enumerate(held):
            held[i] = None  # (held by the batch only: let go once dealt)
            batch.append(part)
            size += sizes[i]
            if size > self.budget // 4 or i == len(held) - 1:
                self._deal(batch)
                batch, size = [], 0

    def _deal(self, batch: list[Matched]) -> None:
        """A batch of parts as one table per bucket (its rows in the parts' order), each appended to its file."""
        bucket = np.concatenate([target_buckets(p["dst"], self.n) for p, _ in batch])
        order = np.argsort(bucket, kind="stable")
        probes = concat_tables([p for p, _ in batch], order)
        replies = None if batch[0][1] is None else concat_tables([r for _, r in batch])
        batch.clear()
        for b, part in enumerate(deal(probes, replies, self.n, bucket[order])):
            if len(part[0]):
                pickle.dump([part], self._files[b], protocol=pickle.HIGHEST_PROTOCOL)

    def buckets(self, before: Callable[[int], None] | None = None) -> Iterator[list[Matched]]:
        """Each bucket's parts, in the order they were added (buckets without any left out), one at a time;
        `before(bytes)` is told the size of each bucket's file before it is read."""
        if self.held:
            with self._disk():
                self._flush()
        for file in self._files:
            parts: list[Matched] = []
            size = file.seek(0, os.SEEK_END)
            if before is not None and size:
                before(size)
            file.seek(0)
            while True:
                try:
                    parts += pickle.load(file)
                except EOFError:
                    break
            file.seek(0)
            file.truncate()  # (read: its disk space is let go)
            if parts:
                yield parts
            del parts

    def close(self) -> None:
        self._open.close()
        self._files, self.held, self._sizes, self.held_bytes = [], [], [], 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def in_target_order(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Tables of buckets of targets (families, or signals' ports or families: rows grouped by target and
    protocol, in the order of their texts) as the one table the whole would make: their rows, each (target,
    protocol)'s in its bucket's order, the groups in the order of their texts. The first table's attrs. (Tables
    without rows are left out: a bucket whose probes gave no row makes its empty table with columns of objects,
    which would turn the others' columns to objects.)"""
    rows = [t for t in tables if len(t)] or tables[:1]
    both = pd.concat(rows, ignore_index=True) if len(rows) > 1 else rows[0]
    target = pd.factorize(both["target"].astype(str), sort=True)[0]
    protocol = pd.factorize(both["protocol"].astype(str), sort=True)[0]
    key = target.astype(np.int64) * (int(protocol.max(initial=0)) + 1) + protocol
    out = both.take(np.argsort(key, kind="stable")).reset_index(drop=True)
    out.attrs = dict(tables[0].attrs)
    return out
