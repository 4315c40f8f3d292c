"""Many captures (or one, filtered) → one packets table, as if one file held all their packets.

The files of `reading/sources.py`, each read a chunk of records at a time (its index is never whole in memory),
filtered while read (`reading/filters.py`: the time range before decoding, addresses and ports after), put in
mergecap's order with duplicates across files left out (`reading/merge.py`), and numbered in that order (the
`frame` column), with `attrs["sources"]` (a `FrameIndex`) naming each frame's file and its number there. One
file read whole, unfiltered, is `packets.read`'s table exactly.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import CaptureError
from .filters import EVERYTHING, Filter
from .formats import iter_records
from .merge import (
    DEDUP_WINDOW_NS,
    FrameIndex,
    concat_tables,
    duplicates,
    frame_hashes,
    merged_order,
    overlapping,
    running_max,
)
from .packets import _wanted, decode, read
from .sources import Source, Sources, first_time, sources

CHUNK_RECORDS = 1 << 20  # records indexed and decoded at a time


@dataclass(frozen=True)
class Part:
    """One file's kept packets: its table (frames numbered in the file), their running-maximum times (the merge
    key) and byte hashes (for duplicates), and the running maximum of all its records (kept or not)."""

    table: pd.DataFrame
    key: np.ndarray
    hashes: np.ndarray | None
    all_keys: np.ndarray


def read_sources(found: Sources, *, columns: Iterable[str] | None = None, keep: Filter = EVERYTHING,
                 dedup_ns: int = DEDUP_WINDOW_NS, chunk: int = CHUNK_RECORDS) -> pd.DataFrame:
    """The packets table of the captures `found` lists (see the module). Raises CaptureError for a file that
    cannot be read (reading stops: `found` holds files already checked to be captures); warns CaptureWarning
    for each damaged one."""
    files = found.files
    if not files:
        raise CaptureError(", ".join(str(e.path) for e in found.errors) or "(no input)", "no capture to read")
    first_ns = files[0].first_ns
    if first_ns is None and any(t is not None and t.offset for t in (keep.since, keep.until)):
        first_ns = first_time(files[0].path)
    keep = Filter(keep.since, keep.until, keep.hosts, keep.nets, keep.ports, first_ns=first_ns)
    if len(files) == 1 and keep.everything:
        return read(files[0].path, columns=columns)
    wanted = _wanted(columns)
    read_columns = sorted(wanted | {"ts_ns"} | set(keep.columns()))
    parts = [_part(f, read_columns, keep, len(files) > 1 and dedup_ns > 0, chunk) for f in files]
    table = _merged(files, parts, dedup_ns)
    out = table[[c for c in table.columns if c in wanted]]
    out.attrs.update(table.attrs)
    return out


def read_many(inputs: Sequence[str] | str, *, columns: Iterable[str] | None = None, keep: Filter = EVERYTHING,
              dedup_ns: int = DEDUP_WINDOW_NS) -> pd.DataFrame:
    """The packets table of every capture `inputs` name (files, directories, glob patterns; see
    reading/sources.py), in capture order, duplicates across files left out, filtered by `keep`. Raises
    CaptureError for the first input that is no capture (the command line reports each and reads the rest)."""
    found = sources([inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs))
    try:
        if found.errors:
            raise found.errors[0]
        return read_sources(found, columns=columns, keep=keep, dedup_ns=dedup_ns)
    finally:
        found.close()


def _part(source: Source, columns: list[str], keep: Filter, hashed: bool, chunk: int) -> Part:
    tables, keys, hashes, all_keys = [], [], [], []
    top = None
    for records in iter_records(source.path, chunk):
        key = running_max(records.ts_ns, top)
        if len(key):
            top = int(key[-1])
        all_keys.append(key)
        in_time = keep.in_time(records.ts_ns)
        if in_time is not None:
            at = np.flatnonzero(in_time)
            records, key = records.take(at), key[at]
        h = frame_hashes(records) if hashed else None
        table = decode(records, columns=columns)
        kept = keep.kept(table)
        if kept is not None:
            table, key = table[kept], key[kept]
            h = h[kept] if h is not None else None
        tables.append(table)
        keys.append(key)
        hashes.append(h)
    table = tables[0] if len(tables) == 1 else _concat_parts(tables)
    return Part(table, np.concatenate(keys), None if not hashed else np.concatenate(hashes),
                np.concatenate(all_keys))


def _concat_parts(tables: list[pd.DataFrame]) -> pd.DataFrame:
    out = concat_tables(tables)
    out.attrs.update(tables[0].attrs, malformed=sum(t.attrs.get("malformed", 0) for t in tables))
    return out


def _merged(files: tuple[Source, ...], parts: list[Part], dedup_ns: int) -> pd.DataFrame:
    """The files' kept packets as one table in mergecap's order, numbered in it (see the module)."""
    file_of, place = merged_order([p.all_keys for p in parts])
    names = tuple(f.name for f in files)
    index = FrameIndex.of(names, file_of, place + 1)
    # Each kept packet's merged frame: its record's place in the merged order of all records.
    starts = np.cumsum([0] + [len(p.all_keys) for p in parts])
    merged_at = np.empty(int(starts[-1]), np.int64)
    merged_at[starts[file_of] + place] = np.arange(1, len(place) + 1)
    frames = [merged_at[starts[i] + p.table["frame"].to_numpy(np.int64) - 1] for i, p in enumerate(parts)]
    del merged_at, file_of, place
    frame = np.concatenate(frames)
    order = np.argsort(frame, kind="stable")
    table = concat_tables([p.table for p in parts], order)
    table["frame"] = frame[order]
    if len(parts) > 1 and dedup_ns > 0:
        file = np.concatenate([np.full(len(p.table), i, np.int32) for i, p in enumerate(parts)])[order]
        hashes = np.concatenate([p.hashes for p in parts])[order]
        # (a file's running maxima: its first packet's time first, its latest last)
        spans = np.array([(p.all_keys[0], p.all_keys[-1]) if len(p.all_keys) else (0, -1) for p in parts], np.int64)
        copies = duplicates(hashes, table["ts_ns"].to_numpy(np.int64), file, dedup_ns,
                            overlapping(spans[:, 0], spans[:, 1]))
        if copies.any():
            table = table[~copies].reset_index(drop=True)
    formats = sorted({str(p.table.attrs.get("format", "")) for p in parts})
    table.attrs.update(path=files[0].path if len(files) == 1 else None, paths=tuple(f.path for f in files),
                       format="+".join(formats), compressed=any(p.table.attrs.get("compressed") for p in parts),
                       malformed=sum(int(p.table.attrs.get("malformed", 0)) for p in parts),
                       sources=index if len(files) > 1 else None)
    return table


def frame_labels(packets_or_attrs: pd.DataFrame | dict, frames: Iterable[int]) -> list[int | str]:
    """Frames as outputs name them: the number itself for one file, "file:number" for several."""
    attrs = packets_or_attrs.attrs if isinstance(packets_or_attrs, pd.DataFrame) else packets_or_attrs
    index: FrameIndex | None = attrs.get("sources")
    return [int(f) for f in frames] if index is None else [index.label(int(f)) for f in frames]

