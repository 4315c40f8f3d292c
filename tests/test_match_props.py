"""Matching invariants and pcap round-trips, as properties over generated probe/reply scenarios."""

import struct

import dpkt
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import analyzer

PROBER, TARGET = b"\x0a\x00\x00\x09", b"\x0a\x00\x00\x02"


def tcp_frame(src, dst, sport, dport, seq, ack, flags):
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, win=1024)
    ip = dpkt.ip.IP(src=src, dst=dst, p=6, ttl=64, data=tcp)
    ip.len = len(ip)
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=0x0800, data=ip))


probe = st.fixed_dictionaries({
    "sport": st.integers(1025, 65535),
    "dport": st.sampled_from([22, 80, 443, 8080]),
    "seq": st.integers(0, 2**32 - 1),
    "gap_us": st.integers(1, 5000),
    "rtt_us": st.one_of(st.none(), st.integers(1, 4000)),  # None: lost
    "closed": st.booleans(),
    "dup": st.booleans(),
})


def scenario_pcap(tmp_path, probes, nano):
    events = []
    t = 1_700_000_000_000_000_000
    for p in probes:
        t += p["gap_us"] * 1000
        events.append((t, tcp_frame(PROBER, TARGET, p["sport"], p["dport"], p["seq"], 0, dpkt.tcp.TH_SYN)))
        if p["rtt_us"] is not None:
            flags = dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK if p["closed"] else dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK
            reply = tcp_frame(TARGET, PROBER, p["dport"], p["sport"], 12345, (p["seq"] + 1) % 2**32, flags)
            events.append((t + p["rtt_us"] * 1000, reply))
            if p["dup"]:
                events.append((t + p["rtt_us"] * 1000 + 7000, reply))
    events.sort(key=lambda e: e[0])
    path = tmp_path / ("s.pcap")
    # pcap framing written here, exactly: dpkt's writer takes float seconds, which cannot hold nanoseconds
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, frame in events:
            frac = ts % 1_000_000_000 if nano else ts % 1_000_000_000 // 1000
            f.write(struct.pack("<IIII", ts // 1_000_000_000, frac, len(frame), len(frame)) + frame)
    return path, events


@settings(max_examples=60, deadline=None)
@given(st.lists(probe, min_size=1, max_size=25, unique_by=lambda p: (p["sport"], p["seq"])), st.booleans())
def test_matching_invariants(tmp_path_factory, probes, nano):
    path, events = scenario_pcap(tmp_path_factory.mktemp("m"), probes, nano)
    packets = analyzer.read(path)
    assert len(packets) == len(events)  # write → read round-trip keeps every record …
    ts = packets["ts_ns"].to_numpy()
    expected_ts = np.array([e[0] for e in events])
    tolerance = 0 if nano else 1000  # … with the file's timestamp resolution
    assert np.abs(ts - (expected_ts if nano else expected_ts // 1000 * 1000)).max() <= tolerance
    m = analyzer.match(packets)
    n_replies = sum(p["rtt_us"] is not None for p in probes) + sum(p["rtt_us"] is not None and p["dup"] for p in probes)
    answered = m[m["reply_frame"].notna()]
    assert len(m) == len(probes)
    assert len(answered) <= min(len(probes), n_replies)
    assert (answered["reply_ts_ns"] >= answered["ts_ns"]).all()  # a reply never precedes its probe
    by_key = {(p["sport"], p["seq"]): p for p in probes}
    for r in m.itertuples():
        p = by_key[(int(r.sport), int(r.seq))]
        if p["rtt_us"] is None:
            assert r.reply_frame is None or str(r.reply_frame) == "<NA>"
        else:
            assert int(r.rtt_ns) == p["rtt_us"] * 1000
            assert int(r.duplicates) == int(p["dup"])
            assert str(r.reply_kind) == ("rst" if p["closed"] else "syn-ack")
    assert m.attrs["unsolicited_replies"] == 0


@settings(max_examples=25, deadline=None)
@given(st.lists(probe, min_size=1, max_size=25), st.booleans())
def test_hash_collisions_fall_back_to_the_exact_order(tmp_path_factory, probes, nano):
    """match sorts (key, time) by a hash of the key where the key is too wide for one word; when two keys
    share a hash it must sort again exactly. A hash that maps every key to one value forces that path.
    Two probes with extreme ports and sequence numbers (16 + 16 + 32 bits of key, beside the time rank) make
    every key too wide for one word, so the hash is always used (counted)."""
    import importlib

    import pandas as pd

    import analyzer.accel

    m = importlib.import_module("analyzer.accel.order")
    wide = [dict(probes[0], sport=1025, seq=0, dport=1, rtt_us=100),  # answered: replies' keys are what is sorted
            dict(probes[0], sport=65535, seq=2**32 - 2, dport=65535, rtt_us=100)]  # next seq 2^32 - 1: no wrap
    path, _ = scenario_pcap(tmp_path_factory.mktemp("h"), wide + probes, nano)
    packets = analyzer.read(path)
    expected = analyzer.match(packets)
    real, fast, calls = m._hash, analyzer.accel.COMPILED, []
    try:  # (the numpy order: the compiled one hashes in C; tests/test_compiled.py forces its collisions)
        m._hash = lambda words: calls.append(len(words)) or np.zeros(len(words[0]), np.uint64)
        analyzer.accel.COMPILED = analyzer.accel.NONE
        collided = analyzer.match(packets)
    finally:
        m._hash, analyzer.accel.COMPILED = real, fast
    assert calls, "the hashed order was not used: the test would prove nothing"
    pd.testing.assert_frame_equal(collided, expected)
