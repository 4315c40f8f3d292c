"""The hand-built edge-case captures against analyzer.read / analyzer.match, tshark, and the CLI.

The captures are regenerated into a temporary directory by tests/support/make_edge_captures.py (so these tests never
depend on committed binaries); each has a truth file whose format is described in that script's docstring.
A committed copy lives in tests/data/edge/ for people to open in Wireshark; a test checks it is current.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tracemalloc
import warnings
from decimal import Decimal
from pathlib import Path

import make_edge_captures as gen
import pandas as pd
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
COMMITTED = HERE / "data" / "edge"


BUILT = gen.build_all()  # file name -> (bytes, truth); milliseconds
FILES = sorted(BUILT)
READABLE = [f for f in FILES if BUILT[f][1]["error"] is None]
UNREADABLE = [f for f in FILES if BUILT[f][1]["error"] is not None]
MATCHABLE = [f for f in READABLE if BUILT[f][1]["probes"] is not None]
WARNING_FILES = [f for f in READABLE if BUILT[f][1]["warning"] is not None]


# ---------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def edge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("edge")
    gen.write_all(d)
    return d


def load_truth(edge_dir: Path, file: str) -> dict:
    return json.loads((edge_dir / f"{gen.stem(file)}.truth.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def api():
    """The analyzer package, or a skip naming what is missing."""
    try:
        import analyzer
    except ImportError as e:  # pragma: no cover - only before the analyzer lands
        pytest.skip(f"analyzer not importable: {e}")
    missing = [n for n in ("read", "match", "CaptureError", "CaptureWarning") if not hasattr(analyzer, n)]
    if missing:
        pytest.skip(f"analyzer API not landed yet (missing {', '.join(missing)})")
    return analyzer


def read_quietly(api, path: Path) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", api.CaptureWarning)
        return api.read(str(path))


# ---------------------------------------------------------------------------------------------- comparison

def same(expected, actual) -> bool:
    """Truth value vs a packets-table / match cell: None means NA; text compares as text."""
    if expected is None:
        return actual is None or bool(pd.isna(actual))
    if actual is None or (not isinstance(actual, str) and pd.isna(actual)):
        return False
    if isinstance(expected, bool):
        return bool(actual) == expected
    if isinstance(expected, str):
        return str(actual) == expected
    return int(actual) == expected


def compare_frames(packets: pd.DataFrame, frames: list[dict]) -> list[str]:
    problems = []
    for i, expected in enumerate(frames):
        if i >= len(packets):
            break
        row = packets.iloc[i]
        for key, value in expected.items():
            if key not in packets.columns:
                problems.append(f"column {key} missing from the packets table")
                continue
            if not same(value, row[key]):
                problems.append(f"frame {expected['frame']} {key}: expected {value!r}, got {row[key]!r}")
    return list(dict.fromkeys(problems))


def compare_probes(matches: pd.DataFrame, probes: list[dict]) -> list[str]:
    problems = []
    if "probe_frame" not in matches.columns:
        return [f"match result has no probe_frame column (columns: {list(matches.columns)})"]
    frames = [int(f) for f in matches["probe_frame"]]
    if len(frames) != len(set(frames)):
        problems.append(f"probe_frame repeated in match result: {sorted(frames)}")
    by_frame = {int(r.probe_frame): r for r in matches.itertuples(index=False)}
    want = {p["probe_frame"] for p in probes}
    for extra in sorted(set(by_frame) - want):
        problems.append(f"unexpected probe at frame {extra}: {by_frame[extra]._asdict()}")
    for p in probes:
        row = by_frame.get(p["probe_frame"])
        if row is None:
            problems.append(f"probe at frame {p['probe_frame']} (dport {p.get('dport')}) missing")
            continue
        row = row._asdict()
        for key, value in p.items():
            if key == "answered":
                got = row.get("reply_frame")
                if value != (got is not None and not pd.isna(got)):
                    problems.append(f"probe {p['probe_frame']} answered: expected {value}, "
                                    f"reply_frame {got!r}")
            elif key not in row:
                problems.append(f"match result has no {key} column")
            elif not same(value, row[key]):
                problems.append(f"probe {p['probe_frame']} {key}: expected {value!r}, got {row[key]!r}")
    return list(dict.fromkeys(problems))


def report(problems: list[str], limit: int = 40) -> str:
    more = f"\n… and {len(problems) - limit} more" if len(problems) > limit else ""
    return "\n".join(problems[:limit]) + more


# ---------------------------------------------------------------------------------------------- read

@pytest.mark.parametrize("file", READABLE)
def test_read_matches_truth(api, edge_dir: Path, file: str) -> None:
    truth = load_truth(edge_dir, file)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        packets = api.read(str(edge_dir / file))
    capture_warnings = [str(w.message) for w in caught if issubclass(w.category, api.CaptureWarning)]
    if truth["warning"] is None:
        assert capture_warnings == [], f"{file}: unexpected CaptureWarning"
    else:
        assert capture_warnings, f"{file}: expected a CaptureWarning matching /{truth['warning']}/"
        assert any(re.search(truth["warning"], m, re.IGNORECASE) for m in capture_warnings), capture_warnings
        assert any(file in m for m in capture_warnings), f"warning does not name the file: {capture_warnings}"
    assert len(packets) == truth["packets"], f"{file}: {len(packets)} rows, truth says {truth['packets']}"
    problems = compare_frames(packets, truth["frames"])
    assert not problems, f"{file}:\n{report(problems)}"
    assert packets.attrs.get("malformed") == truth["malformed"], (
        f"{file}: attrs['malformed'] = {packets.attrs.get('malformed')!r}, truth says {truth['malformed']} "
        f"(frames {truth['malformed_frames']})")


@pytest.mark.parametrize("file", READABLE)
def test_read_returns_the_schema_table(api, edge_dir: Path, file: str) -> None:
    from analyzer.reading.schema import PACKET_DTYPES

    packets = read_quietly(api, edge_dir / file)
    assert list(packets.columns) == list(PACKET_DTYPES)
    wrong = {c: str(packets[c].dtype) for c in PACKET_DTYPES if str(packets[c].dtype) != PACKET_DTYPES[c]}
    assert not wrong, f"dtypes differing from analyzer/reading/schema.py: {wrong}"


@pytest.mark.parametrize("file", READABLE)
def test_decoding_in_small_chunks_changes_nothing(api, edge_dir: Path, file: str, monkeypatch) -> None:
    """The decoder works DECODE_ROWS records at a time; chunks of 1, 2 and 3 records give the same table
    (addresses shared across chunks, malformed counts, every column)."""
    import analyzer.reading.packets

    whole = read_quietly(api, edge_dir / file)
    for rows in (1, 2, 3):
        monkeypatch.setattr(analyzer.reading.packets, "DECODE_ROWS", rows)
        chunked = read_quietly(api, edge_dir / file)
        pd.testing.assert_frame_equal(chunked, whole, check_categorical=False)
        assert (chunked["src"].astype(object).fillna("-") == whole["src"].astype(object).fillna("-")).all()
        assert chunked.attrs["malformed"] == whole.attrs["malformed"]


@pytest.mark.parametrize("file", READABLE)
def test_read_some_columns(api, edge_dir: Path, file: str) -> None:
    """read(columns=…) returns those columns (and frame), equal to the full table's, in schema order."""
    whole = read_quietly(api, edge_dir / file)
    asked = ["dst", "ts_ns", "q_src", "tsval", "seq", "eth_src"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        some = api.read(str(edge_dir / file), columns=asked)
    assert list(some.columns) == [c for c in whole.columns if c in set(asked) | {"frame"}]
    for c in some.columns:
        assert some[c].astype(object).fillna(-1).tolist() == whole[c].astype(object).fillna(-1).tolist(), c
    assert some.attrs["malformed"] == whole.attrs["malformed"]


def layers_only(monkeypatch) -> None:
    """Decode every record with the general layers (the fast paths for Ethernet/IPv4/TCP, numpy and compiled,
    decline all)."""
    import numpy as np

    import analyzer.reading.packets

    monkeypatch.setattr(analyzer.reading.packets, "decode_tcp4", lambda rec, *_: np.zeros(len(rec), bool))


FAST_PATHS = ["numpy", "compiled"]


def use_fast_path(monkeypatch, fast_path: str) -> None:
    """Read with the numpy code (analyzer.accel.COMPILED = NONE) or the compiled loops (which must be built:
    setup.py builds them wherever a C compiler is, and CI installs one)."""
    import analyzer.accel

    if fast_path == "numpy":
        monkeypatch.setattr(analyzer.accel, "COMPILED", analyzer.accel.NONE)
    else:
        assert analyzer.accel.COMPILED.reader is not None, "analyzer.accel._reader is not built (pip install -e . with gcc)"


@pytest.mark.parametrize("fast_path", FAST_PATHS)
@pytest.mark.parametrize("file", READABLE)
def test_fast_path_decodes_like_the_layers(api, edge_dir: Path, file: str, fast_path: str, monkeypatch) -> None:
    use_fast_path(monkeypatch, fast_path)
    fast = read_quietly(api, edge_dir / file)
    layers_only(monkeypatch)
    slow = read_quietly(api, edge_dir / file)
    pd.testing.assert_frame_equal(fast, slow)
    assert fast.attrs == slow.attrs


def fuzzed_frames(seed: int, count: int) -> list[bytes]:
    """Ethernet/IPv4/TCP frames of the fast path's layout, many of them bent out of it: steering bytes
    (ethertype, version/IHL, length, fragment, protocol, data offset, option kinds and lengths) set at
    random, records cut at any length, padding after the IP packet, options of every shape."""
    import numpy as np

    rng = np.random.default_rng(seed)
    option_sets = [(), gen.NMAP_OPTS, gen.LINUX_OPTS, (("nop",), ("nop",), ("ts", 7, 9)), (("ws", 7), ("nop",)),
                   (("eol",), ("nop",), ("nop",), ("nop",)), (("sackok",), ("nop",), ("nop",)),
                   (("mss", 1), ("mss", 2)), (("nop",), ("nop",), ("ts", 1, 2), ("nop",), ("nop",), ("ts", 3, 4)),
                   (("nop",),) * 12 + (("mss", 1400),)]  # more options than tcp_options holds
    frames = []
    for i in range(count):
        opts = option_sets[rng.integers(len(option_sets))]
        payload = bytes(rng.integers(0, 256, rng.integers(0, 3) * 7, dtype=np.uint8))
        l4 = gen.tcp(int(rng.integers(1, 65536)), 80, 0x02, int(rng.integers(0, 2**32)), opts=opts, payload=payload)
        pkt = gen.ipv4("10.0.0.9", "10.0.0.2", l4, ip_id=i & 0xFFFF)
        data = bytearray(gen.ethernet(pkt, 0x020000000009, 0x020000000002, pad=bool(rng.integers(2))).data)
        if rng.random() < 0.3:  # random option bytes, any kinds and lengths
            doff = data[46] >> 4 << 2
            data[54:34 + doff] = rng.integers(0, 12, doff - 20, dtype=np.uint8).tobytes()
        for _ in range(rng.integers(0, 3)):
            at = int(rng.choice([12, 13, 14, 16, 17, 20, 21, 23, 46, 54, 55, 56, 57, 58, 59, 60, 61]))
            if at < len(data):
                data[at] = int(rng.choice([0, 1, 2, 3, 4, 5, 6, 8, 10, 0x45, 0x46, 0x50, 0x60, 0x80, 0xF0, 0xFF,
                                           int(rng.integers(256))]))
        if rng.random() < 0.3:
            cut = int(rng.integers(0, len(data) + 1))
            data = data[:cut]
        elif rng.random() < 0.2:
            data += bytes(rng.integers(1, 9))  # trailer after the IP packet
        frames.append(bytes(data))
    return frames


def write_pcap(path: Path, frames: list[bytes]) -> None:
    import struct

    records = [struct.pack("<IIII", 1_700_000_000, i, len(f), len(f) + 4) + f for i, f in enumerate(frames)]
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1) + b"".join(records))


@pytest.mark.parametrize("fast_path", FAST_PATHS)
@pytest.mark.parametrize("chunk", [None, pytest.param(1, marks=pytest.mark.slow), 7, 1000])  # (1: a decode a row)
def test_fast_path_on_fuzzed_frames(api, tmp_path: Path, monkeypatch, chunk: int | None, fast_path: str) -> None:
    """Frames at and around the fast path's layout, mixed in every chunk: the fast path takes those it can
    and gives exactly the general layers' table (values, presence, malformed count) for them."""
    import analyzer.reading.packets

    path = tmp_path / "fuzzed.pcap"
    write_pcap(path, fuzzed_frames(seed=7, count=3000))
    if chunk is not None:
        monkeypatch.setattr(analyzer.reading.packets, "DECODE_ROWS", chunk)
    taken = []
    use_fast_path(monkeypatch, fast_path)
    decoder = analyzer.reading.packets.decode_tcp4

    def counting(*args):
        decoded = decoder(*args)
        taken.append(int(decoded.sum()))
        return decoded

    monkeypatch.setattr(analyzer.reading.packets, "decode_tcp4", counting)
    fast = read_quietly(api, path)
    assert 500 < sum(taken) < 2500, "the fuzzed frames should exercise both paths"
    layers_only(monkeypatch)
    slow = read_quietly(api, path)
    pd.testing.assert_frame_equal(fast, slow)
    assert fast.attrs == slow.attrs
    assert slow.attrs["malformed"] > 0


@pytest.mark.parametrize("fast_path", FAST_PATHS)
def test_fast_layout_cut_at_every_length(api, tmp_path: Path, monkeypatch, fast_path: str) -> None:
    """One SYN of the fast layout (options included) cut after each of its bytes: the cut records leave the
    fast path, and every field is present exactly when the general layers find it inside the record."""
    use_fast_path(monkeypatch, fast_path)
    pkt = gen.ipv4("10.0.0.9", "10.0.0.2", gen.tcp(40000, 443, 0x02, 12345, opts=gen.LINUX_OPTS))
    frame = gen.ethernet(pkt, 0x020000000009, 0x020000000002).data
    path = tmp_path / "cut.pcap"
    write_pcap(path, [frame[:k] for k in range(len(frame) + 1)] + [frame])
    fast = read_quietly(api, path)
    layers_only(monkeypatch)
    slow = read_quietly(api, path)
    pd.testing.assert_frame_equal(fast, slow)
    assert fast["tsval"].notna().tolist() == [k >= 14 + 20 + 20 + 12 for k in range(len(frame) + 1)] + [True]
    assert fast["tcp_flags"].notna().sum() == len(frame) + 2 - 54


@pytest.mark.parametrize("fast_path", FAST_PATHS)
def test_read_some_columns_with_the_fast_path(api, tmp_path: Path, monkeypatch, fast_path: str) -> None:
    """Columns left out change nothing in those asked for (the fast path skips what no column needs)."""
    use_fast_path(monkeypatch, fast_path)
    path = tmp_path / "fuzzed.pcap"
    write_pcap(path, fuzzed_frames(seed=11, count=500))
    whole = read_quietly(api, path)
    for asked in (["seq"], ["src", "tsval"], ["eth_src", "tcp_options", "payload_len"], ["mss", "q_src"]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            some = api.read(str(path), columns=asked)
        pd.testing.assert_frame_equal(some, whole[some.columns], check_categorical=False)
        assert some.attrs["malformed"] == whole.attrs["malformed"]


@pytest.mark.parametrize("file", MATCHABLE)
def test_match_and_signals_need_only_their_columns(api, edge_dir: Path, file: str) -> None:
    """`synlens rtt` reads match_columns(PROBE_FIELDS) + REPLY_FIELDS and makes only PROBE_FIELDS: the same
    probes (those columns of them) and the same families as from the full table and the full probes table."""
    from analyzer.analysis.match import match_columns
    from analyzer.analysis.signals import REPLY_FIELDS
    from analyzer.analysis.stats import PROBE_FIELDS

    whole = read_quietly(api, edge_dir / file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        some = api.read(str(edge_dir / file), columns=match_columns(PROBE_FIELDS) + REPLY_FIELDS)
    assert len(some.columns) < len(whole.columns)
    probes, all_probes = api.match(some, columns=PROBE_FIELDS), api.match(whole)
    assert list(probes.columns) == [c for c in all_probes.columns if c in PROBE_FIELDS]
    pd.testing.assert_frame_equal(probes, all_probes[list(probes.columns)])
    for a, b in zip(api.signal_families(some, probes), api.signal_families(whole, all_probes)):
        pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("file", MATCHABLE)
def test_scans_and_hosts_need_only_their_columns(api, edge_dir: Path, file: str) -> None:
    """`synlens scans` reads and matches only the scan and host stages' fields: the same scans, port states
    and hosts as from the full tables (a field missing from the lists would raise or change them)."""
    from analyzer.analysis.hosts import PACKET_FIELDS as HOST_PACKETS
    from analyzer.analysis.hosts import PROBE_FIELDS as HOST_PROBES
    from analyzer.analysis.hosts import hosts
    from analyzer.analysis.match import match_columns
    from analyzer.analysis.scans import PACKET_FIELDS as SCAN_PACKETS
    from analyzer.analysis.scans import PROBE_FIELDS as SCAN_PROBES
    from analyzer.analysis.scans import scans

    whole = read_quietly(api, edge_dir / file)
    probe_fields = set(SCAN_PROBES) | set(HOST_PROBES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        some = api.read(str(edge_dir / file), columns=match_columns(probe_fields) + SCAN_PACKETS + HOST_PACKETS)
    probes, all_probes = api.match(some, columns=probe_fields), api.match(whole)
    found, states = scans(some, probes)
    all_found, all_states = scans(whole, all_probes)
    pd.testing.assert_frame_equal(found, all_found)
    pd.testing.assert_frame_equal(states, all_states)
    pd.testing.assert_frame_equal(hosts(some, probes, states), hosts(whole, all_probes, all_states))


def test_read_unknown_column_is_refused(api, edge_dir: Path) -> None:
    with pytest.raises(ValueError, match="not columns of the packets table"):
        api.read(str(edge_dir / "basic.pcap"), columns=["ts_ns", "no_such_field"])


@pytest.mark.parametrize("file", UNREADABLE)
def test_read_rejects_unreadable_file(api, edge_dir: Path, file: str) -> None:
    truth = load_truth(edge_dir, file)
    with pytest.raises(api.CaptureError) as info:
        api.read(str(edge_dir / file))
    message = str(info.value)
    assert file in message, f"error does not name the file: {message!r}"
    assert re.search(truth["error"], message, re.IGNORECASE), f"{message!r} !~ /{truth['error']}/"
    assert "\n" not in message


def test_read_missing_file_raises_capture_error(api, tmp_path: Path) -> None:
    with pytest.raises(api.CaptureError, match="nope.pcap"):
        api.read(str(tmp_path / "nope.pcap"))


def test_bad_caplen_allocates_nothing_like_the_claimed_length(api, edge_dir: Path) -> None:
    tracemalloc.start()
    try:
        packets = read_quietly(api, edge_dir / "bad_caplen.pcap")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(packets) == 6
    assert peak < 64 << 20, f"peak {peak / 2**20:.0f} MiB while reading a 554-byte file"


# ---------------------------------------------------------------------------------------------- match

@pytest.mark.parametrize("file", MATCHABLE)
def test_match_matches_truth(api, edge_dir: Path, file: str) -> None:
    truth = load_truth(edge_dir, file)
    matches = api.match(read_quietly(api, edge_dir / file))
    problems = compare_probes(matches, truth["probes"])
    assert not problems, f"{file}:\n{report(problems)}"
    assert len(matches) == len(truth["probes"])
    got = matches.attrs.get("unsolicited_replies")
    want = truth["unsolicited_replies"]
    assert got == want, f"{file}: unsolicited_replies {got!r}, truth says {want}"


@pytest.mark.parametrize("file", MATCHABLE)
def test_match_invariants(api, edge_dir: Path, file: str) -> None:
    """A reply never precedes its probe; RTT is reply time − first send; answered ≤ probes."""
    m = api.match(read_quietly(api, edge_dir / file))
    answered = m[m["reply_frame"].notna()]
    assert (answered["reply_ts_ns"] >= answered["ts_ns"]).all()
    timed = answered[answered["rtt_ns"].notna()]
    assert (timed["rtt_ns"] == timed["reply_ts_ns"] - timed["ts_ns"]).all()
    assert answered["reply_frame"].is_unique, "one reply paired with two probes"


def test_late_reply_pairs_when_the_window_is_wider(api, edge_dir: Path) -> None:
    packets = read_quietly(api, edge_dir / "lost.pcap")
    m = api.match(packets, window_s=60.0)
    late = m[m["dport"] == 80].iloc[0]
    assert late["reply_kind"] == "syn-ack"
    assert int(late["rtt_ns"]) == 30 * 10**9
    assert m.attrs["unsolicited_replies"] == 0


def test_port_stats_of_basic(api, edge_dir: Path) -> None:
    if not hasattr(api, "port_stats"):
        pytest.skip("analyzer.port_stats not landed yet")
    truth = load_truth(edge_dir, "basic.pcap")
    stats = api.port_stats(api.match(read_quietly(api, edge_dir / "basic.pcap"))).reset_index()
    port_col = "port" if "port" in stats.columns else "dport"
    for port in (22, 80, 443):
        rtts_us = sorted(p["rtt_ns"] / 1000 for p in truth["probes"] if p["dport"] == port)
        row = stats[stats[port_col] == port].iloc[0]
        assert (int(row["sent"]), int(row["received"])) == (3, 3)
        assert float(row["loss"]) == 0.0
        assert float(row["min_us"]) == pytest.approx(rtts_us[0])
        assert float(row["median_us"]) == pytest.approx(rtts_us[1])
        assert float(row["mean_us"]) == pytest.approx(sum(rtts_us) / 3)


# ---------------------------------------------------------------------------------------------- tshark

TSHARK = shutil.which("tshark")
TSHARK_FIELDS = ("frame.number", "frame.time_epoch", "frame.cap_len", "frame.len", "ip.src", "ip.dst",
                 "ipv6.src", "ipv6.dst", "tcp.srcport", "tcp.dstport", "tcp.flags", "tcp.seq_raw",
                 "tcp.ack_raw", "udp.srcport", "udp.dstport", "icmp.type", "icmp.code", "icmpv6.type",
                 "icmpv6.code", "arp.src.proto_ipv4", "arp.dst.proto_ipv4")


def tshark_rows(path: Path) -> list[dict[str, list[str]]]:
    cmd = [TSHARK, "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False).stdout  # 2 if damaged
    rows = []
    for line in out.splitlines():
        cells = line.split("\t")
        rows.append({f: (c.split(",") if c else []) for f, c in zip(TSHARK_FIELDS, cells)})
    return rows


def compare_tshark(rows: list[dict], frames: list[dict]) -> list[str]:
    problems = []

    def check(n: int, what: str, expected, got) -> None:
        if expected != got:
            problems.append(f"frame {n} {what}: truth {expected!r}, tshark {got!r}")

    for t, r in zip(frames, rows):
        n = t["frame"]

        def first(f: str, r: dict = r) -> str | None:  # the outer header's value
            return r[f][0] if r[f] else None

        check(n, "ts_ns", t["ts_ns"], int(Decimal(first("frame.time_epoch")) * 10**9))
        check(n, "caplen", t["caplen"], int(first("frame.cap_len")))
        check(n, "wirelen", t["wirelen"], int(first("frame.len")))
        v6 = t.get("ip_version") == 6
        src, dst = ("ipv6.src", "ipv6.dst") if v6 else ("ip.src", "ip.dst")
        if t.get("arp_op") is not None:
            src, dst = "arp.src.proto_ipv4", "arp.dst.proto_ipv4"
        if t.get("src") is not None:
            check(n, "src", t["src"], first(src))
            check(n, "dst", t["dst"], first(dst))
        if t.get("icmp_type") is not None:
            typ, code = ("icmpv6.type", "icmpv6.code") if v6 else ("icmp.type", "icmp.code")
            check(n, "icmp_type", t["icmp_type"], int(first(typ)))
            check(n, "icmp_code", t["icmp_code"], int(first(code)))
            if t.get("q_src") is not None:
                check(n, "q_src", t["q_src"], r[src][1] if len(r[src]) > 1 else None)
            proto = {6: "tcp", 17: "udp"}.get(t.get("q_proto"))
            if proto and t.get("q_sport") is not None:
                check(n, "q_sport", t["q_sport"], int(first(f"{proto}.srcport")))
                check(n, "q_dport", t["q_dport"], int(first(f"{proto}.dstport")))
        elif t.get("tcp_flags") is not None:
            check(n, "sport", t["sport"], int(first("tcp.srcport")))
            check(n, "dport", t["dport"], int(first("tcp.dstport")))
            check(n, "tcp_flags", t["tcp_flags"], int(first("tcp.flags"), 16))
            check(n, "seq", t["seq"], int(first("tcp.seq_raw")))
            check(n, "ack", t["ack"], int(first("tcp.ack_raw")))
        elif t.get("ip_proto") == 17 and t.get("sport") is not None:
            check(n, "sport", t["sport"], int(first("udp.srcport")))
            check(n, "dport", t["dport"], int(first("udp.dstport")))
    return problems


@pytest.mark.parametrize("file", FILES)
def test_tshark_decodes_like_the_truth(edge_dir: Path, file: str) -> None:
    """Independent check of the truth files themselves: Wireshark must see the same frames and fields."""
    if TSHARK is None:
        pytest.skip("tshark not installed (apt-get install tshark): truth files not cross-checked")
    truth = load_truth(edge_dir, file)
    rows = tshark_rows(edge_dir / file)
    assert len(rows) == (truth["packets"] or 0), f"{file}: tshark sees {len(rows)} frames"
    problems = compare_tshark(rows, truth["frames"] or [])
    assert not problems, f"{file}:\n{report(problems)}"


# ---------------------------------------------------------------------------------------------- CLI

def run_cli(*args: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path)
    return subprocess.run([sys.executable, "-m", "analyzer", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.fixture(scope="session")
def cli(api):
    if not (REPO / "analyzer" / "__main__.py").exists():
        pytest.skip("analyzer/__main__.py not landed yet")
    return run_cli


def test_cli_reader_gone_is_not_an_error(cli, edge_dir: Path) -> None:
    """`synlens rtt … | head -0`: the reader of the output is gone before it is written. As for any Unix
    filter, that is no error: exit 0, nothing on stderr (no traceback, no "Exception ignored" at exit)."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen([sys.executable, "-m", "analyzer", "rtt", str(edge_dir / "basic.pcap")], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the command has read the capture, let alone written
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 0 and err == b"", err


@pytest.mark.parametrize("file", UNREADABLE + ["does_not_exist.pcap"])
def test_cli_bad_file_exits_2_with_one_line(cli, edge_dir: Path, file: str) -> None:
    r = cli("rtt", str(edge_dir / file))
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, f"exit {r.returncode}, stderr {r.stderr!r}"
    assert "Traceback" not in r.stderr
    assert len(lines) == 1, f"stderr should be one line: {r.stderr!r}"
    assert file in lines[0], f"stderr does not name the file: {lines[0]!r}"


@pytest.mark.parametrize("file", WARNING_FILES)
def test_cli_damaged_file_warns_and_succeeds(cli, edge_dir: Path, file: str) -> None:
    truth = load_truth(edge_dir, file)
    r = cli("rtt", str(edge_dir / file))
    assert r.returncode == 0, f"exit {r.returncode}, stderr {r.stderr!r}"
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if re.search(truth["warning"], line, re.IGNORECASE)]
    assert len(lines) >= 1, f"no warning line on stderr: {r.stderr!r}"
    assert r.stdout.strip(), "no results on stdout"


# ---------------------------------------------------------------------------------------------- generator

def test_generator_is_deterministic() -> None:
    again = gen.build_all()
    assert {f: d for f, (d, _) in again.items()} == {f: d for f, (d, _) in BUILT.items()}
    truths = {f: gen.dump_truth(t) for f, (_, t) in again.items()}
    assert truths == {f: gen.dump_truth(t) for f, (_, t) in BUILT.items()}


@pytest.mark.parametrize("file", FILES)
def test_committed_copy_is_current(file: str) -> None:
    """tests/data/edge/ is for people to look at; it must be what the script makes today."""
    path = COMMITTED / file
    if not COMMITTED.is_dir():
        pytest.skip("tests/data/edge/ not present")
    assert path.exists(), f"{path} missing: run python tests/support/make_edge_captures.py"
    data, truth = BUILT[file]
    committed = path.read_bytes()
    if file.endswith(".gz"):  # zlib versions may compress differently; compare what is inside
        data, committed = gzip.decompress(data), gzip.decompress(committed)
    assert committed == data, f"{path} is stale: run python tests/support/make_edge_captures.py"
    truth_path = COMMITTED / f"{gen.stem(file)}.truth.json"
    assert truth_path.read_text(encoding="utf-8") == gen.dump_truth(truth), f"{truth_path} is stale"
