"""Each signal of `analyzer.signal_families` alone, on simulated captures: no signal is trusted on a coincidence.

Every capture here is written with dpkt from a scenario: a scanner (10.9.0.2) sends SYN probes to six ports of
a target (10.9.0.1) the way qscan does (each trip visits every port in turn, one probe every 20 ms, a fresh
source port each time), and the target answers each after 200-220 µs: SYN/ACK from an open port, RST/ACK from
the closed one. The scenario decides every field a signal reads (reply TTL, SYN/ACK window and option layout,
TSval, IP ID) and nothing else differs, so RTT cannot tell any port from another: a split can only come from
the signal under test, and the tests check that it did (`signals`, `deciding_signal`, evidence text) and that
the split disappears when that one signal is switched off.

"Local" ports are answered by the gateway (TTL 64), "forwarded" ones by the machine behind it where the
scenario says so. Assertions are on the API's tables (`analyzer.read` → `analyzer.match` →
`analyzer.signal_families`); one test reads the same through `python -m analyzer rtt --format json`.
"""

from __future__ import annotations

import json
import random
import re
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dpkt
import pandas as pd
import pytest

import analyzer
from analyzer.analysis.signals import ALL_SIGNALS

REPO = Path(__file__).resolve().parents[1]
SCANNER, TARGET = "10.9.0.2", "10.9.0.1"
T0_S = 1_700_000_000.5  # capture start, seconds since the epoch
GAP_S = 0.020  # between probes, as qscan.delay=20ms
RTT_US = 200.0  # every reply: RTT_US plus 0-20 µs of jitter, whatever port answers
WRAP = 2**32

LOCAL = (22, 80)
FORWARDED = (443, 3306, 8080)
CLOSED = 23
OPEN_LOCAL = (22, 80, 8000)  # six open ports, for signals a RST cannot carry (stack, clock)
LINUX = "MSS,SACK,TS,NOP,WS"  # Linux's SYN/ACK to a SYN offering MSS, SACK, TS, WS
LINUX_NO_TS = "MSS,NOP,NOP,SACK,NOP,WS"
WINDOWS_NO_TS = "MSS,NOP,WS,NOP,NOP,SACK"
OPTION_BYTES = {"MSS": b"\x02\x04\x05\xb4", "SACK": b"\x04\x02", "NOP": b"\x01", "WS": b"\x03\x03\x07"}


@dataclass(frozen=True)
class Probe:
    """One SYN of the scan, as a scenario sees it."""

    port: int
    trip: int
    n: int  # probe number over the whole scan, in send order
    t_s: float  # when the reply leaves the target, seconds since the capture start
    rng: random.Random  # the capture's own generator: scenarios stay reproducible


@dataclass(frozen=True)
class Reply:
    """What the target sends back; a scenario returns one per probe (None: the probe is lost)."""

    ttl: int = 64
    window: int | None = None  # None: 64240 for a SYN/ACK, 0 for a RST
    layout: str | None = None  # SYN/ACK options; None: LINUX with a tsval, LINUX_NO_TS without
    tsval: int | None = None  # TCP timestamp (taken modulo 2**32); None: no timestamp option
    ip_id: int = 0


Scenario = Callable[[Probe], "Reply | None"]


def _options(layout: str, tsval: int | None) -> bytes:
    out = b""
    for name in layout.split(","):
        out += struct.pack(">BBII", 8, 10, tsval % WRAP, 0x1234) if name == "TS" else OPTION_BYTES[name]
    return out + b"\x00" * (-len(out) % 4)


def _frame(ts: float, src: str, dst: str, ttl: int, ip_id: int, seg: dpkt.tcp.TCP) -> tuple[float, bytes]:
    seg.off = (20 + len(seg.opts)) // 4
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), ttl=ttl, id=ip_id % 65536,
                    p=dpkt.ip.IP_PROTO_TCP, data=seg)
    ip.df = 1
    eth = dpkt.ethernet.Ethernet(src=b"\x02\x00\x00\x09\x00\x02", dst=b"\x02\x00\x00\x09\x00\x01",
                                 type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
    return ts, bytes(eth)


def write_capture(path: Path, scenario: Scenario, *, ports: tuple[int, ...] = (*LOCAL, CLOSED, *FORWARDED),
                  closed: tuple[int, ...] = (CLOSED,), trips: int = 10, seed: int = 1) -> Path:
    """Write the scan of `ports` as a nanosecond pcap: `trips` SYNs each, answered as `scenario` says."""
    rng = random.Random(seed)
    frames = []
    n = 0
    for trip in range(trips):
        for port in ports:
            sent = T0_S + n * GAP_S
            rtt_s = (RTT_US + rng.uniform(0.0, 20.0)) / 1e6
            reply = scenario(Probe(port, trip, n, sent + rtt_s - T0_S, rng))
            sport, seq = rng.randint(1025, 65535), rng.getrandbits(32)
            ts_option = reply is not None and reply.tsval is not None
            probe_opts = b"\x02\x04\x05\xb4" + (struct.pack(">BBBBII", 1, 1, 8, 10, n + 1, 0) if ts_option else b"")
            syn = dpkt.tcp.TCP(sport=sport, dport=port, seq=seq, flags=dpkt.tcp.TH_SYN, win=1024, opts=probe_opts)
            frames.append(_frame(sent, SCANNER, TARGET, 64, rng.getrandbits(16), syn))
            if reply is not None:
                if port in closed:
                    seg = dpkt.tcp.TCP(sport=port, dport=sport, seq=0, ack=(seq + 1) % WRAP,
                                       flags=dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK, win=reply.window or 0)
                else:
                    layout = reply.layout or (LINUX if ts_option else LINUX_NO_TS)
                    seg = dpkt.tcp.TCP(sport=port, dport=sport, seq=rng.getrandbits(32), ack=(seq + 1) % WRAP,
                                       flags=dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK,
                                       win=64240 if reply.window is None else reply.window,
                                       opts=_options(layout, reply.tsval))
                frames.append(_frame(sent + rtt_s, TARGET, SCANNER, reply.ttl, reply.ip_id, seg))
            n += 1
    frames.sort(key=lambda f: f[0])
    with open(path, "wb") as fh:
        writer = dpkt.pcap.Writer(fh, nano=True)
        for ts, data in frames:
            writer.writepkt(data, ts)
    return path


def analyse(pcap: Path, signals: tuple[str, ...] = ALL_SIGNALS) -> tuple[pd.DataFrame, pd.DataFrame]:
    packets = analyzer.read(str(pcap))
    return analyzer.signal_families(packets, analyzer.match(packets), signals=signals)


def partition(fams: pd.DataFrame) -> set[frozenset[int]]:
    return {frozenset(int(p) for p in row.ports) for row in fams.itertuples() if row.kind == "answered"}


def family_with(fams: pd.DataFrame, port: int) -> dict:
    [row] = [r for r in fams.to_dict("records") if port in r["ports"]]
    return row


def deciding(ports: pd.DataFrame) -> dict[int, str | None]:
    """deciding_signal per port, None where no signal decided (whatever NA the table uses)."""
    return {int(r.port): (r.deciding_signal if isinstance(r.deciding_signal, str) else None)
            for r in ports.itertuples()}


def describe(ports: pd.DataFrame, fams: pd.DataFrame) -> str:
    cols = ["port", "family", "rtt_family", "deciding_signal", "ttl", "ttl_agree", "window", "options", "ip_id_class",
            "ts_offset", "ts_rate", "median_us"]
    return "\n" + ports[cols].to_string() + "\n" + fams[["family", "ports", "kind", "signals", "evidence"]].to_string()


def without(signal: str) -> tuple[str, ...]:
    return tuple(s for s in ALL_SIGNALS if s != signal)


def assert_split_by(pcap: Path, signal: str, near: set[int], far: set[int]) -> dict:
    """`near` and `far` are two families, told apart by `signal` alone; returns the later family's row."""
    ports, fams = analyse(pcap)
    assert partition(fams) == {frozenset(near), frozenset(far)}, describe(ports, fams)
    later = max((family_with(fams, min(near)), family_with(fams, min(far))), key=lambda f: f["family"])
    assert later["signals"] == [signal], describe(ports, fams)
    assert len(later["evidence"]) == 1, later
    deciders = {p: s for p, s in deciding(ports).items() if s is not None}
    assert set(deciders.values()) == {signal} and set(deciders) in (near, far), describe(ports, fams)
    # Alone: with that one signal switched off, nothing tells the two machines apart.
    ports_off, fams_off = analyse(pcap, signals=without(signal))
    assert partition(fams_off) == {frozenset(near | far)}, describe(ports_off, fams_off)
    return later


def assert_one_family(pcap: Path, ports_expected: set[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    ports, fams = analyse(pcap)
    assert partition(fams) == {frozenset(ports_expected)}, describe(ports, fams)
    assert set(deciding(ports).values()) == {None}, describe(ports, fams)
    [fam] = fams[fams["kind"] == "answered"].to_dict("records")
    assert fam["signals"] == [] and fam["evidence"] == [], fam
    return ports, fams


ALL_PORTS = {*LOCAL, CLOSED, *FORWARDED}
SIX_OPEN = (*OPEN_LOCAL, *FORWARDED)


def forwarded(port: int) -> bool:
    return port in FORWARDED


# ---------------------------------------------------------------------------------------------- the baseline


def test_the_simulation_gives_rtt_nothing_to_go_on(tmp_path: Path) -> None:
    pcap = write_capture(tmp_path / "same.pcap", lambda p: Reply())
    for signals in (("rtt",), ALL_SIGNALS):
        ports, fams = analyse(pcap, signals=signals)
        assert partition(fams) == {frozenset(ALL_PORTS)}, describe(ports, fams)
        assert (ports["received"] == 10).all()


# ---------------------------------------------------------------------------------------------- (a), (b) TTL


def test_ttl_alone_splits_forwarded_ports(tmp_path: Path) -> None:
    pcap = write_capture(tmp_path / "ttl.pcap", lambda p: Reply(ttl=63 if forwarded(p.port) else 64))
    later = assert_split_by(pcap, "ttl", {*LOCAL, CLOSED}, set(FORWARDED))
    [evidence] = later["evidence"]
    assert re.fullmatch(r"TTL (63 vs 64|64 vs 63) on 10/10 and 10/10 replies", evidence), evidence
    ports, _ = analyse(pcap)
    ttl = dict(zip(ports["port"].astype(int), ports["ttl"].astype(int)))
    assert ttl == {p: 63 if forwarded(p) else 64 for p in ALL_PORTS}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_ttl_glitch_in_30_replies_does_not_split(tmp_path: Path, seed: int) -> None:
    # Reply number 100 of 180 (trip 16, port 3306) took another path: TTL 63 once on a port that says 64.
    pcap = write_capture(tmp_path / "glitch.pcap", lambda p: Reply(ttl=63 if p.n == 100 else 64), trips=30, seed=seed)
    ports, _ = assert_one_family(pcap, ALL_PORTS)
    row = ports.set_index("port").loc[3306]
    assert (int(row["ttl"]), int(row["ttl_agree"]), int(row["received"])) == (64, 29, 30)


def test_ttl_glitches_on_every_port_do_not_split(tmp_path: Path) -> None:
    # One reply in 30 of every port at TTL 63, the rest at 64: each port still agrees on 64.
    pcap = write_capture(tmp_path / "glitches.pcap", lambda p: Reply(ttl=63 if p.trip == p.port % 30 else 64),
                         trips=30)
    assert_one_family(pcap, ALL_PORTS)


def test_ttl_of_a_port_whose_replies_disagree_is_not_trusted(tmp_path: Path) -> None:
    # 443's replies alternate between two paths (63 and 64, 15 each): no TTL of its own, no split.
    pcap = write_capture(tmp_path / "flap.pcap", lambda p: Reply(ttl=63 if p.port == 443 and p.trip % 2 else 64),
                         trips=30)
    assert_one_family(pcap, ALL_PORTS)


def test_ttl_of_two_replies_is_not_trusted(tmp_path: Path) -> None:
    # 443 answered only 2 of 10 probes, both at TTL 63: too few to call it another machine.
    def scenario(p: Probe) -> Reply | None:
        if p.port == 443:
            return Reply(ttl=63) if p.trip in (2, 7) else None
        return Reply()

    ports, _ = assert_one_family(write_capture(tmp_path / "few.pcap", scenario), ALL_PORTS)
    assert int(ports.set_index("port").loc[443, "ttl_agree"]) == 2


# ---------------------------------------------------------------------------------------------- (c) stack


@pytest.mark.parametrize("far", [Reply(window=29200), Reply(layout=WINDOWS_NO_TS)], ids=["window", "option-layout"])
def test_stack_alone_splits_forwarded_ports(tmp_path: Path, far: Reply) -> None:
    pcap = write_capture(tmp_path / "stack.pcap", lambda p: far if forwarded(p.port) else Reply(), ports=SIX_OPEN,
                         closed=())
    later = assert_split_by(pcap, "stack", set(OPEN_LOCAL), set(FORWARDED))
    near_stack, far_stack = f"64240 [{LINUX_NO_TS}]", f"{far.window or 64240} [{far.layout or LINUX_NO_TS}]"
    assert later["evidence"][0] in (f"SYN/ACK window {far_stack} vs {near_stack}",
                                    f"SYN/ACK window {near_stack} vs {far_stack}"), later["evidence"]


def test_one_window_glitch_in_30_synacks_does_not_split(tmp_path: Path) -> None:
    pcap = write_capture(tmp_path / "win.pcap", lambda p: Reply(window=29200 if p.n == 100 else None),
                         ports=SIX_OPEN, closed=(), trips=30)
    assert_one_family(pcap, set(SIX_OPEN))


# ---------------------------------------------------------------------------------------------- (d) clock


def clock(offset: int, hz: float = 1000.0, jitter: int = 1) -> Callable[[Probe], int]:
    """A TCP timestamp clock: `offset` + `hz` ticks a second, read with ±`jitter` ticks (whole ticks)."""
    return lambda p: offset + int(hz * p.t_s) + p.rng.randint(-jitter, jitter)


GATEWAY_CLOCK = 0x1234_5678
CLOCK_GAP = 0x3000_0000  # how far the inner machine's clock is from the gateway's


def test_clock_alone_splits_two_machines(tmp_path: Path) -> None:
    gw, inner = clock(GATEWAY_CLOCK), clock(GATEWAY_CLOCK + CLOCK_GAP)
    pcap = write_capture(tmp_path / "clocks.pcap", lambda p: Reply(tsval=(inner if forwarded(p.port) else gw)(p)),
                         ports=SIX_OPEN, closed=())
    later = assert_split_by(pcap, "clock", set(OPEN_LOCAL), set(FORWARDED))
    [evidence] = later["evidence"]
    m = re.fullmatch(r"TCP timestamp clocks (\d+) ticks apart", evidence)
    assert m, evidence
    # The gap named is the true one (two 32-bit clocks are never more than 2**31 ticks apart).
    assert abs(int(m.group(1)) - CLOCK_GAP) < 1000, evidence


@pytest.mark.parametrize(
    "tick",
    [
        pytest.param(clock(GATEWAY_CLOCK, jitter=0), id="exact"),
        pytest.param(clock(GATEWAY_CLOCK, jitter=2), id="jitter"),
        pytest.param(clock(WRAP - 600), id="wraps-mid-scan"),  # 2**32 is crossed 0.6 s into a 1.2 s scan
        pytest.param(clock(GATEWAY_CLOCK, hz=100.0), id="100Hz"),
        pytest.param(clock(GATEWAY_CLOCK, hz=250.0), id="250Hz"),
    ],
)
def test_one_clock_on_every_port_does_not_split(tmp_path: Path, tick: Callable[[Probe], int]) -> None:
    pcap = write_capture(tmp_path / "one_clock.pcap", lambda p: Reply(tsval=tick(p)), ports=SIX_OPEN, closed=())
    ports, fams = assert_one_family(pcap, set(SIX_OPEN))
    assert ports["ts_offset"].notna().all(), describe(ports, fams)  # read, and found to agree
    assert not any(u.startswith("clock") for u in fams["unavailable"].iloc[0]), fams["unavailable"].iloc[0]


def test_one_tsval_glitch_in_30_does_not_split(tmp_path: Path) -> None:
    gw = clock(GATEWAY_CLOCK)
    pcap = write_capture(tmp_path / "ts_glitch.pcap",
                         lambda p: Reply(tsval=gw(p) + (CLOCK_GAP if p.n == 100 else 0)),
                         ports=SIX_OPEN, closed=(), trips=30)
    assert_one_family(pcap, set(SIX_OPEN))


def test_per_connection_ts_offsets_do_not_split(tmp_path: Path) -> None:
    # Linux since "tcp: secure_seq: add back ports to TS offset" (165573e41f2f, 2026, also in stable kernels, the
    # lab's 6.18.44 among them) adds an offset hashed from the 4-tuple: a fresh source port per probe means a
    # fresh random offset per reply.
    # Such TSvals carry no host identity, and the report must say the clock could not be used.
    pcap = write_capture(tmp_path / "per_flow.pcap", lambda p: Reply(tsval=p.rng.getrandbits(32) + int(1000 * p.t_s)),
                         ports=SIX_OPEN, closed=())
    _, fams = assert_one_family(pcap, set(SIX_OPEN))
    assert any(u.startswith("clock") for u in fams["unavailable"].iloc[0]), fams["unavailable"].iloc[0]


# ---------------------------------------------------------------------------------------------- (e) IP ID


def test_two_ip_id_counters_split(tmp_path: Path) -> None:
    # Each machine counts its own packets (+1 to +3 a reply: other traffic), 30000 apart.
    counters = {"gw": 1000, "inner": 31000}

    def scenario(p: Probe) -> Reply:
        host = "inner" if forwarded(p.port) else "gw"
        counters[host] += p.rng.randint(1, 3)
        return Reply(ip_id=counters[host])

    later = assert_split_by(write_capture(tmp_path / "ipid2.pcap", scenario), "ip_id", {*LOCAL, CLOSED},
                            set(FORWARDED))
    [evidence] = later["evidence"]
    m = re.fullmatch(r"IP ID counters (\d+) apart vs (\d+) apart when merged", evidence)
    assert m and int(m.group(1)) < 100 and int(m.group(2)) > 10_000, evidence


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_shared_ip_id_counter_does_not_split(tmp_path: Path, seed: int) -> None:
    counter = [60000]  # wraps past 65535 during the scan

    def scenario(p: Probe) -> Reply:
        counter[0] += p.rng.randint(1, 40)
        return Reply(ip_id=counter[0])

    ports, _ = assert_one_family(write_capture(tmp_path / "ipid1.pcap", scenario, seed=seed), ALL_PORTS)
    assert set(ports["ip_id_class"]) == {"incremental"}


def test_random_ip_ids_do_not_split(tmp_path: Path) -> None:
    pcap = write_capture(tmp_path / "ipid_rand.pcap", lambda p: Reply(ip_id=p.rng.getrandbits(16)))
    _, fams = assert_one_family(pcap, ALL_PORTS)
    assert any(u.startswith("ip_id") for u in fams["unavailable"].iloc[0])


# ---------------------------------------------------------------------------------------------- (f) nothing


def test_nothing_differs_one_family_and_what_was_missing(tmp_path: Path) -> None:
    _, fams = assert_one_family(write_capture(tmp_path / "alike.pcap", lambda p: Reply()), ALL_PORTS)
    missing = fams["unavailable"].iloc[0]
    assert {u.split(":")[0] for u in missing} == {"clock", "ip_id"}, missing
    [clock_note] = [u for u in missing if u.startswith("clock")]
    assert "no TCP timestamps" in clock_note and "cannot be told apart" in clock_note, clock_note


def test_nothing_to_compare_stacks_with_is_said(tmp_path: Path) -> None:
    # One open port and five closed ones: a stack needs two SYN/ACK-answering ports to be compared.
    ports = (22, 23, 25, 111, 135, 139)
    _, fams = assert_one_family(write_capture(tmp_path / "closed.pcap", lambda p: Reply(), ports=ports,
                                              closed=ports[1:]), set(ports))
    assert {u.split(":")[0] for u in fams["unavailable"].iloc[0]} == {"clock", "ip_id", "stack"}


# ---------------------------------------------------------------------------------------------- the CLI


def test_cli_json_carries_families_evidence_and_per_port_signals(tmp_path: Path) -> None:
    pcap = write_capture(tmp_path / "ttl.pcap", lambda p: Reply(ttl=63 if forwarded(p.port) else 64))
    out = subprocess.run([sys.executable, "-m", "analyzer", "rtt", str(pcap), "--format", "json"], cwd=REPO,
                         capture_output=True, text=True, check=True, timeout=120)
    [target] = json.loads(out.stdout)["targets"]
    assert target["address"] == TARGET
    fams = {frozenset(f["ports"]): f for f in target["families"] if f["kind"] == "answered"}
    assert set(fams) == {frozenset({*LOCAL, CLOSED}), frozenset(FORWARDED)}
    far = fams[frozenset(FORWARDED)]
    assert far["signals"] == ["ttl"] and far["evidence"][0].startswith("TTL 6"), far
    assert {u.split(":")[0] for u in target["signals_unavailable"]} == {"clock", "ip_id"}
    by_port = {p["port"]: p for p in target["ports"]}
    for port in ALL_PORTS:
        row = by_port[port]
        assert row["ttl"] == (63 if forwarded(port) else 64)
        assert row["deciding_signal"] == ("ttl" if forwarded(port) else None)
        assert row["family"] == far["family"] if forwarded(port) else row["family"] != far["family"]
        assert row["rtt_family"] == 0  # RTT alone: all one
        assert row["options"] == (None if port == CLOSED else LINUX_NO_TS)
        assert row["ts_offset"] is None


# ---------------------------------------------------------------------------------------------- RST behaviour

CLOSED_FOUR = (23, 24, 25, 26)


def test_rst_behaviour_alone_splits_closed_ports(tmp_path: Path) -> None:
    """Closed ports of two stacks: same TTL and RTT, but one answers RST/ACK window 0, the other window 512."""
    pcap = write_capture(tmp_path / "rst.pcap", lambda p: Reply(window=512 if p.port in (25, 26) else 0),
                         ports=CLOSED_FOUR, closed=CLOSED_FOUR)
    later = assert_split_by(pcap, "rst", {23, 24}, {25, 26})
    assert "window 0" in later["evidence"][0] and "window 512" in later["evidence"][0]


def test_one_odd_rst_in_30_does_not_split(tmp_path: Path) -> None:
    pcap = write_capture(tmp_path / "rst_glitch.pcap",
                         lambda p: Reply(window=512 if (p.port == 25 and p.trip == 4) else 0),
                         ports=CLOSED_FOUR, closed=CLOSED_FOUR, trips=30)
    assert_one_family(pcap, set(CLOSED_FOUR))


# ------------------------------------------------------------------------------------- the declared signals

def _random_replies(rng: random.Random, ports: list[int]) -> pd.DataFrame:
    """Replies to SYNs on `ports` whose every signal takes few values, drawn for each port independently of the
    others (so that trust, and equal values across ports, both happen often, in every combination): TTL, flags
    (SYN/ACK or RST/ACK), window, option layout, IP ID (zero, a machine's counter, or random), TSval (none or a
    machine's clock); a glitch now and then."""
    rows = []
    for port in ports:
        m = rng.randrange(3)  # the machine: its IP ID counter and its clock
        ttl, window = rng.choice((63, 64)), rng.choice((1000, 2000))
        options = rng.choice((0x0204_0402_0801_0303, 0x0204_0103_0304_0201))
        ids, n = rng.choice(("zero", "counter", "random")), rng.choice((1, 2, 3, 5, 8))
        closed = rng.random() < 0.3
        for k in range(n):
            glitch = rng.random() < 0.15
            t = 1_000_000_000 * (port % 7) + 20_000_000 * k
            rows.append({
                "_port": port, "ts_ns": t, "ttl": ttl - (glitch and rng.random() < 0.5),
                "tcp_flags": rng.choice((0x14, 0x04)) if closed else 0x12, "window": window + glitch,
                "tcp_options": 0 if closed else options,
                "ip_id": {"zero": 0, "counter": 1000 * m + k, "random": rng.randrange(65536)}[ids],
                "tsval": None if m == 2 else (10_000 * (m + 1) + t // 1_000_000),
            })
    frame = pd.DataFrame(rows)
    for name in ("ttl", "tcp_flags", "window", "ip_id", "tsval"):
        frame[name] = frame[name].astype("Int64")
    frame["tcp_options"] = frame["tcp_options"].astype("UInt64")
    return frame


@pytest.mark.parametrize("seed", range(150))
def test_equal_signature_codes_give_equal_verdicts(seed: int) -> None:
    """Families compare one port of each signature code (`_signature_codes`, derived from the declared
    `SIGNALS`): ports with equal codes must meet every other port with the same verdict, signal by signal."""
    from analyzer.analysis import signals as sg

    rng = random.Random(seed)
    ports = rng.sample(range(1, 200), rng.randint(3, 14))
    table = sg._port_table(_random_replies(rng, ports), ports, 0)
    rtt_family = [rng.choice((-1, 0, 0, 1)) for _ in ports]
    codes = sg._signature_codes(table, rtt_family).tolist()
    sig = sg._lazy_signals(table)
    same_code = [(i, j) for i in range(len(ports)) for j in range(len(ports)) if i < j and codes[i] == codes[j]]
    for i, j in same_code:
        assert rtt_family[i] == rtt_family[j]
        for k in range(len(ports)):
            verdict_i = [name for name, _ in sg._apart(sig(ports[i]), sig(ports[k]), None, sg.ALL_SIGNALS)]
            verdict_j = [name for name, _ in sg._apart(sig(ports[j]), sig(ports[k]), None, sg.ALL_SIGNALS)]
            assert verdict_i == verdict_j, (ports[i], ports[j], ports[k])
    if seed == 0:  # (the generator makes shared codes and splits, or the check above would prove nothing)
        assert same_code and len(set(codes)) > 1


def test_every_signal_is_declared_once() -> None:
    """The signals families compare are the declared ones, plus RTT: no signal is compared without a
    declaration (its trust, identity and evidence), and none is declared without being offered."""
    from analyzer.analysis import signals as sg

    assert {s.name for s in sg.SIGNALS} | {"rtt"} == set(sg.ALL_SIGNALS)
    assert len({s.name for s in sg.SIGNALS}) == len(sg.SIGNALS)
