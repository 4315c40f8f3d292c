"""Captures → Parquet datasets that other engines (DuckDB, Spark, Polars, pandas, dask) query without synlens.

`synlens export CAPTURE… --to DIR` writes

    DIR/packets/hour=2024-05-01T10/part-00000-0.parquet …   the packets table (reading/schema.py)
    DIR/probes/hour=2024-05-01T10/part-00000-0.parquet …    the probes table (analysis/match.py)
    DIR/manifest.json                                       the captures (name, path, bytes, SHA-256), filters, counts

Both tables keep the schema's types (integer nanoseconds, unsigned and nullable integers; addresses as
dictionary-encoded strings) and are partitioned Hive-style by the UTC hour of their time (`ts_ns`; a probe's is
its first transmission), so that a query for one hour reads one folder. Several captures get two more columns:
`source` (the file a frame came from) and `source_frame` (its number there); `frame` is the merged number every
synlens output uses.

The captures are read once, and written a chunk at a time as they are read (reading/stream.py): the packets,
and the probes as chunked matching gives them out (analysis/chunked.py), so an export's memory is bounded by a
chunk and a few reply windows of traffic, whatever the captures' size. (A capture whose clock steps back more
than the reply window is read a second time, once its packets are written, and its probes matched whole.)
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis.chunked import ChunkedMatch, Disordered, Matched
from ..analysis.match import DEFAULT_WINDOW_S, match, match_columns
from ..errors import CaptureError
from ..reading.filters import EVERYTHING, Filter
from ..reading.many import CHUNK_RECORDS, iter_sources, read_sources
from ..reading.merge import DEDUP_WINDOW_NS, concat_tables
from ..reading.schema import PACKET_COLUMNS
from ..reading.sources import Sources, sha256_of
from ..reading.stream import Stream

PARTITION = "hour"  # the Hive partition column: the UTC hour of the row's time, 2024-05-01T10
_HOUR_NS = 3600 * 10**9


@dataclass(frozen=True)
class Exported:
    """What an export wrote."""

    folder: Path
    packets: int
    probes: int
    hours: tuple[str, ...]
    files: int  # Parquet files written


def export(found: Sources, to: str | Path, *, keep: Filter = EVERYTHING, dedup_ns: int = DEDUP_WINDOW_NS,
           window_s: float = DEFAULT_WINDOW_S, chunk: int = CHUNK_RECORDS) -> Exported:
    """Write the captures `found` lists to `to` (a folder that does not exist or is empty) as Parquet (see the
    module). Raises CaptureError for a capture that cannot be read, or a folder that holds something."""
    folder = Path(to)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise CaptureError(str(folder), "exists and is not an empty folder: export writes a new dataset")
    files = found.files
    if not files:
        raise CaptureError("(no input)", "no capture to export")
    manifest = {"captures": [_described(f.name, f.path) for f in files], "filters": keep.describe(),
                "dedup_window_s": dedup_ns / 1e9, "partitioning": f"hive: {PARTITION} (UTC)",
                "columns": {c.name: c.dtype for c in PACKET_COLUMNS}}
    stream = Stream.of(files)
    m = ChunkedMatch(window_s=window_s, rows=min(chunk, 1 << 16))
    hours: set[str] = set()
    rows = {"packets": 0, "probes": 0}
    parquet = {"packets": 0, "probes": 0}

    def write(table: pd.DataFrame, dataset: str, part: int) -> None:
        written = _write(table, folder / dataset, part)
        hours.update(written)
        rows[dataset] += len(table)
        parquet[dataset] += len(written)

    disordered = False

    def probe_parts() -> Iterator[Matched]:
        """The packets written a batch at a time, each batch fed to the matcher: its probes as they are found
        (none more once the clock has stepped back: every packet is still written)."""
        nonlocal disordered
        chunks = iter_sources(found, stream, keep=keep, dedup_ns=dedup_ns, chunk=chunk)
        for part, table in enumerate(_batched(_with_sources(chunks, stream), chunk)):
            write(table, "packets", part)
            if not disordered:
                try:
                    yield from m.feed(table[list(match_columns())])
                except Disordered:
                    disordered = True
        if not disordered:
            yield from m.finish()

    for part, done in enumerate(probe_parts()):
        write(done.probes, "probes", part)
    if disordered:  # (the probes written go; they are matched on the capture read again, whole)
        shutil.rmtree(folder / "probes", ignore_errors=True)
        rows["probes"] = parquet["probes"] = 0
        whole = read_sources(found, columns=match_columns(), keep=keep, dedup_ns=dedup_ns, chunk=chunk)
        write(match(whole, window_s=window_s), "probes", 0)
    manifest.update(packets=rows["packets"], probes=rows["probes"], malformed=stream.malformed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return Exported(folder, rows["packets"], rows["probes"], tuple(sorted(hours)), sum(parquet.values()))


def _write(table: pd.DataFrame, dataset: Path, part: int) -> set[str]:
    """A table's rows into the dataset's hour partitions (part `part` of each); the hours written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not len(table):
        return set()
    hour = _hours(table["ts_ns"].to_numpy(np.int64))
    arrow = pa.Table.from_pandas(table.assign(**{PARTITION: hour}), preserve_index=False)
    pq.write_to_dataset(arrow, dataset, partition_cols=[PARTITION], basename_template=f"part-{part:05d}-{{i}}.parquet",
                        existing_data_behavior="overwrite_or_ignore")
    return set(hour.tolist())


def _with_sources(chunks: Iterator[pd.DataFrame], stream: Stream) -> Iterator[pd.DataFrame]:
    """Each chunk with its frames' file and number there, when several files are read."""
    for table in chunks:
        index = stream.index()
        if index is not None:
            file, local = index.locate(table["frame"].to_numpy(np.int64))
            table["source"] = pd.Categorical.from_codes(file, categories=list(index.names))
            table["source_frame"] = local
        yield table


def _batched(tables: Iterator[pd.DataFrame], rows: int) -> Iterator[pd.DataFrame]:
    """The tables joined into batches of at least `rows` rows (the last may hold fewer): a merge of many small
    files gives a chunk per safe prefix, and one Parquet file each would be many small ones."""
    held: list[pd.DataFrame] = []
    count = 0
    for table in tables:
        held.append(table)
        count += len(table)
        if count >= rows:
            yield concat_tables(held) if len(held) > 1 else held[0]
            held, count = [], 0
    if held:
        yield concat_tables(held) if len(held) > 1 else held[0]


def _hours(ts_ns: np.ndarray) -> np.ndarray:
    """The UTC hour of each time, as text (each distinct hour formatted once)."""
    hour, codes = np.unique(ts_ns // _HOUR_NS, return_inverse=True)
    names = pd.to_datetime(hour * _HOUR_NS, utc=True).strftime("%Y-%m-%dT%H")
    return np.asarray(names, dtype=object)[codes.reshape(-1)]


def _described(name: str, path: str) -> dict[str, object]:
    """A capture as the manifest names it: its name, path, size and SHA-256."""
    return {"name": name, "path": path, "bytes": os.path.getsize(path), "sha256": sha256_of(path)}
