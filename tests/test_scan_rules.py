"""nmap's port-state rules, one row per (technique, reply), as the nmap book documents them."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.analysis.hosts import _first_frame, _mode, _tallied_modes
from analyzer.analysis.scans import state_of, technique_of
from analyzer.analysis.screen import added, tally
from analyzer.analysis.stacks import ip_id_class, option_layout
from analyzer.protocols import ACK, FIN, PSH, RST, SYN, URG, flag_text, initial_ttl

RULES = [
    # technique, reply kind, icmp type, code, rst window, ip version → state
    ("SYN", "syn-ack", -1, -1, 0, 4, "open"),
    ("SYN", "rst", -1, -1, 0, 4, "closed"),
    ("SYN", None, -1, -1, 0, 4, "filtered"),
    ("SYN", "icmp", 3, 13, 0, 4, "filtered"),
    ("CONNECT", "syn-ack", -1, -1, 0, 4, "open"),
    ("FIN", "rst", -1, -1, 0, 4, "closed"),
    ("FIN", None, -1, -1, 0, 4, "open|filtered"),
    ("NULL", "icmp", 3, 1, 0, 4, "filtered"),
    ("XMAS", None, -1, -1, 0, 4, "open|filtered"),
    ("MAIMON", "rst", -1, -1, 0, 4, "closed"),
    ("ACK", "rst", -1, -1, 0, 4, "unfiltered"),
    ("ACK", None, -1, -1, 0, 4, "filtered"),
    ("ACK", "icmp", 3, 10, 0, 4, "filtered"),
    ("WINDOW", "rst", -1, -1, 512, 4, "open"),
    ("WINDOW", "rst", -1, -1, 0, 4, "closed"),
    ("WINDOW", None, -1, -1, 0, 4, "filtered"),
    ("UDP", "udp", -1, -1, 0, 4, "open"),
    ("UDP", "icmp", 3, 3, 0, 4, "closed"),
    ("UDP", "icmp", 3, 13, 0, 4, "filtered"),
    ("UDP", "icmp", 3, 9, 0, 4, "filtered"),
    ("UDP", None, -1, -1, 0, 4, "open|filtered"),
    ("UDP", "icmp", 1, 4, 0, 6, "closed"),  # ICMPv6 port unreachable
    ("UDP", "icmp", 1, 1, 0, 6, "filtered"),  # ICMPv6 administratively prohibited
    ("CUSTOM", "syn-ack", -1, -1, 0, 4, "open"),
    ("FIN", "syn-ack", -1, -1, 0, 4, "unknown"),  # impossible for RFC 793 stacks: never guessed
]


@pytest.mark.parametrize("technique,kind,itype,icode,window,version,expected", RULES)
def test_state_rules(technique, kind, itype, icode, window, version, expected):
    assert state_of(technique, kind, itype, icode, window, version) == expected


@pytest.mark.parametrize("flags,technique", [
    (SYN, "SYN"), (FIN, "FIN"), (0, "NULL"), (FIN | PSH | URG, "XMAS"), (ACK, "ACK"), (FIN | ACK, "MAIMON"),
    (RST, "RST"), (SYN | 0x40 | 0x80, "CUSTOM"), (SYN | FIN, "CUSTOM"),
])
def test_technique_from_flags(flags, technique):
    assert technique_of("tcp", flags) == technique


def test_flag_text_is_nmaps_letters():
    assert flag_text(SYN | 0x40 | 0x80) == "SEC"
    assert flag_text(FIN | PSH | URG) == "FPU"
    assert flag_text(0) == ""


def test_os_evidence_helpers():
    assert [initial_ttl(t) for t in (30, 63, 64, 65, 127, 200)] == [32, 64, 64, 128, 128, 255]
    assert initial_ttl(np.array([0, 32, 33, 255, 300])).tolist() == [32, 32, 64, 255, 255]
    linux = (2 << 56) | (4 << 48) | (8 << 40) | (1 << 32) | (3 << 24)
    assert option_layout(linux) == "MSS,SACK,TS,NOP,WS"
    assert option_layout(2 << 56) == "MSS"
    assert ip_id_class(np.array([0, 0, 0])) == "zero"
    assert ip_id_class(np.array([100, 101, 103, 104])) == "incremental"
    assert ip_id_class(np.array([100, 40000, 7, 23000])) == "random"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from([-1, 0, 1, 64, 255, 1 << 40])), max_size=60))
def test_mode_per_host_is_pandas_mode(rows):
    """hosts' per-host mode (one-valued hosts without counting, others counted) is pandas' Series.mode: the most
    frequent value, the least of those tied; missing values (-1) not counted; -1 for a host with none."""
    groups = np.array([g for g, _ in rows], np.int64)
    values = np.array([v for _, v in rows], np.int64)
    got = _mode(groups, values, 6)
    frame = pd.DataFrame({"g": groups, "v": values})
    frame = frame[frame["v"] >= 0]
    want = [int(frame.loc[frame["g"] == g, "v"].mode().min()) if (frame["g"] == g).any() else -1 for g in range(6)]
    assert got.tolist() == want


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from([-1, 0, 1, 64, 255, 1 << 40])), max_size=60),
       st.integers(1, 61))
def test_modes_tallied_a_slice_at_a_time_are_the_modes_of_the_whole(rows, size):
    """hosts reads the packets a slice at a time and keeps per slice each (host, value)'s rows and first frame: the
    modes and first frames put together from the slices are `_mode`'s and `_first_frame`'s of the whole; and so
    are they from the slices' tallies added up into one first (as the screen adds up what it let go)."""
    groups = np.array([g for g, _ in rows], np.int64)
    values = np.array([v for _, v in rows], np.int64)
    frames = np.arange(1, len(rows) + 1, dtype=np.int64) * 3  # (ascending, as the table's)
    tallies = [tally(groups[a:a + size], values[a:a + size], frames[a:a + size]) for a in range(0, len(rows), size)]
    want = _mode(groups, values, 6)
    wanted_first = _first_frame(groups, values, want, frames, 6)
    for parts in (tallies, [added(tallies)] if tallies else []):
        mode, first = _tallied_modes(parts, 6)
        assert mode.tolist() == want.tolist()
        assert [f for f, m in zip(first.tolist(), want.tolist()) if m >= 0] == [
            f for f, m in zip(wanted_first.tolist(), want.tolist()) if m >= 0]


@pytest.mark.parametrize("name", ["hw13-01__nmap.pcapng", "ProbingDataset__masscan_5k.pcapng",
                                  "ProbingDataset__zmap_tcp_5k.pcapng", "ProbingDataset__hping3.pcapng",
                                  "Alienvault-Demo__spambot.pcap", "SAE_identifier-by-TensorFlow__arp.pcap",
                                  "packets__activeosfingerprinting.pcapng"])
def test_hosts_read_a_slice_at_a_time_are_the_whole(name, monkeypatch):
    """hosts of a real capture read 97 and 1,000 packets at a time is hosts read in one slice: MACs, vendors, OS
    hints and their evidence frames, packet counts, and the tool-made packets (masscan's and zmap's fixed TTL,
    nmap's random one) set apart across slices."""
    from conftest import REALWORLD

    import analyzer
    from analyzer.analysis import hosts as hosts_module

    result = analyzer.analyze(str(REALWORLD / name), ("scans",), keep=("packets", "probes"))
    whole = hosts_module.hosts(result.packets, result.probes, result.scans.states, result.scans.scans)
    assert len(whole) and whole["packets"].sum() > 0
    for rows in (97, 1000):
        monkeypatch.setattr(hosts_module, "SLICE_ROWS", rows)
        sliced = hosts_module.hosts(result.packets, result.probes, result.scans.states, result.scans.scans)
        pd.testing.assert_frame_equal(sliced, whole)


FORENSIC = Path(__file__).resolve().parent / "data" / "forensic"


@pytest.mark.parametrize("path", ["realworld/Alienvault-Demo__spambot.pcap", "realworld/hw13-01__nmap.pcapng",
                                  "realworld/StratosphereLinuxIPS__test7-malicious.pcap",
                                  "forensic/nmap_version.pcap", "forensic/nmap_scripts.pcap",
                                  "forensic/nmap_aggressive.pcap", "forensic/keepalive.pcap"])
def test_scans_read_a_slice_at_a_time_are_the_whole(path, monkeypatch):
    """scans of a capture whose readings take its packets a slice at a time (ACKs, resets and data segments
    screened by the hashes of the probes' 4-tuples; the data segments that say what a connection sent, and the
    frames read again from the file, a part at a time), and compare rows by their hashes, is scans read whole: scans, port states and notes (the spam bot's client
    fan-out, nmap's version and script connections, keep-alives inside a conversation)."""
    from conftest import REALWORLD

    import analyzer
    from analyzer.analysis import exchanges, groups, scans
    from analyzer.reading import payloads

    where, name = path.split("/")
    capture = str((REALWORLD if where == "realworld" else FORENSIC) / name)
    result = analyzer.analyze(capture, ("scans",), keep=("packets", "probes"))
    whole = scans.scans(result.packets, result.probes)
    assert len(whole.scans) or len(whole.notes) or name == "keepalive.pcap"  # (keep-alives: no scan, sliced or not)
    sliced_calls, hashed_calls = [], []
    slices, hashed_rows_in = exchanges._slices, groups._hashed_rows_in

    def counted(mask):
        parts = list(slices(mask))
        sliced_calls.append(len(parts))
        return iter(parts)

    def hashed(left, right):
        hashed_calls.append(len(left[0]))
        return hashed_rows_in(left, right)

    monkeypatch.setattr(exchanges, "_slices", counted)
    monkeypatch.setattr(groups, "_hashed_rows_in", hashed)
    monkeypatch.setattr(payloads, "RECORDS_AT_A_TIME", 7)
    for rows, hashed_past in ((61, 0), (1000, 1 << 20)):  # (and every comparison of rows by their hashes)
        monkeypatch.setattr(exchanges, "SCREEN_ROWS", rows)
        monkeypatch.setattr(groups, "HASHED_ROWS", hashed_past)
        sliced = scans.scans(result.packets, result.probes)
        for got, want in ((sliced.scans, whole.scans), (sliced.states, whole.states), (sliced.notes, whole.notes)):
            pd.testing.assert_frame_equal(got, want)
    assert max(sliced_calls) > 1 and max(hashed_calls, default=0) > 0  # (the readings did go a slice at a time, by hashes)


def test_syn_ack_lost_from_the_capture_is_not_filtered(tmp_path):
    """Drop every SYN/ACK from a real nmap SYN scan capture: the scanner's resets still show the open ports."""
    import struct
    from pathlib import Path

    import analyzer

    src = Path(__file__).resolve().parent.parent / "sample_pcaps" / "scans_syn.pcap"
    raw = src.read_bytes()
    packets = analyzer.read(src)
    synack = set(packets[(packets["tcp_flags"].fillna(0).astype(int) & 0x12) == 0x12]["frame"].astype(int))
    assert synack
    out, pos, frame = [raw[:24]], 24, 0
    endian = "<" if raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    while pos + 16 <= len(raw):
        caplen = struct.unpack_from(endian + "I", raw, pos + 8)[0]
        frame += 1
        if frame not in synack:
            out.append(raw[pos:pos + 16 + caplen])
        pos += 16 + caplen
    damaged = tmp_path / "lost.pcap"
    damaged.write_bytes(b"".join(out))
    full = analyzer.scans(packets, analyzer.match(packets))[1].set_index("port")["state"]
    lost_packets = analyzer.read(damaged)
    lost = analyzer.scans(lost_packets, analyzer.match(lost_packets))[1].set_index("port")
    open_ports = full[full == "open"].index
    assert len(open_ports) >= 2
    assert (lost.loc[open_ports, "state"] == "open").all()
    assert lost.loc[open_ports, "reason"].str.contains("not captured").all()
    assert (lost["state"].drop(open_ports) == full.drop(open_ports)).all()


@pytest.mark.parametrize("path, nmap", [("realworld/Alienvault-Demo__spambot.pcap", False),
                                        ("forensic/nmap_version.pcap", True), ("forensic/nmap_scripts.pcap", True)])
def test_service_connections_are_made_only_for_nmaps_pairs(path, nmap):
    """Connections to ports a scanner's probe found open: a client's (the spam bot reconnecting to the mail
    servers that answered it) are found, but only the pairs where nmap's version probes or scripting engine
    spoke are made into connections (the others make no stage, and a busy client makes millions)."""
    from conftest import REALWORLD

    import analyzer
    from analyzer.analysis import exchanges, scans

    where, name = path.split("/")
    result = analyzer.analyze(str((REALWORLD if where == "realworld" else FORENSIC) / name), ("scans",),
                              keep=("packets", "probes"))
    keys = exchanges.PacketKeys(result.packets)
    pk = scans._probe_keys(result.packets, keys, result.probes)
    keep = pk["scan_like"] & (pk["src"] >= 0) & ~pk["icmp"]
    service = scans._service_probes(keys, pk, keep, exchanges.take(pk, keep))
    connections = scans._connections(keys, pk, service)
    assert len(service) > 0
    pairs = {c.pair for c in connections}
    assert bool(pairs) == nmap
    for pair in pairs:
        assert {c.connection.kind for c in connections if c.pair == pair} & {"version", "script"}
    assert {c.connection.probe for c in connections} <= set(service.tolist())
