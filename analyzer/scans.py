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

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .flags import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, flag_text
from .keys import (
    column_codes,
    column_values,
    distinct_per_group,
    group_ids,
    group_of,
    int_column,
    int_column_at,
    narrow,
    packet_rows,
    rows_in,
    value_codes,
)
from .match import match as match_probes
from .tools import SIGNATURE_COLUMNS, tool_of_frames

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


# Technique codes: TECHNIQUE_NAMES[code]. CONNECT and WINDOW are readings of a whole phase, never of one probe.
TECHNIQUE_NAMES = np.array(["CUSTOM", *TECHNIQUES.values(), "UDP", "PING", "CONNECT", "WINDOW"], dtype=object)
_CODE = {name: code for code, name in enumerate(TECHNIQUE_NAMES)}
_FLAG_TECHNIQUE = np.zeros(256, np.int64)  # the eight flag bits → technique code (CUSTOM unless in TECHNIQUES)
for _bits, _name in TECHNIQUES.items():
    _FLAG_TECHNIQUE[_bits] = _CODE[_name]


def techniques(protocol: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """The technique of each probe, from its protocol and TCP flags (`TECHNIQUES`)."""
    return TECHNIQUE_NAMES[_technique_codes(protocol == "udp", protocol == "icmp", np.asarray(flags, np.int64))]


def _technique_codes(udp: np.ndarray, icmp: np.ndarray, flags: np.ndarray) -> np.ndarray:
    codes = _FLAG_TECHNIQUE[flags & (SYN | ACK | FIN | RST | PSH | URG | ECE | CWR)]
    codes[udp] = _CODE["UDP"]
    codes[icmp] = _CODE["PING"]
    return codes


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


Columns = dict[str, np.ndarray]  # aligned integer columns: a table without pandas' per-frame costs


def _take(table: Columns, rows: np.ndarray, names: Iterable[str] | None = None) -> Columns:
    """The rows `rows` (a mask, or positions) of the table, or of its columns `names`. A mask of every row
    takes the columns themselves, not copies (no reader writes into a table's columns)."""
    names = table.keys() if names is None else names
    if rows.dtype == bool and rows.all():
        return {name: table[name] for name in names}
    return {name: table[name][rows] for name in names}


PACKET_KEYS = ("frame", "sport", "dport", "seq", "ack", "tcp_flags", "payload_len", "ip_proto")
_WIDE_KEYS = ("frame", "seq", "ack", "payload_len")  # 32-bit fields (with -1 for missing) need int64
# The packets-table and probes-table columns `scans` reads (with the tool signatures it looks up): `synlens
# scans` reads and matches only these (and those hosts.PACKET_FIELDS / PROBE_FIELDS name).
PACKET_FIELDS = tuple(dict.fromkeys(
    ("frame", "ts_ns", "ip_version", "src", "dst", "arp_op", "ip_proto", "ttl", "ip_id", "sport", "dport",
     "tcp_flags", "seq", "ack", "window", "tcp_options", "mss", "payload_len", "icmp_type", "icmp_code",
     "q_dst", "q_proto")
    + SIGNATURE_COLUMNS))
PROBE_FIELDS = ("probe_frame", "ts_ns", "src", "dst", "protocol", "ip_version", "sport", "dport", "seq", "flags",
                "icmp_type", "reply_frame", "reply_kind", "reply_icmp_type", "reply_icmp_code", "reply_ttl",
                "reply_window")


class _PacketKeys:
    """The packets' columns the probe readings compare, as integers (-1 where missing), made only for the
    rows a reading takes (the packets with payload, the resets, the ACKs, the probes: rarely all of a
    capture's millions): in int32 where the values fit (address codes, 8- and 16-bit fields), int64 for
    frame numbers and 32-bit fields."""

    NAMES = ("src", "dst") + PACKET_KEYS

    def __init__(self, packets: pd.DataFrame) -> None:
        self.packets = packets
        self.narrow = np.int32 if len(packets) < 2**31 else np.int64
        self.frame = packets["frame"].to_numpy()
        self._flags: np.ndarray | None = None

    def at(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Column `name` at `rows`."""
        column = self.packets[name]
        if name in ("src", "dst"):  # (a categorical's codes: a view, taken at the rows)
            categorical = isinstance(column.dtype, pd.CategoricalDtype)
            codes = column.cat.codes.to_numpy() if categorical else column_codes(column)[0]
            return codes[rows].astype(self.narrow)
        return int_column_at(column, rows, dtype=np.int64 if name in _WIDE_KEYS else self.narrow)

    def take(self, rows: np.ndarray) -> Columns:
        """Every key column at `rows`."""
        return {name: self.at(name, rows) for name in self.NAMES}

    def flags(self) -> np.ndarray:
        """Every packet's TCP flags, 0 where none."""
        if self._flags is None:
            self._flags = int_column(self.packets["tcp_flags"], 0, self.narrow)
        return self._flags

    def tcp_payload(self) -> np.ndarray:
        """Which packets are TCP segments with payload."""
        p = self.packets
        return ((p["payload_len"] > 0).to_numpy(bool, na_value=False) & p["sport"].notna().to_numpy()
                & (p["ip_proto"] == 6).to_numpy(bool, na_value=False))


def _scan_like(keys: _PacketKeys, pk: Columns) -> np.ndarray:
    """Probes whose prober never sent payload on the probe's 4-tuple (ordinary clients do)."""
    data = keys.take(np.flatnonzero(keys.tcp_payload()))
    if not len(data["src"]) or not pk["tcp"].any():
        return np.ones(len(pk["tcp"]), bool)
    tuple4 = ("src", "dst", "sport", "dport")
    # UDP and ICMP carry payload by nature: they are judged by breadth alone, later.
    return ~(rows_in([pk[c] for c in tuple4], [data[c] for c in tuple4]) & pk["tcp"])


_PING_KEYS = ("tcp", "src", "dst", "dport")  # what `_tcp_pings` reads


def _tcp_pings(pk: Columns, icmp_probes: Columns) -> np.ndarray:
    """TCP probes that belong to host discovery: SYN to 443 / ACK to 80 (nmap -sn's set) sent to hosts the
    same scanner also queried with ICMP, and no other TCP port of those hosts probed."""
    tcp, src, dst, dport = pk["tcp"], pk["src"], pk["dst"], pk["dport"]
    if not len(icmp_probes["src"]) or not len(src):
        return np.zeros(len(src), bool)
    pair = group_ids(src, dst)
    ports_per_pair = distinct_per_group(pair[tcp], dport[tcp], int(pair.max()) + 1)
    queried = rows_in([src, dst], [icmp_probes["src"], icmp_probes["dst"]])
    return tcp & np.isin(dport, (80, 443)) & (ports_per_pair[pair] <= 2) & queried


def _udp_scan_like(keys: _PacketKeys, pk: Columns) -> np.ndarray:
    """UDP probes that look like a scanner's: from a source port reused for several destination ports
    (nmap keeps one), or empty, or a retransmission of such a probe. A client's requests come from fresh
    ports and carry a request.

    A retransmission repeats an earlier scanner probe (same sender, target, port and payload length) from
    another source port: nmap re-sends its protocol payloads (DNS, SNMP, NTP, NetBIOS …) from its scan port
    plus the try number. A client asking again sends a new request (a new DNS id and name), and a client
    never had a scanner probe to repeat: ordinary traffic stays ordinary."""
    udp = pk["udp"]
    out = np.ones(len(udp), bool)
    if not udp.any():
        return out
    u = _take(pk, udp)
    payload = np.maximum(keys.at("payload_len", u["row"]), 0)
    from_port = group_ids(u["src"], u["sport"])
    scanner = (payload == 0) | (distinct_per_group(from_port, u["dport"], int(from_port.max()) + 1)[from_port] >= 3)
    same_request = group_ids(u["src"], u["dst"], u["dport"], payload)
    first_scanner_ts = np.full(int(same_request.max()) + 1, np.iinfo(np.int64).max)
    np.minimum.at(first_scanner_ts, same_request[scanner], u["ts_ns"][scanner])
    retry = u["ts_ns"] > first_scanner_ts[same_request]  # no scanner probe to repeat: never later than the sentinel
    out[udp] = scanner | retry
    return out


def _scanner_resets(keys: _PacketKeys, pk: Columns) -> np.ndarray:
    """SYN probes whose sender later reset the connection with seq = probe seq + 1: its kernel had received a
    SYN/ACK, whether or not the capture holds it (a reply lost from the capture, not from the network)."""
    resets = keys.take(np.flatnonzero((keys.flags() & (RST | SYN | ACK)) == RST))
    tcp_syn = pk["tcp"] & (pk["flags"] == SYN)
    if not len(resets["src"]) or not tcp_syn.any():
        return np.zeros(len(tcp_syn), bool)
    probe = [pk["src"], pk["dst"], pk["sport"], pk["dport"], (pk["seq"] + 1) % (1 << 32)]
    return rows_in(probe, [resets[c] for c in ("src", "dst", "sport", "dport", "seq")]) & tcp_syn


def _connects(keys: _PacketKeys, pk: Columns) -> np.ndarray:
    """SYN probes whose prober completed the handshake: an ACK with ack = SYN/ACK seq + 1 on the 4-tuple."""
    answered = pk["synack"]
    acks = keys.take(np.flatnonzero((keys.flags() & (SYN | ACK | RST)) == ACK))
    out = np.zeros(len(answered), bool)
    if not answered.any() or not len(acks["src"]):
        return out
    reply_seq = keys.at("seq", packet_rows(keys.frame, pk["reply_frame"][answered]))
    handshake = [pk[c][answered] for c in ("src", "dst", "sport", "dport")] + [(reply_seq + 1) % (1 << 32)]
    out[answered] = rows_in(handshake, [acks[c] for c in ("src", "dst", "sport", "dport", "ack")])
    return out


def _probe_keys(packets: pd.DataFrame, keys: _PacketKeys, probes: pd.DataFrame) -> Columns:
    """Per probe, as integers: its packet's row, src / dst codes (the packets table's), ports and seq (0 where
    missing), flags, technique code, the reply's fields (-1 where missing), the protocol and reply
    kind codes (`column_codes`), and the readings scan_like, completed and scanner_reset."""
    rows = packet_rows(keys.frame, probes["probe_frame"].to_numpy())
    protocol, kind = probes["protocol"], probes["reply_kind"]
    # 8- and 16-bit fields, codes and frame numbers in int32 where they fit (as `_PacketKeys`), seq in int64.
    narrow = keys.narrow

    def small(name: str, missing: int = -1) -> np.ndarray:
        return int_column(probes[name], missing, narrow)

    pk = {"row": rows, "src": keys.at("src", rows), "dst": keys.at("dst", rows), "sport": small("sport", 0),
          "dport": small("dport", 0), "seq": int_column(probes["seq"], 0), "flags": small("flags", 0),
          "ts_ns": probes["ts_ns"].to_numpy(), "tcp": (protocol == "tcp").to_numpy(bool),
          "udp": (protocol == "udp").to_numpy(bool), "icmp": (protocol == "icmp").to_numpy(bool),
          "protocol": column_codes(protocol, narrow)[0], "kind": column_codes(kind, narrow)[0],
          "synack": (kind == "syn-ack").to_numpy(bool), "rst": (kind == "rst").to_numpy(bool),
          "reply_frame": small("reply_frame"), "reply_icmp_type": small("reply_icmp_type"),
          "reply_icmp_code": small("reply_icmp_code"), "reply_window": small("reply_window"),
          "reply_ttl": small("reply_ttl"), "ip_version": probes["ip_version"].to_numpy(narrow)}
    pk["technique"] = _technique_codes(pk["udp"], pk["icmp"], pk["flags"])
    if not len(rows):
        return pk | {name: np.zeros(0, bool) for name in ("scan_like", "completed", "scanner_reset")}
    return pk | {"scan_like": _scan_like(keys, pk) & _udp_scan_like(keys, pk), "completed": _connects(keys, pk),
                 "scanner_reset": _scanner_resets(keys, pk)}


def classify_probes(packets: pd.DataFrame, probes: pd.DataFrame | None = None) -> pd.DataFrame:
    """The probes table with each probe's `technique`, `scan_like` flag and provisional state."""
    probes = match_probes(packets) if probes is None else probes
    pk = _probe_keys(packets, _PacketKeys(packets), probes)
    return probes.assign(technique=TECHNIQUE_NAMES[pk["technique"]], scan_like=pk["scan_like"],
                         completed=pk["completed"], scanner_reset=pk["scanner_reset"],
                         probe_window=packets["window"].array[pk["row"]],
                         probe_options=packets["tcp_options"].array[pk["row"]], probe_ttl=packets["ttl"].array[pk["row"]])


def _phases(packets: pd.DataFrame, pk: Columns, cfg: ScanConfig) -> np.ndarray:
    """Phase number per probe (0, 1, … in order of each phase's first probe): per (scanner, technique,
    probe header signature), split by silences.

    The signature (TCP window and option layout of the probe) tells tools apart when one scanner runs
    several in a row: nmap's raw SYNs, the kernel's connect() SYNs and hping3's differ in both.
    """
    rows, technique = pk["row"], pk["technique"]
    custom_flags = np.where(technique == _CODE["CUSTOM"], pk["flags"], -1)
    options = value_codes(packets["tcp_options"], rows)
    window = int_column_at(packets["window"], rows, dtype=np.int32)
    key = group_ids(pk["src"], technique, custom_flags, window, options)
    by_time = np.argsort(pk["ts_ns"], kind="stable")
    order = by_time[np.argsort(narrow(key[by_time]), kind="stable")]  # by key, then time, then capture order
    k, t = key[order], pk["ts_ns"][order]
    new = np.ones(len(order), bool)
    new[1:] = (k[1:] != k[:-1]) | (t[1:] - t[:-1] > cfg.phase_gap_s * 1e9)
    starts = np.flatnonzero(new)  # each phase's run of probes in that order
    # Phases numbered in order of their first probe (the least row of each run).
    number = np.empty(len(starts), np.int64)
    number[np.argsort(np.minimum.reduceat(order, starts))] = np.arange(len(starts))
    phase = np.empty(len(order), np.int64)
    phase[order] = np.repeat(number, np.diff(starts, append=len(order)))
    return phase


def scans(packets: pd.DataFrame, probes: pd.DataFrame | None = None, *, config: ScanConfig = ScanConfig()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scans found in a capture: (scans table, port states table).

    scans: one row per (phase, target): scanner, target, type, flags, first, last (epoch s), probes,
    ports_probed, rate (probes/s), shape (vertical | horizontal | block), phase, tool, tool_evidence.
    port states: scanner, target, phase, type, protocol, port, state, reason, probes, reply_ttl,
    reply_window.
    """
    probes = match_probes(packets) if probes is None else probes
    pk = _probe_keys(packets, _PacketKeys(packets), probes)
    icmp = pk["icmp"]
    keep = pk["scan_like"] & (pk["src"] >= 0) & ~icmp
    if icmp.any():  # (host discovery's TCP pings go with its ICMP queries)
        keep[keep] = ~_tcp_pings(_take(pk, keep, _PING_KEYS), _take(pk, icmp, _PING_KEYS))
    rows, found_states = [], []
    next_phase = _discovery(packets, probes[icmp], config, rows, found_states, first_phase=0)
    next_phase = _ipproto(packets, config, rows, found_states, first_phase=next_phase)
    if not keep.any():
        return _finish(rows, found_states)
    pk = _take(pk, keep)
    pk["phase"] = _phases(packets, pk, config)
    pk["port"] = group_ids(pk["phase"], pk["dst"], pk["dport"])  # (phase, target, port): one protocol a phase
    readings = _phase_readings(packets, pk, config)
    names = {"src": column_values(packets["src"]), "dst": column_values(packets["dst"]),
             "protocol": column_values(probes["protocol"]).astype(str), "kind": column_values(probes["reply_kind"]).astype(str)}
    port_scans, port_states = _port_scans(pk, readings, names)
    return _finish(rows, found_states, port_scans.assign(phase=port_scans["phase"] + next_phase),
                   port_states.assign(phase=port_states["phase"] + next_phase))


def _phase_readings(packets: pd.DataFrame, pk: Columns, cfg: ScanConfig) -> pd.DataFrame:
    """Per phase: its technique code (SYN read as CONNECT, ACK as WINDOW where the replies say so), whether
    it is big enough to be a scan, its shape, flags text and tool."""
    phase, port = pk["phase"], pk["port"]
    n_phases = int(phase.max()) + 1
    first = np.full(n_phases, len(phase))
    np.minimum.at(first, phase, np.arange(len(phase)))
    technique = pk["technique"][first]
    n_synack = np.bincount(phase[pk["synack"]], minlength=n_phases)
    n_completed = np.bincount(phase[pk["synack"] & pk["completed"]], minlength=n_phases)
    n_open_windows = np.bincount(phase[pk["rst"] & (pk["reply_window"] > 0)], minlength=n_phases)
    technique = np.select([(technique == _CODE["SYN"]) & (n_synack > 0) & (n_completed > 0.5 * n_synack),
                           (technique == _CODE["ACK"]) & (n_open_windows > 0)],
                          [_CODE["CONNECT"], _CODE["WINDOW"]], technique)

    port_phase = group_of(port, phase)  # per (phase, target, port): counted there, not per probe
    n_targets = distinct_per_group(port_phase, group_of(port, pk["dst"]), n_phases)
    n_ports = distinct_per_group(port_phase, group_of(port, pk["dport"]), n_phases)
    size = np.bincount(phase, minlength=n_phases)
    # Repeated bare SYNs to one port are qscan-style probing; repeated UDP requests are clients.
    repeats = np.zeros(n_phases, np.int64)
    np.maximum.at(repeats, port_phase, np.bincount(port))
    repeats[~np.isin(technique, (_CODE["SYN"], _CODE["CUSTOM"]))] = 0
    stealth = ~np.isin(technique, (_CODE["SYN"], _CODE["CONNECT"], _CODE["UDP"]))
    big_enough = ((n_ports >= cfg.min_ports) | (n_targets >= cfg.min_hosts) | (repeats >= cfg.min_repeats)
                  | (stealth & (size >= 2)))

    names = TECHNIQUE_NAMES[technique]
    frames = packets["frame"].to_numpy()[pk["row"][np.argsort(narrow(phase), kind="stable")]]  # by phase, in order
    ends = np.cumsum(size)
    tools = [tool_of_frames(packets, frames[end - n:end], name) if big else ("", "")
             for name, big, n, end in zip(names, big_enough, size, ends)]
    return pd.DataFrame({
        "technique": technique, "big_enough": big_enough,
        "shape": np.where(n_targets == 1, "vertical", np.where(n_ports == 1, "horizontal", "block")),
        "flags": [flag_text(int(f)) if name != "UDP" else "" for f, name in zip(pk["flags"][first], names)],
        "tool": [tool for tool, _ in tools], "tool_evidence": [evidence for _, evidence in tools]})


def _port_scans(pk: Columns, readings: pd.DataFrame, names: dict[str, np.ndarray]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The scans table's rows (one per phase and target) and the port states (one per phase, target and
    port, in port order) of the phases big enough to be scans. names: the text of each src, dst,
    protocol and reply kind code."""
    phase, ts = pk["phase"], pk["ts_ns"]
    target = group_ids(phase, pk["dst"])  # (phase, target), numbered by first probe
    target_phase = group_of(target, phase)
    # Targets in phase order, each phase's in order of first probe; only the phases that are scans.
    shown = np.argsort(narrow(target_phase), kind="stable")
    shown = shown[readings["big_enough"].to_numpy()[target_phase[shown]]]
    first, last = np.full(len(target_phase), np.iinfo(np.int64).max), np.full(len(target_phase), -1)
    np.minimum.at(first, target, ts)
    np.maximum.at(last, target, ts)
    n_probes = np.bincount(target)[shown]
    duration = (last - first)[shown] / 1e9
    ph = readings.iloc[target_phase[shown]]
    scan_rows = pd.DataFrame({
        "phase": target_phase[shown], "scanner": names["src"][group_of(target, pk["src"])[shown]].tolist(),
        "target": names["dst"][group_of(target, pk["dst"])[shown]].tolist(),
        "type": TECHNIQUE_NAMES[ph["technique"]].tolist(), "flags": ph["flags"].tolist(),
        "first": first[shown] / 1e9, "last": last[shown] / 1e9, "probes": n_probes,
        "ports_probed": np.bincount(group_of(pk["port"], target))[shown],
        "rate": np.where(duration > 0, n_probes / np.where(duration > 0, duration, 1), n_probes.astype(float)),
        "shape": ph["shape"].tolist(), "tool": ph["tool"].tolist(), "tool_evidence": ph["tool_evidence"].tolist(),
        "host_state": "up"})
    return scan_rows, _port_states(pk | {"target": target, "technique": readings["technique"].to_numpy()[phase]},
                                   shown, names)


def _port_states(pk: Columns, targets: np.ndarray, names: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per probed port: the state the first reply gives; "unknown" when replies contradict.

    pk: per probe, besides `_probe_keys`' columns, its phase, its (phase, target, port) id `port`, its
    (phase, target) id `target`, and its phase's technique code; targets: the target ids to report, in order."""
    port, technique, kind_code = pk["port"], pk["technique"], pk["kind"]
    n, n_ports = len(port), int(port.max()) + 1
    kind_names = np.append(names["kind"], "")  # "" for no reply (code -1: the last)
    icmp_type, icmp_code, window, version = (pk[c] for c in ("reply_icmp_type", "reply_icmp_code", "reply_window",
                                                              "ip_version"))
    # nmap's rules, read once per combination of what they look at rather than once per probe
    reading = group_ids(technique, kind_code, icmp_type, icmp_code, window > 0, version)
    one = group_of(reading, np.arange(n))  # a probe of each combination
    state_names, state_code = np.unique(np.append(states(TECHNIQUE_NAMES[technique[one]], kind_names[kind_code[one]],
                                                         icmp_type[one],
                                                         icmp_code[one], window[one], version[one]), "open"),
                                        return_inverse=True)  # codes of the combinations' states, then of "open"
    answered = kind_code >= 0
    # A SYN/ACK the scanner's kernel reset but the capture lost: the port answered; say so, never "filtered".
    lost = ~answered & pk["scanner_reset"] & np.isin(technique, (_CODE["SYN"], _CODE["CUSTOM"]))
    state = np.where(lost, state_code[-1], state_code[reading])
    answered |= lost

    # The probe that decides: the port's earliest answered one, else its earliest (by time, then capture order).
    by_time = np.argsort(pk["ts_ns"], kind="stable")
    rank = np.empty(n, np.int64)
    rank[by_time] = np.arange(n)
    earliest, earliest_answered = np.full(n_ports, n), np.full(n_ports, n)
    np.minimum.at(earliest, port, rank)
    np.minimum.at(earliest_answered, port[answered], rank[answered])
    decides = by_time[np.where(earliest_answered < n, earliest_answered, earliest)]
    low, high = np.full(n_ports, len(state_names)), np.full(n_ports, -1)
    np.minimum.at(low, port[answered], state[answered])
    np.maximum.at(high, port[answered], state[answered])
    contradict = high > low
    replied = np.full(n_ports, n)  # the reply TTL and window shown: the first answered probe's, in capture order
    np.minimum.at(replied, port[answered], np.flatnonzero(answered))

    # the reported targets' ports, in target order, then port order
    report_order = np.full(int(pk["target"].max()) + 1, len(targets))
    report_order[targets] = np.arange(len(targets))
    port_target, dport = group_of(port, pk["target"]), group_of(port, pk["dport"])
    shown = np.flatnonzero(report_order[port_target] < len(targets))
    shown = shown[np.lexsort((dport[shown], report_order[port_target[shown]]))]
    row, reply, contradict = decides[shown], replied[shown], contradict[shown]
    reason = np.where(lost[row], "syn-ack not captured (scanner's reset)",
                      np.where(answered[row], _reasons(kind_names[kind_code[row]], icmp_type[row], icmp_code[row],
                                                       version[row] == 4),
                               "no-response"))
    return pd.DataFrame({
        "scanner": names["src"][pk["src"][row]].tolist(), "target": names["dst"][pk["dst"][row]].tolist(),
        "phase": pk["phase"][row], "type": TECHNIQUE_NAMES[technique[row]].tolist(),
        "protocol": names["protocol"][pk["protocol"][row]].tolist(), "port": dport[shown].astype(np.int64),
        "state": np.where(contradict, "unknown", state_names[state[row]]).tolist(),
        "reason": np.where(contradict, "contradicting replies", reason).tolist(), "probes": np.bincount(port)[shown],
        "reply_ttl": _shown_values(pk["reply_ttl"], reply), "reply_window": _shown_values(pk["reply_window"], reply)})


def _shown_values(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """values[rows] (-1: missing; a row past the end: none): integers, or floats with NaN when any is missing."""
    shown = np.append(values, -1)[np.minimum(rows, len(values))].astype(np.int64)
    return shown if (shown >= 0).all() else np.where(shown >= 0, shown, np.nan)


def _finish(rows: list[dict], states: list[dict], port_scans: pd.DataFrame | None = None,
            port_states: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    scans_parts = [part for part in (pd.DataFrame(rows), port_scans) if part is not None and len(part)]
    states_parts = [part for part in (pd.DataFrame(states), port_states) if part is not None and len(part)]
    scans_df = pd.concat(scans_parts, ignore_index=True) if scans_parts else _empty_scans()
    states_df = pd.concat(states_parts, ignore_index=True) if states_parts else _empty_states()
    if len(states_parts) > 1:  # the IP protocol scans' None beside the ports' numbers: floats, NaN for none
        states_df = states_df.astype({"reply_ttl": float, "reply_window": float})
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
    candidates = _ipproto_candidates(packets)
    if not candidates.any():
        return phase
    ip = packets[candidates]
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


def _ipproto_candidates(packets: pd.DataFrame) -> np.ndarray:
    """The IP packets an IP protocol scan could be read from: those between a (source, destination) pair
    with two or more protocols other than ICMP, TCP, UDP, ICMPv6 (the scan's own condition, and rare), and
    those sent to the source of such a pair (its replies)."""
    proto = int_column(packets["ip_proto"], dtype=np.int16)
    ip = (packets["ip_version"].to_numpy() > 0) & (proto >= 0)
    odd = np.flatnonzero(ip & (proto != 1) & (proto != 6) & (proto != 17) & (proto != 58))  # (4 values: no isin)
    if not len(odd):
        return np.zeros(len(packets), bool)
    src, dst = column_codes(packets["src"])[0], column_codes(packets["dst"])[0]
    pair = group_ids(src[odd], dst[odd])
    many = (distinct_per_group(pair, proto[odd], int(pair.max()) + 1) >= 2)[pair]
    pairs = [src[odd][many], dst[odd][many]]
    return ip & (rows_in([src, dst], pairs) | np.isin(dst, pairs[0]))


ICMP_REASONS = {(3, 3): "port-unreach", (3, 13): "admin-prohibited", (3, 1): "host-unreach", (3, 0): "net-unreach",
                (3, 2): "proto-unreach", (3, 9): "net-prohibited", (3, 10): "host-prohibited"}


def _reasons(kind: np.ndarray, icmp_type: np.ndarray, icmp_code: np.ndarray, v4: np.ndarray) -> np.ndarray:
    """nmap's --reason words for each probe's reply (kind: reply kind text, "" for none)."""
    out = np.array(kind, dtype=object)
    out[kind == "syn-ack"] = "syn-ack"
    out[kind == "rst"] = "reset"
    out[kind == "udp"] = "udp-response"
    icmp = np.flatnonzero(kind == "icmp")
    which = group_ids(icmp_type[icmp], icmp_code[icmp], v4[icmp])  # worded once per (type, code, version)
    one = group_of(which, icmp)
    words = [ICMP_REASONS.get((t, c), f"icmp-{t}-{c}") if is_v4 else f"icmpv6-{t}-{c}"
             for t, c, is_v4 in zip(icmp_type[one].tolist(), icmp_code[one].tolist(), v4[one].tolist())]
    out[icmp] = np.array(words, dtype=object)[which]
    return out


def _empty_scans() -> pd.DataFrame:
    return pd.DataFrame(columns=["phase", "scanner", "target", "type", "flags", "first", "last", "probes",
                                 "ports_probed", "rate", "shape", "tool", "tool_evidence", "host_state"])


def _empty_states() -> pd.DataFrame:
    return pd.DataFrame(columns=["scanner", "target", "phase", "type", "protocol", "port", "state", "reason",
                                 "probes", "reply_ttl", "reply_window"])
