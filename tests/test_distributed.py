"""Reading and matching on a Dask cluster (analyzer/distributed.py), on a real one: a `dask scheduler` and two
`dask worker` processes on loopback, started here in a folder of their own (the captures reach them by
absolute path). `rtt` and `scans` through the cluster print what they print in one process, byte for byte,
on every sample and third-party capture, whole, cut into record ranges of 50 to 1,000 records, and split into
files; a worker killed mid-run loses nothing (Dask runs its tasks again on the other).

The partition the cluster's matching rests on (`match.shard_of`: matching is local to a pair of ports) is
tested apart, on every capture, against `match` of the whole table."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REALWORLD
from test_chunked import assert_same_scans
from test_sources import FAST, pcap_bytes, run, split

import analyzer
from analyzer.analysis.match import match, shard_of
from analyzer.pipeline import Options, analyze
from analyzer.reading.filters import EVERYTHING
from analyzer.reading.parts import plan, read_part
from analyzer.reading.sources import captures

REPO = Path(__file__).resolve().parents[1]
CAPTURES = {p.name: p for p in sorted((REPO / "sample_pcaps").glob("*.pcap"))
            + (sorted(REALWORLD.glob("*.pcap*")) if REALWORLD.is_dir() else [])}


def dask() -> str:
    path = shutil.which("dask")
    assert path, "the dask command is not installed (bash .ci/setup installs distributed)"
    return path


class Cluster:
    """A scheduler and worker processes (no nanny: a killed worker stays dead), on loopback."""

    def __init__(self, folder: Path, workers: int) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.address = f"tcp://127.0.0.1:{port}"
        folder.mkdir(parents=True, exist_ok=True)
        self.log = (folder / "cluster.log").open("w")  # (the processes write it until close)
        log = self.log
        self.procs = [subprocess.Popen([dask(), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                                       cwd=folder, stdout=log, stderr=log)]
        self.workers = [subprocess.Popen([dask(), "worker", self.address,
                                          "--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", f"w{i}"],
                                         cwd=folder, stdout=log, stderr=log) for i in range(workers)]
        self.procs += self.workers
        from distributed import Client

        with Client(self.address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        self.log.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    made = Cluster(tmp_path_factory.mktemp("dask"), 2)
    try:
        yield made
    finally:
        made.close()


def tasks_run(address: str) -> int:
    """The scheduler's count of task transitions (so a test knows the cluster, not the client, did the work)."""
    from distributed import Client

    with Client(address) as client:
        return client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)


def same_outputs(cluster: Cluster, paths: list[Path], *extra: str) -> None:
    """`rtt` and `scans` (JSON) of `paths`: the same status, output and messages with `--scheduler` as without."""
    for command in (["rtt", "--format", "json", *extra], ["scans", "--format", "json"]):
        here = run(*command, *map(str, paths))
        there = run(*command, "--scheduler", cluster.address, *map(str, paths))
        assert there == here, (command, paths)


# ---- the partition matching rests on

@pytest.mark.parametrize("name", [n for n in CAPTURES if n in FAST or n == "scans_multi.pcap"])
def test_matching_each_shard_is_matching_the_whole(name: str) -> None:
    check_shards(CAPTURES[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CAPTURES))
def test_matching_each_shard_is_matching_the_whole_everywhere(name: str) -> None:
    check_shards(CAPTURES[name])


def check_shards(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", analyzer.CaptureWarning)  # (a damaged capture: read up to the damage)
        packets = analyzer.read(path)
    whole = match(packets)
    for shards in (2, 7):
        shard = shard_of(packets, shards)
        parts = [match(packets[shard == s].reset_index(drop=True)) for s in range(shards)]
        assert sum(p.attrs["unsolicited_replies"] for p in parts) == whole.attrs["unsolicited_replies"]
        assert sum(p.attrs["nat_pairs"] for p in parts) == whole.attrs["nat_pairs"]
        got = pd.concat([p.astype({"src": str, "dst": str}) for p in parts], ignore_index=True)
        got = got.sort_values(["ts_ns", "probe_frame"], kind="stable").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, whole.astype({"src": str, "dst": str}))
        if len(whole) > 20:
            assert sum(len(p) > 0 for p in parts) > 1, "every probe fell in one shard: the test shows nothing"


def test_a_shard_holds_both_ways_of_a_pair_of_ports() -> None:
    """A probe, its reply and an ICMP error quoting it fall in one shard; other pairs of ports spread."""
    rows = pd.DataFrame({
        "sport": pd.array([40000, 80, None, None, None, 40000], dtype="UInt16"),
        "dport": pd.array([80, 40000, None, None, None, 81], dtype="UInt16"),
        "q_sport": pd.array([None, None, 40000, None, None, None], dtype="UInt16"),
        "q_dport": pd.array([None, None, 80, None, None, None], dtype="UInt16"),
        "icmp_id": pd.array([None, None, None, 7, 7, None], dtype="UInt16"),
        "icmp_seq": pd.array([None, None, None, 1, 1, None], dtype="UInt16"),
    })
    shard = shard_of(rows, 1 << 20)
    assert shard[0] == shard[1] == shard[2]
    assert shard[3] == shard[4]
    assert len({shard[0], shard[3], shard[5]}) == 3


# ---- parts: record ranges read on their own

def test_parts_are_the_stream_cut_at_record_boundaries(tmp_path: Path) -> None:
    """The parts of a pcap and of its copy split into files are its packets table, row for row: frames
    numbered across the files, the last part of a damaged file reading up to the damage with its warning."""
    capture = CAPTURES["Alienvault-Demo__spambot.pcap"]  # (cut short inside its last record)
    with pytest.warns(analyzer.CaptureWarning, match="cut short"):
        whole = analyzer.read(capture)
    found = captures([str(capture)])
    layout = plan(found.files, 5000)
    assert len(layout.parts) == -(-len(whole) // 5000) and not any(p.last for p in layout.parts[:-1])
    tables = [read_part(p, list(whole.columns), EVERYTHING) for p in layout.parts]  # (warnings returned, not said)
    said = [w for t in tables for w in t.warnings]
    assert len(said) == 1 and "cut short" in str(said[0]) and not any(t.warnings for t in tables[:-1])
    got = pd.concat([t.table.astype({c: str for c in ("src", "dst", "q_src", "q_dst")}) for t in tables],
                    ignore_index=True)
    want = whole.astype({c: str for c in ("src", "dst", "q_src", "q_dst")})
    pd.testing.assert_frame_equal(got[list(want.columns)], want)
    files = split(CAPTURES["scans_multi.pcap"], 3, tmp_path / "split")
    found = captures(list(map(str, files)))
    layout = plan(found.files, 40)
    frames = np.concatenate([read_part(p, ["frame", "ts_ns"], EVERYTHING).table["frame"].to_numpy()
                             for p in layout.parts])
    assert (frames == np.arange(1, len(frames) + 1)).all()
    assert layout.frame_index() is not None and len(layout.frame_index().start) == 3


def two_sensors(folder: Path) -> list[str]:
    """A capture cut in two, and a second sensor's copy of its second half, half a second late: files that
    overlap in time."""
    files = split(CAPTURES["scans_multi.pcap"], 2, folder / "a")
    subprocess.run(["editcap", "-t", "0.5", str(files[1]), str(folder / "shifted.pcap")], check=True)
    return [str(files[0]), str(files[1]), str(folder / "shifted.pcap")]


def test_overlapping_captures_are_not_planned(tmp_path: Path) -> None:
    """Two sensors' captures interleave: their merge is the stream's, so no plan (the client reads them)."""
    paths = two_sensors(tmp_path)
    assert plan(captures(paths).files, 100) is None
    assert plan(captures(paths[:2]).files, 100) is not None  # (the first sensor's two files follow one another)


# ---- the command line through a real cluster

@pytest.mark.parametrize("name", [n for n in FAST if n in CAPTURES])
def test_through_the_cluster_outputs_are_the_same(cluster: Cluster, name: str) -> None:
    before = tasks_run(cluster.address)
    same_outputs(cluster, [CAPTURES[name]], "--chunk", "50")
    assert tasks_run(cluster.address) > before


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CAPTURES))
def test_through_the_cluster_every_capture(cluster: Cluster, name: str) -> None:
    same_outputs(cluster, [CAPTURES[name]], "--chunk", "1000")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CAPTURES))
def test_through_the_cluster_every_capture_split(cluster: Cluster, name: str, tmp_path: Path) -> None:
    """Split into 2, 7 and 50 files, each capture reads the same on the cluster as here (test_sources.py shows
    that here, split, is the capture itself)."""
    for parts in (2, 7, 50):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", analyzer.CaptureWarning)  # (a damaged capture is split up to its damage)
            files = split(CAPTURES[name], parts, tmp_path / str(parts))
        # (a capture whose clock steps back across a cut overlaps itself: read on the client, and said)
        overlap = plan(captures(list(map(str, files))).files, 1000) is None
        for command in (["rtt", "--format", "json"], ["scans", "--format", "json"]):
            here = run(*command, *map(str, files))
            there = run(*command, "--scheduler", cluster.address, *map(str, files))
            assert there[:2] == here[:2], (command, parts)
            said = there[2].splitlines()
            assert [line for line in said if "overlap in time" not in line] == here[2].splitlines()
            assert sum("overlap in time" in line for line in said) == overlap


def test_a_damaged_capture_among_good_ones(cluster: Cluster, tmp_path: Path) -> None:
    """A damaged capture is read up to its damage and warned of once, a file that is no capture is said in one
    line, and the rest is analysed (exit 1), on the cluster as here."""
    bad = tmp_path / "notes.pcap"
    bad.write_bytes(b"not a capture at all")
    paths = [CAPTURES["Alienvault-Demo__spambot.pcap"], bad]
    before = tasks_run(cluster.address)
    for command in (["rtt", "--format", "json", "--chunk", "5000"], ["scans", "--format", "json"]):
        here = run(*command, *map(str, paths))
        there = run(*command, "--scheduler", cluster.address, *map(str, paths))
        assert there == here and here[0] == 1
        assert there[2].count("cut short") == 1 and "notes.pcap: not a pcap" in there[2]
    assert tasks_run(cluster.address) > before


def test_split_files_and_the_environment_variable(cluster: Cluster, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A capture cut into 7 rotated files (named against their order) reads the same on the cluster, named by
    SYNLENS_SCHEDULER alone; filters are applied by the workers as by the reader here."""
    split(CAPTURES["scans_multi.pcap"], 7, tmp_path / "parts")
    monkeypatch.setenv("SYNLENS_SCHEDULER", cluster.address)
    before = tasks_run(cluster.address)
    for command in (["rtt", "--format", "json", "--chunk", "30"], ["scans", "--format", "json"],
                    ["scans", "--format", "json", "--until", "+3s", "--port", "22", "--port", "80"]):
        there = run(*command, str(tmp_path / "parts"))
        assert there[0] == 0 and json.loads(there[1])
        monkeypatch.delenv("SYNLENS_SCHEDULER")
        assert run(*command, str(tmp_path / "parts")) == there
        monkeypatch.setenv("SYNLENS_SCHEDULER", cluster.address)
    assert tasks_run(cluster.address) > before


def test_overlapping_captures_are_read_here_and_said(cluster: Cluster, tmp_path: Path) -> None:
    paths = two_sensors(tmp_path)
    here = run("scans", "--format", "json", *paths)
    there = run("scans", "--format", "json", "--scheduler", cluster.address, *paths)
    assert there[1] == here[1]
    assert "overlap in time" in there[2] and "overlap in time" not in here[2]


def test_progress_is_told_as_parts_are_read(cluster: Cluster, tmp_path: Path) -> None:
    """Reading's progress (what a terminal shows) is told as the workers finish parts: bytes grow to the
    capture's size, part by part, and the file is done with its last part; files split (pcapng: a part each)
    count one by one."""
    capture = CAPTURES["scans_multi.pcap"]  # (260 records: 7 parts of 40)
    told = []
    analyze(str(capture), ["families"], Options(scheduler=cluster.address, chunk=40), reading=told.append)
    assert len(told) == 7
    assert [r.bytes_done for r in told] == sorted({r.bytes_done for r in told})
    assert told[-1].bytes_done == told[-1].bytes_total == capture.stat().st_size
    assert [r.files_done for r in told] == [0] * 6 + [1]
    files = split(capture, 3, tmp_path / "parts")
    told.clear()
    analyze([str(f) for f in files], ["families"], Options(scheduler=cluster.address, chunk=40), reading=told.append)
    assert [(r.files_done, r.files) for r in told] == [(1, 3), (2, 3), (3, 3)]
    assert told[-1].bytes_done == sum(f.stat().st_size for f in files)


def test_a_cluster_asked_for_twice_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """--scheduler with --workers is one line, exit 2; --workers wins over SYNLENS_SCHEDULER (a cluster the user
    starts for this run, over the one the environment names); a scheduler that does not answer is one line, exit
    2."""
    capture = str(CAPTURES["scans_multi.pcap"])
    code, out, err = run("scans", capture, "--scheduler", "tcp://127.0.0.1:1", "--workers", "2")
    assert code == 2 and out == b"" and err.count("\n") == 1 and "not both" in err
    here = run("scans", capture)
    monkeypatch.setenv("SYNLENS_SCHEDULER", "tcp://127.0.0.1:1")  # (nothing listens there)
    assert run("scans", capture, "--workers", "1") == here
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        code, out, err = run("scans", capture)
    assert code == 2 and out == b"" and err.count("\n") == 1 and "tcp://127.0.0.1:1" in err, err


def test_a_series_runs_on_one_local_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """`rtt --each --workers N`: one cluster started for the series, each capture analysed on it, the output the
    one-process output."""
    import analyzer.distributed as dist

    started = []
    real = dist.cluster

    @contextmanager
    def counted(scheduler: str | None, workers: int) -> Iterator[object]:
        started.append((scheduler, workers))
        with real(scheduler, workers) as client:
            yield client

    monkeypatch.setattr(dist, "cluster", counted)
    paths = [str(CAPTURES[n]) for n in ("nat_qscan.pcap", "nat_agent.pcap", "scans_multi.pcap")]
    here = run("rtt", "--each", "--format", "json", *paths)
    there = run("rtt", "--each", "--format", "json", "--workers", "2", *paths)
    assert there == here and here[0] == 0
    assert started[0] == (None, 2) and len(started) == 4 and all(s and w == 0 for s, w in started[1:])


def test_a_local_cluster_of_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--workers N` starts a cluster of N processes for the run (the API's Options.workers), and the capture is
    read and matched there."""
    import analyzer.distributed as dist

    done = []
    real = dist.match_on_cluster
    monkeypatch.setattr(dist, "match_on_cluster", lambda client, *a, **k: done.append(
        (len(client.scheduler_info()["workers"]), real(client, *a, **k))) or done[-1][1])
    capture = str(CAPTURES["scans_multi.pcap"])
    here = analyze(capture, ["families", "scans"], Options())
    there = analyze(capture, ["families", "scans"], Options(workers=2, chunk=100))
    assert len(done) == 1 and done[0][0] == 2 and done[0][1] is not None
    pd.testing.assert_frame_equal(there.families, here.families)
    assert there.scans.scans.equals(here.scans.scans)
    assert (there.packet_count, there.probes_matched, there.unsolicited_replies) == \
        (here.packet_count, here.probes_matched, here.unsolicited_replies)


def test_scans_on_a_cluster_send_only_the_rows_screened(monkeypatch: pytest.MonkeyPatch) -> None:
    """scans and hosts on a cluster: each shard's task screens its packets (analysis/screen.py), and the client
    joins only the rows kept and the tallies of the others, added up by address. Every packet is one or the
    other; on the spam bot's traffic (connections that carry mail) most stay on the workers; scans, port states,
    notes and hosts are the one-process ones."""
    import analyzer.distributed as dist

    got = []
    real = dist.match_on_cluster
    monkeypatch.setattr(dist, "match_on_cluster", lambda *a, **k: got.append(real(*a, **k)) or got[-1])
    capture = str(CAPTURES["Alienvault-Demo__spambot.pcap"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", analyzer.CaptureWarning)  # (the capture is cut short)
        here = analyze(capture, ("scans", "hosts"), Options(chunk=0))
        there = analyze(capture, ("scans", "hosts"), Options(workers=2, chunk=5000))
    packets, _, counts, tallies = got[0]
    assert tallies is not None and len(packets) + tallies.packets.sum() == counts["packet_count"] == here.packet_count
    assert len(packets) < here.packet_count / 2
    assert len(here.scans.notes) and len(here.hosts) > 100
    assert_same_scans(here, there)


def test_an_ip_protocol_scan_spread_over_shards(tmp_path: Path) -> None:
    """nmap -sO's packets without ports (GRE, ESP, AH) go to shard 0, its TCP and UDP probes and their answers
    to other shards (two workers: four shards): the shards' screens are told which pairs of addresses carried
    such protocols, so they keep the TCP probe sent again and the UDP answer, which the protocols' states and
    probe counts read. Through the cluster the scan is the one-process scan: UDP open (its answer), TCP probed
    twice."""
    import dpkt

    a, b = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])

    def ip(src: bytes, dst: bytes, proto: int, data: bytes | dpkt.Packet) -> bytes:
        packet = dpkt.ip.IP(src=src, dst=dst, p=proto, ttl=64, data=data)
        packet.len += len(bytes(data))
        return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, data=packet))

    ack = dpkt.tcp.TCP(sport=40000, dport=80, flags=dpkt.tcp.TH_ACK, seq=7, ack=9, win=1024)
    frames = [ip(a, b, proto, b"\x00" * 8) for proto in (47, 50, 51)]
    frames += [ip(a, b, 1, dpkt.icmp.ICMP(type=8, data=dpkt.icmp.ICMP.Echo(id=5, seq=1))), ip(a, b, 6, ack),
               ip(a, b, 6, ack), ip(a, b, 17, dpkt.udp.UDP(sport=40000, dport=53, ulen=8)),
               ip(b, a, 17, dpkt.udp.UDP(sport=53, dport=40000, ulen=8))]
    capture = tmp_path / "ipproto.pcap"
    capture.write_bytes(pcap_bytes([(1000 + i * 0.01, f) for i, f in enumerate(frames)]))
    table = analyzer.read(capture)
    shards = shard_of(table, 4)
    assert shards[0] == 0 and set(shards[4:]) - {0}, shards  # (the TCP and UDP packets are other shards')
    here = analyze(str(capture), ("scans", "hosts"), Options(chunk=0))
    there = analyze(str(capture), ("scans", "hosts"), Options(workers=2))
    states = here.scans.states.set_index("port")
    assert list(here.scans.scans["type"]) == ["IPPROTO"]
    assert states.loc[17, "state"] == "open" and states.loc[6, "probes"] == 2
    for x, y in ((here.scans.scans, there.scans.scans), (here.scans.states, there.scans.states), (here.hosts, there.hosts)):
        pd.testing.assert_frame_equal(x, y)


def test_rtt_is_analysed_on_the_workers_a_bucket_of_targets_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """Families are made per target: on a cluster each worker analyses a bucket of targets (its probes from
    every shard, in the capture's order), and only the buckets' results travel to the client, which puts them in
    order: the one-process result. Two workers of one thread: four shards, four buckets; a sweep of 5,000 targets
    fills every bucket."""
    import analyzer.distributed as dist
    from analyzer.pipeline import BucketResult

    got = []
    real = dist.analyse_on_cluster
    monkeypatch.setattr(dist, "analyse_on_cluster", lambda *a, **k: got.append(real(*a, **k)) or got[-1])
    capture = str(CAPTURES["ProbingDataset__zmap_tcp_5k.pcapng"])
    here = analyze(capture, ["signals"], Options())
    there = analyze(capture, ["signals"], Options(workers=2, chunk=1000))
    results, counts = got[0]
    assert len(results) == 4 and all(isinstance(r, BucketResult) and set(r.results) == {"signals"}
                                           for r in results)
    assert all(not r.empty for r in results)
    assert sum(len(r.results["signals"][0]) for r in results) == len(here.signals[0]) == 5000
    for a, b in zip(here.signals, there.signals):
        pd.testing.assert_frame_equal(a, b)
    assert (there.packet_count, there.probes_matched, there.unsolicited_replies, there.notes) == \
        (here.packet_count, here.probes_matched, here.unsolicited_replies, here.notes) == \
        (counts["packet_count"], sum(r.matched for r in results), counts["unsolicited_replies"], ())


# ---- a worker killed mid-run

def test_a_worker_killed_mid_run_loses_nothing(tmp_path: Path) -> None:
    """Two workers; one is killed (SIGKILL) while `rtt` runs, once it holds results: Dask runs its tasks again
    on the other, and the output is the one-process output. `scans` then runs on the worker left."""
    from distributed import Client

    capture = tmp_path / "long.pcap"  # (third-party scans one after the other: many parts, many shards)
    names = ["Port-scans-detector-with-prolog__true_scan.pcap", "PortScanDetector__half-scan-attacker.pcap",
             "PortScanDetector__null-scan-attacker.pcap"]
    subprocess.run(["mergecap", "-a", "-F", "pcap", "-w", str(capture), *(str(CAPTURES[n]) for n in names)],
                   check=True)
    rtt = ["rtt", "--format", "json", "--chunk", "300", str(capture)]
    here = run(*rtt)
    made = Cluster(tmp_path / "dask", 2)
    try:
        with Client(made.address) as watcher:
            victim = next(a for a, w in watcher.scheduler_info()["workers"].items() if w["name"] == "w0")
            result: dict[str, object] = {}
            going = threading.Thread(target=lambda: result.update(rtt=run(*rtt, "--scheduler", made.address)))
            going.start()
            deadline = time.monotonic() + 120
            while not watcher.has_what().get(victim) and going.is_alive() and time.monotonic() < deadline:
                time.sleep(0.002)
            assert going.is_alive(), "the run ended before the worker could be killed"
            os.kill(made.workers[0].pid, signal.SIGKILL)
            going.join(300)
            assert not going.is_alive()
            assert [w["name"] for w in watcher.scheduler_info()["workers"].values()] == ["w1"]
        assert result["rtt"] == here
        scans = ["scans", "--format", "json", str(capture)]
        assert run(*scans, "--scheduler", made.address) == run(*scans)
    finally:
        made.close()
