"""Many captures (or one, filtered) → one packets table, as if one file held all their packets.

The files of `reading/sources.py`, each read a chunk of records at a time (its index is never whole in memory),
filtered while read (`reading/filters.py`: the time range before decoding, addresses and ports after), put in
mergecap's order with duplicates across files left out (`reading/merge.py`), and numbered in that order (the
`frame` column), with `attrs["sources"]` (a `FrameIndex`) naming each frame's file and its number there: the
chunks of `reading/stream.py`, joined. One file read whole, unfiltered, is `packets.read`'s table exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import pandas as pd

from ..errors import CaptureError, said_of
from .filters import EVERYTHING, Filter
from .merge import DEDUP_WINDOW_NS, FrameIndex, concat_tables
from .packets import _wanted, read
from .schema import empty_packets
from .sources import Source, Sources, captures, first_time
from .stream import Reading, Stream, packet_chunks

CHUNK_RECORDS = 1 << 20  # records indexed and decoded at a time


def read_sources(found: Sources, *, columns: Iterable[str] | None = None, keep: Filter = EVERYTHING,
                 dedup_ns: int = DEDUP_WINDOW_NS, chunk: int = CHUNK_RECORDS,
                 progress: Callable[[Reading], None] | None = None) -> pd.DataFrame:
    """The packets table of the captures `found` lists (see the module). Raises CaptureError for a file that
    cannot be read (reading stops: `found` holds files already checked to be captures); warns CaptureWarning
    for each damaged one. `progress` is told how far reading has gone (`stream.Reading`) as it goes."""
    files = found.files
    if not files:
        raise CaptureError(", ".join(str(e.path) for e in found.errors) or "(no input)", "no capture to read")
    keep = anchored(keep, files)
    stream = Stream.of(files, progress)
    if len(files) == 1 and keep.everything:
        with said_of(files[0].path, files[0].name):
            table = read(files[0].path, columns=columns,
                         progress=None if progress is None else lambda share: stream.advanced(0, min(share, 0.999)))
        stream.advanced(0, 1.0)
        return table
    chunks = list(iter_sources(found, stream, columns=columns, keep=keep, dedup_ns=dedup_ns, chunk=chunk))
    out = concat_tables(chunks, consume=True) if len(chunks) > 1 else chunks[0] if chunks else decode_nothing(sorted(_wanted(columns)))
    out.attrs.update(stream_attrs(files, stream))
    return out


def iter_sources(found: Sources, stream: Stream, *, columns: Iterable[str] | None = None, keep: Filter = EVERYTHING,
                 dedup_ns: int = DEDUP_WINDOW_NS, chunk: int = CHUNK_RECORDS) -> Iterator[pd.DataFrame]:
    """The packets table of the captures `found` lists, as `read_sources` gives it whole, a chunk of about
    `chunk` records at a time (`stream`, `Stream.of(found.files)`, gathers the frame index and counts:
    `stream_attrs`). Raises and warns as `read_sources`."""
    files = found.files
    if not files:
        raise CaptureError(", ".join(str(e.path) for e in found.errors) or "(no input)", "no capture to read")
    wanted = _wanted(columns)
    read_columns = sorted(wanted | {"ts_ns"} | set(keep.columns()))
    for table in packet_chunks(files, read_columns, anchored(keep, files), dedup_ns, chunk, stream):
        yield table[[c for c in table.columns if c in wanted]]


def anchored(keep: Filter, files: tuple[Source, ...]) -> Filter:
    """The filter with its offsets counted from the captures' first packet (a filter already anchored, as
    analyzer.dask gives each capture of several, keeps its anchor)."""
    if keep.first_ns is not None:
        return keep
    first_ns = files[0].first_ns
    if first_ns is None and any(t is not None and t.offset for t in (keep.since, keep.until)):
        first_ns = first_time(files[0].path)
    return Filter(keep.since, keep.until, keep.hosts, keep.nets, keep.ports, first_ns=first_ns)


def stream_attrs(files: tuple[Source, ...], stream: Stream) -> dict[str, object]:
    """The attributes of a packets table read from a stream (as `packets.read` gives one file's)."""
    return dict(path=files[0].path if len(files) == 1 else None, paths=tuple(f.path for f in files),
                format="+".join(sorted(stream.formats)), compressed=stream.compressed, malformed=stream.malformed,
                sources=stream.index())


def read_many(inputs: Sequence[str] | str, *, columns: Iterable[str] | None = None, keep: Filter = EVERYTHING,
              dedup_ns: int = DEDUP_WINDOW_NS) -> pd.DataFrame:
    """The packets table of every capture `inputs` name (files, directories, glob patterns; see
    reading/sources.py), in capture order, duplicates across files left out, filtered by `keep`. Raises
    CaptureError for the first input that is no capture (the command line reports each and reads the rest)."""
    found = captures(inputs)
    try:
        return read_sources(found, columns=columns, keep=keep, dedup_ns=dedup_ns)
    finally:
        found.close()


def frame_labels(packets_or_attrs: pd.DataFrame | dict, frames: Iterable[int]) -> list[int | str]:
    """Frames as outputs name them: the number itself for one file, "file:number" for several."""
    attrs = packets_or_attrs.attrs if isinstance(packets_or_attrs, pd.DataFrame) else packets_or_attrs
    index: FrameIndex | None = attrs.get("sources")
    return [int(f) for f in frames] if index is None else [index.label(int(f)) for f in frames]



def decode_nothing(columns: list[str]) -> pd.DataFrame:
    """The packets table with no row, in these columns."""
    frame = empty_packets()
    return frame[[c for c in frame.columns if c in set(columns) | {"frame"}]]
