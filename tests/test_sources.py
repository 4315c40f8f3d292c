"""Many captures read as one (analyzer/reading/sources.py, merge.py, many.py, filters.py): split into files,
a capture's analysis is the analysis of those files merged as mergecap merges them, frames named by file;
files are taken in capture order, overlapping files interleaved as mergecap interleaves them, copies from a
second sensor left out; filters keep what they say; standard input reads as a file; bad files among good ones
are said and passed over.

The splits are made by editcap (Wireshark's own), the merges by mergecap: the reference is Wireshark's.
"""

from __future__ import annotations

import io
import ipaddress
import json
import re
import shutil
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import dpkt
import numpy as np
import pandas as pd
import pytest
from conftest import REALWORLD

import analyzer
from analyzer import cli
from analyzer.reading.filters import Filter
from analyzer.reading.formats import iter_records, read_records
from analyzer.reading.many import read_many, read_sources
from analyzer.reading.merge import merged_order, running_max
from analyzer.reading.sources import captures

REPO = Path(__file__).resolve().parents[1]
SAMPLES = sorted((REPO / "sample_pcaps").glob("*.pcap"))
REAL = sorted(p for p in REALWORLD.glob("*.pcap*")) if REALWORLD.is_dir() else []
# The captures every equivalence below runs on in the fast suite; the others run in the slow one.
FAST = ["scans_multi.pcap", "nat_qscan.pcap", "hw13-01__nmap.pcapng", "PortScanDetector__udp-scan-attacker.pcap",
        "IntroToCybersecurity__traceroute.pcap", "nDPI__dnscrypt-v1-and-resolver-pings.pcap"]


def need(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} is not installed (bash .ci/setup installs it)"
    return path


def split(capture: Path, parts: int, folder: Path) -> list[Path]:
    """The capture cut into `parts` files of consecutive records (editcap -c), named so that their names sort
    in the reverse of their capture order (the reader must order them by time, not by name)."""
    folder.mkdir(parents=True, exist_ok=True)
    count = len(read_records(capture))
    per = max(1, -(-count // parts))
    subprocess.run([need("editcap"), "-c", str(per), str(capture), str(folder / ("part" + capture.suffix))],
                   check=True, capture_output=True)
    made = sorted(folder.iterdir())
    renamed = []
    for i, f in enumerate(made):
        target = folder / f"{len(made) - i:03d}{capture.suffix}"
        f.rename(target)
        renamed.append(target)
    return renamed


def merge(files: list[Path], out: Path) -> Path:
    subprocess.run([need("mergecap"), "-F", "pcapng" if out.suffix == ".pcapng" else "pcap", "-w", str(out),
                    *map(str, files)], check=True, capture_output=True)
    return out


def run(*argv: str) -> tuple[int, bytes, str]:
    """The command line in this process: exit status, standard output (bytes), standard error."""
    out, err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8"), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        with warnings.catch_warnings():
            code = cli.main(list(argv))
        out.flush()
    finally:
        sys.stdout, sys.stderr = saved
    return code, out.buffer.getvalue(), err.getvalue()


def frames_original(value: object, files: list[Path]) -> object:
    """A JSON value with every "file:frame" (`files`: consecutive pieces of one capture, in order) replaced by
    that frame's number in the capture, and without the capture's name: what the command prints for the
    capture itself."""
    offset, start = {}, 0
    for f in files:
        offset[str(f)] = start
        start += len(read_records(f))
    pattern = re.compile(r"^(.*):(\d+)$")

    def walk(v: object) -> object:
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items() if k != "capture"}
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, str):
            m = pattern.match(v)
            if m and m.group(1) in offset:
                return offset[m.group(1)] + int(m.group(2))
        return v
    return walk(value)


def without_capture(value: dict) -> dict:
    return {k: v for k, v in value.items() if k != "capture"}


CAPTURES = {p.name: p for p in SAMPLES + REAL}


@pytest.mark.parametrize("parts", [1, 2, 7, pytest.param(50, marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", FAST)
def test_split_captures_analyse_as_their_merge(tmp_path: Path, name: str, parts: int) -> None:
    check_split(tmp_path, CAPTURES[name], parts)


@pytest.mark.slow
@pytest.mark.parametrize("parts", [2, 7, 50])
@pytest.mark.parametrize("name", [n for n in CAPTURES if n not in FAST])
def test_every_capture_split_analyses_as_its_merge(tmp_path: Path, name: str, parts: int) -> None:
    check_split(tmp_path, CAPTURES[name], parts)


def check_split(tmp_path: Path, capture: Path, parts: int) -> None:
    """`rtt` and `scans` (JSON) of the parts, each frame mapped back to its number in the capture, are the
    capture's own, and so is `rtt` matched 1,000 records at a time, and 50 with a 50 ms window, and 1,000 with its
    probes on disk by target; and the parts' packets table is the capture's."""
    files = split(capture, parts, tmp_path / "parts")
    for command in (["rtt", "--format", "json"], ["scans", "--format", "json"]):
        code, whole, _ = run(*command, str(capture))
        code_parts, pieces, err = run(*command, *map(str, reversed(files)))
        assert code == code_parts == 0, err
        assert frames_original(json.loads(pieces), files) == without_capture(json.loads(whole)), command
    # Matched a chunk of records at a time (analysis/chunked.py); with a 50 ms window, short captures are cut too;
    # and with every probe past the memory budget, on disk by target (analysis/buckets.py).
    for chunk, window, buffer in (("1000", "10", []), ("50", "0.05", []), ("1000", "0.05", ["--buffer-size", "0"])):
        code, whole, _ = run("rtt", "--format", "json", "--window", window, "--chunk", "0", str(capture))
        code_parts, pieces, err = run("rtt", "--format", "json", "--window", window, "--chunk", chunk, *buffer,
                                      *map(str, reversed(files)))
        assert code == code_parts == 0, err
        assert frames_original(json.loads(pieces), files) == without_capture(json.loads(whole)), chunk
    table = read_many([str(f) for f in files])
    original = analyzer.read(capture)
    if (np.diff(original["ts_ns"].to_numpy()) >= 0).all():  # (in time order: merged, the parts are the capture)
        pd.testing.assert_frame_equal(table, original)


@pytest.mark.parametrize("name", ["hw13-01__nmap.pcapng", "PortScanDetector__half-scan-attacker.pcap",
                                  "nDPI__dnscrypt-v1-and-resolver-pings.pcap"])
def test_interleaved_files_merge_as_mergecap_merges_them(tmp_path: Path, name: str) -> None:
    """Two files holding a capture's records alternately (one sensor's odd frames, the other's even ones, each
    file's time order as the capture's, out-of-order records included): our order and frame numbers are
    mergecap's; each frame's file and number there are right."""
    capture = REALWORLD / name
    if not capture.exists():
        pytest.skip(f"real captures not found at {REALWORLD}")
    odd, even = tmp_path / f"odd{capture.suffix}", tmp_path / f"even{capture.suffix}"
    count = len(read_records(capture))
    for out, first in ((odd, 1), (even, 2)):
        subprocess.run([need("editcap"), "-r", str(capture), str(out), *map(str, range(first, count + 1, 2))],
                       check=True, capture_output=True)
    # mergecap takes, of records of one time, the later-named file's first; we take the file that starts first
    # (as in a capture cut into files): named in this order, the two agree on every record.
    merged = merge([even, odd], tmp_path / f"merged{capture.suffix}")
    ours = read_many([str(odd), str(even)], dedup_ns=0)  # (the capture's own repeated frames stay)
    pd.testing.assert_frame_equal(ours, analyzer.read(merged))
    index = ours.attrs["sources"]
    file, local = index.locate(ours["frame"].to_numpy())
    for f, part in enumerate(index.names):
        own = analyzer.read(part)["ts_ns"].to_numpy()
        np.testing.assert_array_equal(ours["ts_ns"].to_numpy()[file == f], own[local[file == f] - 1])


def test_merged_order_is_a_kway_merge_of_heads() -> None:
    """The k-way merge of the files' next records (the earliest first, ties to the file named first) and the
    running-maximum sort give one order, on random files with records out of order."""
    rng = np.random.default_rng(4)
    for _ in range(300):
        files = [np.sort(rng.integers(0, 50, rng.integers(0, 12))) for _ in range(rng.integers(1, 5))]
        for f in files:  # some records out of order
            if len(f) > 2 and rng.random() < 0.7:
                i, j = rng.integers(0, len(f), 2)
                f[i], f[j] = f[j], f[i]
        heads, want = [0] * len(files), []
        while True:
            live = [(int(f[h]), k) for k, (f, h) in enumerate(zip(files, heads)) if h < len(f)]
            if not live:
                break
            _, k = min(live)
            want.append((k, heads[k]))
            heads[k] += 1
        keys = np.concatenate([running_max(f.astype(np.int64)) for f in files] + [np.zeros(0, np.int64)])
        file = np.concatenate([np.full(len(f), k) for k, f in enumerate(files)] + [np.zeros(0, int)])
        place = np.concatenate([np.arange(len(f)) for f in files] + [np.zeros(0, int)])
        order = merged_order(keys, file, place)
        assert list(zip(file[order].tolist(), place[order].tolist())) == want


def pcap_bytes(frames: list[tuple[float, bytes]]) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for ts, data in frames:
        out.append(struct.pack("<IIII", int(ts), round((ts % 1) * 1e6), len(data), len(data)) + data)
    return b"".join(out)


def syn(sport: int, dport: int, seq: int) -> bytes:
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, flags=dpkt.tcp.TH_SYN, win=1024)
    ip = dpkt.ip.IP(src=bytes([10, 0, 0, 1]), dst=bytes([10, 0, 0, 2]), p=6, ttl=64, data=tcp)
    ip.len += len(tcp)
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, data=ip))


def test_a_second_sensors_copies_are_left_out(tmp_path: Path) -> None:
    """Sensor B saw every frame sensor A saw, 2 ms later, and one A did not: the merge keeps A's copies and B's
    own frame; with --dedup-window 0 every frame counts. A frame A saw twice (a retransmission) stays twice."""
    frames = [(1000.0 + i, syn(40000 + i, 80, i)) for i in range(20)]
    frames.insert(5, (1004.5, frames[4][1]))  # the same bytes again, half a second later: the traffic's own
    a = tmp_path / "a.pcap"
    b = tmp_path / "b.pcap"
    a.write_bytes(pcap_bytes(frames))
    b.write_bytes(pcap_bytes([(t + 0.002, d) for t, d in frames] + [(1030.0, syn(50000, 443, 7))]))
    table = read_many([str(a), str(b)])
    assert len(table) == len(frames) + 1
    files, local = table.attrs["sources"].locate(table["frame"].to_numpy())
    assert (files[:-1] == 0).all() and files[-1] == 1 and local[-1] == len(frames) + 1
    assert len(read_many([str(a), str(b)], dedup_ns=0)) == 2 * len(frames) + 1
    assert len(read_many([str(b), str(a)], dedup_ns=1_000_000)) == 2 * len(frames) + 1  # (2 ms apart: not copies)


def test_only_frames_another_file_comes_near_are_hashed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames are hashed to meet a second sensor's copies only where another file holds packets near them: of
    rotated files, none; of a sensor that saw a stretch of another's traffic, that stretch's chunks. What is
    left out is what hashing every frame leaves out."""
    from analyzer.reading import stream

    frames = [(1000.0 + i, syn(40000 + i, 80, i)) for i in range(20)]
    a, b, c = tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "c.pcap"
    a.write_bytes(pcap_bytes(frames))
    b.write_bytes(pcap_bytes([(t + 0.002, d) for t, d in frames[10:15]] + [(1016.5, syn(50000, 443, 7))]))
    c.write_bytes(pcap_bytes([(1100.0 + i, syn(60000 + i, 22, i)) for i in range(8)]))  # (rotated: after a)
    hashed: list[int] = []
    real = stream.frame_hashes
    monkeypatch.setattr(stream, "frame_hashes", lambda records: hashed.append(len(records)) or real(records))

    def table(*paths: Path) -> pd.DataFrame:
        found = captures([str(p) for p in paths])
        try:
            return read_sources(found, chunk=4)
        finally:
            found.close()

    rotated = table(a, c)
    assert len(rotated) == 28 and hashed == []
    some = table(a, b, c)
    assert len(some) == 20 + 1 + 8
    assert 0 < sum(hashed) < 20 + 6 + 8, "every frame was hashed, or none"
    monkeypatch.setattr(stream, "_may_meet_copies", lambda *_: True)
    everything = table(a, b, c)
    pd.testing.assert_frame_equal(some, everything)


def test_files_are_ordered_by_their_first_packet_not_their_names(tmp_path: Path) -> None:
    early, late = tmp_path / "z.pcap", tmp_path / "a.pcap"
    early.write_bytes(pcap_bytes([(100.0 + i, syn(1000 + i, 22, i)) for i in range(3)]))
    late.write_bytes(pcap_bytes([(200.0 + i, syn(2000 + i, 22, i)) for i in range(3)]))
    table = read_many([str(tmp_path)])
    assert table.attrs["sources"].names == (str(early), str(late))
    assert table["sport"].tolist() == [1000, 1001, 1002, 2000, 2001, 2002]


def test_filters_keep_what_they_say() -> None:
    """Each filter alone keeps the rows a filter of the whole table keeps, with their own frame numbers."""
    capture = REALWORLD / "StratosphereLinuxIPS__test7-malicious.pcap"
    if not capture.exists():
        pytest.skip(f"real captures not found at {REALWORLD}")
    whole = analyzer.read(capture)
    t0 = int(whole["ts_ns"].min())
    host = str(whole["src"].value_counts().index[3])  # (an address of some packets, not of most)
    net = ipaddress.ip_network(f"{host}/24", strict=False)
    port = int(whole.loc[whole["src"] == host, "sport"].value_counts().index[0])  # (one of that host's ports)

    def any_of(columns: list[str], match: object) -> pd.Series:
        return np.logical_or.reduce([whole[c].astype(object).map(match).fillna(False).astype(bool) for c in columns])

    addresses = ["src", "dst", "q_src", "q_dst"]
    cases = [
        (Filter.of(since="+20s"), whole["ts_ns"] >= t0 + 20 * 10**9),
        (Filter.of(since="+10s", until="+1m"), (whole["ts_ns"] >= t0 + 10**10) & (whole["ts_ns"] < t0 + 6 * 10**10)),
        (Filter.of(hosts=[host]), any_of(addresses, lambda a: a == host)),
        (Filter.of(nets=[str(net)]), any_of(addresses, lambda a: isinstance(a, str) and ipaddress.ip_address(a) in net)),
        (Filter.of(ports=[port]), any_of(["sport", "dport", "q_sport", "q_dport"], lambda p: p == port)),
        (Filter.of(hosts=[host], ports=[port]), any_of(addresses, lambda a: a == host)
         & any_of(["sport", "dport", "q_sport", "q_dport"], lambda p: p == port)),
    ]
    for keep, expected in cases:
        got = read_many(str(capture), keep=keep)
        want = whole[np.asarray(expected, bool)].reset_index(drop=True)
        assert 0 < len(got) < len(whole), keep
        pd.testing.assert_frame_equal(got, want, check_categorical=False)
    absolute = Filter.of(since=str((t0 + 10**10) / 1e9), until=pd.Timestamp(t0 + 6 * 10**10, tz="UTC").isoformat())
    got = read_many(str(capture), keep=absolute)
    assert len(got) and got["ts_ns"].between(t0 + 10**10, t0 + 6 * 10**10 - 1).all()


def test_bad_times_and_addresses_are_one_line_errors() -> None:
    """Each names its option and value, and comes first: before the captures are looked at (sample_pcaps/ holds
    files that are no captures, each of which would be said)."""
    folder = str(REPO / "sample_pcaps")
    for option, value, said in (("--since", "yesterday", "not a time"), ("--until", "+5x", "not a time"),
                                ("--host", "10.0.0", "not an IP address"), ("--net", "10.0.0.0/40", "not a network"),
                                ("--port", "70000", "not a port")):
        for command in ("scans", "hosts", "rtt"):
            code, out, err = run(command, folder, option, value)
            assert code == 2 and out == b"" and err.count("\n") == 1, err
            assert err.startswith(f"synlens: error: {option} {value}: {said}"), err


def test_the_tshark_engine_on_several_captures_or_filtered_is_a_one_line_error(tmp_path: Path) -> None:
    capture = str(REPO / "sample_pcaps" / "scans_multi.pcap")
    other = str(REPO / "sample_pcaps" / "scans_syn.pcap")
    html = str(tmp_path / "report.html")
    for command, extra in (("rtt", []), ("scans", []), ("hosts", []), ("report", ["-o", html])):
        for argv in ([capture, other, "--engine", "tshark"], [capture, "--engine", "tshark", "--port", "22"]):
            code, out, err = run(command, *argv, *extra)
            assert code == 2 and out == b"" and err.count("\n") == 1, err
            assert err.startswith("synlens: error: --engine tshark reads one capture, unfiltered"), err
    assert not list(tmp_path.iterdir())  # (the report writes nothing)


def test_standard_input_reads_as_a_file(tmp_path: Path) -> None:
    capture = REPO / "sample_pcaps" / "scans_multi.pcap"
    with open(capture, "rb") as f:
        piped = subprocess.run([sys.executable, "-m", "analyzer", "scans", "--format", "json", "-"], stdin=f,
                               capture_output=True, cwd=REPO, check=True)
    direct = subprocess.run([sys.executable, "-m", "analyzer", "scans", "--format", "json", str(capture)],
                            capture_output=True, cwd=REPO, check=True)
    assert without_capture(json.loads(piped.stdout)) == without_capture(json.loads(direct.stdout))
    assert json.loads(piped.stdout)["capture"] == "-"


def test_damage_on_standard_input_is_said_of_standard_input(tmp_path: Path) -> None:
    """A capture cut short, piped in alone or beside a file: its warning names standard input as the other
    messages do, never the temporary file it was spooled to."""
    data = (REPO / "sample_pcaps" / "nat_qscan.pcap").read_bytes()[:3000]
    other = str(REPO / "sample_pcaps" / "scans_syn.pcap")
    for inputs in (["-"], ["-", other]):
        done = subprocess.run([sys.executable, "-m", "analyzer", "scans", *inputs], input=data, capture_output=True,
                              cwd=REPO, check=False)
        err = done.stderr.decode()
        assert done.returncode == 0 and "synlens-stdin" not in err, err
        said = "synlens: warning: stdin: capture cut short inside record 41 (byte 2932); read 40 records"
        assert err.splitlines() == [said], err


def test_bad_files_among_good_ones_are_said_and_the_rest_analysed(tmp_path: Path) -> None:
    """A folder of captures with a text file, an empty file and a capture cut short: one line for each file
    that is no capture, a warning for the damaged one, the others analysed, exit 1."""
    shutil.copy(REPO / "sample_pcaps" / "scans_multi.pcap", tmp_path / "good.pcap")
    (tmp_path / "notes.txt").write_text("not a capture\n")
    (tmp_path / "empty.pcap").write_bytes(b"")
    data = (REPO / "sample_pcaps" / "nat_qscan.pcap").read_bytes()
    (tmp_path / "cut.pcap").write_bytes(data[: len(data) // 2 + 7])
    (tmp_path / "good.pcap.json").write_text("{}")  # (a sidecar: passed over)
    code, out, err = run("scans", "--format", "json", str(tmp_path))
    assert code == 1
    lines = err.strip().splitlines()
    errors = sorted(line.split(": ")[2].rsplit("/", 1)[-1] for line in lines if line.startswith("synlens: error"))
    assert errors == ["empty.pcap", "notes.txt"], lines
    assert any("warning" in line and "cut.pcap" in line for line in lines), lines
    result = json.loads(out)
    assert sorted(Path(c).name for c in result["capture"]) == ["cut.pcap", "good.pcap"]
    assert result["scans"]
    code, out, err = run("scans", str(tmp_path / "notes.txt"))
    assert code == 2 and out == b"" and err.count("\n") == 1


def test_chunked_index_is_the_whole_index() -> None:
    """iter_records (the index a chunk at a time, as the multi-file reader takes it) gives read_records'
    records, frame numbers and warnings, for every sample and edge capture, in chunks of 1, 7 and 1,000."""
    for capture in SAMPLES + sorted((REPO / "tests" / "data" / "edge").glob("*.pcap*")):
        if ".truth" in capture.name:
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                whole = read_records(capture)
            except analyzer.CaptureError as error:
                with pytest.raises(analyzer.CaptureError, match=re.escape(error.problem)):
                    list(iter_records(capture, 7))
                continue
        said = [str(w.message) for w in caught]
        for chunk in (1, 7, 1000):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                pieces = list(iter_records(capture, chunk))
            assert [str(w.message) for w in caught] == said, (capture.name, chunk)
            assert all(len(p) <= chunk for p in pieces)
            for field in ("offset", "caplen", "wirelen", "ts_ns", "linktype", "iface"):
                np.testing.assert_array_equal(np.concatenate([getattr(p, field) for p in pieces]),
                                              getattr(whole, field), err_msg=f"{capture.name} {chunk} {field}")
            np.testing.assert_array_equal(np.concatenate([p.frames() for p in pieces]), whole.frames())


@pytest.mark.parametrize("chunk", [pytest.param(97, marks=pytest.mark.slow), 2000])  # (97: many chunks, slow)
def test_the_stream_gives_the_same_table_a_chunk_at_a_time(tmp_path: Path, chunk: int) -> None:
    """The merged stream read a few records at a time (each file's hold of a chunk or two, records given out as
    soon as no other file can come before them) is the stream read whole: rotated files, interleaved files
    with out-of-order records, a second sensor's copies, filters."""
    from analyzer.reading.many import read_sources
    from analyzer.reading.sources import sources

    capture = REALWORLD / "hw13-01__nmap.pcapng"
    if not capture.exists():
        pytest.skip(f"real captures not found at {REALWORLD}")
    rotated = split(capture, 5, tmp_path / "rotated")
    odd, even = tmp_path / "odd.pcapng", tmp_path / "even.pcapng"
    count = len(read_records(capture))
    for out, first in ((odd, 1), (even, 2)):
        subprocess.run([need("editcap"), "-r", str(capture), str(out), *map(str, range(first, count + 1, 2))],
                       check=True, capture_output=True)
    copy = tmp_path / "sensor-b.pcapng"
    subprocess.run([need("editcap"), "-t", "0.002", str(capture), str(copy)], check=True, capture_output=True)
    cases = [([str(f) for f in rotated], Filter()), ([str(odd), str(even)], Filter()),
             ([str(capture), str(copy)], Filter()), ([str(odd), str(even)], Filter.of(since="+20s", ports=[80]))]
    for names, keep in cases:
        whole = read_sources(sources(names), keep=keep)
        pieces = read_sources(sources(names), keep=keep, chunk=chunk)
        pd.testing.assert_frame_equal(pieces, whole, check_categorical=False)
        assert pieces.attrs["sources"].start.tolist() == whole.attrs["sources"].start.tolist()
    assert len(read_sources(sources([str(capture), str(copy)]), chunk=chunk)) == count  # (every copy met)


def test_tables_joined_and_let_go_are_the_tables_joined() -> None:
    """concat_tables(consume=True), as the reader joins its chunks: the same table as joining them and keeping
    them, with the parts' list emptied (so that the parts and the whole are not held twice); on two captures
    of different addresses."""
    from analyzer.reading.merge import concat_tables

    names = ("hw13-01__nmap.pcapng", "IntroToCybersecurity__traceroute.pcap")
    tables = [analyzer.read(REALWORLD / name) for name in names]
    kept = concat_tables(tables)
    parts = [t.copy() for t in tables]
    joined = concat_tables(parts, consume=True)
    assert parts == []
    pd.testing.assert_frame_equal(joined, kept)
    assert len(kept) == sum(map(len, tables))
    assert set(kept["src"].cat.categories) == set().union(*(t["src"].cat.categories for t in tables))



@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """nmap's scans (ProbingDataset, 43,011 packets) 25 times end to end in one file, each copy 20 s after the
    last (benchmarks/scale.py, as the scale benchmark makes its captures): 100 MB, 1.08 million packets."""
    folder = tmp_path_factory.mktemp("big")
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "scale.py"), "--copies", "25", "--capture",
                    str(REALWORLD / "ProbingDataset__nmap.pcapng"), "--dir", str(folder), "--keep", "--make-only"],
                   check=True, capture_output=True)
    return folder / "all.pcap"


def synlens(*argv: str) -> subprocess.CompletedProcess:
    """The command line in a process of its own (the memory it measures is its own)."""
    return subprocess.run([sys.executable, "-m", "analyzer", *argv], cwd=REPO, capture_output=True, text=True,
                          check=False)


def test_a_table_that_would_not_fit_is_a_one_line_error_before_it_is_read(big: Path) -> None:
    """scans reads the packets table whole: with 120 MB allowed, 100 MB of nmap's scans (a table of about 130 MB)
    stop while they are read, in one line that names the capture, the projected peak and the way out; no
    traceback, exit 2. rtt in chunks holds no whole table and runs under the same limit; no limit (0) runs
    scans."""
    done = synlens("scans", str(big), "--format", "json", "--max-memory", "120M")
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"synlens: error: {big}: not enough memory to analyse it (scans and hosts read the "
                                  "packets table whole: about ")
    assert "--max-memory 120 MB" in done.stderr and "--since/--until" in done.stderr
    peak = re.search(r"about ([\d.]+) (MB|GB) at the peak", done.stderr)
    assert peak and float(peak.group(1)) * (1024 if peak.group(2) == "GB" else 1) > 120
    done = synlens("rtt", str(big), "--format", "json", "--chunk", "100000", "--max-memory", "120M")
    assert done.returncode == 0 and json.loads(done.stdout)["probes_matched"] >= 25 * 200, done.stderr
    done = synlens("scans", str(big), "--format", "json", "--max-memory", "0")
    assert done.returncode == 0 and len(json.loads(done.stdout)["scans"]) >= 25, done.stderr


def test_a_capture_of_probes_is_stopped_once_matched(big: Path) -> None:
    """nmap's scans are a probe a packet: reading projects a peak under 500 MB, and once matched the probes'
    share of scans (about 350 bytes each) puts it past: the error says so, with the counts; exit 2."""
    done = synlens("scans", str(big), "--format", "json", "--max-memory", "500M")
    assert done.returncode == 2 and done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
    assert "for 1,075,275 packets and 1,059,325 probes, once matched, --max-memory 500 MB;" in done.stderr


def test_the_projected_peak_is_what_was_held_and_the_growth_times_the_factor() -> None:
    from analyzer.reading.memory import PEAK_FACTOR, projected_peak

    # 100 MB held at a tenth of the reading, 500 MB at half: 1,000 MB per whole, none before the table began
    mb = 1 << 20
    assert projected_peak((0.1, 100 * mb), (0.5, 500 * mb)) == int(1000 * mb * PEAK_FACTOR)
    # memory that went back (a freed buffer) is no growth
    assert projected_peak((0.1, 300 * mb), (0.5, 200 * mb)) == 300 * mb


def test_analyze_raises_not_enough_memory_a_memory_error(big: Path) -> None:
    from analyzer.errors import NotEnoughMemory

    with pytest.raises(NotEnoughMemory) as raised:
        analyzer.analyze(str(big), ("scans",), analyzer.Options(max_memory=50 << 20))
    assert isinstance(raised.value, MemoryError) and "scans reads the packets table whole" in str(raised.value)


def test_report_names_every_command_that_reads_the_table_whole(big: Path, tmp_path: Path) -> None:
    """report runs scans, hosts and rtt's families on the table it reads whole: the error names the three, and no
    report is written."""
    html = tmp_path / "report.html"
    code, _, err = run("report", str(big), "--output", str(html), "--max-memory", "100M")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "(scans, hosts and rtt read the packets table whole: about " in err
    assert not html.exists()


def test_scans_in_chunks_that_would_not_fit_stop_once_matched(big: Path) -> None:
    """scans and hosts read in chunks hold no whole table, only the rows their readings take and their probes:
    nmap's scans (a probe a packet) in chunks of 100,000 records with 150 MB allowed stop once matched, in one
    line that says what they hold and the counts; exit 2. With no limit they run."""
    done = synlens("scans", str(big), "--format", "json", "--chunk", "100000", "--max-memory", "150M")
    assert done.returncode == 2 and done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
    assert ("(scans and hosts hold their probes and the packets' rows their readings take: about " in done.stderr
            and "and 1,059,325 probes, once matched, --max-memory 150 MB;" in done.stderr)
    done = synlens("scans", str(big), "--format", "json", "--chunk", "100000", "--max-memory", "0")
    assert done.returncode == 0 and len(json.loads(done.stdout)["scans"]) >= 25, done.stderr
