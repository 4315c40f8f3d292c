"""Reading and matching as tasks on a Dask cluster (dask.distributed): the scheduler and workers users already
run (`--scheduler tcp://host:8786`, or SYNLENS_SCHEDULER), or a local cluster of N processes (`--workers N`).

    parts (reading/parts.py) ──decode──▶ shards (match.shard_of) ──match──▶ probes per shard ──▶ client: merged
                                                                              └──deal──▶ buckets of targets
                                                                                 ──analyse──▶ client: results

1. The client plans the parts: record ranges of each uncompressed pcap (one walk of its record headers), whole
   files otherwise. The workers read them from their paths: the captures must be on a filesystem every worker
   sees at the same path (a shared mount, or one machine).
2. A task per part decodes it (filters applied while reading, frames numbered as the single-process stream
   numbers them) and splits its packets into shards by their pair of ports.
3. A task per shard joins that shard's pieces of every part and matches them: matching is local to a pair of
   ports (`match.shard_of`), so each shard's probes are the whole capture's probes of those ports.
4. For analyses made per target (rtt's: `analyse_on_cluster`), a task per shard deals its probes and their
   replies into buckets of targets (analysis/buckets.py), and a task per bucket joins its pieces of every shard,
   in the capture's order (first transmission, then frame), and analyses them: only the results travel.
5. Otherwise (scans, hosts: `match_on_cluster`) the client joins the shards' probes in the capture's order, and
   with them the packets the analyses read, in the columns they read. For scans and hosts, each shard's task
   first screens its packets (analysis/screen.py, the whole shard one batch, told which pairs of addresses
   carried an odd IP protocol in any part) and sends only the rows kept and the tallies of the others, which
   the client adds up by address: the client holds what the probes bring, not the traffic.

The result is the single-process result, row for row. Dask moves the pieces between workers and, when a worker
dies, runs its tasks again elsewhere: every task is a pure function of its part. Captures that overlap in time
(several sensors) are merged and their copies found by one stream, which is not split: `match_on_cluster`
returns None for them and the pipeline reads them on the client.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .analysis.buckets import deal
from .analysis.chunked import Matched
from .analysis.match import answering, match, own_addresses, shard_of
from .analysis.screen import PROBE_FIELDS as SCREEN_PROBE_FIELDS
from .analysis.screen import Screen, Tallies, merged, odd_pairs
from .reading.filters import Filter
from .reading.merge import concat_tables, in_frame_order
from .reading.parts import Part, Plan, plan, read_part
from .reading.sources import Source
from .reading.stream import Reading

ENV = "SYNLENS_SCHEDULER"


@contextmanager
def cluster(scheduler: str | None, workers: int) -> Iterator[object]:
    """A dask.distributed Client: of the scheduler at `scheduler`, or of a local cluster of `workers` processes
    (one thread each) started here and stopped on leaving."""
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler, set_as_default=False) as client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as local, \
            Client(local, set_as_default=False) as client:
        yield client


@dataclass(frozen=True)
class _Decoded:
    """A part decoded: its shards' packets and what the stream would count."""

    shards: tuple[pd.DataFrame, ...]
    packets: int
    malformed: int
    format: str
    compressed: bool
    warnings: tuple[Warning, ...]
    odd: pd.DataFrame | None  # (screened: the part's pairs of addresses that carried an odd IP protocol)


def _decode(part: Part, read_columns: list[str], wanted: list[str], keep: Filter, shards: int,
            screened: bool) -> _Decoded:
    """A worker's task: a part's packets, split into shards."""
    r = read_part(part, read_columns, keep)
    table = r.table[[c for c in r.table.columns if c in set(wanted)]]
    shard = shard_of(table, shards)
    order = np.argsort(shard, kind="stable")
    bounds = np.searchsorted(shard[order], np.arange(shards + 1))
    pieces = tuple(table.take(order[bounds[s]:bounds[s + 1]]).reset_index(drop=True) for s in range(shards))
    return _Decoded(pieces, len(table), r.malformed, r.format, r.compressed, r.warnings,
                    odd_pairs(table) if screened else None)


def _piece(decoded: _Decoded, shard: int) -> pd.DataFrame:
    return decoded.shards[shard]


def _counts(decoded: _Decoded) -> _Decoded:
    return _Decoded((), decoded.packets, decoded.malformed, decoded.format, decoded.compressed, decoded.warnings,
                    decoded.odd)


def _match(pieces: list[pd.DataFrame], window_s: float, probe_columns: list[str] | None,
           packet_columns: list[str] | None, replies_only: bool, odd: list[_Decoded] | None
           ) -> tuple[pd.DataFrame, pd.DataFrame | None, Tallies | None]:
    """A worker's task: one shard's packets (its pieces, in the parts' order) matched; the packets the client
    keeps: the replies', or every row, in `packet_columns` (None: none); screened when `odd` (every part's
    counts, with the pairs of addresses that carried an odd IP protocol) is given, with the tallies of the rest
    (analysis/screen.py)."""
    present = [p for p in pieces if len(p)]
    table = concat_tables(present) if len(present) > 1 else present[0] if present else pieces[0]
    wanted = None if probe_columns is None else {*probe_columns, "ts_ns", "probe_frame",
                                                 *(("reply_frame",) if replies_only else ()),
                                                 *(SCREEN_PROBE_FIELDS if odd is not None else ())}
    probes = match(table, window_s=window_s, columns=wanted)
    packets, tallies = None, None
    if odd is not None and packet_columns is not None:
        screen = Screen([c for c in table.columns if c in set(packet_columns)])
        for d in odd:
            screen.knowing(d.odd)
        screen.given(probes)
        screen.add(table)
        empty = table.iloc[:0][screen.columns].reset_index(drop=True)
        del table
        packets, tallies = screen.finish()
        packets = empty if packets is None else packets
    elif packet_columns is not None:
        if replies_only:
            table = table[answering(table, probes)]
        packets = table[[c for c in table.columns if c in set(packet_columns)]].reset_index(drop=True)
    return probes, packets, tallies


def _submitted(client: object, files: tuple[Source, ...], keep: Filter, window_s: float, records: int,
               read_columns: list[str], probe_columns: list[str] | None, packet_columns: list[str] | None,
               replies_only: bool, screened: bool = False) -> tuple[Plan, list, list] | None:
    """The tasks that read and match the captures (None when they overlap in time): the plan, each part's
    counts and each shard's (probes, packets kept, tallies of the packets screened out or None)."""
    from .reading.many import anchored

    layout = plan(files, records)
    if layout is None:
        return None
    keep = anchored(keep, files)
    wanted = list(dict.fromkeys((*read_columns, "frame")))
    columns = sorted(set(wanted) | {"ts_ns"} | set(keep.columns()))
    workers = client.scheduler_info()["workers"]
    shards = max(1, 2 * sum(w.get("nthreads", 1) for w in workers.values()))
    decoded = [client.submit(_decode, part, columns, wanted, keep, shards, screened, pure=False)
               for part in layout.parts]
    counts = [client.submit(_counts, d, pure=False) for d in decoded]
    matched = [client.submit(_match, [client.submit(_piece, d, s, pure=False) for d in decoded], window_s,
                             probe_columns, packet_columns, replies_only, counts if screened else None, pure=False)
               for s in range(shards)]
    return layout, counts, matched


def _read_counts(client: object, files: tuple[Source, ...], layout: Plan, counts: list,
                 reading: Callable[[Reading], None] | None) -> tuple[dict[str, object], dict[str, object]]:
    """The parts' counts gathered (their warnings warned, as reading on the client would): the attrs of the
    packets table and the pipeline's counts."""
    said = _gathered(client, counts, layout.parts, reading)
    for d in said:
        for w in d.warnings:
            warnings.warn(w, stacklevel=3)
    paths = tuple(f.path for f in files)
    attrs = dict(path=paths[0] if len(paths) == 1 else None, paths=paths,
                 format="+".join(sorted({f for d in said for f in d.format.split("+") if f})),
                 compressed=any(d.compressed for d in said), malformed=sum(d.malformed for d in said),
                 sources=layout.frame_index())
    return attrs, dict(packet_count=sum(d.packets for d in said), malformed=attrs["malformed"],
                       format=attrs["format"], frames=attrs["sources"])


def match_on_cluster(client: object, files: tuple[Source, ...], keep: Filter, *, window_s: float, records: int,
                     read_columns: list[str], probe_columns: list[str] | None, packet_columns: list[str] | None,
                     replies_only: bool, screened: bool = False, reading: Callable[[Reading], None] | None = None
                     ) -> tuple[pd.DataFrame | None, pd.DataFrame, dict[str, object], Tallies | None] | None:
    """The captures `files` read and matched on `client`'s cluster (see the module): (the packets kept, in
    `packet_columns`: the replies' rows only when `replies_only`, the rows the screen keeps when `screened`; the
    probes table; the counts of a read; the tallies of the packets screened out, or None), or None when the
    files overlap in time. Raises the CaptureError of a file that cannot be read; warns the warnings of damaged
    ones (CaptureWarning), as reading on the client would. `reading` is told how far the parts' reading has
    gone as their tasks finish."""
    submitted = _submitted(client, files, keep, window_s, records, read_columns, probe_columns, packet_columns,
                           replies_only, screened and packet_columns is not None)
    if submitted is None:
        return None
    layout, counts, matched = submitted
    attrs, read = _read_counts(client, files, layout, counts, reading)
    results = client.gather(matched)
    probes = _joined([p for p, _, _ in results], window_s)
    if probe_columns is not None:
        probes = probes[[c for c in probes.columns if c in set(probe_columns)]]
    tallies = merged([t for _, _, t in results]) if results[0][2] is not None else None
    packets = None
    if packet_columns is not None:
        tables = [t for _, t, _ in results if len(t)] or [results[0][1]]
        del results
        packets = in_frame_order(tables)
        packets.attrs.update(attrs)
    return packets, probes, read, tallies


def analyse_on_cluster(client: object, files: tuple[Source, ...], keep: Filter, *, window_s: float, records: int,
                       read_columns: list[str], probe_columns: list[str] | None, packet_columns: list[str] | None,
                       analyse: Callable[[pd.DataFrame | None, pd.DataFrame], object], buckets: int | None = None,
                       reading: Callable[[Reading], None] | None = None
                       ) -> tuple[list[object], dict[str, object]] | None:
    """The captures read, matched and analysed on the cluster, for analyses made per target: each shard's probes
    (and the replies they read, in `packet_columns`) dealt into `buckets` buckets of targets on its worker; a
    task per bucket joins its pieces of every shard, in the capture's order, and runs `analyse(packets,
    probes)` on them (analysis/buckets.py; `buckets`: as many as shards, twice the workers' threads, unless
    asked). Only those results travel to the client: (the result of each bucket with probes, or of the first when
    none has any; the counts of a read, with the unsolicited replies), or None when the files overlap in time."""
    submitted = _submitted(client, files, keep, window_s, records, read_columns, probe_columns, packet_columns,
                           True)
    if submitted is None:
        return None
    layout, counts, matched = submitted
    buckets = buckets or len(matched)
    dealt = [client.submit(_dealt, m, buckets, pure=False) for m in matched]
    unsolicited = [client.submit(_unsolicited, m, pure=False) for m in matched]
    analysed = [client.submit(_analysed, [client.submit(_bucket, d, b, pure=False) for d in dealt], window_s,
                              analyse, b == 0, pure=False) for b in range(buckets)]
    del matched, dealt
    _, read = _read_counts(client, files, layout, counts, reading)
    read["unsolicited_replies"] = sum(client.gather(unsolicited))
    return [r for r in client.gather(analysed) if r is not None], read


def _dealt(result: tuple[pd.DataFrame, pd.DataFrame | None, None], n: int) -> list[Matched]:
    """A worker's task: a shard's probes and replies dealt into buckets of targets."""
    return deal(*result[:2], n)


def _bucket(dealt: list[Matched], bucket: int) -> Matched:
    return dealt[bucket]


def _unsolicited(result: tuple[pd.DataFrame, pd.DataFrame | None, None]) -> int:
    """A worker's task: a shard's unsolicited replies."""
    return result[0].attrs.get("unsolicited_replies", 0)


def _analysed(pieces: list[tuple[pd.DataFrame, pd.DataFrame | None]], window_s: float,
              analyse: Callable[[pd.DataFrame | None, pd.DataFrame], object], always: bool) -> object | None:
    """A worker's task: a bucket of targets' pieces of every shard, joined in the capture's order, analysed;
    None for a bucket without probes, unless `always` (one bucket is analysed even so: the result of a capture
    without probes)."""
    if not always and not any(len(p) for p, _ in pieces):
        return None
    probes = _joined([p for p, _ in pieces], window_s)
    packets = None if pieces[0][1] is None else in_frame_order([r for _, r in pieces if len(r)] or [pieces[0][1]])
    del pieces
    return analyse(packets, probes)


def _gathered(client: object, counts: list, parts: tuple[Part, ...],
              reading: Callable[[Reading], None] | None) -> list[_Decoded]:
    """The parts' counts, in the parts' order, `reading` told as each part is read."""
    if reading is None:
        return client.gather(counts)
    from distributed import as_completed

    total, files = sum(p.size for p in parts), len({p.file for p in parts})
    left = {}  # each file's parts not yet read
    for p in parts:
        left[p.file] = left.get(p.file, 0) + 1
    place = {c.key: k for k, c in enumerate(counts)}
    done = 0
    for future in as_completed(counts, loop=client.loop):
        part = parts[place[future.key]]
        done += part.size
        left[part.file] -= 1
        reading(Reading(done, total, sum(n == 0 for n in left.values()), files))
    return client.gather(counts)


def _joined(parts: list[pd.DataFrame], window_s: float) -> pd.DataFrame:
    """The shards' probes as one probes table, in its order (first transmission, then frame)."""
    present = [p for p in parts if len(p)] or parts[:1]
    out = concat_tables(present) if len(present) > 1 else present[0]
    if len(present) > 1:
        order = np.lexsort((out["probe_frame"].to_numpy(), out["ts_ns"].to_numpy()))
        out = own_addresses(out.take(order).reset_index(drop=True))
    out.attrs = dict(unsolicited_replies=sum(p.attrs.get("unsolicited_replies", 0) for p in parts),
                     window_s=window_s, nat_pairs=sum(p.attrs.get("nat_pairs", 0) for p in parts))
    return out


def scheduler_address(given: str | None) -> str | None:
    """The scheduler asked for: `given`, else SYNLENS_SCHEDULER (None: neither; `--workers` overrides both)."""
    return given or os.environ.get(ENV) or None
