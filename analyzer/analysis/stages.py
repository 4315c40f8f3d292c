"""Stages of a scanner's run that are not port scans: host discovery and nmap's OS detection.

A port scanner rarely sends only its port probes. nmap first asks whether the host is up (as root, an ICMP
echo, a SYN to 443, an ACK to 80 and an ICMP timestamp request; on the local link, ARP), and `-O` sends its
OS-detection probes after the port scan. Read as port probes they look like separate one-port ACK, Xmas or
UDP scans; here each set is recognised by its own signature, declared as data, and reported as a stage of
the run, with its evidence. Its probes are kept out of the port tables' states.

Recognisers take the probes table's columns (`scans._probe_keys`) and return `Stage`s: which probes make
the stage, what it is, and why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..protocols import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG
from .columns import int_column_at
from .exchanges import Columns, PacketKeys, span
from .groups import group_ids


@dataclass(frozen=True)
class Stage:
    """One stage of one scanner's run against one or more targets.

    probes: positions in the probes columns (`scans._probe_keys`) of the stage's probes; stage: its name
    ("host discovery", "OS detection"); kind: the scans table's type (PING, OS); flags: what was sent, in
    short; tool, tool_evidence: the tool the stage's signature names and why; evidence: what the stage holds;
    host_state per target ("up", "down" or "" where the stage does not tell)."""

    probes: np.ndarray
    stage: str
    kind: str
    flags: str
    tool: str
    tool_evidence: str
    evidence: str
    host_state: dict[int, str]


@dataclass(frozen=True)
class OsProbe:
    """One of nmap's OS-detection probes: name, protocol, TCP flags (low 8 bits) and window, or for UDP the
    payload length, for ICMP the echo code; distinctive: no other tool or stack sends it."""

    name: str
    protocol: str
    flags: int = -1
    window: int = -1
    payload: int = -1
    icmp_code: int = -1
    distinctive: bool = True


# nmap -O (osscan2.cc's prbWindowSz and probe builders; "TCP/IP Fingerprinting Methods Supported by Nmap" in
# the nmap book): six SEQ SYNs to an open port, ECN, T2-T4 to the open port, T5-T7 to a closed one, U1 to a
# closed UDP port (300 bytes of 'C'), IE (two echo requests, the first with code 9).
OS_PROBES = (
    OsProbe("SEQ", "tcp", SYN, 1), OsProbe("SEQ", "tcp", SYN, 63), OsProbe("SEQ", "tcp", SYN, 4),
    OsProbe("SEQ", "tcp", SYN, 16),
    OsProbe("SEQ", "tcp", SYN, 512, distinctive=False),  # (hping3's default window)
    OsProbe("ECN", "tcp", SYN | ECE | CWR, 3),
    OsProbe("T2", "tcp", 0, 128), OsProbe("T3", "tcp", SYN | FIN | PSH | URG, 256),
    OsProbe("T4", "tcp", ACK, 1024, distinctive=False),  # (nmap -sA's own probe)
    OsProbe("T5", "tcp", SYN, 31337), OsProbe("T6", "tcp", ACK, 32768), OsProbe("T7", "tcp", FIN | PSH | URG, 65535),
    OsProbe("U1", "udp", payload=300),
    OsProbe("IE", "icmp", icmp_code=9),
)
_DISTINCTIVE = np.zeros(65536, bool)  # the distinctive TCP probes' windows
_DISTINCTIVE[[p.window for p in OS_PROBES if p.protocol == "tcp" and p.distinctive]] = True
OS_MIN_KINDS = 3  # distinct distinctive probe names (SEQ counted once) that make the stage
OS_MIN_SEQ = 3  # distinct SEQ windows for SEQ to count
OS_SPAN_S = 30.0  # the stage's other probes (T4, the sixth SEQ, the second IE, retries) lie this close to it


def os_detection(keys: PacketKeys, pk: Columns, candidates: np.ndarray) -> list[Stage]:
    """nmap's OS detection, per (scanner, target): at least `OS_MIN_KINDS` of its distinctive probes."""
    rows = np.flatnonzero(candidates & (pk["src"] >= 0))
    if not len(rows):
        return []
    window = keys.at("window", pk["row"][rows])
    # (screened first: a port scan's millions of probes carry none of the distinctive windows)
    if not (pk["tcp"][rows] & _DISTINCTIVE[np.clip(window, 0, 65535)]).any() and not (pk["udp"] | pk["icmp"])[rows].any():
        return []
    payload = keys.at("payload_len", pk["row"][rows])
    code = int_column_at(keys.packets["icmp_code"], pk["row"][rows])
    flags = pk["flags"][rows] & 0xFF
    name = np.full(len(rows), -1)  # index into OS_PROBES
    for i, probe in enumerate(OS_PROBES):
        if probe.protocol == "tcp":
            hit = pk["tcp"][rows] & (flags == probe.flags) & (window == probe.window)
        elif probe.protocol == "udp":
            hit = pk["udp"][rows] & (payload == probe.payload)
        else:
            hit = pk["icmp"][rows] & (pk["icmp_type"][rows] == 8) & (code == probe.icmp_code)
        name[hit & (name < 0)] = i
    found = name >= 0
    if not found.any():
        return []
    rows, name, window = rows[found], name[found], window[found]
    pair = group_ids(pk["src"][rows], pk["dst"][rows])
    stages = []
    for p in np.unique(pair):
        mine = pair == p
        kinds = {OS_PROBES[i].name for i in name[mine] if OS_PROBES[i].distinctive}
        seq_windows = {int(w) for i, w in zip(name[mine], window[mine]) if OS_PROBES[i].name == "SEQ"}
        if len(seq_windows) < OS_MIN_SEQ:
            kinds.discard("SEQ")
        if len(kinds) < OS_MIN_KINDS:
            continue
        ts = pk["ts_ns"][rows[mine]]
        distinctive = np.array([OS_PROBES[i].distinctive for i in name[mine]])
        lo, hi = ts[distinctive].min() - OS_SPAN_S * 1e9, ts[distinctive].max() + OS_SPAN_S * 1e9
        take = rows[mine][(ts >= lo) & (ts <= hi)]
        taken_names = [OS_PROBES[i] for i in name[mine][(ts >= lo) & (ts <= hi)]]
        ie = pk["icmp"] & (pk["src"] == pk["src"][take[0]]) & (pk["dst"] == pk["dst"][take[0]]) & candidates
        ie &= (pk["ts_ns"] >= lo) & (pk["ts_ns"] <= hi) & (pk["icmp_type"] == 8)  # (IE's second echo: code 0)
        if any(probe.name == "IE" for probe in taken_names):
            take = np.union1d(take, np.flatnonzero(ie))
        stages.append(Stage(
            probes=np.sort(take), stage="OS detection", kind="OS", flags="nmap -O probe set", tool="nmap",
            tool_evidence=f"nmap's OS-detection probes: {', '.join(sorted(kinds))}",
            evidence=_os_evidence(pk, take, taken_names), host_state={}))
    return stages


def _os_evidence(pk: Columns, take: np.ndarray, probes: list[OsProbe]) -> str:
    """What the OS-detection stage sent, by probe and port: "SEQ ×6 to 135/tcp (windows 1, 4, 16, 63, 512); …"."""
    by_name: dict[str, set[str]] = {}
    for probe in probes:
        by_name.setdefault(probe.name, set())
    tcp, udp, port = pk["tcp"][take], pk["udp"][take], pk["dport"][take]
    ports = {("tcp" if t else "udp" if u else "icmp", int(d)) for t, u, d in zip(tcp, udp, port) if t or u}
    names = ", ".join(n for n in ("SEQ", "ECN", "T2", "T3", "T4", "T5", "T6", "T7", "U1", "IE") if n in by_name)
    where = ", ".join(f"{d}/{proto}" for proto, d in sorted(ports, key=lambda x: (x[0], x[1])))
    return f"{len(take)} probes ({names}) to {where}" if where else f"{len(take)} probes ({names})"


# nmap's default host discovery as root (nmap.org/book/man-host-discovery.html: "-PE -PS443 -PA80 -PP"):
# ICMP echo, TCP SYN to 443, TCP ACK to 80, ICMP timestamp request, sent together to each target.
NMAP_DISCOVERY = (("icmp", 8, -1), ("tcp", SYN, 443), ("tcp", ACK, 80), ("icmp", 13, -1))
_DISCOVERY_NAMES = dict(zip(NMAP_DISCOVERY, ("ICMP echo", "TCP SYN to 443", "TCP ACK to 80", "ICMP timestamp")))
DISCOVERY_SPAN_S = 5.0  # the set's probes to one target lie this close together
PING_SWEEP_HOSTS = 5  # ICMP queries to at least this many hosts: a ping sweep


DISCOVERY_GAP_S = 30.0  # a silence between a scanner's ICMP queries that ends one discovery


def icmp_discovery(pk: Columns, candidates: np.ndarray, names: dict[str, np.ndarray]) -> list[Stage]:
    """Host discovery by ICMP queries (and nmap's TCP pings sent with them), per scanner and burst of queries
    (bursts apart by `DISCOVERY_GAP_S`: each nmap run begins with its own discovery):

    - nmap's default set (`NMAP_DISCOVERY`): nmap sends each target an echo, a SYN to 443, an ACK to 80 and a
      timestamp request, in turn until the host answers, so a burst holds the echo and one or more of the others
      (a target that answered early got no more); the TCP pings are those sent among the ICMP queries (from a second
      before the first to the last: a port scan's own probe to 443 comes after the hosts answered);
    - ICMP echo and timestamp requests in one burst (nmap -sn -PE -PP);
    - a sweep: ICMP queries to `PING_SWEEP_HOSTS` or more hosts.
    host_state per target from the answers."""
    icmp = np.flatnonzero(candidates & pk["icmp"] & (pk["src"] >= 0))
    if not len(icmp):
        return []
    stages = []
    icmp = icmp[np.lexsort((pk["ts_ns"][icmp], pk["src"][icmp]))]
    src, ts = pk["src"][icmp], pk["ts_ns"][icmp]
    new = np.ones(len(icmp), bool)
    new[1:] = (src[1:] != src[:-1]) | (np.diff(ts) > DISCOVERY_GAP_S * 1e9)
    for burst in np.split(icmp, np.flatnonzero(new)[1:]):
        stages.extend(_icmp_burst(pk, candidates, burst))
    return stages


def _icmp_burst(pk: Columns, candidates: np.ndarray, burst: np.ndarray) -> list[Stage]:
    """`icmp_discovery` of one scanner's burst of ICMP queries."""
    scanner, targets = pk["src"][burst[0]], np.unique(pk["dst"][burst])
    t0, t1 = pk["ts_ns"][burst].min() - 1e9, pk["ts_ns"][burst].max() + 1e8
    tcp = np.flatnonzero(candidates & pk["tcp"] & (pk["src"] == scanner) & np.isin(pk["dst"], targets)
                         & (pk["ts_ns"] >= t0) & (pk["ts_ns"] <= t1))
    flags = pk["flags"][tcp] & (SYN | ACK | FIN | RST)
    pings = tcp[((flags == SYN) & (pk["dport"][tcp] == 443)) | ((flags == ACK) & (pk["dport"][tcp] == 80))]
    # one of each to a target (the first): a port scan that begins at once sends its own SYN to 443
    pings = pings[np.unique(group_ids(pk["dst"][pings], pk["flags"][pings] & (SYN | ACK)), return_index=True)[1]]
    kinds = {("icmp", int(t), -1) for t in pk["icmp_type"][burst]}
    kinds |= {("tcp", int(f), int(d)) for f, d in zip(pk["flags"][pings] & (SYN | ACK), pk["dport"][pings])}
    seen = [k for k in NMAP_DISCOVERY if k in kinds]
    if NMAP_DISCOVERY[0] in kinds and len(pings) and len(seen) >= 2:
        return [_discovery_stage(
            pk, np.concatenate([burst, pings]), ", ".join(_DISCOVERY_NAMES[k] for k in seen), "nmap",
            "nmap's default host discovery as root (-PE -PS443 -PA80 -PP): an ICMP echo, a SYN to 443, an ACK to 80 "
            "and an ICMP timestamp request to each target in turn, until it answers"
            + ("" if len(seen) == len(NMAP_DISCOVERY) else f" (here {len(seen)} of the 4 kinds: hosts answered early)"))]
    if {("icmp", 8, -1), ("icmp", 13, -1)} <= kinds:
        return [_discovery_stage(pk, burst, "ICMP echo and timestamp", "nmap",
                                 "ICMP echo and timestamp requests to each target: nmap's -PE -PP pair")]
    if len(targets) >= PING_SWEEP_HOSTS:
        names = sorted({_ICMP_QUERY.get(int(t), str(t)) for t in pk["icmp_type"][burst]})
        return [_discovery_stage(pk, burst, "ICMP " + "+".join(names), "unknown", "")]
    return []


_ICMP_QUERY = {8: "echo", 13: "timestamp", 15: "info", 17: "mask", 128: "echo"}


def _discovery_stage(pk: Columns, probes: np.ndarray, flags: str, tool: str, tool_evidence: str) -> Stage:
    answered = pk["kind"][probes] >= 0
    up = set(pk["dst"][probes][answered].tolist())
    states = {int(t): ("up" if t in up else "down") for t in np.unique(pk["dst"][probes]).tolist()}
    n_up = sum(s == "up" for s in states.values())
    return Stage(probes=np.sort(probes), stage="host discovery", kind="PING", flags=flags, tool=tool,
                 tool_evidence=tool_evidence,
                 evidence=(f"{len(probes)} probe{'' if len(probes) == 1 else 's'} to {len(states)} host(s); "
                           f"{n_up} answered"), host_state=states)


TRACE_MIN_TTLS = 3  # consecutive TTLs, the least at most TRACE_FIRST_TTL, to one target: a traceroute
TRACE_FIRST_TTL = 3


def traceroutes(keys: PacketKeys, pk: Columns, candidates: np.ndarray, ttl: np.ndarray) -> list[Stage]:
    """Path probes, per (sender, target): a traceroute (`TRACE_MIN_TTLS` or more distinct TTLs starting at most
    at `TRACE_FIRST_TTL`: each TTL a hop further, Linux's UDP to 33434 and up, Windows' ICMP echo, nmap's
    --traceroute), and any probe that expired in transit (ICMP time exceeded: it never reached its target,
    as a NAT hole punch's low-TTL datagrams do not). Neither is a port probe. ttl: each probe's TTL (-1 none)."""
    expired_all = (((pk["ip_version"] == 4) & (pk["reply_icmp_type"] == 11))
                   | ((pk["ip_version"] == 6) & (pk["reply_icmp_type"] == 3)))
    low = (ttl >= 0) & (ttl <= TRACE_FIRST_TTL)
    if not ((expired_all | low) & candidates).any():  # (the usual case: no path probe at all)
        return []
    rows = np.flatnonzero(candidates & (pk["src"] >= 0))
    expired = expired_all[rows]
    pair = group_ids(pk["src"][rows], pk["dst"][rows])
    stages = []
    for p in np.unique(pair[expired | (ttl[rows] <= TRACE_FIRST_TTL) & (ttl[rows] >= 0)]):
        mine = rows[pair == p]
        t = ttl[mine]
        distinct = np.unique(t[t >= 0])
        # a traceroute's TTLs: a run of consecutive values from the least (a scan's own TTLs lie far above)
        run = distinct[:np.argmax(np.r_[np.diff(distinct) != 1, True]) + 1] if len(distinct) else distinct
        tracing = len(run) >= TRACE_MIN_TTLS and run.min() <= TRACE_FIRST_TTL
        if tracing:
            take = mine[(t >= run.min()) & (t <= run.max())]
        else:
            take = mine[expired[pair == p]]
        if not len(take):
            continue
        n_expired = _time_exceeded(keys, pk, take)
        evidence = (f"{len(take)} probes with TTL {int(ttl[take].min())}–{int(ttl[take].max())}, {n_expired} expired in "
                    "transit (ICMP time exceeded)" if tracing else
                    f"{len(take)} probe{'' if len(take) == 1 else 's'} with TTL {int(ttl[take].min())} expired in "
                    "transit (ICMP time exceeded)")
        stages.append(Stage(probes=np.sort(take), stage="traceroute" if tracing else "path probes", kind="TRACE",
                            flags="TTL " + (f"{int(ttl[take].min())}–{int(ttl[take].max())}" if tracing
                                            else str(int(ttl[take].min()))),
                            tool="unknown", tool_evidence="", evidence=evidence, host_state={}))
    return stages


def _time_exceeded(keys: PacketKeys, pk: Columns, probes: np.ndarray) -> int:
    """How many ICMP time-exceeded messages went to the probes' sender quoting their target, from the first
    probe to a reply window after the last (an ICMP echo's are not paired with it by `match`)."""
    p = keys.packets
    icmp_type = p["icmp_type"].to_numpy(np.float64, na_value=-1)
    version = p["ip_version"].to_numpy()
    exceeded = np.flatnonzero(((version == 4) & (icmp_type == 11)) | ((version == 6) & (icmp_type == 3)))
    if not len(exceeded):
        return 0
    sender, target = pk["src"][probes[0]], pk["dst"][probes[0]]
    ts = p["ts_ns"].to_numpy()[exceeded]
    t0, t1 = span(pk["ts_ns"][probes], 0, 10 * 10**9)
    to_sender = keys.at("dst", exceeded) == sender
    quoted = p["q_dst"].array[exceeded].astype(object)
    target_name = p["dst"].cat.categories[target] if isinstance(p["dst"].dtype, pd.CategoricalDtype) else None
    return int((to_sender & (ts >= t0) & (ts <= t1) & (quoted == target_name)).sum())


ARP_SWEEP_HOSTS = 32  # distinct addresses asked for within ARP_SWEEP_S: a sweep, not resolution
ARP_RUN = 4  # or this many consecutive addresses within ARP_SWEEP_S (a /29 swept in order; the ordinary hosts of
# ../shared/realworld ask for at most 2 in a row)
ARP_SWEEP_S = 5.0


@dataclass(frozen=True)
class ArpStage:
    """Host discovery by ARP: the sender, the frames, the targets asked for and whether each answered."""

    scanner: str
    frames: np.ndarray
    ts_ns: np.ndarray
    asked: np.ndarray  # the address each request asked for
    targets: list[str]
    answered: set[str]
    evidence: str


def arp_discovery(packets: pd.DataFrame) -> list[ArpStage]:
    """ARP sweeps, per sender: `ARP_SWEEP_HOSTS` distinct addresses asked for, or `ARP_RUN` consecutive IPv4
    addresses, within `ARP_SWEEP_S` (nmap -sn, arp-scan, netdiscover on the local link). A host resolving its
    neighbours as it needs them asks for a few addresses at a time: not discovery; nor is the request a
    kernel sends for a host before its first packet to it, scan or not."""
    arp = packets[packets["arp_op"].notna()]
    if not len(arp):
        return []
    src, dst = arp["src"].astype(str).to_numpy(), arp["dst"].astype(str).to_numpy()
    op = arp["arp_op"].to_numpy(np.int64, na_value=0)
    request = (op == 1) & (src != dst)  # (a gratuitous ARP asks for its own address)
    replies = {(a, b) for a, b in zip(src[op == 2], dst[op == 2])}  # (who answered, whom)
    ts, frame = arp["ts_ns"].to_numpy(), arp["frame"].to_numpy()
    stages = []
    for sender in np.unique(src[request]):
        mine = np.flatnonzero(request & (src == sender))
        t, d = ts[mine], dst[mine]
        keep = _swept(t, d)
        if not keep.any():
            continue
        targets = list(dict.fromkeys(d[keep].tolist()))
        answered = {x for x in targets if (x, sender) in replies}
        stages.append(ArpStage(sender, frame[mine[keep]], t[keep], d[keep], targets, answered,
                               f"{len(targets)} addresses asked for, at least {min(ARP_RUN, ARP_SWEEP_HOSTS)} within "
                               f"{ARP_SWEEP_S:g} s; {len(answered)} answered"))
    return stages


def _swept(ts: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Which requests (in time order) lie in a window of ARP_SWEEP_S holding ARP_SWEEP_HOSTS distinct addresses,
    or ARP_RUN consecutive IPv4 addresses."""
    out = np.zeros(len(ts), bool)
    if len(set(dst.tolist())) < min(ARP_RUN, ARP_SWEEP_HOSTS):  # (too few addresses for either)
        return out
    end = np.searchsorted(ts, ts + ARP_SWEEP_S * 1e9, side="right")
    numbers = np.array([_ipv4_number(x) for x in dst], np.int64)
    for i in range(len(ts)):
        window = dst[i:end[i]]
        distinct = set(window.tolist())
        if len(distinct) >= ARP_SWEEP_HOSTS or _longest_run(numbers[i:end[i]]) >= ARP_RUN:
            out[i:end[i]] = True
    return out


def _ipv4_number(text: str) -> int:
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        return -1
    a, b, c, d = (int(p) for p in parts)
    return (a << 24) | (b << 16) | (c << 8) | d


def _longest_run(numbers: np.ndarray) -> int:
    """The longest run of consecutive integers among the distinct non-negative numbers."""
    values = np.unique(numbers[numbers >= 0])
    if not len(values):
        return 0
    breaks = np.flatnonzero(np.diff(values) != 1)
    edges = np.concatenate([[-1], breaks, [len(values) - 1]])
    return int(np.diff(edges).max())


# nmap's version detection (-sV): a NULL probe (connect and read the banner), then probes of its own; a few of
# them, by the bytes that begin them (the rest need no naming to read the stage: it holds them by time).
VERSION_PROBES = (
    ("GetRequest", b"GET / HTTP/1.0\r\n\r\n"), ("HTTPOptions", b"OPTIONS / HTTP/1.0\r\n\r\n"),
    ("RTSPRequest", b"OPTIONS / RTSP/1.0\r\n\r\n"), ("FourOhFourRequest", b"GET /nice%20ports%2C/Tri%6Eity.txt%2ebak"),
    ("GenericLines", b"\r\n\r\n"), ("Help", b"HELP\r\n"), ("RPCCheck", b"\x80\x00\x00\x28\x72\xfe\x1d\x13"),
    ("SMBProgNeg", b"\x00\x00\x00\xa4\xffSMBr"), ("X11Probe", b"l\x00\x0b\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
    ("TerminalServerCookie", b"\x03\x00\x00*%\xe0\x00\x00\x00\x00\x00Cookie: mstshash=nmap"),
)
EXACT_PROBES = ("GetRequest", "HTTPOptions", "RTSPRequest", "GenericLines", "Help", "X11Probe")  # (whole payloads)
# nmap's scripting engine (-sC, -A, --script; and -sV's version scripts): its own marks in what it sends
NSE_MARKS = ((b"Nmap Scripting Engine", "HTTP User-Agent 'Nmap Scripting Engine'"),
             (b"SSH-2.0-Nmap-SSH2-Hostkey", "SSH client 'Nmap-SSH2-Hostkey'"),
             (b"mstshash=nmap", "RDP cookie 'nmap'"))


def version_probe(payload: bytes) -> str | None:
    """The nmap version probe a client payload is, or None."""
    for name, start in VERSION_PROBES:
        if payload == start if name in EXACT_PROBES else payload.startswith(start):
            return name
    return None


def nse_mark(payload: bytes) -> str | None:
    for mark, text in NSE_MARKS:
        if mark in payload:
            return text
    return None


@dataclass(frozen=True)
class Connection:
    """A TCP connection a scanner opened to a port its scan had found open: its SYN probe (position in the
    probes columns), port, time, and what its first data said."""

    probe: int
    port: int
    ts_ns: int
    kind: str  # "version" | "script" | "banner" | "data" | "none"
    what: str  # the probe's or mark's name, "banner read", "other data", "no data"


def service_stages(connections: list[Connection], boundaries: list[int] = ()) -> list[Stage]:
    """The service stages of one scanner's run against one target, from its connections to open ports.

    The connections fall into bursts at the start of the run's other stages (`boundaries`, ns: nmap -A runs
    OS detection and traceroute between its version detection and its scripts). A burst whose first nmap
    version probe comes before any mark of nmap's scripting engine is version detection (the NULL probe's
    banner reads come first, and -sV runs version scripts of its own among its probes); one with the
    engine's marks (its User-Agent, its SSH client name) first is scripts; one with neither is no stage (a
    client using the service the scan found, or a connect scan's own connections: the capture cannot tell
    which, and such connections are no scan either)."""
    if not connections:
        return []
    connections = sorted(connections, key=lambda c: c.ts_ns)
    cuts = np.searchsorted([c.ts_ns for c in connections], sorted(boundaries))
    bursts = [b for b in np.split(np.array(connections, dtype=object), np.unique(cuts)) if len(b)]
    stages = []
    for burst in bursts:
        kinds = [c.kind for c in burst]
        first_version = kinds.index("version") if "version" in kinds else len(kinds)
        first_script = kinds.index("script") if "script" in kinds else len(kinds)
        if first_version == first_script:  # (neither: a client's use of the service, or a connect scan's own)
            continue
        stages.append(_service_stage("version detection" if first_version < first_script else "scripts", list(burst)))
    return stages


def _service_stage(name: str, group: list[Connection]) -> Stage:
    by_port: dict[int, list[str]] = {}
    for c in group:
        whats = by_port.setdefault(c.port, [])
        if c.what not in whats:
            whats.append(c.what)
    return Stage(
        probes=np.array(sorted(c.probe for c in group), np.int64), stage=name, kind="SERVICE",
        flags=f"{len(group)} connection(s) to {', '.join(f'{p}/tcp' for p in sorted(by_port))}", tool="nmap",
        tool_evidence=("nmap's version probes (nmap -sV)" if name == "version detection" else
                       "nmap's scripting engine (nmap -sC, -A or --script)"),
        evidence="; ".join(f"{port}/tcp: {', '.join(whats)}" for port, whats in sorted(by_port.items())),
        host_state={})
