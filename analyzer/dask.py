"""Captures, or a `synlens export`, as a dask DataFrame: the packets table for work that a notebook wants
spread over processes or a cluster (dask.distributed), or beyond one machine's memory.

    import analyzer.dask
    packets = analyzer.dask.read(["/data/sensor1/", "/data/sensor2/*.pcap.gz"])   # one partition per capture
    packets.groupby("dst").size().compute()
    packets = analyzer.dask.read("/data/export")                                # a `synlens export` folder

From captures, each capture is one partition, read by whichever worker runs it (so the workers must see the
paths: a shared filesystem): its frames numbered within that file, with a `source` column naming it; the
partitions follow the captures' order (reading/sources.py), and packets that two sensors both captured stay in
both. `analyzer.read_many` gives one pandas table merged by time with such duplicates left out; an export holds
that merged table (its `frame` the merged number), partitioned by hour, for dask to read as Parquet.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .reading.filters import EVERYTHING, Filter

if TYPE_CHECKING:
    import dask.dataframe as dd
    import pandas as pd


def read(inputs: str | os.PathLike | Sequence[str | os.PathLike], columns: Iterable[str] | None = None, *,
         keep: Filter = EVERYTHING) -> dd.DataFrame:
    """The packets table of `inputs` as a dask DataFrame (see the module): captures (files, directories, glob
    patterns), or one folder that `synlens export` wrote. `columns`: the schema's columns to read (default all);
    `keep`: the filters of the command line's --since/--until/--host/--net/--port. Raises CaptureError for an
    input that is no capture."""
    import dask.dataframe as dd

    from .reading.many import anchored
    from .reading.sources import captures

    names = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if len(names) == 1 and (Path(names[0]) / "manifest.json").is_file():
        wanted = None if columns is None else list(dict.fromkeys(("frame", *columns)))
        return dd.read_parquet(Path(names[0]) / "packets", columns=wanted, filters=None)
    if any(str(n) == "-" for n in names):
        raise ValueError("analyzer.dask.read reads files the workers can open, not standard input")
    files = captures(names).files
    keep = anchored(keep, files)
    wanted = None if columns is None else tuple(columns)
    meta = _meta(wanted, [f.name for f in files])
    return dd.from_map(_one, [(f.path, f.name) for f in files], columns=wanted, keep=keep, meta=meta,
                       names=[f.name for f in files], enforce_metadata=False)


def _one(file: tuple[str, str], columns: tuple[str, ...] | None, keep: Filter, names: list[str]) -> pd.DataFrame:
    """One capture's packets table, with its `source`."""
    import pandas as pd

    from .reading.many import read_sources
    from .reading.sources import sources

    path, name = file
    found = sources([path])
    try:  # (dask may ask for fewer columns than the meta's, `source` among them)
        table = read_sources(found, columns=None if columns is None else [c for c in columns if c != "source"],
                             keep=keep, dedup_ns=0)
    finally:
        found.close()
    table = _addresses_as_text(table)
    table.attrs = {}
    table["source"] = pd.Categorical([name] * len(table), categories=names)
    return table if columns is None else table[list(columns)]


def _meta(columns: tuple[str, ...] | None, names: list[str]) -> pd.DataFrame:
    """The partitions' empty frame: the schema's types; addresses as text (each file has its own categories)."""
    import pandas as pd

    from .reading.many import decode_nothing
    from .reading.schema import PACKET_COLUMNS

    wanted = [c.name for c in PACKET_COLUMNS] if columns is None else list(columns)
    meta = _addresses_as_text(decode_nothing(wanted).copy())
    meta["source"] = pd.Categorical([], categories=names)
    return meta


def _addresses_as_text(table: pd.DataFrame) -> pd.DataFrame:
    """The table with its address columns as text: each capture's categories are its own, and dask's partitions
    must agree on a column's type."""
    for c in ("src", "dst", "q_src", "q_dst"):
        if c in table.columns:
            table[c] = table[c].astype(str)
    return table
