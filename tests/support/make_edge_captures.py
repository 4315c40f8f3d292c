"""Write the hand-built edge-case captures into tests/data/edge/, each with ``<stem>.truth.json`` beside it.

Usage: ``python tests/support/make_edge_captures.py [OUTDIR]`` (default: tests/data/edge next to this file).

Every capture is a tiny scenario: a prober (10.0.0.9 / 2001:db8::9) sends TCP SYNs (some UDP, ICMP echo)
to a target (10.0.0.2 / 2001:db8::2), which answers SYN/ACK (open), RST/ACK (closed), an ICMP error (often
from a router, 10.0.0.1), or UDP. Packets are built byte by byte here (checksums included) and the container
framing (pcap record headers, pcapng blocks) is written with ``struct``, so every format variant is explicit.
Output is deterministic: fixed timestamps, fixed seeds, gzip mtime 0.

Truth file (JSON), read generically by tests/test_edge_captures.py:

``file``, ``description``, ``format``
    the capture's file name, what it exercises, and its container details (for people).
``error``
    null, or a case-insensitive regex the `CaptureError` message must match (the file cannot be read).
``warning``
    null (no `CaptureWarning` allowed), or a regex one `CaptureWarning` message must match.
``packets``
    rows `analyzer.read` must return (records before any damage); null for error files.
``malformed``
    expected ``packets.attrs["malformed"]``. Rule: a packet is malformed when a header the decoder needs
    is invalid or incomplete within the captured bytes *and* the IP length (IPv4 IHL < 5, TCP fixed header
    cut, IPv6 payload length shorter than the TCP header, runt link header). Options or payload cut by
    snaplen are a capture limit, not malformation. ``malformed_frames`` lists which frames.
``frames``
    one object per row, in file order: expected packets-table values keyed by schema column. null means
    the field must be absent (NA). A column left out is not checked (its value is legitimately ambiguous,
    e.g. ports of a TCP header cut after 10 bytes).
``probes``
    one object per probe (transmission group) `analyzer.match` must return, keyed by match column:
    probe_frame (first transmission), ts_ns, src, dst, protocol, sport, dport, seq, flags, transmissions,
    answered, reply_frame, reply_ts_ns, reply_kind, reply_flags, rtt_ns (null: unanswered, or Karn's rule),
    duplicates. Keys left out are not checked. null for files without a scenario.
``unsolicited_replies``
    expected ``matches.attrs["unsolicited_replies"]`` with the default 10 s window.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import random
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PROBER4, TARGET4, ROUTER4 = "10.0.0.9", "10.0.0.2", "10.0.0.1"
PROBER6, TARGET6, ROUTER6 = "2001:db8::9", "2001:db8::2", "2001:db8::1"
MAC_PROBER, MAC_TARGET = 0x02_00_00_00_00_09, 0x02_00_00_00_00_02
T0_NS = 1_700_000_000 * 10**9  # 2023-11-14T22:13:20Z
US, MS, S = 1_000, 1_000_000, 1_000_000_000

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
ETH_IPV4, ETH_IPV6, ETH_ARP, ETH_8021Q, ETH_8021AD = 0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8
LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_DLT_RAW12 = 0, 1, 12
LINKTYPE_RAW, LINKTYPE_SLL, LINKTYPE_IPV4, LINKTYPE_SLL2 = 101, 113, 228, 276

# Every column of analyzer/reading/schema.py except the container ones, which the Record fills in.
PACKET_FIELDS = (
    "eth_src", "eth_dst", "vlan", "ethertype", "ip_version", "src", "dst", "ip_proto", "ttl", "ip_id",
    "ip_len", "fragment", "sport", "dport", "tcp_flags", "seq", "ack", "window", "tcp_options", "mss",
    "wscale", "tsval", "tsecr", "payload_len", "icmp_type", "icmp_code", "icmp_id", "icmp_seq", "q_src",
    "q_dst", "q_proto", "q_ip_id", "q_sport", "q_dport", "q_seq",
)
L4_FIELDS = ("sport", "dport", "tcp_flags", "seq", "ack", "window", "tcp_options", "mss", "wscale", "tsval",
             "tsecr", "payload_len")


def absent() -> dict:
    """Expected fields of a frame that carries nothing decodable: everything NA, not IP."""
    f = dict.fromkeys(PACKET_FIELDS)
    f.update(ip_version=0, fragment=False)
    return f


# ---------------------------------------------------------------------------------------------- packets

def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def addr(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def pseudo_header(src: str, dst: str, proto: int, length: int) -> bytes:
    if ipaddress.ip_address(src).version == 4:
        return addr(src) + addr(dst) + struct.pack("!BBH", 0, proto, length)
    return addr(src) + addr(dst) + struct.pack("!I3xB", length, proto)


@dataclass
class L4:
    """A transport header not yet placed in IP: its protocol, a builder given (src, dst), its fields."""

    proto: int
    build: Callable[[str, str], bytes]
    fields: dict


@dataclass
class Packet:
    """An IP packet (or ARP) as bytes, its ethertype, and the packets-table values it must decode to."""

    data: bytes
    ethertype: int
    fields: dict


TCP_OPT_KIND = {"eol": 0, "nop": 1, "mss": 2, "ws": 3, "sackok": 4, "ts": 8}
NMAP_OPTS = (("mss", 1460),)
LINUX_OPTS = (("mss", 1460), ("sackok",), ("ts", 2_000_000_001, 0), ("nop",), ("ws", 7))


# Protocol payloads (as nmap -sU sends), so dissectors see well-formed DNS / NTP, not garbage.
DNS_QUERY = (struct.pack("!HHHHHH", 0x5EED, 0x0100, 1, 0, 0, 0) + b"\x07example\x03com\x00"
             + struct.pack("!HH", 1, 1))
NTP_CLIENT = bytes([0x23]) + bytes(39) + struct.pack("!II", 3_908_988_800, 0)  # v4 client, xmt time
NTP_SERVER = (bytes([0x24, 2, 6, 0xEC]) + bytes(8) + b"GPS\0" + bytes(24)
              + struct.pack("!II", 3_908_988_800, 1))
UDP_PROBE_PAYLOAD = {53: DNS_QUERY, 123: NTP_CLIENT}
UDP_REPLY_PAYLOAD = {123: NTP_SERVER}


def tcp_options(opts: tuple) -> tuple[bytes, dict]:
    out, kinds = b"", []
    f = {"tcp_options": None, "mss": None, "wscale": None, "tsval": None, "tsecr": None}
    for name, *vals in opts:
        kind = TCP_OPT_KIND[name]
        kinds.append(kind)
        if name in ("eol", "nop"):
            out += bytes([kind])
        elif name == "mss":
            out += struct.pack("!BBH", kind, 4, vals[0])
            f["mss"] = vals[0]
        elif name == "ws":
            out += struct.pack("!BBB", kind, 3, vals[0])
            f["wscale"] = vals[0]
        elif name == "sackok":
            out += struct.pack("!BB", kind, 2)
        elif name == "ts":
            out += struct.pack("!BBII", kind, 10, vals[0], vals[1])
            f["tsval"], f["tsecr"] = vals
    assert len(out) % 4 == 0, "pad options to 32 bits with explicit nops"
    if kinds:
        # schema: option kinds in wire order, one byte each, first option in the top (most significant)
        # byte of the 64 bits, unused low bytes zero: MSS alone is 0x02 << 56
        f["tcp_options"] = int.from_bytes(bytes(kinds[:8]).ljust(8, b"\0"), "big")
    return out, f


def tcp(sport: int, dport: int, flags: int, seq: int, ack: int = 0, *, window: int = 1024,
        opts: tuple = (), payload: bytes = b"") -> L4:
    opt_bytes, fields = tcp_options(opts)

    def build(src: str, dst: str) -> bytes:
        doff = (20 + len(opt_bytes)) // 4
        hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4 | (flags >> 8 & 1), flags & 0xFF,
                          window, 0, 0) + opt_bytes
        c = checksum(pseudo_header(src, dst, 6, len(hdr) + len(payload)) + hdr + payload)
        return hdr[:16] + struct.pack("!H", c) + hdr[18:] + payload

    fields.update(sport=sport, dport=dport, tcp_flags=flags, seq=seq, ack=ack, window=window,
                  payload_len=len(payload))
    return L4(6, build, fields)


def udp(sport: int, dport: int, payload: bytes) -> L4:
    def build(src: str, dst: str) -> bytes:
        hdr = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
        c = checksum(pseudo_header(src, dst, 17, 8 + len(payload)) + hdr + payload) or 0xFFFF
        return hdr[:6] + struct.pack("!H", c) + payload

    return L4(17, build, {"sport": sport, "dport": dport, "payload_len": len(payload)})


def icmp_echo(icmp_type: int, ident: int, seq: int, payload: bytes = b"synlens-echo") -> L4:
    def build(src: str, dst: str) -> bytes:
        body = struct.pack("!BBHHH", icmp_type, 0, 0, ident, seq) + payload
        return body[:2] + struct.pack("!H", checksum(body)) + body[4:]

    return L4(1, build, {"icmp_type": icmp_type, "icmp_code": 0, "icmp_id": ident, "icmp_seq": seq})


def icmp_error(icmp_type: int, code: int, quoted: Packet, quote_l4_bytes: int | None = 8,
               quoted_ttl: int | None = None) -> L4:
    """ICMP (v4) or ICMPv6 error quoting `quoted`: its IP header + `quote_l4_bytes` of transport (None: all).

    `quoted_ttl` rewrites the quoted header's TTL (and its checksum) as a router that decremented it would.
    """
    v6 = quoted.fields["ip_version"] == 6
    data = quoted.data
    hlen = 40 if v6 else (data[0] & 0x0F) * 4
    q = data if quote_l4_bytes is None else data[:hlen + quote_l4_bytes]
    if quoted_ttl is not None and not v6:
        q = bytearray(q)
        q[8], q[10:12] = quoted_ttl, b"\0\0"
        q[10:12] = struct.pack("!H", checksum(bytes(q[:hlen])))
        q = bytes(q)
    proto = 58 if v6 else 1

    def build(src: str, dst: str) -> bytes:
        body = struct.pack("!BBHI", icmp_type, code, 0, 0) + q
        pre = pseudo_header(src, dst, 58, len(body)) if v6 else b""
        return body[:2] + struct.pack("!H", checksum(pre + body)) + body[4:]

    qf = quoted.fields
    quoted_l4 = len(q) - hlen
    fields = {"icmp_type": icmp_type, "icmp_code": code, "icmp_id": None, "icmp_seq": None,
                  "q_src": qf["src"], "q_dst": qf["dst"], "q_proto": qf["ip_proto"], "q_ip_id": qf["ip_id"],
                  "q_sport": qf["sport"] if quoted_l4 >= 4 else None,
                  "q_dport": qf["dport"] if quoted_l4 >= 4 else None,
                  "q_seq": qf["seq"] if quoted_l4 >= 8 and qf["ip_proto"] == 6 else None}
    return L4(proto, build, fields)


def ipv4(src: str, dst: str, l4: L4, *, ttl: int = 64, ip_id: int = 0, df: bool = False) -> Packet:
    body = l4.build(src, dst)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), ip_id, 0x4000 if df else 0, ttl, l4.proto, 0,
                      addr(src), addr(dst))
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    f = absent()
    f.update(ip_version=4, src=src, dst=dst, ip_proto=l4.proto, ttl=ttl, ip_id=ip_id, ip_len=20 + len(body))
    f.update(l4.fields)
    return Packet(hdr + body, ETH_IPV4, f)


def ext_header(next_header: int) -> bytes:
    """An 8-byte hop-by-hop or destination-options header holding one PadN option."""
    return struct.pack("!BBBB4x", next_header, 0, 1, 4)


def ipv6(src: str, dst: str, l4: L4, *, hlim: int = 64, ext: tuple[int, ...] = (),
         plen: int | None = None) -> Packet:
    """IPv6 with extension headers `ext` (0 hop-by-hop, 60 dest options) before the transport header.

    `plen` overrides the payload length field (to make it lie)."""
    body = l4.build(src, dst)
    chain = list(ext) + [l4.proto]
    exts = b"".join(ext_header(chain[i + 1]) for i in range(len(ext)))
    payload = exts + body
    true_plen = len(payload)
    plen = true_plen if plen is None else plen
    hdr = struct.pack("!IHBB16s16s", 6 << 28 | 0x12345, plen, chain[0], hlim, addr(src), addr(dst))
    f = absent()
    f.update(ip_version=6, src=str(ipaddress.ip_address(src)), dst=str(ipaddress.ip_address(dst)),
             ip_proto=l4.proto, ttl=hlim, ip_id=None, ip_len=plen + 40)
    f.update(l4.fields)
    return Packet(hdr + payload, ETH_IPV6, f)


def arp_request(sender_mac: int, sender_ip: str, target_ip: str) -> Packet:
    data = struct.pack("!HHBBH6s4s6s4s", 1, ETH_IPV4, 6, 4, 1, sender_mac.to_bytes(6, "big"), addr(sender_ip),
                       bytes(6), addr(target_ip))
    f = absent()
    f.update(arp_op=1, src=sender_ip, dst=target_ip)  # ARP's protocol addresses stand in src / dst
    return Packet(data, ETH_ARP, f)


# ---------------------------------------------------------------------------------------------- links

@dataclass
class Frame:
    """Link-layer bytes and the link fields of the packets table."""

    data: bytes
    fields: dict
    unchecked: tuple[str, ...] = ()  # packet fields this link leaves ambiguous


def ethernet(pkt: Packet, src: int, dst: int, tags: tuple[tuple[int, int], ...] = (),
             pad: bool = False) -> Frame:
    """Ethernet II with VLAN `tags` ((tpid, tci), outermost first); `pad` to the 60-byte minimum as a NIC
    does on receive (the IP length then says where the packet ends)."""
    hdr = dst.to_bytes(6, "big") + src.to_bytes(6, "big")
    for tpid, tci in tags:
        hdr += struct.pack("!HH", tpid, tci)
    data = hdr + struct.pack("!H", pkt.ethertype) + pkt.data
    if pad and len(data) < 60:
        data += bytes(60 - len(data))
    vlan = tags[0][1] & 0x0FFF if tags else None
    return Frame(data, {"eth_src": src, "eth_dst": dst, "vlan": vlan, "ethertype": pkt.ethertype})


ARPHRD_ETHER, ARPHRD_NONE = 1, 0xFFFE
PKT_HOST, PKT_BROADCAST, PKT_OUTGOING = 0, 1, 4


def sll(pkt: Packet, pkttype: int, mac: int | None, hatype: int = ARPHRD_ETHER) -> Frame:
    """Linux cooked v1: the address is the *sender's* link-layer address (absent on tun-like devices)."""
    alen = 0 if mac is None else 6
    a = b"" if mac is None else mac.to_bytes(6, "big")
    hdr = struct.pack("!HHH8sH", pkttype, hatype, alen, a, pkt.ethertype)
    return Frame(hdr + pkt.data, {"eth_src": mac, "eth_dst": None, "vlan": None, "ethertype": pkt.ethertype})


def sll2(pkt: Packet, pkttype: int, mac: int | None, ifindex: int, hatype: int = ARPHRD_ETHER) -> Frame:
    alen = 0 if mac is None else 6
    a = b"" if mac is None else mac.to_bytes(6, "big")
    hdr = struct.pack("!HHIHBB8s", pkt.ethertype, 0, ifindex, hatype, pkttype, alen, a)
    return Frame(hdr + pkt.data, {"eth_src": mac, "eth_dst": None, "vlan": None, "ethertype": pkt.ethertype})


def raw(pkt: Packet) -> Frame:
    # No link header: the ethertype is only implied by the IP version; a reader may fill it in or not.
    return Frame(pkt.data, {"eth_src": None, "eth_dst": None, "vlan": None}, unchecked=("ethertype",))


def null_loopback(pkt: Packet, af: int, byteorder: str = "<") -> Frame:
    """BSD loopback: 4-byte address family in the *capturing host's* byte order."""
    return Frame(struct.pack(byteorder + "I", af) + pkt.data,
                 {"eth_src": None, "eth_dst": None, "vlan": None}, unchecked=("ethertype",))


# ---------------------------------------------------------------------------------------------- captures

@dataclass
class Record:
    ts_ns: int
    data: bytes
    fields: dict
    caplen: int
    wirelen: int
    iface: int = 0
    linktype: int = LINKTYPE_ETHERNET
    frame: int = 0  # assigned when the capture is finalised
    epb_options: bytes = b""

    def truth(self) -> dict:
        t = {"frame": self.frame, "ts_ns": self.ts_ns, "iface": self.iface, "linktype": self.linktype,
                 "caplen": self.caplen, "wirelen": self.wirelen}
        t.update(self.fields)
        return t


@dataclass
class Probe:
    protocol: str
    src: str
    dst: str
    sport: int | None
    dport: int | None
    seq: int | None
    flags: int | None
    sends: list[Record] = field(default_factory=list)
    reply: Record | None = None
    reply_kind: str | None = None
    reply_flags: int | None = None
    dups: list[Record] = field(default_factory=list)
    karn: bool = False
    packet: Packet | None = None  # the probe as sent
    unchecked: tuple[str, ...] = ()  # truth keys left out (ambiguous by the spec)

    def truth(self, last_frame: int) -> dict | None:
        sends = [r for r in self.sends if r.frame <= last_frame]
        if not sends:
            return None
        reply = self.reply if self.reply is not None and self.reply.frame <= last_frame else None
        if reply is not None:
            # Karn: a reply that follows a retransmission cannot say which send it answers.
            retx_before = [r for r in sends[1:] if r.ts_ns < reply.ts_ns]
            assert bool(retx_before) == self.karn, f"scenario says karn={self.karn} for probe {self.sport}"
        t = {"probe_frame": sends[0].frame, "ts_ns": sends[0].ts_ns, "src": self.src, "dst": self.dst,
             "protocol": self.protocol, "sport": self.sport, "dport": self.dport, "seq": self.seq,
             "flags": self.flags, "transmissions": len(sends), "answered": reply is not None,
             "reply_frame": reply.frame if reply else None, "reply_ts_ns": reply.ts_ns if reply else None,
             "reply_kind": self.reply_kind if reply else None,
             "reply_flags": self.reply_flags if reply else None,
                 "rtt_ns": reply.ts_ns - sends[0].ts_ns if reply and not self.karn else None,
                 "duplicates": sum(r.frame <= last_frame for r in self.dups) if reply else 0}
        for k in self.unchecked:
            t.pop(k)
        return t


class Capture:
    """A scenario: records (sorted by time when finalised unless `keep_order`) and the probes among them."""

    def __init__(self, file: str, description: str, *, linktype: int = LINKTYPE_ETHERNET, endian: str = "<",
                 nanos: bool = False, snaplen: int = 65535, v6: bool = False, seed: int = 1,
                 keep_order: bool = False) -> None:
        self.file, self.description = file, description
        self.linktype, self.endian, self.nanos, self.snaplen = linktype, endian, nanos, snaplen
        self.v6, self.keep_order = v6, keep_order
        self.rng = random.Random(seed)
        self.records: list[Record] = []
        self.probes: list[Probe] = []
        self.unsolicited: list[Record] = []
        self.malformed: list[Record] = []
        self.link: Callable[[Packet, bool], Frame] = self.ethernet_link
        self.link_iface = {True: 0, False: 0}  # outgoing? -> iface id (pcapng)
        self.link_type_of = {True: linktype, False: linktype}

    # links -------------------------------------------------------------------------------------
    @staticmethod
    def ethernet_link(pkt: Packet, outgoing: bool) -> Frame:
        if outgoing:
            return ethernet(pkt, MAC_PROBER, MAC_TARGET)
        return ethernet(pkt, MAC_TARGET, MAC_PROBER, pad=True)

    @property
    def prober(self) -> str:
        return PROBER6 if self.v6 else PROBER4

    @property
    def target(self) -> str:
        return TARGET6 if self.v6 else TARGET4

    def ip(self, src: str, dst: str, l4: L4, **kw) -> Packet:
        if ipaddress.ip_address(src).version == 6:
            return ipv6(src, dst, l4, **kw)
        kw.setdefault("ip_id", self.rng.randrange(1, 65536))
        return ipv4(src, dst, l4, **kw)

    # records -----------------------------------------------------------------------------------
    def add(self, ts_ns: int, pkt: Packet, outgoing: bool, *, frame: Frame | None = None,
            caplen: int | None = None, drop: tuple[str, ...] = (), **override) -> Record:
        fr = frame or self.link(pkt, outgoing)
        fields = dict(pkt.fields)
        fields.update(fr.fields)
        fields.update(override)
        for k in drop + fr.unchecked:
            fields.pop(k, None)
        n = len(fr.data)
        rec = Record(ts_ns, fr.data, fields, caplen=min(n, caplen or n, self.snaplen), wirelen=n,
                     iface=self.link_iface[outgoing], linktype=self.link_type_of[outgoing])
        self.records.append(rec)
        return rec

    def syn(self, ts_ns: int, dport: int, sport: int, *, seq: int | None = None, opts: tuple = NMAP_OPTS,
            window: int = 1024, dst: str | None = None, **ipkw) -> Probe:
        seq = self.rng.randrange(1 << 32) if seq is None else seq
        p = Probe("tcp", self.prober, dst or self.target, sport, dport, seq, SYN)
        p.packet = self.ip(p.src, p.dst, tcp(sport, dport, SYN, seq, window=window, opts=opts), **ipkw)
        self.probes.append(p)
        self.send(p, ts_ns)
        return p

    def udp_probe(self, ts_ns: int, dport: int, sport: int) -> Probe:
        p = Probe("udp", self.prober, self.target, sport, dport, None, None)
        p.packet = self.ip(p.src, p.dst, udp(sport, dport, UDP_PROBE_PAYLOAD[dport]))
        self.probes.append(p)
        self.send(p, ts_ns)
        return p

    def echo_probe(self, ts_ns: int, ident: int, seq: int) -> Probe:
        p = Probe("icmp", self.prober, self.target, None, None, None, None,
                  unchecked=("sport", "dport", "seq", "flags"))
        p.ident, p.icmp_seq = ident, seq
        p.packet = self.ip(p.src, p.dst, icmp_echo(8, ident, seq))
        self.probes.append(p)
        self.send(p, ts_ns)
        return p

    def send(self, p: Probe, ts_ns: int) -> Record:
        rec = self.add(ts_ns, p.packet, True)
        p.sends.append(rec)
        return rec

    def reply_packet(self, p: Probe, kind: str, *, src: str | None = None, code: int | None = None,
                     quote: int | None = 8, quoted_ttl: int | None = None) -> tuple[Packet, int | None]:
        if kind == "syn-ack":
            l4 = tcp(p.dport, p.sport, SYN | ACK, self.rng.randrange(1 << 32), (p.seq + 1) & 0xFFFFFFFF,
                     window=64240, opts=NMAP_OPTS)
            return self.ip(p.dst, p.src, l4), SYN | ACK
        if kind == "rst":
            l4 = tcp(p.dport, p.sport, RST | ACK, 0, (p.seq + 1) & 0xFFFFFFFF, window=0)
            return self.ip(p.dst, p.src, l4), RST | ACK
        if kind == "udp":
            return self.ip(p.dst, p.src, udp(p.dport, p.sport, UDP_REPLY_PAYLOAD[p.dport])), None
        if kind == "echo-reply":
            return self.ip(p.dst, p.src, icmp_echo(0, p.ident, p.icmp_seq)), None
        if kind == "icmp":
            v6 = self.v6
            typ = 1 if v6 else 3
            l4 = icmp_error(typ, code, p.packet, quote, quoted_ttl)
            return self.ip(src or p.dst, p.src, l4), None
        raise ValueError(kind)

    def answer(self, p: Probe, ts_ns: int, kind: str, **kw) -> Record:
        """The target's reply to probe `p`; a second answer to the same probe is a duplicate."""
        pkt, flags = self.reply_packet(p, kind, **kw)
        rec = self.add(ts_ns, pkt, False)
        if p.reply is None:
            p.reply, p.reply_kind, p.reply_flags = rec, kind, flags
        else:
            p.dups.append(rec)
        return rec

    def stray(self, ts_ns: int, p: Probe, kind: str, **kw) -> Record:
        """A reply the matcher must count as unsolicited (its probe is absent or out of the window)."""
        pkt, _ = self.reply_packet(p, kind, **kw)
        rec = self.add(ts_ns, pkt, False)
        self.unsolicited.append(rec)
        return rec

    def ghost(self, dport: int, sport: int, seq: int | None = None) -> Probe:
        """A probe that is not in the capture (only its replies are)."""
        seq = self.rng.randrange(1 << 32) if seq is None else seq
        p = Probe("tcp", self.prober, self.target, sport, dport, seq, SYN)
        p.packet = self.ip(p.src, p.dst, tcp(sport, dport, SYN, seq, opts=NMAP_OPTS))
        return p

    def finalise(self) -> None:
        if not self.keep_order:
            self.records.sort(key=lambda r: r.ts_ns)  # stable: equal times keep insertion order
        for i, r in enumerate(self.records, 1):
            r.frame = i

    # output ------------------------------------------------------------------------------------
    def truth(self, last_frame: int | None = None, *, warning: str | None = None) -> dict:
        last = len(self.records) if last_frame is None else last_frame
        probes = [t for p in self.probes if (t := p.truth(last)) is not None]
        probes.sort(key=lambda t: t["probe_frame"])
        malformed = [r.frame for r in self.malformed if r.frame <= last]
        return {
            "file": self.file, "description": self.description, "format": self.format(), "error": None,
            "warning": warning,
            "packets": last, "malformed": len(malformed), "malformed_frames": malformed,
            "frames": [r.truth() for r in self.records[:last]], "probes": probes,
            "unsolicited_replies": sum(r.frame <= last for r in self.unsolicited)}

    def format(self) -> dict:
        return {"container": "pcap", "byte_order": "little" if self.endian == "<" else "big",
                "ts_resolution": "ns" if self.nanos else "us", "linktype": self.linktype,
                "snaplen": self.snaplen}

    def pcap_bytes(self) -> bytes:
        magic = 0xA1B23C4D if self.nanos else 0xA1B2C3D4
        out = [struct.pack(self.endian + "IHHiIII", magic, 2, 4, 0, 0, self.snaplen, self.linktype)]
        for r in self.records:
            sec, frac = divmod(r.ts_ns, S)
            if not self.nanos:
                assert frac % US == 0, f"{self.file}: µs pcap cannot hold {r.ts_ns}"
                frac //= US
            out.append(struct.pack(self.endian + "IIII", sec, frac, r.caplen, r.wirelen) + r.data[:r.caplen])
        return b"".join(out)


def pcap_record_offsets(cap: Capture) -> list[int]:
    """Byte offset of each record header in `cap.pcap_bytes()`."""
    offs, pos = [], 24
    for r in cap.records:
        offs.append(pos)
        pos += 16 + r.caplen
    return offs


# ---------------------------------------------------------------------------------------------- pcapng

def ng_options(endian: str, opts: list[tuple[int, bytes]]) -> bytes:
    if not opts:
        return b""
    out = b""
    for code, value in opts:
        out += struct.pack(endian + "HH", code, len(value)) + value + bytes(-len(value) % 4)
    return out + struct.pack(endian + "HH", 0, 0)


def ng_block(endian: str, btype: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    n = 12 + len(body)
    return struct.pack(endian + "II", btype, n) + body + struct.pack(endian + "I", n)


def ng_shb(endian: str, opts: list[tuple[int, bytes]] = ()) -> bytes:
    body = struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1) + ng_options(endian, list(opts))
    return ng_block(endian, 0x0A0D0D0A, body)


def ng_idb(endian: str, linktype: int, snaplen: int, opts: list[tuple[int, bytes]]) -> bytes:
    return ng_block(endian, 1, struct.pack(endian + "HHI", linktype, 0, snaplen) + ng_options(endian, opts))


def ng_epb(endian: str, r: Record, units_per_s: int) -> bytes:
    ts = r.ts_ns * units_per_s // S
    assert ts * S // units_per_s == r.ts_ns, f"ts {r.ts_ns} not representable at {units_per_s}/s"
    body = struct.pack(endian + "IIIII", r.iface, ts >> 32, ts & 0xFFFFFFFF, r.caplen, r.wirelen)
    body += r.data[:r.caplen] + bytes(-r.caplen % 4) + r.epb_options
    return ng_block(endian, 6, body)


# ---------------------------------------------------------------------------------------------- scenarios

def basic() -> Capture:
    cap = Capture("basic.pcap", "µs little-endian pcap, Ethernet: 3 ports × 3 SYN probes, all answered "
                  "(22, 80 SYN/ACK; 443 RST/ACK), replies padded to 60 bytes; port-80 replies arrive after "
                  "the next probe was sent", seed=11)
    ports = ((22, "syn-ack"), (80, "syn-ack"), (443, "rst"))
    rtt_us = ((150, 1500, 95), (210, 1320, 120), (180, 2410, 101))
    t = T0_NS
    for rnd in range(3):
        for i, (port, kind) in enumerate(ports):
            p = cap.syn(t, port, 40000 + 3 * rnd + i)
            cap.answer(p, t + rtt_us[rnd][i] * US, kind)
            t += MS
    return cap


def ns_bigendian() -> Capture:
    cap = Capture("ns_bigendian.pcap", "nanosecond-magic pcap (0xa1b23c4d) written big-endian; RTTs with "
                  "sub-microsecond parts", endian=">", nanos=True, seed=12)
    t = T0_NS + 7
    for i, (port, kind, rtt) in enumerate(((22, "syn-ack", 123_456), (80, "rst", 98_765),
                                           (22, "syn-ack", 250_001), (80, "rst", 1_000_999))):
        p = cap.syn(t, port, 41000 + i)
        cap.answer(p, t + rtt, kind)
        t += 3 * MS + 333
    return cap


def retransmit() -> Capture:
    cap = Capture("retransmit.pcap", "retransmitted probes: A resent before its reply (Karn: answered, no "
                  "RTT); B answered before its resend (RTT from the first send, the resend's reply is a "
                  "duplicate); C sent three times, never answered; D plain", seed=13)
    t = T0_NS
    a = cap.syn(t, 22, 42000)
    cap.send(a, t + 1 * S)
    cap.answer(a, t + 1 * S + 300 * US, "syn-ack")
    a.karn = True
    b = cap.syn(t + 10 * MS, 80, 42001)
    cap.answer(b, t + 10 * MS + 200 * US, "syn-ack")
    cap.send(b, t + 1 * S + 10 * MS)
    cap.answer(b, t + 1 * S + 10 * MS + 180 * US, "syn-ack")
    c = cap.syn(t + 20 * MS, 8080, 42002)
    cap.send(c, t + 1 * S + 20 * MS)
    cap.send(c, t + 3 * S + 20 * MS)
    d = cap.syn(t + 30 * MS, 443, 42003)
    cap.answer(d, t + 30 * MS + 140 * US, "rst")
    return cap


def lost() -> Capture:
    cap = Capture("lost.pcap", "unanswered probes; a reply 30 s after its probe (beyond the 10 s window: "
                  "probe lost, reply unsolicited); a reply 9.5 s after its probe (inside the window)",
                  seed=14)
    t = T0_NS
    p = cap.syn(t, 22, 43000)
    cap.answer(p, t + 300 * US, "syn-ack")
    cap.syn(t + 1 * MS, 23, 43001)
    cap.syn(t + 2 * MS, 25, 43002)
    late = cap.syn(t + 3 * MS, 80, 43003)
    cap.stray(t + 3 * MS + 30 * S, late, "syn-ack")
    slow = cap.syn(t + 4 * MS, 443, 43004)
    cap.answer(slow, t + 4 * MS + 9_500 * MS, "rst")
    return cap


def duplicates() -> Capture:
    cap = Capture("duplicates.pcap", "a probe answered twice (the target retransmits its SYN/ACK after 1 s); "
                  "a SYN/ACK whose probe is not in the capture (unsolicited)", seed=15)
    t = T0_NS
    p = cap.syn(t, 22, 44000)
    cap.answer(p, t + 250 * US, "syn-ack")
    cap.answer(p, t + 250 * US + 1 * S, "syn-ack")
    q = cap.syn(t + 1 * MS, 80, 44001)
    cap.answer(q, t + 1 * MS + 310 * US, "syn-ack")
    cap.stray(t + 2 * MS, cap.ghost(8080, 44999), "syn-ack")
    r = cap.syn(t + 3 * MS, 443, 44002)
    cap.answer(r, t + 3 * MS + 90 * US, "rst")
    return cap


def reused_port() -> Capture:
    cap = Capture("reused_port.pcap", "every probe from source port 53 (nmap -g 53) to the same ports with "
                  "different seqs, adjacent seqs (1000, 1001) and one at 0xffffffff (reply acks 0); replies "
                  "out of order: each must pair by ack == seq+1", seed=16)
    t = T0_NS
    p1 = cap.syn(t, 80, 53, seq=1000)
    p2 = cap.syn(t + 100 * US, 80, 53, seq=1001)
    p3 = cap.syn(t + 200 * US, 80, 53, seq=0xFFFFFFFF)
    cap.answer(p2, t + 350 * US, "syn-ack")
    cap.answer(p3, t + 400 * US, "syn-ack")
    cap.answer(p1, t + 500 * US, "syn-ack")
    p4 = cap.syn(t + 1 * MS, 22, 53, seq=5000)
    p5 = cap.syn(t + 1 * MS + 50 * US, 22, 53, seq=7000)
    cap.answer(p5, t + 1 * MS + 120 * US, "rst")
    cap.answer(p4, t + 1 * MS + 160 * US, "rst")
    return cap


def icmp_quoted() -> Capture:
    cap = Capture("icmp_quoted.pcap", "SYNs answered by ICMP 3/13 (from the target quoting IP+8 bytes; from "
                  "router 10.0.0.1 quoting the whole probe with the TTL it saw, 63); UDP answered by ICMP "
                  "3/3; UDP answered by UDP; an ICMP 3/13 quoting a probe not in the capture (unsolicited)",
                  seed=17)
    t = T0_NS
    a = cap.syn(t, 22, 45000)
    cap.answer(a, t + 400 * US, "icmp", code=13)
    b = cap.syn(t + 1 * MS, 3389, 45001)
    cap.answer(b, t + 1 * MS + 650 * US, "icmp", code=13, src=ROUTER4, quote=None, quoted_ttl=63)
    c = cap.udp_probe(t + 2 * MS, 53, 45002)
    cap.answer(c, t + 2 * MS + 330 * US, "icmp", code=3)
    d = cap.udp_probe(t + 3 * MS, 123, 45003)
    cap.answer(d, t + 3 * MS + 275 * US, "udp")
    cap.stray(t + 4 * MS, cap.ghost(9999, 45999), "icmp", code=13)
    return cap


def icmp_echo_capture() -> Capture:
    cap = Capture("icmp_echo.pcap", "ICMP echo probes: one answered, one not (match's sport/dport/seq for "
                  "echo are not checked)", seed=18)
    t = T0_NS
    a = cap.echo_probe(t, 0x1234, 1)
    cap.answer(a, t + 512 * US, "echo-reply")
    cap.echo_probe(t + 1 * S, 0x1234, 2)
    return cap


def ipv6_capture() -> Capture:
    cap = Capture("ipv6.pcap", "IPv6 SYN probes over Ethernet: plain (SYN/ACK); behind a hop-by-hop + "
                  "destination-options chain (RST/ACK); answered by ICMPv6 1/1 from a router quoting the "
                  "whole probe; UDP answered by ICMPv6 1/4", v6=True, seed=19)
    t = T0_NS
    a = cap.syn(t, 22, 46000, opts=LINUX_OPTS, window=64800)
    cap.answer(a, t + 211 * US, "syn-ack")
    b = cap.syn(t + 1 * MS, 80, 46001, ext=(0, 60))
    cap.answer(b, t + 1 * MS + 190 * US, "rst")
    c = cap.syn(t + 2 * MS, 443, 46002)
    cap.answer(c, t + 2 * MS + 733 * US, "icmp", code=1, src=ROUTER6, quote=None)
    d = cap.udp_probe(t + 3 * MS, 53, 46003)
    cap.answer(d, t + 3 * MS + 260 * US, "icmp", code=4, quote=None)
    return cap


def vlan() -> Capture:
    cap = Capture("vlan.pcap", "Ethernet 802.1Q: VLAN 100 (reply with PCP 5 in the TCI), an ARP in VLAN "
                  "100, a QinQ pair (outer 802.1ad 200, inner 802.1Q 100: vlan is the outer 200), and a "
                  "priority-tagged probe (VLAN id 0, PCP 3) with an untagged reply", seed=20)
    q100, q100_pcp5 = ((ETH_8021Q, 100),), ((ETH_8021Q, 0xA000 | 100),)
    qinq = ((ETH_8021AD, 200), (ETH_8021Q, 100))
    prio = ((ETH_8021Q, 0x6000),)
    t = T0_NS
    a = cap.syn(t, 22, 47000)
    a.sends[0] = _relink(cap, a.sends[0], a.packet, True, q100)
    ra = cap.answer(a, t + 150 * US, "syn-ack")
    _relink_reply(cap, a, ra, q100_pcp5)
    arp = arp_request(MAC_PROBER, PROBER4, TARGET4)
    cap.add(t + 500 * US, arp, True, frame=ethernet(arp, MAC_PROBER, 0xFFFFFFFFFFFF, q100))
    b = cap.syn(t + 1 * MS, 80, 47001)
    b.sends[0] = _relink(cap, b.sends[0], b.packet, True, qinq)
    rb = cap.answer(b, t + 1 * MS + 170 * US, "rst")
    _relink_reply(cap, b, rb, qinq)
    c = cap.syn(t + 2 * MS, 443, 47002)
    c.sends[0] = _relink(cap, c.sends[0], c.packet, True, prio)
    cap.answer(c, t + 2 * MS + 99 * US, "rst")
    return cap


def _relink(cap: Capture, rec: Record, pkt: Packet, outgoing: bool, tags: tuple) -> Record:
    src, dst = (MAC_PROBER, MAC_TARGET) if outgoing else (MAC_TARGET, MAC_PROBER)
    fr = ethernet(pkt, src, dst, tags, pad=not outgoing)
    rec.data, rec.caplen, rec.wirelen = fr.data, len(fr.data), len(fr.data)
    rec.fields.update(fr.fields)
    return rec


def _relink_reply(cap: Capture, p: Probe, rec: Record, tags: tuple) -> None:
    # re-wrap the reply just added (its packet bytes start after the 14-byte Ethernet header)
    eth_type = struct.unpack("!H", rec.data[12:14])[0]
    ip_len = rec.fields["ip_len"]
    pkt = Packet(rec.data[14:14 + ip_len], eth_type, {})
    _relink(cap, rec, pkt, False, tags)


def sll_capture(version: int) -> Capture:
    lt = LINKTYPE_SLL if version == 1 else LINKTYPE_SLL2
    name = "sll.pcap" if version == 1 else "sll2.pcap"
    cap = Capture(name, f"Linux cooked v{version} (linktype {lt}): outgoing SYNs (address = prober MAC), "
                  "incoming replies (address = target MAC), an ARP broadcast, an IPv6 probe/reply pair, "
                  "and a reply on a tun-like device (ARPHRD_NONE, no address)", linktype=lt,
                  seed=21 + version)

    def link(pkt: Packet, outgoing: bool, hatype: int = ARPHRD_ETHER) -> Frame:
        mac = None if hatype == ARPHRD_NONE else (MAC_PROBER if outgoing else MAC_TARGET)
        kind = PKT_OUTGOING if outgoing else PKT_HOST
        if version == 1:
            return sll(pkt, kind, mac, hatype)
        return sll2(pkt, kind, mac, 2 if hatype == ARPHRD_ETHER else 7, hatype)

    cap.link = link
    t = T0_NS
    a = cap.syn(t, 22, 48000)
    cap.answer(a, t + 180 * US, "syn-ack")
    arp = arp_request(MAC_TARGET, TARGET4, PROBER4)
    fr = sll(arp, PKT_BROADCAST, MAC_TARGET) if version == 1 else sll2(arp, PKT_BROADCAST, MAC_TARGET, 2)
    cap.add(t + 300 * US, arp, False, frame=fr)
    b = cap.syn(t + 1 * MS, 80, 48001)
    pkt, flags = cap.reply_packet(b, "rst")
    rec = cap.add(t + 1 * MS + 222 * US, pkt, False, frame=link(pkt, False, ARPHRD_NONE))
    b.reply, b.reply_kind, b.reply_flags = rec, "rst", flags
    cap.v6 = True
    c = cap.syn(t + 2 * MS, 443, 48002)
    cap.answer(c, t + 2 * MS + 205 * US, "syn-ack")
    cap.v6 = False
    return cap


def raw_capture(linktype: int) -> Capture:
    names = {LINKTYPE_RAW: "raw.pcap", LINKTYPE_IPV4: "raw_ipv4.pcap", LINKTYPE_DLT_RAW12: "raw_dlt12.pcap"}
    v6_too = linktype == LINKTYPE_RAW
    cap = Capture(names[linktype], f"raw IP, linktype {linktype} (no link header)"
                  + (": IPv4 and IPv6 mixed, version from the first nibble" if v6_too else ", IPv4 only"),
                  linktype=linktype, seed=30 + linktype)
    cap.link = lambda pkt, outgoing: raw(pkt)
    t = T0_NS
    a = cap.syn(t, 22, 49000)
    cap.answer(a, t + 140 * US, "syn-ack")
    b = cap.syn(t + 1 * MS, 80, 49001)
    cap.answer(b, t + 1 * MS + 160 * US, "rst")
    if v6_too:
        cap.v6 = True
        c = cap.syn(t + 2 * MS, 22, 49002)
        cap.answer(c, t + 2 * MS + 175 * US, "syn-ack")
        cap.v6 = False
    return cap


def loopback() -> Capture:
    cap = Capture("loopback.pcap", "BSD loopback (linktype 0), little-endian file: AF_INET = 2; IPv6 with "
                  "the three BSD AF_INET6 values 24 (Net/OpenBSD), 28 (FreeBSD), 30 (macOS); one IPv4 frame "
                  "whose AF is in the other byte order (00 00 00 02), which readers must also accept",
                  linktype=LINKTYPE_NULL, seed=40)
    cap.link = lambda pkt, outgoing: null_loopback(pkt, 2 if pkt.ethertype == ETH_IPV4 else 30)
    t = T0_NS
    a = cap.syn(t, 22, 50000)
    cap.answer(a, t + 33 * US, "syn-ack")
    b = cap.syn(t + 1 * MS, 80, 50001)
    pkt, flags = cap.reply_packet(b, "rst")
    rec = cap.add(t + 1 * MS + 41 * US, pkt, False, frame=null_loopback(pkt, 2, ">"))
    b.reply, b.reply_kind, b.reply_flags = rec, "rst", flags
    cap.v6 = True
    for i, af in enumerate((24, 28, 30)):
        p = cap.syn(t + (2 + i) * MS, 443, 50002 + i)
        cap.records[-1].data = null_loopback(p.packet, af).data
        r = cap.answer(p, t + (2 + i) * MS + 27 * US, "rst")
        r.data = null_loopback(Packet(r.data[4:], ETH_IPV6, {}), af).data
    cap.v6 = False
    return cap


def unordered() -> Capture:
    cap = Capture("unordered.pcap", "records not in time order (two captures concatenated, replies side "
                  "first, as mergecap -a does): frame numbers follow the file, pairing follows timestamps",
                  keep_order=True, seed=41)
    t = T0_NS
    probes = [cap.syn(t + i * MS, port, 51000 + i) for i, port in enumerate((22, 80, 443))]
    sends = cap.records[:]
    cap.records.clear()
    for p, (kind, rtt) in zip(probes, (("syn-ack", 120), ("syn-ack", 340), ("rst", 88))):
        cap.answer(p, p.sends[0].ts_ns + rtt * US, kind)
    cap.records.extend(sends)
    return cap


def prober_rst() -> Capture:
    cap = Capture("prober_rst.pcap", "the prober's own kernel answers each SYN/ACK with a bare RST (flags R, "
                  "seq = probe seq + 1, ack 0), as with raw-socket scanners: those are neither probes nor "
                  "unsolicited replies", seed=42)
    t = T0_NS
    for i, (port, kind) in enumerate(((22, "syn-ack"), (80, "syn-ack"), (443, "rst"))):
        p = cap.syn(t + i * MS, port, 52000 + i)
        cap.answer(p, t + i * MS + 200 * US, kind)
        if kind == "syn-ack":
            rst = cap.ip(p.src, p.dst, tcp(p.sport, p.dport, RST, (p.seq + 1) & 0xFFFFFFFF, 0, window=0))
            cap.add(t + i * MS + 230 * US, rst, True)
    return cap


# unicornscan's SYN probe as its source builds it (github.com/dneufeld/unicornscan, 0.4.x), default config:
# etc/unicorn.conf.in sets "fingerprint: 1", whose template (src/scan_progs/init_packet.c) is TTL 64, DF, window
# 16384 and MSS (MTU - 64), NOP, NOP, SACKOK, NOP, WS 0, NOP, NOP, TS (one random TSval per run, TSecr 0);
# IP ID random per packet and source port random in 4096-65534 per probe (src/scan_progs/send_packet.c);
# seq = syn_key ^ (target s_addr ^ ((dport << 16) + sport)) (tcphash.h, TCPHASHTRACK), s_addr read as a
# little-endian host integer, syn_key one random value per run (scanopts.c).
UNICORNSCAN_KEY = 0x5EED1E55
UNICORNSCAN_OPTS_TSVAL = 0x1C0FFEE5
UNICORNSCAN_PORTS = {22: "syn-ack", 80: "syn-ack", 23: "rst", 25: "rst", 443: "rst", 8080: "rst",
                     135: None, 3306: None}  # None: dropped by a firewall, no answer


def unicornscan_seq(dst: str, dport: int, sport: int, key: int = UNICORNSCAN_KEY, byteorder: str = "little") -> int:
    """TCPHASHTRACK as unicornscan computes it on a host of `byteorder`."""
    host_addr = int.from_bytes(addr(dst), byteorder)
    return (key ^ (host_addr ^ ((dport << 16) + sport))) & 0xFFFFFFFF


def unicornscan_capture() -> Capture:
    cap = Capture("unicornscan.pcap", "unicornscan -mT 10.0.0.2:22,23,25,80,135,443,3306,8080 with its "
                  "default -W 1 template (TTL 64, DF, window 16384, MSS 1436 + SACK/WS/TS layout), random IP "
                  "IDs and source ports, seq = its per-run key XOR address XOR ports; ports in shuffled order "
                  "at 300 pps. A Linux target: SYN/ACK (22, 80), RST/ACK (23, 25, 443, 8080), nothing (135, "
                  "3306); the scanner's kernel resets each SYN/ACK", seed=45)
    opts = (("mss", 1436), ("nop",), ("nop",), ("sackok",), ("nop",), ("ws", 0), ("nop",), ("nop",),
            ("ts", UNICORNSCAN_OPTS_TSVAL, 0))
    # Linux answers the SACK, TS and WS the probe offered, echoing its TSval.
    synack_opts = (("mss", 1460), ("sackok",), ("ts", 3_000_000_001, UNICORNSCAN_OPTS_TSVAL), ("nop",), ("ws", 7))
    ports = list(UNICORNSCAN_PORTS)
    cap.rng.shuffle(ports)
    t = T0_NS
    for port in ports:
        sport = cap.rng.randrange(0xFFFF)
        sport += 4096 if sport < 4096 else 0
        p = cap.syn(t, port, sport, seq=unicornscan_seq(cap.target, port, sport), opts=opts, window=16384,
                    ttl=64, df=True)
        kind = UNICORNSCAN_PORTS[port]
        rtt = (180 + cap.rng.randrange(80)) * US
        if kind == "syn-ack":
            pkt = cap.ip(p.dst, p.src, tcp(p.dport, p.sport, SYN | ACK, cap.rng.randrange(1 << 32), p.seq + 1,
                                           window=65160, opts=synack_opts), ip_id=0, df=True)
            rec = cap.add(t + rtt, pkt, False)
            p.reply, p.reply_kind, p.reply_flags = rec, kind, SYN | ACK
            rst = cap.ip(p.src, p.dst, tcp(p.sport, p.dport, RST, (p.seq + 1) & 0xFFFFFFFF, 0, window=0),
                         ip_id=0, df=True)
            cap.add(t + rtt + 30 * US, rst, True)
        elif kind == "rst":
            pkt = cap.ip(p.dst, p.src, tcp(p.dport, p.sport, RST | ACK, 0, (p.seq + 1) & 0xFFFFFFFF, window=0),
                         ip_id=0, df=True)
            rec = cap.add(t + rtt, pkt, False)
            p.reply, p.reply_kind, p.reply_flags = rec, kind, RST | ACK
        t += 3333 * US
    return cap


def snaplen_capture() -> Capture:
    cap = Capture("snaplen.pcap", "file snaplen 64 (like tcpdump -s 64): SYNs and SYN/ACKs carry Linux "
                  "options (74 bytes) and are cut inside the timestamp option; the fixed TCP header is "
                  "whole, so they decode and pair (MSS decoded, later options absent); not malformed",
                  snaplen=64, seed=43)
    t = T0_NS
    cut = {"tsval": None, "tsecr": None, "wscale": None}
    for i, (port, kind) in enumerate(((22, "syn-ack"), (443, "rst"), (80, "syn-ack"))):
        p = cap.syn(t + i * MS, port, 53000 + i, opts=LINUX_OPTS, window=64240)
        rec = p.sends[0]
        rec.fields.update(cut)
        rec.fields.pop("tcp_options")
        pkt, flags = cap.reply_packet(p, kind)
        if kind == "syn-ack":
            pkt = cap.ip(p.dst, p.src, tcp(p.dport, p.sport, SYN | ACK, cap.rng.randrange(1 << 32),
                                           p.seq + 1, window=65160, opts=LINUX_OPTS))
        r = cap.add(t + i * MS + (150 + 10 * i) * US, pkt, False)
        if kind == "syn-ack":
            r.fields.update(cut)
            r.fields.pop("tcp_options")
        p.reply, p.reply_kind, p.reply_flags = r, kind, flags
    return cap


def malformed() -> Capture:
    cap = Capture("malformed.pcap", "good probes/replies interleaved with malformed packets in good records: "
                  "IPv4 IHL 4; TCP header cut after 10 bytes by the record's caplen; IPv6 payload length 8 "
                  "(< the 24-byte TCP header that follows); a 10-byte runt Ethernet frame. The good probes "
                  "(22, 443) still pair", seed=44)
    t = T0_NS
    a = cap.syn(t, 22, 54000)
    cap.answer(a, t + 200 * US, "syn-ack")
    # IPv4 with IHL = 4: no IP/L4 field can be trusted; L4 must be absent.
    pkt = cap.ip(PROBER4, TARGET4, tcp(54001, 80, SYN, 1111, opts=NMAP_OPTS))
    bad = bytearray(pkt.data)
    bad[0] = 0x44
    l4_absent = dict.fromkeys(L4_FIELDS)
    r = cap.add(t + 1 * MS, Packet(bytes(bad), ETH_IPV4, pkt.fields), True,
                drop=("ip_version", "src", "dst", "ip_proto", "ttl", "ip_id", "ip_len", "fragment"),
                **l4_absent)
    cap.malformed.append(r)
    # TCP cut after 10 bytes (ports, seq, half the ack) by the record caplen: flags unknown.
    pkt = cap.ip(PROBER4, TARGET4, tcp(54002, 80, SYN, 2222, opts=NMAP_OPTS))
    r = cap.add(t + 2 * MS, pkt, True, caplen=14 + 20 + 10, drop=("sport", "dport", "seq", "payload_len"),
                **{k: None for k in L4_FIELDS if k not in ("sport", "dport", "seq", "payload_len")})
    cap.malformed.append(r)
    # IPv6 whose payload length (8) is shorter than the TCP header that follows.
    pkt = ipv6(PROBER6, TARGET6, tcp(54003, 80, SYN, 3333, opts=NMAP_OPTS), plen=8)
    r = cap.add(t + 3 * MS, pkt, True, drop=("sport", "dport", "seq", "payload_len"),
                **{k: None for k in L4_FIELDS if k not in ("sport", "dport", "seq", "payload_len")})
    cap.malformed.append(r)
    # A 10-byte Ethernet frame: not even a full link header.
    runt = Frame(MAC_TARGET.to_bytes(6, "big") + MAC_PROBER.to_bytes(6, "big")[:4], {})
    r = cap.add(t + 4 * MS, Packet(b"", 0, absent()), False, frame=runt, drop=("eth_src", "eth_dst"),
                vlan=None, ethertype=None)
    cap.malformed.append(r)
    b = cap.syn(t + 5 * MS, 443, 54004)
    cap.answer(b, t + 5 * MS + 120 * US, "rst")
    return cap


# ---------------------------------------------------------------------------------------------- pcapng files

def two_ifaces() -> tuple[bytes, Capture, dict]:
    cap = Capture("two_ifaces.pcapng", "pcapng with two interfaces: 0 Ethernet at µs (no if_tsresol), 1 SLL2 "
                  "at ns (if_tsresol 9); probes on 0, replies on 1; a name-resolution block, a local-use "
                  "block of unknown type (0x80000A0A) and an interface-statistics block, all to be skipped; "
                  "EPB options (flags, comment) on every packet", seed=50)
    cap.link_iface = {True: 0, False: 1}
    cap.link_type_of = {True: LINKTYPE_ETHERNET, False: LINKTYPE_SLL2}
    cap.link = lambda pkt, outgoing: (ethernet(pkt, MAC_PROBER, MAC_TARGET) if outgoing
                                      else sll2(pkt, PKT_HOST, MAC_TARGET, 3))
    t = T0_NS
    for i, (port, kind, rtt) in enumerate(((22, "syn-ack", 250_123), (80, "rst", 199_999),
                                           (443, "syn-ack", 1_000_001))):
        p = cap.syn(t + i * MS, port, 55000 + i)
        r = cap.answer(p, t + i * MS + rtt, kind)
        p.sends[0].epb_options = ng_options("<", [(2, struct.pack("<I", 2))])  # epb_flags: outbound
        r.epb_options = ng_options("<", [(2, struct.pack("<I", 1)), (1, b"reply on any")])
    cap.finalise()
    e = "<"
    blocks = [ng_shb(e, [(4, b"synlens make_edge_captures")]),
              ng_idb(e, LINKTYPE_ETHERNET, 0, [(2, b"eth0")]),
              ng_idb(e, LINKTYPE_SLL2, 262144, [(2, b"any"), (9, bytes([9]))]),
              ng_block(e, 4, struct.pack(e + "HH", 1, 11) + addr(TARGET4) + b"target\0" + bytes(1)
                       + struct.pack(e + "HH", 0, 0))]
    # No custom block (0x00000BAD): Wireshark shows those as frames, which would shift frame numbers.
    for i, r in enumerate(cap.records):
        units = 10**6 if r.iface == 0 else 10**9
        blocks.append(ng_epb(e, r, units))
        if i == 2:
            blocks.append(ng_block(e, 0x80000A0A, b"local use block: skip me"))
    ts = cap.records[-1].ts_ns // US + 1
    blocks.append(ng_block(e, 5, struct.pack(e + "III", 0, ts >> 32, ts & 0xFFFFFFFF)
                           + ng_options(e, [(4, struct.pack(e + "Q", 3)), (5, struct.pack(e + "Q", 0))])))
    truth = cap.truth()
    truth["format"] = TWO_IFACES_FORMAT
    return b"".join(blocks), cap, truth


TWO_IFACES_FORMAT = {"container": "pcapng", "sections": [{"byte_order": "little", "interfaces": [
    {"linktype": 1, "ts_resolution": "us"}, {"linktype": 276, "ts_resolution": "ns"}]}]}


def two_sections() -> tuple[bytes, dict]:
    """Two pcapng sections in one file: a little-endian one (Ethernet, µs) with the probes, then a
    big-endian one (raw IP, if_tsresol 6) with the replies; interface ids restart at 0 in each section,
    so `iface` is not checked."""
    cap = Capture("two_sections.pcapng", " ".join(two_sections.__doc__.split()), seed=51)
    cap.link_type_of = {True: LINKTYPE_ETHERNET, False: LINKTYPE_RAW}
    cap.link = lambda pkt, outgoing: ethernet(pkt, MAC_PROBER, MAC_TARGET) if outgoing else raw(pkt)
    t = T0_NS
    probes = [cap.syn(t + i * MS, port, 56000 + i) for i, port in enumerate((22, 80))]
    cap.answer(probes[0], t + 410 * US, "syn-ack")
    cap.answer(probes[1], t + 1 * MS + 95 * US, "rst")
    cap.keep_order = True
    outgoing = [r for r in cap.records if r.linktype == LINKTYPE_ETHERNET]
    incoming = [r for r in cap.records if r.linktype == LINKTYPE_RAW]
    cap.records = outgoing + incoming
    cap.finalise()
    s1 = [ng_shb("<"), ng_idb("<", LINKTYPE_ETHERNET, 65535, [])] + [ng_epb("<", r, 10**6) for r in outgoing]
    s2 = [ng_shb(">"), ng_idb(">", LINKTYPE_RAW, 65535, [(9, bytes([6]))])]
    s2 += [ng_epb(">", r, 10**6) for r in incoming]
    truth = cap.truth()
    for f in truth["frames"]:
        f.pop("iface")
    truth["format"] = {"container": "pcapng", "sections": [
        {"byte_order": "little", "interfaces": [{"linktype": 1, "ts_resolution": "us"}]},
        {"byte_order": "big", "interfaces": [{"linktype": 101, "ts_resolution": "us"}]}]}
    return b"".join(s1 + s2), truth


def truncated_ng() -> tuple[bytes, dict]:
    data, cap, _ = two_ifaces()
    pos, starts = 0, []
    while pos < len(data):
        btype, blen = struct.unpack("<II", data[pos:pos + 8])
        if btype == 6:
            starts.append(pos)
        pos += blen
    t = cap.truth(len(starts) - 1, warning=WARN_TRUNCATED)
    t.update(file="truncated_ng.pcapng", description="two_ifaces.pcapng cut 30 bytes into its last enhanced "
             "packet block", format=TWO_IFACES_FORMAT)
    return data[:starts[-1] + 30], t


# ---------------------------------------------------------------------------------------------- assembly

WARN_TRUNCATED = r"truncat|cut short|incomplete|partial|end of file|\beof\b|short"
WARN_DAMAGED = r"caplen|length|corrupt|damag|invalid|implausible|too (large|big|long)|absurd|bogus"
ERR_NOT_CAPTURE = r"not a|unknown|unrecogni[sz]ed|unsupported|magic|format|invalid"
ERR_EMPTY = r"empty|no data|too short|0 bytes|truncat|header|end of file|\beof\b"


def build_all() -> dict[str, tuple[bytes, dict]]:
    """File name → (bytes, truth) for every edge capture."""
    out: dict[str, tuple[bytes, dict]] = {}
    scenarios = [basic(), ns_bigendian(), retransmit(), lost(), duplicates(), reused_port(), icmp_quoted(),
                 icmp_echo_capture(), ipv6_capture(), vlan(), sll_capture(1), sll_capture(2),
                 raw_capture(LINKTYPE_RAW), raw_capture(LINKTYPE_IPV4), raw_capture(LINKTYPE_DLT_RAW12),
                 loopback(), unordered(), prober_rst(), snaplen_capture(), malformed(), unicornscan_capture()]
    for cap in scenarios:
        cap.finalise()
        out[cap.file] = (cap.pcap_bytes(), cap.truth())
    base = scenarios[0]
    data = base.pcap_bytes()
    offs = pcap_record_offsets(base)

    gz = gzip.compress(data, compresslevel=9, mtime=0)
    t = base.truth()
    t.update(file="gzip.pcap.gz", description="basic.pcap, gzip-compressed",
             format=dict(base.format(), compression="gzip"))
    out["gzip.pcap.gz"] = (gz, t)

    cut = offs[11] + 16 + 20  # 20 bytes into record 12's packet data
    t = base.truth(11, warning=WARN_TRUNCATED)
    t.update(file="truncated.pcap", description="basic.pcap cut 20 bytes into the data of record 12: "
             "records 1-11 are read, with a warning")
    out["truncated.pcap"] = (data[:cut], t)

    cut = offs[9] + 7  # 7 bytes into record 10's 16-byte header
    t = base.truth(9, warning=WARN_TRUNCATED)
    t.update(file="truncated_header.pcap", description="basic.pcap cut 7 bytes into the header of record 10")
    out["truncated_header.pcap"] = (data[:cut], t)

    bad = bytearray(data[:offs[6]])
    bad += struct.pack("<IIII", 1_700_000_000, 0, 0x7FFFFFFF, 0x7FFFFFFF) + bytes(range(64))
    t = base.truth(6, warning=WARN_DAMAGED)
    t.update(file="bad_caplen.pcap", description="6 good records of basic.pcap, then a record header "
             "claiming caplen 0x7fffffff followed by 64 bytes: read up to the damage, warn, allocate nothing")
    out["bad_caplen.pcap"] = (bytes(bad), t)

    ng, _, t = two_ifaces()
    out["two_ifaces.pcapng"] = (ng, t)
    out["two_sections.pcapng"] = two_sections()
    out["truncated_ng.pcapng"] = truncated_ng()

    def error_file(file: str, desc: str, regex: str) -> dict:
        return {"file": file, "description": desc, "format": None, "error": regex, "warning": None,
                "packets": None, "malformed": None, "malformed_frames": None, "frames": None, "probes": None,
                "unsolicited_replies": None}

    out["not_a_capture.txt"] = (b"This is a text file, not a packet capture.\nsrc,dst\n10.0.0.9,10.0.0.2\n",
                                error_file("not_a_capture.txt", "a text file", ERR_NOT_CAPTURE))
    out["empty.pcap"] = (b"", error_file("empty.pcap", "zero bytes", ERR_EMPTY))
    t = base.truth(0)
    t.update(file="header_only.pcap", description="a pcap global header and no records: an empty table, "
             "no warning, no error")
    out["header_only.pcap"] = (data[:24], t)
    return out


def stem(file: str) -> str:
    return file.split(".", 1)[0]


def dump_truth(truth: dict) -> str:
    """JSON with one frame / probe per line, so diffs and eyes can follow it."""
    lines = ["{"]
    items = list(truth.items())
    for i, (k, v) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if isinstance(v, list) and v and isinstance(v[0], dict):
            lines.append(f"  {json.dumps(k)}: [")
            lines += [f"    {json.dumps(x)}{',' if j < len(v) - 1 else ''}" for j, x in enumerate(v)]
            lines.append(f"  ]{comma}")
        else:
            lines.append(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}{comma}")
    return "\n".join(lines + ["}"]) + "\n"


def write_all(outdir: str | Path) -> list[Path]:
    """Write every capture and its truth file into `outdir`; return the capture paths."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for file, (data, truth) in build_all().items():
        (outdir / file).write_bytes(data)
        (outdir / f"{stem(file)}.truth.json").write_text(dump_truth(truth), encoding="utf-8")
        paths.append(outdir / file)
    return paths


def main(argv: list[str]) -> int:
    outdir = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1] / "data" / "edge"
    for p in write_all(outdir):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
