"""synlens (agent + analyzer) against nmap's qscan.nse on the NAT lab: right families how often, how fast.

Both probe the same ports of the lab's gateway — local (22, 80), closed (23) and DNAT-forwarded
(443, 3306, 8080) — with 10 trips at a 50 ms mean delay, N times each, alternating. A run is right when
its families are exactly {local + closed} and {forwarded}. For synlens the analyzer reads the agent's
pcap twice: with its default method (robust) and with qscan's own statistics (`--method qscan`), which
separates what the timestamps buy from what the statistics buy. Times are wall-clock per run: the agent
plus the analyzer for synlens, the whole nmap invocation (its SYN scan included) for qscan.

    sudo python benchmarks/agent_vs_qscan.py -n 10 [--delay-ms 1.0] [--json results.json]

Needs root and nmap; builds its own lab (prefix "slagbench") and removes it afterwards.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))

from natlab import NatLab, lab_available, nat_lab

TRIPS = 10
DELAY = "50ms"
QSCAN_ROW = re.compile(r"^\|_?\s*(\d+)\s+(\d+)\s+[\d.]+\s+[\d.]+\s+[\d.]+%")

Partition = frozenset[frozenset[int]]


def partition(families: dict[int, int]) -> Partition:
    groups: dict[int, set[int]] = {}
    for port, family in families.items():
        groups.setdefault(family, set()).add(port)
    return frozenset(frozenset(g) for g in groups.values())


def run_synlens(
    lab: NatLab, ports: list[int], workdir: Path, run: int
) -> tuple[float, float, dict[str, dict]]:
    """(agent s, agent + analyzer s, {method: {port: family}})."""
    pcap = workdir / f"synlens{run}.pcap"
    start = time.perf_counter()
    lab.run(
        lab.scanner_ns,
        "env",
        f"PYTHONPATH={REPO}",
        sys.executable,
        "-m",
        "agent",
        "probe",
        lab.target,
        "--ports",
        ",".join(map(str, ports)),
        "--numtrips",
        str(TRIPS),
        "--delay",
        DELAY,
        "--timeout",
        "0.5s",
        "--write",
        str(pcap),
    )
    agent_s = time.perf_counter() - start
    results = {}
    for method in ("robust", "qscan"):
        out = lab.run(
            lab.scanner_ns,
            "env",
            f"PYTHONPATH={REPO}",
            sys.executable,
            "-m",
            "analyzer",
            "rtt",
            str(pcap),
            "--format",
            "json",
            "--method",
            method,
        )
        if method == "robust":
            elapsed = time.perf_counter() - start
        (target,) = json.loads(out.stdout)["targets"]
        results[method] = {p["port"]: p["family"] for p in target["ports"]}
    return agent_s, elapsed, results


def run_qscan(lab: NatLab, ports: list[int]) -> tuple[float, dict[int, int]]:
    start = time.perf_counter()
    out = lab.run(
        lab.scanner_ns,
        "nmap",
        "-Pn",
        "-n",
        "-p",
        ",".join(map(str, ports)),
        "--script",
        "qscan",
        "--script-args",
        f"qscan.numtrips={TRIPS},qscan.delay={DELAY}",
        lab.target,
    )
    elapsed = time.perf_counter() - start
    families = {int(m[1]): int(m[2]) for line in out.stdout.splitlines() if (m := QSCAN_ROW.match(line))}
    return elapsed, families


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=10, help="runs per tool (default 10)")
    parser.add_argument("--delay-ms", type=float, default=1.0, help="lab one-way delay to the inner host")
    parser.add_argument("--json", type=Path, help="also write every run's result here")
    args = parser.parse_args()
    ok, why = lab_available()
    if not ok:
        print(f"agent_vs_qscan: lab unavailable: {why}", file=sys.stderr)
        return 2
    runs: dict[str, list[dict]] = {"synlens (robust)": [], "synlens (qscan stats)": [], "nmap qscan.nse": []}
    with nat_lab("slagbench", delay_ms=args.delay_ms) as lab, tempfile.TemporaryDirectory() as tmp:
        gateway = sorted(lab.local_ports + lab.closed_ports[:1])
        ports = sorted(gateway + list(lab.forwarded_ports))
        truth = frozenset({frozenset(gateway), frozenset(lab.forwarded_ports)})
        for i in range(args.n):
            order = ("synlens", "qscan") if i % 2 == 0 else ("qscan", "synlens")
            for tool in order:
                if tool == "synlens":
                    agent_s, elapsed, results = run_synlens(lab, ports, Path(tmp), i)
                    for method, name in (("robust", "synlens (robust)"), ("qscan", "synlens (qscan stats)")):
                        fam = results[method]
                        runs[name].append(
                            {
                                "s": elapsed,
                                "agent_s": agent_s,
                                "families": fam,
                                "right": partition(fam) == truth,
                            }
                        )
                else:
                    elapsed, fam = run_qscan(lab, ports)
                    right = set(fam) == set(ports) and partition(fam) == truth
                    runs["nmap qscan.nse"].append(
                        {"s": elapsed, "agent_s": elapsed, "families": fam, "right": right}
                    )
            print(
                f"run {i + 1}/{args.n}: "
                + ", ".join(
                    f"{name} {'right' if r[-1]['right'] else 'WRONG ' + str(r[-1]['families'])}"
                    for name, r in runs.items()
                ),
                file=sys.stderr,
            )
    print(
        f"lab: one-way delay {args.delay_ms} ms to the inner host; ports {ports}; "
        f"{TRIPS} trips, delay {DELAY}"
    )
    print(f"{'tool':<24}{'right families':>16}{'mean s/run':>12}{'median s':>10}{'probing s':>11}")
    for name, r in runs.items():
        times = [x["s"] for x in r]
        right = sum(x["right"] for x in r)
        print(
            f"{name:<24}{f'{right}/{len(r)}':>16}"
            f"{statistics.mean(times):>12.2f}{statistics.median(times):>10.2f}"
            f"{statistics.mean(x['agent_s'] for x in r):>11.2f}"
        )
    print(
        "(synlens: s/run = agent + analyzer, probing s = agent alone, incl. its 0.5 s late-reply wait;\n"
        " both synlens rows share one capture per run. qscan: the whole nmap run, its SYN scan included.)"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"delay_ms": args.delay_ms, "ports": ports, "runs": runs}, indent=1, default=str)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
