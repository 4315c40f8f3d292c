"""One AF_PACKET socket on the egress interface, kernel nanosecond stamps, and a pcap (ns) writer.

Probes (PACKET_OUTGOING) and replies are stamped by the same kernel clock on the same socket, so an RTT is
the difference of two capture stamps — never a user-space clock on one side, qscan.nse's flaw.
"""

from __future__ import annotations

import os
import socket
import struct
import tempfile
from dataclasses import dataclass
from typing import BinaryIO

from .packet import IPPacket, parse_ip

ETH_P_ALL, ETH_P_IP, ETH_P_IPV6 = 0x0003, 0x0800, 0x86DD
SOL_PACKET, PACKET_STATISTICS = 263, 6
SO_TIMESTAMPNS = 35  # == SCM_TIMESTAMPNS (asm-generic); Python's socket module does not export it
ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772
LINKTYPE_ETHERNET, LINKTYPE_RAW = 1, 101
PCAP_MAGIC_NS = 0xA1B23C4D
SNAPLEN = 262144  # whole frames, even loopback's 64 KiB GSO ones


@dataclass(frozen=True)
class Frame:
    ts_ns: int  # kernel stamp, CLOCK_REALTIME nanoseconds
    data: bytes  # as written to the pcap (link header included for LINKTYPE_ETHERNET)
    ip: IPPacket


class Capture:
    """Captures the IPv4/IPv6 frames of one interface; `read()` returns one (None for other traffic)."""

    def __init__(self, interface: str) -> None:
        with open(f"/sys/class/net/{interface}/type") as f:
            arphrd = int(f.read())
        # Linux loopback carries a fake Ethernet header, so it is LINKTYPE_ETHERNET too; any other link
        # type (tun, wireguard, gre …) is read without its link header (SOCK_DGRAM) and written as raw IP.
        ether = arphrd in (ARPHRD_ETHER, ARPHRD_LOOPBACK)
        self.linktype = LINKTYPE_ETHERNET if ether else LINKTYPE_RAW
        self._link_len = 14 if ether else 0
        self._loopback = arphrd == ARPHRD_LOOPBACK
        self._drops = 0
        # Protocol 0 at creation captures nothing; bind() then starts capture on this interface only,
        # so no frame of another interface slips in between socket() and bind().
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW if ether else socket.SOCK_DGRAM, 0)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self.sock.bind((interface, ETH_P_ALL))
        except OSError:
            self.sock.close()
            raise

    def read(self) -> Frame | None:
        data, ancillary, _flags, addr = self.sock.recvmsg(SNAPLEN, socket.CMSG_SPACE(16))
        proto, pkttype = addr[1], addr[2]
        # On loopback each packet passes twice (out, then in); keep one copy, as libpcap does.
        if proto not in (ETH_P_IP, ETH_P_IPV6) or (self._loopback and pkttype == socket.PACKET_OUTGOING):
            return None
        stamps = [d for level, kind, d in ancillary if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS]
        if not stamps:
            raise RuntimeError("the kernel gave no SO_TIMESTAMPNS stamp for a captured frame")
        sec, nsec = struct.unpack("qq", stamps[0][:16])
        ip = parse_ip(data[self._link_len :])
        return Frame(sec * 1_000_000_000 + nsec, data, ip) if ip else None

    def drops(self) -> int:
        """Frames the kernel dropped because our buffer was full (cumulative)."""
        _, dropped = struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        self._drops += dropped  # reading the statistics resets them
        return self._drops

    def close(self) -> None:
        self.sock.close()


def write_header(f: BinaryIO, linktype: int, snaplen: int = SNAPLEN) -> None:
    f.write(struct.pack("<IHHiIII", PCAP_MAGIC_NS, 2, 4, 0, 0, snaplen, linktype))


def write_record(f: BinaryIO, ts_ns: int, data: bytes, wirelen: int | None = None) -> None:
    sec, nsec = divmod(ts_ns, 1_000_000_000)
    f.write(struct.pack("<IIII", sec, nsec, len(data), len(data) if wirelen is None else wirelen) + data)


class AtomicFile:
    """A temp file beside `path`, renamed onto it by `commit()`: `path` never exists half-written."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        directory, name = os.path.split(self.path)
        fd, self.temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
        umask = os.umask(0o22)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the result ordinary file permissions
        self.file: BinaryIO = os.fdopen(fd, "wb")

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.temp, self.path)

    def discard(self) -> None:
        self.file.close()
        try:
            os.unlink(self.temp)
        except FileNotFoundError:
            pass
