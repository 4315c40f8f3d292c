"""Bytes on the wire: the SYN probe (qscan's template), IPv4 header, checksums, the reply fields we read."""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

from .ports import Address

IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_ICMPV6 = 1, 6, 58
WINDOW = 3072  # qscan.nse's template: window 0x0c00, one option, MSS 1460
MSS = 1460
TTL = 64


class TCPFlag(enum.IntFlag):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10


def checksum(data: bytes) -> int:
    """RFC 1071 internet checksum of `data` (odd length padded with a zero byte)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo_header(src: Address, dst: Address, length: int) -> bytes:
    if src.version == 4:
        return src.packed + dst.packed + struct.pack("!BBH", 0, IPPROTO_TCP, length)
    return src.packed + dst.packed + struct.pack("!I3xB", length, IPPROTO_TCP)


def tcp_syn(src: Address, dst: Address, sport: int, dport: int, seq: int, tsval: int | None = None) -> bytes:
    """A bare SYN segment (no IP header) with a correct checksum; `tsval` adds a TCP timestamp option."""
    options = struct.pack("!BBH", 2, 4, MSS)
    if tsval is not None:  # NOP NOP TS(kind 8, len 10): replies then echo it and carry their own TSval
        options += struct.pack("!BBBBII", 1, 1, 8, 10, tsval & 0xFFFFFFFF, 0)
    offset_words = (20 + len(options)) // 4
    head = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, offset_words << 4, TCPFlag.SYN, WINDOW, 0, 0)
    segment = head + options
    csum = checksum(_pseudo_header(src, dst, len(segment)) + segment)
    return segment[:16] + struct.pack("!H", csum) + segment[18:]


def ipv4(src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, payload: bytes, ident: int) -> bytes:
    """IPv4 header (no options, no DF, like qscan) + payload, for an IPPROTO_RAW socket."""
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0, TTL, IPPROTO_TCP, 0,
                       src.packed, dst.packed)
    return head[:10] + struct.pack("!H", checksum(head)) + head[12:] + payload


@dataclass(frozen=True)
class IPPacket:
    """The fields of a captured IP packet that the agent's filter and discovery look at."""

    src: Address
    dst: Address
    proto: int
    payload: bytes  # after the IP header (IPv6 extension headers are not skipped: we never send them)

    def ports(self) -> tuple[int, int] | None:
        if self.proto != IPPROTO_TCP or len(self.payload) < 4:  # an ICMP quote may hold only 8 TCP bytes
            return None
        return struct.unpack_from("!HH", self.payload)

    def tcp_flags(self) -> TCPFlag:
        tcp = self.proto == IPPROTO_TCP and len(self.payload) >= 14
        return TCPFlag(self.payload[13] & 0x1F) if tcp else TCPFlag(0)

    def quoted(self) -> IPPacket | None:
        """For an ICMP/ICMPv6 error: the packet it quotes (our probe), else None."""
        if self.proto in (IPPROTO_ICMP, IPPROTO_ICMPV6) and len(self.payload) > 8:
            return parse_ip(self.payload[8:])
        return None


def parse_ip(buf: bytes) -> IPPacket | None:
    """Parse an IPv4/IPv6 header at the start of `buf`; None when it is too short or not IP."""
    version = buf[0] >> 4 if buf else 0
    if version == 4 and len(buf) >= 20:
        ihl = (buf[0] & 0x0F) * 4
        return IPPacket(ipaddress.IPv4Address(buf[12:16]), ipaddress.IPv4Address(buf[16:20]), buf[9],
                        buf[ihl:])
    if version == 6 and len(buf) >= 40:
        return IPPacket(ipaddress.IPv6Address(buf[8:24]), ipaddress.IPv6Address(buf[24:40]), buf[6], buf[40:])
    return None
