"""Packets + probes → port scans: who scanned whom, with which technique, and what each port's state was.

Every rule is in one place and visible (STYLE: "classify in one place"):

* A probe's **technique** follows from its protocol and TCP flags alone (`TECHNIQUES`); a SYN phase is a
  CONNECT scan when the prober completed handshakes (an ACK answering the SYN/ACK), and an ACK phase is
  read as a WINDOW scan when its RSTs carry non-zero windows (the probes are the same; only the reading
  of the replies differs, as in nmap's -sA and -sW).
* A probe is **scan-like** when its prober sent no payload on the 4-tuple (ordinary clients send data;
  scanners, even connect() scanners, do not). A set of scan-like probes is a **scan** when it touches at
  least `MIN_PORTS` ports of one target (vertical), or one port of `MIN_HOSTS` targets (horizontal), or
  uses flags no conforming stack sends (`crafted`), or is the port scan of an nmap run whose other stages
  follow within `RUN_GAP_S`.
  A UDP probe is scan-like when empty, from a source port used for several ports, or a retransmission of
  such a probe from a new source port (`_udp_scan_like`: nmap's retries of its protocol payloads).
* **Phases**: per scanner, probes of one technique; a silence longer than `PHASE_GAP_S` and than `GAP_FACTOR`
  times the scanner's pace starts a new one (`_phases`).
* **Port states**: nmap's rules per technique (`state_of`), from the first reply to any of the port's
  probes in the phase. No reply is "filtered" / "open|filtered" as nmap would say; a port whose replies
  contradict each other is "unknown" rather than a guess. A reply a target's rate limit swallowed is no
  reply: the port reads as nmap reads silence (filtered, open|filtered), never closed. A SYN/ACK lost from
  the capture (not the network) shows in the scanner's own reset of it (seq = probe seq + 1): the port is
  open, not filtered.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..protocols import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, flag_text
from ..reading.payloads import payload_heads
from .columns import column_codes, column_values, int_column, int_column_at, packet_rows, value_codes
from .exchanges import PACKET_FIELDS as EXCHANGE_FIELDS
from .exchanges import (
    Columns,
    PacketKeys,
    answers_group_query,
    other_protocol,
    span,
    take,
    tcp_in_conversation,
    to_group,
)
from .fingerprints import SIGNATURE_COLUMNS, ToolVerdict, tool_verdict
from .groups import distinct_per_group, group_ids, group_of, narrow, rows_in, stable_order
from .match import match as match_probes
from .stages import (
    ArpStage,
    Connection,
    Stage,
    arp_discovery,
    icmp_discovery,
    nse_mark,
    os_detection,
    service_stages,
    traceroutes,
    version_probe,
)
from .udp_payloads import scanner_payload

MIN_PORTS = 3
MIN_HOSTS = 5
PHASE_GAP_S = 60.0
GAP_FACTOR = 20  # times a scanner's usual longer gap between probes (`_pace`): a silence that ends its run
# A header signature (window, option layout) that holds this share of a segment's probes is a tool's
# (`_phases`); rarer ones are variants inside a run.
SIGNATURE_SHARE = 0.01
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


PACKET_FIELDS = tuple(dict.fromkeys(
    ("frame", "ts_ns", "ip_version", "src", "dst", "eth_dst", "arp_op", "ip_proto", "ttl", "ip_id", "sport", "dport",
     "tcp_flags", "seq", "ack", "window", "tcp_options", "mss", "payload_len", "icmp_type", "icmp_code",
     "q_dst", "q_proto")
    + EXCHANGE_FIELDS + SIGNATURE_COLUMNS))
PROBE_FIELDS = ("probe_frame", "ts_ns", "src", "dst", "protocol", "ip_version", "sport", "dport", "seq", "flags",
                "icmp_type", "reply_frame", "reply_kind", "reply_icmp_type", "reply_icmp_code", "reply_ttl",
                "reply_window")


UDP_MANY_PORTS = 10  # ports of one target sent one payload length: no application's (traceroutes are set apart)


def _udp_scan_like(keys: PacketKeys, pk: Columns, min_hosts: int) -> np.ndarray:
    """UDP probes that look like a scanner's:

    - empty (nobody's request);
    - from a source port that sent to three or more ports of that target (nmap keeps one source port for its
      scan) when at least half of those ports got what a scanner sends them (nothing, or its protocol payload:
      `udp_payloads`);
    - one payload length to `UDP_MANY_PORTS` or more ports of that target, from any source ports (a tool's
      fixed filler: unicornscan draws a source port per probe);
    - the same request (port and payload length) from one source port to at least `min_hosts` targets (a
      sweep), unless from the destination port itself (NTP's 123 to 123, IKE's 500 to 500: peers of one
      protocol, not a scanner's random port);
    - a retransmission of such a probe.

    A client's requests carry payload; a peer-to-peer client's or a game's datagrams go from one port to many
    peers, or to a few ports of one, with messages of their own.

    A retransmission repeats an earlier scanner probe (same sender, target, port and payload length) from
    another source port: nmap re-sends its protocol payloads (DNS, SNMP, NTP, NetBIOS …) from its scan port
    plus the try number. A client asking again sends a new request (a new DNS id and name), and a client
    never had a scanner probe to repeat: ordinary traffic stays ordinary."""
    udp = pk["udp"]
    out = np.ones(len(udp), bool)
    if not udp.any():
        return out
    u = take(pk, udp)
    payload = np.maximum(keys.at("payload_len", u["row"]), 0)
    from_port = group_ids(u["src"], u["sport"], u["dst"])
    n_from = int(from_port.max()) + 1
    ports = distinct_per_group(from_port, u["dport"], n_from)
    as_scanner = scanner_payload(u["dport"], payload)
    port_id = group_ids(from_port, u["dport"])  # (a port counts once, however often it was sent to)
    scanner_ports = np.zeros(n_from, np.int64)
    np.add.at(scanner_ports, group_of(port_id, from_port), np.bincount(port_id, weights=as_scanner) > 0)
    junk = group_ids(u["src"], u["dst"], payload)  # (any source port: unicornscan draws one per probe)
    many = distinct_per_group(junk, u["dport"], int(junk.max()) + 1)[junk] >= UDP_MANY_PORTS
    vertical = (ports >= 3) & (2 * scanner_ports >= ports)
    request = group_ids(u["src"], u["sport"], u["dport"], payload)
    swept = (distinct_per_group(request, u["dst"], int(request.max()) + 1)[request] >= min_hosts) & (u["sport"] != u["dport"])
    scanner = (payload == 0) | vertical[from_port] | many | swept
    same_request = group_ids(u["src"], u["dst"], u["dport"], payload)
    first_scanner_ts = np.full(int(same_request.max()) + 1, np.iinfo(np.int64).max)
    np.minimum.at(first_scanner_ts, same_request[scanner], u["ts_ns"][scanner])
    retry = u["ts_ns"] > first_scanner_ts[same_request]  # no scanner probe to repeat: never later than the sentinel
    out[udp] = scanner | retry
    return out


def _scanner_followups(keys: PacketKeys, pk: Columns) -> np.ndarray:
    """Per SYN probe: 1 where its sender later reset the connection with seq = probe seq + 1, 2 where it sent the
    ACK that completes the handshake (seq = probe seq + 1), else 0. Either way its kernel had received a SYN/ACK,
    whether or not the capture holds it (a reply lost from the capture, not from the network)."""
    out = np.zeros(len(pk["tcp"]), np.int8)
    tcp_syn = pk["tcp"] & ((pk["flags"] & (SYN | ACK | RST | FIN)) == SYN)
    if not tcp_syn.any():
        return out
    flags = keys.flags()
    # (the 4-tuples and the seq that follows each SYN's: a connection's later segments carry others)
    syns = [pk[c][tcp_syn] for c in ("src", "dst", "sport", "dport")] + [(pk["seq"][tcp_syn] + 1) % (1 << 32)]
    for code, bits in ((2, ACK), (1, RST)):  # (a reset after the handshake's ACK: the ACK says more)
        sent = keys.screened((flags & (RST | SYN | ACK)) == bits, ("src", "dst", "sport", "dport", "seq"), syns,
                             by=("src", "dst", "sport", "dport", "seq"), distinct=True)
        if not len(sent["src"]):
            continue
        # (screened by port first: a big scan's probes mostly went to ports no reset or ACK came back from)
        mine = np.flatnonzero(tcp_syn & np.isin(pk["dport"], np.unique(sent["dport"])) & (out == 0))
        probe = [pk["src"][mine], pk["dst"][mine], pk["sport"][mine], pk["dport"][mine], (pk["seq"][mine] + 1) % (1 << 32)]
        out[mine[rows_in(probe, [sent[c] for c in ("src", "dst", "sport", "dport", "seq")])]] = code
    return out


def _connects(keys: PacketKeys, pk: Columns) -> np.ndarray:
    """SYN probes whose prober completed the handshake: an ACK with ack = SYN/ACK seq + 1 on the 4-tuple."""
    answered = pk["synack"]
    out = np.zeros(len(answered), bool)
    if not answered.any():
        return out
    reply_seq = keys.at("seq", packet_rows(keys.frame, pk["reply_frame"][answered]))
    handshake = [pk[c][answered] for c in ("src", "dst", "sport", "dport")] + [(reply_seq + 1) % (1 << 32)]
    tuple5 = ("src", "dst", "sport", "dport", "ack")
    acks = keys.screened((keys.flags() & (SYN | ACK | RST)) == ACK, tuple5, handshake, by=tuple5, distinct=True)
    if not len(acks["src"]):
        return out
    out[answered] = rows_in(handshake, [acks[c] for c in tuple5])
    return out


def _probe_keys(packets: pd.DataFrame, keys: PacketKeys, probes: pd.DataFrame, cfg: ScanConfig = ScanConfig()) -> Columns:
    """Per probe, as integers: its packet's row, src / dst codes (the packets table's), ports and seq (0 where
    missing), flags, technique code, the reply's fields (-1 where missing), the protocol and reply
    kind codes (`column_codes`), and the readings scan_like, completed and scanner_reset."""
    rows = packet_rows(keys.frame, probes["probe_frame"].to_numpy())
    protocol, kind = probes["protocol"], probes["reply_kind"]
    # 8- and 16-bit fields, codes and frame numbers in int32 where they fit (as `PacketKeys`), seq in int64.
    narrow = keys.narrow

    def small(name: str, missing: int = -1) -> np.ndarray:
        return int_column(probes[name], missing, narrow)

    pk = {"row": rows, "frame": probes["probe_frame"].to_numpy(np.int64), "src": keys.at("src", rows), "dst": keys.at("dst", rows), "sport": small("sport", 0),
          "dport": small("dport", 0), "seq": int_column(probes["seq"], 0), "flags": small("flags", 0),
          "ts_ns": probes["ts_ns"].to_numpy(), "tcp": (protocol == "tcp").to_numpy(bool),
          "udp": (protocol == "udp").to_numpy(bool), "icmp": (protocol == "icmp").to_numpy(bool),
          "protocol": column_codes(protocol, narrow)[0], "kind": column_codes(kind, narrow)[0],
          "synack": (kind == "syn-ack").to_numpy(bool), "rst": (kind == "rst").to_numpy(bool),
          "reply_frame": small("reply_frame"), "reply_icmp_type": small("reply_icmp_type"),
          "reply_icmp_code": small("reply_icmp_code"), "reply_window": small("reply_window"),
          "reply_ttl": small("reply_ttl"), "ip_version": probes["ip_version"].to_numpy(narrow),
          "icmp_type": small("icmp_type")}
    pk["technique"] = _technique_codes(pk["udp"], pk["icmp"], pk["flags"])
    if not len(rows):
        return pk | {"scan_like": np.zeros(0, bool), "completed": np.zeros(0, bool), "followup": np.zeros(0, np.int8),
                     "to_group": np.zeros(0, bool), "conversation": np.zeros(0, bool)}
    group = to_group(keys, rows, pk["tcp"])
    conversation = tcp_in_conversation(keys, pk)
    scan_like = ~conversation & _udp_scan_like(keys, pk, cfg.min_hosts) & ~group & ~answers_group_query(keys, pk)
    return pk | {"scan_like": scan_like, "completed": _connects(keys, pk), "followup": _scanner_followups(keys, pk),
                 "to_group": group, "conversation": conversation}


def classify_probes(packets: pd.DataFrame, probes: pd.DataFrame | None = None) -> pd.DataFrame:
    """The probes table with each probe's `technique`, `scan_like` flag and provisional state."""
    probes = match_probes(packets) if probes is None else probes
    pk = _probe_keys(packets, PacketKeys(packets), probes)
    return probes.assign(technique=TECHNIQUE_NAMES[pk["technique"]], scan_like=pk["scan_like"],
                         completed=pk["completed"], scanner_reset=pk["followup"] == 1,
                         scanner_ack=pk["followup"] == 2,
                         probe_window=packets["window"].array[pk["row"]],
                         probe_options=packets["tcp_options"].array[pk["row"]], probe_ttl=packets["ttl"].array[pk["row"]])


def _phases(packets: pd.DataFrame, pk: Columns, cfg: ScanConfig) -> np.ndarray:
    """Phase number per probe (0, 1, … in order of each phase's first probe).

    A phase is one tool's run: per scanner and technique (a --scanflags combination is a technique of its
    own), split by silences longer than `phase_gap_s` and than `GAP_FACTOR` times its pace (`_pace`), and within that by the probes' header signature (TCP
    window and option layout) only where signatures follow one another rather than interleave. A tool that
    varies a field per probe (older nmap rotates its SYN window among 1024, 2048, 3072 and 4096) sends every
    variant throughout its run: one phase. Two tools run in turn (nmap's raw SYNs, then the kernel's
    connect() SYNs, then hping3's) follow one another: phases of their own.

    Signatures are "runs": the probes of one signature in a segment. Runs that hold at least
    `SIGNATURE_SHARE` of their segment's probes (and two) form clusters where their time spans overlap; every
    probe joins the cluster that began last at or before it (or the segment's first). A segment with no such
    run (a signature per probe) is one phase.
    """
    rows, technique, ts = pk["row"], pk["technique"], pk["ts_ns"]
    n = len(rows)
    custom_flags = np.where(technique == _CODE["CUSTOM"], pk["flags"], -1)
    by_time = np.argsort(ts, kind="stable")
    rank = np.empty(n, np.int64)
    rank[by_time] = np.arange(n)
    key = group_ids(pk["src"], technique, custom_flags)
    order = by_time[np.argsort(narrow(key[by_time]), kind="stable")]  # by key, then time, then capture order
    k, t = key[order], ts[order]
    same = k[1:] == k[:-1]
    # (differences taken modulo 2^64: exact where times ascend, as they do within a key, even between a damaged
    # capture's times held at the two ends of int64)
    gaps = (t[1:].view(np.uint64) - t[:-1].view(np.uint64)).astype(np.float64)
    base = cfg.phase_gap_s * 1e9
    new = np.ones(n, bool)
    new[1:] = ~same
    long = np.flatnonzero(same & (gaps > base))  # (silences a run's pace may end it: often none)
    if len(long):
        slow = np.isin(k[1:], np.unique(k[1:][long])) & same  # (the pace of the keys that have some)
        limit = np.maximum(base, GAP_FACTOR * _pace(k[1:][slow], gaps[slow], base, int(k.max()) + 1))
        new[1:][long] = gaps[long] > limit[k[1:][long]]
    segment = np.empty(n, np.int64)
    segment[order] = np.cumsum(new) - 1

    options = value_codes(packets["tcp_options"], rows)
    window = int_column_at(packets["window"], rows, dtype=np.int32)
    label = _signature_clusters(segment, group_ids(segment, window, options), rank)
    # Phases numbered in order of their first probe (the least row).
    ids = group_ids(label)
    least = np.full(int(ids.max()) + 1 if n else 0, n)
    np.minimum.at(least, ids, np.arange(n))
    number = np.empty(len(least), np.int64)
    number[np.argsort(least, kind="stable")] = np.arange(len(least))
    return number[ids]


@dataclass(frozen=True)
class ScanResult:
    """What `scans` found. Unpacks and indexes as the pair (scans, states).

    scans: one row per (phase, target): phase, stage, scanner, target, type, flags, first, last (epoch s),
      first_frame, last_frame, probes, ports_probed, rate (probes/s), shape (vertical | horizontal | block),
      tool, tool_evidence, tool_frames, hops, host_state, evidence.
    states: one row per (phase, target, port): scanner, target, phase, type, protocol, port, state, reason,
      probes, reply_ttl, reply_window, probe_frame (the probe whose reply, or silence, decided) and
      reply_frame (that reply's; NaN: none).
    probes: every probe the scans and stages hold: probe_frame, phase, target, port (NaN for ICMP and ARP).
    notes: activity that resembles scanning and is not read as a scan, with the reason: kind, scanner,
      targets, port, first, last, packets, evidence, frames.
    """

    scans: pd.DataFrame
    states: pd.DataFrame
    notes: pd.DataFrame
    probe_parts: tuple[pd.DataFrame, ...] = ()  # (`probes`, made when asked for: only the report plots them)
    phase_order: dict[int, int] = field(default_factory=dict)

    @functools.cached_property
    def probes(self) -> pd.DataFrame:
        """Every probe the scans and stages hold: probe_frame, phase, scanner, target, protocol, port (NaN for
        ICMP and ARP), in frame order."""
        parts = [p for p in self.probe_parts if len(p)]
        if not parts or not self.phase_order:
            return pd.DataFrame(columns=list(PROBE_TABLE_COLUMNS))
        table = pd.concat([p.astype({"scanner": str, "target": str, "protocol": str}) for p in parts], ignore_index=True)
        table = table[table["phase"].isin(self.phase_order)]
        table = table.assign(phase=table["phase"].map(self.phase_order).astype(np.int64))
        return table.sort_values("probe_frame", kind="stable").reset_index(drop=True)[list(PROBE_TABLE_COLUMNS)]

    def __iter__(self) -> Iterator[pd.DataFrame]:
        yield self.scans
        yield self.states

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> pd.DataFrame:
        return (self.scans, self.states)[i]


def _pace(key: np.ndarray, gaps: np.ndarray, base: float, n_keys: int) -> np.ndarray:
    """Per key, its scanner's longer usual gap between probes (ns): the 99th percentile of its gaps up to `base`,
    or, where most gaps pass `base` (nmap's -T0 waits five minutes between probes, -T1 fifteen seconds), the
    median of all. A silence GAP_FACTOR times longer ends a run; a scan that pauses now and then does not.
    key: ascending (the gaps of each key together)."""
    out = np.zeros(n_keys)
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, np.int64)
    for k, a, b in zip(key[starts].tolist(), starts.tolist(), np.r_[starts[1:], len(key)].tolist()):
        g = gaps[a:b]
        short = g[g <= base]
        out[k] = np.percentile(short, 99) if 2 * len(short) >= len(g) else np.median(g)
    return out


def _signature_clusters(segment: np.ndarray, run: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Per probe, a label of its phase within its segment (`_phases`). segment: each probe's segment (0..k-1);
    run: its (segment, signature) id; rank: its place in time order (0..n-1)."""
    n = len(segment)
    n_segments, n_runs = (int(segment.max()) + 1, int(run.max()) + 1) if n else (0, 0)
    if n_runs == n_segments:  # one signature per segment: the segments are the phases
        return segment
    size = np.bincount(run, minlength=n_runs)
    run_segment = group_of(run, segment)
    first, last = np.full(n_runs, n), np.full(n_runs, -1)
    np.minimum.at(first, run, rank)
    np.maximum.at(last, run, rank)
    runs = np.flatnonzero(size >= np.maximum(2, SIGNATURE_SHARE * np.bincount(segment)[run_segment]))
    if not len(runs):  # a signature per probe: each segment one phase
        return segment
    runs = runs[np.lexsort((first[runs], run_segment[runs]))]
    seg_of, start, end = run_segment[runs], first[runs], last[runs]
    reach = pd.Series(end).groupby(seg_of).cummax().to_numpy()  # the latest end so far, per segment
    opens = np.ones(len(runs), bool)
    opens[1:] = (seg_of[1:] != seg_of[:-1]) | (start[1:] > reach[:-1])
    cluster_segment, cluster_start = seg_of[opens], start[opens]
    # each probe: the cluster of its segment that began last at or before it, else its segment's first
    where = np.searchsorted(cluster_segment * (n + 1) + cluster_start, segment * (n + 1) + rank, side="right") - 1
    mine = (where >= 0) & (cluster_segment[np.maximum(where, 0)] == segment)
    later = np.minimum(where + 1, len(cluster_segment) - 1)
    first_of_segment = ~mine & (cluster_segment[later] == segment)
    cluster = np.where(mine, where, np.where(first_of_segment, later, -1))
    return np.where(cluster >= 0, cluster, len(cluster_segment) + segment)  # (no cluster: the whole segment)


def scans(packets: pd.DataFrame, probes: pd.DataFrame | None = None, *, config: ScanConfig = ScanConfig()) -> ScanResult:
    """Scans found in a capture (`ScanResult`, which also unpacks as `found, states = scans(packets)`).

    Input: the packets table (`analyzer.read`, at least `PACKET_FIELDS`) and its probes (`analyzer.match`,
    at least `PROBE_FIELDS`; matched here when not given). Where the table names its file (`attrs["path"]`),
    the first bytes of a run's service connections are read from it to name nmap's version probes and scripts.
    """
    probes = match_probes(packets) if probes is None else probes
    keys = PacketKeys(packets)
    pk = _probe_keys(packets, keys, probes, config)
    names = {"src": column_values(packets["src"]), "dst": column_values(packets["dst"]),
             "protocol": column_values(probes["protocol"]).astype(str), "kind": column_values(probes["reply_kind"]).astype(str)}
    base = pk["scan_like"] & (pk["src"] >= 0)
    rows, found_states, notes, probe_parts = [], [], [], []
    next_phase = _ipproto(packets, config, rows, found_states, first_phase=0)
    taken = _within(pk, names, rows)  # (an IP protocol scan's TCP, UDP and ICMP probes are its own)
    pk["ttl"] = keys.at("ttl", pk["row"])
    paths, found_stages = _probe_stages(keys, pk, base, taken, names)
    keep = base & ~pk["icmp"] & ~taken
    port_scans = port_states = None
    if keep.any():
        pk_scan, scanned, why, breadth = _port_scan_phases(packets, keys, pk, keep, config, names, notes)
        joining = _joining(keys, pk, keep, pk_scan, scanned, config)
        services = _service_stages(keys, pk, keep, pk_scan, found_stages + paths)
        found_stages += services
        claimed = np.zeros(len(keep), bool)
        for stage in services:
            claimed[stage.probes] = True
        runs: dict[tuple[int, int], list[int]] = {}  # nmap's stages that follow a port scan, by when they begin
        for st in found_stages:
            if st.stage in ("OS detection", "version detection", "scripts"):
                pair = (int(pk["src"][st.probes[0]]), int(pk["dst"][st.probes[0]]))
                runs.setdefault(pair, []).append(int(pk["ts_ns"][st.probes].min()))
        if joining.any() or (claimed & keep).any() or runs:  # (again: what the run's other stages tell)
            keep = (keep | joining) & ~claimed
            pk_scan, scanned, why, breadth = _port_scan_phases(packets, keys, pk, keep, config, names, [], runs)
        readings = _phase_readings(packets, pk_scan, scanned)
        port_scans, port_states = _port_scans(pk_scan, readings, scanned, names, why, breadth)
        port_scans["phase"] += next_phase
        port_states["phase"] += next_phase
        shown = scanned[pk_scan["target"]]
        probe_parts.append(_probe_table(pk_scan, shown, pk_scan["phase"][shown] + next_phase, names))
        next_phase += int(pk_scan["phase"].max()) + 1
    scanned_pairs = set() if port_scans is None else set(zip(port_scans["scanner"], port_scans["target"]))
    for stage in paths:  # a traceroute beside a port scan is a stage of it (nmap -A); alone, a note
        first = stage.probes[0]
        pair = (str(names["src"][pk["src"][first]]), str(names["dst"][pk["dst"][first]]))
        if pair in scanned_pairs:
            found_stages.append(stage)
        else:
            ts = pk["ts_ns"][stage.probes]
            notes.append(dict(kind=stage.stage, scanner=pair[0], targets=1, port=None, protocol=None,
                              first=ts.min() / 1e9, last=ts.max() / 1e9, packets=len(stage.probes),
                              evidence=f"{stage.evidence} to {pair[1]}: a path to a host, not a port scan",
                              frames=_frames_of(keys, pk["row"][stage.probes])))
    for stage in found_stages:
        rows.extend(_stage_rows(stage, pk, names, next_phase))
        chosen = np.zeros(len(pk["row"]), bool)
        chosen[stage.probes] = True
        probe_parts.append(_probe_table(pk, chosen, np.full(len(stage.probes), next_phase), names))
        next_phase += 1
    for arp in arp_discovery(packets):
        rows.extend(_arp_rows(arp, next_phase))
        probe_parts.append(pd.DataFrame({"probe_frame": arp.frames, "phase": next_phase, "scanner": arp.scanner,
                                         "target": arp.asked, "protocol": "arp", "port": np.nan}))
        next_phase += 1
    return _finish(rows, found_states, port_scans, port_states, notes=notes, probes=probe_parts)


def _probe_stages(keys: PacketKeys, pk: Columns, base: np.ndarray, taken: np.ndarray, names: dict[str, np.ndarray]
                  ) -> tuple[list[Stage], list[Stage]]:
    """The stages found by their probes' own signatures, before any port scan is read, in this order (each
    takes its probes, marked in `taken`, from the next): path probes and traceroutes, nmap's OS detection,
    host discovery by ICMP. Returns (path stages, the others)."""
    paths = traceroutes(keys, pk, base & ~taken, pk["ttl"])
    for stage in paths:
        taken[stage.probes] = True
    # (nmap's OS probes by their own signature: U1's 300 bytes to a closed port are no UDP scanner's probe)
    found = os_detection(keys, pk, (pk["src"] >= 0) & ~pk["to_group"] & ~taken)
    for stage in found:
        taken[stage.probes] = True
    icmp = icmp_discovery(pk, base & ~taken, names)
    for stage in icmp:
        taken[stage.probes] = True
    return paths, found + icmp


def _service_stages(keys: PacketKeys, pk: Columns, keep: np.ndarray, pk_scan: Columns, others: list[Stage]
                    ) -> list[Stage]:
    """Version detection, scripts and other service interaction: TCP connections (or attempts) a scanner
    opened to a port after another of its probes had found that port open (`stages.service_stages`
    reads them; others: the run's other stages, which end its bursts)."""
    service = _service_probes(keys, pk, keep, pk_scan)
    if not len(service):
        return []
    connections = _connections(keys, pk, service)
    starts: dict[tuple[int, int], list[int]] = {}  # the run's other stages begin: its bursts end
    for stage in others:
        first = stage.probes[0]
        starts.setdefault((int(pk["src"][first]), int(pk["dst"][first])), []).append(int(pk["ts_ns"][stage.probes].min()))
    stages = []
    for pair in dict.fromkeys(c.pair for c in connections):
        stages.extend(service_stages([c.connection for c in connections if c.pair == pair], starts.get(pair, [])))
    return stages


def _service_probes(keys: PacketKeys, pk: Columns, keep: np.ndarray, pk_scan: Columns) -> np.ndarray:
    """The SYN probes that opened connections to ports another probe of their scanner had found open before
    (`_service_stages`), ascending."""
    none = np.zeros(0, np.int64)
    opened = np.flatnonzero((pk_scan["synack"] | (pk_scan["followup"] > 0)) & pk_scan["tcp"])
    if not len(opened):
        return none
    # (SYNs to the ports found open: a scan's many other probes are screened out by port first)
    candidates = np.flatnonzero(np.isin(pk["dport"], np.unique(pk_scan["dport"][opened])))
    flags = pk["flags"][candidates]
    candidates = candidates[pk["tcp"][candidates] & ((flags & (SYN | ACK | RST | FIN)) == SYN)
                            & (pk["src"][candidates] >= 0) & ~pk["to_group"][candidates]]
    if not len(candidates):
        return none
    # when each (scanner, target, port) was first found open, and by which probe: ids of the open findings'
    # (scanner, target, port), then of the candidates'
    opened = opened[np.argsort(pk_scan["ts_ns"][opened], kind="stable")]
    ids = group_ids(*(np.concatenate([pk_scan[c][opened], pk[c][candidates]]) for c in ("src", "dst", "dport")))
    first_of = np.full(int(ids.max()) + 1, -1)
    first_of[ids[:len(opened)][::-1]] = opened[::-1]  # (the earliest finding of each)
    finding = first_of[ids[len(opened):]]
    del ids, first_of  # (a busy client's millions of SYNs to a port found open: its arrays go as they are read)
    # the candidates that came after their (scanner, target, port)'s finding, and the probe that found it
    later = finding >= 0
    candidates, finding = candidates[later], finding[later]
    by = np.flatnonzero(keep)[finding]
    later = (candidates != by) & (pk_scan["ts_ns"][finding] < pk["ts_ns"][candidates])
    del finding
    if not later.any():
        return none
    # a connection: the handshake completed, or data went, or the SYN is not the scan's own kind (the kernel's
    # beside a tool's raw probes); a later probe of the scan itself to that port (a second pass) is none
    probe, by = candidates[later], by[later]
    connected = pk["completed"][probe] | (pk["followup"][probe] == 2) | pk["conversation"][probe]
    packets = keys.packets
    rows = np.concatenate([pk["row"][probe], pk["row"][by]])
    signature = group_ids(int_column_at(packets["window"], rows), value_codes(packets["tcp_options"], rows))
    return np.unique(probe[connected | (signature[:len(probe)] != signature[len(probe):])])


@dataclass(frozen=True)
class _PairConnection:
    pair: tuple[int, int]
    connection: Connection


def _connections(keys: PacketKeys, pk: Columns, service: np.ndarray) -> list[_PairConnection]:
    """The service connections opened by the SYN probes `service`, each with what its first data said (the
    scanner's first data segment on the 4-tuple, read from the capture file: `payloads.payload_heads`), of the
    (scanner, target) pairs where one of them sent nmap's version probes or its scripting engine's marks: the
    others' make no stage (`stages.service_stages`), and a busy client's millions are not made objects."""
    tuple4 = [pk[c][service] for c in ("src", "dst", "sport", "dport")]
    n = len(service)
    first, server_sent = np.full(n, np.iinfo(np.int64).max), np.zeros(n, bool)
    for rows in keys.marked(keys.tcp_payload()):  # (a busy capture's data segments: a slice at a time)
        data = keys.take(rows, ("frame", "src", "dst", "sport", "dport"))
        # ids of the connections' 4-tuples, then of the data segments' in both directions
        ids = group_ids(*[np.concatenate([t, data[c], data[r]]) for t, c, r in
                          zip(tuple4, ("src", "dst", "sport", "dport"), ("dst", "src", "dport", "sport"))])
        m = len(rows)
        client_first = np.full(int(ids.max()) + 1, np.iinfo(np.int64).max)
        np.minimum.at(client_first, ids[n:n + m], data["frame"])
        sent = np.zeros(int(ids.max()) + 1, bool)
        sent[ids[n + m:]] = True
        first, server_sent = np.minimum(first, client_first[ids[:n]]), server_sent | sent[ids[:n]]
    sent_data = first < np.iinfo(np.int64).max
    heads = payload_heads(keys.packets, first[sent_data])
    said: dict[bytes | None, tuple[str, str]] = {}  # (what a payload says, once per distinct payload)
    kinds = [("banner", "banner read (nmap's NULL probe)") if answered else ("none", "no data")
             for answered in server_sent.tolist()]
    for i in np.flatnonzero(sent_data).tolist():
        payload = heads.get(int(first[i]))
        if payload not in said:
            version, mark = (version_probe(payload), nse_mark(payload)) if payload is not None else (None, None)
            said[payload] = ("version", version) if version else ("script", mark) if mark else ("data", "other data")
        kinds[i] = said[payload]
    pair = group_ids(tuple4[0], tuple4[1])
    nmap = np.zeros(int(pair.max(initial=-1)) + 1, bool)
    nmap[pair[[k in ("version", "script") for k, _ in kinds]]] = True
    return [_PairConnection((int(pk["src"][probe]), int(pk["dst"][probe])),
                            Connection(probe, int(pk["dport"][probe]), int(pk["ts_ns"][probe]), *kinds[i]))
            for i, probe in zip(np.flatnonzero(nmap[pair]).tolist(), service[nmap[pair]].tolist())]


def _probe_table(pk: Columns, chosen: np.ndarray, phase: np.ndarray, names: dict[str, np.ndarray]) -> pd.DataFrame:
    """`ScanResult.probes` rows: the chosen probes' frames, phases (given, one per chosen probe), scanner,
    target, protocol and port (NaN for ICMP)."""
    protocol = pk["protocol"][chosen]
    icmp = np.flatnonzero(names["protocol"] == "icmp")
    return pd.DataFrame({
        "probe_frame": pk["frame"][chosen], "phase": phase,
        "scanner": pd.Categorical.from_codes(pk["src"][chosen], names["src"]),
        "target": pd.Categorical.from_codes(pk["dst"][chosen], names["dst"]),
        "protocol": pd.Categorical.from_codes(protocol, names["protocol"]),
        "port": np.where(np.isin(protocol, icmp), np.nan, pk["dport"][chosen])})


def _why_texts(why: np.ndarray, breadth: np.ndarray, ports: np.ndarray, flags: list[str]) -> list[str]:
    """Why each scanned target reads as scanned (`_scanned_targets`' bits and breadth, its ports probed and its
    phase's flags, one entry per target)."""
    texts = []
    for w, b, n, f in zip(why.tolist(), breadth.tolist(), ports.tolist(), flags):
        parts = []
        if w & 1:
            parts.append(f"{n:,} ports of this host probed")
        if w & 2:
            parts.append(f"a port probed on {b:,} hosts")
        if w & 4:
            parts.append(f"flags {f or 'none'}: no TCP stack sends them outside a scan")
        if w & 8 and not w & 7:
            parts.append("the port scan nmap's next stage of this run follows (see it)")
        texts.append("; ".join(parts))
    return texts


def _within(pk: Columns, names: dict[str, np.ndarray], rows: list[dict]) -> np.ndarray:
    """Which probes a scanner sent a target within one of the scans `rows` (scanner, target, first, last)."""
    out = np.zeros(len(pk["src"]), bool)
    code_of = {str(v): i for i, v in enumerate(names["src"].tolist())}
    dst_of = {str(v): i for i, v in enumerate(names["dst"].tolist())}
    for r in rows:
        a, b = code_of.get(str(r["scanner"]), -2), dst_of.get(str(r["target"]), -2)
        out |= ((pk["src"] == a) & (pk["dst"] == b) & (pk["ts_ns"] >= r["first"] * 1e9 - 1)
                & (pk["ts_ns"] <= r["last"] * 1e9 + 1))
    return out


def _port_scan_phases(packets: pd.DataFrame, keys: PacketKeys, pk: Columns, keep: np.ndarray, cfg: ScanConfig,
                      names: dict[str, np.ndarray], notes: list[dict], runs: dict | None = None
                      ) -> tuple[Columns, np.ndarray, np.ndarray, np.ndarray]:
    """The probes `keep` with their phase, (phase, target, port) and (phase, target) ids, and
    `_scanned_targets`' reading of them (runs: `_scanned_targets`')."""
    pk_scan = take(pk, keep)
    pk_scan["phase"] = _phases(packets, pk_scan, cfg)
    pk_scan["port"] = group_ids(pk_scan["phase"], pk_scan["dst"], pk_scan["dport"])  # (phase, target, port)
    pk_scan["target"] = group_ids(pk_scan["phase"], pk_scan["dst"])  # (phase, target)
    return (pk_scan, *_scanned_targets(keys, pk_scan, cfg, names, notes, runs))


def _joining(keys: PacketKeys, pk: Columns, kept: np.ndarray, pk_scan: Columns, scanned: np.ndarray,
             cfg: ScanConfig) -> np.ndarray:
    """Probes a scan holds though alone they would not read as a scan's, sent by a scanner to a target it scans,
    with the scan's own header habits (its TTL, or TTL range, and for TCP a window and option layout its probes
    carry), so that the scanner host's other programs stay out:

    - SYNs that opened connections carrying the scanner's data, within `phase_gap_s` of its SYN or connect
      scan of that target (unicornscan's connect mode sends its payloads on the ports it finds open);
    - datagrams with payloads of the scanner's own (unicornscan's payloads.conf), during its UDP scan.
    Ordinary traffic never makes a scan; once a scan is found, its ports' states use every probe of it."""
    syn = pk["conversation"] & pk["tcp"] & ((pk["flags"] & (SYN | ACK | RST | FIN)) == SYN)
    udp = pk["udp"] & ~pk["scan_like"]
    candidates = np.flatnonzero((syn | udp) & ~pk["to_group"] & (pk["src"] >= 0) & ~kept)
    out = np.zeros(len(kept), bool)
    if not len(candidates) or not scanned.any():
        return out
    gap = int(cfg.phase_gap_s * 1e9)
    packets = keys.packets
    for protocol, techniques, margin in ((pk["tcp"], (_CODE["SYN"], _CODE["CUSTOM"]), gap), (pk["udp"], (_CODE["UDP"],), 0)):
        mine = candidates[protocol[candidates]]
        if not len(mine):
            continue
        in_scan = np.flatnonzero(np.isin(pk_scan["technique"], techniques) & scanned[pk_scan["target"]])
        for target in np.unique(pk_scan["target"][in_scan]):
            probes = in_scan[pk_scan["target"][in_scan] == target]
            first = probes[0]
            c = mine[(pk["src"][mine] == pk_scan["src"][first]) & (pk["dst"][mine] == pk_scan["dst"][first])]
            lo, hi = span(pk_scan["ts_ns"][probes], margin, margin)
            c = c[(pk["ts_ns"][c] >= lo) & (pk["ts_ns"][c] <= hi)]
            if not len(c):
                continue
            ttl = pk_scan["ttl"][probes]
            mode = np.bincount(np.maximum(ttl, 0)).argmax()
            same = (pk["ttl"][c] == mode) if (ttl == mode).mean() >= 0.9 else (
                (pk["ttl"][c] >= ttl.min()) & (pk["ttl"][c] <= ttl.max()))
            if protocol is pk["tcp"]:  # (window, option layout) codes of the scan's probes, then of the candidates
                both = np.concatenate([pk_scan["row"][probes], pk["row"][c]])
                sig = group_ids(int_column_at(packets["window"], both), value_codes(packets["tcp_options"], both))
                same &= np.isin(sig[len(probes):], sig[:len(probes)])
            out[c[same]] = True
    return out


def _stage_rows(stage: Stage, pk: Columns, names: dict[str, np.ndarray], phase: int) -> list[dict]:
    """The scans table's rows of a stage: one per target."""
    out = []
    dst = pk["dst"][stage.probes]
    for target in dict.fromkeys(dst.tolist()):
        mine = stage.probes[dst == target]
        ports = {(int(p), "tcp" if t else "udp") for p, t, u in zip(pk["dport"][mine], pk["tcp"][mine], pk["udp"][mine])
                 if t or u}
        row = _row(phase, str(names["src"][pk["src"][mine[0]]]), str(names["dst"][target]), stage.kind, stage.flags,
                   pk["ts_ns"][mine], len(ports), "vertical" if len(set(dst.tolist())) == 1 else "horizontal",
                   stage.tool, stage.tool_evidence, pk["frame"][mine])
        out.append(row | {"stage": stage.stage, "host_state": stage.host_state.get(int(target), ""),
                          "evidence": stage.evidence})
    return out


def _arp_rows(arp: ArpStage, phase: int) -> list[dict]:
    """The scans table's rows of an ARP discovery: one per address asked for."""
    out = []
    for target in arp.targets:
        mine = arp.asked == target
        out.append(_row(phase, arp.scanner, target, "PING", "ARP", arp.ts_ns[mine], 0, "horizontal", "unknown", "",
                        arp.frames[mine])
                   | {"stage": "host discovery", "host_state": "up" if target in arp.answered else "down",
                      "evidence": arp.evidence})
    return out


def crafted(flags: np.ndarray) -> np.ndarray:
    """TCP flags no conforming stack sends to open an exchange or inside one: without ACK, anything but a SYN or
    a RST (FIN, NULL, Xmas, CWR alone …), and SYN beside FIN or RST. ECN's ECE and CWR are left aside: a SYN with
    both asks for ECN."""
    base = flags & ~(ECE | CWR)
    no_ack = (base & ACK) == 0
    return (no_ack & (base != SYN) & (base != RST)) | (((base & SYN) != 0) & ((base & (FIN | RST)) != 0))


def _scanned_targets(keys: PacketKeys, pk: Columns, cfg: ScanConfig, names: dict[str, np.ndarray],
                     notes: list[dict], runs: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (phase, target) id: whether the phase scanned that target, why (bits: 1 vertical, 2 horizontal, 4
    crafted flags), and the most hosts one of its ports was swept on; notes on what was not read as a scan.

    A target is scanned when the phase probed at least `min_ports` of its ports (vertical), or one of its ports
    on at least `min_hosts` targets (horizontal), or with crafted flags (`crafted`). A horizontal group is a
    service's client, not a scan, when the prober sent data to at least half of the targets that accepted its
    connections on that port (spam delivery, a peer-to-peer client working through its peer list); a
    scanner's SYNs get no data after them."""
    phase, target, port, dport = pk["phase"], pk["target"], pk["port"], pk["dport"]
    n_targets = int(target.max()) + 1
    port_target = group_of(port, target)
    vertical = np.bincount(port_target, minlength=n_targets) >= cfg.min_ports
    target_phase = group_of(target, phase)
    first = np.full(int(phase.max()) + 1, len(phase))
    np.minimum.at(first, phase, np.arange(len(phase)))
    stealthy = (crafted(pk["flags"][first]) & pk["tcp"][first])[target_phase]

    sweep = group_ids(phase, dport)  # (phase, port): its targets
    port_sweep = group_of(port, sweep)
    hosts_per_sweep = np.bincount(port_sweep)
    wide = hosts_per_sweep >= cfg.min_hosts
    client = np.zeros(len(hosts_per_sweep), bool)
    if wide.any():
        client = _clients(keys, pk, sweep, wide, names, notes)
    breadth = np.zeros(n_targets, np.int64)  # the most hosts one of its ports was swept on (clients' left out)
    np.maximum.at(breadth, port_target, np.where((wide & ~client)[port_sweep], hosts_per_sweep[port_sweep], 0))
    horizontal = breadth > 0
    in_run = np.zeros(n_targets, bool)
    if runs:  # a port scan that an nmap stage follows within RUN_GAP_S (OS detection, version probes, scripts:
        # nmap runs them on the ports its scan found) is that run's port scan, however few its ports
        last = np.full(n_targets, np.iinfo(np.int64).min)
        np.maximum.at(last, pk["target"], pk["ts_ns"])
        scanner, victim = group_of(pk["target"], pk["src"]), group_of(pk["target"], pk["dst"])
        for t in range(n_targets):
            starts = runs.get((int(scanner[t]), int(victim[t])), ())
            in_run[t] = any(0 <= start - last[t] <= RUN_GAP_S * 1e9 for start in starts)
    scanned = vertical | horizontal | stealthy | in_run
    _floods(pk, scanned, target_phase, names, notes)
    return scanned, vertical * 1 + horizontal * 2 + stealthy * 4 + in_run * 8, breadth


RUN_GAP_S = 60.0  # an nmap stage that begins this soon after a port scan of its target ends: one run
CLIENT_SHARE = 0.5  # of the accepting targets given data, for a horizontal group to be a client's
FLOOD_PROBES = 100  # SYNs to one port of one target, unscanned, that a note calls a flood


def _clients(keys: PacketKeys, pk: Columns, sweep: np.ndarray, wide: np.ndarray, names: dict[str, np.ndarray],
             notes: list[dict]) -> np.ndarray:
    """Per (phase, port) sweep: whether it is a client's fan-out (`_scanned_targets`), with a note for each."""
    tcp_sweeps = np.flatnonzero(wide & np.bincount(sweep, weights=pk["tcp"], minlength=len(wide)).astype(bool))
    out = np.zeros(len(wide), bool)
    if not len(tcp_sweeps):
        return out
    in_sweep = np.isin(sweep, tcp_sweeps)
    scanner = np.zeros(len(wide), np.int64)
    scanner[sweep] = pk["src"]
    port = np.zeros(len(wide), np.int64)
    port[sweep] = pk["dport"]
    data = keys.screened(keys.tcp_payload(), ("src", "dst", "dport"), [scanner[tcp_sweeps], port[tcp_sweeps]],
                         by=("src", "dport"), distinct=True)
    # (sweep, target) pairs: targets that accepted a probe of the sweep, and targets given data by its scanner
    accepted = in_sweep & (pk["synack"] | (pk["followup"] > 0))
    pairs = pd.DataFrame({"sweep": sweep[accepted], "dst": pk["dst"][accepted], "data": False})
    given = pd.DataFrame({"src": data["src"], "dport": data["dport"], "dst": data["dst"]}).drop_duplicates()
    wanted = pd.DataFrame({"sweep": tcp_sweeps, "src": scanner[tcp_sweeps], "dport": port[tcp_sweeps]})
    given = wanted.merge(given, on=["src", "dport"])[["sweep", "dst"]].assign(data=True)
    both = pd.concat([pairs, given]).groupby(["sweep", "dst"], sort=False)["data"].any().reset_index()
    counts = both.groupby("sweep")["data"].agg(["size", "sum"])
    is_client = counts["sum"] >= CLIENT_SHARE * counts["size"]
    for sw in counts.index[is_client.to_numpy()]:
        out[sw] = True
        mine = sweep == sw
        ts = pk["ts_ns"][mine]
        n_data, n_accepted = int(counts.at[sw, "sum"]), int(counts.at[sw, "size"])
        notes.append(dict(
            kind="client", scanner=str(names["src"][scanner[sw]]), targets=int(np.unique(pk["dst"][mine]).size),
            port=int(port[sw]), protocol="tcp", first=ts.min() / 1e9, last=ts.max() / 1e9, packets=int(mine.sum()),
            evidence=(f"{int(mine.sum()):,} unanswered or refused connection attempts to port {int(port[sw])} of "
                      f"{int(np.unique(pk['dst'][mine]).size):,} hosts; the sender sent data to {n_data:,} of the "
                      f"{n_accepted:,} hosts that accepted: a client of that service working through a list of "
                      "hosts, not a port scan (a scanner sends no data)"),
            frames=_frames_of(keys, pk["row"][mine])))
    return out


def _floods(pk: Columns, scanned: np.ndarray, target_phase: np.ndarray, names: dict[str, np.ndarray],
            notes: list[dict]) -> None:
    """A note for each unscanned (phase, target) sent `FLOOD_PROBES` or more SYNs to one port."""
    target = pk["target"]
    size = np.bincount(target, minlength=len(scanned))
    heavy = np.flatnonzero(~scanned & (size >= FLOOD_PROBES))
    if not len(heavy):
        return
    order = stable_order(target)  # (each target's rows, in row order: a slice of it)
    ends = np.cumsum(size)
    for t in heavy:
        mine = order[ends[t] - size[t]:ends[t]]
        if len(np.unique(pk["dport"][mine])) != 1 or not pk["tcp"][mine[0]]:
            continue
        ts = pk["ts_ns"][mine]
        span = (ts.max() - ts.min()) / 1e9
        n_ports = len(np.unique(pk["sport"][mine]))
        answered = int(pk["synack"][mine].sum())
        notes.append(dict(
            kind="flood", scanner=str(names["src"][pk["src"][mine[0]]]), targets=1, port=int(pk["dport"][mine[0]]),
            protocol="tcp", first=ts.min() / 1e9, last=ts.max() / 1e9, packets=len(mine),
            evidence=(f"{len(mine):,} connection attempts to port {int(pk['dport'][mine[0]])} of "
                      f"{names['dst'][pk['dst'][mine[0]]]} in {span:.1f} s from {n_ports:,} source "
                      f"port{'s' if n_ports > 1 else ''}, "
                      f"{answered:,} answered and none completed with data: a flood of one port, not a port scan "
                      "(a scan probes several ports or hosts)"),
            frames=[int(f) for f in pk["frame"][mine[[0, -1]]]]))


def _frames_of(keys: PacketKeys, rows: np.ndarray, most: int = 3) -> list[int]:
    """The frame numbers (as Wireshark counts them) of the first `most` rows and the last."""
    frames = keys.frame[rows]
    picked = frames[:most].tolist() + (frames[-1:].tolist() if len(frames) > most else [])
    return [int(f) for f in picked]


def _phase_readings(packets: pd.DataFrame, pk: Columns, scanned: np.ndarray) -> pd.DataFrame:
    """Per phase: its technique code (SYN read as CONNECT, ACK as WINDOW where the replies say so), whether
    it scanned any target, its shape, flags text and tool."""
    phase, port = pk["phase"], pk["port"]
    n_phases = int(phase.max()) + 1
    first = np.full(n_phases, len(phase))
    np.minimum.at(first, phase, np.arange(len(phase)))
    technique = pk["technique"][first]
    n_synack = np.bincount(phase[pk["synack"]], minlength=n_phases)
    n_completed = np.bincount(phase[pk["synack"] & pk["completed"]], minlength=n_phases)
    n_acked = np.bincount(phase[pk["followup"] == 2], minlength=n_phases)  # (handshakes whose SYN/ACK was not captured)
    n_open_windows = np.bincount(phase[pk["rst"] & (pk["reply_window"] > 0)], minlength=n_phases)
    technique = np.select([(technique == _CODE["SYN"]) & (n_synack + n_acked > 0)
                           & (n_completed + n_acked > 0.5 * (n_synack + n_acked)),
                           (technique == _CODE["ACK"]) & (n_open_windows > 0)],
                          [_CODE["CONNECT"], _CODE["WINDOW"]], technique)

    port_phase = group_of(port, phase)  # per (phase, target, port): counted there, not per probe
    n_targets = distinct_per_group(port_phase, group_of(port, pk["dst"]), n_phases)
    n_ports = distinct_per_group(port_phase, group_of(port, pk["dport"]), n_phases)
    size = np.bincount(phase, minlength=n_phases)
    used = np.zeros(n_phases, bool)
    used[group_of(pk["target"], phase)[scanned]] = True

    names = TECHNIQUE_NAMES[technique]
    frames = packets["frame"].to_numpy()[pk["row"][np.argsort(narrow(phase), kind="stable")]]  # by phase, in order
    ends = np.cumsum(size)
    none = ToolVerdict("", "")
    tools = [tool_verdict(packets, frames[end - n:end], name) if big else none
             for name, big, n, end in zip(names, used, size, ends)]
    return pd.DataFrame({
        "technique": technique, "scanned": used,
        "shape": np.where(n_targets == 1, "vertical", np.where(n_ports == 1, "horizontal", "block")),
        "flags": [flag_text(int(f)) if name != "UDP" else "" for f, name in zip(pk["flags"][first], names)],
        "tool": [t.tool for t in tools], "tool_evidence": [t.evidence for t in tools],
        "hops": [t.hops for t in tools], "tool_frames": [list(t.frames) for t in tools]})


def _port_scans(pk: Columns, readings: pd.DataFrame, scanned: np.ndarray, names: dict[str, np.ndarray],
                why: np.ndarray, breadth: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The scans table's rows (one per phase and scanned target) and their port states (one per phase, target
    and port, in port order). names: the text of each src, dst, protocol and reply kind code."""
    phase, ts, target = pk["phase"], pk["ts_ns"], pk["target"]
    target_phase = group_of(target, phase)
    # Targets in phase order, each phase's in order of first probe; only those scanned.
    shown = np.argsort(narrow(target_phase), kind="stable")
    shown = shown[scanned[shown]]
    n = len(target_phase)
    first, last = np.full(n, np.iinfo(np.int64).max), np.full(n, -1)
    np.minimum.at(first, target, ts)
    np.maximum.at(last, target, ts)
    # the first and last probe's frames (by time, then capture order)
    by_time = np.argsort(ts, kind="stable")
    first_row, last_row = np.full(n, -1), np.full(n, -1)
    last_row[target[by_time]] = by_time
    first_row[target[by_time[::-1]]] = by_time[::-1]
    frame = pk["frame"]
    n_probes = np.bincount(target)[shown]
    duration = (last - first)[shown] / 1e9
    ph = readings.iloc[target_phase[shown]]
    scan_rows = pd.DataFrame({
        "phase": target_phase[shown], "stage": "port scan",
        "scanner": names["src"][group_of(target, pk["src"])[shown]].tolist(),
        "target": names["dst"][group_of(target, pk["dst"])[shown]].tolist(),
        "type": TECHNIQUE_NAMES[ph["technique"]].tolist(), "flags": ph["flags"].tolist(),
        "first": first[shown] / 1e9, "last": last[shown] / 1e9,
        "first_frame": frame[first_row[shown]], "last_frame": frame[last_row[shown]], "probes": n_probes,
        "ports_probed": np.bincount(group_of(pk["port"], target))[shown],
        "rate": np.where(duration > 0, n_probes / np.where(duration > 0, duration, 1), np.nan),  # (one instant: none)
        "shape": ph["shape"].tolist(), "tool": ph["tool"].tolist(), "tool_evidence": ph["tool_evidence"].tolist(),
        "tool_frames": ph["tool_frames"].tolist(), "hops": ph["hops"].tolist(), "host_state": "up"})
    scan_rows["evidence"] = _why_texts(why[shown], breadth[shown], scan_rows["ports_probed"].to_numpy(),
                                       ph["flags"].tolist())
    return scan_rows, _port_states(pk | {"technique": readings["technique"].to_numpy()[phase]}, shown, names)


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
    lost = ~answered & (pk["followup"] > 0) & np.isin(technique, (_CODE["SYN"], _CODE["CUSTOM"], _CODE["CONNECT"]))
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
    reason = np.where(lost[row], np.where(pk["followup"][row] == 2, "syn-ack not captured (scanner's handshake ACK)",
                                          "syn-ack not captured (scanner's reset)"),
                      np.where(answered[row], _reasons(kind_names[kind_code[row]], icmp_type[row], icmp_code[row],
                                                       version[row] == 4),
                               "no-response"))
    return pd.DataFrame({
        "scanner": names["src"][pk["src"][row]].tolist(), "target": names["dst"][pk["dst"][row]].tolist(),
        "phase": pk["phase"][row], "type": TECHNIQUE_NAMES[technique[row]].tolist(),
        "protocol": names["protocol"][pk["protocol"][row]].tolist(), "port": dport[shown].astype(np.int64),
        "state": np.where(contradict, "unknown", state_names[state[row]]).tolist(),
        "reason": np.where(contradict, "contradicting replies", reason).tolist(), "probes": np.bincount(port)[shown],
        "reply_ttl": _shown_values(pk["reply_ttl"], reply), "reply_window": _shown_values(pk["reply_window"], reply),
        "probe_frame": pk["frame"][row], "reply_frame": _shown_values(pk["reply_frame"], np.where(answered[row] & ~lost[row], row, n))})


def _shown_values(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """values[rows] (-1: missing; a row past the end: none): integers, or floats with NaN when any is missing."""
    shown = np.append(values, -1)[np.minimum(rows, len(values))].astype(np.int64)
    return shown if (shown >= 0).all() else np.where(shown >= 0, shown, np.nan)


def _finish(rows: list[dict], states: list[dict], port_scans: pd.DataFrame | None = None,
            port_states: pd.DataFrame | None = None, notes: list[dict] | None = None,
            probes: list[pd.DataFrame] | None = None) -> ScanResult:
    scans_parts = [part for part in (pd.DataFrame(rows), port_scans) if part is not None and len(part)]
    states_parts = [part for part in (pd.DataFrame(states), port_states) if part is not None and len(part)]
    scans_df = pd.concat(scans_parts, ignore_index=True) if scans_parts else _empty_scans()
    states_df = pd.concat(states_parts, ignore_index=True) if states_parts else _empty_states()
    if len(states_parts) > 1:  # the IP protocol scans' None beside the ports' numbers: floats, NaN for none
        states_df = states_df.astype({"reply_ttl": float, "reply_window": float, "reply_frame": float})
    order: dict[int, int] = {}
    if len(scans_df):
        scans_df = scans_df.sort_values(["first", "scanner", "target"], kind="stable").reset_index(drop=True)
        # Phases numbered in time order, so a reader can follow the capture.
        order = {ph: i for i, ph in enumerate(dict.fromkeys(scans_df["phase"]))}
        scans_df["phase"] = scans_df["phase"].map(order)
        if len(states_df):
            states_df["phase"] = states_df["phase"].map(order)
    scans_df = scans_df[list(SCAN_COLUMNS)]
    states_df = states_df[list(STATE_COLUMNS)]
    notes_df = pd.DataFrame(notes or [], columns=list(NOTE_COLUMNS))
    return ScanResult(scans_df, states_df, notes_df, tuple(probes or ()), order)


def _row(phase: int, scanner: str, target: str, technique: str, flags: str, ts: np.ndarray, ports: int, shape: str,
         tool: str, evidence: str, frames: np.ndarray | None = None) -> dict:
    first, last = int(ts.min()), int(ts.max())
    dur = (last - first) / 1e9
    frames = np.zeros(0, np.int64) if frames is None else np.asarray(frames)
    return dict(phase=phase, stage="port scan", scanner=scanner, target=target, type=technique, flags=flags,
                first=first / 1e9, last=last / 1e9,
                first_frame=int(frames[np.argmin(ts)]) if len(frames) else None,
                last_frame=int(frames[np.argmax(ts)]) if len(frames) else None, probes=len(ts), ports_probed=ports,
                rate=(len(ts) / dur if dur > 0 else np.nan), shape=shape, tool=tool, tool_evidence=evidence,
                tool_frames=[], hops=None, host_state="up", evidence="")


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
                               probes=int((sent["ip_proto"] == p_num).sum()), reply_ttl=None, reply_window=None, probe_frame=None,
                               reply_frame=None))
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
    ip_version = packets["ip_version"].to_numpy()
    ip = (ip_version > 0) & (proto >= 0)
    odd = np.flatnonzero(other_protocol(ip_version, proto))
    if not len(odd):
        return np.zeros(len(packets), bool)
    src, dst = column_codes(packets["src"], None)[0], column_codes(packets["dst"], None)[0]  # (not copied)
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


SCAN_COLUMNS = ("phase", "stage", "scanner", "target", "type", "flags", "first", "last", "first_frame", "last_frame",
                "probes", "ports_probed", "rate", "shape", "tool", "tool_evidence", "tool_frames", "hops", "host_state",
                "evidence")
STATE_COLUMNS = ("scanner", "target", "phase", "type", "protocol", "port", "state", "reason", "probes", "reply_ttl",
                 "reply_window", "probe_frame", "reply_frame")
PROBE_TABLE_COLUMNS = ("probe_frame", "phase", "scanner", "target", "protocol", "port")
NOTE_COLUMNS = ("kind", "scanner", "targets", "port", "protocol", "first", "last", "packets", "evidence", "frames")


def _empty_scans() -> pd.DataFrame:
    return pd.DataFrame(columns=list(SCAN_COLUMNS))


def _empty_states() -> pd.DataFrame:
    return pd.DataFrame(columns=list(STATE_COLUMNS))
