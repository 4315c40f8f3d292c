"""The capture agent without privileges: parsing, refusals, packet bytes, pcap, plan, CLI errors."""

from __future__ import annotations

import io
import ipaddress
import os
import random
import shutil
import struct
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.capture import LINKTYPE_ETHERNET, PCAP_MAGIC_NS, Frame, write_header, write_record
from agent.errors import AgentError
from agent.packet import MSS, TCPFlag, ipv4, parse_ip, tcp_syn
from agent.ports import DEFAULT_PORTS, parse_ports, parse_timespec, resolve_target
from agent.probe import Config, _belongs, gaps, plan

REPO = Path(__file__).resolve().parents[1]
V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address

# --------------------------------------------------------------------------- port lists and times


@pytest.mark.parametrize(
    ("text", "ports"),
    [
        ("22", (22,)),
        ("22,80,1000-1003", (22, 80, 1000, 1001, 1002, 1003)),
        ("80,22,80", (22, 80)),
        (" 1 , 65535 ", (1, 65535)),
        ("5-5", (5,)),
    ],
)
def test_parse_ports(text: str, ports: tuple[int, ...]) -> None:
    assert parse_ports(text) == ports


@pytest.mark.parametrize("text", ["", "0", "65536", "5-3", "a", "22,", "1-2-3", "-5", "22;80", "1e3"])
def test_parse_ports_refuses(text: str) -> None:
    with pytest.raises(AgentError, match="bad port list"):
        parse_ports(text)


@given(st.lists(st.tuples(st.integers(1, 65535), st.integers(0, 50)), min_size=1, max_size=8))
def test_parse_ports_ranges(ranges: list[tuple[int, int]]) -> None:
    spans = [(lo, min(lo + width, 65535)) for lo, width in ranges]
    text = ",".join(f"{lo}-{hi}" if hi > lo else str(lo) for lo, hi in spans)
    assert set(parse_ports(text)) == {p for lo, hi in spans for p in range(lo, hi + 1)}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("200ms", 0.2),
        ("20ms", 0.02),
        ("1.5s", 1.5),
        ("2", 2.0),
        ("0.25", 0.25),
        ("2m", 120.0),
        ("1h", 3600.0),
    ],
)
def test_parse_timespec(text: str, seconds: float) -> None:
    assert parse_timespec(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ms", "5x", "-1s", "1 s s", "5us", "1e3"])
def test_parse_timespec_refuses(text: str) -> None:
    with pytest.raises(AgentError, match="bad time"):
        parse_timespec(text)


def test_default_ports_are_nmap_top_100() -> None:
    assert len(DEFAULT_PORTS) == 100 and list(DEFAULT_PORTS) == sorted(set(DEFAULT_PORTS))
    assert {21, 22, 23, 25, 80, 443, 3306, 8080} <= set(DEFAULT_PORTS)


# --------------------------------------------------------------------------- address refusal


@pytest.mark.parametrize(
    "addr",
    ["255.255.255.255", "224.0.0.1", "239.1.2.3", "0.0.0.0", "::", "ff02::1", "ff05::2", "::ffff:224.0.0.1"],
)
def test_refused_addresses(addr: str) -> None:
    with pytest.raises(AgentError, match="refusing"):
        resolve_target(addr)


@pytest.mark.parametrize("addr", ["10.0.0.255", "192.0.2.1", "127.0.0.1", "::1", "fd00::1"])
def test_allowed_addresses(addr: str) -> None:
    assert resolve_target(addr) == ipaddress.ip_address(addr)


def test_unresolvable_name() -> None:
    with pytest.raises(AgentError, match="cannot resolve"):
        resolve_target("no-such-host.invalid")


# --------------------------------------------------------------------------- packet bytes


def _ones_complement(data: bytes) -> int:
    """Independent checksum: the sum of 16-bit words modulo 0xFFFF (RFC 1071 §2(1)), complemented."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += data[i] << 8 | data[i + 1]
    folded = total % 0xFFFF or (0xFFFF if total else 0)
    return 0xFFFF - folded


def _pseudo(src: bytes, dst: bytes, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + bytes([0, 6]) + length.to_bytes(2, "big")
    return src + dst + length.to_bytes(4, "big") + bytes([0, 0, 0, 6])


ports = st.integers(1, 65535)
seqs = st.integers(0, 2**32 - 1)
tsvals = st.none() | st.integers(0, 2**32 - 1)


@given(st.integers(1, 2**32 - 2), st.integers(1, 2**32 - 2), ports, ports, seqs, tsvals)
def test_syn_ipv4_bytes(src_i: int, dst_i: int, sport: int, dport: int, seq: int, tsval: int | None) -> None:
    src, dst = V4(src_i), V4(dst_i)
    segment = tcp_syn(src, dst, sport, dport, seq, tsval)
    # The checksum field makes the whole pseudo-header + segment sum to zero (independent computation).
    assert _ones_complement(_pseudo(src.packed, dst.packed, len(segment)) + segment) in (0, 0xFFFF)
    packet = ipv4(src, dst, segment, ident=seq & 0xFFFF)
    ip = dpkt.ip.IP(packet)
    assert ip.p == dpkt.ip.IP_PROTO_TCP and ip.len == len(packet) and ip.ttl == 64
    tcp = ip.data
    assert isinstance(tcp, dpkt.tcp.TCP)
    assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack) == (sport, dport, seq, 0)
    assert tcp.flags == dpkt.tcp.TH_SYN
    opts = dict(dpkt.tcp.parse_opts(tcp.opts))
    assert struct.unpack("!H", opts[dpkt.tcp.TCP_OPT_MSS]) == (MSS,)
    if tsval is None:
        assert dpkt.tcp.TCP_OPT_TIMESTAMP not in opts
    else:
        assert struct.unpack("!II", opts[dpkt.tcp.TCP_OPT_TIMESTAMP]) == (tsval, 0)
    # dpkt recomputes both checksums when they are zeroed: they must equal ours.
    ip_sum, tcp_sum = ip.sum, tcp.sum
    ip.sum = tcp.sum = 0
    again = dpkt.ip.IP(bytes(ip))
    assert (again.sum, again.data.sum) == (ip_sum, tcp_sum)


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16), ports, ports, seqs, tsvals)
def test_syn_ipv6_checksum(
    src_b: bytes, dst_b: bytes, sport: int, dport: int, seq: int, tsval: int | None
) -> None:
    src, dst = V6(src_b), V6(dst_b)
    segment = tcp_syn(src, dst, sport, dport, seq, tsval)
    assert _ones_complement(_pseudo(src_b, dst_b, len(segment)) + segment) in (0, 0xFFFF)
    ip6 = dpkt.ip6.IP6(
        src=src_b, dst=dst_b, nxt=dpkt.ip.IP_PROTO_TCP, hlim=64, plen=len(segment), data=segment
    )
    tcp = dpkt.ip6.IP6(bytes(ip6)).data
    assert tcp.flags == dpkt.tcp.TH_SYN
    ours = tcp.sum
    tcp.sum = 0
    ip6.data = tcp
    assert dpkt.ip6.IP6(bytes(ip6)).data.sum == ours


def test_parse_ip_and_quoted_probe() -> None:
    src, dst = V4("10.77.1.2"), V4("10.77.1.1")
    probe = ipv4(src, dst, tcp_syn(src, dst, 40000, 139, 7), ident=1)
    parsed = parse_ip(probe)
    assert parsed and parsed.ports() == (40000, 139) and parsed.tcp_flags() == TCPFlag.SYN
    # ICMP 3/13 quoting the probe's IP header and first 8 TCP bytes
    icmp = bytes([3, 13, 0, 0, 0, 0, 0, 0]) + probe[:28]
    error = ipv4(dst, src, b"", ident=2)[:20]
    error = error[:9] + bytes([1]) + error[10:]
    reply = parse_ip(error + icmp)
    assert reply and reply.proto == 1 and reply.ports() is None
    quoted = reply.quoted()
    assert quoted and quoted.ports() == (40000, 139) and quoted.dst == dst
    assert parse_ip(b"") is None and parse_ip(b"\x45" * 10) is None


# --------------------------------------------------------------------------- pcap writer

records = st.lists(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 999_999_999), st.binary(min_size=0, max_size=300)),
    max_size=30,
)


@settings(max_examples=200)
@given(records, st.sampled_from([1, 101]))
def test_pcap_roundtrip(recs: list[tuple[int, int, bytes]], linktype: int) -> None:
    buf = io.BytesIO()
    write_header(buf, linktype)
    for sec, nsec, data in recs:
        write_record(buf, sec * 1_000_000_000 + nsec, data)
    raw = buf.getvalue()
    assert struct.unpack_from("<I", raw)[0] == PCAP_MAGIC_NS == 0xA1B23C4D
    reader = dpkt.pcap.Reader(io.BytesIO(raw))
    assert reader.datalink() == linktype
    got = list(reader)
    # dpkt reads a nanosecond file's stamps as exact Decimals
    assert got == [(Decimal(sec) + Decimal(nsec) / Decimal(10**9), data) for sec, nsec, data in recs]


def test_pcap_header_is_ethernet_ns() -> None:
    buf = io.BytesIO()
    write_header(buf, LINKTYPE_ETHERNET)
    magic, major, minor, _, _, snaplen, linktype = struct.unpack("<IHHiIII", buf.getvalue())
    assert (magic, major, minor, linktype) == (0xA1B23C4D, 2, 4, 1) and snaplen >= 65535


# --------------------------------------------------------------------------- plan, jitter, config


@given(st.floats(0.001, 10.0), st.integers(0, 2**32))
def test_jitter_within_50_to_150_percent(delay_s: float, seed: int) -> None:
    for gap in gaps(200, delay_s, random.Random(seed)):
        assert 0.5 * delay_s <= gap <= 1.5 * delay_s


def test_jitter_spreads_uniformly() -> None:
    values = [g / 0.2 for g in gaps(20000, 0.2, random.Random(1))]
    assert sum(values) / len(values) == pytest.approx(1.0, abs=0.01)
    deciles = [sum(0.5 + k / 10 <= v < 0.6 + k / 10 for v in values) for k in range(10)]
    assert min(deciles) > 1700 and max(deciles) < 2300  # ~2000 each


def test_plan_order_and_randomness() -> None:
    targets = {V4("10.0.0.1"): (22, 80, 443), V6("fd00::1"): (22,)}
    probes = plan(targets, 10, random.Random(7))
    assert len(probes) == 40
    first_trip = [(p.trip, str(p.target), p.port) for p in probes[:4]]
    assert first_trip == [(1, "10.0.0.1", 22), (1, "10.0.0.1", 80), (1, "10.0.0.1", 443), (1, "fd00::1", 22)]
    assert [p.trip for p in probes] == sorted(p.trip for p in probes)
    assert all(1025 <= p.sport <= 65535 and 0 <= p.seq < 2**32 for p in probes)
    assert len({p.sport for p in probes}) > 35 and len({p.seq for p in probes}) == 40


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"numtrips": 2}, "at least 3"),
        ({"delay_s": 0}, "positive"),
        ({"timeout_s": -1}, "not negative"),
        ({"max_rate": 1001}, "max-rate"),
        ({"max_rate": 0}, "max-rate"),
        ({"delay_s": 0.01, "max_rate": 100}, "faster than --max-rate"),
    ],
)
def test_config_refuses(change: dict, message: str) -> None:
    base = {"targets": (V4("10.0.0.1"),), "ports": (22,), "write": "x.pcap"}
    with pytest.raises(AgentError, match=message):
        Config(**(base | change))


def test_config_allows_delay_at_the_rate_cap() -> None:
    Config(targets=(V4("10.0.0.1"),), ports=(22,), write="x.pcap", delay_s=0.02, max_rate=100)


def _frame(packet: bytes) -> Frame:
    ip = parse_ip(packet)
    assert ip is not None
    return Frame(0, packet, ip)


def test_capture_filter_keeps_only_our_exchange() -> None:
    us, them, other = V4("10.77.1.2"), V4("10.77.1.1"), V4("10.77.1.9")
    keys = {(us, them, 40000, 22)}

    def tcp(src: V4, dst: V4, sport: int, dport: int) -> bytes:
        return ipv4(src, dst, tcp_syn(src, dst, sport, dport, 1), ident=1)

    assert _belongs(_frame(tcp(us, them, 40000, 22)), keys)  # the probe
    assert _belongs(_frame(tcp(them, us, 22, 40000)), keys)  # its reply
    assert not _belongs(_frame(tcp(them, us, 22, 40001)), keys)  # another connection (e.g. an ssh session)
    assert not _belongs(_frame(tcp(other, us, 22, 40000)), keys)  # another host
    probe = tcp(us, them, 40000, 22)
    icmp_head = ipv4(them, us, b"", ident=2)[:20]
    icmp_head = icmp_head[:9] + b"\x01" + icmp_head[10:]
    assert _belongs(_frame(icmp_head + bytes([3, 13, 0, 0, 0, 0, 0, 0]) + probe[:28]), keys)
    stranger = tcp(us, other, 40000, 22)
    assert not _belongs(_frame(icmp_head + bytes([3, 13, 0, 0, 0, 0, 0, 0]) + stranger[:28]), keys)


# --------------------------------------------------------------------------- import safety and CLI errors

_IMPORT_CHECK = r"""
import os, signal, socket, threading
def boom(*a, **k):
    raise AssertionError("work at import time")
before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
socket.socket = socket.socketpair = socket.getaddrinfo = boom
os.setuid = os.setgid = os.setgroups = boom
signal.signal = signal.set_wakeup_fd = boom
import agent, agent.__main__, agent.cli, agent.probe, agent.capture, agent.packet, agent.ports
import agent.route, agent.privs, agent.errors
assert threading.active_count() == 1
assert before == {s: signal.getsignal(s) for s in before}
print("clean")
"""


def test_import_does_nothing() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_CHECK], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"


def _agent(*args: str, user: int | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "agent", "probe", *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "--inh-caps=-all", *cmd]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["127.0.0.1", "--ports", "22,x"], "bad port list"),
        (["127.0.0.1", "--ports", "70000"], "bad port list"),
        (["127.0.0.1", "--ports", "22", "--delay", "fast"], "bad time"),
        (["127.0.0.1", "--ports", "22", "--numtrips", "2"], "at least 3"),
        (["255.255.255.255", "--ports", "22"], "refusing"),
        (["ff02::1", "--ports", "22"], "refusing"),
        (["127.0.0.1", "--ports", "22", "--interface", "nosuch0"], "unknown interface"),
        (["127.0.0.1", "--ports", "22", "--max-rate", "5000"], "max-rate"),
        (["127.0.0.1", "--ports", "22", "--numtrips", "many"], "invalid int"),
    ],
)
def test_cli_errors_are_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    out = _agent(*args, "--write", str(tmp_path / "x.pcap"))
    assert out.returncode == 2
    assert message in out.stderr and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_without_privileges(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv is missing: cannot run the agent unprivileged")
        tmp_path.chmod(0o777)
        out = _agent("127.0.0.1", "--ports", "22", "--write", str(tmp_path / "x.pcap"), user=65534)
    else:
        out = _agent("127.0.0.1", "--ports", "22", "--write", str(tmp_path / "x.pcap"))
    assert out.returncode == 2
    assert "no privileges for raw sockets" in out.stderr and out.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
