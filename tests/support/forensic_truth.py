"""What a forensic capture holds, read back: its frames (tshark), nmap's own account of its stages, its hosts.

The generator (tests/support/make_forensic_captures.py) writes each capture's truth from these: nmap's --packet-trace
matched packet by packet to the capture's frames and labelled with the task nmap ran (`nmap_stages`), a
tool's probes and the replies in their conversations (`tool_stage`), each sender's place, MAC and TTLs seen
from the sensor (`hosts_table`), and the truth file's layout (`compact_json`).
"""

from __future__ import annotations

import collections
import ipaddress
import json
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import forensiclab as fl
from make_scan_captures import FLAG_BITS, parse_nmap_xml

LINUX = [fl.LINUX_TTL]

# nmap's task (the "Initiating ..." line of its verbose output) -> our stage name.
NMAP_TASKS = {
    "ARP Ping Scan": "host discovery", "Ping Scan": "host discovery", "SYN Stealth Scan": "port scan",
    "UDP Scan": "port scan", "Connect Scan": "port scan", "Service scan": "version detection",
    "OS detection": "OS detection", "Traceroute": "traceroute", "NSE": "scripts",
}  # fmt: skip
TECHNIQUES = {"ARP Ping Scan": "ARP", "Ping Scan": "nmap default: ICMP echo, TCP SYN 443, TCP ACK 80, ICMP timestamp",
              "SYN Stealth Scan": "SYN", "UDP Scan": "UDP", "Connect Scan": "CONNECT"}  # fmt: skip
# nmap's OS detection probes (nmap.org/book/osdetect-methods.html): name, protocol, TCP flags, windows.
OS_PROBES = (
    ("SEQ", "TCP", "S", (1, 63, 4, 16, 512)), ("ECN", "TCP", "SEC", (3,)), ("T2", "TCP", "", (128,)),
    ("T3", "TCP", "SFPU", (256,)), ("T4", "TCP", "A", (1024,)), ("T5", "TCP", "S", (31337,)),
    ("T6", "TCP", "A", (32768,)), ("T7", "TCP", "FPU", (65535,)), ("IE", "ICMP", None, ()), ("U1", "UDP", None, ()),
)  # fmt: skip
FLAG_NAMES = {"S": "SYN", "A": "ACK", "SA": "SYN/ACK", "R": "RST", "RA": "RST/ACK", "F": "FIN", "FPU": "Xmas",
              "": "no flags", "SEC": "SYN+ECE+CWR", "SFPU": "SYN+FIN+PSH+URG", "FA": "FIN/ACK"}  # fmt: skip


def flag_bits(letters: str) -> int:
    return sum(FLAG_BITS[c] for c in letters)


def flag_letters(bits: int) -> str:
    return "".join(c for c, b in FLAG_BITS.items() if bits & b)


# ---------------------------------------------------------------------------------------------- frames

_FIELDS = ("frame.number", "frame.time_epoch", "eth.src", "eth.dst", "arp.opcode", "arp.src.proto_ipv4",
           "arp.dst.proto_ipv4", "ip.src", "ip.dst", "ip.ttl", "ip.id", "ip.len", "ip.proto", "tcp.srcport",
           "tcp.dstport", "tcp.flags", "tcp.seq_raw", "tcp.window_size_value", "tcp.len", "tcp.hdr_len",
           "udp.srcport", "udp.dstport", "icmp.type", "icmp.code", "icmp.ident")  # fmt: skip


@dataclass(frozen=True)
class Frame:
    """One captured frame as tshark decodes it: for an ICMP error the outer header's addresses, TTL and IP
    ID, and the quoted packet's protocol, addresses (q_src, q_dst) and ports (sport, dport)."""

    n: int
    t: float
    eth_src: str
    eth_dst: str
    arp_op: int | None
    arp_src: str
    arp_dst: str
    src: str
    dst: str
    ttl: int | None
    ip_id: int | None
    ip_len: int | None
    proto: int | None
    sport: int | None
    dport: int | None
    flags: int | None
    seq: int | None
    window: int | None
    tcp_len: int | None
    tcp_hdr_len: int | None
    icmp_type: int | None
    icmp_code: int | None
    icmp_id: int | None
    q_proto: int | None = None
    q_src: str = ""
    q_dst: str = ""

    @property
    def name(self) -> str:
        if self.arp_op:
            return "ARP request" if self.arp_op == 1 else "ARP reply"
        if self.proto == 6:
            return f"TCP {flag_letters(self.flags or 0) or 'no flags'}"
        if self.proto == 1:
            return f"ICMP {self.icmp_type}/{self.icmp_code}"
        return {17: "UDP", 2: "IGMP"}.get(self.proto or -1, f"IP proto {self.proto}")


def _int(text: str, base: int = 10) -> int | None:
    return int(text, base) if text else None


def read_frames(pcap: Path) -> list[Frame]:
    cmd = ["tshark", "-n", "-r", str(pcap), "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a",
           "-E", "aggregator=|"]  # fmt: skip
    for f in _FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    frames = []
    for line in out.splitlines():
        every = [v.split("|") for v in line.split("\t")]
        (n, t, esrc, edst, aop, asrc, adst, src, dst, ttl, ipid, iplen, proto, tsp, tdp, flags, seq, win, tlen,
         thl, usp, udp, itype, icode, iid) = (v[0] for v in every)  # fmt: skip
        quoted = {}
        if proto == "1" and len(every[7]) > 1:  # an ICMP error: the second IP header is the quoted one
            quoted = {"q_proto": _int(every[12][1]), "q_src": every[7][1], "q_dst": every[8][1]}
        frames.append(Frame(
            int(n), float(t), esrc, edst, _int(aop), asrc, adst, src, dst, _int(ttl), _int(ipid, 16), _int(iplen),
            _int(proto), _int(tsp or usp), _int(tdp or udp), _int(flags, 16), _int(seq), _int(win), _int(tlen),
            _int(thl), _int(itype), _int(icode), _int(iid), **quoted,
        ))  # fmt: skip
    return frames


def tshark_count(pcap: Path, display_filter: str) -> int:
    out = subprocess.run(["tshark", "-n", "-r", str(pcap), "-Y", display_filter, "-T", "fields", "-e",
                          "frame.number"], capture_output=True, text=True, check=True, timeout=120).stdout
    return len(out.split())


ICMP_QUERIES = {0: 8, 8: 8, 13: 13, 14: 13}  # echo reply/request, timestamp request/reply: the request's type


def conversation(f: Frame) -> tuple | None:
    """The conversation a frame belongs to: its transport 4-tuple; an ICMP error's, the one it quotes; an ICMP
    echo or timestamp, its identifier."""
    if f.proto == 1 and f.icmp_type in ICMP_QUERIES and f.icmp_id is not None:
        return ("icmp", ICMP_QUERIES[f.icmp_type], frozenset({f.src, f.dst}), f.icmp_id)
    if f.proto == 1 and f.q_proto in (6, 17) and f.sport is not None:
        return (f.q_proto, frozenset({(f.q_src, f.sport), (f.q_dst, f.dport)}))
    if f.proto in (6, 17) and f.sport is not None:
        return (f.proto, frozenset({(f.src, f.sport), (f.dst, f.dport)}))
    return None


def flag_table(frames: Iterable[Frame], scanner: str) -> dict[str, dict[str, int]]:
    """TCP flag combinations by direction: {"from scanner": {"S": n, ...}, "to scanner": {...}}; with no
    scanner (ordinary traffic), all of them under "all"."""
    if not scanner:
        return {"all": dict(sorted(collections.Counter(flag_letters(f.flags or 0) or "none" for f in frames
                                                       if f.proto == 6).items()))}
    table: dict[str, collections.Counter] = {"from scanner": collections.Counter(), "to scanner": collections.Counter(),
                                             "other": collections.Counter()}  # fmt: skip
    for f in frames:
        if f.proto == 6:
            way = "from scanner" if f.src == scanner else "to scanner" if f.dst == scanner else "other"
            table[way][flag_letters(f.flags or 0) or "none"] += 1
    return {k: dict(sorted(v.items())) for k, v in table.items() if v}


# ---------------------------------------------------------------------------------------------- nmap trace

_PKT = re.compile(r"^(SENT|RCVD) \(([\d.]+)s\) (TCP|UDP|ICMP|ARP) (.*)$")
_L4 = re.compile(r"([\d.]+):(\d+) > ([\d.]+):(\d+) ([A-Z]*) *ttl=(\d+) id=(\d+) iplen=(\d+)(?:.*?seq=(\d+))?"
                 r"(?:.*?win=(\d+))?")  # fmt: skip
_ICMP = re.compile(r"\[([\d.]+) > ([\d.]+) .*?\(type=(\d+)/code=(\d+)\).*?\] IP \[ttl=(\d+) id=(\d+) iplen=(\d+)")
_ARP = re.compile(r"(?:who-has ([\d.]+) tell ([\d.]+)|reply ([\d.]+) is-at ([0-9A-F:]+))")
_TASK = re.compile(r"^(?:Initiating|Retrying) (.+?)(?: \(try #(\d+)\))?(?: at \d\d:\d\d| against .*)?$")
_NSOCK = re.compile(r"^NSOCK INFO \[([\d.]+)s\] nsock_connect_(tcp|udp)\(\): (?:TCP|UDP) connection requested to "
                    r"([\d.]+):(\d+)")  # fmt: skip
_NSE = re.compile(r"^NSE: (TCP|UDP) ([\d.]+):(\d+) > ([\d.]+):(\d+) \| CONNECT")


@dataclass
class Traced:
    """A packet nmap's --packet-trace lists (SENT or RCVD), under the task nmap was running."""

    sent: bool
    t: float
    task: str
    tryno: int
    proto: str
    key: tuple
    ttl: int | None = None
    window: int | None = None
    flags: str = ""
    icmp: tuple[int, int] | None = None
    frame: Frame | None = None


@dataclass
class Connect:
    """A connection nmap asked its kernel for (nsock: time and destination; NSE: the local port too)."""

    task: str
    t: float | None
    proto: int
    dst: str
    dport: int
    sport: int | None = None


@dataclass
class Trace:
    packets: list[Traced] = field(default_factory=list)
    connects: list[Connect] = field(default_factory=list)
    kept_lines: list[str] = field(default_factory=list)


def parse_trace(text: str) -> Trace:
    """nmap -v --packet-trace output: each SENT/RCVD packet with its matching key and task, each kernel
    connection nmap requested; the lines kept for NAME.nmap.trace (no hex dumps, no nsock chatter)."""
    trace, task, tryno, t_last = Trace(), "", 1, 0.0
    for line in text.splitlines():
        if m := _TASK.match(line):
            if m.group(1) in NMAP_TASKS or m.group(1).startswith("OS detection"):
                task = "OS detection" if m.group(1).startswith("OS detection") else m.group(1)
                tryno = int(m.group(2) or 1)
            trace.kept_lines.append(line)
        elif m := _PKT.match(line):
            direction, t, proto, rest = m.groups()
            traced = _traced(direction == "SENT", float(t), task, tryno, proto, rest)
            if traced is not None:
                trace.packets.append(traced)
                t_last = traced.t
            trace.kept_lines.append(line)
        elif m := _NSOCK.match(line):
            t, proto, dst, dport = m.groups()
            trace.connects.append(Connect(task, float(t), 6 if proto == "tcp" else 17, dst, int(dport)))
            trace.kept_lines.append(line)
        elif m := _NSE.match(line):
            proto, _src, sport, dst, dport = m.groups()
            trace.connects.append(Connect(task, t_last, 6 if proto == "TCP" else 17, dst, int(dport), int(sport)))
            trace.kept_lines.append(line)
        elif line.startswith(("Completed ", "NSE: Script", "Nmap scan report", "Starting Nmap", "Nmap done",
                              "Discovered open port", "Scanning ", "Service scan match", "OS details")):
            trace.kept_lines.append(line)
    return trace


def _traced(sent: bool, t: float, task: str, tryno: int, proto: str, rest: str) -> Traced | None:
    if proto == "ARP":
        m = _ARP.search(rest)
        if not m:
            return None
        key = ("ARP", 1, m.group(1)) if m.group(1) else ("ARP", 2, m.group(3))
        return Traced(sent, t, task, tryno, proto, key)
    if proto == "ICMP":
        m = _ICMP.search(rest)
        if not m:
            return None
        src, dst, typ, code, ttl, ip_id, _len = m.groups()
        key = ("ICMP", src, dst, int(typ), int(code), int(ip_id))
        return Traced(sent, t, task, tryno, proto, key, ttl=int(ttl), icmp=(int(typ), int(code)))
    m = _L4.match(rest)
    if not m:
        return None
    src, sport, dst, dport, flags, ttl, ip_id, _len, seq, win = m.groups()
    if proto == "UDP":
        key = ("UDP", src, dst, int(sport), int(dport), int(ip_id))
    elif sent:
        key = ("TCP", src, dst, int(sport), int(dport), int(ip_id), flag_bits(flags))
    else:  # replies: Linux sends IP ID 0 with DF, the sequence number tells them apart
        key = ("TCP", src, dst, int(sport), int(dport), flag_bits(flags), int(seq or 0))
    return Traced(sent, t, task, tryno, proto, key, ttl=int(ttl), window=int(win) if win else None, flags=flags)


def frame_keys(f: Frame) -> tuple[tuple | None, tuple | None]:
    """(key as nmap traces it sending, key as it traces it receiving)."""
    if f.arp_op:
        key = ("ARP", f.arp_op, f.arp_dst if f.arp_op == 1 else f.arp_src)
        return key, key
    if f.proto == 1:
        key = ("ICMP", f.src, f.dst, f.icmp_type, f.icmp_code, f.ip_id)
        return key, key
    if f.proto == 17:
        key = ("UDP", f.src, f.dst, f.sport, f.dport, f.ip_id)
        return key, key
    if f.proto == 6:
        return (("TCP", f.src, f.dst, f.sport, f.dport, f.ip_id, f.flags & 0xFF),
                ("TCP", f.src, f.dst, f.sport, f.dport, f.flags & 0xFF, f.seq))
    return None, None


def match_trace(trace: Trace, frames: list[Frame]) -> tuple[int, int]:
    """Give each traced packet its frame (the first unused one with its key, in order); returns how many
    of the SENT and of the RCVD packets were found."""
    index: dict[tuple, collections.deque] = collections.defaultdict(collections.deque)
    for f in frames:
        for key in set(frame_keys(f)):
            if key is not None:
                index[key].append(f)
    used: set[int] = set()
    for p in trace.packets:
        queue = index.get(p.key, collections.deque())
        while queue and queue[0].n in used:
            queue.popleft()
        if queue:
            p.frame = queue.popleft()
            used.add(p.frame.n)
    return (sum(p.frame is not None for p in trace.packets if p.sent),
            sum(p.frame is not None for p in trace.packets if not p.sent))


def probe_name(task: str, p: Traced, f: Frame) -> str:
    """What a traced probe is: nmap's discovery probes, the OS detection probes by their signature, the
    traceroute's TTL, else protocol and flags."""
    if p.proto == "ARP":
        return "ARP request"
    if task == "Ping Scan":
        if p.icmp:
            return {8: "ICMP echo", 13: "ICMP timestamp"}.get(p.icmp[0], f"ICMP {p.icmp[0]}")
        return f"TCP {FLAG_NAMES.get(p.flags, p.flags)} {f.dport}"
    if task == "OS detection":
        for name, proto, flags, windows in OS_PROBES:
            if proto == p.proto and (flags is None or (flag_bits(flags) == f.flags & 0xFF and f.window in windows)):
                return name
    if task == "Traceroute":
        return f"TTL {p.ttl}"
    return f"TCP {FLAG_NAMES.get(p.flags, p.flags)}" if p.proto == "TCP" else p.proto


def nmap_stages(trace: Trace, frames: list[Frame], scanner: str, scripts: bool) -> tuple[list[dict], list[dict]]:
    """Every stage of an nmap run with its frames (module docstring, ``stages``), and the frames no stage
    claims (the scanner kernel's own ARP, ...). `scripts`: the run asked for scripts (-sC, -A, --script);
    without, its NSE task runs only -sV's version scripts, part of version detection."""
    by_n = {f.n: f for f in frames}
    label: dict[int, str] = {}  # frame -> nmap task
    role: dict[int, str] = {}  # frame -> probe | reply | other
    probe_names: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    name_of: dict[int, str] = {}  # probe frame -> probe name
    tries: dict[str, set[int]] = collections.defaultdict(set)
    order: list[str] = []
    for p in trace.packets:
        if p.frame is None:
            continue
        if p.task not in order:
            order.append(p.task)
        label[p.frame.n], role[p.frame.n] = p.task, "probe" if p.sent else "reply"
        if p.sent:
            name_of[p.frame.n] = probe_name(p.task, p, p.frame)
            probe_names[p.task][name_of[p.frame.n]] += 1
            tries[p.task].add(p.tryno)
    offsets = sorted(p.frame.t - p.t for p in trace.packets if p.frame is not None)
    offset = offsets[len(offsets) // 2] if offsets else 0.0
    # The kernel's connections: NSE names the local port; nsock the destination and time.
    conv_task: dict[tuple, str] = {}
    connections: dict[str, set] = collections.defaultdict(set)
    pending = [c for c in trace.connects if c.sport is None and c.task != "NSE"]  # NSE's come with their port
    for c in trace.connects:
        if c.sport is not None:
            conv_task[(c.proto, frozenset({(scanner, c.sport), (c.dst, c.dport)}))] = c.task
    for f in frames:
        conv = conversation(f)
        if f.n in label or conv is None or f.src != scanner or conv in conv_task:
            continue
        if (f.proto == 6 and f.flags & 0x12 == 0x02) or f.proto == 17:  # a kernel connection's first packet
            near = [c for c in pending if (c.proto, c.dst, c.dport) == (f.proto, f.dst, f.dport)
                    and abs(c.t + offset - f.t) < 1.0]  # fmt: skip
            if near:
                c = min(near, key=lambda c: abs(c.t + offset - f.t))
                pending.remove(c)
                conv_task[conv] = c.task
    for task in conv_task.values():
        if task not in order:
            order.append(task)
    # Everything in a conversation a stage owns belongs to that stage (the kernel's RST to a SYN/ACK, the
    # rest of a connection, an ICMP error quoting a script's datagram).
    for f in frames:
        if f.n in label and (conv := conversation(f)) is not None:
            conv_task.setdefault(conv, label[f.n])
    for f in frames:
        conv = conversation(f)
        if f.n not in label and conv in conv_task:
            label[f.n], role[f.n] = conv_task[conv], "other"
            opens = f.proto == 17 or (f.proto == 6 and f.flags & 0x12 == 0x02)  # a datagram, a SYN
            if f.src == scanner and opens and conv not in connections[conv_task[conv]]:  # its first only
                role[f.n], name_of[f.n] = "probe", "connection"
                connections[conv_task[conv]].add(conv)
    # One stage per name, over the tasks that make it up (-sV's version scripts run as an NSE task).
    stage_of = {task: "version detection" if task == "NSE" and not scripts else NMAP_TASKS.get(task, task)
                for task in order}  # fmt: skip
    groups: dict[str, list[int]] = {}
    for n in sorted(label):
        groups.setdefault(stage_of[label[n]], []).append(n)
    stages = []
    for name, mine in groups.items():
        tasks = sorted((t for t in order if stage_of[t] == name), key=lambda t: min(n for n in mine if label[n] == t))
        probes = [by_n[n] for n in mine if role[n] == "probe"]
        names = sum((probe_names[t] for t in tasks), collections.Counter())
        stage = {
            "stage": name, "nmap_tasks": tasks, "technique": next((TECHNIQUES[t] for t in tasks if t in TECHNIQUES),
                                                                  None),
            "scanner": scanner,
            "targets": sorted({f.arp_dst if f.arp_op else f.dst for f in probes}, key=_addr_key),
            "first_frame": mine[0], "last_frame": mine[-1], "frames": len(mine),
            "probe_frames": [f.n for f in probes],
            "reply_frames": [n for n in mine if role[n] == "reply"],
            "other_frames": [n for n in mine if role[n] == "other"],
            "probes": dict(sorted(names.items())),
            "ports": _ports(probes),
        }  # fmt: skip
        by_name: dict[str, list[int]] = {}
        for f in probes:
            by_name.setdefault(name_of[f.n], []).append(f.n)
        if len(by_name) > 1:
            stage["probe_frames_by_name"] = dict(sorted(by_name.items()))
        if "OS detection" in tasks:
            stage["tries"] = len(tries["OS detection"])
        if n_conn := sum(len(connections[t]) for t in tasks):
            stage["connections"] = n_conn
            stage["probes"]["connection"] = n_conn
        if "Traceroute" in tasks:
            stage["ttls"] = sorted({f.ttl for f in probes})
        per_port = collections.Counter((f.proto, f.dport) for f in probes if f.proto in (6, 17))
        if name == "port scan" and (retried := {str(port): n for (_, port), n in sorted(per_port.items()) if n > 1}):
            stage["retried_ports"] = retried  # port: probes sent to it (first try and retries)
        stages.append(stage)
    unclaimed = [{"frame": f.n, "what": f.name, "src": f.src or f.arp_src, "dst": f.dst or f.arp_dst}
                 for f in frames if f.n not in label]  # fmt: skip
    return stages, unclaimed


def _ports(probes: Iterable[Frame]) -> dict[str, list[int]]:
    out: dict[str, set[int]] = {}
    for f in probes:
        if f.proto in (6, 17) and f.dport is not None:
            out.setdefault("tcp" if f.proto == 6 else "udp", set()).add(f.dport)
    return {k: sorted(v) for k, v in sorted(out.items())}


def _addr_key(a: str) -> tuple[int, ...]:
    return tuple(int(x) for x in a.split(".")) if a else ()


# ---------------------------------------------------------------------------------------------- nmap XML


def nmap_verdict(xml: Path) -> dict:
    """What nmap itself concluded beyond the port states: services, OS guesses (and the ports it used),
    script results, traceroute hops, task times."""
    root = ET.parse(xml).getroot()
    out: dict = {"tasks": [dict(e.attrib) for e in root.iter() if e.tag in ("taskbegin", "taskend")]}
    for host in root.findall("host"):
        if host.find("status").get("state") != "up":
            continue
        addr = host.find("address").get("addr")
        services = {}
        scripts = {}
        for p in host.findall("ports/port"):
            svc = p.find("service")
            key = f"{p.get('protocol')}/{p.get('portid')}"
            if svc is not None and svc.get("method") == "probed":
                services[key] = {k: svc.get(k) for k in ("name", "product", "version", "extrainfo") if svc.get(k)}
            if ids := [s.get("id") for s in p.findall("script")]:
                scripts[key] = ids
        os_el = host.find("os")
        os_info = None
        if os_el is not None:
            os_info = {
                "ports_used": [dict(e.attrib) for e in os_el.findall("portused")],
                "matches": [{"name": m.get("name"), "accuracy": int(m.get("accuracy"))}
                            for m in os_el.findall("osmatch")][:3],
                "fingerprint_taken": os_el.find("osfingerprint") is not None,
            }  # fmt: skip
        hops = [dict(h.attrib) for h in host.findall("trace/hop")]
        distance = host.find("distance")
        out.setdefault("hosts", []).append({
            "address": addr, "services": services, "scripts": scripts, "os": os_info, "traceroute": hops,
            "distance": int(distance.get("value")) if distance is not None else None,
        })  # fmt: skip
    return out


def port_table(xml: Path, scanner: str, tool: str, started: float, ended: float) -> list[dict]:
    """The truth's ``scans`` from nmap's -oX: one per host and technique, nmap's verdict beside the lab's."""
    verdict = parse_nmap_xml(xml)
    scans = []
    for si in verdict["scaninfo"]:
        technique = si["type"]
        for h in verdict["hosts"]:
            if h["status"] != "up" or h["address"] == scanner:
                continue
            ports = [{**p, "lab_state": fl.expected_state(technique, p["port"])}
                     for p in h["ports"] if p["protocol"] == si["protocol"]]  # fmt: skip
            scans.append({"scanner": scanner, "target": h["address"], "type": technique.upper(),
                          "nmap_type": technique, "flags": {"syn": "S", "connect": "S"}.get(technique),
                          "tool": tool, "started": started, "ended": ended, "ports": ports})  # fmt: skip
    if not verdict["scaninfo"]:  # -sn: a PING scan of each host found up
        for h in verdict["hosts"]:
            if h["status"] == "up" and h["address"] != scanner:
                scans.append({"scanner": scanner, "target": h["address"], "type": "PING", "nmap_type": "ping",
                              "flags": None, "tool": tool, "started": started, "ended": ended, "ports": []})
    return scans


# ---------------------------------------------------------------------------------------------- hosts

# (network, role name, hops from the LAN, hops from t2's link) for every address a capture can hold.
PLACES = (
    ("10.78.1.1/32", "router r1 (LAN side)", 0, 2), ("10.78.1.10/32", "scanner", 0, 2),
    ("10.78.1.0/24", "LAN host", 0, 2), ("10.78.2.1/32", "router r1", 1, 1), ("10.78.2.2/32", "router r2", 1, 1),
    ("10.78.3.1/32", "router r2 (t2's side)", 1, 0), ("10.78.3.10/32", "target t2", 2, 0),
    ("10.78.3.0/24", "t2's network (no host)", 2, 0), ("10.78.4.1/32", "router r1 (t1's side)", 0, 2),
    ("10.78.4.10/32", "target t1", 1, 2), ("10.78.5.2/32", "peer host", 1, 2), (fl.PEER_NET, "peer", 1, 2),
)  # fmt: skip
ROUTER_AT = {"lan": (fl.GATEWAY.address, fl.GATEWAY.mac), "t2": ("10.78.3.1", "02:78:03:00:00:01")}
OWN_MACS = {fl.SCANNER.address: fl.SCANNER.mac, fl.GATEWAY.address: fl.GATEWAY.mac, fl.T2.address: fl.T2.mac,
            "10.78.3.1": "02:78:03:00:00:01", **{h.address: h.mac for h in fl.LAN_HOSTS}}  # fmt: skip


def segment(sensor: str) -> str:
    return "t2" if sensor == "t2" else "lan"


def place(address: str, sensor: str) -> tuple[str, int]:
    a = ipaddress.ip_address(address)
    for net, name, lan_hops, t2_hops in PLACES:
        if a in ipaddress.ip_network(net):
            return name, lan_hops if segment(sensor) == "lan" else t2_hops
    raise ValueError(f"{address} is no lab address")


def hosts_table(frames: list[Frame], sensor: str, initial: dict[str, list[int]]) -> list[dict]:
    """Every address that sent an IP packet or an ARP frame, where it sits from the sensor, and what its
    frames showed;
    `initial` overrides Linux's 64 for addresses whose packets a tool wrote."""
    seen: dict[str, tuple[set, set]] = {}
    for f in frames:
        if f.src and f.ttl is not None:
            ttls, macs = seen.setdefault(f.src, (set(), set()))
            ttls.add(f.ttl)
            macs.add(f.eth_src)
        elif f.arp_op:  # an ARP sender: its MAC, no TTL
            seen.setdefault(f.arp_src, (set(), set()))[1].add(f.eth_src)
    rows = []
    for address in sorted(seen, key=_addr_key):
        name, hops = place(address, sensor)
        via, via_mac = ROUTER_AT[segment(sensor)] if hops else (None, None)
        ttls, macs = seen[address]
        rows.append({
            "address": address, "role": name, "hops_from_sensor": hops,
            "mac_at_sensor": via_mac or OWN_MACS.get(address), "via": via,
            "initial_ttl": initial.get(address, LINUX), "seen_ttls": sorted(ttls), "seen_macs": sorted(macs),
        })  # fmt: skip
    return rows


def host_problems(rows: list[dict]) -> list[str]:
    problems = []
    for h in rows:
        if h["mac_at_sensor"] and h["seen_macs"] != [h["mac_at_sensor"]]:
            problems.append(f"{h['address']}: MACs {h['seen_macs']}, expected {h['mac_at_sensor']}")
        bad = [t for t in h["seen_ttls"] if t + h["hops_from_sensor"] not in h["initial_ttl"]]
        if bad:
            problems.append(f"{h['address']}: TTLs {bad} + {h['hops_from_sensor']} hops not in {h['initial_ttl']}")
    return problems


def tool_stage(frames: list[Frame], scanner: str, is_probe: Callable[[Frame], bool], technique: str,
               name: str) -> dict:
    """A tool's port scan as one stage: its probes (`is_probe` of the scanner's frames), the replies in their
    conversations, and the scanner's other frames there (resets to SYN/ACKs)."""
    probes = [f for f in frames if f.src == scanner and is_probe(f)]
    convs = {conversation(f) for f in probes}
    mine = [f for f in frames if conversation(f) in convs]
    probe_ns = {f.n for f in probes}
    per_port = collections.Counter((f.dst, f.dport) for f in probes)
    stage = {
        "stage": "port scan", "nmap_tasks": [], "technique": technique, "scanner": scanner,
        "targets": sorted({f.dst for f in probes}, key=_addr_key), "first_frame": mine[0].n,
        "last_frame": mine[-1].n, "frames": len(mine), "probe_frames": sorted(probe_ns),
        "reply_frames": [f.n for f in mine if f.src != scanner],
        "other_frames": [f.n for f in mine if f.src == scanner and f.n not in probe_ns],
        "probes": {name: len(probes)}, "ports": _ports(probes),
    }  # fmt: skip
    if retried := {f"{dst}:{port}": n for (dst, port), n in sorted(per_port.items()) if n > 1}:
        stage["retried_ports"] = retried
    return stage


def compact_json(obj: object, indent: int = 0, width: int = 160, lead: int = 0) -> str:
    """JSON indented by 2, with every value that fits on its line written on one line (a port's verdict, a
    host, a frame list), so a truth file reads as a table. `lead`: columns its line holds before it."""
    flat = json.dumps(obj)
    top = "\n" if indent == 0 else ""
    if indent + lead + len(flat) <= width or not isinstance(obj, dict | list) or not obj:
        return flat + top
    pad = " " * (indent + 2)
    if isinstance(obj, dict):
        body = ",\n".join(f"{pad}{json.dumps(k)}: {compact_json(v, indent + 2, width, len(json.dumps(k)) + 2)}"
                           for k, v in obj.items())  # fmt: skip
        return f"{{\n{body}\n{' ' * indent}}}{top}"
    if any(isinstance(v, dict | list) for v in obj):
        body = ",\n".join(pad + compact_json(v, indent + 2, width) for v in obj)
    else:  # a long list of plain values: wrapped, not one a line
        lines, line = [], ""
        for v in map(json.dumps, obj):
            if line and len(pad) + len(line) + len(v) + 2 > width:
                lines.append(line + ",")
                line = ""
            line += (", " if line else "") + v
        body = "\n".join(pad + x for x in [*lines, line])
    return f"[\n{body}\n{' ' * indent}]{top}"


