"""Which packets to analyse, decided while reading: a time range, addresses, networks, ports.

Times (`--since`, `--until`) are absolute (ISO 8601, "2024-05-01T10:00:00Z" or with an offset; a date alone
is its midnight UTC; or seconds since 1970) or offsets from the first packet of all the inputs ("+90s",
"+15m", "+2h", "+1d", "+1h30m"). The range is since ≤ t < until, read off each record's header before it is
decoded: a week of captures asked about one hour decodes that hour.

Addresses (`--host ADDR`, `--net CIDR`) and ports (`--port N`) keep a packet when any of its addresses, or
ports, match: its source, its destination, or those of the packet an ICMP error quotes (so the error that
answers a probe to a kept host is kept with it). Several values of one kind are alternatives; kinds combine
(a host and a port: packets of that host on that port). An ARP frame's addresses are its sender's and
target's.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pandas as pd

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_OFFSET = re.compile(r"^\+((?:\d+(?:\.\d+)?[smhd])+)$")


@dataclass(frozen=True)
class Time:
    """A point in time: absolute (ns since 1970) or an offset from the first packet (ns)."""

    ns: int
    offset: bool = False

    def at(self, first_ns: int | None) -> int:
        return self.ns + (first_ns or 0) if self.offset else self.ns


def parse_time(text: str) -> Time:
    """`--since`/`--until`'s value (see the module); ValueError naming what is wrong."""
    text = text.strip()
    m = _OFFSET.match(text)
    if m:
        seconds = sum(float(v) * _UNITS[u] for v, u in re.findall(r"(\d+(?:\.\d+)?)([smhd])", m.group(1)))
        return Time(round(seconds * 1e9), offset=True)
    if re.fullmatch(r"\d+(\.\d+)?", text):
        whole, _, frac = text.partition(".")
        return Time(int(whole) * 10**9 + int((frac + "000000000")[:9]))
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("not a time (ISO 8601 such as 2024-05-01T10:00:00Z, seconds since 1970, or an offset from "
                         "the first packet such as +15m)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    delta = when - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return Time((delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000)


@dataclass(frozen=True)
class Filter:
    """What to keep; the default keeps everything."""

    since: Time | None = None
    until: Time | None = None
    hosts: tuple[str, ...] = ()  # addresses, as the packets table writes them (normalised)
    nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    ports: tuple[int, ...] = ()
    first_ns: int | None = field(default=None, compare=False)  # the inputs' first packet (offsets count from it)

    @classmethod
    def of(cls, since: str | None = None, until: str | None = None, hosts: Sequence[str] = (),
           nets: Sequence[str] = (), ports: Sequence[int] = ()) -> Filter:
        """From the command line's texts; ValueError naming the first that is wrong."""
        def host(text: str) -> str:
            try:
                return str(ipaddress.ip_address(text))
            except ValueError:
                raise ValueError(f"--host {text}: not an IP address") from None

        def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
            try:
                return ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError(f"--net {text}: not a network (address/prefix)") from None

        def time(option: str, text: str | None) -> Time | None:
            try:
                return parse_time(text) if text else None
            except ValueError as e:
                raise ValueError(f"{option} {text}: {e}") from None

        for p in ports:
            if not 0 <= p <= 65535:
                raise ValueError(f"--port {p}: not a port (0-65535)")
        return cls(time("--since", since), time("--until", until), tuple(host(h) for h in hosts),
                   tuple(net(n) for n in nets), tuple(int(p) for p in ports))

    def describe(self) -> dict[str, object]:
        """The filters given, as the command line wrote them (offsets as seconds from the first packet)."""
        def time(t: Time | None) -> str | None:  # (exact: whole seconds and nanoseconds, never a float)
            if t is None:
                return None
            sign, ns = ("-" if t.ns < 0 else ""), abs(t.ns)
            text = f"{sign}{ns // 10**9}.{ns % 10**9:09d}"
            return f"+{text}s" if t.offset else text
        return {"since": time(self.since), "until": time(self.until), "hosts": list(self.hosts),
                "nets": [str(n) for n in self.nets], "ports": list(self.ports)}

    @property
    def everything(self) -> bool:
        return self.since is None and self.until is None and not self.hosts and not self.nets and not self.ports

    @property
    def by_time(self) -> bool:
        return self.since is not None or self.until is not None

    @property
    def by_packet(self) -> bool:
        return bool(self.hosts or self.nets or self.ports)

    def in_time(self, ts_ns: np.ndarray) -> np.ndarray | None:
        """Which of these timestamps lie in the range (None: all of them)."""
        if not self.by_time:
            return None
        keep = np.ones(len(ts_ns), bool)
        if self.since is not None:
            keep &= ts_ns >= self.since.at(self.first_ns)
        if self.until is not None:
            keep &= ts_ns < self.until.at(self.first_ns)
        return keep

    def kept(self, packets: pd.DataFrame) -> np.ndarray | None:
        """Which rows of a packets table (with src, dst, q_src, q_dst; sport, dport, q_sport, q_dport for ports)
        the address and port filters keep (None: all of them)."""
        if not self.by_packet:
            return None
        keep = np.ones(len(packets), bool)
        if self.hosts or self.nets:
            keep &= self._addresses(packets)
        if self.ports:
            wanted = np.array(self.ports, np.int64)
            keep &= np.logical_or.reduce([np.isin(packets[c].to_numpy(np.int64, na_value=-1), wanted)
                                          for c in ("sport", "dport", "q_sport", "q_dport")])
        return keep

    def _addresses(self, packets: pd.DataFrame) -> np.ndarray:
        # The address columns share one category list: decide per category, then look the rows' codes up.
        categories = packets["src"].cat.categories
        hit = np.array([self._address(a) for a in categories.tolist()] + [False], bool)  # (code -1: absent)
        return np.logical_or.reduce([hit[packets[c].cat.codes.to_numpy()] for c in ("src", "dst", "q_src", "q_dst")])

    def _address(self, text: str) -> bool:
        if text in self.hosts:
            return True
        ip = ipaddress.ip_address(text)
        return any(ip in net for net in self.nets)

    def columns(self) -> tuple[str, ...]:
        """The packets table's columns the filters read."""
        out: tuple[str, ...] = ()
        if self.hosts or self.nets:
            out += ("src", "dst", "q_src", "q_dst")
        if self.ports:
            out += ("sport", "dport", "q_sport", "q_dport")
        return out


EVERYTHING = Filter()
