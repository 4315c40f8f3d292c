"""Packets + probes → port scans: who scanned whom, with which technique, and what each port's state was.

Every rule is in one place and visible (STYLE: "classify in one place"):

* A probe's **technique** follows from its protocol and TCP flags alone (`TECHNIQUES`); a SYN phase is a
  CONNECT scan when the prober completed handshakes (an ACK answering the SYN/ACK), and an ACK phase is
  read as a WINDOW scan when its RSTs carry non-zero windows (the probes are the same; only the reading
  of the replies differs, as in nmap's -sA and -sW).
* A probe is **scan-like** when its prober sent no payload on the 4-tuple (ordinary clients send data;
  scanners, even connect() scanners, do not). A set of scan-like probes is a **scan** when it touches at
  least `MIN_PORTS` ports of one target (vertical), or one port of `MIN_HOSTS` targets (horizontal), or
  uses stealth flags (anything but a bare SYN), or repeats `MIN_REPEATS` SYNs to one port (qscan-style).
  A UDP probe is scan-like when empty, from a source port used for several ports, or a retransmission of
  such a probe from a new source port (`_udp_scan_like`: nmap's retries of its protocol payloads).
* **Phases**: per scanner, probes of one technique; a silence longer than `PHASE_GAP_S` starts a new one.
* **Port states**: nmap's rules per technique (`state_of`), from the first reply to any of the port's
  probes in the phase. No reply is "filtered" / "open|filtered" as nmap would say; a port whose replies
  contradict each other is "unknown" rather than a guess. A reply a target's rate limit swallowed is no
  reply: the port reads as nmap reads silence (filtered, open|filtered), never closed. A SYN/ACK lost from
  the capture (not the network) shows in the scanner's own reset of it (seq = probe seq + 1): the port is
  open, not filtered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .flags import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, flag_text
from .match import match as match_probes

MIN_PORTS = 3
MIN_HOSTS = 5
MIN_REPEATS = 5
PHASE_GAP_S = 60.0
# ICMP destination-unreachable codes nmap reads as "filtered" (3, port unreachable, is "closed" for UDP)
FILTERED_CODES = (0, 1, 2, 3, 9, 10, 13)
ICMP6_FILTERED_CODES = (0, 1, 3, 4)  # no route, admin prohibited, address unreachable, port (TCP)

# flags (SYN, ACK, FIN, RST, PSH, URG, ECE, CWR) of the probe → technique, as nmap names its scans
TECHNIQUES: dict[int, str] = {
    SYN: "SYN",
    FIN: "FIN",
    0: "NULL",
    FIN | PSH | URG: "XMAS",
    ACK: "ACK",
    FIN | ACK: "MAIMON",
    RST: "RST",
}
STATE_RULES = """
technique        reply                         state
SYN, CONNECT     SYN/ACK                       open
                 RST                           closed
                 ICMP unreachable (filtering)  filtered
                 none                          filtered
FIN, NULL, XMAS, MAIMON, RST
                 RST                           closed
                 ICMP unreachable              filtered
                 none                          open|filtered
ACK              RST                           unfiltered
                 ICMP unreachable / none       filtered
WINDOW           RST with window > 0           open
                 RST with window 0             closed
                 ICMP unreachable / none       filtered
UDP              UDP                           open
                 ICMP port unreachable         closed
                 other ICMP unreachable        filtered
                 none                          open|filtered
CUSTOM           as SYN (nmap's default base for --scanflags)
IPPROTO          reply in that protocol        open
                 ICMP protocol unreachable     closed
                 other ICMP unreachable        filtered
                 none                          open|filtered
"""


@dataclass(frozen=True)
class ScanConfig:
    min_ports: int = MIN_PORTS
    min_hosts: int = MIN_HOSTS
    min_repeats: int = MIN_REPEATS
    phase_gap_s: float = PHASE_GAP_S


def technique_of(protocol: str, flags: int) -> str:
    """The scan technique a single probe belongs to (before the SYN/CONNECT and ACK/WINDOW readings)."""
    return str(techniques(np.array([protocol]), np.array([flags]))[0])


def techniques(protocol: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """The technique of each probe, from its protocol and TCP flags (`TECHNIQUES`)."""
    base = flags & (SYN | ACK | FIN | RST | PSH | URG | ECE | CWR)
    out = np.full(len(flags), "CUSTOM", dtype=object)
    for bits, name in TECHNIQUES.items():
        out[base == bits] = name
    out[protocol == "udp"] = "UDP"
    out[protocol == "icmp"] = "PING"
    return out


def states(technique: np.ndarray, kind: np.ndarray, icmp_type: np.ndarray, icmp_code: np.ndarray,
           window: np.ndarray, ip_version: np.ndarray) -> np.ndarray:
    """nmap's reading of each probe's reply, or of none (see STATE_RULES): the one copy of the rules.

    kind: reply kind text ("" for none); icmp_type / icmp_code -1 where absent.
    """
    unreach = (kind == "icmp") & (((ip_version == 4) & (icmp_type == 3)) | ((ip_version == 6) & (icmp_type == 1)))
    port_unreach = unreach & (((ip_version == 4) & (icmp_code == 3)) | ((ip_version == 6) & (icmp_code == 4)))
    synack, rst, udp = kind == "syn-ack", kind == "rst", kind == "udp"
    t = technique
    stealth = np.isin(t, ("FIN", "NULL", "XMAS", "MAIMON", "RST"))
    conds = [
        (t == "UDP") & udp, (t == "UDP") & port_unreach, (t == "UDP") & unreach, t == "UDP",
        np.isin(t, ("SYN", "CONNECT", "CUSTOM")) & synack, np.isin(t, ("SYN", "CONNECT", "CUSTOM")) & rst,
        np.isin(t, ("SYN", "CONNECT", "CUSTOM")),
        stealth & rst, stealth & synack, stealth & unreach, stealth,
        (t == "ACK") & rst, t == "ACK",
        (t == "WINDOW") & rst & (window > 0), (t == "WINDOW") & rst, t == "WINDOW",
    ]
    choices = ["open", "closed", "filtered", "open|filtered", "open", "closed", "filtered", "closed", "unknown",
               "filtered", "open|filtered", "unfiltered", "filtered", "open", "closed", "filtered"]
    return np.select(conds, choices, "unknown")


def state_of(technique: str, reply_kind: str | None, icmp_type: int, icmp_code: int, window: int,
             ip_version: int) -> str:
    """`states` for one probe."""
    return str(states(np.array([technique], dtype=object), np.array([reply_kind or ""]), np.array([icmp_type]),
                      np.array([icmp_code]), np.array([window]), np.array([ip_version]))[0])


def _scan_like(packets: pd.DataFrame, probes: pd.DataFrame) -> np.ndarray:
    """Probes whose prober never sent payload on the probe's 4-tuple (ordinary clients do)."""
    data = packets[(packets["payload_len"].fillna(0) > 0) & packets["sport"].notna() & (packets["ip_proto"] == 6)]
    tcp = probes["protocol"].astype(str).to_numpy() == "tcp"
    if data.empty or not tcp.any():
        return np.ones(len(probes), bool)
    sent = pd.MultiIndex.from_arrays([data["src"].astype(str), data["dst"].astype(str), data["sport"].astype(int),
                                      data["dport"].astype(int)]).unique()
    keys = pd.MultiIndex.from_arrays([probes["src"].astype(str), probes["dst"].astype(str),
                                      probes["sport"].fillna(0).astype(int), probes["dport"].fillna(0).astype(int)])
    # UDP and ICMP carry payload by nature: they are judged by breadth alone, later.
    return ~(keys.isin(sent) & tcp)


def _tcp_pings(p: pd.DataFrame, icmp_probes: pd.DataFrame) -> np.ndarray:
    """TCP probes that belong to host discovery: SYN to 443 / ACK to 80 (nmap -sn's set) sent to hosts the
    same scanner also queried with ICMP, and no other TCP port of those hosts probed."""
    if icmp_probes.empty or p.empty:
        return np.zeros(len(p), bool)
    queried = set(zip(icmp_probes["src"].astype(str), icmp_probes["dst"].astype(str)))
    pair = list(zip(p["src"].astype(str), p["dst"].astype(str)))
    tcp = p["protocol"].astype(str).to_numpy() == "tcp"
    ports_per_pair = p[tcp].groupby([p["src"].astype(str), p["dst"].astype(str)])["dport"].nunique()
    ping_port = np.isin(p["dport"].fillna(0).astype(int).to_numpy(), (80, 443))
    few = np.array([ports_per_pair.get(k, 0) <= 2 for k in pair])
    return tcp & ping_port & few & np.array([k in queried for k in pair])


def _udp_scan_like(packets: pd.DataFrame, probes: pd.DataFrame) -> np.ndarray:
    """UDP probes that look like a scanner's: from a source port reused for several destination ports
    (nmap keeps one), or empty, or a retransmission of such a probe. A client's requests come from fresh
    ports and carry a request.

    A retransmission repeats an earlier scanner probe (same sender, target, port and payload length) from
    another source port: nmap re-sends its protocol payloads (DNS, SNMP, NTP, NetBIOS …) from its scan port
    plus the try number. A client asking again sends a new request (a new DNS id and name), and a client
    never had a scanner probe to repeat: ordinary traffic stays ordinary."""
    udp = probes["protocol"].astype(str).to_numpy() == "udp"
    out = np.ones(len(probes), bool)
    if not udp.any():
        return out
    u = probes[udp]
    rows = np.searchsorted(packets["frame"].to_numpy(), u["probe_frame"].to_numpy())
    payload = packets["payload_len"].fillna(0).to_numpy()[rows]
    shared = u.groupby([u["src"].astype(str), u["sport"].astype(int)])["dport"].transform("nunique").to_numpy() >= 3
    scanner = (payload == 0) | shared
    ts = u["ts_ns"].to_numpy()
    same_request = [u["src"].astype(str).to_numpy(), u["dst"].astype(str).to_numpy(), u["dport"].astype(int).to_numpy(),
                    payload]
    first_scanner_ts = pd.Series(np.where(scanner, ts, np.nan)).groupby(same_request).transform("min").to_numpy()
    retry = ts > first_scanner_ts  # NaN (no scanner probe to repeat) compares False
    out[np.flatnonzero(udp)] = scanner | retry
    return out


def _scanner_resets(packets: pd.DataFrame, probes: pd.DataFrame) -> np.ndarray:
    """SYN probes whose sender later reset the connection with seq = probe seq + 1: its kernel had received a
    SYN/ACK, whether or not the capture holds it (a reply lost from the capture, not from the network)."""
    flags = packets["tcp_flags"].fillna(0).astype(int)
    rst = packets[(flags & (RST | SYN | ACK)) == RST]
    tcp_syn = (probes["protocol"].astype(str) == "tcp").to_numpy() & (probes["flags"].fillna(0).astype(int) == SYN).to_numpy()
    if rst.empty or not tcp_syn.any():
        return np.zeros(len(probes), bool)
    resets = pd.MultiIndex.from_arrays([rst["src"].astype(str), rst["dst"].astype(str), rst["sport"].astype(int),
                                        rst["dport"].astype(int), rst["seq"].astype(np.int64)])
    keys = pd.MultiIndex.from_arrays([probes["src"].astype(str), probes["dst"].astype(str),
                                      probes["sport"].fillna(0).astype(int), probes["dport"].fillna(0).astype(int),
                                      (probes["seq"].fillna(0).astype(np.int64) + 1) % (1 << 32)])
    return keys.isin(resets) & tcp_syn


def _connects(packets: pd.DataFrame, probes: pd.DataFrame) -> np.ndarray:
    """SYN probes whose prober completed the handshake: an ACK with ack = SYN/ACK seq + 1 on the 4-tuple."""
    flags = packets["tcp_flags"].fillna(0).astype(int).to_numpy()
    acks = packets[(flags & (SYN | ACK | RST)) == ACK]
    completed = set(zip(acks["src"].astype(str), acks["dst"].astype(str), acks["sport"].astype(int),
                        acks["dport"].astype(int), acks["ack"].astype(int)))
    synacks = packets.set_index("frame")
    out = np.zeros(len(probes), bool)
    answered = probes["reply_kind"].astype(str).to_numpy() == "syn-ack"
    for i in np.flatnonzero(answered):
        p = probes.iloc[i]
        reply = synacks.loc[int(p["reply_frame"])]
        out[i] = (str(p["src"]), str(p["dst"]), int(p["sport"]), int(p["dport"]),
                  (int(reply["seq"]) + 1) % (1 << 32)) in completed
    return out


def classify_probes(packets: pd.DataFrame, probes: pd.DataFrame | None = None) -> pd.DataFrame:
    """The probes table with each probe's `technique`, `scan_like` flag and provisional state."""
    probes = match_probes(packets) if probes is None else probes
    p = probes.copy()
    flags = p["flags"].fillna(0).astype(int).to_numpy()
    proto = p["protocol"].astype(str).to_numpy()
    p["technique"] = techniques(proto, flags)
    p["scan_like"] = (_scan_like(packets, p) & _udp_scan_like(packets, p)) if len(p) else np.zeros(0, bool)
    p["completed"] = _connects(packets, p) if len(p) else np.zeros(0, bool)
    p["scanner_reset"] = _scanner_resets(packets, p) if len(p) else np.zeros(0, bool)
    rows = np.searchsorted(packets["frame"].to_numpy(), p["probe_frame"].to_numpy())
    p["probe_window"] = packets["window"].to_numpy()[rows] if len(p) else []
    p["probe_options"] = packets["tcp_options"].to_numpy()[rows] if len(p) else []
    p["probe_ttl"] = packets["ttl"].to_numpy()[rows] if len(p) else []
    return p


def _phases(p: pd.DataFrame, cfg: ScanConfig) -> pd.Series:
    """Phase number per probe: per (scanner, technique, probe header signature), split by silences.

    The signature (TCP window and option layout of the probe) tells tools apart when one scanner runs
    several in a row: nmap's raw SYNs, the kernel's connect() SYNs and hping3's differ in both.
    """
    fam = p["technique"].replace({"CONNECT": "SYN", "WINDOW": "ACK"})
    parts = pd.DataFrame({"src": p["src"].astype(object), "fam": fam.astype(object),
                          "flags": np.where(fam == "CUSTOM", p["flags"].astype(object), -1),
                          "win": p["probe_window"].astype(object), "opts": p["probe_options"].astype(object)})
    key = parts.fillna(-1).groupby(list(parts.columns), sort=True, dropna=False).ngroup()
    order = np.lexsort((p["ts_ns"].to_numpy(), key.to_numpy()))
    k, ts = key.to_numpy()[order], p["ts_ns"].to_numpy()[order]
    new = np.ones(len(order), bool)
    new[1:] = (k[1:] != k[:-1]) | (ts[1:] - ts[:-1] > cfg.phase_gap_s * 1e9)
    phase = np.empty(len(order), int)
    phase[order] = np.cumsum(new) - 1
    return pd.Series(phase, index=p.index)


def scans(packets: pd.DataFrame, probes: pd.DataFrame | None = None, *, config: ScanConfig = ScanConfig()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scans found in a capture: (scans table, port states table).

    scans: one row per (phase, target): scanner, target, type, flags, first, last (epoch s), probes,
    ports_probed, rate (probes/s), shape (vertical | horizontal | block), phase, tool, tool_evidence.
    port states: scanner, target, phase, type, protocol, port, state, reason, probes, reply_ttl,
    reply_window.
    """
    from .tools import tool_of_phase

    p = classify_probes(packets, probes)
    icmp_probes = p[p["protocol"].astype(str) == "icmp"]
    p = p[p["scan_like"] & p["src"].notna() & (p["protocol"].astype(str) != "icmp")]
    p = p[~_tcp_pings(p, icmp_probes)]
    rows, states = [], []
    next_phase = _discovery(packets, icmp_probes, config, rows, states, first_phase=0)
    next_phase = _ipproto(packets, config, rows, states, first_phase=next_phase)
    if p.empty:
        return _finish(rows, states)
    p = p.assign(phase=_phases(p, config) + next_phase)
    for phase, ph in p.groupby("phase", sort=False):
        technique = ph["technique"].iloc[0]
        if technique == "SYN":
            answered_open = ph["reply_kind"].astype(str) == "syn-ack"
            if answered_open.any() and ph.loc[answered_open, "completed"].mean() > 0.5:
                technique = "CONNECT"
        if technique == "ACK":
            rst = ph["reply_kind"].astype(str) == "rst"
            if rst.any() and (ph.loc[rst, "reply_window"].fillna(0).astype(int) > 0).any():
                technique = "WINDOW"
        n_targets = ph["dst"].astype(str).nunique()
        n_ports = ph["dport"].nunique()
        # Repeated bare SYNs to one port are qscan-style probing; repeated UDP requests are clients.
        per_port_repeats = ph.groupby(["dst", "dport"], observed=True).size().max() if technique in ("SYN", "CUSTOM") else 0
        stealth = technique not in ("SYN", "CONNECT", "UDP")
        big_enough = (n_ports >= config.min_ports or n_targets >= config.min_hosts or per_port_repeats >= config.min_repeats
                      or (stealth and len(ph) >= 2))
        if not big_enough:
            continue
        shape = "vertical" if n_targets == 1 else ("horizontal" if n_ports == 1 else "block")
        flags_text = flag_text(int(ph["flags"].fillna(0).iloc[0])) if technique != "UDP" else ""
        tool, evidence = tool_of_phase(packets, ph, technique)
        for target, tp in ph.groupby(ph["dst"].astype(str), sort=False):
            rows.append(_row(int(phase), str(tp["src"].iloc[0]), target, technique, flags_text, tp["ts_ns"].to_numpy(),
                             int(tp["dport"].nunique()), shape, tool, evidence) | {"host_state": "up"})
            states.extend(_port_states(tp, technique, int(phase)))
    return _finish(rows, states)


def _finish(rows: list[dict], states: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    scans_df = pd.DataFrame(rows) if rows else _empty_scans()
    states_df = pd.DataFrame(states) if states else _empty_states()
    if len(scans_df):
        scans_df = scans_df.sort_values(["first", "scanner", "target"], kind="stable").reset_index(drop=True)
        # Phases numbered in time order, so a reader can follow the capture.
        order = {ph: i for i, ph in enumerate(dict.fromkeys(scans_df["phase"]))}
        scans_df["phase"] = scans_df["phase"].map(order)
        if len(states_df):
            states_df["phase"] = states_df["phase"].map(order)
    return scans_df, states_df


def _row(phase: int, scanner: str, target: str, technique: str, flags: str, ts: np.ndarray, ports: int, shape: str,
         tool: str, evidence: str) -> dict:
    first, last = int(ts.min()), int(ts.max())
    dur = (last - first) / 1e9
    return dict(phase=phase, scanner=scanner, target=target, type=technique, flags=flags, first=first / 1e9,
                last=last / 1e9, probes=len(ts), ports_probed=ports, rate=(len(ts) / dur if dur > 0 else float(len(ts))),
                shape=shape, tool=tool, tool_evidence=evidence)


def _discovery(packets: pd.DataFrame, icmp_probes: pd.DataFrame, cfg: ScanConfig, rows: list, states: list,
               first_phase: int) -> int:
    """Host discovery: ARP requests or ICMP echo/timestamp queries sweeping several hosts, or an echo and a
    timestamp query to one host (nmap -sn's pair). One PING row per target, its "state" up or down."""
    phase = first_phase
    arp = packets[packets["arp_op"].notna()]
    requests = arp[arp["arp_op"] == 1]
    for scanner, req in requests.groupby(requests["src"].astype(str), observed=True):
        targets = req["dst"].astype(str).unique()
        if len(targets) < 3:
            continue
        answered = set(arp[(arp["arp_op"] == 2) & (arp["dst"].astype(str) == scanner)]["src"].astype(str))
        for target in targets:
            ts = req[req["dst"].astype(str) == target]["ts_ns"].to_numpy()
            rows.append(_row(phase, scanner, target, "PING", "ARP", ts, 0, "horizontal", "unknown", "") |
                        {"host_state": "up" if target in answered else "down"})
        phase += 1
    if len(icmp_probes):
        for scanner, q in icmp_probes.groupby(icmp_probes["src"].astype(str), observed=True):
            targets = q["dst"].astype(str).unique()
            kinds = set(q["icmp_type"].dropna().astype(int))
            if len(targets) < cfg.min_hosts and not ({8, 13} <= kinds):
                continue
            for target, tq in q.groupby(q["dst"].astype(str), observed=True):
                up = tq["reply_kind"].notna().any()
                names = "+".join(sorted({8: "echo", 13: "timestamp", 15: "info", 17: "mask", 128: "echo"}.get(k, str(k))
                                        for k in set(tq["icmp_type"].dropna().astype(int))))
                rows.append(_row(phase, scanner, target, "PING", f"ICMP {names}", tq["ts_ns"].to_numpy(), 0,
                                 "horizontal" if len(targets) > 1 else "vertical", "unknown", "") |
                            {"host_state": "up" if up else "down"})
            phase += 1
    return phase


def _ipproto(packets: pd.DataFrame, cfg: ScanConfig, rows: list, states: list, first_phase: int) -> int:
    """IP protocol scans (nmap -sO): one source sending packets of many IP protocols to one target."""
    phase = first_phase
    ip = packets[(packets["ip_version"] > 0) & packets["ip_proto"].notna()]
    if ip.empty:
        return phase
    src, dst = ip["src"].astype(str), ip["dst"].astype(str)
    proto = ip["ip_proto"].astype(int)
    for (scanner, target), idx in ip.groupby([src, dst], observed=True).groups.items():
        protos = set(proto.loc[idx])
        odd = protos - {1, 6, 17, 58}
        if len(protos) < 4 or len(odd) < 2:
            continue
        sent = ip.loc[idx]
        back = ip[(src == target) & (dst == scanner)]
        errors = ip[(dst == scanner) & ip["q_proto"].notna() & (ip["q_dst"].astype(str) == target)]
        for p_num in sorted(protos):
            if p_num in (1, 58) and not (sent["ip_proto"] == p_num).any():
                continue
            err = errors[errors["q_proto"] == p_num]
            icmp_unreach = err[(err["icmp_type"] == 3)]
            if (back["ip_proto"] == p_num).any() and p_num != 1:
                state, reason = "open", "proto-response"
            elif (icmp_unreach["icmp_code"] == 3).any():  # the protocol itself answered: port unreachable
                state, reason = "open", "port-unreach"
            elif (icmp_unreach["icmp_code"] == 2).any():
                state, reason = "closed", "proto-unreach"
            elif len(icmp_unreach):
                state, reason = "filtered", f"icmp-3-{int(icmp_unreach['icmp_code'].iloc[0])}"
            elif p_num == 1 and (back["icmp_type"] == 0).any():
                state, reason = "open", "echo-reply"
            else:
                state, reason = "open|filtered", "no-response"
            states.append(dict(scanner=scanner, target=target, phase=phase, type="IPPROTO", protocol="ip",
                               port=int(p_num), state=state, reason=reason,
                               probes=int((sent["ip_proto"] == p_num).sum()), reply_ttl=None, reply_window=None))
        ttl = sent["ttl"].dropna().astype(int)
        nmap_ttl = len(ttl) and ttl.between(37, 59).all() and ttl.nunique() > 1
        rows.append(_row(phase, scanner, target, "IPPROTO", "", sent["ts_ns"].to_numpy(), len(protos), "vertical",
                         "nmap" if nmap_ttl else "unknown", "TTL varies within 37–59: nmap's random TTL" if nmap_ttl else ""))
        phase += 1
    return phase


def _port_states(tp: pd.DataFrame, technique: str, phase: int) -> list[dict]:
    """One row per probed port: the state the first reply gives; "unknown" when replies contradict."""
    n = len(tp)
    kind = tp["reply_kind"].astype(object).where(tp["reply_kind"].notna(), "").to_numpy(str)
    state = states(np.full(n, technique, dtype=object), kind,
                   tp["reply_icmp_type"].astype("Int64").fillna(-1).to_numpy(int),
                   tp["reply_icmp_code"].astype("Int64").fillna(-1).to_numpy(int),
                   tp["reply_window"].astype("Int64").fillna(0).to_numpy(int), tp["ip_version"].to_numpy(int))
    answered = kind != ""
    # A SYN/ACK the scanner's kernel reset but the capture lost: the port answered; say so, never "filtered".
    lost = ~answered & tp["scanner_reset"].to_numpy(bool) & np.isin(technique, ("SYN", "CUSTOM"))
    state = np.where(lost, "open", state)
    answered = answered | lost
    frame = pd.DataFrame({"protocol": tp["protocol"].astype(str).to_numpy(), "port": tp["dport"].astype(int).to_numpy(),
                          "state": state, "answered": answered, "ts": tp["ts_ns"].to_numpy(),
                          "reason": np.where(lost, "syn-ack not captured (scanner's reset)", _reasons(tp, kind))})
    frame = frame.sort_values(["protocol", "port", "answered", "ts"], ascending=[True, True, False, True], kind="stable")
    g = frame.groupby(["protocol", "port"], sort=True)
    first = g.head(1).set_index(["protocol", "port"])
    distinct = frame[frame["answered"]].groupby(["protocol", "port"])["state"].nunique()
    contradict = distinct.reindex(first.index, fill_value=1) > 1
    out = pd.DataFrame({"scanner": str(tp["src"].iloc[0]), "target": str(tp["dst"].iloc[0]), "phase": phase,
                        "type": technique, "protocol": first.index.get_level_values(0),
                        "port": first.index.get_level_values(1),
                        "state": np.where(contradict, "unknown", first["state"]),
                        "reason": np.where(contradict, "contradicting replies",
                                           np.where(first["answered"], first["reason"], "no-response")),
                        "probes": g.size().to_numpy()})
    replies = tp[answered].drop_duplicates("dport")
    out = out.merge(pd.DataFrame({"port": replies["dport"].astype(int).to_numpy(),
                                  "reply_ttl": replies["reply_ttl"].astype("Int64").to_numpy(),
                                  "reply_window": replies["reply_window"].astype("Int64").to_numpy()}),
                    on="port", how="left")
    return out.to_dict("records")


def _reasons(tp: pd.DataFrame, kind: np.ndarray) -> np.ndarray:
    """nmap's --reason words for each probe's reply."""
    itype = tp["reply_icmp_type"].astype("Int64").fillna(-1).to_numpy(int)
    icode = tp["reply_icmp_code"].astype("Int64").fillna(-1).to_numpy(int)
    v4 = tp["ip_version"].to_numpy(int) == 4
    out = np.array(kind, dtype=object)
    out[kind == "syn-ack"] = "syn-ack"
    out[kind == "rst"] = "reset"
    out[kind == "udp"] = "udp-response"
    icmp = np.flatnonzero(kind == "icmp")
    names = {(3, 3): "port-unreach", (3, 13): "admin-prohibited", (3, 1): "host-unreach", (3, 0): "net-unreach",
             (3, 2): "proto-unreach", (3, 9): "net-prohibited", (3, 10): "host-prohibited"}
    for i in icmp:
        t, c = int(itype[i]), int(icode[i])
        out[i] = names.get((t, c), f"icmp-{t}-{c}") if v4[i] else f"icmpv6-{t}-{c}"
    return out


def _empty_scans() -> pd.DataFrame:
    return pd.DataFrame(columns=["phase", "scanner", "target", "type", "flags", "first", "last", "probes",
                                 "ports_probed", "rate", "shape", "tool", "tool_evidence", "host_state"])


def _empty_states() -> pd.DataFrame:
    return pd.DataFrame(columns=["scanner", "target", "phase", "type", "protocol", "port", "state", "reason",
                                 "probes", "reply_ttl", "reply_window"])
