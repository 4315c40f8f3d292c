"""A NAT gateway lab in network namespaces, for tests, benchmarks and sample captures.

Topology (one-way delay ``delay_ms`` on each wire through the delay namespace)::

    {p}-scan            {p}-gw                       {p}-delay                  {p}-inner
    scan0 10.77.1.2 --- gw-scan 10.77.1.1 (target)
                        gw-inner 10.77.2.1 --- dly-gw ~~delayline~~ dly-inner --- inner0 10.77.2.2
                        gw-inner2 10.77.3.1 -- dly-gw2 ~~delayline~~ dly-inner2 -- inner0 10.77.3.2
                                                                               ({p}-inner2, two_inner=True)

With ``ipv6=True`` every 10.77.N.H also has fd77:N::H. The gateway answers
``local_ports`` itself and DNATs ``forwarded_ports`` (nft) to the inner host(s), whose
default route points back at the gateway, so no SNAT is needed and replies cross the
gateway again (TTL 63 instead of 64). ``inner_same_segment=True`` wires the inner hosts
straight to the gateway with no delay namespace: RTT can then not tell them apart, TTL can.

Ports (TCP unless named UDP):

=================  =================  ==========================================
local_ports        22, 80             listeners in the gateway
forwarded_ports    443, 3306, 8080    DNAT to inner (two_inner: 443, 8080 -> inner, 3306 -> inner2)
closed_ports       23, 25             no listener: the gateway answers RST
dropped_port       135                nft drop in the gateway (TCP and UDP)
rejected_port      139                nft reject, ICMP admin-prohibited (type 3 code 13)
udp_local_ports    53                 UDP listener in the gateway, replies with its banner
udp_forwarded_ports 161               DNAT to inner, replies with its banner
udp_closed_ports   69                 ICMP port unreachable (icmp_ratelimit=0)
=================  =================  ==========================================

Every TCP listener sends a one-line banner naming its host ("gw", "inner", "inner2") and
closes; UDP listeners reply with the same banner. Neighbour entries are static, so
captures hold no ARP/ND. The lab's life (naming, teardown, stale and orphan sweeps, captures) is
netns.NamespaceLab's. Use from scripts with ``sys.path.insert(0, "<repo>/tests/support")``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import netns
from netns import Capture, LabError, NamespaceLab, ip_batch, lab_available, neighbour, offload_off, run

__all__ = ["Capture", "LabError", "NatLab", "ProbeReply", "expected_banners", "lab_available", "nat_lab",
           "probe_replies"]

DEFAULT_LOCAL_PORTS = (22, 80)
DEFAULT_FORWARDED_PORTS = (443, 3306, 8080)
CLOSED_PORTS = (23, 25)
DROPPED_PORT = 135
REJECTED_PORT = 139
UDP_LOCAL_PORTS = (53,)
UDP_FORWARDED_PORTS = (161,)
UDP_CLOSED_PORTS = (69,)

SCANNER_IFACE = "scan0"
DELAYLINE = Path(__file__).with_name("delayline.py")
SLOWER = 3.0  # NatLab.slow_down: the delay line's delay from then on, as a multiple of its first
ROLES = ("scan", "gw", "delay", "inner", "inner2")
NFT_TABLE = "synlens_lab"

# Runs in the scanner namespace after the build: proves every open port answers from the
# host it should (and warms nothing: neighbours are static), before anyone captures.
_VERIFY_SRC = r"""
import json, socket, sys
out = {}
for host, port, proto in json.loads(sys.argv[1]):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        if proto == "tcp":
            with socket.create_connection((host, port), timeout=3) as s:
                reply = s.recv(64)
        else:
            with socket.socket(fam, socket.SOCK_DGRAM) as s:
                s.settimeout(3)
                s.sendto(b"hello", (host, port))
                reply = s.recv(64)
        out[f"{proto}/{host}/{port}"] = reply.decode().strip()
    except OSError as e:
        out[f"{proto}/{host}/{port}"] = f"error: {e}"
print(json.dumps(out))
"""


@dataclass(frozen=True, kw_only=True)
class NatLab(NamespaceLab):
    """A built lab (see the module docstring for topology and ports). IPv4 unless named 6.

    `target` is the scan target (the gateway); capture on `scanner_iface` in `scanner_ns`.
    Every port list is sorted. Valid only inside its `nat_lab` block.
    """

    scanner_iface: str = SCANNER_IFACE
    scanner_addr: str
    target: str
    target6: str | None
    local_ports: tuple[int, ...]
    forwarded_ports: tuple[int, ...]
    closed_ports: tuple[int, ...]
    dropped_port: int
    rejected_port: int
    udp_local_ports: tuple[int, ...]
    udp_forwarded_ports: tuple[int, ...]
    udp_closed_ports: tuple[int, ...]
    inner_addrs: tuple[str, ...]  # IPv4 of each inner host (one or two)
    forwarded_to: tuple[tuple[int, str], ...]  # (forwarded TCP port, inner IPv4)
    delay_ms: float  # one-way delay of the delay line; 0 when there is none (inner_same_segment)
    scanner_addr6: str | None = None

    what: ClassVar[str] = "NAT lab"
    roles: ClassVar[tuple[str, ...]] = ROLES
    sensors: ClassVar[dict[str, tuple[str, str]]] = {"scanner": ("scan", SCANNER_IFACE)}
    settle_s: ClassVar[float] = 0.05  # replies still in the delay line

    scanner_ns: ClassVar[str] = netns.RoleNamespace("scan")
    gateway_ns: ClassVar[str] = netns.RoleNamespace("gw")

    @property
    def delay_ns(self) -> str | None:
        """The delay line's namespace; None when the inner hosts sit on the gateway's own segment."""
        return self.ns("delay") if self.delay_ms else None

    @property
    def inner_ns(self) -> tuple[str, ...]:
        """The inner hosts' namespaces, in the order of `inner_addrs`."""
        return tuple(map(self.ns, ("inner", "inner2")[: len(self.inner_addrs)]))

    @property
    def namespaces(self) -> tuple[str, ...]:
        delay = (self.delay_ns,) if self.delay_ns else ()
        return (self.scanner_ns, self.gateway_ns, *delay, *self.inner_ns)

    @property
    def open_ports(self) -> tuple[int, ...]:
        return tuple(sorted(self.local_ports + self.forwarded_ports))

    @property
    def udp_open_ports(self) -> tuple[int, ...]:
        return tuple(sorted(self.udp_local_ports + self.udp_forwarded_ports))

    def machines(self) -> tuple[tuple[int, ...], ...]:
        """TCP ports grouped by the host that answers them (gateway first, closed ports included)."""
        gateway = tuple(sorted(self.local_ports + self.closed_ports))
        inner = tuple(
            tuple(sorted(p for p, addr in self.forwarded_to if addr == inner_addr))
            for inner_addr in self.inner_addrs
        )
        return (gateway, *(ports for ports in inner if ports))

    def rtt_families(self) -> tuple[tuple[int, ...], ...]:
        """The TCP port groups an RTT analysis can tell apart in this lab.

        Local and closed ports (answered by the gateway kernel) against every forwarded
        port; inner hosts sit at the same delay, so they share one family. Without a delay
        line everything is one family.
        """
        gateway = tuple(sorted(self.local_ports + self.closed_ports))
        if self.delay_ns is None:
            return (tuple(sorted(gateway + self.forwarded_ports)),)
        return (gateway, tuple(sorted(self.forwarded_ports)))

    def slow_down(self) -> None:
        """From now on the delay line holds each frame SLOWER times as long (once; frames already in the line
        keep their due times): the forwarded ports' RTT steps up mid-scan, as a path's does under load."""
        line = self.process("delay line")
        if line is None:
            raise LabError("this lab has no delay line")
        os.kill(line.pid, signal.SIGUSR1)  # (ip netns exec execs the line's python in place: its pid is this)

    def build(self) -> None:
        ipv6 = self.target6 is not None
        scan, gw = self.scanner_ns, self.gateway_ns
        self.sysctls(scan, _ipv6_sysctls(ipv6))
        gw_sysctls = ["net.ipv4.ip_forward=1", "net.ipv4.icmp_ratelimit=0"]
        if ipv6:
            gw_sysctls += ["net.ipv6.conf.all.forwarding=1", "net.ipv6.icmp.ratelimit=0"]
        self.sysctls(gw, gw_sysctls + _ipv6_sysctls(ipv6))
        if self.delay_ns:
            self.sysctls(self.delay_ns, _ipv6_sysctls(False))  # a wire: no addresses, no stack of its own
        for ns in self.inner_ns:
            inner_sysctls = ["net.ipv4.icmp_ratelimit=0"] + (["net.ipv6.icmp.ratelimit=0"] if ipv6 else [])
            self.sysctls(ns, inner_sysctls + _ipv6_sysctls(ipv6))

        # scanner <-> gateway
        self.veth(scan, SCANNER_IFACE, gw, "gw-scan", mac_a=SCAN_NET.mac(2), mac_b=SCAN_NET.mac(1))
        ip_batch(scan, ["link set lo up", *_addr_lines(SCANNER_IFACE, SCAN_NET, 2, SCAN_NET.mac(1), ipv6)])
        gw_lines = ["link set lo up", *_addr_lines("gw-scan", SCAN_NET, 1, SCAN_NET.mac(2), ipv6)]
        gw_ifaces = ["gw-scan"]
        delay_pairs: list[str] = []

        # gateway <-> each inner host, through the delay namespace unless on one segment
        for i, inner_ns in enumerate(self.inner_ns):
            net, suffix = INNER_NETS[i], "" if i == 0 else str(i + 1)
            gw_if = f"gw-inner{suffix}"
            if self.delay_ns is None:
                self.veth(gw, gw_if, inner_ns, "inner0", mac_a=net.mac(1), mac_b=net.mac(2))
            else:
                dly_gw, dly_inner = f"dly-gw{suffix}", f"dly-inner{suffix}"
                self.veth(gw, gw_if, self.delay_ns, dly_gw, mac_a=net.mac(1), mac_b=net.mac(1, hop=1))
                self.veth(self.delay_ns, dly_inner, inner_ns, "inner0", mac_a=net.mac(2, hop=1), mac_b=net.mac(2))
                delay_pairs.append(f"{dly_gw}:{dly_inner}")
            gw_ifaces.append(gw_if)
            gw_lines += _addr_lines(gw_if, net, 1, net.mac(2), ipv6)
            inner_lines = ["link set lo up", *_addr_lines("inner0", net, 2, net.mac(1), ipv6)]
            inner_lines.append(f"route add default via {net.v4(1)}")
            if ipv6:
                inner_lines.append(f"route add ::/0 via {net.v6(1)}")
            ip_batch(inner_ns, inner_lines)
            offload_off(inner_ns, ["inner0"])
        ip_batch(gw, gw_lines)
        offload_off(gw, gw_ifaces)
        offload_off(scan, [SCANNER_IFACE])
        if self.delay_ns:
            dly_ifaces = [iface for pair in delay_pairs for iface in pair.split(":")]
            ip_batch(self.delay_ns, [f"link set {iface} up" for iface in dly_ifaces])
            offload_off(self.delay_ns, dly_ifaces)

        self.load_nft(gw, self._nft_ruleset())
        self.serve_banners(gw, "gw", self.local_ports, self.udp_local_ports, ipv6=ipv6)
        for i, (ns, addr) in enumerate(zip(self.inner_ns, self.inner_addrs)):
            tcp = [p for p, to in self.forwarded_to if to == addr]
            self.serve_banners(ns, "inner" if i == 0 else f"inner{i + 1}", tcp,
                               self.udp_forwarded_ports if i == 0 else (), ipv6=ipv6)
        if self.delay_ns:
            self.spawn(self.delay_ns, sys.executable, str(DELAYLINE), "--delay-ms", str(self.delay_ms),
                       "--then-delay-ms", str(SLOWER * self.delay_ms), *delay_pairs, ready="ready",
                       name="delay line")  # fmt: skip
        self._verify()

    def _verify(self) -> None:
        """Every port answers, from the host it should, before anyone captures."""
        expected = expected_banners(self)
        probes = [(host, int(port), proto) for proto, host, port in (key.split("/") for key in expected)]
        self.check_answers(self.scanner_ns, _VERIFY_SRC, [json.dumps(probes)], expected)

    def reforward(self, forwarded_to: Mapping[int, str | None]) -> NatLab:
        """The lab with TCP ports answered elsewhere from now on: `forwarded_to` maps a port of `open_ports`
        to the inner address it is DNATed to, or None for the gateway to answer it itself (ports not named keep
        their place). A port's new owner gets a listener if it has none (a banner server of its own, stopped at
        teardown: the old owner's stays, unreached); the gateway's DNAT is replaced in one nft transaction; every
        open port is checked to answer from its new owner before this returns. Returns the lab as now wired (its
        processes are this lab's, torn down with it)."""
        unknown = set(forwarded_to) - set(self.open_ports)
        if unknown or not {v for v in forwarded_to.values() if v} <= set(self.inner_addrs):
            raise ValueError(f"ports {sorted(unknown)} are not open, or an address is not an inner host's")
        owner = {p: None for p in self.local_ports} | dict(self.forwarded_to) | dict(forwarded_to)
        namespace = {None: self.gateway_ns} | dict(zip(self.inner_addrs, self.inner_ns))
        banner = {None: "gw"} | {a: "inner" if i == 0 else f"inner{i + 1}" for i, a in enumerate(self.inner_addrs)}
        for addr in {owner[p] for p in forwarded_to}:
            listening = set(map(int, re.findall(r":(\d+)\s", self.run(namespace[addr], "ss", "-Hltn").stdout)))
            missing = sorted(p for p in forwarded_to if owner[p] == addr and p not in listening)
            if missing:
                self.serve_banners(namespace[addr], banner[addr], missing, ipv6=self.target6 is not None)
        forwarded = tuple(sorted((p, a) for p, a in owner.items() if a))
        wired = replace(self, local_ports=tuple(sorted(p for p, a in owner.items() if a is None)),
                        forwarded_ports=tuple(p for p, _ in forwarded), forwarded_to=forwarded)
        self.load_nft(self.gateway_ns, f"delete table inet {NFT_TABLE}\n" + wired._nft_ruleset())
        wired._verify()
        return wired

    def _nft_ruleset(self) -> str:
        """The gateway's table: DNAT of the forwarded ports to their inner hosts, the dropped and rejected
        ports."""
        tcp_dnat: dict[str, list[int]] = {addr: [] for addr in self.inner_addrs}
        for port, addr in self.forwarded_to:
            tcp_dnat[addr].append(port)
        udp_dnat = {self.inner_addrs[0]: list(self.udp_forwarded_ports)}
        inner6 = {addr: INNER_NETS[i].v6(2) for i, addr in enumerate(self.inner_addrs)}

        def ports(ps: list[int]) -> str:
            return "{ " + ", ".join(map(str, ps)) + " }"

        dnat = []
        for proto, by_host in (("tcp", tcp_dnat), ("udp", udp_dnat)):
            for inner, ps in by_host.items():
                if not ps:
                    continue
                dnat.append(f"ip daddr {self.target} {proto} dport {ports(ps)} dnat ip to {inner}")
                if self.target6:
                    dnat.append(f"ip6 daddr {self.target6} {proto} dport {ports(ps)} dnat ip6 to {inner6[inner]}")
        dropped, rejected = self.dropped_port, self.rejected_port
        filtered = [
            f"meta l4proto {{ tcp, udp }} th dport {dropped} drop",
            f"meta nfproto ipv4 meta l4proto {{ tcp, udp }} th dport {rejected} reject with icmp type admin-prohibited",
            f"meta nfproto ipv6 meta l4proto {{ tcp, udp }} th dport {rejected} reject with icmpv6 type admin-prohibited",
        ]
        prerouting = netns.nft_chain("prerouting", dnat, kind="nat", priority="dstnat")
        return netns.nft_table(NFT_TABLE, prerouting, netns.nft_chain("input", filtered))


# ---------------------------------------------------------------------------- reading captures

_TSHARK_FIELDS = (
    "frame.time_epoch", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "ip.ttl", "ipv6.hlim",
    "tcp.srcport", "tcp.dstport", "tcp.flags", "icmp.type", "icmp.code", "icmpv6.type", "icmpv6.code",
)  # fmt: skip
TCP_SYN, TCP_RST, TCP_SYN_ACK = 0x02, 0x04, 0x12


@dataclass(frozen=True)
class ProbeReply:
    """One SYN probe to the target seen in a capture, and what came back first."""

    port: int  # destination port probed
    sport: int  # the probe's source port
    sent_s: float  # capture timestamp, seconds since the epoch
    reply: str | None  # "SA" (SYN-ACK), "RA"/"R" (reset), "icmp3/13", "icmpv6 1/1", or None
    rtt_ms: float | None
    ttl: int | None  # IPv4 TTL / IPv6 hop limit of the reply


def _tshark_rows(pcap: str | os.PathLike) -> list[dict[str, str]]:
    cmd = ["tshark", "-n", "-r", str(pcap), "-T", "fields", "-E", "separator=/t", "-E", "occurrence=f"]
    for name in _TSHARK_FIELDS:
        cmd += ["-e", name]
    out = run(cmd, timeout=120).stdout
    return [dict(zip(_TSHARK_FIELDS, line.split("\t"))) for line in out.splitlines()]


def _reply_kind(row: dict[str, str]) -> str:
    if row["icmp.type"]:
        return f"icmp{row['icmp.type']}/{row['icmp.code']}"
    if row["icmpv6.type"]:
        return f"icmpv6 {row['icmpv6.type']}/{row['icmpv6.code']}"
    flags = int(row["tcp.flags"], 16)
    if flags & TCP_SYN_ACK == TCP_SYN_ACK:
        return "SA"
    return "RA" if flags & 0x10 else "R"


def probe_replies(pcap: str | os.PathLike, target: str) -> list[ProbeReply]:
    """Pair every SYN sent to `target` (IPv4 or IPv6) with the first reply for its ports.

    A reply is a TCP segment from the target to the probe's source port, or an ICMP error
    from the target quoting the probe. Reads the capture with tshark; probes in time order.
    """
    probes: list[dict] = []
    waiting: dict[tuple[int, int], list[dict]] = {}
    for row in _tshark_rows(pcap):
        src, dst = row["ip.src"] or row["ipv6.src"], row["ip.dst"] or row["ipv6.dst"]
        if not row["tcp.srcport"]:
            continue
        key = (int(row["tcp.srcport"]), int(row["tcp.dstport"]))
        is_icmp = bool(row["icmp.type"] or row["icmpv6.type"])
        if dst == target and not is_icmp and int(row["tcp.flags"], 16) == TCP_SYN:
            probe = {"key": key, "sent_s": float(row["frame.time_epoch"]), "reply": None}
            probes.append(probe)
            waiting.setdefault(key, []).append(probe)
        elif src == target:
            # An ICMP error quotes the probe as sent; a TCP reply swaps the ports.
            queue = waiting.get(key if is_icmp else key[::-1])
            if queue:
                queue.pop(0)["reply"] = row
    return [_probe_reply(p) for p in probes]


def _probe_reply(probe: dict) -> ProbeReply:
    sport, port = probe["key"]
    row = probe["reply"]
    if row is None:
        return ProbeReply(port, sport, probe["sent_s"], None, None, None)
    rtt_ms = (float(row["frame.time_epoch"]) - probe["sent_s"]) * 1e3
    ttl = int(row["ip.ttl"] or row["ipv6.hlim"])
    return ProbeReply(port, sport, probe["sent_s"], _reply_kind(row), rtt_ms, ttl)


# ---------------------------------------------------------------------------- building


@dataclass(frozen=True)
class _Subnet:
    """Subnet N of the lab: the gateway is host 1, its neighbour host 2."""

    n: int

    def v4(self, host: int) -> str:
        return f"10.77.{self.n}.{host}"

    def v6(self, host: int) -> str:
        return f"fd77:{self.n}::{host}"

    def mac(self, host: int, hop: int = 0) -> str:
        # Fixed MACs keep captures reproducible and allow static neighbour entries.
        return f"02:77:{self.n:02x}:00:{hop:02x}:{host:02x}"


SCAN_NET = _Subnet(1)
INNER_NETS = (_Subnet(2), _Subnet(3))


def _addr_lines(iface: str, net: _Subnet, host: int, peer_mac: str, ipv6: bool) -> list[str]:
    """Bring `iface` up as host `host` of `net` with a static neighbour entry for the peer."""
    peer = 3 - host
    lines = [f"link set {iface} up", f"addr add {net.v4(host)}/24 dev {iface}", neighbour(net.v4(peer), peer_mac, iface)]
    if ipv6:
        lines += [f"addr add {net.v6(host)}/64 dev {iface} nodad", neighbour(net.v6(peer), peer_mac, iface)]
    return lines


def _ipv6_sysctls(ipv6: bool) -> list[str]:
    # Disabling IPv6 when unused keeps router solicitations and MLD out of captures;
    # default.* must be set before the veths are created so they inherit it.
    if ipv6:
        return ["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"]
    return ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]


def _split_forwarded(ports: Sequence[int], inner_addrs: Sequence[str]) -> tuple[tuple[int, str], ...]:
    """Deal forwarded ports round-robin over the inner hosts (sorted, so it is stable)."""
    return tuple((port, inner_addrs[i % len(inner_addrs)]) for i, port in enumerate(sorted(ports)))


def _validate_ports(local: Sequence[int], forwarded: Sequence[int]) -> None:
    special = set(CLOSED_PORTS) | {DROPPED_PORT, REJECTED_PORT}
    if set(local) & set(forwarded) or (set(local) | set(forwarded)) & special:
        raise ValueError(
            f"local {local} and forwarded {forwarded} ports must be disjoint from each "
            f"other and from closed/dropped/rejected {sorted(special)}"
        )


def expected_banners(lab: NatLab) -> dict[str, str]:
    """``{"tcp/<addr>/<port>": banner}`` for every open port the scanner can reach."""
    owner = {p: ("inner" if addr == lab.inner_addrs[0] else "inner2") for p, addr in lab.forwarded_to}
    owner |= {p: "gw" for p in lab.local_ports}
    udp_owner = {p: "gw" for p in lab.udp_local_ports} | {p: "inner" for p in lab.udp_forwarded_ports}
    expected = {}
    for target in filter(None, (lab.target, lab.target6)):
        expected |= {f"tcp/{target}/{p}": host for p, host in owner.items()}
        expected |= {f"udp/{target}/{p}": host for p, host in udp_owner.items()}
    return expected


def nat_lab(
    prefix: str,
    *,
    delay_ms: float = 1.0,
    inner_same_segment: bool = False,
    two_inner: bool = False,
    ipv6: bool = False,
    local_ports: Sequence[int] = DEFAULT_LOCAL_PORTS,
    forwarded_ports: Sequence[int] = DEFAULT_FORWARDED_PORTS,
) -> contextlib.AbstractContextManager[NatLab]:
    """Build the NAT lab named `prefix` for a with-block, and tear it down however the block ends.

    A stale lab with the same prefix (namespaces and the processes in them) is removed
    first. `delay_ms` is the one-way delay of the line between gateway and inner hosts,
    so forwarded ports answer about 2*delay_ms later than local ones.
    """
    if delay_ms <= 0 and not inner_same_segment:
        raise ValueError("delay_ms must be positive (use inner_same_segment=True for no delay)")
    _validate_ports(local_ports, forwarded_ports)
    inner_addrs = tuple(net.v4(2) for net in INNER_NETS[: 2 if two_inner else 1])
    lab = NatLab(
        prefix=prefix,
        scanner_addr=SCAN_NET.v4(2),
        target=SCAN_NET.v4(1),
        target6=SCAN_NET.v6(1) if ipv6 else None,
        local_ports=tuple(sorted(local_ports)),
        forwarded_ports=tuple(sorted(forwarded_ports)),
        closed_ports=CLOSED_PORTS,
        dropped_port=DROPPED_PORT,
        rejected_port=REJECTED_PORT,
        udp_local_ports=UDP_LOCAL_PORTS,
        udp_forwarded_ports=UDP_FORWARDED_PORTS,
        udp_closed_ports=UDP_CLOSED_PORTS,
        inner_addrs=inner_addrs,
        forwarded_to=_split_forwarded(forwarded_ports, inner_addrs),
        delay_ms=0.0 if inner_same_segment else float(delay_ms),
        scanner_addr6=SCAN_NET.v6(2) if ipv6 else None,
    )
    return lab.standing()
