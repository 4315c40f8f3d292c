#!/usr/bin/env python3
"""Real scan captures for scan forensics, made in a namespace lab (tests/support/scanlab.py), with their truth.

Usage (root; nmap, hping3, masscan, zmap, tcpdump, tshark)::

    python3 tests/support/make_scan_captures.py OUTDIR [--only NAME ...] [--prefix slsc]

or ``make_all(outdir)`` from Python. For every capture NAME it writes ``NAME.pcap`` (tcpdump on the
scanner's side, Ethernet), ``NAME.truth.json`` and, for nmap runs, ``NAME.nmap.xml`` (nmap's own
verdict, ``-oX``). Each nmap run is one capture, so one capture holds one scan technique (``multi``
holds three, in sequence, with ordinary traffic mixed in); ``ordinary_*`` hold no scan at all.

Truth file (JSON)
-----------------
``file``, ``name``, ``description``, ``commands``
    the capture's file name, what it shows, and the commands run (for people).
``scanner``
    the scanning host's address (every capture: 10.77.40.1).
``scans``
    one object per (scanner, target, technique) the capture holds, in time order; ``[]`` for ordinary
    traffic. Keys:

    ``scanner``, ``target``; ``type`` (SYN, CONNECT, FIN, NULL, XMAS, ACK, WINDOW, MAIMON, UDP, CUSTOM,
    IPPROTO, PING); ``nmap_type`` (nmap's ``<scaninfo type>``, "ping" for -sn, null for other tools);
    ``flags`` (TCP flags of the probes as letters from ``FSRPAUEC``, order irrelevant; null when not TCP);
    ``tool`` (nmap, hping3, masscan, zmap); ``started``/``ended`` (epoch seconds around the tool's run: every probe and
    reply of the scan lies inside); ``probe_packets`` (packets the scanner sent the target during the run
    that can be probes: the probe protocol, minus the scanner kernel's RSTs to SYN/ACKs; an upper bound
    for a probe count); ``ports``: every port nmap reported, ``{"port", "protocol" (tcp, udp, ip),
    "state", "reason", "lab_state"}`` where ``state``/``reason`` are nmap's verdict (hping3: the lab's
    known configuration, reason "lab"; masscan and zmap: their own output, a port they do not list being
    filtered, "no-response") and ``lab_state`` what the lab's configuration predicts. ACK
    and WINDOW ports also carry ``states_by_type`` ``{"ACK": …, "WINDOW": …}``: nmap's verdict under
    either reading, since -sA and -sW probes are identical on the wire.
    For ``PING`` scans ``ports`` is ``[]`` and the scan exists for each host found up.
``swept``
    PING captures only: every address the sweep covered (a PING scan to any of them is allowed).
``hosts``
    ``{"address", "mac", "status"}`` of the hosts nmap saw (MAC from the Ethernet header), plus the
    scanner; the same for ordinary captures from the lab's fixed MACs.
``packets``, ``bytes``
    frames in the capture, and its size.
``nat``
    captures of a scanner behind NAT only: ``{"inside", "outside", "inside_capture",
    "inside_tcpdump_dropped"}``, the scanner's own address, the NAT's outside address (the scanner
    the target sees: ``scanner`` and every scan's ``scanner``), and a second capture taken on the
    scanner's own side (its scans name ``inside``). ``NAME.pcap`` is then taken on the target's side.
    ``natgw_*`` captures are taken on the NAT gateway's own bridge instead (``{"inside", "outside",
    "capture": "gateway"}``, no second capture): probes there carry ``outside``, replies ``inside``.
``replies_lost``
    captures of a target that rate-limits its ICMP errors and RSTs only: what it does. Ports the lab
    answers but nmap heard nothing from carry ``"reply_lost": true`` (nmap's "no-response" state).
``lost_first``
    ``[{"protocol", "port"}]`` the target dropped the first packet to (only a retry was answered).
UDP scans' ports also carry ``source_ports``: from how many source ports the scanner sent that port
datagrams (nmap's first try and its retries, each from its own port).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from netns import require
from scanlab import RST_LIMIT, ScanLab, scan_lab

log = logging.getLogger("make_scan_captures")

MAX_CAPTURE_BYTES = 1 << 20
TOOLS = ("nmap", "hping3", "masscan", "zmap", "tcpdump", "tshark")  # every capture's tools
NMAP_COMMON = ["-n", "-T4", "--max-retries", "1", "--reason"]
IP_PROTOCOLS = "1,6,17,47,50,51"
HPING_PORTS = (22, 23, 25, 80, 135, 139, 443)
HORIZONTAL_PORTS = "22,25,80,443,8080"
CUSTOM_FLAGS = "SYNECECWR"
# Many closed ports, so a rate limit swallows replies: the lab's ports plus 60 closed ones.
RATE_UDP_PORTS = "53,137,139,161,162,514,1000-1059"
RATE_TCP_PORTS = "22,23,25,80,135,139,443,1000-1059"
# nmap sends udp/7 (echo) one payload per try (4 bytes: 32-byte IP packets); retried are only those
# unanswered, so the retry's new source port carries one port's probe: a client's look.
RETRY_UDP_PORTS = "7,53,161,162,514"
LOST_FIRST = ("udp", 7, 32)

# nmap scaninfo type -> our upper-case type, and the probe's TCP flags as letters.
TYPES = {
    "syn": ("SYN", "S"), "connect": ("CONNECT", "S"), "fin": ("FIN", "F"), "null": ("NULL", ""),
    "xmas": ("XMAS", "FPU"), "ack": ("ACK", "A"), "window": ("WINDOW", "A"), "maimon": ("MAIMON", "FA"),
    "udp": ("UDP", None), "ipproto": ("IPPROTO", None), "ping": ("PING", None),
}  # fmt: skip
FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "E": 0x40, "C": 0x80}
SCANFLAG_NAMES = {
    "FIN": "F",
    "SYN": "S",
    "RST": "R",
    "PSH": "P",
    "ACK": "A",
    "URG": "U",
    "ECE": "E",
    "CWR": "C",
}

# Ordinary-traffic client, run in the scanner namespace. Modes:
#   web HOST PORT SEQ PAR SIZE   SEQ sequential then PAR parallel downloads (curl, else urllib)
#   dns HOST PORT N              N DNS queries, each from a fresh socket (kernel-chosen source port)
#   many HOST PORT N SIZE        N connections opened at once, then one GET on each
#   mixed HOST HTTPPORT DNSPORT  until SIGTERM: a download or a DNS query every ~0.15-0.4 s
_CLIENT_SRC = r"""
import random, shutil, signal, socket, struct, subprocess, sys, threading, time, urllib.request
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(1234)
CURL = shutil.which("curl")
def url(size): return f"http://{host}:{port}/{size}"
def download(size):
    try:
        if CURL:
            subprocess.run([CURL, "-s", "-o", "/dev/null", "--max-time", "5", url(size)], check=False)
        else:
            urllib.request.urlopen(url(size), timeout=5).read()
    except OSError:
        pass
def parallel(n, size):
    if CURL:
        cmd = [CURL, "-s", "-Z", "--parallel-immediate", "--parallel-max", str(n), "--max-time", "10"]
        for _ in range(n):
            cmd += ["-o", "/dev/null", url(size)]
        subprocess.run(cmd, check=False)
    else:
        ts = [threading.Thread(target=download, args=(size,)) for _ in range(n)]
        [t.start() for t in ts]; [t.join() for t in ts]
def dns_query(dport):
    name = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(4, 10)))
    qname = b"".join(bytes([len(l)]) + l.encode() for l in (name, "example", "org")) + b"\0"
    q = struct.pack("!HHHHHH", rng.getrandbits(16), 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        try:
            s.sendto(q, (host, dport)); s.recv(2048)
        except OSError:
            pass
if mode == "web":
    seq, par, size = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    for _ in range(seq):
        download(size)
    parallel(par, size)
elif mode == "dns":
    for _ in range(int(sys.argv[4])):
        dns_query(port); time.sleep(0.01)
elif mode == "many":
    n, size = int(sys.argv[4]), int(sys.argv[5])
    barrier = threading.Barrier(n)
    def one():
        try:
            s = socket.create_connection((host, port), timeout=10)
        except OSError:
            barrier.abort(); return
        with s:
            try:
                barrier.wait(20)
            except threading.BrokenBarrierError:
                pass
            s.sendall(f"GET /{size} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            while s.recv(65536):
                pass
    ts = [threading.Thread(target=one) for _ in range(n)]
    [t.start() for t in ts]; [t.join() for t in ts]
elif mode == "mixed":
    dport = int(sys.argv[4])
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    print("ready", flush=True)
    i = 0
    while True:
        if i % 3 == 0:
            download(4096)
        else:
            dns_query(dport)
        i += 1
        time.sleep(rng.uniform(0.15, 0.4))
"""


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str  # "nmap", "hping3", "masscan", "zmap", "multi", "ordinary"
    description: str
    run: Callable[[ScanLab, Path], dict]  # runs the tool(s) under capture; returns partial truth
    capture_at: str = "scanner"  # ScanLab.capture's `at`: scanner, target, inside, gateway


# ---------------------------------------------------------------------------------------------- nmap XML


def parse_nmap_xml(path: Path) -> dict:
    """nmap's verdict: scaninfo list and every host with its ports (extraports expanded if listed)."""
    root = ET.parse(path).getroot()
    info = [dict(si.attrib) for si in root.findall("scaninfo")]
    hosts = []
    for h in root.findall("host"):
        addrs = {a.get("addrtype"): a.get("addr") for a in h.findall("address")}
        status = h.find("status")
        ports = []
        for p in h.findall("ports/port"):
            st = p.find("state")
            ports.append({"port": int(p.get("portid")), "protocol": p.get("protocol"),
                          "state": st.get("state"), "reason": st.get("reason")})  # fmt: skip
        for extra in h.findall("ports/extraports"):
            for er in extra.findall("extrareasons"):
                for port in _expand_ports(er.get("ports", "")):
                    ports.append({"port": port, "protocol": er.get("proto") or info[0].get("protocol"),
                                  "state": extra.get("state"), "reason": er.get("reason")})  # fmt: skip
        hosts.append({
            "address": addrs.get("ipv4") or addrs.get("ipv6"), "mac": (addrs.get("mac") or "").lower() or None,
            "status": status.get("state") if status is not None else None,
            "reason": status.get("reason") if status is not None else None,
            "ports": sorted(ports, key=lambda p: (p["protocol"], p["port"])),
        })  # fmt: skip
    return {"scaninfo": info, "hosts": hosts, "args": root.get("args")}


def _expand_ports(text: str) -> list[int]:
    out: list[int] = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return out


def scanflags_letters(text: str) -> str:
    if text.isdigit():
        return "".join(k for k, bit in FLAG_BITS.items() if int(text) & bit)
    letters, rest = "", text.upper()
    for name, letter in SCANFLAG_NAMES.items():
        if name in rest:
            letters += letter
            rest = rest.replace(name, "")
    return "".join(k for k in FLAG_BITS if k in letters)


# ---------------------------------------------------------------------------------------------- runners


def _now() -> float:
    return time.time()


def run_nmap(lab: ScanLab, out: Path, args: list[str], targets: list[str], ns: str | None = None) -> dict:
    xml = out.with_suffix(".nmap.xml")
    cmd = ["nmap", *args, *NMAP_COMMON, "-oX", str(xml), *targets]
    started = _now()
    lab.run(ns or lab.scanner_ns, *cmd, timeout=120)
    ended = _now()
    return {"commands": [" ".join(cmd)], "phases": [{"xml": xml, "started": started, "ended": ended}]}


@contextlib.contextmanager
def as_built(lab: ScanLab, out: Path) -> Iterator[dict]:
    yield {}


@contextlib.contextmanager
def behind_nat(lab: ScanLab, out: Path) -> Iterator[dict]:
    """nmap runs behind the NAT; a second capture on its own side (NAME.inside.pcap)."""
    inside = out.with_name(f"{out.stem}.inside.pcap")
    nat = {"inside": lab.nat_scanner_addr, "outside": lab.scanner_addr, "inside_capture": inside.name}
    with lab.behind_nat() as ns:
        with lab.capture(inside, at="inside") as cap:
            yield {"ns": ns, "truth": {"nat": nat}}
        nat["inside_tcpdump_dropped"] = cap.packets_dropped or 0


@contextlib.contextmanager
def at_nat_gateway(lab: ScanLab, out: Path) -> Iterator[dict]:
    """nmap runs behind the NAT; NAME.pcap (capture_at="gateway") is the gateway's own bridge."""
    nat = {"inside": lab.nat_scanner_addr, "outside": lab.scanner_addr, "capture": "gateway"}
    with lab.behind_nat() as ns:
        yield {"ns": ns, "truth": {"nat": nat}}


@contextlib.contextmanager
def rate_limited(lab: ScanLab, out: Path) -> Iterator[dict]:
    with lab.rate_limited():
        yield {"truth": {"replies_lost": "Linux's default ICMP error rate limits (a short burst, then ~1/s per peer); "
                                         f"TCP RSTs limited to {RST_LIMIT}"}}  # fmt: skip


@contextlib.contextmanager
def first_lost(lab: ScanLab, out: Path) -> Iterator[dict]:
    protocol, port, ip_bytes = LOST_FIRST
    with lab.lose_first(protocol, port, ip_bytes):
        yield {"truth": {"lost_first": [{"protocol": protocol, "port": port}]}}


def nmap_spec(
    name: str, args: list[str], description: str, targets: str = "target", *, ports: str | None = None,
    setting: Callable[[ScanLab, Path], contextlib.AbstractContextManager[dict]] = as_built,
    capture_at: str = "scanner",
) -> Spec:
    """nmap `args` against `targets`; `setting` arranges the lab around the run (and may name the
    namespace nmap runs in, and add to the truth)."""

    def run(lab: ScanLab, out: Path) -> dict:
        tg = {"target": [lab.target], "both": [lab.target, lab.target2], "subnet": [lab.subnet]}[targets]
        ports_args = []
        if ports is not None:
            ports_args = ["-p", ports]
        elif "-sU" in args:
            ports_args = ["-p", ",".join(map(str, lab.udp_ports))]
        elif "-sO" in args:
            ports_args = ["-p", IP_PROTOCOLS]
        elif targets == "both":
            ports_args = ["-p", HORIZONTAL_PORTS]
        elif "-sn" not in args:
            ports_args = ["-p", ",".join(map(str, lab.tcp_ports))]
        pn = [] if "-sn" in args else ["-Pn"]
        with setting(lab, out) as where:
            got = run_nmap(lab, out, [*args, *pn, *ports_args], tg, ns=where.get("ns"))
        return got | where.get("truth", {})

    return Spec(name, "nmap", description, run, capture_at)


def run_hping3(lab: ScanLab, out: Path) -> dict:
    cmds, started = [], _now()
    for port in HPING_PORTS:  # one port at a time: concurrent hping3s see each other's replies
        cmd = ["hping3", "-S", "-q", "-p", str(port), "-c", "2", "-i", "u50000", lab.target]
        lab.run(lab.scanner_ns, *cmd, check=False, timeout=30)  # exits 1 when replies are missing
        cmds.append(" ".join(cmd))
    ended = _now()
    ports = [{"port": p, "protocol": "tcp", "state": lab.expected_state("syn", p), "reason": "lab",
              "lab_state": lab.expected_state("syn", p)} for p in sorted(HPING_PORTS)]  # fmt: skip
    scan = {"scanner": lab.scanner_addr, "target": lab.target, "type": "SYN", "nmap_type": None, "flags": "S",
            "tool": "hping3", "started": started, "ended": ended, "ports": ports}  # fmt: skip
    return {"commands": cmds, "scans": [scan], "hosts": _lab_hosts(lab, [lab.target])}


# masscan 1.3.2 (Debian 12) does not end by itself in the lab: after its --wait its receive thread blocks
# until a packet arrives, counting "waiting -N-secs" for ever (robertdavidgraham/masscan#144), and SIGINT does
# not reach it then. A frame of the local experimental EtherType (0x88b5, IEEE 802) from the second host wakes
# it; no IP stack and no analyzer stage reads such a frame.
_WAKE_SRC = (
    "import socket, sys; s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind((sys.argv[1], 0)); "
    "s.send(b'\\xff' * 6 + bytes.fromhex(sys.argv[2].replace(':', '')) + b'\\x88\\xb5' + bytes(46))"
)
MASSCAN_RATE = 100  # packets/s: the lab's 7 ports in 0.07 s
TOOL_TIMEOUT_S = 30.0


def _tool_ports(lab: ScanLab, target: str, ports: list[int], verdict: dict[int, tuple[str, str]], tool: str,
                like: str | None = None) -> tuple[list[dict], list[str]]:
    """Truth ports of a SYN scan from a tool's own verdict ({port: (state, reason)}; a port it does not list
    got no reply: filtered, as nmap reads silence), and where the verdict differs from the lab's config
    (`like`: the lab host the target answers as)."""
    ports_out, warnings = [], []
    host = like or target
    for port in sorted(ports):
        state, reason = verdict.get(port, ("filtered", "no-response"))
        expected = lab.expected_state("syn", port, host) if host in (lab.target, lab.target2) else "filtered"
        if state != expected:
            warnings.append(f"{target} tcp/{port}: {tool} {state} ({reason}), lab config says {expected}")
        ports_out.append({"port": port, "protocol": "tcp", "state": state, "reason": f"{tool}: {reason}",
                          "lab_state": expected})  # fmt: skip
    return ports_out, warnings


def run_masscan(lab: ScanLab, out: Path) -> dict:
    """masscan's SYN scan of the target's TCP ports; its verdict from -oJ (open, and closed with --show closed)."""
    result = out.with_suffix(".masscan.json")
    cmd = ["masscan", lab.target, "-p" + ",".join(map(str, lab.tcp_ports)), "--rate", str(MASSCAN_RATE),
           "--wait", "1", "-e", lab.scanner_iface, "--router-mac", lab.target_mac, "--show", "closed",
           "-oJ", str(result)]  # fmt: skip
    started = _now()
    proc = subprocess.Popen(["ip", "netns", "exec", lab.scanner_ns, *cmd], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + TOOL_TIMEOUT_S
    try:
        time.sleep(2.0)  # its probes, then its one-second wait for replies
        while proc.poll() is None and time.monotonic() < deadline:
            lab.run(lab.target2_ns, sys.executable, "-c", _WAKE_SRC, "eth0", lab.target2_mac, timeout=10)
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(5)
            raise RuntimeError(f"masscan did not end within {TOOL_TIMEOUT_S:.0f} s")
    ended = _now()
    text = result.read_text(encoding="utf-8").strip()
    verdict = {p["port"]: (p["status"], p["reason"])
               for entry in (json.loads(text) if text else []) if entry["ip"] == lab.target
               for p in entry["ports"]}  # fmt: skip
    ports, warnings = _tool_ports(lab, lab.target, list(lab.tcp_ports), verdict, "masscan")
    scan = {"scanner": lab.scanner_addr, "target": lab.target, "type": "SYN", "nmap_type": None, "flags": "S",
            "tool": "masscan", "started": started, "ended": ended, "ports": ports}  # fmt: skip
    wake = "a 0x88b5 frame from the second host every 0.5 s until masscan ends (see _WAKE_SRC)"
    return {"commands": [" ".join(cmd), wake], "scans": [scan], "hosts": _lab_hosts(lab, [lab.target]),
            "warnings": warnings}


ZMAP_PORT = 22
ZMAP_SWEEP = "10.77.48.0/20"  # outside the lab's networks (10.77.40.0/29, 10.77.41.0/24): nothing answers there
ZMAP_ANSWERING = "10.77.64.0/22"  # outside them too; the target is given it for the sweep where every address answers


def run_zmap(lab: ScanLab, out: Path, sweep: str | None = None, answering: bool = False) -> dict:
    """zmap's sweep of one port over the /29 but the scanner and the second host: the target and five
    addresses no host holds (the network's and broadcast address among them, as zmap sweeps them too;
    a sweep of fewer than five hosts is no scan to `synlens scans`). zmap sends every frame to one gateway
    MAC, the target's here: the second host would never see its probe. Its verdict from its CSV (synack:
    open, rst: closed; an address it does not list got no reply). With `sweep` (a network outside the
    lab's), the target and every address of that network instead; `answering`: the target holds that whole
    network too (a local route), so every address answers as the target does."""
    if not answering:
        return _zmap(lab, out, sweep, None)
    lab.run(lab.target_ns, "ip", "route", "add", "local", sweep, "dev", "lo")
    try:
        return _zmap(lab, out, sweep, lab.target)
    finally:
        lab.run(lab.target_ns, "ip", "route", "del", "local", sweep, "dev", "lo")


def _zmap(lab: ScanLab, out: Path, sweep: str | None, like: str | None) -> dict:
    result = out.with_suffix(".zmap.csv")
    if sweep is None:
        net = ipaddress.ip_network(lab.subnet)
        targets = [str(a) for a in net if str(a) not in (lab.scanner_addr, lab.target2)]
        listed = targets
    else:
        targets = [lab.target, *map(str, ipaddress.ip_network(sweep))]
        listed = [lab.target, sweep]
    cmd = ["zmap", "-p", str(ZMAP_PORT), "-i", lab.scanner_iface, "-G", lab.target_mac, "-b", "/dev/null",
           "-B", "1M" if sweep is None else "5M", "-c", "1", "--output-module", "csv", "-f", "saddr,sport,classification",
           "--output-filter", "repeat = 0", "-o", str(result), *listed]  # fmt: skip
    started = _now()
    lab.run(lab.scanner_ns, *cmd, timeout=TOOL_TIMEOUT_S)
    ended = _now()
    lines = result.read_text(encoding="utf-8").splitlines()[1:]  # (a header line first)
    found = {saddr: kind for saddr, _sport, kind in (line.split(",") for line in lines if line)}
    states = {"synack": "open", "rst": "closed"}
    scans, warnings = [], []
    for target in targets:
        verdict = {ZMAP_PORT: (states[found[target]], found[target])} if target in found else {}
        ports, w = _tool_ports(lab, target, [ZMAP_PORT], verdict, "zmap", like=like)
        warnings += w
        scans.append({"scanner": lab.scanner_addr, "target": target, "type": "SYN", "nmap_type": None,
                      "flags": "S", "tool": "zmap", "started": started, "ended": ended, "ports": ports})
    return {"commands": [" ".join(cmd)], "scans": scans, "hosts": _lab_hosts(lab, [lab.target]),
            "warnings": warnings}


@contextlib.contextmanager
def background_client(lab: ScanLab, *args: str):
    proc = lab.spawn(lab.scanner_ns, sys.executable, "-c", _CLIENT_SRC, *args, ready="ready")
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def run_multi(lab: ScanLab, out: Path) -> dict:
    """-sS, then -sU, then -sF of the target while a client downloads and sends DNS queries throughout."""
    phases, cmds = [], []
    with background_client(lab, "mixed", lab.target, str(lab.http_port), str(lab.udp_open[0])):
        time.sleep(1.0)
        for i, (args, ports) in enumerate((
            (["-sS"], lab.tcp_ports), (["-sU"], lab.udp_ports), (["-sF"], lab.tcp_ports),
        )):  # fmt: skip
            xml = out.with_name(f"{out.stem}.phase{i + 1}.nmap.xml")
            cmd = [
                "nmap",
                *args,
                "-Pn",
                "-p",
                ",".join(map(str, ports)),
                *NMAP_COMMON,
                "-oX",
                str(xml),
                lab.target,
            ]
            started = _now()
            lab.run(lab.scanner_ns, *cmd, timeout=120)
            phases.append({"xml": xml, "started": started, "ended": _now()})
            cmds.append(" ".join(cmd))
            time.sleep(1.0)
    # One XML for people: the three runs' files concatenated would not parse, so keep them apart.
    return {"commands": cmds, "phases": phases}


def run_ordinary(kind: str) -> Callable[[ScanLab, Path], dict]:
    def run(lab: ScanLab, out: Path) -> dict:
        args = {
            "web": ["web", lab.target, str(lab.http_port), "20", "20", "8192"],
            "dns": ["dns", lab.target, str(lab.udp_open[0]), "60"],
            "many": ["many", lab.target, str(lab.http_port), "200", "256"],
        }[kind]
        cmd = [sys.executable, "-c", "<client>", *args]
        lab.run(lab.scanner_ns, sys.executable, "-c", _CLIENT_SRC, *args, timeout=120)
        return {"commands": [" ".join(cmd)], "scans": [], "hosts": _lab_hosts(lab, [lab.target])}

    return run


def _lab_hosts(lab: ScanLab, targets: list[str]) -> list[dict]:
    macs = {lab.scanner_addr: lab.scanner_mac, lab.target: lab.target_mac, lab.target2: lab.target2_mac}
    return [{"address": a, "mac": macs[a], "status": "up"} for a in [lab.scanner_addr, *targets]]


SPECS: list[Spec] = [
    nmap_spec("syn", ["-sS"], "nmap SYN scan of every lab TCP port"),
    nmap_spec("connect", ["-sT"], "nmap connect scan (the scanner's kernel does the handshakes)"),
    nmap_spec("fin", ["-sF"], "nmap FIN scan"),
    nmap_spec("null", ["-sN"], "nmap NULL scan (no flags)"),
    nmap_spec("xmas", ["-sX"], "nmap Xmas scan (FIN PSH URG)"),
    nmap_spec("ack", ["-sA"], "nmap ACK scan: RST = unfiltered"),
    nmap_spec("window", ["-sW"], "nmap window scan: Linux RSTs carry window 0, so closed"),
    nmap_spec("maimon", ["-sM"], "nmap Maimon scan (FIN/ACK): Linux answers RST, so closed"),
    nmap_spec("udp", ["-sU"], "nmap UDP scan of the lab's UDP ports"),
    nmap_spec("custom", ["--scanflags", CUSTOM_FLAGS], "nmap --scanflags SYN+ECE+CWR, read as a SYN scan"),
    nmap_spec("ipproto", ["-sO"], f"nmap IP protocol scan of protocols {IP_PROTOCOLS}"),
    nmap_spec(
        "ping",
        ["-sn", "--disable-arp-ping"],
        "nmap host discovery of the /29 with IP probes "
        "(ICMP echo, SYN 443, ACK 80, ICMP timestamp); unused addresses only get ARP",
        "subnet",
    ),
    nmap_spec(
        "ping_arp", ["-sn"], "nmap host discovery of the /29 by ARP (nmap's default on a LAN)", "subnet"
    ),
    nmap_spec("horizontal", ["-sS"], f"nmap SYN scan of ports {HORIZONTAL_PORTS} on both lab hosts", "both"),
    nmap_spec("nat_syn", ["-sS"], "nmap SYN scan from behind a NAT (masquerade), captured on the target's side",
              setting=behind_nat, capture_at="target"),
    nmap_spec("nat_udp", ["-sU"], "nmap UDP scan from behind a NAT, captured on the target's side",
              setting=behind_nat, capture_at="target"),
    nmap_spec("nat_connect", ["-sT"], "nmap connect scan from behind a NAT, captured on the target's side",
              setting=behind_nat, capture_at="target"),
    nmap_spec("natgw_syn", ["-sS"], "nmap SYN scan from behind a NAT, captured on the NAT gateway's bridge "
              "(probes translated, replies already translated back)", setting=at_nat_gateway, capture_at="gateway"),
    nmap_spec("natgw_udp", ["-sU"], "nmap UDP scan from behind a NAT, captured on the NAT gateway's bridge",
              setting=at_nat_gateway, capture_at="gateway"),
    nmap_spec("natgw_connect", ["-sT"], "nmap connect scan from behind a NAT, captured on the NAT gateway's "
              "bridge", setting=at_nat_gateway, capture_at="gateway"),
    nmap_spec("ratelimit_udp", ["-sU", "--max-scan-delay", "10ms"],
              "nmap UDP scan of 66 ports; the target keeps Linux's default ICMP rate limit",
              ports=RATE_UDP_PORTS, setting=rate_limited),
    nmap_spec("ratelimit_syn", ["-sS"], "nmap SYN scan of 67 ports; the target lets out 5 RSTs a second",
              ports=RATE_TCP_PORTS, setting=rate_limited),
    nmap_spec("udp_retry", ["-sU"], "nmap UDP scan; the target drops the first datagram to udp/7, so only "
              "nmap's retry (its echo payload, from a new source port) is answered",
              ports=RETRY_UDP_PORTS, setting=first_lost),
    Spec("hping3", "hping3", f"hping3 -S, 2 probes to each of ports {HPING_PORTS}", run_hping3),
    Spec("masscan", "masscan", "masscan SYN scan of every lab TCP port (its own stack resets each reply too)",
         run_masscan),
    Spec("zmap", "zmap", f"zmap sweep of port {ZMAP_PORT} over the target and the /29's 5 unused addresses",
         run_zmap),
    Spec("zmap_sweep", "zmap", f"zmap sweep of port {ZMAP_PORT} over the target and the {ZMAP_SWEEP} no host holds "
         "(4,097 targets, one answer)", lambda lab, out: run_zmap(lab, out, ZMAP_SWEEP)),
    Spec("zmap_answering", "zmap", f"zmap sweep of port {ZMAP_PORT} over the target and {ZMAP_ANSWERING}, which "
         "the target holds too (a local route): 1,025 targets, every one answering",
         lambda lab, out: run_zmap(lab, out, ZMAP_ANSWERING, answering=True)),
    Spec(
        "multi",
        "multi",
        "nmap -sS, -sU, -sF of the target in turn, with downloads and DNS queries "
        "from the same host to the same target throughout",
        run_multi,
    ),
    Spec(
        "ordinary_web",
        "ordinary",
        "20 sequential + 20 parallel HTTP downloads (8 KiB) from one server port",
        run_ordinary("web"),
    ),
    Spec(
        "ordinary_dns",
        "ordinary",
        "60 DNS-style UDP queries and answers, each from a fresh source port",
        run_ordinary("dns"),
    ),
    Spec(
        "ordinary_many",
        "ordinary",
        "200 TCP connections to one server port opened at once, one GET each",
        run_ordinary("many"),
    ),
]
NAMES = [s.name for s in SPECS]
KINDS = {s.name: s.kind for s in SPECS}


# ---------------------------------------------------------------------------------------------- truth


def _tshark_rows(pcap: Path, fields: list[str]) -> list[list[str]]:
    cmd = ["tshark", "-n", "-r", str(pcap), "-T", "fields", "-E", "separator=\t", "-E", "occurrence=f"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    return [line.split("\t") for line in out.splitlines()]


_FIELDS = ["frame.time_epoch", "eth.src", "eth.dst", "arp.opcode", "arp.dst.proto_ipv4", "ip.src", "ip.dst",
           "ip.proto", "tcp.flags", "udp.dstport", "icmp.type", "udp.srcport"]  # fmt: skip


def _probe_packets(rows: list[list[str]], scan: dict) -> int:
    """Packets the scanner sent the target within the run that could be probes (an upper bound)."""
    n = 0
    for t, _es, _ed, arp_op, arp_dst, src, dst, proto, flags, _udp, _icmp, _usport in rows:
        if not scan["started"] - 0.01 <= float(t) <= scan["ended"] + 0.5:
            continue
        if scan["type"] == "PING" and arp_op == "1" and arp_dst == scan["target"]:
            n += 1
            continue
        if src != scan["scanner"] or dst != scan["target"]:
            continue
        if scan["type"] in ("PING", "IPPROTO"):
            n += not (proto == "6" and int(flags, 16) == FLAG_BITS["R"])
        elif scan["type"] == "UDP":
            n += proto == "17"
        elif proto == "6":
            f = int(flags, 16)
            if scan["type"] == "CONNECT":
                n += f == FLAG_BITS["S"]
            elif f != FLAG_BITS["R"]:  # the scanner kernel's RST to a SYN/ACK is no probe
                n += 1
    return n


def _udp_source_ports(rows: list[list[str]], scan: dict) -> dict[int, int]:
    """{port: distinct source ports} of the UDP datagrams the scanner sent the target during the run."""
    sources: dict[int, set[str]] = {}
    for t, _es, _ed, _op, _ad, src, dst, proto, _f, dport, _icmp, sport in rows:
        if proto == "17" and src == scan["scanner"] and dst == scan["target"] and dport and (
            scan["started"] - 0.01 <= float(t) <= scan["ended"] + 0.5
        ):
            sources.setdefault(int(dport), set()).add(sport)
    return {port: len(s) for port, s in sources.items()}


def _scans_from_phase(
    lab: ScanLab, phase: dict, tool: str = "nmap", *, replies_lost: bool = False
) -> tuple[list[dict], list[dict], list[str]]:
    """Truth scans, hosts and nmap-vs-lab warnings from one nmap run. The scanner is the lab's
    scanner address, which is also the NAT's outside address. `replies_lost`: the target rate-limits,
    so nmap's no-response verdict on a port the lab answers is expected (marked, not a warning)."""
    verdict = parse_nmap_xml(phase["xml"])
    info = verdict["scaninfo"]
    if not info:
        nmap_type, flags, typ = "ping", None, "PING"
    else:
        (si,) = info  # one technique per nmap run here
        nmap_type = si["type"]
        typ, flags = TYPES[nmap_type]
        if si.get("scanflags"):
            typ, flags = "CUSTOM", scanflags_letters(si["scanflags"])
    lab_kind = "custom_syn" if typ == "CUSTOM" else nmap_type
    scans, hosts, warnings = [], [], []
    lab_macs = {lab.scanner_addr: lab.scanner_mac, lab.target: lab.target_mac, lab.target2: lab.target2_mac}
    for h in verdict["hosts"]:
        # nmap leaves out its own host's MAC; the lab knows it.
        hosts.append(
            {"address": h["address"], "mac": h["mac"] or lab_macs.get(h["address"]), "status": h["status"]}
        )
        if h["address"] == lab.scanner_addr or h["status"] != "up":
            continue
        ports = []
        for p in h["ports"]:
            expected = lab.expected_state(lab_kind, p["port"], h["address"]) if typ != "PING" else None
            lost = replies_lost and p["reason"] == "no-response" and expected != p["state"]
            if expected != p["state"] and not lost:
                warnings.append(f"{h['address']} {p['protocol']}/{p['port']}: nmap {p['state']} ({p['reason']}),"
                                f" lab config says {expected}")  # fmt: skip
            port = {**p, "lab_state": expected} | ({"reply_lost": True} if lost else {})
            if typ in ("ACK", "WINDOW"):
                # -sA and -sW send the same probes: a capture cannot tell them apart. What nmap
                # would have said under either reading of these replies (the lab's rules, which
                # nmap_vs_lab checks against nmap's real verdict for the scan that was run).
                port["states_by_type"] = {
                    t: lab.expected_state(t.lower(), p["port"], h["address"]) for t in ("ACK", "WINDOW")
                }
            ports.append(port)
        scans.append({
            "scanner": lab.scanner_addr, "target": h["address"], "type": typ, "nmap_type": nmap_type,
            "flags": flags, "tool": tool, "started": phase["started"], "ended": phase["ended"], "ports": ports,
        })  # fmt: skip
    return scans, hosts, warnings


def make_one(lab: ScanLab, spec: Spec, outdir: Path) -> dict:
    pcap = outdir / f"{spec.name}.pcap"
    with lab.capture(pcap, at=spec.capture_at) as cap:
        got = spec.run(lab, pcap)
    scans, hosts, warnings = list(got.get("scans", [])), list(got.get("hosts", [])), list(got.get("warnings", []))
    for phase in got.get("phases", []):
        s, h, w = _scans_from_phase(lab, phase, replies_lost="replies_lost" in got)
        scans += s
        warnings += w
        for host in h:
            if host["address"] not in {x["address"] for x in hosts}:
                hosts.append(host)
    if got.get("phases") and lab.scanner_addr not in {x["address"] for x in hosts}:
        hosts.insert(0, {"address": lab.scanner_addr, "mac": lab.scanner_mac, "status": "up"})
    rows = _tshark_rows(pcap, _FIELDS)
    for scan in scans:
        scan["probe_packets"] = _probe_packets(rows, scan)
        if scan["type"] == "UDP":
            sources = _udp_source_ports(rows, scan)
            for port in scan["ports"]:
                port["source_ports"] = sources.get(port["port"], 0)
    truth = {
        "file": pcap.name, "name": spec.name, "kind": spec.kind, "description": spec.description,
        "commands": got["commands"], "scanner": lab.scanner_addr, "scans": scans, "hosts": hosts,
        "packets": len(rows), "bytes": pcap.stat().st_size, "tcpdump_dropped": cap.packets_dropped or 0,
        "nmap_vs_lab": warnings,
    }  # fmt: skip
    truth |= {k: got[k] for k in ("nat", "replies_lost", "lost_first") if k in got}
    if any(s["type"] == "PING" for s in scans) or spec.name.startswith("ping"):
        net = ipaddress.ip_network(lab.subnet)
        truth["swept"] = [str(a) for a in net if str(a) != lab.scanner_addr]
    (outdir / f"{spec.name}.truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    if truth["bytes"] > MAX_CAPTURE_BYTES:
        log.warning("%s is %d bytes (limit %d)", pcap.name, truth["bytes"], MAX_CAPTURE_BYTES)
    for w in warnings:
        log.warning("%s: %s", spec.name, w)
    return truth


def make_all(
    outdir: str | os.PathLike, *, only: list[str] | None = None, prefix: str | None = None
) -> list[dict]:
    """Build the lab, make every capture (or those named in `only`) into `outdir`; return the truths."""
    require(TOOLS, "scan lab")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    specs = [s for s in SPECS if not only or s.name in only]
    truths = []
    with scan_lab(prefix or f"slsc{os.getpid()}") as lab:
        for spec in specs:
            t0 = time.monotonic()
            truths.append(make_one(lab, spec, outdir))
            log.info("%s done in %.1f s", spec.name, time.monotonic() - t0)
    return truths


def summary(truths: list[dict]) -> str:
    lines = [f"{'capture':<16} {'pkts':>5} {'bytes':>7}  scans (type target: port=state ...)"]
    for t in truths:
        scans = "; ".join(
            f"{s['type']} {s['target']}" + (": " + " ".join(
                f"{p['port']}={p['state']}" for p in s["ports"]) if s["ports"] else "")
            for s in t["scans"]
        ) or "none"  # fmt: skip
        lines.append(f"{t['name']:<16} {t['packets']:>5} {t['bytes']:>7}  {scans}")
        lines += [f"{'':<31}! {w}" for w in t["nmap_vs_lab"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--only", nargs="+", choices=NAMES)
    ap.add_argument("--prefix", help="lab namespace prefix (default slsc<pid>)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    started = time.monotonic()
    truths = make_all(args.outdir, only=args.only, prefix=args.prefix)
    print(summary(truths))
    print(f"{len(truths)} captures in {time.monotonic() - started:.0f} s -> {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
