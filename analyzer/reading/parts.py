"""Captures → parts that can be read on their own, by whichever process or machine runs them: record ranges of
an uncompressed classic pcap (found by one walk of its record headers: a pcap has no index, but its headers
chain), and whole files otherwise (a pcapng's interfaces are described where they appear, a gzip stream is read
from its start).

A part is read (`read_part`) into the packets table exactly as `stream.packet_chunks` gives those records:
filtered the same way, each row numbered by its frame in the merged stream. That numbering is known before
reading only when the files follow one another in time (rotated files, or one file): the merged order is then
the files' order, and each file's frames follow the last file's. `plan` says so by returning None for captures
that overlap in time (two sensors: their merge and the copies between them are the stream's work).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..errors import CaptureWarning, said_of
from .filters import Filter
from .formats import PCAP_MAGIC_NS, PCAP_MAGIC_US, iter_records, pcap_range
from .merge import FrameIndex, concat_tables
from .sources import Source
from .stream import read_kept


@dataclass(frozen=True)
class Part:
    """Records of one file: from record `first` (0-based) at byte `pos`, `count` of them; or (pos None) the whole
    file. `frame0`: the merged frames before the file's first record."""

    file: int  # the file's place among the captures
    path: str
    name: str
    frame0: int
    first: int = 0
    pos: int | None = None
    count: int | None = None
    last: bool = True  # the file's last part (its end, and any damage there, is read and warned of)
    size: int = 0  # bytes of the file it covers (for progress)


@dataclass(frozen=True)
class Plan:
    """The parts of a set of captures, in merged order, with what their numbering needs."""

    parts: tuple[Part, ...]
    names: tuple[str, ...]
    records: tuple[int, ...]  # each file's records

    def frame_index(self) -> FrameIndex | None:
        """Which file each merged frame is from (None for one file), as `Stream.index` gives it."""
        if len(self.names) < 2:
            return None
        sizes = np.array(self.records, np.int64)
        present = np.flatnonzero(sizes > 0)
        start = np.concatenate([[0], np.cumsum(sizes)[:-1]])[present] + 1
        return FrameIndex(self.names, start.astype(np.int64), present.astype(np.int64), np.ones(len(present), np.int64))


def plan(files: tuple[Source, ...], records: int) -> Plan | None:
    """The parts of `files` (in capture order), a pcap split every `records` records; None when the files
    overlap in time (see the module). Walks each file's record headers once (a gzip file is inflated to walk it);
    warnings of damage are left to the parts' reading."""
    parts: list[Part] = []
    counts: list[int] = []
    latest: int | None = None
    frame0 = 0
    for i, f in enumerate(files):
        split, path = _splittable(f.path), os.path.abspath(f.path)  # (workers may run in another folder)
        own: list[Part] = []
        n, low, high = 0, None, None
        with warnings.catch_warnings(), said_of(f.path, f.name):
            warnings.simplefilter("ignore", CaptureWarning)
            for chunk in iter_records(f.path, records):
                if len(chunk):
                    ts = chunk.ts_ns
                    low = int(ts[0]) if low is None else low
                    high = int(ts.max()) if high is None else max(high, int(ts.max()))
                    if split:
                        own.append(Part(i, path, f.name, frame0, chunk.first, int(chunk.offset[0]) - 16, len(chunk),
                                        last=False))
                n += len(chunk)
                del chunk
        if low is not None:
            if latest is not None and low < latest:
                return None
            latest = high
        ends = [p.pos for p in own[1:]] + [os.path.getsize(path)]
        own = [replace(p, size=end - (p.pos if k else 0), last=k == len(own) - 1)  # (the first: with the header)
               for k, (p, end) in enumerate(zip(own, ends))]
        parts.extend(own if split else [Part(i, path, f.name, frame0, size=os.path.getsize(path))])
        counts.append(n)
        frame0 += n
    return Plan(tuple(parts), tuple(f.name for f in files), tuple(counts))


def _splittable(path: str) -> bool:
    """An uncompressed classic pcap (its records can be read by range)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    return len(head) == 4 and any(int.from_bytes(head, order) in (PCAP_MAGIC_US, PCAP_MAGIC_NS)
                                  for order in ("little", "big"))


@dataclass(frozen=True)
class Read:
    """A part's packets table and what the stream would count of it."""

    table: pd.DataFrame
    malformed: int
    format: str
    compressed: bool
    warnings: tuple[CaptureWarning, ...]


def read_part(part: Part, columns: list[str], keep: Filter) -> Read:
    """The packets of `part` (`columns`, which hold ts_ns and what the filters read), filtered and numbered as
    the stream gives them; its warnings returned (a worker's are not the user's terminal)."""
    with warnings.catch_warnings(record=True) as caught, said_of(part.path, part.name):
        warnings.simplefilter("always")
        if part.pos is None:
            chunks = iter_records(part.path, 1 << 20)
        else:
            # (the last part asks for a record more: the walk then meets the file's end, or its damage, as a whole
            # read does)
            chunks = iter([pcap_range(part.path, part.pos, part.first, part.count + part.last)])
        tables, malformed, formats, compressed = [], 0, set(), False
        for records in chunks:
            records, table, kept = read_kept(records, columns, keep)
            malformed += int(table.attrs.get("malformed", 0))
            formats.add(str(table.attrs.get("format", "")))
            compressed |= bool(table.attrs.get("compressed"))
            frames = records.frames() + part.frame0
            table["frame"] = frames if kept is None else frames[kept]
            tables.append(table)
            del records
    table = concat_tables(tables) if len(tables) > 1 else tables[0]
    table.attrs = {}
    said = tuple(w.message for w in caught if isinstance(w.message, CaptureWarning))
    return Read(table, malformed, "+".join(sorted(formats)), compressed, said)
