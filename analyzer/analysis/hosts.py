"""Packets + probes → what the capture tells of each host: MAC, vendor, and OS hints with their evidence.

Vendors come from an offline OUI table (Debian's `ieee-data`, else Wireshark's `manuf`); nothing is
fetched. OS hints are evidence, not verdicts: the initial TTL a reply implies (the next of 32, 64, 128,
255 at or above the TTL seen), the SYN/ACK window and TCP option layout, the IP ID sequence class, and
RFC 793 non-compliance (a RST to a FIN/NULL/Xmas probe on a port a SYN probe found open, as Windows does).
Only what a host's own stack sent is its evidence: not a scanning tool's crafted packets (`_tool_made`), nor
a TTL the protocol fixes (IGMP's 1, neighbour discovery's 255).
"""

from __future__ import annotations

import functools
import io
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..protocols import ACK, RST, SYN, address_order, initial_ttl
from .columns import column_codes, int_column_at, packet_rows
from .exchanges import PacketKeys, to_group
from .groups import group_ids, modes, unique_inverse
from .match import IDENTITY_FIELDS, PROBE_IDENTITY_FIELDS, probe_identity, sent_identity
from .screen import Tallies, Tally, added, source_macs, tally
from .stacks import ip_id_classes, option_layout

# The packets-table and probes-table columns `hosts` reads.
PACKET_FIELDS = tuple(dict.fromkeys(("frame", "eth_src", "eth_dst", "ip_version", "src", "dst", "arp_op", "ttl", "ip_id",
                                    "ip_proto", "icmp_type", "tcp_flags", "window", "tcp_options", *IDENTITY_FIELDS)))
# Packets whose TTL the protocol fixes, not the system: IGMP (TTL 1, RFC 2236/3376); ICMPv6 multicast listener
# messages (hop limit 1, RFC 2710/3810: types 130-132, 143) and neighbour discovery (255, RFC 4861: 133-137).
FIXED_TTL_ICMP6 = (130, 131, 132, 133, 134, 135, 136, 137, 143)
PROBE_FIELDS = tuple(dict.fromkeys(("probe_frame", "src", "dst", "ip_version", "flags", "transmissions",
                                   *PROBE_IDENTITY_FIELDS)))

# (initial TTL, option layout prefix) → OS family; layouts as the stacks send them in SYN/ACKs
OS_LAYOUTS = (
    (64, "MSS,SACK,TS,NOP,WS", "Linux"),
    (64, "MSS,NOP,NOP,SACK,NOP,WS", "Linux (no timestamps)"),
    (64, "MSS,NOP,NOP,TS,NOP,WS", "Linux (no SACK)"),
    (64, "MSS,NOP,WS,SACK,TS", "FreeBSD / macOS"),
    (64, "MSS,NOP,WS,NOP,NOP,TS,SACK,EOL", "macOS / iOS"),
    (128, "MSS,NOP,WS,NOP,NOP,SACK", "Windows"),
    (128, "MSS,NOP,WS,SACK,TS", "Windows (timestamps on)"),
)


# The OUI tables, first installed first: path, line format, an OUI as the line starts with it.
OUI_FILES = (
    ("/usr/share/ieee-data/oui.txt", re.compile(r"^([0-9A-F]{2})-([0-9A-F]{2})-([0-9A-F]{2})\s+\(hex\)\s+(.*\S)"),
     "{:02x}-{:02x}-{:02x}"),
    ("/usr/share/wireshark/manuf",
     re.compile(r"^([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2})\t([^\t\n]+)(?:\t([^\n]+))?"), "{:02x}:{:02x}:{:02x}"),
)


@functools.cache
def _oui_file() -> tuple[re.Pattern[str], str, bytes, bytes] | None:
    """The first OUI table installed that has an entry: (line pattern, OUI format, its bytes, lowercased)."""
    for path, pattern, oui_format in OUI_FILES:
        if not os.path.exists(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        if any(pattern.match(line) for line in io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace")):
            return pattern, oui_format, data, data.lower()
    return None


@functools.cache
def organisation(oui: int) -> str | None:
    """The organisation a 24-bit OUI is registered to (the table's last line for it wins), None if unlisted.

    Only the lines starting with the OUI are parsed (parsing all of oui.txt costs a command 0.1 s). A line
    reads as `open(path).readlines()` would give it: text mode ends lines at CR, LF or CRLF."""
    found = _oui_file()
    if found is None:
        return None
    pattern, oui_format, data, lowered = found
    needle = oui_format.format(oui >> 16, (oui >> 8) & 0xFF, oui & 0xFF).encode()
    end = len(data)
    while (start := lowered.rfind(needle, 0, end)) >= 0:
        end = start
        if start and data[start - 1] not in b"\r\n":
            continue
        line = data[start:data.find(b"\n", start) % (len(data) + 1)].decode("utf-8", errors="replace")
        m = pattern.match(line.replace("\r\n", "\n").replace("\r", "\n"))
        if m and int("".join(m.groups()[:3]), 16) == oui:
            return m.group(m.lastindex)
    return None


def mac_text(mac: int) -> str:
    return ":".join(f"{(mac >> s) & 0xFF:02x}" for s in range(40, -1, -8))


def vendor_of(mac: int) -> str:
    if (mac >> 40) & 0x02:
        return "locally administered (virtual or randomised)"
    return organisation(mac >> 24) or "unknown"


def hosts(packets: pd.DataFrame, probes: pd.DataFrame | None = None, states: pd.DataFrame | None = None,
          scans: pd.DataFrame | None = None, others: Tallies | None = None) -> pd.DataFrame:
    """One row per IP address seen as a source: mac, vendor, os (hint), os_evidence, packets.

    With the probes and the scans table (`analyzer.scans`), a scanning tool's own packets are not taken for
    its host's: see `_ToolMade`. Without them, every packet a host sent is its own.

    The packets are read `SLICE_ROWS` at a time: what is kept of each slice is per host (counts, modes' tallies)
    or per reply (SYN/ACKs and RSTs), so the arrays as long as the table are a slice's. `others`: what the
    screen (analysis/screen.py) counted of the packets it let go, which the table does not hold (none of them a
    reply, a probe or a packet to a group)."""
    # IP packets by their source, and ARP frames by their sender: a host that only answered ARP is a host.
    src, addresses = column_codes(packets["src"], None)  # (the codes themselves: not copied)
    addresses = addresses.astype(str)
    counted = ((packets["ip_version"].to_numpy() > 0) | packets["arp_op"].notna().to_numpy()) & (src >= 0)
    counted &= ~np.append(np.isin(addresses, UNSPECIFIED), False)[src]  # (code -1, no address: the False)
    seen = np.flatnonzero(np.bincount(src[counted], minlength=len(addresses)))
    names = (np.sort(addresses[seen]) if others is None else  # (searched in address text order; shown in address order)
             np.setdiff1d(np.union1d(addresses[seen], others.names[np.flatnonzero(others.packets)]), UNSPECIFIED))
    number = np.full(len(addresses), -1, np.int32)  # (each address's host number: hosts are looked up per packet)
    number[seen] = np.searchsorted(names, addresses[seen])
    n_hosts = len(names)
    keys = PacketKeys(packets)
    frame = packets["frame"].to_numpy()

    held: list[_Rows] = []  # (a table of one slice: read once, however many times the rules read it)

    def slices() -> Iterator[_Rows]:
        if held:
            yield from held
            return
        for a in range(0, len(packets), SLICE_ROWS):
            at = np.flatnonzero(counted[a:a + SLICE_ROWS]) + a
            if len(at):
                r = _rows(packets, keys, at, number[src[at]])
                if len(packets) <= SLICE_ROWS:
                    held.append(r)
                yield r

    let_go = None if others is None else _LetGo.of(others, names)
    tool = _ToolMade.of(packets, probes, scans, names, n_hosts, slices, let_go)
    synacks, resets, n_packets, own_ttls, macs = [], [], np.zeros(n_hosts, np.int64), [], []
    for r in slices():
        mine = np.ones(len(r.at), bool) if tool is None else tool.own(r)
        for kept, rows in ((synacks, ((r.flags & (SYN | ACK)) == (SYN | ACK)) & mine), (resets, ((r.flags & RST) != 0) & mine)):
            kept.append((r.at[rows], r.host[rows], r.ttl[rows]))
        n_packets += np.bincount(r.host, minlength=n_hosts)
        own_ttls.append(tally(r.host[mine], r.ttl[mine], frame[r.at[mine]]))
        macs.append(tally(r.host, source_macs(packets["eth_src"], r.at), frame[r.at]))
    if let_go is not None:
        n_packets += let_go.packets
        own_ttls += ([let_go.ttl, let_go.again] if tool is None else
                     [tool.own_tally(let_go.ttl), tool.own_tally(tool.not_made(let_go.again))])
        macs.append(let_go.mac)
    # The replies, SYN/ACKs then RSTs: their positions, hosts and TTLs.
    replies = _Replies(*(np.concatenate([np.zeros(0, dtype), *(part[i] for part in synacks + resets)])
                         for i, dtype in enumerate((np.int64, np.int32, np.int32))))
    synack_at = replies.at[:sum(len(part[0]) for part in synacks)]
    n_synacks = np.bincount(replies.host[:len(synack_at)], minlength=n_hosts)
    n_replies = np.bincount(replies.host, minlength=n_hosts)
    # A host's TTL: its replies' most frequent one; a host that sent none, its own packets'.
    ttl = _mode(replies.host, replies.ttl, n_hosts)
    ttl_frame = _first_frame(replies.host, replies.ttl, ttl, frame[replies.at], n_hosts)
    silent = n_replies == 0
    ttl[silent], ttl_frame[silent] = (m[silent] for m in _tallied_modes(own_ttls, n_hosts))
    mac, _ = _tallied_modes(macs, n_hosts)
    synack_frame = np.full(n_hosts, -1)
    first_host = replies.host[:len(synack_at)]
    np.minimum.at(synack_frame, first_host[::-1], -frame[synack_at][::-1])  # (the first SYN/ACK's, negated)
    synack_frame = -synack_frame
    window = _mode(first_host, int_column_at(packets["window"], synack_at, dtype=np.int32), n_hosts)
    option_code, options = pd.factorize(packets["tcp_options"].array[synack_at].fillna(0), sort=True)
    layout = _mode(first_host, option_code.astype(np.int64), n_hosts)
    ids = int_column_at(packets["ip_id"], replies.at, dtype=np.int32)
    _, id_class = ip_id_classes(replies.host[ids >= 0], ids[ids >= 0], n_hosts)
    not_rfc793 = _rst_on_open_ports(states)

    hops = np.where(ttl >= 0, initial_ttl(ttl) - ttl, -1)
    gateway = _gateways(mac, hops)
    rewritten = _rewritten_ttls(mac, hops, ttl, gateway)
    out = []
    for i, addr in enumerate(names.tolist()):
        evidence, frames = [], []
        os_name = init = None
        if ttl[i] >= 0 and i in rewritten:
            evidence.append(rewritten[i])
        elif ttl[i] >= 0:
            init = initial_ttl(int(ttl[i]))
            n_hops = init - int(ttl[i])
            evidence.append(f"TTL {ttl[i]} (initial {init}, {n_hops} hop{'' if n_hops == 1 else 's'})")
            frames.append(int(ttl_frame[i]))
        elif tool is not None and tool.made_ttls[i]:
            evidence.append(f"no TTL of its own: {tool.tools.get(i, 'a scanning tool')} wrote all "
                            f"{tool.made_ttls[i]:,} of its packets with a TTL")
        if n_synacks[i]:
            options_seen = option_layout(int(options[layout[i]]))
            evidence.append(f"SYN/ACK window {window[i]}, options {options_seen or 'none'}")
            frames.append(int(synack_frame[i]))
            os_name = next((name for ttl0, prefix, name in OS_LAYOUTS
                            if init == ttl0 and options_seen.startswith(prefix)), None)
        if id_class[i] != "unknown":
            evidence.append(f"IP ID {id_class[i]}")
        if addr in not_rfc793:
            evidence.append(f"RST to FIN/NULL/Xmas on open ports {not_rfc793[addr]} (not RFC 793: Windows-like)")
            os_name = os_name or "Windows-like"
        if os_name is None and init is not None and n_replies[i]:
            os_name = {64: "Linux/Unix-like", 128: "Windows-like", 255: "network device / Solaris-like",
                       32: "old Windows / embedded"}[init]
        own = mac[i] >= 0 and not gateway[i]
        if own and hops[i] > 0 and i not in rewritten:
            evidence.append(f"frames arrive through a router ({hops[i]} hop{'' if hops[i] == 1 else 's'}): MAC "
                            f"{mac_text(int(mac[i]))} is that router's (a NAT's own address, or a host behind it)")
        out.append(dict(address=addr, mac=mac_text(int(mac[i])) if own else None,
                        vendor=vendor_of(int(mac[i])) if own else None,
                        via=mac_text(int(mac[i])) if mac[i] >= 0 and gateway[i] else None,
                        via_vendor=vendor_of(int(mac[i])) if mac[i] >= 0 and gateway[i] else None,
                        os=(f"{os_name} ({'; '.join(evidence)})" if os_name else None),
                        os_evidence="; ".join(evidence), evidence_frames=frames, packets=int(n_packets[i])))
    out.sort(key=lambda row: address_order(row["address"]))
    return pd.DataFrame(out, columns=list(HOST_COLUMNS))


HOST_COLUMNS = ("address", "mac", "vendor", "via", "via_vendor", "os", "os_evidence", "evidence_frames", "packets")
UNSPECIFIED = ("0.0.0.0", "::")  # the source of a host that has no address yet (DHCP, an ARP or DAD probe): no host
GATEWAY_HOSTS = 3  # addresses behind one MAC, some of them hops away: that MAC is a router's
REWRITE_HOSTS = 5  # remote addresses behind one gateway whose TTLs all sit at 0 hops: a middlebox sets them


def _gateways(mac: np.ndarray, hops: np.ndarray) -> np.ndarray:
    """Per host: whether its frames' source MAC is a router's rather than its own: a MAC that GATEWAY_HOSTS or
    more addresses share, some of them hops away, is the router they come through (a NAT rewriting TTLs hides
    the hops, not the sharing). One address hops away behind a MAC of its own may be a NAT's outside address,
    whose MAC it is: `hosts` says the hops and keeps the MAC. The one address behind a router's MAC at 0 hops is
    the router's own (its frames carry its own MAC): not a host behind it. (Several at 0 hops: a middlebox may
    set their TTLs, `_rewritten_ttls`; none is singled out.)"""
    out = np.zeros(len(mac), bool)
    known = np.flatnonzero(mac >= 0)
    if not len(known):
        return out
    inverse = np.unique(mac[known], return_inverse=True)[1]
    sharing = np.bincount(inverse) >= GATEWAY_HOSTS
    remote = np.bincount(inverse, weights=hops[known] > 0) > 0
    local = hops[known] == 0
    own = local & (np.bincount(inverse, weights=local)[inverse] == 1)
    out[known] = sharing[inverse] & remote[inverse] & ~own
    return out


def _rewritten_ttls(mac: np.ndarray, hops: np.ndarray, ttl: np.ndarray, gateway: np.ndarray) -> dict[int, str]:
    """Hosts behind one gateway MAC whose replies all arrive with one initial TTL, 0 hops, from REWRITE_HOSTS or
    more addresses: real hosts across the Internet sit at many distances, so a middlebox rewrote the TTL (a
    virtual machine's NAT does). Host → the evidence text that replaces its TTL evidence (no OS hint from it)."""
    out: dict[int, str] = {}
    behind = np.flatnonzero((mac >= 0) & (ttl >= 0) & (hops == 0))
    for m in np.unique(mac[behind]):
        mine = behind[mac[behind] == m]
        shared = (mac == m) & (ttl >= 0)
        if len(mine) >= REWRITE_HOSTS and len(np.unique(ttl[mine])) == 1 and len(mine) >= 0.9 * shared.sum():
            text = (f"TTL {int(ttl[mine[0]])} on every reply from {len(mine)} addresses behind {mac_text(int(m))}: a "
                    "middlebox rewrites TTLs there (a virtual machine's NAT does), so the TTL tells nothing of the host")
            out.update({int(i): text for i in mine})
    return out


def _first_frame(groups: np.ndarray, values: np.ndarray, wanted: np.ndarray, frames: np.ndarray, n: int) -> np.ndarray:
    """Per group, the first frame (least number) whose value is the group's wanted one (-1: none)."""
    out = np.full(n, np.iinfo(np.int64).max)
    hit = values == wanted[groups]
    np.minimum.at(out, groups[hit], frames[hit])
    return np.where(out == np.iinfo(np.int64).max, -1, out)


SLICE_ROWS = 1 << 22  # packets read at a time by `hosts`


@dataclass(frozen=True)
class _Rows:
    """Packets at table positions `at`: their senders' host numbers, TCP flags (0 where none) and TTLs (-1 where
    absent, or where the protocol, not the system, sets it)."""

    at: np.ndarray
    host: np.ndarray
    flags: np.ndarray
    ttl: np.ndarray


class _Replies(NamedTuple):
    at: np.ndarray
    host: np.ndarray
    ttl: np.ndarray


def _rows(packets: pd.DataFrame, keys: PacketKeys, at: np.ndarray, host: np.ndarray) -> _Rows:
    """The packets at positions `at`, sent by `host` (8- and 16-bit fields in int32)."""
    flags = np.maximum(int_column_at(packets["tcp_flags"], at, dtype=np.int32), 0)
    proto = int_column_at(packets["ip_proto"], at, dtype=np.int32)
    fixed_ttl = proto == 2
    icmp6 = np.flatnonzero(proto == 58)
    fixed_ttl[icmp6] = np.isin(int_column_at(packets["icmp_type"], at[icmp6], dtype=np.int32), FIXED_TTL_ICMP6)
    # A group destination's TTL is the application's choice (SSDP's and LLMNR's 1, mDNS's 255), not the stack's.
    fixed_ttl |= to_group(keys, at)
    ttl = np.where(fixed_ttl, -1, int_column_at(packets["ttl"], at, dtype=np.int32))  # (a fixed TTL tells nothing)
    return _Rows(at, host, flags, ttl)


def _tallied_modes(tallies: list[tuple[np.ndarray, ...]], n_hosts: int) -> tuple[np.ndarray, np.ndarray]:
    """Per host, over the tallies of every slice: its most frequent value (ties: the least), -1 where none, as
    `_mode` gives it; and that value's first frame, as `_first_frame` does."""
    mode, frame = np.full(n_hosts, -1, np.int64), np.full(n_hosts, -1, np.int64)
    if not tallies:
        return mode, frame
    h, v, count, earliest = added(tallies)  # (each (host, value) once)
    if not len(h):
        return mode, frame
    order = np.lexsort((v, -count, h))  # per host, the most rows first, then the least value
    best = order[np.r_[True, h[order][1:] != h[order][:-1]]]
    mode[h[best]], frame[h[best]] = v[best], earliest[best]
    return mode, frame


class _ToolMade:
    """Which packets a scanning tool made rather than its host's own stack: they tell of the tool, not of the
    host's system.

    - The probes of a scanner whose scan names a tool (`fingerprints`: nmap, masscan, zmap, hping3, …), each
      transmission of them (nmap sends a UDP probe's payload again, each time with a TTL of its own), and
      all it sent the target during an IP protocol scan that names one (GRE, ESP, … are no probes to `match`):
      the tool wrote their headers (nmap's TTL varies at random within 37-59: taken for the host's, it would put
      the scanner 5-27 hops away). A connect scan's probes are the kernel's own, as its tool is "unknown".
    - When nine in ten of those probes carry one TTL (a tool's fixed template: masscan's and zmap's 255), that
      scanner's other packets with that TTL, if some of its packets carry another: the tool's own replies
      (masscan resets each SYN/ACK with its template, next to the kernel's RST with TTL 64). Where every
      packet carries it (hping3 uses the system's 64), none is set apart: the tool copies the system.

    The rule reads every packet twice (the templates, then which senders carry another TTL): a slice at a time.
    """

    def __init__(self, packets: pd.DataFrame, probes: pd.DataFrame, phases: pd.DataFrame, names: np.ndarray,
                 n_hosts: int, slices: Callable[[], Iterator[_Rows]], let_go: _LetGo | None = None) -> None:
        self.packets, self.names = packets, names
        named = phases.groupby(phases["scanner"].astype(str))["tool"].agg(lambda t: " and ".join(sorted(set(t))))
        by_signed = probes["src"].isin(named.index).to_numpy(bool)  # (by category)
        at = np.searchsorted(names, named.index.to_numpy(str)).clip(0, max(n_hosts - 1, 0))
        # per host number of a scanner whose scans name a tool: those tools
        self.tools = {int(i): tools for i, scanner, tools in zip(at, named.index, named) if names[i] == scanner}
        self.signed = np.zeros(n_hosts, bool)
        self.signed[list(self.tools)] = True
        self.probes = np.zeros(len(packets), bool)  # (the tool's probes among all packets)
        self.probes[packet_rows(packets["frame"].to_numpy(), probes["probe_frame"].to_numpy(np.int64)[by_signed])] = True
        again = by_signed & (probes["transmissions"].to_numpy() > 1)
        if again.any():
            self.probes[_sent_again(packets, probes[again], self.probes)] = True
        self.ipproto = phases[phases["type"] == "IPPROTO"]
        counts: dict[int, np.ndarray] = {}  # per scanner, its made packets' TTLs
        for r in slices():
            made = self.made(r)
            with_ttl = made & (r.ttl >= 0)
            scanners, number = unique_inverse(r.host[with_ttl])
            tallied = np.bincount(number * 256 + r.ttl[with_ttl], minlength=len(scanners) * 256).reshape(-1, 256)
            for scanner, row in zip(scanners.tolist(), tallied):
                counts[scanner] = counts.get(scanner, 0) + row
        if let_go is not None:  # (the probes the screen saw sent again: made, where their sender's scan names a tool)
            host, ttl, rows = (part[self.signed[let_go.again[0]]] for part in let_go.again[:3])
            for scanner in np.unique(host).tolist():
                mine = host == scanner
                counts[scanner] = counts.get(scanner, 0) + np.bincount(ttl[mine], rows[mine], 256).astype(np.int64)
        self.made_ttls = np.zeros(n_hosts, np.int64)  # per host, the packets with a TTL a tool made
        self.template = np.full(n_hosts, -1)
        for scanner, row in counts.items():
            self.made_ttls[scanner] = row.sum()
            if row.max() >= 0.9 * row.sum():  # one TTL on nine in ten of its probes
                self.template[scanner] = row.argmax()
        self.other = np.zeros(n_hosts, bool)  # senders with packets of another TTL, their own
        for r in slices():
            self.other[r.host[~self.made(r) & self._another_ttl(r.host, r.ttl)]] = True
        if let_go is not None:  # (none of the packets let go is a probe, nor sent to a group)
            for host, ttl, *_ in (let_go.ttl, self.not_made(let_go.again)):
                self.other[host[self._another_ttl(host, ttl)]] = True

    @classmethod
    def of(cls, packets: pd.DataFrame, probes: pd.DataFrame | None, scans: pd.DataFrame | None, names: np.ndarray,
           n_hosts: int, slices: Callable[[], Iterator[_Rows]], let_go: _LetGo | None = None) -> _ToolMade | None:
        """The rule, or None when no scan names a tool (every packet is then its host's own)."""
        signed = None if scans is None or not len(scans) else scans[scans["tool"].notna() & (scans["tool"] != "unknown")]
        if probes is None or signed is None or not len(signed) or not n_hosts:
            return None
        return cls(packets, probes, signed, names, n_hosts, slices, let_go)

    def made(self, r: _Rows) -> np.ndarray:
        """The tool's probes among the packets `r`, and what it sent during its IP protocol scans."""
        made = self.probes[r.at]
        _ip_protocol_probes(self.packets, self.ipproto, r.at, r.host, self.names, made)
        return made

    def _another_ttl(self, host: np.ndarray, ttl: np.ndarray) -> np.ndarray:
        """Packets with a TTL other than their sender's tool template (any TTL, where it has none)."""
        return (ttl >= 0) & (ttl != self.template[host])

    def own(self, r: _Rows) -> np.ndarray:
        """Which of a slice's packets the hosts' own stacks sent."""
        return ~self.made(r) & self.own_ttl(r.host, r.ttl)

    def not_made(self, again: Tally) -> Tally:
        """Of a tally of packets that sent a probe again (a screen's), those of senders whose scans name no tool."""
        return tuple(part[~self.signed[again[0]]] for part in again)

    def own_tally(self, tallied: Tally) -> Tally:
        """Of a tally of packets no tool made, those their hosts' own stacks sent (`own_ttl`)."""
        return tuple(part[self.own_ttl(tallied[0], tallied[1])] for part in tallied)

    def own_ttl(self, host: np.ndarray, ttl: np.ndarray) -> np.ndarray:
        """Of packets no tool made (all of a screen's let go), those their hosts' own stacks sent, by host and TTL:
        not those with the template's TTL from a sender whose other packets carry another."""
        return ~((ttl >= 0) & (ttl == self.template[host]) & self.other[host])


def _sent_again(packets: pd.DataFrame, probes: pd.DataFrame, own: np.ndarray) -> np.ndarray:
    """Rows of the packets table, other than the probes' own (`own`), that send one of `probes` again: from its
    address to its target, alike in what `match` groups a probe's transmissions by (`sent_identity`)."""
    src = packets["src"].cat.categories.get_indexer(probes["src"].astype(object))
    dst = packets["dst"].cat.categories.get_indexer(probes["dst"].astype(object))
    rows = np.flatnonzero(np.isin(packets["src"].cat.codes.to_numpy(), np.unique(src)) & ~own)
    if not len(rows):
        return rows
    sent = (packets["src"].cat.codes.to_numpy()[rows], packets["dst"].cat.codes.to_numpy()[rows],
            *sent_identity(packets, rows))
    ids = group_ids(*(np.concatenate([a, b]) for a, b in zip((src, dst, *probe_identity(probes)), sent)))
    return rows[np.isin(ids[len(probes):], ids[:len(probes)])]


@dataclass(frozen=True)
class _LetGo:
    """The screen's tallies (`others`) by host number: packets per host, (host, TTL) and (host, MAC) tallies,
    and the (host, TTL) tally of the packets that sent a probe again."""

    packets: np.ndarray
    ttl: Tally
    mac: Tally
    again: Tally

    @classmethod
    def of(cls, others: Tallies, names: np.ndarray) -> _LetGo:
        at = np.searchsorted(names, others.names).clip(0, max(len(names) - 1, 0))
        host = np.where(names[at] == others.names, at, -1) if len(names) else np.full(len(others.names), -1)
        sent = np.flatnonzero(others.packets)
        sent = sent[host[sent] >= 0]  # (every sender is a host, but an unspecified address)
        packets = np.bincount(host[sent], weights=others.packets[sent], minlength=len(names)).astype(np.int64)
        return cls(packets, *(_of_hosts(host, t) for t in (others.ttl, others.mac, others.again)))


def _of_hosts(host: np.ndarray, t: Tally) -> Tally:
    """A tally by sender id → by host number, the senders that are no host left out."""
    mine = host[t[0]]
    keep = mine >= 0
    return (mine[keep], *(x[keep] for x in t[1:])) if not keep.all() else (mine, *t[1:])


def _ip_protocol_probes(packets: pd.DataFrame, phases: pd.DataFrame, rows: np.ndarray, host: np.ndarray,
                        names: np.ndarray, made: np.ndarray) -> None:
    """Marks in `made` (over `rows`) what each IP protocol scan's scanner sent its target within the phase."""
    if not len(phases):
        return
    number = {name: i for i, name in enumerate(names.tolist())}
    scanner = np.array([number.get(a, -1) for a in phases["scanner"].astype(str)])
    near = np.flatnonzero(np.isin(host, scanner))  # (the scanners' rows: few, where any)
    dst = packets["dst"].array.take(rows[near]).astype(str)
    when = packets["ts_ns"].to_numpy()[rows[near]] / 1e9
    for s, target, first, last in zip(scanner, phases["target"].astype(str), phases["first"], phases["last"]):
        made[near[(host[near] == s) & (dst == target) & (when >= first) & (when <= last)]] = True


def _mode(groups: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group (0..n_groups-1), its most frequent value, the least of those tied (as Series.mode gives
    them first); -1 where the group has none. values: integers, -1 where missing (not counted). `keys.modes`
    finds groups of one value (a host's MAC, mostly) without counting."""
    present = values >= 0
    if not present.all():  # (most often every row holds a value: no copy)
        groups, values = groups[present], values[present]
    out = np.full(n_groups, -1, np.int64)
    if len(groups):
        group, (mode,), _ = modes(groups, [values.astype(np.int64, copy=False)])
        out[group] = mode
    return out


def _rst_on_open_ports(states: pd.DataFrame | None) -> dict[str, list[int]]:
    """Targets that reset FIN/NULL/Xmas probes on ports a SYN or connect scan found open: up to 5 such ports each."""
    if states is None or not len(states):
        return {}
    kind, state = states["type"], states["state"]
    stealth = (kind.isin(["FIN", "NULL", "XMAS"]) & (state == "closed")).to_numpy(bool)
    if not stealth.any():  # (no stealth scan found a port closed: nothing to compare)
        return {}
    open_syn = states.loc[kind.isin(["SYN", "CONNECT"]) & (state == "open"), ["target", "port"]]
    stealth_closed = states.loc[stealth, ["target", "port"]]
    both = open_syn.merge(stealth_closed).drop_duplicates()
    return both.groupby("target")["port"].agg(lambda ports: sorted(ports.tolist())[:5]).to_dict()
