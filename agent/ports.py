"""User input → validated values: port lists, nmap-style time specs, target addresses. Pure functions."""

from __future__ import annotations

import ipaddress
import re
import socket

from .errors import AgentError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# nmap's 100 most frequent TCP ports (nmap-services, "--top-ports 100"), for the discovery pass.
DEFAULT_PORTS = (
    7, 9, 13, 21, 22, 23, 25, 26, 37, 53, 79, 80, 81, 88, 106, 110, 111, 113, 119, 135, 139, 143, 144, 179,
    199, 389, 427, 443, 444, 445, 465, 513, 514, 515, 543, 544, 548, 554, 587, 631, 646, 873, 990, 993, 995,
    1025, 1026, 1027, 1028, 1029, 1110, 1433, 1720, 1723, 1755, 1900, 2000, 2001, 2049, 2121, 2717, 3000,
    3128, 3306, 3389, 3986, 4899, 5000, 5009, 5051, 5060, 5101, 5190, 5357, 5432, 5631, 5666, 5800, 5900,
    6000, 6001, 6646, 7070, 8000, 8008, 8009, 8080, 8081, 8443, 8888, 9100, 9999, 10000, 32768, 49152,
    49153, 49154, 49155, 49156, 49157,
)

_TIME_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}
_TIMESPEC = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|)")


def parse_ports(text: str) -> tuple[int, ...]:
    """`"22,80,1000-1010"` → sorted unique ports (1–65535). Raises AgentError naming the bad part."""
    ports: set[int] = set()
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise AgentError(f"bad port list {text!r}: {part.strip()!r} is not a port or a range (1000-1010)")
        lo, hi = int(m[1]), int(m[2] or m[1])
        if not 1 <= lo <= hi <= 65535:
            raise AgentError(f"bad port list {text!r}: {part.strip()!r} is outside 1-65535 or reversed")
        ports.update(range(lo, hi + 1))
    return tuple(sorted(ports))


def parse_timespec(text: str) -> float:
    """nmap time spec → seconds: `200ms`, `1.5s`, `2m`, `1h`; a bare number is seconds."""
    m = _TIMESPEC.fullmatch(text.strip().lower())
    if not m:
        raise AgentError(f"bad time {text!r}: use a number with ms, s, m or h (e.g. 200ms)")
    return float(m[1]) * _TIME_UNITS[m[2]]


def check_address(addr: Address) -> None:
    """Refuse addresses a unicast SYN must never go to (one-to-many or meaningless)."""
    base = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped else addr
    # x.x.x.255 can be a host in a wider subnet, so only the limited broadcast is knowable here.
    if base.is_multicast or base.is_unspecified or base == ipaddress.IPv4Address("255.255.255.255"):
        raise AgentError(f"refusing to probe {addr}: multicast, broadcast or unspecified address")


def resolve_target(text: str) -> Address:
    """An IP literal or a host name (first address the resolver gives) → a checked address."""
    try:
        addr: Address = ipaddress.ip_address(text)
    except ValueError:
        try:
            addr = ipaddress.ip_address(socket.getaddrinfo(text, None, type=socket.SOCK_STREAM)[0][4][0])
        except (OSError, IndexError, ValueError):
            raise AgentError(f"cannot resolve target {text!r}") from None
    check_address(addr)
    return addr
