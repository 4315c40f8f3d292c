#!/usr/bin/env python3
"""Regenerate the sample captures in sample_pcaps/ from a real NAT lab (tests/support/natlab.py).

Needs root, nmap, hping3, tcpdump and tshark. For each sample NAME it writes NAME.pcap,
NAME.truth.json (what the capture must be found to contain) and, for nmap runs,
NAME.nmap.xml. Then it checks every capture (probes and replies present, forwarded ports
about 2 ms slower than local ones) and exits non-zero if one is off.

    sudo python3 sample_pcaps/make_samples.py [--out DIR] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))

from natlab import NatLab, ProbeReply, lab_available, nat_lab, probe_replies

log = logging.getLogger("make_samples")

LAB_STEM = "slsamples"

REPEATS = 10  # qscan numtrips, hping3 -c, nmap -6 runs
QSCAN_ARGS = f"qscan.numtrips={REPEATS},qscan.delay=50ms"
MAX_SAMPLE_BYTES = 1 << 20


@dataclass(frozen=True)
class Sample:
    name: str
    ipv6: bool
    probed_ports: Callable[[NatLab], list[int]]
    scan: Callable[[NatLab, Path], list[str]]  # runs the tool(s); returns the commands used
    repeated_ports: Callable[[NatLab], list[int]]  # ports the tool probes >= REPEATS times
    captures_itself: bool = False  # the tool writes the pcap (synlens-agent): no tcpdump around it


def all_tcp_ports(lab: NatLab) -> list[int]:
    return [*lab.open_ports, *lab.closed_ports, lab.dropped_port, lab.rejected_port]


def answering_ports(lab: NatLab) -> list[int]:
    return [*lab.open_ports, *lab.closed_ports]


def nmap_ports(lab: NatLab) -> str:
    return ",".join(map(str, all_tcp_ports(lab)))


def scan_qscan(lab: NatLab, out: Path) -> list[str]:
    # qscan first needs nmap's own SYN scan to learn which ports are open/closed; it then
    # probes up to 8 open ports and 1 closed port (its numopen/numclosed defaults).
    cmd = ["nmap", "-Pn", "-n", "-sS", "-p", nmap_ports(lab), "--script", "qscan",
           "--script-args", QSCAN_ARGS, "-oX", str(out.with_suffix(".nmap.xml")), lab.target]  # fmt: skip
    lab.run(lab.scanner_ns, *cmd)
    return [" ".join(cmd)]


def scan_hping3(lab: NatLab, out: Path) -> list[str]:
    # One port at a time: concurrent hping3s count each other's replies and stop early.
    cmds = []
    for port in answering_ports(lab):
        cmd = ["hping3", "-S", "-q", "-p", str(port), "-c", str(REPEATS), "-i", "u20000", lab.target]
        lab.run(lab.scanner_ns, *cmd, check=False)  # hping3 exits 1 when a reply is missing
        cmds.append(" ".join(cmd))
    return cmds


def scan_nmap6(lab: NatLab, out: Path) -> list[str]:
    # qscan.nse is IPv4-only ("is IPv4 compatible only"), and hping3 has no IPv6: repeated
    # nmap -6 SYN scans give each port one RTT sample per run instead.
    cmd = ["nmap", "-6", "-Pn", "-n", "-sS", "-p", nmap_ports(lab), "-oX", str(out.with_suffix(".nmap.xml")),
           lab.target6 or ""]  # fmt: skip
    for _ in range(REPEATS):
        lab.run(lab.scanner_ns, *cmd)
    return [f"{REPEATS} x " + " ".join(cmd) + "   (the xml kept is the last run's)"]


def scan_agent(lab: NatLab, out: Path) -> list[str]:
    # synlens-agent, qscan's method: 10 trips over every port, 50 ms mean gap; it writes its own pcap
    # (kernel timestamps on one socket) and a sidecar OUT.pcap.json with the plan.
    cmd = ["env", f"PYTHONPATH={HERE.parent}", sys.executable, "-m", "agent", "probe", lab.target,
           "--ports", nmap_ports(lab), "--numtrips", str(REPEATS), "--delay", "50ms", "--timeout", "1s",
           "--write", str(out)]
    lab.run(lab.scanner_ns, *cmd)
    return [" ".join(["synlens-agent", *cmd[cmd.index("probe"):]])]


def qscan_ports(lab: NatLab) -> list[int]:
    return [*lab.open_ports, lab.closed_ports[0]]  # numopen 8, numclosed 1: the first closed port


SAMPLES = (
    Sample("nat_qscan", False, all_tcp_ports, scan_qscan, repeated_ports=qscan_ports),
    Sample("nat_hping3", False, answering_ports, scan_hping3, repeated_ports=answering_ports),
    Sample("nat_nmap_ipv6", True, all_tcp_ports, scan_nmap6, repeated_ports=all_tcp_ports),
    Sample("nat_agent", False, all_tcp_ports, scan_agent, repeated_ports=all_tcp_ports, captures_itself=True),
)


def truth(lab: NatLab, sample: Sample, commands: list[str]) -> dict:
    """What an analysis of the capture must find: the lab's design, not a measurement."""
    probed = set(sample.probed_ports(lab))
    answered = set(answering_ports(lab))

    def keep(ports) -> list[int]:
        return sorted(p for p in ports if p in probed)

    return {
        "capture": f"{sample.name}.pcap",
        "made_by": "sample_pcaps/make_samples.py",
        "commands": commands,
        "scanner": lab.scanner_addr6 if sample.ipv6 else lab.scanner_addr,
        "target": lab.target6 if sample.ipv6 else lab.target,
        # Ports grouped by the machine that answers them; closed ports are answered by
        # the gateway's kernel, so they sit with the local ports.
        "families": [keep(f) for f in lab.rtt_families() if keep(f)],
        "local_ports": keep(lab.local_ports),
        "forwarded_ports": keep(lab.forwarded_ports),
        "closed_ports": keep(lab.closed_ports),
        "no_answer": keep(probed - answered),  # no TCP reply: dropped, or ICMP-rejected
        "dropped": keep([lab.dropped_port]),
        "rejected_icmp_admin_prohibited": keep([lab.rejected_port]),
        "ttl": {"local": 64, "forwarded": 63},
        "one_way_delay_ms": lab.delay_ms,
        "rtt_ms": {"local_max": 1.0, "forwarded_min": 2 * lab.delay_ms},
        "notes": [
            "families: ports answered over TCP (SYN-ACK or RST), grouped by the machine answering",
            "no_answer: no TCP reply; dropped ports get nothing at all",
            "rejected ports get ICMP admin-prohibited (v4 3/13, v6 1/1) from the gateway itself",
        ],
    }


def check(replies: list[ProbeReply], facts: dict, repeated: list[int]) -> list[str]:
    """Problems found in a capture; empty when it matches its truth."""
    problems = [
        f"port {port}: {n} probes, expected >= {REPEATS}"
        for port in repeated
        if (n := sum(r.port == port for r in replies)) < REPEATS
    ]
    local = set(facts["local_ports"]) | set(facts["closed_ports"])
    for port in sorted({r.port for r in replies} | set(facts["local_ports"] + facts["forwarded_ports"])):
        mine = [r for r in replies if r.port == port]
        rtts = [r.rtt_ms for r in mine if r.rtt_ms is not None and r.reply in ("SA", "RA")]
        median = statistics.median(rtts) if rtts else None
        shown = f"{median:.3f} ms" if median is not None else "-"
        log.info("  port %5d: %2d probes, %2d TCP replies, median RTT %s", port, len(mine), len(rtts), shown)
        if port in facts["no_answer"]:
            if rtts:
                problems.append(f"port {port} should not answer")
        elif not mine or not rtts:
            problems.append(f"port {port}: {len(mine)} probes, {len(rtts)} replies")
        elif port in local and median >= 1.0:
            problems.append(f"local port {port} median RTT {median:.3f} ms")
        elif port in facts["forwarded_ports"] and not 1.5 <= median <= 5.0:
            problems.append(f"forwarded port {port} median RTT {median:.3f} ms")
    return problems


def make(sample: Sample, out_dir: Path) -> list[str]:
    pcap = out_dir.resolve() / f"{sample.name}.pcap"
    # A per-run name: a second run at the same time gets its own lab instead of sweeping ours.
    with nat_lab(f"{LAB_STEM}{os.getpid()}", ipv6=sample.ipv6) as lab:
        if sample.captures_itself:
            commands = sample.scan(lab, pcap)
        else:
            with lab.capture(pcap):
                commands = sample.scan(lab, pcap)
        commands = [c.replace(f"{out_dir.resolve()}/", "") for c in commands]  # same on every machine
        facts = truth(lab, sample, commands)
    (out_dir / f"{sample.name}.truth.json").write_text(json.dumps(facts, indent=2) + "\n")
    log.info("%s: %d bytes", pcap.name, pcap.stat().st_size)
    problems = check(probe_replies(pcap, facts["target"]), facts, sample.repeated_ports(lab))
    if pcap.stat().st_size > MAX_SAMPLE_BYTES:
        problems.append(f"{pcap.name} is larger than 1 MB")
    return [f"{sample.name}: {p}" for p in problems]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="directory to write into")
    parser.add_argument("--only", nargs="+", choices=[s.name for s in SAMPLES], help="samples to make")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ok, reason = lab_available()
    if not ok:
        log.error("cannot build the lab: %s", reason)
        return 2
    NatLab.remove_orphans(LAB_STEM)
    problems = []
    for sample in SAMPLES:
        if not args.only or sample.name in args.only:
            problems += make(sample, args.out)
    for problem in problems:
        log.error("%s", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
