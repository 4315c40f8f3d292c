"""The sweep benchmark: `synlens scans` of a real zmap sweep of a /16, as a table and as JSON.

A sweep is a scan per target: 65,536 of them here. The JSON must cost about what the table does (each target's
port records are made in one pass, not one pass per target). The capture is made once, in a network namespace
of its own: zmap sweeps port 22 over 10.99.0.0/16 out of one end of a veth pair, whose other end (a second
namespace) holds no address of it, so nothing answers; tcpdump records the probes. Needs root, zmap, tcpdump.

    python benchmarks/sweep.py [--runs 5] [--capture benchmarks/data/sweep16.pcap]

Each run times the table and the JSON once, alternately (the order swapped every run), each as a whole
`python -m analyzer scans …` process with its output to /dev/null; the medians and their ratio are printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_CAPTURE = HERE / "data" / "sweep16.pcap"
NS = f"slsw{os.getpid()}"
SWEEP, PORT = "10.99.0.0/16", 22


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def make_capture(out: Path) -> None:
    """A zmap sweep of SWEEP, captured on the scanner's side of a veth pair (two namespaces of their own)."""
    for tool in ("ip", "zmap", "tcpdump"):
        if shutil.which(tool) is None:
            sys.exit(f"sweep: {tool} is not installed")
    if os.geteuid() != 0:
        sys.exit("sweep: needs root to make the capture (network namespaces)")
    scanner, other = f"{NS}s", f"{NS}o"
    _run(["ip", "netns", "add", scanner])
    _run(["ip", "netns", "add", other])
    try:
        _run(["ip", "link", "add", "sw0", "netns", scanner, "type", "veth", "peer", "name", "sw1", "netns", other])
        _run(["ip", "-n", scanner, "addr", "add", "10.98.0.1/24", "dev", "sw0"])
        _run(["ip", "-n", other, "addr", "add", "10.98.0.2/24", "dev", "sw1"])
        for ns, dev in ((scanner, "sw0"), (other, "sw1")):
            _run(["ip", "-n", ns, "link", "set", dev, "up"])
        mac = _run(["ip", "netns", "exec", other, "cat", "/sys/class/net/sw1/address"]).stdout.strip()
        out.parent.mkdir(parents=True, exist_ok=True)
        dump = subprocess.Popen(["ip", "netns", "exec", scanner, "tcpdump", "-i", "sw0", "-U", "-n", "-s", "128",
                                 "-B", "65536", "-w", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # (tcpdump opens the interface before the first probe)
        _run(["ip", "netns", "exec", scanner, "zmap", "-p", str(PORT), "-i", "sw0", "-G", mac, "-S", "10.98.0.1",
              "-B", "10M", "-c", "1", "-b", "/dev/null", "-o", "/dev/null", SWEEP], timeout=600)
        time.sleep(0.5)
        dump.send_signal(signal.SIGINT)
        dump.communicate(timeout=30)
    finally:
        for ns in (scanner, other):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "analyzer", *args], cwd=ROOT, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--capture", type=Path, default=DEFAULT_CAPTURE)
    args = ap.parse_args(argv)
    if not args.capture.exists():
        make_capture(args.capture)
    table, json_ = [], []
    for i in range(args.runs):
        order = [(table, []), (json_, ["--format", "json"])]
        for times, extra in order if i % 2 == 0 else order[::-1]:
            times.append(timed(["scans", str(args.capture), *extra]))
    t, j = statistics.median(table), statistics.median(json_)
    print(f"{args.capture} ({args.capture.stat().st_size / 1e6:.1f} MB), {args.runs} alternating runs each:")
    print(f"  scans (table): median {t:.2f} s  ({', '.join(f'{x:.2f}' for x in table)})")
    print(f"  scans --format json: median {j:.2f} s  ({', '.join(f'{x:.2f}' for x in json_)})")
    print(f"  JSON / table: {j / t:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
