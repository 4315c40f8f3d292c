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

import numpy as np
import pandas as pd

from ..protocols import ACK, RST, SYN, initial_ttl
from .columns import column_codes, int_column_at, packet_rows
from .exchanges import PacketKeys, to_group
from .groups import modes, unique_inverse
from .stacks import ip_id_classes, option_layout

# The packets-table and probes-table columns `hosts` reads.
PACKET_FIELDS = ("frame", "eth_src", "eth_dst", "ip_version", "src", "dst", "arp_op", "ttl", "ip_id", "ip_proto",
                 "icmp_type", "tcp_flags", "window", "tcp_options")
# Packets whose TTL the protocol fixes, not the system: IGMP (TTL 1, RFC 2236/3376); ICMPv6 multicast listener
# messages (hop limit 1, RFC 2710/3810: types 130-132, 143) and neighbour discovery (255, RFC 4861: 133-137).
FIXED_TTL_ICMP6 = (130, 131, 132, 133, 134, 135, 136, 137, 143)
PROBE_FIELDS = ("probe_frame", "src", "ip_version", "flags")

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
          scans: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per IP address seen as a source: mac, vendor, os (hint), os_evidence, packets.

    With the probes and the scans table (`analyzer.scans`), a scanning tool's own packets are not taken for
    its host's: see `_tool_made`. Without them, every packet a host sent is its own."""
    # IP packets by their source, and ARP frames by their sender: a host that only answered ARP is a host.
    src, addresses = column_codes(packets["src"])
    addresses = addresses.astype(str)
    rows = np.flatnonzero(((packets["ip_version"].to_numpy() > 0) | packets["arp_op"].notna().to_numpy()) & (src >= 0))
    seen = np.flatnonzero(np.bincount(src[rows], minlength=len(addresses)))
    seen = seen[np.argsort(addresses[seen], kind="stable")]  # hosts in address text order
    number = np.full(len(addresses), -1, np.int32)  # (a row-long array: in 32 bits)
    number[seen] = np.arange(len(seen))
    host, n_hosts = number[src[rows]], len(seen)

    def column(name: str, at: np.ndarray | None = None, dtype: type = np.int32) -> np.ndarray:
        """Column `name` at rows[at] (at None: every row), -1 where missing; 8- and 16-bit fields in int32."""
        return int_column_at(packets[name], rows if at is None else rows[at], dtype=dtype)

    flags = np.maximum(column("tcp_flags"), 0)
    proto = column("ip_proto")
    fixed_ttl = proto == 2
    icmp6 = np.flatnonzero(proto == 58)
    fixed_ttl[icmp6] = np.isin(column("icmp_type", icmp6), FIXED_TTL_ICMP6)
    # A group destination's TTL is the application's choice (SSDP's and LLMNR's 1, mDNS's 255), not the stack's.
    fixed_ttl |= to_group(PacketKeys(packets), rows)
    all_ttls = np.where(fixed_ttl, -1, column("ttl"))  # (a TTL the protocol fixes tells nothing: as if absent)
    own = ~_tool_made(packets, probes, scans, rows, host, addresses[seen], all_ttls)  # what their own stacks sent
    synacks = np.flatnonzero(((flags & (SYN | ACK)) == (SYN | ACK)) & own)
    replies = np.concatenate([synacks, np.flatnonzero(((flags & RST) != 0) & own)])  # SYN/ACKs, then RSTs
    n_replies, n_synacks = np.bincount(host[replies], minlength=n_hosts), np.bincount(host[synacks], minlength=n_hosts)
    ttl_rows = np.concatenate([replies, np.flatnonzero((n_replies[host] == 0) & own)])  # replies, else every packet
    ttl = _mode(host[ttl_rows], all_ttls[ttl_rows], n_hosts)
    eth = column("eth_src", dtype=np.int64)
    eth[eth == 0] = -1  # (00:00:00:00:00:00: loopback and cooked captures carry no address, not Xerox's)
    mac = _mode(host, eth, n_hosts)
    frame = packets["frame"].to_numpy()  # (taken at the rows a reading needs: not copied whole)
    ttl_frame = _first_frame(host[ttl_rows], all_ttls[ttl_rows], ttl, frame[rows[ttl_rows]], n_hosts)
    synack_frame = np.full(n_hosts, -1)
    np.minimum.at(synack_frame, host[synacks][::-1], -frame[rows[synacks]][::-1])  # (the first SYN/ACK's, negated)
    synack_frame = -synack_frame
    window = _mode(host[synacks], column("window", synacks), n_hosts)
    option_code, options = pd.factorize(packets["tcp_options"].array[rows[synacks]].fillna(0), sort=True)
    layout = _mode(host[synacks], option_code.astype(np.int64), n_hosts)
    ids = column("ip_id", replies)
    _, id_class = ip_id_classes(host[replies][ids >= 0], ids[ids >= 0], n_hosts)
    not_rfc793 = _rst_on_open_ports(states)
    n_packets = np.bincount(host, minlength=n_hosts)

    hops = np.where(ttl >= 0, initial_ttl(ttl) - ttl, -1)
    gateway = _gateways(mac, hops)
    rewritten = _rewritten_ttls(mac, hops, ttl, gateway)
    out = []
    for i, addr in enumerate(addresses[seen].tolist()):
        evidence, frames = [], []
        os_name = init = None
        if ttl[i] >= 0 and i in rewritten:
            evidence.append(rewritten[i])
        elif ttl[i] >= 0:
            init = initial_ttl(int(ttl[i]))
            evidence.append(f"TTL {ttl[i]} (initial {init}, {init - int(ttl[i])} hops)")
            frames.append(int(ttl_frame[i]))
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
            evidence.append(f"frames arrive through a router ({hops[i]} hop(s)): MAC {mac_text(int(mac[i]))} is that "
                            "router's (a NAT's own address, or a host behind it)")
        out.append(dict(address=addr, mac=mac_text(int(mac[i])) if own else None,
                        vendor=vendor_of(int(mac[i])) if own else None,
                        via=mac_text(int(mac[i])) if mac[i] >= 0 and gateway[i] else None,
                        via_vendor=vendor_of(int(mac[i])) if mac[i] >= 0 and gateway[i] else None,
                        os=(f"{os_name} ({'; '.join(evidence)})" if os_name else None),
                        os_evidence="; ".join(evidence), evidence_frames=frames, packets=int(n_packets[i])))
    return pd.DataFrame(out, columns=list(HOST_COLUMNS))


HOST_COLUMNS = ("address", "mac", "vendor", "via", "via_vendor", "os", "os_evidence", "evidence_frames", "packets")
GATEWAY_HOSTS = 3  # addresses behind one MAC, some of them hops away: that MAC is a router's
REWRITE_HOSTS = 5  # remote addresses behind one gateway whose TTLs all sit at 0 hops: a middlebox sets them


def _gateways(mac: np.ndarray, hops: np.ndarray) -> np.ndarray:
    """Per host: whether its frames' source MAC is a router's rather than its own: a MAC that GATEWAY_HOSTS or
    more addresses share, some of them hops away, is the router they come through (a NAT rewriting TTLs hides
    the hops, not the sharing). One address hops away behind a MAC of its own may be a NAT's outside address,
    whose MAC it is: `hosts` says the hops and keeps the MAC."""
    out = np.zeros(len(mac), bool)
    known = np.flatnonzero(mac >= 0)
    if not len(known):
        return out
    inverse = np.unique(mac[known], return_inverse=True)[1]
    sharing = np.bincount(inverse) >= GATEWAY_HOSTS
    remote = np.bincount(inverse, weights=hops[known] > 0) > 0
    out[known] = sharing[inverse] & remote[inverse]
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


def _tool_made(packets: pd.DataFrame, probes: pd.DataFrame | None, scans: pd.DataFrame | None, rows: np.ndarray,
               host: np.ndarray, names: np.ndarray, ttl: np.ndarray) -> np.ndarray:
    """Which of the packets at `rows` (sent by `host`, with TTL `ttl`, -1 where none) a scanning tool made
    rather than its host's own stack: they tell of the tool, not of the host's system.

    - The probes of a scanner whose scan names a tool (`fingerprints`: nmap, masscan, zmap, hping3, …), and
      all it sent the target during an IP protocol scan that names one (GRE, ESP, … are no probes to `match`):
      the tool wrote their headers (nmap's TTL varies at random within 37-59: taken for the host's, it would put
      the scanner 5-27 hops away). A connect scan's probes are the kernel's own, as its tool is "unknown".
    - When nine in ten of those probes carry one TTL (a tool's fixed template: masscan's and zmap's 255), that
      scanner's other packets with that TTL, if some of its packets carry another: the tool's own replies
      (masscan resets each SYN/ACK with its template, next to the kernel's RST with TTL 64). Where every
      packet carries it (hping3 uses the system's 64), none is set apart: the tool copies the system.
    """
    if probes is None or scans is None or not len(scans) or not len(rows):
        return np.zeros(len(rows), bool)
    signed_phases = scans[scans["tool"].notna() & (scans["tool"] != "unknown")]
    if not len(signed_phases):
        return np.zeros(len(rows), bool)
    by_signed = probes["src"].isin(signed_phases["scanner"].astype(str).unique()).to_numpy(bool)  # (by category)
    made = np.zeros(len(packets), bool)
    made[packet_rows(packets["frame"].to_numpy(), probes["probe_frame"].to_numpy(np.int64)[by_signed])] = True
    made = made if len(rows) == len(made) else made[rows]  # (rows: the IP and ARP rows, often all of them)
    _ip_protocol_probes(packets, signed_phases[signed_phases["type"] == "IPPROTO"], rows, host, names, made)
    with_ttl = np.flatnonzero(made & (ttl >= 0))
    scanners, number = unique_inverse(host[with_ttl])  # (a few hosts: TTLs counted per host)
    counts = np.bincount(number * 256 + ttl[with_ttl], minlength=len(scanners) * 256).reshape(-1, 256)
    fixed = counts.max(axis=1) >= 0.9 * counts.sum(axis=1)  # one TTL on nine in ten of its probes
    template = np.full(int(host.max()) + 1, -1)
    template[scanners[fixed]] = counts.argmax(axis=1)[fixed]
    like = ~made & (ttl >= 0) & (ttl == template[host])
    other = np.bincount(host[~made & ~like & (ttl >= 0)], minlength=len(template)) > 0
    return made | (like & other[host])


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
