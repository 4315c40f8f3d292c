"""Protocol numbers, declared once: TCP flags and their letters, link types, ethertypes, IPv6 extension headers,
ICMP message classes, the TCP options the packets table holds and their names, and the initial TTLs stacks
and tools send with, and the order of addresses. The reader, the matcher and every analysis take them from here."""

from __future__ import annotations

import enum
import socket

import numpy as np


class TCPFlag(enum.IntFlag):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80
    NS = 0x100


FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, NS = (int(f) for f in TCPFlag)

# nmap's --scanflags letters, in the order nmap and tcpdump print them
_LETTERS = ((SYN, "S"), (ACK, "A"), (FIN, "F"), (RST, "R"), (PSH, "P"), (URG, "U"), (ECE, "E"), (CWR, "C"), (NS, "N"))


def flag_text(value: int) -> str:
    """Flags as nmap letters, e.g. 0x12 → "SA", 0 → "" (a NULL probe)."""
    return "".join(letter for bit, letter in _LETTERS if value & bit)


# Link types (tcpdump.org/linktypes.html)
LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LOOP = 0, 1, 101, 108
LINKTYPE_SLL, LINKTYPE_SLL2, LINKTYPE_IPV4, LINKTYPE_IPV6 = 113, 276, 228, 229
RAW_LINKTYPES = (LINKTYPE_RAW, 12, 14, LINKTYPE_IPV4, LINKTYPE_IPV6)
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
ETH_IPV4, ETH_IPV6, ETH_ARP = 0x0800, 0x86DD, 0x0806
IPV6_EXT = (0, 43, 60, 135, 139, 140)  # hop-by-hop, routing, dest opts, mobility, HIP, shim6: (len+1)*8
IPV6_FRAG, IPV6_AH = 44, 51
ICMP4_ERRORS = (3, 4, 5, 11, 12)  # unreachable, source quench, redirect, time exceeded, parameter problem
ICMP6_ERRORS = (1, 2, 3, 4)  # unreachable, packet too big, time exceeded, parameter problem
ICMP4_QUERIES = (0, 8, 13, 14, 15, 16, 17, 18)  # echo, timestamp, info, address mask: id + seq
ICMP6_QUERIES = (128, 129)

# TCP options whose values the table holds: (column, kind, option length, value offset, value size)
OPTION_FIELDS = (("mss", 2, 4, 2, 2), ("wscale", 3, 3, 2, 1), ("tsval", 8, 10, 2, 4), ("tsecr", 8, 10, 6, 4))
# TCP option kinds by the names nmap and p0f give them (IANA's TCP option kind numbers)
OPTION_NAMES = {0: "EOL", 1: "NOP", 2: "MSS", 3: "WS", 4: "SACK", 5: "SACKblk", 8: "TS", 30: "MPTCP", 34: "TFO"}

INITIAL_TTLS = (32, 64, 128, 255)  # the initial TTLs (hop limits) stacks and tools send with


def initial_ttl(ttl: int | np.ndarray) -> int | np.ndarray:
    """The initial TTL a TTL implies: the least of INITIAL_TTLS at or above it (of one TTL, or of each)."""
    table = np.array(INITIAL_TTLS)
    out = table[np.searchsorted(table, np.minimum(ttl, 255))]
    return int(out) if np.ndim(ttl) == 0 else out


def address_order(text: str) -> tuple[int, bytes, str]:
    """A sort key putting address texts in address order (IPv4, then IPv6, then anything else by its text)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            packed = socket.inet_pton(family, text)
        except OSError:
            continue
        return len(packed), packed, ""
    return 99, b"", text
