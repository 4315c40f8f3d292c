"""A flat scan-forensics lab: one scanner and two target hosts on one Ethernet segment.

Topology (all in namespaces named ``{prefix}-…``; nothing touches the root namespace)::

    {p}-scan                                   {p}-t1
    br0 10.77.40.1/29  (bridge) -- port1 ----- eth0 10.77.40.2  (the target: open/closed/filtered ports)
                                -- port2 ----- eth0 10.77.40.3  {p}-t2 (second host, for horizontal scans)

The scanner's address sits on the bridge, so ``tcpdump -i br0`` in the scanner namespace
sees every frame the scanner sends or receives, as Ethernet. 10.77.40.4-6 are unused
addresses in the same /29 (host discovery finds them down). Neighbour entries between the
scanner and the two targets are static; the unused addresses still cost ARP requests.

Target 10.77.40.2 (``target``), ``net.ipv4.icmp_ratelimit=0``:

==========  ===========================================================================
TCP open    22, 443 (banner "t1", then close); 80 (HTTP/1.0 server: GET /N -> N bytes)
TCP closed  23, 25 (kernel RST)
TCP drop    135 (nft drop)
TCP reject  139 (nft reject with ICMP admin-prohibited, type 3 code 13)
UDP open    53 (DNS-shaped reply: the query echoed with QR set), 161 (banner "t1")
UDP closed  162, 514 (ICMP port unreachable)
UDP drop    137 (nft drop)
UDP reject  139 (ICMP admin-prohibited)
IP proto    1 ICMP, 6 TCP, 17 UDP answered by the stack; 47 (GRE) -> ICMP protocol
            unreachable; 50 (ESP) nft drop; 51 (AH) nft reject admin-prohibited
==========  ===========================================================================

Target 10.77.40.3 (``target2``): TCP open 22, 8080 (banner "t2"); every other TCP port
closed, every UDP port closed; no firewall.

A scanner behind NAT: ``{p}-in`` (``nat_scanner_ns``, eth0 10.77.41.2/24) routes through the
scanner namespace (nat0 10.77.41.1), which forwards it onto br0. Inside ``lab.behind_nat()``
the scanner namespace masquerades it as 10.77.40.1; ``lab.capture(path, at="target")`` captures
the target's side of the NAT, ``at="inside"`` the scanner's own side, and ``at="gateway"`` the NAT
gateway's own bridge (br0 of the scanner namespace). There each probe shows its translated source
(10.77.40.1: SNAT happens before the frame leaves), but each reply the scanner's inside address: the
bridge's netfilter hook (br_netfilter, ``bridge-nf-call-iptables=1``) undoes the NAT in PREROUTING
before the frame is passed up to br0. The gateway's inside veth (nat0) shows no such mix.

``lab.rate_limited()`` gives the target Linux's default ICMP rate limits back (a short burst,
then about one error a second per peer) and lets at most ``RST_LIMIT`` RSTs a second out; ``lab.lose_first(
"udp", port, size)`` drops the first datagram to a port (a lost packet: only a retry can be answered).

Use::

    from scanlab import scan_lab
    with scan_lab("slsc1") as lab:
        with lab.capture("/tmp/x.pcap"):
            lab.run(lab.scanner_ns, "nmap", "-sS", ...)
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import netns
from netns import TARGET_SYSCTLS, LabError, NamespaceLab, ip_batch, lab_available, neighbour, offload_off

__all__ = ["LabError", "ScanLab", "lab_available", "scan_lab"]

NET = "10.77.40"
PREFIX_LEN = 29
SCANNER_ADDR, TARGET_ADDR, TARGET2_ADDR = f"{NET}.1", f"{NET}.2", f"{NET}.3"
SCANNER_MAC, TARGET_MAC, TARGET2_MAC = "02:77:40:00:00:01", "02:77:40:00:00:02", "02:77:40:00:00:03"
ROLES = ("scan", "t1", "t2", "in")
NFT_TABLE = "slsc_lab"
NAT_NET = "10.77.41"
NAT_INSIDE_ADDR, NAT_SCANNER_ADDR = f"{NAT_NET}.1", f"{NAT_NET}.2"
NAT_INSIDE_MAC, NAT_SCANNER_MAC = "02:77:41:00:00:01", "02:77:41:00:00:02"
NAT_TABLE, RATE_TABLE, LOSS_TABLE = "slsc_nat", "slsc_rate", "slsc_loss"
RST_LIMIT = "5/second burst 5 packets"
# Linux's defaults (Documentation/networking/ip-sysctl.rst): what a target left alone does.
DEFAULT_ICMP_LIMITS = ["net.ipv4.icmp_ratelimit=1000", "net.ipv4.icmp_msgs_per_sec=1000",
                       "net.ipv4.icmp_msgs_burst=50"]  # fmt: skip

TCP_OPEN = (22, 80, 443)
TCP_CLOSED = (23, 25)
TCP_DROPPED = 135
TCP_REJECTED = 139
UDP_OPEN = (53, 161)
UDP_CLOSED = (162, 514)
UDP_DROPPED = 137
UDP_REJECTED = 139
PROTO_ANSWERED = (1, 6, 17)  # ICMP echo reply, TCP RST, UDP port unreachable: all "open" to -sO
PROTO_UNREACHABLE = 47  # no GRE in this kernel: ICMP protocol unreachable
PROTO_DROPPED = 50
PROTO_REJECTED = 51
TARGET2_TCP_OPEN = (22, 8080)
HTTP_PORT = 80
HTTP_BODY_BYTES = 16 * 1024

# HTTP/1.0 server with a deep accept queue (http.server's default of 5 would turn 200
# parallel clients into SYN retransmissions). GET /N returns N bytes (at most 64 KiB),
# any other path HTTP_BODY_BYTES.
_HTTP_SRC = r"""
import http.server, sys
port, default_size = int(sys.argv[1]), int(sys.argv[2])
data = bytes((i * 7 + 13) % 251 for i in range(65536))
class H(http.server.BaseHTTPRequestHandler):
    def body(self):
        name = self.path.strip("/").split("?")[0]
        return data[: min(int(name), len(data))] if name.isdigit() else data[:default_size]
    def do_GET(self):
        body = self.body()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body())))
        self.end_headers()
    def log_message(self, *args):
        pass
class S(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True
    allow_reuse_address = True
srv = S(("", port), H)
print("ready", flush=True)
srv.serve_forever()
"""

# Runs in the scanner namespace after the build: every open port answers, every closed
# one refuses, the filtered ones time out or are refused by ICMP.
_VERIFY_SRC = r"""
import json, socket, sys, urllib.request
t1, t2 = sys.argv[1], sys.argv[2]
out = {}
def tcp(host, port, timeout=1.0):
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(2)
            return "open:" + s.recv(64).decode().strip()
    except ConnectionRefusedError:
        return "closed"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return f"error:{e.errno}"
def udp(host, port, payload=b"hello"):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.connect((host, port))
        try:
            s.send(payload)
            return "open:" + s.recv(512)[:2].hex()
        except ConnectionRefusedError:
            return "closed"
        except socket.timeout:
            return "timeout"
        except OSError as e:
            return f"error:{e.errno}"
for p in (22, 443, 23, 135, 139):
    out[f"tcp/{t1}/{p}"] = tcp(t1, p)
for p in (22, 8080, 80):
    out[f"tcp/{t2}/{p}"] = tcp(t2, p)
out[f"http/{t1}/80"] = len(urllib.request.urlopen(f"http://{t1}/x", timeout=3).read())
for p in (53, 161, 162, 137, 139):
    out[f"udp/{t1}/{p}"] = udp(t1, p, b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" if p == 53 else b"hello")
print(json.dumps(out))
"""


@dataclass(frozen=True, kw_only=True)
class ScanLab(NamespaceLab):
    """A built scan lab (see the module docstring). Valid only inside its `scan_lab` block."""

    scanner_iface: str = "br0"
    nat_scanner_iface: str = "eth0"
    nat_scanner_addr: str = NAT_SCANNER_ADDR
    scanner_addr: str = SCANNER_ADDR
    target: str = TARGET_ADDR
    target2: str = TARGET2_ADDR
    scanner_mac: str = SCANNER_MAC
    target_mac: str = TARGET_MAC
    target2_mac: str = TARGET2_MAC
    subnet: str = f"{NET}.0/{PREFIX_LEN}"
    tcp_open: tuple[int, ...] = TCP_OPEN
    tcp_closed: tuple[int, ...] = TCP_CLOSED
    tcp_dropped: int = TCP_DROPPED
    tcp_rejected: int = TCP_REJECTED
    udp_open: tuple[int, ...] = UDP_OPEN
    udp_closed: tuple[int, ...] = UDP_CLOSED
    udp_dropped: int = UDP_DROPPED
    udp_rejected: int = UDP_REJECTED
    http_port: int = HTTP_PORT
    target2_tcp_open: tuple[int, ...] = TARGET2_TCP_OPEN

    what: ClassVar[str] = "scan lab"
    roles: ClassVar[tuple[str, ...]] = ROLES
    # Captures: "scanner" on the scanner's bridge (both directions, Ethernet), "target" on the target's own
    # interface, "inside" on the NAT'd scanner's, "gateway" on the same bridge as "scanner", named for what it
    # is inside `behind_nat()`: the NAT gateway's own bridge, where probes show the outside address and replies
    # the inside one (module docstring).
    sensors: ClassVar[dict[str, tuple[str, str]]] = {
        "scanner": ("scan", "br0"), "target": ("t1", "eth0"), "inside": ("in", "eth0"), "gateway": ("scan", "br0")}
    settle_s: ClassVar[float] = 0.3
    buffer_kib: ClassVar[int] = 16384

    scanner_ns: ClassVar[str] = netns.RoleNamespace("scan")
    target_ns: ClassVar[str] = netns.RoleNamespace("t1")
    target2_ns: ClassVar[str] = netns.RoleNamespace("t2")
    nat_scanner_ns: ClassVar[str] = netns.RoleNamespace("in")

    @property
    def tcp_ports(self) -> tuple[int, ...]:
        """Every TCP port of the target with a defined behaviour, sorted."""
        return tuple(sorted({*self.tcp_open, *self.tcp_closed, self.tcp_dropped, self.tcp_rejected}))

    @property
    def udp_ports(self) -> tuple[int, ...]:
        return tuple(sorted({*self.udp_open, *self.udp_closed, self.udp_dropped, self.udp_rejected}))

    @property
    def ip_protocols(self) -> tuple[int, ...]:
        return tuple(sorted({*PROTO_ANSWERED, PROTO_UNREACHABLE, PROTO_DROPPED, PROTO_REJECTED}))

    def tcp_behaviour(self, host: str, port: int) -> str:
        """What `host` does with an unsolicited TCP segment to `port`: listen|rst|drop|reject."""
        if host == self.target2:
            return "listen" if port in self.target2_tcp_open else "rst"
        if port in self.tcp_open:
            return "listen"
        if port == self.tcp_dropped:
            return "drop"
        if port == self.tcp_rejected:
            return "reject"
        return "rst"

    def expected_state(self, scan: str, port: int, host: str | None = None) -> str:
        """nmap's verdict for `port` of `host` (default: the target) under scan type `scan`.

        `scan` is nmap's scaninfo type (syn, connect, fin, null, xmas, ack, window, maimon,
        udp, ipproto; "custom_syn" for SYN-interpreted --scanflags that still carry SYN).
        Derived from the lab's configuration and Linux's TCP rules, not from any capture.
        """
        host = host or self.target
        if scan == "udp":
            if host == self.target2:
                return "closed"
            if port in self.udp_open:
                return "open"
            if port == self.udp_dropped:
                return "open|filtered"
            if port == self.udp_rejected:
                return "filtered"
            return "closed"
        if scan == "ipproto":
            if port in PROTO_ANSWERED:
                return "open"
            if port == PROTO_DROPPED:
                return "open|filtered"
            if port == PROTO_REJECTED:
                return "filtered"
            return "closed"
        how = self.tcp_behaviour(host, port)
        if how in ("drop", "reject"):
            # No answer is open|filtered for the scans that expect silence from open ports.
            return (
                "open|filtered" if scan in ("fin", "null", "xmas", "maimon") and how == "drop" else "filtered"
            )
        if scan in ("syn", "connect", "custom_syn"):
            return "open" if how == "listen" else "closed"
        if scan == "ack":
            return "unfiltered"  # Linux answers RST to an ACK on open and closed ports alike
        if scan in ("window", "maimon"):
            return "closed"  # Linux: RST with window 0 (window), RST to FIN/ACK on open ports (maimon)
        if scan in ("fin", "null", "xmas"):
            return "open|filtered" if how == "listen" else "closed"
        raise ValueError(f"unknown scan type {scan!r}")

    @contextlib.contextmanager
    def behind_nat(self) -> Iterator[str]:
        """For the with-block, the scanner namespace masquerades the NAT'd scanner as its own
        address; yields the NAT'd scanner's namespace. Conntrack exists only inside the block."""
        masquerade = f'ip saddr {NAT_NET}.0/24 oifname "{self.scanner_iface}" masquerade'
        chain = netns.nft_chain("postrouting", [masquerade], kind="nat", priority="srcnat")
        with self.nft(self.scanner_ns, netns.nft_table(NAT_TABLE, chain, family="ip")):
            yield self.nat_scanner_ns

    @contextlib.contextmanager
    def rate_limited(self) -> Iterator[None]:
        """For the with-block, the target rate-limits its ICMP errors as Linux does by default,
        and sends at most RST_LIMIT TCP resets (the rest are dropped)."""
        limit = f"tcp flags & rst == rst limit rate over {RST_LIMIT} drop"
        nft = netns.nft_table(RATE_TABLE, netns.nft_chain("output", [limit]))
        self.sysctls(self.target_ns, DEFAULT_ICMP_LIMITS, each=True)
        try:
            with self.nft(self.target_ns, nft):
                yield
        finally:
            self.sysctls(self.target_ns, TARGET_SYSCTLS, each=True)

    @contextlib.contextmanager
    def lose_first(self, protocol: str, port: int, ip_bytes: int) -> Iterator[None]:
        """For the with-block, the target drops the first `protocol` packet to `port` it receives,
        as a lossy path would: only a retry gets through. The rule is a byte quota of one packet
        of `ip_bytes` (IP length), so it holds for packets of ip_bytes/2 .. ip_bytes."""
        lose = f"{protocol} dport {port} quota until {ip_bytes + 1} bytes drop"
        nft = netns.nft_table(LOSS_TABLE, netns.nft_chain("input", [lose], priority="filter - 1"))
        with self.nft(self.target_ns, nft):
            yield

    def build(self) -> None:
        scan, t1, t2, inside = self.scanner_ns, self.target_ns, self.target2_ns, self.nat_scanner_ns
        for ns in self.namespaces:
            self.sysctls(ns, TARGET_SYSCTLS, each=True)
        # Ports of the bridge live in the scanner namespace; the host ends in the targets.
        for port, ns, mac in (("port1", t1, TARGET_MAC), ("port2", t2, TARGET2_MAC)):
            self.veth(scan, port, ns, "eth0", mac_b=mac)
        ip_batch(scan, [
            "link set lo up",
            f"link add br0 address {SCANNER_MAC} type bridge stp_state 0 forward_delay 0",
            "link set port1 master br0",
            "link set port2 master br0",
            "link set port1 up",
            "link set port2 up",
            "link set br0 up",
            f"addr add {SCANNER_ADDR}/{PREFIX_LEN} dev br0",
            neighbour(TARGET_ADDR, TARGET_MAC, "br0"),
            neighbour(TARGET2_ADDR, TARGET2_MAC, "br0"),
        ])  # fmt: skip
        for ns, addr in ((t1, TARGET_ADDR), (t2, TARGET2_ADDR)):
            ip_batch(ns, ["link set lo up", "link set eth0 up", f"addr add {addr}/{PREFIX_LEN} dev eth0",
                          neighbour(SCANNER_ADDR, SCANNER_MAC, "eth0")])  # fmt: skip
            offload_off(ns, ["eth0"])
        # The NAT'd scanner: a host behind the scanner namespace, which routes for it.
        self.veth(scan, "nat0", inside, "eth0", mac_a=NAT_INSIDE_MAC, mac_b=NAT_SCANNER_MAC)
        self.sysctls(scan, ["net.ipv4.ip_forward=1"], each=True)
        ip_batch(scan, ["link set nat0 up", f"addr add {NAT_INSIDE_ADDR}/24 dev nat0",
                        neighbour(NAT_SCANNER_ADDR, NAT_SCANNER_MAC, "nat0")])  # fmt: skip
        ip_batch(inside, ["link set lo up", "link set eth0 up", f"addr add {NAT_SCANNER_ADDR}/24 dev eth0",
                          neighbour(NAT_INSIDE_ADDR, NAT_INSIDE_MAC, "eth0"),
                          f"route add default via {NAT_INSIDE_ADDR}"])  # fmt: skip
        offload_off(inside, ["eth0"])
        # Real checksums in every captured frame (the scanner's own TCP stack included).
        offload_off(scan, ["port1", "port2", "br0", "nat0"])
        self.load_nft(t1, _NFT_RULESET)

        self.serve_banners(t1, "t1", [p for p in TCP_OPEN if p != HTTP_PORT], UDP_OPEN, dns=True)
        self.spawn(t1, sys.executable, "-c", _HTTP_SRC, str(HTTP_PORT), str(HTTP_BODY_BYTES), ready="ready")
        self.serve_banners(t2, "t2", TARGET2_TCP_OPEN)
        a1, a2 = self.target, self.target2
        self.check_answers(scan, _VERIFY_SRC, [a1, a2], {
            f"tcp/{a1}/22": "open:t1", f"tcp/{a1}/443": "open:t1", f"tcp/{a1}/23": "closed",
            f"tcp/{a1}/135": "timeout", f"tcp/{a1}/139": "error:113",  # EHOSTUNREACH from type 3 code 13
            f"tcp/{a2}/22": "open:t2", f"tcp/{a2}/8080": "open:t2", f"tcp/{a2}/80": "closed",
            f"http/{a1}/80": HTTP_BODY_BYTES,
            f"udp/{a1}/53": "open:abcd", f"udp/{a1}/161": "open:" + b"t1".hex(), f"udp/{a1}/162": "closed",
            f"udp/{a1}/137": "timeout", f"udp/{a1}/139": "error:113",
        }, timeout=60)  # fmt: skip


_NFT_RULESET = netns.nft_table(NFT_TABLE, netns.nft_chain("input", [
    *netns.filtered_port_rules(TCP_DROPPED, UDP_DROPPED, TCP_REJECTED, UDP_REJECTED),
    f"meta nfproto ipv4 meta l4proto {PROTO_DROPPED} drop",
    f"meta nfproto ipv4 meta l4proto {PROTO_REJECTED} reject with icmp type admin-prohibited",
]))


def scan_lab(prefix: str) -> contextlib.AbstractContextManager[ScanLab]:
    """Build the scan lab named `prefix` for a with-block, tear it down however the block ends."""
    return ScanLab(prefix=prefix).standing()
