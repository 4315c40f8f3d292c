#!/usr/bin/env python3
"""Real captures for scan forensics on other people's traffic, made in tests/support/forensiclab.py.

Usage (root; nmap, masscan, zmap, hping3, tcpdump, tshark)::

    python3 tests/support/make_forensic_captures.py [NAME ...] [--out DIR] [--prefix NAME_OF_LAB]

With no NAME every capture is made. For each NAME it writes into DIR (default tests/data/forensic/)
``NAME.pcap`` (tcpdump -U -s 2048 at the capture's sensor), ``NAME.truth.json``, and the tool's own output
where it gives one: ``NAME.nmap.xml`` (nmap -oX) with ``NAME.nmap.trace`` (nmap's --packet-trace: every
packet it sent and received, under the stage it ran in; hex dumps dropped), ``NAME.masscan.json``,
``NAME.zmap.csv``, ``NAME.hping3.txt``, ``NAME.old_nmap.json`` (the emulation's own log and verdict). Then
it rewrites README.md there (the table of every capture whose truth file is present) and exits non-zero if a
capture fails one of its checks.

Truth file (JSON)
-----------------
``file``, ``name``, ``kind`` ("scan" or "ordinary"), ``description``, ``must_report``, ``commands``
    what the capture is, what a correct analyzer reports of it, and how it was made (paths relative).
``sensor``
    where tcpdump ran: ``{"at", "namespace_role", "interface", "what"}`` (forensiclab.SENSORS).
``scanner``, ``tool``, ``hops``
    the scanning host's address (null for ordinary traffic), the tool ("nmap 7.93", "masscan 1.3.2", ...,
    "old nmap (emulated)"), and ``{"scanner_to_sensor": N}``: routers between the scanner and the sensor.
``scans``
    one object per (scanner, target, technique) port table, as tests/support/make_scan_captures.py writes them:
    ``scanner``, ``target``, ``type`` (SYN, UDP, PING), ``nmap_type``, ``flags``, ``tool``, ``started``,
    ``ended``, ``ports`` [{``port``, ``protocol``, ``state``, ``reason``, ``lab_state``}]: the tool's own
    verdict (nmap's from -oX) and what the lab's configuration predicts. Only the port-scan technique's ports
    are here: probes of other stages (OS detection's T5 to a closed port, its U1 to a random UDP port, a
    script's UDP datagram) are in ``stages``, never in a port table. ``[]`` for ordinary traffic.
``stages``
    every stage of the scanner's run, in order: ``{"stage"`` (host discovery, port scan, version detection,
    OS detection, traceroute, scripts), ``technique``, ``scanner``, ``targets``, ``first_frame``,
    ``last_frame``, ``frames`` (how many), ``probe_frames``, ``reply_frames``, ``other_frames`` (the
    scanner kernel's resets to SYN/ACKs, a connection's packets after its SYN, unanswerable replies),
    ``probes`` (count by probe name: nmap's discovery probes, the OS detection probes SEQ, ECN, T2-T7, IE,
    U1, "connection" for a kernel connection's SYN or a script's datagram), ``probe_frames_by_name`` (where
    a stage has probes of more than one name), ``ports`` {"tcp": [...], "udp": [...]} (destination ports probed or connected to), and per stage
    ``tries`` (OS detection), ``connections`` (version detection, scripts), ``ttls`` (traceroute),
    ``retried_ports`` (a port scan's ports probed more than once: how many times), ``resets`` (masscan: its
    own resets and the scanner kernel's, by the TTL they left with)}. Frame
    numbers count as Wireshark does (1 = the first). nmap's stages are nmap's own: each packet its
    --packet-trace lists is found in the capture (matched on addresses, ports, flags and IP ID, or sequence
    number for replies) and labelled with the task nmap was running; the kernel's connections of version
    detection and scripts are matched to nmap's nsock/NSE trace lines. ``[]`` for ordinary traffic.
``nmap``
    nmap runs only: ``{"args", "xml", "trace", "services", "os", "scripts", "traceroute"}`` from -oX.
``swept`` (zmap), ``emulation`` (the older nmap: what it emulates, its log, the ports whose first SYN the
host lost), ``hping3_output``
    what those runs add.
``hosts``
    every address that sent a packet: ``{"address", "role", "hops_from_sensor", "mac_at_sensor" (the
    host's own MAC on its link, else the router's that forwards it), "via" (that router's address, or
    null), "initial_ttl" (the values its packets may start with: Linux 64, a tool's own values),
    "seen_ttls", "seen_macs"}``. ``seen_ttls`` + ``hops_from_sensor`` lie in ``initial_ttl`` (checked).
``traffic``
    ordinary captures: what the traffic is, as data (peers, ports, schedules).
``verified``
    what the generator checked before writing the truth (a failed check fails the run): ``checked`` (the
    checks, in words), ``counts`` {label: {"filter" (a tshark display filter), "count", "expected" [min,
    max]}}, ``flags`` (TCP flag combinations by direction), and per kind of run what it adds: nmap's traced
    packets found in the capture and the frames no stage claims (ARP only), the older nmap's windows, TTLs,
    source ports and header lengths, the P2P peers counted. ``packets``, ``bytes``, ``tcpdump_dropped``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ipaddress
import json
import logging
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import forensiclab as fl
from forensic_truth import (
    LINUX,
    Frame,
    compact_json,
    flag_table,
    host_problems,
    hosts_table,
    match_trace,
    nmap_stages,
    nmap_verdict,
    parse_trace,
    place,
    port_table,
    read_frames,
    tool_stage,
    tshark_count,
)
from forensiclab import ForensicLab, forensic_lab
from make_scan_captures import FLAG_BITS, _expand_ports
from netns import nft_chain, nft_table, require

log = logging.getLogger("make_forensic_captures")

OUT = Path(__file__).resolve().parents[1] / "data" / "forensic"
LAB_STEM = "slfx"  # lab namespaces are {LAB_STEM}{pid}-{role}
TOOLS = ("nmap", "masscan", "zmap", "hping3", "tcpdump", "tshark")
MAX_CAPTURE_BYTES = 300_000
NMAP_COMMON = ["-n", "-T4", "--reason", "-v", "--packet-trace"]
# Twenty well-known ports: the targets' open 22 and 80, dropped 135, rejected 139, the rest closed.
SCAN_PORTS = "21,22,23,25,53,80,110,111,135,139,143,443,445,993,995,1723,3306,3389,5900,8080"
UDP_PORTS = "53,137,139,161,162,514,1900,5353"
# nmap's raw probes start with a random TTL in 37-59 each; OS detection's U1 with 51-64 (its udpttl, the clock's
# seconds mod 14 + 51); the traceroute's with 1, 2, ... (added per capture); its kernel's connections with 64.
NMAP_TTLS = list(range(37, 65))

# ---------------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str  # "scan" or "ordinary"
    sensor: str  # forensiclab.SENSORS key
    description: str
    must_report: str
    run: Callable[[ForensicLab, Path, Spec], dict]  # captures and runs; returns truth fields
    counts: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # label: (tshark filter, min, max)


def _relative(cmd: list[str], outdir: Path) -> str:
    return " ".join(c.replace(f"{outdir}/", "") for c in cmd)


def role_command(role: str, program: str, plan: dict) -> str:
    """How a forensic_roles program ran, for people: its plan inline when short."""
    text = json.dumps(plan)
    return f"{role}: forensic_roles.py {program} " + (f"'{text}'" if len(text) <= 240 else
                                                      f"<a {len(text)}-byte plan the generator makes>")


def _tool_version(tool: str) -> str:
    out = subprocess.run([tool, "--version"], check=False, capture_output=True, text=True, timeout=10)
    m = re.search(r"(\d+\.\d+(?:\.\d+)?)", out.stdout + out.stderr)
    return f"{tool} {m.group(1)}" if m else tool


def nmap_capture(args: list[str], target: str) -> Callable[[ForensicLab, Path, Spec], dict]:
    """nmap `args` from the scanner against `target` (an address or network), captured at the spec's sensor."""

    def run(lab: ForensicLab, pcap: Path, spec: Spec) -> dict:
        xml = pcap.with_suffix(".nmap.xml")
        cmd = ["nmap", *args, *NMAP_COMMON, "-oX", xml.name, target]  # run in the output directory
        with lab.capture(pcap, at=spec.sensor) as cap:
            started = time.time()
            # nsock's trace goes to stderr: one stream, line-buffered, keeps it under the task that ran it
            out = subprocess.run(["ip", "netns", "exec", lab.ns("scan"), "stdbuf", "-oL", "-eL", *cmd],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=True,
                                 timeout=900, cwd=pcap.parent).stdout  # fmt: skip
            ended = time.time()
        trace = parse_trace(out)
        pcap.with_suffix(".nmap.trace").write_text("\n".join(trace.kept_lines) + "\n", encoding="utf-8")
        frames = read_frames(pcap)
        sent, rcvd = match_trace(trace, frames)
        scanner = fl.SCANNER.address
        scripts = any(a in args for a in ("-sC", "-A", "--script"))
        stages, unclaimed = nmap_stages(trace, frames, scanner, scripts)
        tool = _tool_version("nmap")
        verdict = nmap_verdict(xml)
        traceroute_ttls = {t for s in stages if s["stage"] == "traceroute" for t in s["ttls"]}
        hops = place(scanner, spec.sensor)[1]
        n_sent, n_rcvd = sum(p.sent for p in trace.packets), sum(not p.sent for p in trace.packets)
        scans = port_table(xml, scanner, tool, started, ended)
        return {
            "cap": cap, "frames": frames, "commands": [_relative(cmd, pcap.parent)], "scanner": scanner,
            "tool": tool, "hops": {"scanner_to_sensor": hops},
            "scans": scans, "stages": stages,
            "nmap": {"args": " ".join(args), "xml": xml.name, "trace": pcap.with_suffix(".nmap.trace").name,
                     **verdict},
            "initial_ttl": {scanner: sorted({*NMAP_TTLS, *LINUX, *(t + hops for t in traceroute_ttls)})},
            "verified": {
                "nmap_trace": {"sent": n_sent, "sent_found": sent, "received": n_rcvd, "received_found": rcvd},
                "unclaimed_frames": unclaimed,
            },
            "problems": ([f"{n_sent - sent} of nmap's {n_sent} sent packets not in the capture"] if sent < n_sent
                         else []) + [f"frame {u['frame']} ({u['what']}) belongs to no stage" for u in unclaimed
                                     if u["what"] not in ("ARP request", "ARP reply")] + state_problems(scans),
        }  # fmt: skip

    return run


def tool_ports(states: dict[int, tuple[str, str]], ports: Iterable[int], technique: str = "syn") -> list[dict]:
    """Truth ports from a tool's own verdict {port: (state, reason)}; a port it does not list got no answer
    (filtered, as nmap reads silence)."""
    out = []
    for port in sorted(ports):
        state, reason = states.get(port, ("filtered", "no-response"))
        out.append({"port": port, "protocol": "tcp", "state": state, "reason": reason,
                    "lab_state": fl.expected_state(technique, port)})  # fmt: skip
    return out


def scan_row(target: str, tool: str, started: float, ended: float, ports: list[dict]) -> dict:
    return {"scanner": fl.SCANNER.address, "target": target, "type": "SYN", "nmap_type": None, "flags": "S",
            "tool": tool, "started": started, "ended": ended, "ports": ports}  # fmt: skip


def state_problems(scans: list[dict]) -> list[str]:
    return [f"{s['target']} {p['protocol']}/{p['port']}: {s['tool']} says {p['state']}, the lab {p['lab_state']}"
            for s in scans for p in s["ports"] if p["state"] != p["lab_state"]]  # fmt: skip


def _is_syn(f: Frame) -> bool:
    return f.proto == 6 and (f.flags or 0) & 0xFF == FLAG_BITS["S"]


# The older nmap's three targets on the LAN: (host, open ports, dropped, rejected, closed ports whose first
# SYN the host loses, open ports whose first SYN it loses). Every other port of OLD_PORTS is closed.
OLD_PORTS = (21, 22, 23, 25, 53, 80, 110, 111, 113, 119, 135, 139, 143, 199, 256, 443, 445, 465, 554, 587, 993,
             995, 1025, 1720, 1723, 2000, 3306, 3389, 5060, 5900, 6001, 8000, 8080, 8443, 8888, 31337)  # fmt: skip
OLD_TARGETS = (
    (fl.LAN_HOSTS[0], (22, 80), (135, 445), (139,), (23, 25, 110, 3389), (80,)),
    (fl.LAN_HOSTS[1], (22, 443, 3306), (135, 139, 1723), (), (21, 113, 8080), ()),
    (fl.LAN_HOSTS[2], (80, 8080), (445,), (1720,), (53, 993, 5900, 31337), (8080,)),
)
OLD_NMAP_PLAN = {"seed": 1700, "base_port": 36050, "tries": 2, "rto_s": 1.0, "cwnd": 10, "max_cwnd": 30}
SYN_IP_BYTES = 44  # IPv4 20 + TCP 20 + MSS option 4


def _old_target_ruleset(dropped: tuple, rejected: tuple, lose_first: tuple) -> str:
    rules = [f"tcp dport {{ {', '.join(map(str, dropped))} }} drop"] if dropped else []
    rules += [f"tcp dport {p} reject with icmp type admin-prohibited" for p in rejected]
    # A byte quota of one SYN: the first to the port is lost, a retry gets through (a lossy path's look).
    rules += [f"tcp dport {p} quota until {SYN_IP_BYTES + 1} bytes drop" for p in lose_first]
    return nft_table("fx_old", nft_chain("input", rules))


def run_old_nmap(lab: ForensicLab, pcap: Path, spec: Spec) -> dict:
    """The older nmap's SYN scan of h1-h3 (forensic_roles.old_nmap), each host with its own open, closed,
    dropped and rejected ports and ports whose first SYN it loses; nmap's verdict by nmap's rules."""
    scanner = fl.SCANNER.address
    plan = {**OLD_NMAP_PLAN, "source": scanner,
            "targets": {h.address: list(OLD_PORTS) for h, *_ in OLD_TARGETS}}  # fmt: skip
    with contextlib.ExitStack() as stack:
        # The scanner and its targets know each other's MACs (as after nmap's own ARP ping): the capture
        # holds the scan alone, no ARP resolution of three hosts that could pass for a sweep.
        stack.enter_context(lab.neighbours("scan", [(h.address, h.mac) for h, *_ in OLD_TARGETS]))
        for host, open_ports, dropped, rejected, lost_closed, lost_open in OLD_TARGETS:
            stack.enter_context(lab.neighbours(host.role, [(scanner, fl.SCANNER.mac)]))
            stack.enter_context(lab.nft(lab.ns(host.role), _old_target_ruleset(dropped, rejected,
                                                                           lost_closed + lost_open)))
            lab.start_role(host.role, "http", {"port": 65000, "title": host.role})  # (a listener nobody scans)
            lab.serve_banners(lab.ns(host.role), host.role, open_ports)
        with lab.capture(pcap, at=spec.sensor) as cap:
            started = time.time()
            result = json.loads(lab.run_role("scan", "old_nmap", plan).splitlines()[-1])
            ended = time.time()
    pcap.with_suffix(".old_nmap.json").write_text(compact_json({"plan": plan, **result}), encoding="utf-8")
    frames = read_frames(pcap)
    logged = {(p["target"], p["port"], p["ip_id"]) for p in result["probes"]}
    found = {(f.dst, f.dport, f.ip_id) for f in frames if f.src == scanner and _is_syn(f)}
    scans, problems = [], []
    for host, open_ports, dropped, rejected, lost_closed, lost_open in OLD_TARGETS:
        verdict = result["ports"][host.address]
        ports = []
        for port in OLD_PORTS:
            v = verdict[str(port)]
            lab_state = "open" if port in open_ports else "filtered" if port in dropped + rejected else "closed"
            ports.append({"port": port, "protocol": "tcp", "state": v["state"], "reason": v["reason"],
                          "lab_state": lab_state, "tries": v["tries"], "decided_by_try": v["decided_by_try"],
                          "first_probe_lost": port in lost_closed + lost_open})  # fmt: skip
        scans.append(scan_row(host.address, "nmap (older, emulated)", started, ended, ports))
    problems += state_problems(scans)
    if logged - found:
        problems.append(f"{len(logged - found)} of the emulation's {len(logged)} probes not in the capture")
    syns = [f for f in frames if f.src == scanner and _is_syn(f)]
    verified = {
        "probes_logged": len(logged), "probes_found": len(logged & found),
        "windows": dict(sorted(collections.Counter(str(f.window) for f in syns).items())),
        "ttl_range": [min(f.ttl for f in syns), max(f.ttl for f in syns)],
        "source_ports": dict(sorted(collections.Counter(str(f.sport) for f in syns).items())),
        "tcp_header_bytes": sorted({f.tcp_hdr_len for f in syns}), "distinct_ip_ids": len({f.ip_id for f in syns}),
    }  # fmt: skip
    if set(verified["windows"]) != {"1024", "2048", "3072", "4096"} or verified["tcp_header_bytes"] != [24]:
        problems.append(f"probes' windows {verified['windows']} / TCP header lengths {verified['tcp_header_bytes']}")
    return {
        "cap": cap, "frames": frames, "commands": [role_command("scan", "old_nmap", plan)],
        "scanner": scanner, "tool": "nmap (older, emulated)", "hops": {"scanner_to_sensor": 0},
        "scans": scans, "stages": [tool_stage(frames, scanner, _is_syn, "SYN", "TCP SYN")],
        "emulation": {
            "log": pcap.with_suffix(".old_nmap.json").name,
            "what": "an older nmap's raw SYN scan (as in Practical Packet Analysis' synscan.pcapng): each probe "
                    "its own window (1024/2048/3072/4096), TTL (random 37-59) and IP ID; MSS 1460 only; "
                    f"try N from source port {plan['base_port']}+N; unanswered probes retried after "
                    f"{plan['rto_s']} s, {plan['tries']} tries in all; a port's state decided over every try",
            "lost_first": {h.address: sorted(lc + lo) for h, _, _, _, lc, lo in OLD_TARGETS},
        },
        "initial_ttl": {scanner: sorted({*range(37, 60), *LINUX})},
        "verified": verified, "problems": problems,
    }  # fmt: skip


# masscan 1.3.2 (Debian 12) does not end by itself: after --wait its receive thread blocks until a frame
# arrives (robertdavidgraham/masscan#144). A frame of the local experimental EtherType 0x88b5 broadcast by a
# LAN host wakes it; no IP stack and no analyzer stage reads such a frame, and it never leaves the LAN.
MASSCAN_RATE = 100
TOOL_TIMEOUT_S = 60.0


def run_masscan(lab: ForensicLab, pcap: Path, spec: Spec) -> dict:
    scanner, target = fl.SCANNER.address, fl.T2.address
    result = pcap.with_suffix(".masscan.json")
    ports = [int(p) for p in SCAN_PORTS.split(",")]
    cmd = ["masscan", target, f"-p{SCAN_PORTS}", "--rate", str(MASSCAN_RATE), "--wait", "1", "-e", "eth0",
           "--router-mac", fl.GATEWAY.mac, "--show", "closed", "-oJ", str(result)]  # fmt: skip
    with lab.capture(pcap, at=spec.sensor) as cap:
        started = time.time()
        proc = lab.spawn(lab.ns("scan"), *cmd)
        deadline = time.monotonic() + TOOL_TIMEOUT_S
        time.sleep(2.0)  # its probes, then its one-second wait for replies
        while proc.poll() is None and time.monotonic() < deadline:
            lab.run_role("h1", "wake", {"iface": "eth0", "mac": fl.LAN_HOSTS[0].mac})
            time.sleep(0.5)
        if proc.poll() is None:
            lab.stop(proc)
            raise RuntimeError(f"masscan did not end within {TOOL_TIMEOUT_S:.0f} s")
        ended = time.time()
    text = result.read_text(encoding="utf-8").strip()
    entries = json.loads(text) if text else []
    states = {p["port"]: (p["status"], p["reason"]) for e in entries if e["ip"] == target for p in e["ports"]}
    scans = [scan_row(target, _tool_version("masscan"), started, ended, tool_ports(states, ports))]
    frames = read_frames(pcap)
    stage = tool_stage(frames, scanner, _is_syn, "SYN", "TCP SYN")
    by_n = {f.n: f for f in frames}
    hops = place(scanner, spec.sensor)[1]
    resets = {"masscan's own (TTL 255)": [], "the scanner kernel's (TTL 64)": []}
    for n in stage["other_frames"]:
        f = by_n[n]
        if f.flags & FLAG_BITS["R"]:
            resets["masscan's own (TTL 255)" if f.ttl + hops == 255 else "the scanner kernel's (TTL 64)"].append(n)
    stage["resets"] = resets
    problems = [f"no {who} reset in the capture" for who, ns in resets.items() if not ns] + state_problems(scans)
    return {
        "cap": cap, "frames": frames, "commands": [_relative(cmd, pcap.parent),
                                                   "(a 0x88b5 frame from h1 every 0.5 s until masscan ends)"],
        "scanner": scanner, "tool": _tool_version("masscan"), "hops": {"scanner_to_sensor": hops},
        "scans": scans, "stages": [stage], "initial_ttl": {scanner: [64, 255]}, "problems": problems,
    }  # fmt: skip


ZMAP_PORT = 80


def run_zmap(lab: ForensicLab, pcap: Path, spec: Spec) -> dict:
    scanner = fl.SCANNER.address
    result = pcap.with_suffix(".zmap.csv")
    targets = [fl.T2.address, *map(str, ipaddress.ip_network(fl.UNUSED_T2_NET))]
    cmd = ["zmap", "-p", str(ZMAP_PORT), "-i", "eth0", "-G", fl.GATEWAY.mac, "-b", "/dev/null", "-B", "1M",
           "-c", "1", "--seed", "17", "--output-module", "csv", "-f", "saddr,sport,classification",
           "--output-filter", "repeat = 0", "-o", str(result), fl.T2.address, fl.UNUSED_T2_NET]  # fmt: skip
    with lab.capture(pcap, at=spec.sensor) as cap:
        started = time.time()
        lab.run(lab.ns("scan"), *cmd, timeout=TOOL_TIMEOUT_S)
        ended = time.time()
    found = {saddr: kind for saddr, _, kind in (line.split(",") for line in result.read_text().splitlines()[1:] if line)}
    tool = _tool_version("zmap")
    scans = []
    for target in targets:
        states = {ZMAP_PORT: ({"synack": "open", "rst": "closed"}[found[target]], found[target])} if target in found else {}
        ports = tool_ports(states, [ZMAP_PORT])
        if target != fl.T2.address:
            ports[0]["lab_state"] = "filtered"  # no host holds it: nothing answers
        scans.append(scan_row(target, tool, started, ended, ports))
    frames = read_frames(pcap)
    probes = [f for f in frames if f.src == scanner and _is_syn(f)]
    problems = state_problems(scans)
    if {f.dst for f in probes} != set(targets):
        problems.append(f"zmap probed {len({f.dst for f in probes})} of the {len(targets)} addresses at the sensor")
    if {f.ip_id for f in probes} != {54321}:
        problems.append(f"zmap probes' IP IDs {sorted({f.ip_id for f in probes})}, expected 54321")
    return {
        "cap": cap, "frames": frames, "commands": [_relative(cmd, pcap.parent)], "scanner": scanner, "tool": tool,
        "hops": {"scanner_to_sensor": place(scanner, spec.sensor)[1]}, "scans": scans,
        "stages": [tool_stage(frames, scanner, _is_syn, "SYN", "TCP SYN")], "swept": targets,
        "initial_ttl": {scanner: [64, 255]}, "problems": problems,
    }  # fmt: skip


HPING_PORTS = "21-25,53,80,135,139,443"


def run_hping3(lab: ForensicLab, pcap: Path, spec: Spec) -> dict:
    scanner, target = fl.SCANNER.address, fl.T2.address
    cmd = ["hping3", "--scan", HPING_PORTS, "-S", target]
    with lab.capture(pcap, at=spec.sensor) as cap:
        started = time.time()
        out = lab.run(lab.ns("scan"), *cmd, timeout=TOOL_TIMEOUT_S, check=False)
        ended = time.time()
    pcap.with_suffix(".hping3.txt").write_text(out.stdout, encoding="utf-8")
    # hping3 --scan lists the ports that answered SYN/ACK ("   22 ssh        : .S..A...  62 ..."), not the
    # closed ones: their states here are the lab's (reason "lab"), checked against its list of open ports.
    opened = re.finditer(r"^\s*(\d+)\s+\S+\s*:\s*\.S\.\.A", out.stdout, re.MULTILINE)
    said_open = {int(m.group(1)) for m in opened}
    ports = _expand_ports(HPING_PORTS)
    states = {p: (fl.expected_state("syn", p), "lab") for p in ports}
    tool = _tool_version("hping3")
    frames = read_frames(pcap)
    scans = [scan_row(target, tool, started, ended, tool_ports(states, ports))]
    return {
        "cap": cap, "frames": frames, "commands": [_relative(cmd, pcap.parent)], "scanner": scanner, "tool": tool,
        "hops": {"scanner_to_sensor": place(scanner, spec.sensor)[1]}, "scans": scans,
        "stages": [tool_stage(frames, scanner, _is_syn, "SYN", "TCP SYN")], "initial_ttl": {scanner: LINUX},
        "hping3_output": pcap.with_suffix(".hping3.txt").name,
        "problems": ([] if said_open == set(fl.TCP_OPEN) else [f"hping3 found {sorted(said_open)} open"]),
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------- ordinary


def ordinary(lab: ForensicLab, pcap: Path, spec: Spec, *, servers: list[tuple[str, str, dict]],
             clients: list[tuple[str, str, dict]], before: bool, duration_s: float, traffic: dict,
             initial_ttl: dict[str, list[int]] | None = None) -> dict:
    """Start `servers` (role, program, plan), then `clients`, each a forensic_roles program; with `before`
    the clients start (and make their connections) before the capture does; capture `duration_s`; stop
    every one of them by PID."""
    procs, commands = [], []
    try:
        for role, program, plan in servers + (clients if before else []):
            procs.append(lab.start_role(role, program, plan))
            commands.append(role_command(role, program, plan))
        with lab.capture(pcap, at=spec.sensor) as cap:
            for role, program, plan in [] if before else clients:
                procs.append(lab.start_role(role, program, plan))
                commands.append(role_command(role, program, plan))
            time.sleep(duration_s)
    finally:
        for proc in reversed(procs):
            lab.stop(proc)
    return {"cap": cap, "commands": commands, "scanner": None, "scans": [], "stages": [], "traffic": traffic,
            "initial_ttl": initial_ttl or {}}  # fmt: skip


KEEPALIVE_PORTS = {"quiet": 443, "probing": 8443, "stream": 8080}
KEEPALIVE_SESSIONS = [  # name, the server port's kind, keep-alives from the client
    ["client_keepalive", "quiet", True], ["server_keepalive", "probing", False], ["both_keepalive", "probing", True],
    ["chatty", "quiet", False], ["stream", "stream", False],
]  # fmt: skip


def run_keepalive(lab: ForensicLab, pcap: Path, spec: Spec) -> dict:
    server = {"seed": 41, "ports": KEEPALIVE_PORTS, "stream_bytes": 400, "stream_gap_s": 0.5}
    client = {"seed": 42, "server": fl.T1.address, "ports": KEEPALIVE_PORTS, "sessions": KEEPALIVE_SESSIONS,
              "hello_bytes": 517, "chatty": "chatty", "chat_gap_s": 3.0, "chat_bytes": 120, "close_after_s": 11.0}
    traffic = {
        "client": fl.LAN_HOSTS[0].address, "server": fl.T1.address,
        "sessions": [{"name": n, "server_port": KEEPALIVE_PORTS[k], "client_keepalive": c,
                      "server_keepalive": k == "probing"} for n, k, c in KEEPALIVE_SESSIONS],
        "what": "five TCP sessions opened (and one request answered on each but the stream) 1.5 s before the "
                "capture began: keep-alives every second (TCP_KEEPIDLE=TCP_KEEPINTVL=1) from the client, the "
                "server, or both sockets (where both, the stack's timers decide who probes), a chatty session "
                "(120 bytes every 3 s, answered with 240, closed after 11 s), a stream (400 bytes every 0.5 s "
                "from the server); no SYN of any of them is in the capture",
    }  # fmt: skip
    return ordinary(lab, pcap, spec, servers=[("t1", "keepalive_server", server)],
                    clients=[("h1", "keepalive_client", client)], before=True, duration_s=15.0, traffic=traffic)


P2P_PORT, P2P_SEED = 41734, 4242


def p2p_plans() -> tuple[dict, dict, dict]:
    """Peers and client plans, and the truth's description: 70 UDP peers (52 the client contacts and that
    answer, 6 that speak first, 8 silent, 4 whose port is closed) and 12 TCP peers (one refusing)."""
    rng = random.Random(P2P_SEED)
    addresses: list[str] = []
    while len(addresses) < 82:
        a = f"10.{rng.randint(80, 95)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        if a not in addresses:
            addresses.append(a)
    ports = [rng.randint(1025, 65000) for _ in addresses]
    answering, inbound, silent, closed = (list(zip(addresses[i:j], ports[i:j])) for i, j in
                                          ((0, 52), (52, 58), (58, 66), (66, 70)))  # fmt: skip
    tcp_peers = list(zip(addresses[70:82], ports[70:82]))
    udp_events = []
    for addr, port in answering + silent + closed:
        first = round(rng.uniform(0.0, 6.0), 3)
        udp_events.append([first, addr, port, rng.randint(20, 160)])
        if (addr, port) in silent:  # an unanswered peer is tried twice more
            udp_events += [[round(first + d, 3), addr, port, rng.randint(20, 160)] for d in (1.5, 3.0)]
        elif (addr, port) in answering and rng.random() < 0.4:
            udp_events.append([round(rng.uniform(6.0, 11.0), 3), addr, port, rng.randint(20, 160)])
    udp_events.sort()
    udp_events[0][0] = 0.0  # the first datagram starts the peers' own sends
    tcp_events = [[round(rng.uniform(1.0, 9.0), 3), a, p, [rng.randint(60, 300) for _ in range(rng.randint(1, 3))]]
                  for a, p in tcp_peers]  # fmt: skip
    peers = {
        "seed": P2P_SEED + 1, "client": [fl.LAN_HOSTS[3].address, P2P_PORT],
        "udp": [[a, p, rng.randint(40, 240)] for a, p in answering + inbound],
        "tcp": [[a, p, rng.randint(150, 700)] for a, p in tcp_peers[1:]],  # the first refuses: no listener
        "inbound": sorted([round(rng.uniform(2.0, 9.0), 3), a, p, rng.randint(40, 200)] for a, p in inbound),
    }  # fmt: skip
    client = {"seed": P2P_SEED + 2, "port": P2P_PORT, "udp": udp_events, "tcp": tcp_events, "linger_s": 3.0}
    truth = {
        "client": fl.LAN_HOSTS[3].address, "client_udp_port": P2P_PORT,
        "udp_peers": {"contacted_and_answering": [f"{a}:{p}" for a, p in answering],
                      "speaking_first": [f"{a}:{p}" for a, p in inbound],
                      "silent": [f"{a}:{p}" for a, p in silent], "port_closed": [f"{a}:{p}" for a, p in closed]},
        "tcp_peers": {"answering": [f"{a}:{p}" for a, p in tcp_peers[1:]], "refusing": [f"{a}:{p}" for a, p in
                                                                                        tcp_peers[:1]]},
        "what": "a peer-to-peer client (h4) talking UDP from one port to 70 peers on random high ports (most "
                "answer with payload, 6 speak first, 8 never answer and are tried three times, 4 answer ICMP "
                "port unreachable), and TCP sessions carrying payload to 12 peers on random high ports (one "
                "refuses); peers in 10.80.0.0/12, one router away",
    }  # fmt: skip
    return peers, client, truth


def run_p2p(lab: ForensicLab, pcap: Path, spec: Spec) -> dict:
    peers, client, traffic = p2p_plans()
    held = {a for a, *_ in peers["udp"]} | {a for a, *_ in peers["tcp"]}
    held |= {x.split(":")[0] for x in traffic["udp_peers"]["port_closed"] + traffic["tcp_peers"]["refusing"]}
    lab.run(lab.ns("peer"), "ip", "-batch", "-", input="".join(f"addr add {a}/32 dev lo\n" for a in sorted(held)))
    got = ordinary(lab, pcap, spec, servers=[("peer", "p2p_peers", peers)], clients=[("h4", "p2p_client", client)],
                   before=False, duration_s=15.0, traffic=traffic)
    frames = read_frames(pcap)
    me = fl.LAN_HOSTS[3].address
    to = {f.dst for f in frames if f.proto == 17 and f.src == me}
    answered = {f.src for f in frames if f.proto == 17 and f.dst == me}
    got["verified"] = {"udp_peers": len(to), "udp_peers_answering_or_first": len(answered),
                       "tcp_peers": len({f.dst for f in frames if _is_syn(f) and f.src == me})}  # fmt: skip
    got["frames"] = frames
    got["problems"] = [] if (len(to), len(answered)) == (70, 58) else [f"UDP peers {len(to)}, answering {len(answered)}"]
    return got


NBNS_HOSTS = (  # LAN host, its NetBIOS name, schedule [delay s, register|query, name]
    (fl.LAN_HOSTS[0], "WS-ALICE", [[0.0, "register", "WS-ALICE"], [4.0, "query", "FILESRV"],
                                   [9.0, "query", "PRINTER01"], [13.0, "query", "WS-BOB"]]),
    (fl.LAN_HOSTS[1], "WS-BOB", [[1.0, "register", "WS-BOB"], [6.0, "query", "FILESRV"], [11.0, "query", "WPAD"]]),
    (fl.LAN_HOSTS[2], "FILESRV", [[2.0, "register", "FILESRV"], [8.0, "query", "WS-ALICE"]]),
)  # fmt: skip


def run_netbios(lab: ForensicLab, pcap: Path, spec: Spec) -> dict:
    plans = [(h.role, "nbns", {"seed": 137 + i, "name": name, "address": h.address, "broadcast": fl.LAN_BROADCAST,
                               "schedule": schedule}) for i, (h, name, schedule) in enumerate(NBNS_HOSTS)]
    traffic = {
        "hosts": {h.address: name for h, name, _ in NBNS_HOSTS}, "broadcast": fl.LAN_BROADCAST,
        "schedules": {h.address: schedule for h, _, schedule in NBNS_HOSTS},
        "what": "three Windows-like hosts on UDP 137: name registrations and name queries broadcast to "
                "10.78.1.255 (each sent up to three times, 0.75 s apart, until answered), positive name query "
                "responses unicast from 137 to the asker's 137; PRINTER01 and WPAD are nobody's (unanswered)",
    }  # fmt: skip
    return ordinary(lab, pcap, spec, servers=[], clients=plans, before=False, duration_s=18.0, traffic=traffic)


def run_arp(lab: ForensicLab, pcap: Path, spec: Spec) -> dict:
    neighbours = [h.address for h in fl.LAN_HOSTS[1:]]
    plan = {"seed": 7, "targets": neighbours, "count": 1, "gap_s": 7.0}
    traffic = {"host": fl.LAN_HOSTS[0].address, "neighbours": neighbours,
               "what": "h1 (its neighbour cache empty) pings h2, h3 and h4 once each, 7 s apart: one ARP resolution "
                       "per neighbour (broadcast request, reply), and the neighbours' own unicast confirmations"}
    return ordinary(lab, pcap, spec, servers=[], clients=[("h1", "ping", plan)], before=False, duration_s=22.0,
                    traffic=traffic)


MULTICAST_PLANS = {  # LAN host role: its own schedule; h2 also answers M-SEARCH
    "h1": [[0.5, "msearch", "ssdp:all"], [1.5, "msearch", "ssdp:all"], [4.0, "llmnr", "h4"], [9.0, "llmnr", "nas01"],
           [9.5, "llmnr", "nas01"]],
    "h2": [[3.0, "mdns", "h3.local"], [7.0, "mdns", "_services._dns-sd._udp.local"]],
    "h3": [[2.0, "notify", ""], [8.0, "notify", ""]],
    "h4": [[6.0, "mdns", "h1.local"]],
}  # fmt: skip


def run_multicast(lab: ForensicLab, pcap: Path, spec: Spec) -> dict:
    hosts = {h.role: h for h in fl.LAN_HOSTS}
    plans = [(role, "multicast", {"seed": 5353 + i, "name": role, "address": hosts[role].address,
                                  "ssdp_server": role == "h2", "schedule": schedule})
             for i, (role, schedule) in enumerate(MULTICAST_PLANS.items())]  # fmt: skip
    traffic = {
        "schedules": {hosts[r].address: s for r, s in MULTICAST_PLANS.items()},
        "what": "SSDP M-SEARCH (from h1) and NOTIFY (h3) to 239.255.255.250:1900, answered by h2 with unicast "
                "HTTP 200; mDNS queries to 224.0.0.251:5353 for h3.local, h1.local (answered by multicast) and "
                "_services._dns-sd._udp.local; LLMNR queries to 224.0.0.252:5355 for h4 (answered by unicast) "
                "and nas01 (nobody's); the hosts' IGMP reports as they join the groups",
    }  # fmt: skip
    # Multicast and IGMP go out with the TTLs their protocols fix: 1 (IGMP, LLMNR), 2 (SSDP), 255 (mDNS).
    initial = {h.address: [1, 2, 64, 255] for h in fl.LAN_HOSTS}
    return ordinary(lab, pcap, spec, servers=[], clients=plans, before=False, duration_s=12.0, traffic=traffic,
                    initial_ttl=initial)


SPECS: list[Spec] = [
    Spec("nmap_discovery_syn", "scan", "scanner",
         "nmap's default host discovery of t1 (routed one hop away: ICMP echo, TCP SYN 443, TCP ACK 80, ICMP "
         f"timestamp), then a SYN scan of {len(SCAN_PORTS.split(','))} ports",
         "one nmap run of 10.78.1.10 against 10.78.4.10: host discovery with nmap's default probes (not an ACK "
         "or SYN scan of its own), then one SYN scan whose port states are nmap's; t1 one hop away via "
         "10.78.1.1 (MAC 02:78:01:00:00:01)",
         nmap_capture(["-sS", "-p", SCAN_PORTS], fl.T1.address)),
    Spec("nmap_arp_discovery", "scan", "scanner",
         "nmap -sn of the LAN's 10.78.1.0/27: an ARP sweep; five hosts answer (the gateway and h1-h4)",
         "one host discovery (ARP sweep) by 10.78.1.10 of 10.78.1.0/27, finding 10.78.1.1 and 10.78.1.21-24 up; "
         "no port scan",
         nmap_capture(["-sn"], "10.78.1.0/27"),
         counts={"ARP requests from the scanner": ("arp.opcode == 1 && eth.src == 02:78:01:00:00:0a", 31, 80),
                 "ARP replies (the five hosts; nmap's retries may draw a second)": ("arp.opcode == 2", 5, 10)}),
    Spec("nmap_os", "scan", "scanner",
         "nmap -sS -O of t1 (ports 22, 80 open; 23, 443 closed): the SYN scan, then OS detection (SEQ burst, "
         "IE pair, U1, ECN, T2-T7), retried as nmap sees fit",
         "one nmap run against 10.78.4.10: a SYN scan of 22, 23, 80, 443 (nmap's states), then OS detection "
         "as a stage (not XMAS/NULL/ACK/UDP scans of single ports); t1 one hop away",
         nmap_capture(["-sS", "-O", "-Pn", "-p", "22,23,80,443"], fl.T1.address),
         counts={"T2 (no flags, win 128)": ("tcp.flags == 0 && tcp.window_size_value == 128", 1, 40),
                 "T3 (SYN+FIN+PSH+URG, win 256)": ("tcp.flags == 0x02b && tcp.window_size_value == 256", 1, 40),
                 "T7 (FIN+PSH+URG, win 65535)": ("tcp.flags == 0x029 && tcp.window_size_value == 65535", 1, 40),
                 "ECN (SYN+ECE+CWR, a reserved bit)": (("tcp.flags.syn == 1 && tcp.flags.ece == 1 && "
                                                       "tcp.flags.cwr == 1"), 1, 20),
                 "IE (echo code 9)": ("icmp.type == 8 && icmp.code == 9", 1, 20),
                 "U1 (300-byte UDP)": ("udp && ip.src == 10.78.1.10 && udp.length == 308", 1, 20)}),
    Spec("nmap_os_noopen", "scan", "scanner",
         "nmap -sS -O of t1's closed ports 23 and 443 only: OS detection without an open port",
         "one nmap run against 10.78.4.10: a SYN scan of 23, 443 (closed), then OS detection as a stage",
         nmap_capture(["-sS", "-O", "-Pn", "-p", "23,443"], fl.T1.address)),
    Spec("nmap_version", "scan", "scanner",
         "nmap -sS -sV of t1's 22 (SSH banner), 80 (HTTP) and 23 (closed): the SYN scan, then service probes "
         "over the kernel's own connections",
         "one nmap run against 10.78.4.10: a SYN scan of 22, 23, 80, then version detection on 22, 80 (its "
         "connections are no connect scan)",
         nmap_capture(["-sS", "-sV", "-Pn", "-p", "22,23,80"], fl.T1.address)),
    Spec("nmap_scripts", "scan", "scanner",
         "nmap -sS -sC of t1's 22 and 80: the SYN scan, then nmap's default scripts",
         "one nmap run against 10.78.4.10: a SYN scan of 22, 80, then scripts (their connections and datagrams "
         "are no scans)",
         nmap_capture(["-sS", "-sC", "-Pn", "-p", "22,80"], fl.T1.address)),
    Spec("nmap_aggressive", "scan", "scanner",
         "nmap -A of t1's 22, 80 and 23: SYN scan, version detection, OS detection, traceroute, scripts",
         "one nmap run against 10.78.4.10 with each stage as such: SYN scan of 22, 23, 80, version detection on "
         "22, 80, OS detection, traceroute, scripts",
         nmap_capture(["-A", "-Pn", "-p", "22,23,80"], fl.T1.address)),
    Spec("offlink_nmap_syn", "scan", "t2",
         f"nmap -sS of {len(SCAN_PORTS.split(','))} ports of t2, captured at t2's link: the scanner two routers "
         "away",
         "a SYN scan by 10.78.1.10 of 10.78.3.10 named nmap (its probes' TTLs 35-57 at the sensor: random 37-59 "
         "less 2 hops), the scanner 2 hops from the sensor",
         nmap_capture(["-sS", "-Pn", "-p", SCAN_PORTS], fl.T2.address)),
    Spec("offlink_nmap_udp", "scan", "t2",
         f"nmap -sU of t2's UDP ports {UDP_PORTS}, captured at t2's link (the scanner two routers away)",
         "a UDP scan by 10.78.1.10 of 10.78.3.10 named nmap, 2 hops from the sensor, with nmap's states (53 and "
         "161 open, 137 open|filtered, 139 filtered, the rest closed)",
         nmap_capture(["-sU", "-Pn", "-p", UDP_PORTS], fl.T2.address)),
    Spec("old_nmap_windows", "scan", "scanner",
         f"an older nmap's raw SYN scan of h1, h2, h3 ({len(OLD_PORTS)} ports each), emulated: every probe its own "
         "window (1024/2048/3072/4096), TTL and IP ID; retries from the next source port; open, closed, dropped, "
         "ICMP-rejected ports, and ports whose first SYN the host loses (only the retry is answered)",
         "one SYN scan per target (three, not one per window), named nmap; each port one state, decided over "
         "every try as nmap does (a closed port whose first SYN was lost is closed, not filtered)",
         run_old_nmap),
    Spec("offlink_masscan", "scan", "t2",
         f"masscan's SYN scan of t2's {len(SCAN_PORTS.split(','))} ports, captured at t2's link, two routers from "
         "the scanner: masscan's own resets (TTL 253 here) beside the scanner kernel's (TTL 62)",
         "a SYN scan by 10.78.1.10 of 10.78.3.10 named masscan (TTL 255 less 2 hops), 2 hops from the sensor; "
         "both kinds of reset read as the scanner's, neither as a probe",
         run_masscan),
    Spec("offlink_zmap", "scan", "t2",
         f"zmap's sweep of port {ZMAP_PORT} over t2 and the 16 addresses of {fl.UNUSED_T2_NET} (no host), captured "
         "at t2's link two routers from the scanner",
         f"a SYN sweep of port {ZMAP_PORT} by 10.78.1.10 over 17 addresses named zmap (IP ID 54321, TTL 255 less 2 "
         "hops), 10.78.3.10 open, the rest silent",
         run_zmap),
    Spec("offlink_hping3", "scan", "t2",
         f"hping3 --scan {HPING_PORTS} -S of t2, captured at t2's link two routers from the scanner",
         "a SYN scan by 10.78.1.10 of 10.78.3.10 (hping3's, TTL 64 less 2 hops), 2 hops from the sensor, with "
         "22 and 80 open",
         run_hping3),
    Spec("keepalive", "ordinary", "h1",
         "five long TCP sessions from h1 to t1 begun before the capture: keep-alives every second from the client, "
         "the server or both, a chatty session closed mid-capture, a stream",
         "no scan: the keep-alives' bare ACKs and the ACKs of sessions begun before the capture are conversations "
         "already going, not ACK scans",
         run_keepalive,
         counts={"keep-alives from h1": ("tcp.analysis.keep_alive && ip.src == 10.78.1.21", 5, 200),
                 "keep-alives from t1": ("tcp.analysis.keep_alive && ip.src == 10.78.4.10", 5, 200),
                 "keep-alive ACKs": ("tcp.analysis.keep_alive_ack", 10, 400),
                 "SYNs (every session began before the capture)": ("tcp.flags.syn == 1", 0, 0),
                 "data segments": ("tcp.len > 0", 20, 400), "FINs (the chatty session closes)": ("tcp.flags.fin == 1",
                 1, 4)}),
    Spec("p2p_like", "ordinary", "h4",
         "a peer-to-peer client (h4) talking UDP from one port to 70 peers on random high ports and TCP to 12, with "
         "payloads and answers",
         "no scan: one source port exchanging payloads with many peers (most answering, some speaking first) is "
         "no UDP scan, and TCP sessions carrying data to a dozen peers are no SYN scan",
         run_p2p,
         counts={"UDP from h4's one port": (f"udp && ip.src == 10.78.1.24 && udp.srcport == {P2P_PORT}", 80, 200),
                 "UDP from h4's other ports": (f"udp && ip.src == 10.78.1.24 && udp.srcport != {P2P_PORT}", 0, 0),
                 "UDP to h4": ("udp && ip.dst == 10.78.1.24", 60, 200),
                 "ICMP port unreachable to h4": ("icmp.type == 3 && icmp.code == 3", 4, 4),
                 "TCP SYNs from h4": ("tcp.flags == 0x002 && ip.src == 10.78.1.24", 12, 14),
                 "TCP payload segments": ("tcp.len > 0", 22, 200),
                 "TCP resets to h4 (the refusing peer)": ("tcp.flags.reset == 1 && ip.dst == 10.78.1.24", 1, 2)}),
    Spec("netbios", "ordinary", "lan",
         "NetBIOS name service on the LAN: registrations and name queries broadcast (UDP 137 to 10.78.1.255) by "
         "three hosts, positive name query responses from 137",
         "no scan: broadcast name queries (a broadcast address is no scan target) and name query responses "
         "from port 137 are neither UDP scans nor probes",
         run_netbios,
         counts={"name queries to the broadcast address": (("nbns.flags.response == 0 && nbns.flags.opcode == 0 && "
                                                           "ip.dst == 10.78.1.255"), 9, 30),
                 "registrations to the broadcast address": ("nbns.flags.opcode == 5 && ip.dst == 10.78.1.255", 9, 9),
                 "name query responses 137 -> 137": (("nbns.flags.response == 1 && udp.srcport == 137 && "
                                                     "udp.dstport == 137"), 4, 8),
                 "UDP not 137 -> 137": ("udp && !(udp.srcport == 137 && udp.dstport == 137)", 0, 0)}),
    Spec("arp_resolution", "ordinary", "lan",
         "h1 resolving its three neighbours' MACs over 20 s (a ping to each, 7 s apart)",
         "no scan: three ARP resolutions seconds apart (one request each, as a host's traffic needs them) are "
         "no host discovery sweep",
         run_arp,
         counts={"broadcast ARP requests from h1": (("arp.opcode == 1 && eth.dst == ff:ff:ff:ff:ff:ff && "
                                                     "arp.src.proto_ipv4 == 10.78.1.21"), 3, 3),
                 "ARP replies": ("arp.opcode == 2", 3, 8),
                 "unicast ARP requests (cache confirmations)": ("arp.opcode == 1 && eth.dst != ff:ff:ff:ff:ff:ff",
                                                                0, 6),
                 "echo requests": ("icmp.type == 8", 3, 3)}),
    Spec("multicast", "ordinary", "lan",
         "SSDP, mDNS and LLMNR queries to their multicast groups from LAN hosts, with answers",
         "no scan: multicast destinations are no scan targets, and the unicast answers are answers",
         run_multicast,
         counts={"SSDP M-SEARCH": ('http.request.method == "M-SEARCH"', 2, 2),
                 "SSDP NOTIFY": ('http.request.method == "NOTIFY"', 2, 2),
                 "SSDP answers (unicast HTTP 200)": ("ssdp && http.response.code == 200", 2, 4),
                 "mDNS queries": ("mdns && dns.flags.response == 0", 3, 3),
                 "mDNS answers": ("mdns && dns.flags.response == 1", 2, 2),
                 "LLMNR queries": ("llmnr && dns.flags.response == 0", 3, 3),
                 "LLMNR answers": ("llmnr && dns.flags.response == 1", 1, 1),
                 "IGMP reports": ("igmp", 4, 40)}),
]
NAMES = [s.name for s in SPECS]


# ---------------------------------------------------------------------------------------------- truth


# What the generator checks of every capture before it writes the truth (a failed check fails the run).
CHECKED = [
    "each count below falls in its expected range (tshark display filters)",
    "every sender's TTLs plus its routers to the sensor start at a TTL in its initial_ttl",
    "every sender's frames carry the MAC in mac_at_sensor (its own, or its router's)",
    "the tool's verdict of each port is the lab's configuration (lab_state)",
    "nmap runs: every packet nmap traced is in the capture; only ARP frames belong to no stage",
    f"the capture is under {MAX_CAPTURE_BYTES} bytes and tcpdump dropped nothing",
]


def make_one(lab: ForensicLab, spec: Spec, outdir: Path) -> tuple[dict, list[str]]:
    pcap = outdir / f"{spec.name}.pcap"
    got = spec.run(lab, pcap, spec)
    cap = got.pop("cap")
    frames = got.pop("frames", None) or read_frames(pcap)
    problems = got.pop("problems", [])
    initial = got.pop("initial_ttl", {})
    scanner = got.get("scanner")
    counts = {}
    for label, (flt, lo, hi) in spec.counts.items():
        n = tshark_count(pcap, flt)
        counts[label] = {"filter": flt, "count": n, "expected": [lo, hi]}
        if not lo <= n <= hi:
            problems.append(f"{label}: {n} frames match {flt!r}, expected {lo}-{hi}")
    hosts = hosts_table(frames, spec.sensor, initial)
    problems += host_problems(hosts)
    role, iface, what = fl.SENSORS[spec.sensor]
    verified = {"checked": CHECKED, "counts": counts, "flags": flag_table(frames, scanner or ""),
                **got.pop("verified", {})}  # fmt: skip
    truth = {
        "file": pcap.name, "name": spec.name, "kind": spec.kind, "description": spec.description,
        "must_report": spec.must_report, "commands": got.pop("commands"),
        "sensor": {"at": spec.sensor, "namespace_role": role, "interface": iface, "what": what},
        "scanner": scanner, "tool": got.pop("tool", None), "hops": got.pop("hops", None),
        "scans": got.pop("scans", []), "stages": got.pop("stages", []), **got, "hosts": hosts,
        "verified": verified, "packets": len(frames), "bytes": pcap.stat().st_size,
        "tcpdump_dropped": cap.packets_dropped or 0,
    }  # fmt: skip
    if truth["bytes"] > MAX_CAPTURE_BYTES:
        problems.append(f"{pcap.name} is {truth['bytes']} bytes (limit {MAX_CAPTURE_BYTES})")
    if cap.packets_dropped:
        problems.append(f"tcpdump dropped {cap.packets_dropped} packets")
    (outdir / f"{spec.name}.truth.json").write_text(compact_json(truth), encoding="utf-8")
    return truth, [f"{spec.name}: {p}" for p in problems]


README_HEAD = """\
# Forensic test captures

Real packets for scan forensics on traffic nobody here shaped: nmap's stages, an older nmap's
per-probe randomness, tools seen two routers from the scanner, and ordinary traffic that must yield no scan.
Each was made by real kernels and real tools (Debian's nmap 7.93, masscan 1.3.2, zmap 2.1.1, hping3) in network
namespaces, by `tests/support/make_forensic_captures.py` in the lab of `tests/support/forensiclab.py`
(topology and services in its docstring; programs the hosts run in `tests/support/forensic_roles.py`), captured
with `tcpdump -U -s 2048`.

Regenerate (root): `python3 tests/support/make_forensic_captures.py [NAME ...]`. The kernels' and tools' own
choices (ports, sequence numbers, nmap's random TTLs) differ from run to run; what the lab sends is seeded.

Beside each `NAME.pcap`: `NAME.truth.json` (format in the generator's docstring: the port tables with the
tool's own verdict, every stage with its frame numbers as Wireshark counts them, hosts with hops and initial
TTLs, what tshark verified) and the tool's own output where it gives one (`.nmap.xml` from -oX, `.nmap.trace`
from --packet-trace, `.masscan.json`, `.zmap.csv`, `.hping3.txt`, `.old_nmap.json`).
`tests/test_forensic_captures.py` checks the captures against their truth.

Lab addresses: scanner 10.78.1.10 on the LAN 10.78.1.0/24 (gateway r1 10.78.1.1, hosts h1-h4 10.78.1.21-24);
t1 10.78.4.10 one router away; t2 10.78.3.10 two routers away; P2P peers in 10.80.0.0/12 one router away.
Both targets: TCP 22 (SSH banner) and 80 (HTTP) open, 135 dropped, 139 ICMP-rejected, the rest closed;
UDP 53 and 161 open, 137 dropped, 139 rejected, the rest closed.

| file | bytes | sensor (routers from the scanner) | holds | made by | a correct analyzer reports |
| --- | ---: | --- | --- | --- | --- |
"""


def write_readme(outdir: Path) -> None:
    """The README's table from every truth file present, in the order of SPECS."""
    rows = []
    for spec in SPECS:
        path = outdir / f"{spec.name}.truth.json"
        if not path.exists():
            continue
        t = json.loads(path.read_text(encoding="utf-8"))
        how = "; ".join(re.sub(r"forensic_roles\.py (\w+) .*$", r"\1", c) for c in t["commands"]
                        if not c.startswith("("))  # fmt: skip
        how = re.sub(" " + re.escape(" ".join(NMAP_COMMON)) + r" -oX \S+", "", how)
        hops = (t["hops"] or {}).get("scanner_to_sensor")
        sensor = t["sensor"]["what"] + (f" ({hops})" if hops is not None else "")
        cells = [f"`{t['file']}`", str(t["bytes"]), sensor, t["description"], f"`{how}`", t["must_report"]]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    (outdir / "README.md").write_text(README_HEAD + "\n".join(rows) + "\n", encoding="utf-8")


def make_all(outdir: Path, names: list[str], prefix: str) -> tuple[list[dict], list[str]]:
    require(TOOLS, "forensic lab")
    outdir.mkdir(parents=True, exist_ok=True)
    truths, problems = [], []
    ForensicLab.remove_orphans(LAB_STEM)  # labs of runs killed before their teardown
    with forensic_lab(prefix) as lab:
        for spec in [s for s in SPECS if not names or s.name in names]:
            t0 = time.monotonic()
            lab.flush_lan_neighbours()
            truth, p = make_one(lab, spec, outdir)
            truths.append(truth)
            problems += p
            log.info("%s: %d packets, %d bytes, %.1f s", spec.name, truth["packets"], truth["bytes"],
                     time.monotonic() - t0)
    write_readme(outdir)
    return truths, problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"captures to make (default all): {', '.join(NAMES)}")
    ap.add_argument("--out", type=Path, default=OUT, help="directory to write into (default %(default)s)")
    ap.add_argument("--prefix", default=f"{LAB_STEM}{os.getpid()}", help="lab namespace prefix")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.names) - set(NAMES))
    if unknown:
        ap.error(f"unknown capture(s): {', '.join(unknown)}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    _, problems = make_all(args.out.resolve(), args.names, args.prefix)
    for p in problems:
        log.error("%s", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
