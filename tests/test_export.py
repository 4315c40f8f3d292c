"""`synlens export` (Parquet for other engines) and `analyzer.dask.read` (a dask DataFrame): the tables they
give are synlens's own, value for value and type for type, on real captures."""

from __future__ import annotations

import glob
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
from conftest import REALWORLD

import analyzer
import analyzer.dask
from analyzer.pipeline import Options, analyze
from analyzer.reading.filters import Filter
from analyzer.reading.many import frame_labels
from analyzer.reading.sources import sources
from analyzer.render.export import export

ROOT = Path(__file__).resolve().parent.parent
SCANS = sorted(glob.glob(str(ROOT / "sample_pcaps" / "scans_*.pcap")))


def _dataset(folder: Path) -> pd.DataFrame:
    """A Parquet dataset as another engine reads it (pyarrow, Hive partitions), in frame order."""
    table = ds.dataset(folder, format="parquet", partitioning="hive").to_table().to_pandas()
    key = "frame" if "frame" in table.columns else "probe_frame"
    return table.sort_values(key).reset_index(drop=True)


def _same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Column for column: the same values (missing where missing) and the same types (addresses as text)."""
    for c in want.columns:
        a, b = got[c], want[c]
        if isinstance(b.dtype, pd.CategoricalDtype) or b.dtype == object:
            assert a.astype(str).tolist() == b.astype(str).tolist(), c
        else:
            assert a.dtype == b.dtype, (c, a.dtype, b.dtype)
            assert a.isna().tolist() == b.isna().tolist(), c
            assert (a[b.notna()] == b[b.notna()]).all(), c


def test_export_of_several_captures_is_their_merged_table(tmp_path: Path) -> None:
    keep = Filter.of(ports=[22, 80])
    found = sources(SCANS)
    done = export(found, tmp_path / "out", keep=keep, chunk=50)
    want = analyzer.read_many(SCANS, keep=keep)
    packets = _dataset(tmp_path / "out" / "packets")
    assert done.packets == len(want) == len(packets) > 0
    _same(packets, want)
    # each row says where it came from, as the outputs label frames
    labels = frame_labels(want, want["frame"])
    assert [f"{s}:{n}" for s, n in zip(packets["source"], packets["source_frame"])] == labels
    # partitioned by the UTC hour of each row's time
    hours = pd.to_datetime(packets["ts_ns"], utc=True).dt.strftime("%Y-%m-%dT%H")
    assert packets["hour"].astype(str).tolist() == hours.tolist()
    assert set(done.hours) == set(hours) and len(done.hours) >= 2
    # the probes table: the pipeline's
    probes = _dataset(tmp_path / "out" / "probes")
    want_probes = analyze(SCANS, (), Options(keep=keep), keep=("probes",)).probes.reset_index(drop=True)
    assert done.probes == len(want_probes) == len(probes) > 0
    _same(probes, want_probes)


def test_export_manifest_names_the_captures_exactly(tmp_path: Path) -> None:
    export(sources(SCANS[:3]), tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [c["path"] for c in manifest["captures"]] == [f.path for f in sources(SCANS[:3]).files]
    for c in manifest["captures"]:
        data = Path(c["path"]).read_bytes()
        assert c["sha256"] == hashlib.sha256(data).hexdigest() and c["bytes"] == len(data)
    assert manifest["packets"] == sum(len(analyzer.read(c["path"])) for c in manifest["captures"])


@pytest.mark.skipif(not REALWORLD.is_dir(), reason="../shared/realworld is not here")
def test_export_manifest_says_the_filters_exactly(tmp_path: Path) -> None:
    """The filters as given, to the nanosecond (a float would write 1.0368e+06 for twelve days)."""
    keep = Filter.of(since="+12d", until="1714557600.123456789", hosts=["10.77.40.2"], ports=[22])
    export(sources(SCANS[:2]), tmp_path / "out", keep=keep)
    filters = json.loads((tmp_path / "out" / "manifest.json").read_text())["filters"]
    assert filters == {"since": "+1036800.000000000s", "until": "1714557600.123456789", "hosts": ["10.77.40.2"],
                       "nets": [], "ports": [22]}


def test_export_in_small_chunks_of_a_real_capture_is_the_capture(tmp_path: Path) -> None:
    path = str(REALWORLD / "nmapscan__nmap.pcapng")
    export(sources([path]), tmp_path / "out", chunk=100)
    packets = _dataset(tmp_path / "out" / "packets")
    want = analyzer.read(path)
    assert len(list((tmp_path / "out" / "packets").rglob("*.parquet"))) > 5  # (written a chunk at a time)
    _same(packets, want)
    assert "source" not in packets.columns  # (one capture: its frames are the file's)


def test_export_cli_refuses_a_folder_that_holds_something(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    done = subprocess.run([sys.executable, "-m", "analyzer", "export", SCANS[0], "--to", str(tmp_path / "out")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "exists and is not an empty folder" in done.stderr and (tmp_path / "out" / "keep.txt").read_text() == "mine"
    done = subprocess.run([sys.executable, "-m", "analyzer", "export", SCANS[0], "--to", str(tmp_path / "new")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stderr.startswith(f"wrote {tmp_path / 'new'}: "), done.stderr


def _per_file() -> pd.DataFrame:
    tables = []
    for f in sources(SCANS).files:
        t = analyzer.read(f.path)
        tables.append(t.assign(source=f.name))
    return pd.concat(tables, ignore_index=True)


def test_dask_read_of_captures_is_one_partition_per_capture() -> None:
    frame = analyzer.dask.read(SCANS)
    assert frame.npartitions == len(SCANS)
    got = frame.compute().reset_index(drop=True)
    want = _per_file()
    assert got["source"].astype(str).tolist() == want["source"].tolist()
    _same(got, want.drop(columns="source"))
    # a projection reads only what it asks for, and agrees
    ports = analyzer.dask.read(SCANS, columns=["dport", "tcp_flags"]).compute()
    assert list(ports.columns) == ["dport", "tcp_flags"]
    assert ports["dport"].fillna(0).astype(np.int64).sum() == want["dport"].fillna(0).astype(np.int64).sum()


def test_dask_read_counts_offsets_from_the_first_capture_not_each() -> None:
    """`--since +60s` is 60 s after the first packet of all the captures, in every partition alike (anchored on
    its own file, each partition would keep what its own first minute leaves)."""
    keep = Filter.of(since="+60s")
    got = analyzer.dask.read(SCANS, columns=["ts_ns"], keep=keep).compute()
    want = analyzer.read_many(SCANS, columns=["ts_ns"], keep=keep, dedup_ns=0)
    assert len(want) > 0 and sorted(got["ts_ns"]) == sorted(want["ts_ns"])


def test_dask_read_of_an_export_is_the_export(tmp_path: Path) -> None:
    export(sources(SCANS), tmp_path / "out")
    got = analyzer.dask.read(tmp_path / "out").compute().sort_values("frame").reset_index(drop=True)
    _same(got, analyzer.read_many(SCANS))


@pytest.mark.slow
def test_dask_read_on_a_distributed_cluster_of_processes() -> None:
    """The same table computed by two worker processes of a dask.distributed cluster on this machine."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        frame = analyzer.dask.read(SCANS)
        got = client.compute(frame).result().reset_index(drop=True)
        counts = client.compute(frame.groupby("source", observed=True).size()).result()
        assert len(client.scheduler_info()["workers"]) == 2
    want = _per_file()
    _same(got, want.drop(columns="source"))
    assert counts.sort_index().to_dict() == want.groupby("source").size().sort_index().to_dict()
