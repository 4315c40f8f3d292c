"""Which interface and source address the kernel would use for a target: the answer `ip route get` prints.

Asked over rtnetlink (RTM_GETROUTE), so policy routing, local addresses (→ lo) and --interface (RTA_OIF)
are all decided by the kernel itself, with the source address it would pick (RTA_PREFSRC). Needs no
privileges and sends nothing on the network.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

from .errors import AgentError
from .ports import Address

RTM_GETROUTE, NLMSG_ERROR, NLM_F_REQUEST = 26, 2, 1
RTA_DST, RTA_OIF, RTA_PREFSRC = 1, 4, 7
RTN_UNICAST, RTN_LOCAL = 1, 2


def _attr(kind: int, value: bytes) -> bytes:
    return struct.pack("HH", 4 + len(value), kind) + value + b"\0" * (-len(value) % 4)


def egress(dst: Address, interface: str | None = None) -> tuple[str, Address]:
    """(interface name, source address) for packets to `dst`. Raises AgentError when there is no route."""
    oif = 0
    if interface:
        try:
            oif = socket.if_nametoindex(interface)
        except OSError:
            raise AgentError(f"unknown interface {interface!r}") from None
    family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
    attrs = _attr(RTA_DST, dst.packed) + (_attr(RTA_OIF, struct.pack("I", oif)) if oif else b"")
    rtmsg = struct.pack("BBBBBBBBI", family, dst.max_prefixlen, 0, 0, 0, 0, 0, 0, 0)
    request = struct.pack("IHHII", 16 + len(rtmsg) + len(attrs), RTM_GETROUTE, NLM_F_REQUEST, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as nl:
        nl.send(request + rtmsg + attrs)
        reply = nl.recv(65536)
    kind = struct.unpack_from("H", reply, 4)[0]
    if kind == NLMSG_ERROR:
        code = -struct.unpack_from("i", reply, 16)[0]
        via = f" via {interface}" if interface else ""
        raise AgentError(f"no route to {dst}{via}: {os.strerror(code)}")
    if reply[16 + 7] not in (RTN_UNICAST, RTN_LOCAL):  # blackhole, unreachable, prohibit …
        raise AgentError(f"no route to {dst}: the route is not unicast (type {reply[16 + 7]})")
    found: dict[int, bytes] = {}
    pos = 16 + 12
    while pos + 4 <= len(reply):
        length, kind = struct.unpack_from("HH", reply, pos)
        if length < 4:
            break
        found[kind] = reply[pos + 4 : pos + length]
        pos += length + (-length % 4)
    if RTA_OIF not in found:
        raise AgentError(f"no route to {dst}: the kernel names no outgoing interface")
    name = socket.if_indextoname(struct.unpack("I", found[RTA_OIF])[0])
    if RTA_PREFSRC not in found:  # the kernel always names one for a route *get*; refuse to guess
        raise AgentError(f"no route to {dst}: the kernel names no source address")
    return name, ipaddress.ip_address(found[RTA_PREFSRC])
