"""The lab itself behaves as advertised: two RTT families, TTLs, drop/reject/RST, variants."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from conftest import lab_prefix, require_lab, require_tools
from natlab import NatLab, ProbeReply, expected_banners, nat_lab, probe_replies

pytestmark = pytest.mark.lab

PROBES_PER_PORT = 5

# Times TCP handshakes from inside the scanner namespace: {port: [ms, ...]}.
_CONNECT_TIMES_SRC = r"""
import json, socket, sys, time
host, ports, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
out = {}
for port in ports:
    out[port] = []
    for _ in range(n):
        start = time.perf_counter()
        with socket.create_connection((host, port), timeout=3):
            out[port].append((time.perf_counter() - start) * 1e3)
print(json.dumps(out))
"""


def hping_all_ports(lab: NatLab, ports: list[int], pcap: str) -> list[ProbeReply]:
    """SYN-probe each port in turn with hping3 under tcpdump; pair probes and replies."""
    # One port at a time: concurrent hping3s see each other's replies and stop early.
    with lab.capture(pcap):
        for port in ports:
            lab.run(
                lab.scanner_ns,
                "hping3",
                "-S",
                "-q",
                "-p",
                str(port),
                "-c",
                str(PROBES_PER_PORT),
                "-i",
                "u20000",
                lab.target,
                timeout=30,
                check=False,
            )
    return probe_replies(pcap, lab.target)


def connect_times_ms(lab: NatLab, host: str, ports: tuple[int, ...], n: int = 7) -> dict[int, list[float]]:
    out = lab.run(lab.scanner_ns, sys.executable, "-c", _CONNECT_TIMES_SRC, host, json.dumps(ports), str(n))
    return {int(port): times for port, times in json.loads(out.stdout).items()}


def by_port(replies: list[ProbeReply], port: int) -> list[ProbeReply]:
    found = [r for r in replies if r.port == port]
    assert len(found) == PROBES_PER_PORT, f"port {port}: {len(found)} probes in capture"
    return found


@pytest.fixture(scope="module")
def hping(lab: NatLab, tmp_path_factory: pytest.TempPathFactory) -> list[ProbeReply]:
    require_tools("hping3", "tshark")
    ports = [*lab.open_ports, *lab.closed_ports, lab.dropped_port, lab.rejected_port]
    return hping_all_ports(lab, ports, str(tmp_path_factory.mktemp("lab") / "hping.pcap"))


def test_forwarded_ports_cross_the_delay_line(lab: NatLab, hping: list[ProbeReply]) -> None:
    for port in lab.forwarded_ports:
        replies = by_port(hping, port)
        assert all(r.reply == "SA" for r in replies), replies
        # Two crossings of a 1 ms line: no reply can beat 2 ms; 1.5 ms leaves clock slack.
        assert min(r.rtt_ms for r in replies) >= 1.5, replies


def test_local_ports_answer_fast(lab: NatLab, hping: list[ProbeReply]) -> None:
    for port in lab.local_ports:
        replies = by_port(hping, port)
        assert all(r.reply == "SA" for r in replies), replies
        # The floor, not the median: a busy machine delays replies, never hastens one past the delay line.
        assert min(r.rtt_ms for r in replies) < 1.0, replies


def test_closed_ports_answer_rst_from_gateway(lab: NatLab, hping: list[ProbeReply]) -> None:
    for port in lab.closed_ports:
        replies = by_port(hping, port)
        assert all(r.reply == "RA" and r.ttl == 64 for r in replies), replies
        assert min(r.rtt_ms for r in replies) < 1.0, replies


def test_dropped_port_gets_no_reply(lab: NatLab, hping: list[ProbeReply]) -> None:
    assert all(r.reply is None for r in by_port(hping, lab.dropped_port))


def test_rejected_port_gets_icmp_admin_prohibited(lab: NatLab, hping: list[ProbeReply]) -> None:
    assert all(r.reply == "icmp3/13" for r in by_port(hping, lab.rejected_port))


def test_forwarded_reply_ttl_is_one_less_than_local(lab: NatLab, hping: list[ProbeReply]) -> None:
    local_ttls = {r.ttl for p in lab.local_ports for r in by_port(hping, p)}
    forwarded_ttls = {r.ttl for p in lab.forwarded_ports for r in by_port(hping, p)}
    assert local_ttls == {64}
    assert forwarded_ttls == {63}


def test_every_open_port_is_served_by_its_host(lab: NatLab) -> None:
    # The build verifies this too; this keeps the mapping visible as a test.
    banners = expected_banners(lab)
    assert banners[f"tcp/{lab.target}/22"] == "gw"
    assert banners[f"tcp/{lab.target}/443"] == "inner"
    assert lab.rtt_families() == ((22, 23, 25, 80), (443, 3306, 8080))


_UDP_SRC = r"""
import json, socket, sys
host, ports = sys.argv[1], json.loads(sys.argv[2])
out = {}
for port in ports:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        s.connect((host, port))  # connected UDP socket: ICMP errors surface as exceptions
        s.send(b"probe")
        try:
            out[port] = s.recv(64).decode().strip()
        except OSError as e:
            out[port] = type(e).__name__
print(json.dumps(out))
"""


def test_udp_ports(lab: NatLab) -> None:
    ports = [*lab.udp_local_ports, *lab.udp_forwarded_ports, *lab.udp_closed_ports, lab.rejected_port]
    out = json.loads(
        lab.run(lab.scanner_ns, sys.executable, "-c", _UDP_SRC, lab.target, json.dumps(ports)).stdout
    )
    expected = {p: "gw" for p in lab.udp_local_ports} | {p: "inner" for p in lab.udp_forwarded_ports}
    expected |= {p: "ConnectionRefusedError" for p in lab.udp_closed_ports}
    # admin-prohibited maps to EHOSTUNREACH in Linux's ICMP error table
    expected[lab.rejected_port] = "OSError"
    assert {int(k): v for k, v in out.items()} == expected


# ---------------------------------------------------------------------------- variants


@pytest.fixture(scope="module")
def lab6() -> Iterator[NatLab]:
    require_lab()
    with nat_lab(lab_prefix("v6"), ipv6=True, two_inner=True) as built:
        yield built


def test_ipv6_forwarded_ports_are_slower(lab6: NatLab) -> None:
    times = connect_times_ms(lab6, lab6.target6, lab6.open_ports)
    for port in lab6.forwarded_ports:
        assert min(times[port]) >= 1.5, (port, times[port])
    # (floors, not medians: a busy machine adds to every connection, and the delay line is what tells them apart)
    slowest_local, fastest_forwarded = max(min(times[p]) for p in lab6.local_ports), min(
        min(times[p]) for p in lab6.forwarded_ports)
    assert slowest_local < fastest_forwarded - 1.0, times


def test_two_inner_hosts_share_one_delay(lab6: NatLab) -> None:
    assert lab6.machines() == ((22, 23, 25, 80), (443, 8080), (3306,))
    assert lab6.rtt_families() == ((22, 23, 25, 80), (443, 3306, 8080))
    times = connect_times_ms(lab6, lab6.target, lab6.forwarded_ports)
    # The line's delay is a floor every connection pays, whichever inner host answers (a busy machine only adds to
    # it, by as much as it likes: no upper bound is asserted).
    fastest = {port: min(ms) for port, ms in times.items()}
    assert all(m >= 1.5 for m in fastest.values()), times


def test_inner_same_segment_differs_only_by_ttl(tmp_path) -> None:
    require_lab()
    require_tools("hping3", "tshark")
    with nat_lab(lab_prefix("seg"), inner_same_segment=True) as seg:
        assert seg.delay_ns is None and seg.rtt_families() == ((22, 23, 25, 80, 443, 3306, 8080),)
        replies = hping_all_ports(seg, [22, 443], str(tmp_path / "seg.pcap"))
    assert {r.ttl for r in replies if r.port == 22} == {64}
    assert {r.ttl for r in replies if r.port == 443} == {63}
    assert min(r.rtt_ms for r in replies if r.port == 443) < 1.0, replies  # (no delay line on one segment)


# ---------------------------------------------------------------------------- lifecycle


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_two_labs_coexist(lab: NatLab) -> None:
    with nat_lab(lab_prefix("two")) as other:
        assert set(other.namespaces).isdisjoint(lab.namespaces)
        for each in (lab, other):
            times = connect_times_ms(each, each.target, (22, 443), n=3)
            assert min(times[443]) >= 1.5 and min(times[22]) < min(times[443]) - 1.0, times


def test_teardown_runs_when_the_body_raises() -> None:
    require_lab()
    prefix = lab_prefix("boom")
    with pytest.raises(RuntimeError, match="boom"), nat_lab(prefix) as doomed:
        procs = list(doomed._processes._procs)
        assert procs and all(p.poll() is None for p in procs)
        raise RuntimeError("boom")
    assert all(p.poll() is not None for p in procs)
    assert not {name for name in netns_names() if name.startswith(f"{prefix}-")}


def test_stale_lab_with_same_prefix_is_replaced() -> None:
    require_lab()
    prefix = lab_prefix("stale")
    subprocess.run(["ip", "netns", "add", f"{prefix}-gw"], check=True)
    squatter = subprocess.Popen(["ip", "netns", "exec", f"{prefix}-gw", "sleep", "60"])
    try:
        with nat_lab(prefix) as fresh:
            assert squatter.wait(timeout=5) != 0  # killed by the stale-lab sweep
            assert fresh.run(fresh.gateway_ns, "nft", "list", "tables").stdout.strip()
    finally:
        if squatter.poll() is None:
            squatter.kill()
            squatter.wait()
    assert not {name for name in netns_names() if name.startswith(f"{prefix}-")}
