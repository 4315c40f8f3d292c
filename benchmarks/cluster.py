"""`synlens rtt` and `synlens scans` in one process and on local Dask clusters of 1, 2 and 4 workers.

Each cluster (dask.distributed's LocalCluster: worker processes of one thread) is started once, outside the
timing, as a user's running cluster is; its start is timed apart. Each run is the command line in this process
(`analyzer.cli.main`, output to a file) with `--scheduler` naming the cluster, alternating with the one-process
run, `--runs` times; the medians are printed, with the share of each cluster run spent in the client's merge (the
shards' probes joined and sorted, and the packets the analyses read joined and sorted: `distributed._joined` and
the packets' `concat_tables`; for rtt, whose analyses run on the workers, the buckets' results put in order:
`pipeline.merge_buckets`) and in the client's plan (the walk of the record headers), and the outputs compared.

    python3 benchmarks/cluster.py [--capture PCAP | --copies 10 [--dir DIR]] [--workers 1 2 4] [--runs 3]
"""

from __future__ import annotations

import argparse
import filecmp
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scale import BIG, make

import analyzer.distributed as dist
from analyzer import cli, pipeline

SPENT: dict[str, float] = {}


def timed(name: str, fn: Callable) -> Callable:
    def run(*a: object, **k: object) -> object:
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            SPENT[name] = SPENT.get(name, 0.0) + time.perf_counter() - t
    return run


dist._joined = timed("merge", dist._joined)
dist.concat_tables = timed("merge", dist.concat_tables)  # (the client's: the workers' are their own processes')
dist.plan = timed("plan", dist.plan)
pipeline.merge_buckets = timed("merge", pipeline.merge_buckets)


def once(argv: list[str], out: Path) -> float:
    SPENT.clear()
    t = time.perf_counter()
    buffer = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    with redirect_stdout(buffer):
        code = cli.main(argv)
    buffer.flush()
    out.write_bytes(buffer.buffer.getvalue())
    assert code == 0, argv
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capture", type=Path, default=BIG)
    ap.add_argument("--copies", type=int, default=0, help="rotated copies of the capture (benchmarks/scale.py)")
    ap.add_argument("--dir", type=Path, default=None, help="where the copies are, or are made")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    from distributed import Client, LocalCluster

    folder = Path(tempfile.mkdtemp(prefix="synlens-cluster-"))
    if args.copies:
        copies = args.dir or folder / "copies"
        copies.mkdir(parents=True, exist_ok=True)
        inputs = sorted(copies.glob("part-*.pcap")) or make(args.capture, args.copies, copies, rotated=True)
        inputs = inputs[:args.copies]
    else:
        inputs = [args.capture]
    print(f"{len(inputs)} file(s), {sum(p.stat().st_size for p in inputs) / 1e6:.0f} MB")
    same = True
    for n in args.workers:
        t = time.perf_counter()
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0") as local, \
                Client(local) as client:
            client.wait_for_workers(n)
            started = time.perf_counter() - t
            for command in ("rtt", "scans"):
                base = [command, *map(str, inputs), "--format", "json"]
                here, there, merge, planned = [], [], [], []
                for _ in range(args.runs):
                    here.append(once(base, folder / "here.json"))
                    there.append(once([*base, "--scheduler", local.scheduler_address], folder / "there.json"))
                    merge.append(SPENT.get("merge", 0.0))
                    planned.append(SPENT.get("plan", 0.0))
                ok = filecmp.cmp(folder / "here.json", folder / "there.json", shallow=False)
                same &= ok
                h, c = statistics.median(here), statistics.median(there)
                print(f"{command:5s} workers {n}: one process {h:.2f} s, cluster {c:.2f} s ({h / c:.2f}×), "
                      f"merge {statistics.median(merge):.2f} s ({statistics.median(merge) / c:.0%}), "
                      f"plan {statistics.median(planned):.2f} s; cluster start {started:.1f} s; "
                      f"{'same output' if ok else 'OUTPUTS DIFFER'}", flush=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
