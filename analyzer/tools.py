"""Which tool sent a scan phase, from what its probes' headers give away. Each signature names its evidence.

=========  ========================================================================================
tool       signature of its probes (all must hold over the phase)
=========  ========================================================================================
zmap       IPv4 ID 54321 on every probe; TTL 255
masscan    TTL 255; TCP window 1024 or 1025; SYN options none or MSS 1460 alone (its templates)
nmap       raw probes: TTL varies within 37–59 (nmap picks one at random per probe), or TCP window in
           {1024, 2048, 3072, 4096} with SYN options exactly MSS 1460 and one source port for the phase
qscan.nse TTL 128, IPv4 ID 0x55d1 (21969) and window 3072 on every probe (its fixed template)
hping3     no TCP options, one window for the phase, source port rising by one per probe (its defaults)
=========  ========================================================================================

A connect() scan is sent by the scanner's kernel, so no tool signature survives: "unknown".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MSS_ONLY = 0x02 << 56  # packets.tcp_options: kinds left-aligned, first option in the top byte


def _signature(probe_pkts: pd.DataFrame, technique: str) -> tuple[str, str]:
    ttl = probe_pkts["ttl"].dropna().astype(int).to_numpy()
    ipid = probe_pkts["ip_id"].dropna().astype(int).to_numpy()
    tcp = probe_pkts[probe_pkts["ip_proto"] == 6]
    win = tcp["window"].dropna().astype(int).to_numpy()
    opts = tcp["tcp_options"].astype("Float64").fillna(0).to_numpy()
    mss = tcp["mss"].fillna(0).astype(int).to_numpy()
    sport = probe_pkts["sport"].dropna().astype(int).to_numpy()
    v4 = (probe_pkts["ip_version"] == 4).all()
    if technique == "CONNECT":
        return "unknown", "connect(): probes are the scanner kernel's own SYNs"
    if len(ttl) == 0:
        return "unknown", ""
    if v4 and len(ipid) and (ipid == 0x55D1).all() and (ttl == 128).all() and len(win) and (win == 3072).all():
        return "nmap", "qscan.nse: TTL 128, IP ID 0x55d1, window 3072 on every probe (its fixed template)"
    if v4 and len(ipid) and (ipid == 54321).all() and (ttl == 255).all():
        return "zmap", "IP ID 54321 and TTL 255 on every probe"
    syn_opts_ok = (len(opts) == 0) or bool(np.isin(opts, (0, MSS_ONLY)).all() and (mss[opts == MSS_ONLY] == 1460).all())
    if (ttl == 255).all() and len(win) and np.isin(win, (1024, 1025)).all() and syn_opts_ok:
        return "masscan", "TTL 255, window 1024/1025, options none or MSS 1460 (masscan's template)"
    ttl_nmap = (ttl >= 37).all() and (ttl <= 59).all() and len(np.unique(ttl)) > 1
    nmap_win = len(win) > 0 and np.isin(win, (1024, 2048, 3072, 4096)).all()
    one_port = len(sport) > 0 and (pd.Series(sport).value_counts().iloc[0] >= 0.8 * len(sport))
    if ttl_nmap:
        return "nmap", f"TTL varies within 37–59 ({len(np.unique(ttl))} values): nmap's random TTL"
    if nmap_win and one_port and syn_opts_ok:
        return "nmap", "window in {1024,2048,3072,4096}, options none or MSS 1460, one source port"
    if len(win) and (win == win[0]).all() and (opts == 0).all() and len(sport) > 2:
        steps = np.diff(sport)  # in send order; each hping3 run starts again from its base port
        if (steps == 1).sum() >= 0.5 * len(steps) and (steps > 1).mean() < 0.2:
            return "hping3", f"no options, window {win[0]}, source port rising by one per probe"
    return "unknown", ""


def tool_of_phase(packets: pd.DataFrame, phase_probes: pd.DataFrame, technique: str) -> tuple[str, str]:
    """Tool and evidence for one phase: its probes (column probe_frame) and its technique."""
    frames = phase_probes["probe_frame"].to_numpy()
    if np.array_equal(packets["frame"].to_numpy(), np.arange(1, len(packets) + 1)):
        rows = frames - 1
    else:  # a filtered packets table: look frames up
        rows = np.searchsorted(packets["frame"].to_numpy(), frames)
    return _signature(packets.iloc[rows], technique)
