"""Chunked matching (analysis/chunked.py): the probes table of a capture matched a chunk of records at a time is
the table `match` makes of the whole capture, on every sample and third-party capture, and on hand-built
captures of what the chunks' edges could break: a connection open for longer than the context (its state
carried), a probe group that never pauses, a clock that steps back.

Most sample captures last less than the five reply windows a context holds, so with the default window every
probe would be given out at the end, all at once, and chunks would be tested on nothing. Each capture is
therefore also matched with a 50 ms window, which cuts it many times; and a capture long enough to be cut must
have probes given out before its end."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import dpkt
import numpy as np
import pandas as pd
import pytest
from conftest import REALWORLD
from test_sources import FAST, pcap_bytes, run

import analyzer
from analyzer.analysis import chunked as chunked_module
from analyzer.analysis import screen as screen_module
from analyzer.analysis.chunked import ChunkedMatch, Disordered, joined, match_chunks, match_in_slices
from analyzer.analysis.match import DEFAULT_WINDOW_S, match, match_columns
from analyzer.pipeline import Options, analyze
from analyzer.reading.filters import EVERYTHING
from analyzer.reading.sources import captures
from analyzer.reading.stream import Stream, packet_chunks
from analyzer.render.export import export

REPO = Path(__file__).resolve().parents[1]
FORENSIC = REPO / "tests" / "data" / "forensic"
CAPTURES = {p.name: p for p in sorted((REPO / "sample_pcaps").glob("*.pcap"))
            + (sorted(REALWORLD.glob("*.pcap*")) if REALWORLD.is_dir() else [])}


def chunked(path: Path, records: int, window_s: float = DEFAULT_WINDOW_S) -> tuple[pd.DataFrame, int]:
    """The probes table matched `records` at a time, and how many parts were given out before the end."""
    found = captures([str(path)])
    m = ChunkedMatch(window_s=window_s, rows=records)
    parts, early = [], 0
    for chunk in packet_chunks(found.files, list(m.packet_columns()), EVERYTHING, 0, records, Stream.of(found.files)):
        parts += [part.probes for part in m.feed(chunk)]
        early = len(parts)
    return joined(parts + [part.probes for part in m.finish()], m), early


def assert_same(path: Path, records: int, window_s: float = DEFAULT_WINDOW_S) -> None:
    packets = analyzer.read(path, columns=match_columns())
    whole = match(packets, window_s=window_s)
    got, early = chunked(path, records, window_s)
    pd.testing.assert_frame_equal(got, whole)
    assert got.attrs == whole.attrs
    ts = packets["ts_ns"].to_numpy()
    if len(whole) and len(packets) > 2 * records and ts.max() - ts.min() > 10 * window_s * 1e9:
        assert early > 0, "a capture long enough to be cut was matched in one piece"


def test_the_captures_are_there() -> None:
    assert REALWORLD.is_dir(), f"{REALWORLD} is absent: the third-party captures sit beside the repository"
    assert len(CAPTURES) >= 50


@pytest.mark.parametrize("window_s", [DEFAULT_WINDOW_S, 0.05])
@pytest.mark.parametrize("records", [1000, 50])
@pytest.mark.parametrize("name", FAST)
def test_chunks_match_as_the_whole(name: str, records: int, window_s: float) -> None:
    assert_same(CAPTURES[name], records, window_s)


@pytest.mark.slow
@pytest.mark.parametrize("window_s", [DEFAULT_WINDOW_S, 0.05])
@pytest.mark.parametrize("records", [1000, 50])
@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_every_capture_in_chunks_matches_as_the_whole(name: str, records: int, window_s: float) -> None:
    assert_same(CAPTURES[name], records, window_s)


A, B, C = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), bytes([10, 0, 0, 3])


def tcp(src: bytes, dst: bytes, sport: int, dport: int, flags: int, seq: int = 1000, ack: int = 0) -> bytes:
    segment = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, win=1024)
    ip = dpkt.ip.IP(src=src, dst=dst, p=6, ttl=64, data=segment)
    ip.len += len(segment)
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, data=ip))


def udp(src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
    datagram = dpkt.udp.UDP(sport=sport, dport=dport, data=b"x")
    datagram.ulen = len(datagram)
    ip = dpkt.ip.IP(src=src, dst=dst, p=17, ttl=64, data=datagram)
    ip.len += len(datagram)
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, data=ip))


SYN, ACK, RST, FIN = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_RST, dpkt.tcp.TH_FIN


def background(start: float, end: float) -> list[tuple[float, bytes]]:
    """A SYN scan of C every second (a probe and its RST/ACK), so that every chunk holds packets."""
    out = []
    t, port = start, 1
    while t < end:
        out += [(t, tcp(A, C, 40000, port, SYN, seq=port)), (t + 0.001, tcp(C, A, port, 40000, RST | ACK, 0, port + 1))]
        t, port = t + 1.0, port + 1
    return out


def test_a_connection_open_longer_than_the_context_stays_open(tmp_path: Path) -> None:
    """A connection set up at t=0 carries bare ACKs (no payload: each would be a probe outside a connection) at
    t=100 s and later, long after its SYN/ACK left the context; one is reset at t=150 s, after which a bare ACK
    is a probe again (an ACK scan's). Matched 20 records at a time they are what the whole capture says."""
    frames = background(0.0, 220.0) + [
        (0.5, tcp(A, B, 5000, 80, SYN, 1)), (0.501, tcp(B, A, 80, 5000, SYN | ACK, 9, 2)),
        (0.502, tcp(A, B, 5000, 80, ACK, 2, 10)),
        (100.2, tcp(A, B, 5000, 80, ACK, 2, 10)), (100.3, tcp(B, A, 80, 5000, ACK, 10, 2)),
        (150.2, tcp(B, A, 80, 5000, RST, 10)),
        (180.2, tcp(A, B, 5000, 80, ACK, 2, 10)), (180.201, tcp(B, A, 80, 5000, RST, 10)),
    ]
    path = tmp_path / "long.pcap"
    path.write_bytes(pcap_bytes(sorted(frames, key=lambda f: f[0])))
    whole = match(analyzer.read(path, columns=match_columns()))
    bare_acks = whole[(whole["flags"] == ACK) & (whole["dport"] == 80)]
    assert bare_acks["ts_ns"].tolist() == [180_200_000_000]  # (the one after the RST; answered by a RST)
    assert bare_acks["reply_kind"].tolist() == ["rst"]
    assert_same(path, 20)


def test_a_probe_group_that_never_pauses_is_one_probe(tmp_path: Path) -> None:
    """A one-way UDP stream, a datagram every 2 s for 300 s, is one probe group of 150 transmissions (never
    silent for the window); in chunks of 20 records it is still one, with its count."""
    frames = background(0.0, 320.0) + [(1.0 + 2 * i, udp(A, B, 514, 514)) for i in range(150)]
    path = tmp_path / "stream.pcap"
    path.write_bytes(pcap_bytes(sorted(frames, key=lambda f: f[0])))
    whole = match(analyzer.read(path, columns=match_columns()))
    assert whole.loc[whole["protocol"] == "udp", "transmissions"].tolist() == [150]
    assert_same(path, 20)


def stepped(tmp_path: Path) -> Path:
    """A capture whose clock is set back 100 s half way, cut short inside its last record."""
    frames = background(1000.0, 1100.0) + [(t - 100.0, f) for t, f in background(1100.0, 1200.0)]
    path = tmp_path / "stepped.pcap"
    data = pcap_bytes(frames)
    path.write_bytes(data + data[24:60])
    return path


def test_a_clock_that_steps_back_is_matched_whole(tmp_path: Path) -> None:
    """The capture's clock is set back 100 s half way: chunks cannot hold what a packet that far back answers,
    so chunked matching refuses (Disordered) and the pipeline reads the capture again, whole, with the same
    result, and its warnings said once."""
    path = stepped(tmp_path)
    with pytest.raises(Disordered):
        chunked(path, 20)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        a = analyze(str(path), ("families",), Options(chunk=20))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        b = analyze(str(path), ("families",), Options(chunk=0))
    assert len(said) == 1 and "cut short" in str(said[0].message)
    pd.testing.assert_frame_equal(a.families, b.families)
    assert (a.packet_count, a.probes_matched, a.unsolicited_replies) == (b.packet_count, b.probes_matched,
                                                                         b.unsolicited_replies)


def test_scans_of_a_clock_that_steps_back_are_read_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same capture through scans and hosts in chunks of 20 records: the screened reading is refused as well,
    the capture is read again whole (no screen finishes), with the same scans and hosts, its warnings said once."""
    path = str(stepped(tmp_path))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        whole = analyze(path, ("scans", "hosts"), Options(chunk=0))
    finished = []
    monkeypatch.setattr(screen_module.Screen, "finish", lambda self: finished.append(self))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        again = analyze(path, ("scans", "hosts"), Options(chunk=20))
    assert not finished and len(said) == 1 and "cut short" in str(said[0].message)
    assert len(whole.scans.scans) and len(whole.hosts) == 2  # (the SYN scan of C, read as one)
    assert_same_scans(whole, again)


def segment(src: bytes, dst: bytes, sport: int, dport: int, flags: int, seq: int, ack: int, data: bytes = b"") -> bytes:
    """A TCP segment (with payload `data`) in an Ethernet frame."""
    tcp_segment = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, win=1024, data=data)
    ip = dpkt.ip.IP(src=src, dst=dst, p=6, ttl=64, data=tcp_segment)
    ip.len += len(tcp_segment)
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, data=ip))


def test_the_screen_remembers_a_syn_for_the_ack_a_batch_later(tmp_path: Path) -> None:
    """The screen on two batches: a SYN and its SYN/ACK, then a stale FIN/ACK on the same 4-tuple (its first
    segment that talks in that batch), the ACK that completes the handshake (kept only because its seq and ack
    follow the SYN and the SYN/ACK of the batch before), that ACK again, and 20 segments of data. Kept: the
    SYNs, the FIN/ACK, the handshake's ACK and the first data segment; let go: the rest, counted for the
    sender."""
    syn_seq, synack_seq = 100, 500
    frames = [segment(A, B, 50000, 80, SYN, syn_seq, 0), segment(B, A, 80, 50000, SYN | ACK, synack_seq, syn_seq + 1),
              segment(A, B, 50000, 80, FIN | ACK, 9, 9),
              segment(A, B, 50000, 80, ACK, syn_seq + 1, synack_seq + 1),
              segment(A, B, 50000, 80, ACK, syn_seq + 1, synack_seq + 1)]
    frames += [segment(A, B, 50000, 80, ACK, syn_seq + 1 + 10 * i, synack_seq + 1, b"y" * 10) for i in range(20)]
    path = tmp_path / "handshake.pcap"
    path.write_bytes(pcap_bytes([(1000 + i * 0.001, f) for i, f in enumerate(frames)]))
    packets = analyzer.read(path, columns=screen_module.PACKET_FIELDS)
    screen = screen_module.Screen(list(screen_module.PACKET_FIELDS))
    screen.add(packets.iloc[:2].reset_index(drop=True))
    screen.add(packets.iloc[2:].reset_index(drop=True))
    kept, tallies = screen.finish()
    assert kept["frame"].tolist() == [1, 2, 3, 4, 6]
    assert tallies.packets.tolist() == [20, 0]  # (10.0.0.1 sent them, 10.0.0.2 none let go)
    assert tallies.names.tolist() == ["10.0.0.1", "10.0.0.2"]


@pytest.mark.parametrize("bits", [(2, 6), (16, 24)])
def test_the_screens_hash_set_holds_exactly_what_was_added(bits: tuple[int, int],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The set of SYNs' hashes the screen remembers across batches: each hash added is found, and no other,
    batch after batch, while its filter grows (from 4 flags to 64) and once every flag is set; hashes that share
    their top bits (one flag) are told apart."""
    monkeypatch.setattr(screen_module, "_FILTER_BITS", bits)
    rng = np.random.default_rng(3)
    hashes, held = screen_module._Hashes(), set()
    for size in (1, 3, 40, 7, 500, 2, 3000):
        batch = rng.integers(0, 2**64, size, dtype=np.uint64)
        batch[: size // 2] &= np.uint64(2**40 - 1)  # (top bits all 0: one flag)
        hashes.add(batch)
        held.update(batch.tolist())
        asked = np.concatenate([batch, rng.integers(0, 2**64, 2000, dtype=np.uint64),
                                rng.integers(0, 2**40, 2000, dtype=np.uint64),
                                np.fromiter(held, np.uint64, len(held))])
        assert hashes.has(asked).tolist() == [int(a) in held for a in asked]
    assert len(hashes.filter) == (64 if bits == (2, 6) else 1 << 16)  # (grown to the most; not grown)
    assert hashes.filter.all() == (bits == (2, 6))


def test_a_screen_told_of_an_odd_protocols_pair_keeps_its_packets(tmp_path: Path) -> None:
    """A cluster's shard holds a pair of ports, so an IP protocol scan's GRE packet (no ports) and the segments
    between the same two hosts are screened by different tasks: the segments' screen, told of the pair
    (`Screen.knowing`, either way round), keeps them all; not told, it lets the stale ones go. The tallies of
    two screens added up by address (`screen.merged`) count what each let go."""
    frames = [segment(B, A, 80, 50000, ACK, 9 + i, 9) for i in range(6)]
    path = tmp_path / "talk.pcap"
    path.write_bytes(pcap_bytes([(1000 + i * 0.001, f) for i, f in enumerate(frames)]))
    packets = analyzer.read(path, columns=screen_module.PACKET_FIELDS)
    told, untold = (screen_module.Screen(list(screen_module.PACKET_FIELDS)) for _ in range(2))
    told.knowing(pd.DataFrame({"src": ["10.0.0.1"], "dst": ["10.0.0.2"]}))
    kept = []
    for screen in (told, untold):
        screen.add(packets)
        kept.append(screen.finish())
    assert len(kept[0][0]) == 6 and kept[0][1].packets.sum() == 0
    assert kept[1][0]["frame"].tolist() == [1] and kept[1][1].packets.tolist() == [0, 5]  # (10.0.0.2 sent them)
    other = screen_module.Screen(list(screen_module.PACKET_FIELDS))
    other.add(analyzer.read(path, columns=screen_module.PACKET_FIELDS).assign(frame=lambda t: t["frame"] + 6))
    both = screen_module.merged([kept[1][1], other.finish()[1]])
    assert both.names.tolist() == ["10.0.0.1", "10.0.0.2"] and both.packets.tolist() == [0, 10]
    assert both.ttl[2].tolist() == [10] and both.mac[2].tolist() == [10]


def test_rtt_in_chunks_prints_what_rtt_whole_prints() -> None:
    """The command line, both signal sets, byte for byte, on a capture of nmap's scans (43,011 packets) that
    chunks of 1,000 records with the default window cut before its end (the matcher's own count says so)."""
    capture = CAPTURES["ProbingDataset__nmap.pcapng"]
    assert chunked(capture, 1000)[1] >= 5
    for signals in ("all", "rtt"):
        code, whole, _ = run("rtt", str(capture), "--format", "json", "--signals", signals, "--chunk", "0")
        code_chunks, chunks, err = run("rtt", str(capture), "--format", "json", "--signals", signals,
                                       "--chunk", "1000")
        assert code == code_chunks == 0, err
        assert json.loads(whole)["probes_matched"] >= 100  # (a result worth comparing, not an empty one)
        assert chunks == whole


def test_export_of_a_clock_that_steps_back_writes_the_whole_captures_probes(tmp_path: Path) -> None:
    """export matches in chunks as it writes; where the clock steps back it matches the capture again, whole:
    the probes written are `match`'s, none twice, and the packets all written once."""
    pytest.importorskip("pyarrow", reason="export writes Parquet with pyarrow (the test extra installs it)")
    path = stepped(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        done = export(captures([str(path)]), tmp_path / "out", chunk=20)
        whole = match(analyzer.read(path))
    probes = pd.read_parquet(tmp_path / "out" / "probes")
    assert done.probes == len(probes) == len(whole) >= 100  # (200 SYNs, to 100 ports twice)
    assert sorted(probes["probe_frame"]) == sorted(whole["probe_frame"])
    assert done.packets == len(pd.read_parquet(tmp_path / "out" / "packets")) == 400


@pytest.mark.parametrize("name", FAST)
def test_a_big_table_matched_in_slices_is_matched_as_the_whole(name: str) -> None:
    """A packets table read whole and matched a slice at a time (as the pipeline matches tables above
    SLICED_ABOVE rows) gives match's table, attributes included; here in eight slices or more."""
    packets = analyzer.read(CAPTURES[name])
    rows = max(25, len(packets) // 8)
    assert len(packets) > 2 * rows
    for window_s in (DEFAULT_WINDOW_S, 0.05):
        whole = match(packets, window_s=window_s)
        sliced = match_in_slices(packets, window_s=window_s, rows=rows, above=2 * rows)
        pd.testing.assert_frame_equal(sliced, whole)
        assert sliced.attrs == whole.attrs


def test_slices_of_a_clock_that_steps_back_are_matched_whole(tmp_path: Path) -> None:
    """The capture whose clock is set back 100 s: slices refuse it (`Disordered`), and the table is matched whole."""
    packets = analyzer.read(stepped(tmp_path))
    with pytest.raises(Disordered):
        match_chunks((packets.iloc[i:i + 20] for i in range(0, len(packets), 20)), rows=20)
    pd.testing.assert_frame_equal(match_in_slices(packets, rows=20, above=40), match(packets))


def test_scans_and_hosts_of_a_table_matched_in_slices_are_the_wholes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline's scans and hosts when it matches the table in slices of 1,000 rows: the same tables as
    matched whole, on nmap's scans of a host (several stages, OS detection, version probes)."""
    capture = str(CAPTURES["hw13-01__nmap.pcapng"])
    whole = analyze(capture, ("scans", "hosts"))
    monkeypatch.setattr(chunked_module, "SLICED_ABOVE", 2000)
    monkeypatch.setattr(chunked_module, "SLICE_ROWS", 1000)
    sliced_runs = []
    monkeypatch.setattr(chunked_module, "match_chunks",
                        lambda chunks, **kw: sliced_runs.append(kw) or match_chunks(chunks, **kw))
    sliced = analyze(capture, ("scans", "hosts"))
    assert [kw["rows"] for kw in sliced_runs] == [1000]  # (matched in slices, not whole)
    assert whole.packet_count > 2000 and len(whole.scans.scans) >= 2
    for a, b in ((whole.scans.scans, sliced.scans.scans), (whole.scans.states, sliced.scans.states),
                 (whole.scans.notes, sliced.scans.notes), (whole.hosts, sliced.hosts)):
        pd.testing.assert_frame_equal(a, b)
    assert (whole.probes_matched, whole.unsolicited_replies) == (sliced.probes_matched, sliced.unsolicited_replies)


def scans_in_chunks(capture: str, records: int, window_s: float, monkeypatch: pytest.MonkeyPatch
                    ) -> tuple[analyzer.Analysis, analyzer.Analysis, list[int]]:
    """scans and hosts of a capture read whole, then read and matched `records` at a time with its packets
    screened as the matcher lets them go (analysis/screen.py); and the rows each screen kept."""
    whole = analyze(capture, ("scans", "hosts"), Options(window_s=window_s, chunk=0))
    kept = []
    finish = screen_module.Screen.finish

    def counted(self: screen_module.Screen) -> tuple:
        table, tallies = finish(self)
        kept.append(0 if table is None else len(table))
        return table, tallies

    monkeypatch.setattr(screen_module.Screen, "finish", counted)
    in_chunks = analyze(capture, ("scans", "hosts"), Options(window_s=window_s, chunk=records))
    return whole, in_chunks, kept


def assert_same_scans(whole: analyzer.Analysis, in_chunks: analyzer.Analysis) -> None:
    for a, b in ((whole.scans.scans, in_chunks.scans.scans), (whole.scans.states, in_chunks.scans.states),
                 (whole.scans.notes, in_chunks.scans.notes), (whole.hosts, in_chunks.hosts)):
        pd.testing.assert_frame_equal(a, b)
    assert (whole.packet_count, whole.probes_matched, whole.unsolicited_replies, whole.notes) == (
        in_chunks.packet_count, in_chunks.probes_matched, in_chunks.unsolicited_replies, in_chunks.notes)


@pytest.mark.parametrize("window_s", [DEFAULT_WINDOW_S, 0.05])
@pytest.mark.parametrize("records", [1000, 50])
@pytest.mark.parametrize("name", [*FAST, "Alienvault-Demo__spambot.pcap"])
def test_scans_and_hosts_in_chunks_are_the_wholes(name: str, records: int, window_s: float,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """scans and hosts of a capture read a chunk at a time, keeping only the rows the screen lets through and
    counting the others for hosts, are those of the capture read whole: scans, port states, notes, hosts.
    On the spam bot's traffic (connections that carry mail) the screen lets most packets go."""
    whole, in_chunks, kept = scans_in_chunks(str(CAPTURES[name]), records, window_s, monkeypatch)
    assert len(kept) == 1 and kept[0] <= whole.packet_count  # (the screened path ran)
    assert_same_scans(whole, in_chunks)
    if name.startswith("Alienvault"):
        assert len(whole.scans.notes) and len(whole.hosts) > 100
        assert kept[0] < whole.packet_count / 2


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CAPTURES) + sorted(f"forensic/{p.name}" for p in FORENSIC.glob("*.pcap")))
def test_scans_and_hosts_of_every_capture_in_chunks_are_the_wholes(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same, on every sample, third-party and forensic capture, in chunks of 50 records with a 50 ms
    window (which cuts each many times)."""
    capture = FORENSIC / name.split("/")[1] if name.startswith("forensic/") else CAPTURES[name]
    whole, in_chunks, kept = scans_in_chunks(str(capture), 50, 0.05, monkeypatch)
    assert len(kept) == 1
    assert_same_scans(whole, in_chunks)


def test_scans_in_chunks_prints_what_scans_whole_prints() -> None:
    """The command line, byte for byte: scans and hosts of nmap's scans (43,011 packets) and of the spam bot's
    traffic, whole and in chunks of 1,000 records."""
    for name in ("ProbingDataset__nmap.pcapng", "Alienvault-Demo__spambot.pcap"):
        for command in ("scans", "hosts"):
            code, whole, _ = run(command, str(CAPTURES[name]), "--format", "json", "--chunk", "0")
            code_chunks, chunks, err = run(command, str(CAPTURES[name]), "--format", "json", "--chunk", "1000")
            assert code == code_chunks == 0, err
            assert len(json.loads(whole)["hosts"]) >= 2
            assert chunks == whole
