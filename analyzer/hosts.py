"""Packets + probes → what the capture tells of each host: MAC, vendor, and OS hints with their evidence.

Vendors come from an offline OUI table (Debian's `ieee-data`, else Wireshark's `manuf`); nothing is
fetched. OS hints are evidence, not verdicts: the initial TTL a reply implies (the next of 32, 64, 128,
255 at or above the TTL seen), the SYN/ACK window and TCP option layout, the IP ID sequence class, and
RFC 793 non-compliance (a RST to a FIN/NULL/Xmas probe on a port a SYN probe found open, as Windows does).
"""

from __future__ import annotations

import functools
import os
import re

import numpy as np
import pandas as pd

from .flags import ACK, RST, SYN

OUI_FILES = ("/usr/share/ieee-data/oui.txt", "/usr/share/wireshark/manuf")
OPTION_NAMES = {0: "EOL", 1: "NOP", 2: "MSS", 3: "WS", 4: "SACK", 5: "SACKblk", 8: "TS", 30: "MPTCP", 34: "TFO"}
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


@functools.cache
def oui_table() -> dict[int, str]:
    """24-bit OUI → organisation, from the first table installed (empty when none is)."""
    table: dict[int, str] = {}
    for path in OUI_FILES:
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if path.endswith("oui.txt"):
                    m = re.match(r"^([0-9A-F]{2})-([0-9A-F]{2})-([0-9A-F]{2})\s+\(hex\)\s+(.*\S)", line)
                    if m:
                        table[int("".join(m.groups()[:3]), 16)] = m.group(4)
                else:
                    m = re.match(r"^([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2})\t([^\t\n]+)(?:\t([^\n]+))?", line)
                    if m:
                        table[int("".join(m.groups()[:3]), 16)] = m.group(5) or m.group(4)
        if table:
            break
    return table


def mac_text(mac: int) -> str:
    return ":".join(f"{(mac >> s) & 0xFF:02x}" for s in range(40, -1, -8))


def vendor_of(mac: int) -> str:
    if (mac >> 40) & 0x02:
        return "locally administered (virtual or randomised)"
    return oui_table().get(mac >> 24, "unknown")


def initial_ttl(ttl: int) -> int:
    return next(t for t in (32, 64, 128, 255) if ttl <= t)


def option_layout(kinds: int) -> str:
    """packets.tcp_options (kinds left-aligned, top byte first) → "MSS,SACK,TS,NOP,WS"."""
    names = []
    for shift in range(56, -1, -8):
        k = (kinds >> shift) & 0xFF
        if k == 0 and not names:
            continue
        if k == 0 and all(((kinds >> s) & 0xFF) == 0 for s in range(shift, -1, -8)):
            break
        names.append(OPTION_NAMES.get(k, str(k)))
    return ",".join(names)


def ip_id_class(ids: np.ndarray) -> str:
    """nmap's sequence classes, simplified: zero, constant, incremental (by 1 or small steps), random."""
    if len(ids) < 2:
        return "unknown"
    if (ids == 0).all():
        return "zero"
    if (ids == ids[0]).all():
        return "constant"
    steps = np.diff(ids.astype(np.int64)) % 65536
    if (steps < 1000).mean() > 0.9:
        return "incremental"
    return "random"


def hosts(packets: pd.DataFrame, probes: pd.DataFrame | None = None, states: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per IP address seen as a source: mac, vendor, os (hint), os_evidence, packets."""
    # IP packets by their source, and ARP frames by their sender: a host that only answered ARP is a host.
    ip = packets[(packets["ip_version"] > 0) | packets["arp_op"].notna()]
    rows = []
    flags = ip["tcp_flags"].fillna(0).astype(int)
    for addr, hp in ip.groupby(ip["src"].astype(str), sort=True, observed=True):
        macs = hp["eth_src"].dropna()
        mac = int(macs.mode().iloc[0]) if len(macs) else None
        evidence = []
        os_name = None
        hf = flags.loc[hp.index]
        synacks = hp[(hf & (SYN | ACK)) == (SYN | ACK)]
        rsts = hp[(hf & RST) != 0]
        replies = pd.concat([synacks, rsts])
        ttl_source = replies if len(replies) else hp
        ttls = ttl_source["ttl"].dropna().astype(int)
        if len(ttls):
            ttl = int(ttls.mode().iloc[0])
            init = initial_ttl(ttl)
            evidence.append(f"TTL {ttl} (initial {init}, {init - ttl} hops)")
        else:
            init = None
        if len(synacks):
            win = int(synacks["window"].mode().iloc[0])
            layout = option_layout(int(synacks["tcp_options"].fillna(0).astype("UInt64").mode().iloc[0]))
            evidence.append(f"SYN/ACK window {win}, options {layout or 'none'}")
            for ttl0, prefix, name in OS_LAYOUTS:
                if init == ttl0 and layout.startswith(prefix):
                    os_name = name
                    break
        ids = replies["ip_id"].dropna().astype(int).to_numpy()
        if len(ids) >= 3:
            evidence.append(f"IP ID {ip_id_class(ids)}")
        if states is not None and len(states):
            mine = states[states["target"] == addr]
            open_syn = set(mine[(mine["type"].isin(["SYN", "CONNECT"])) & (mine["state"] == "open")]["port"])
            stealth_closed = set(mine[(mine["type"].isin(["FIN", "NULL", "XMAS"])) & (mine["state"] == "closed")]["port"])
            if open_syn & stealth_closed:
                evidence.append(f"RST to FIN/NULL/Xmas on open ports {sorted(open_syn & stealth_closed)[:5]} "
                                "(not RFC 793: Windows-like)")
                os_name = os_name or "Windows-like"
        if os_name is None and init is not None and len(replies):
            os_name = {64: "Linux/Unix-like", 128: "Windows-like", 255: "network device / Solaris-like",
                       32: "old Windows / embedded"}[init]
        rows.append(dict(address=addr, mac=mac_text(mac) if mac is not None else None,
                         vendor=vendor_of(mac) if mac is not None else None,
                         os=(f"{os_name} ({'; '.join(evidence)})" if os_name else None),
                         os_evidence="; ".join(evidence), packets=len(hp)))
    return pd.DataFrame(rows, columns=["address", "mac", "vendor", "os", "os_evidence", "packets"])
