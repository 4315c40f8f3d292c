"""A routed lab for scan forensics: a switched LAN, two routers, targets one and two hops away, and peers.

Topology (namespaces ``{p}-ROLE``; nothing touches the root namespace)::

    {p}-lan   bridge br0, a switch: tcpdump on br0 sees every LAN frame (a mirror port)
      ├ eth0 10.78.1.10     {p}-scan   the scanner
      ├ eth0 10.78.1.21-24  {p}-h1..h4 LAN hosts (ARP among them is left dynamic)
      └ lan0 10.78.1.1      {p}-r1     router 1, the LAN's gateway
    {p}-r1 eth2 10.78.4.1 ─── eth0 10.78.4.10 {p}-t1    target, one router from the LAN
    {p}-r1 eth1 10.78.2.1 ─── eth0 10.78.2.2  {p}-r2    router 2
    {p}-r2 eth1 10.78.3.1 ─── eth0 10.78.3.10 {p}-t2    target, two routers from the LAN
    {p}-r1 eth3 10.78.5.1 ─── eth0 10.78.5.2  {p}-peer  holds peer addresses in 10.80.0.0/12 (on lo)

Every point-to-point link and every LAN host's entry for the gateway (and the gateway's for it) is a
static neighbour: only ARP among the LAN hosts, and the ARP a tool sends itself, reaches a capture.
Router 2 also holds static entries (made-up MACs) for 10.78.3.16/28, which no host holds, so a sweep of
those addresses reaches t2's link (a sensor there sees each probe) and is never answered.

Both targets (t1, t2), ``net.ipv4.icmp_ratelimit=0``:

==========  =====================================================================
TCP open    22 (an OpenSSH-like banner, then close), 80 (HTTP/1.0, "/" a small HTML page)
TCP closed  every other port but the two below (kernel RST)
TCP drop    135 (nft drop); reject 139 (ICMP admin-prohibited, type 3 code 13)
UDP open    53 (the query echoed as a DNS answer), 161 (a banner)
UDP drop    137; reject 139 (ICMP admin-prohibited); every other port closed (ICMP port unreachable)
==========  =====================================================================

Use::

    from forensiclab import forensic_lab
    with forensic_lab("slfx1") as lab:
        with lab.capture("/tmp/x.pcap", at="scanner"):
            lab.run(lab.ns("scan"), "nmap", ...)
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import netns
from netns import TARGET_SYSCTLS, LabError, NamespaceLab, ip_batch, lab_available, neighbour, offload_off

__all__ = ["ForensicLab", "Host", "LabError", "forensic_lab", "lab_available"]

ROLES_PY = Path(__file__).with_name("forensic_roles.py")


@dataclass(frozen=True)
class Host:
    role: str  # the namespace is {prefix}-{role}
    address: str
    mac: str
    iface: str = "eth0"


SCANNER = Host("scan", "10.78.1.10", "02:78:01:00:00:0a")
GATEWAY = Host("r1", "10.78.1.1", "02:78:01:00:00:01", "lan0")
LAN_HOSTS = tuple(Host(f"h{i}", f"10.78.1.{20 + i}", f"02:78:01:00:00:{20 + i:02x}") for i in range(1, 5))
T1 = Host("t1", "10.78.4.10", "02:78:04:00:00:0a")
T2 = Host("t2", "10.78.3.10", "02:78:03:00:00:0a")
LAN_NET, LAN_BROADCAST = "10.78.1.0/24", "10.78.1.255"
PEER_NET = "10.80.0.0/12"
UNUSED_T2_NET = "10.78.3.16/28"  # static neighbours on r2, no host: a sweep's silent addresses
LINUX_TTL = 64

# Point-to-point links: (role A, iface A, address A, MAC A, role B, iface B, address B, MAC B), /24 each.
LINKS = (
    ("r1", "eth1", "10.78.2.1", "02:78:02:00:00:01", "r2", "eth0", "10.78.2.2", "02:78:02:00:00:02"),
    ("r2", "eth1", "10.78.3.1", "02:78:03:00:00:01", "t2", "eth0", T2.address, T2.mac),
    ("r1", "eth2", "10.78.4.1", "02:78:04:00:00:01", "t1", "eth0", T1.address, T1.mac),
    ("r1", "eth3", "10.78.5.1", "02:78:05:00:00:01", "peer", "eth0", "10.78.5.2", "02:78:05:00:00:02"),
)
ROUTES = {
    "r1": ["10.78.3.0/24 via 10.78.2.2", f"{PEER_NET} via 10.78.5.2"],
    "r2": ["default via 10.78.2.1"],
    "t1": ["default via 10.78.4.1"],
    "t2": ["default via 10.78.3.1"],
    "peer": ["default via 10.78.5.1"],
    **{h.role: [f"default via {GATEWAY.address}"] for h in (SCANNER, *LAN_HOSTS)},
}
ROUTERS = ("r1", "r2")
ROLES = ("lan", "scan", *(h.role for h in LAN_HOSTS), "r1", "r2", "t1", "t2", "peer")

# Where a capture can sit: role and interface.
SENSORS = {
    "scanner": ("scan", "eth0", "the scanner's own interface"),
    "lan": ("lan", "br0", "the LAN switch's mirror port (every LAN frame)"),
    "t2": ("t2", "eth0", "target t2's interface, two routers from the LAN"),
    "h1": ("h1", "eth0", "LAN host h1's own interface"),
    "h4": ("h4", "eth0", "LAN host h4's own interface"),
}

SSH_BANNER = "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"
TCP_OPEN, TCP_DROPPED, TCP_REJECTED = (22, 80), 135, 139
UDP_OPEN, UDP_DROPPED, UDP_REJECTED = (53, 161), 137, 139
HTTP_PORT, SSH_PORT = 80, 22
TARGETS = (T1, T2)

_TARGET_NFT = netns.nft_table("fx_target", netns.nft_chain(
    "input", netns.filtered_port_rules(TCP_DROPPED, UDP_DROPPED, TCP_REJECTED, UDP_REJECTED)))  # fmt: skip


def expected_state(technique: str, port: int) -> str:
    """nmap's verdict for `port` of either target under `technique` (syn, connect, udp), from the lab's
    configuration and Linux's rules, not from any capture."""
    if technique == "udp":
        if port in UDP_OPEN:
            return "open"
        return {UDP_DROPPED: "open|filtered", UDP_REJECTED: "filtered"}.get(port, "closed")
    if technique not in ("syn", "connect"):
        raise ValueError(f"no lab rule for technique {technique!r}")
    if port in TCP_OPEN:
        return "open"
    return "filtered" if port in (TCP_DROPPED, TCP_REJECTED) else "closed"


@dataclass(frozen=True, kw_only=True)
class ForensicLab(NamespaceLab):
    """A built forensic lab (module docstring). Valid only inside its `forensic_lab` block."""

    what: ClassVar[str] = "forensic lab"
    roles: ClassVar[tuple[str, ...]] = ROLES
    sensors: ClassVar[dict[str, tuple[str, str]]] = {at: (role, iface) for at, (role, iface, _) in SENSORS.items()}
    settle_s: ClassVar[float] = 0.5
    buffer_kib: ClassVar[int] = 16384

    def start_role(self, role: str, program: str, plan: dict) -> subprocess.Popen:
        """forensic_roles.py `program` with `plan` in `role`'s namespace, until the lab ends (or it is stopped);
        returns once it printed ready."""
        return self.spawn(self.ns(role), sys.executable, str(ROLES_PY), program, json.dumps(plan), ready="ready")

    def run_role(self, role: str, program: str, plan: dict, timeout: float = 120) -> str:
        """forensic_roles.py `program` with `plan` in `role`'s namespace, to its end; returns its stdout."""
        return self.run(self.ns(role), sys.executable, str(ROLES_PY), program, json.dumps(plan),
                        timeout=timeout).stdout

    @contextlib.contextmanager
    def neighbours(self, role: str, entries: list[tuple[str, str]]) -> Iterator[None]:
        """Static neighbour entries (address, MAC) on `role`'s eth0 for the with-block."""
        ip_batch(self.ns(role), [neighbour(a, m, "eth0") for a, m in entries])
        try:
            yield
        finally:
            ip_batch(self.ns(role), [f"neigh del {a} dev eth0" for a, _ in entries])

    def flush_lan_neighbours(self) -> None:
        """Forget what the LAN hosts learnt of each other (their gateway entries are static and stay)."""
        for h in LAN_HOSTS:
            self.run(self.ns(h.role), "ip", "neigh", "flush", "dev", "eth0")

    def build(self) -> None:
        for role in ROLES:
            self.sysctls(self.ns(role), [*TARGET_SYSCTLS, *(["net.ipv4.ip_forward=1"] if role in ROUTERS else [])],
                         each=True)
        lan = self.ns("lan")
        ifaces: dict[str, list[str]] = {role: [] for role in ROLES}
        lines: dict[str, list[str]] = {role: ["link set lo up"] for role in ROLES}
        # The switch: one bridge port per LAN host, named after it; multicast flooded to every port.
        lines["lan"] += ["link add br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0", "link set br0 up"]
        for host in (SCANNER, *LAN_HOSTS, GATEWAY):
            self.veth(lan, host.role, self.ns(host.role), host.iface, mac_b=host.mac)
            lines["lan"] += [f"link set {host.role} master br0", f"link set {host.role} up"]
            ifaces["lan"].append(host.role)
            ifaces[host.role].append(host.iface)
            lines[host.role] += [f"link set {host.iface} up", f"addr add {host.address}/24 brd + dev {host.iface}"]
            if host is not GATEWAY:
                lines[host.role].append(neighbour(GATEWAY.address, GATEWAY.mac, "eth0"))
                lines["r1"].append(neighbour(host.address, host.mac, "lan0"))
        for role_a, if_a, addr_a, mac_a, role_b, if_b, addr_b, mac_b in LINKS:
            self.veth(self.ns(role_a), if_a, self.ns(role_b), if_b, mac_a=mac_a, mac_b=mac_b)
            for role, iface, addr, peer, peer_mac in ((role_a, if_a, addr_a, addr_b, mac_b),
                                                      (role_b, if_b, addr_b, addr_a, mac_a)):  # fmt: skip
                ifaces[role].append(iface)
                lines[role] += [f"link set {iface} up", f"addr add {addr}/24 dev {iface}",
                                neighbour(peer, peer_mac, iface)]  # fmt: skip
        for addr in ipaddress.ip_network(UNUSED_T2_NET):
            lines["r2"].append(neighbour(str(addr), f"02:78:03:00:01:{addr.packed[-1]:02x}", "eth1"))
        for role, routes in ROUTES.items():
            lines[role] += [f"route add {r}" for r in routes]
        for role in ROLES:
            ip_batch(self.ns(role), lines[role])
            if ifaces[role]:
                offload_off(self.ns(role), ifaces[role])  # real checksums in every captured frame
        for target in TARGETS:
            ns = self.ns(target.role)
            self.load_nft(ns, _TARGET_NFT)
            self.serve_banners(ns, SSH_BANNER, [SSH_PORT])
            self.serve_banners(ns, target.role, udp=UDP_OPEN, dns=True)
            self.start_role(target.role, "http", {"port": HTTP_PORT, "title": f"synlens lab {target.role}"})
        expected = {}
        for t in TARGETS:
            a = t.address
            expected |= {f"{a}/22": SSH_BANNER, f"{a}/23": "refused", f"{a}/80": True, f"{a}/u53": "abcd"}
        self.check_answers(self.ns("scan"), _VERIFY_SRC, [t.address for t in TARGETS], expected)


_VERIFY_SRC = r"""
import json, socket, sys, urllib.request
out = {}
for host in sys.argv[1:]:
    with socket.create_connection((host, 22), timeout=3) as s:
        out[f"{host}/22"] = s.recv(64).decode().strip()
    try:
        socket.create_connection((host, 23), timeout=3)
    except ConnectionRefusedError:
        out[f"{host}/23"] = "refused"
    out[f"{host}/80"] = "<title>" in urllib.request.urlopen(f"http://{host}/", timeout=3).read().decode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00", (host, 53))
        out[f"{host}/u53"] = s.recv(512)[:2].hex()
print(json.dumps(out))
"""


def forensic_lab(prefix: str) -> contextlib.AbstractContextManager[ForensicLab]:
    """Build the forensic lab named `prefix` for a with-block, tear it down (processes, then namespaces)
    however the block ends. A stale lab of the same name is removed first."""
    return ForensicLab(prefix=prefix).standing()
