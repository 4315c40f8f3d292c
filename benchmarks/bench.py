"""Speed benchmark: synlens against tshark and a dpkt loop on one capture, as whole processes.

Each tool runs once, as its own process, in turn (never two at once), with its output sent to
/dev/null. Measured: wall time of the whole process (interpreter start, imports, reading, output), its
CPU time (user + system: steadier than wall time on a busy machine) and its peak resident memory, from
GNU time (`/usr/bin/time -v`) when installed, else from `getrusage(RUSAGE_CHILDREN)` in a wrapper process.
MB are 10^6 bytes, the file's size in the same unit, so "peak RSS / file" reads straight off the table.

    python benchmarks/bench.py [CAPTURE] [--sweep [PATH]] [--quick N] [--only NAME ...] [--save-rtt PATH]
                               [--repeat N] [--rounds R]

CAPTURE defaults to benchmarks/data/big.pcap (make it with benchmarks/make_big_capture.py).
--sweep adds `synlens scans` of a sweep capture, as a table and as JSON (PATH defaults to
benchmarks/data/sweep16.pcap, made by benchmarks/sweep.py: a zmap sweep of a /16), interleaved with the others.
--quick N benchmarks the first N packets only (copied to a temporary file): a fast sanity run.
--repeat N runs each synlens command N times and keeps the run of median wall time (this machine's wall
times vary by a third from run to run; tshark and dpkt run once: their runs take tens of seconds).
--rounds R runs the whole list R times, interleaved (each tool once a round, in turn): a tool's figure is then
the run of median wall time over all its runs, and each round's speed-ups against tshark are shown, taken within
the round, so that a drift of the machine's speed between tools shows rather than skews one ratio. Within a
round, synlens's commands run interleaved (each once, --repeat times over) in an order rotated from round to
round, then tshark and dpkt.

The last table (benchmarks/README.md holds it) gives each tool's median run, its peak memory against the size of
the file it read, and its speed-up against tshark within each round, with the machine and its load before and
after.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_CAPTURE = HERE / "data" / "big.pcap"
DEFAULT_SWEEP = HERE / "data" / "sweep16.pcap"
GNU_TIME = "/usr/bin/time"
TSHARK_FIELDS = [
    "frame.time_epoch",
    "ip.src",
    "ip.dst",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags",
    "tcp.seq_raw",
    "tcp.ack_raw",
]

# getrusage fallback: run the command, report its peak RSS (KiB on Linux) and CPU time on stderr's last line.
_RUSAGE_WRAPPER = """
import resource, subprocess, sys
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print("maxrss_kib", ru.ru_maxrss, "cpu_s", ru.ru_utime + ru.ru_stime, file=sys.stderr)
sys.exit(rc)
"""


@dataclass
class Result:
    name: str
    seconds: float
    cpu_seconds: float
    rss_bytes: int


def pcap_records(path: Path) -> tuple[bytes, str, list[tuple[int, int]]]:
    """Classic pcap → (global header, byte order, [(record start, record end)]), without the analyzer."""
    raw = path.read_bytes()
    for endian in ("<", ">"):
        if struct.unpack(endian + "I", raw[:4])[0] in (0xA1B2C3D4, 0xA1B23C4D):
            break
    else:
        sys.exit(f"bench: {path} is not a classic pcap file")
    caplen = struct.Struct(endian + "I").unpack_from
    spans = []
    pos, end = 24, len(raw)
    while pos + 16 <= end:
        nxt = pos + 16 + caplen(raw, pos + 8)[0]
        if nxt > end:
            break
        spans.append((pos, nxt))
        pos = nxt
    return raw[:24], endian, spans


def count_packets(path: Path) -> int:
    return len(pcap_records(path)[2])


def head_capture(path: Path, n: int, out: Path) -> int:
    """The first n records of `path`, verbatim, into `out`. Returns how many were written."""
    raw = path.read_bytes()
    header, _, spans = pcap_records(path)
    spans = spans[:n]
    with open(out, "wb") as f:
        f.write(header)
        if spans:
            f.write(raw[spans[0][0] : spans[-1][1]])
    return len(spans)


def commands(capture: Path, save_rtt: Path | None, sweep: Path | None = None
             ) -> dict[str, tuple[list[str], Path | None]]:
    """name → (argv, file for stdout or None for /dev/null)."""
    py = sys.executable
    fields = [arg for f in TSHARK_FIELDS for arg in ("-e", f)]
    swept = {} if sweep is None else {
        "synlens scans, sweep (table)": ([py, "-m", "analyzer", "scans", str(sweep)], None),
        "synlens scans, sweep (JSON)": ([py, "-m", "analyzer", "scans", str(sweep), "--format", "json"], None),
    }
    return swept | {
        "synlens rtt": ([py, "-m", "analyzer", "rtt", str(capture), "--format", "json"], save_rtt),
        "synlens rtt (table)": ([py, "-m", "analyzer", "rtt", str(capture)], None),  # the default output
        "synlens scans": ([py, "-m", "analyzer", "scans", str(capture), "--format", "json"], None),
        "synlens read": ([py, "-c", f"import analyzer; analyzer.read({str(capture)!r})"], None),
        # The reader's numpy code, which the compiled loops (analyzer/accel/_reader.c) replace where they are built.
        "synlens rtt (numpy reader)": (["env", "SYNLENS_PURE=1", py, "-m", "analyzer", "rtt", str(capture), "--format",
                                        "json"], None),
        "tshark -T fields": (["tshark", "-r", str(capture), "-T", "fields", *fields], None),
        "dpkt loop": ([py, str(HERE / "dpkt_loop.py"), str(capture)], None),
    }


def measure(name: str, argv: list[str], stdout_path: Path | None) -> Result:
    """Run argv once; wall time of the whole process and its peak RSS."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    gnu = os.path.exists(GNU_TIME)
    if stdout_path and not gnu:
        sys.exit("bench: --save-rtt needs GNU time (/usr/bin/time)")
    with contextlib.ExitStack() as stack:
        stdout = stack.enter_context(open(stdout_path, "w")) if stdout_path else subprocess.DEVNULL
        report = stack.enter_context(tempfile.NamedTemporaryFile("r", suffix=".time"))
        cmd = (
            [GNU_TIME, "-v", "-o", report.name, *argv]
            if gnu
            else [sys.executable, "-c", _RUSAGE_WRAPPER, *argv]
        )
        t0 = time.perf_counter()
        proc = subprocess.run(
            cmd, check=False, stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env
        )
        seconds = time.perf_counter() - t0
        if gnu:
            text = report.read()
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
            cpu = sum(float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", text))
            status = re.search(r"Exit status: (\d+)", text)
            rc = int(status.group(1)) if status else proc.returncode
        else:
            m = re.search(r"maxrss_kib (\d+) cpu_s ([\d.]+)\s*$", proc.stderr)
            cpu = float(m.group(2)) if m else 0.0
            rc = proc.returncode
    if rc != 0 or m is None:
        tail = "\n".join(proc.stderr.splitlines()[-15:])
        sys.exit(f"bench: {name} failed (exit {rc}):\n{tail}")
    return Result(name, seconds, cpu, int(m.group(1)) * 1024)


def median_run(runs: list[Result]) -> Result:
    """The run of median wall time (the upper one of an even count)."""
    return sorted(runs, key=lambda x: x.seconds)[len(runs) // 2]


def versions() -> str:
    import dpkt
    import numpy
    import pandas

    tshark = subprocess.run(
        ["tshark", "--version"], check=False, capture_output=True, text=True
    ).stdout.splitlines()
    return (
        f"Python {platform.python_version()}, numpy {numpy.__version__}, pandas {pandas.__version__}, "
        f"dpkt {dpkt.__version__}, {tshark[0] if tshark else 'tshark ?'}; {os.cpu_count()} CPUs"
    )


def machine() -> str:
    """The CPU, its cores, the kernel and the load average now."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, Linux {platform.release()}; load average {load}"


def speed_table(results: list[Result], sizes: dict[str, int], per_round: list[dict[str, Result]]) -> str:
    """The one table: each tool's median run, its peak RSS against the size of the file it read, and its
    speed-up against tshark within each round (the least and the greatest)."""
    lines = ["| tool | capture | seconds | CPU s | peak RSS (MB) | RSS / file | vs tshark (each round) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        ratios = [m["tshark -T fields"].seconds / m[r.name].seconds for m in per_round
                  if "tshark -T fields" in m and r.name in m]
        if r.name == "tshark -T fields" or "sweep" in r.name or not ratios:
            versus = "1×" if r.name == "tshark -T fields" else "–"
        else:
            versus = f"{min(ratios):.1f}–{max(ratios):.1f}×" if len(ratios) > 1 else f"{ratios[0]:.1f}×"
        capture = "sweep" if "sweep" in r.name else "benchmark"
        lines.append(f"| {r.name} | {capture} | {r.seconds:.2f} | {r.cpu_seconds:.2f} | {r.rss_bytes / 1e6:.0f} "
                     f"| {r.rss_bytes / sizes[capture]:.2f}× | {versus} |")
    return "\n".join(lines)


def table(results: list[Result], packets: int, size: int) -> str:
    base = next((r for r in results if r.name == "synlens rtt"), None)
    lines = [
        (
            "| tool | seconds | CPU seconds | peak RSS (MB) | RSS / file size | packets/s "
            "| synlens rtt speed-up (wall) | (CPU) |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        wall = f"{r.seconds / base.seconds:.1f}×" if base else "n/a"
        cpu = f"{r.cpu_seconds / base.cpu_seconds:.1f}×" if base and base.cpu_seconds else "n/a"
        lines.append(
            f"| {r.name} | {r.seconds:.2f} | {r.cpu_seconds:.2f} | {r.rss_bytes / 1e6:.0f} | "
            f"{r.rss_bytes / size:.2f}× | {packets / r.seconds:,.0f} | {wall} | {cpu} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("capture", nargs="?", type=Path, default=DEFAULT_CAPTURE)
    ap.add_argument("--sweep", nargs="?", type=Path, const=DEFAULT_SWEEP, metavar="PATH",
                    help="also `synlens scans` of this sweep capture, as a table and as JSON "
                    f"(default {DEFAULT_SWEEP.relative_to(ROOT)}: make it with benchmarks/sweep.py)")
    ap.add_argument("--quick", type=int, metavar="N", help="benchmark the first N packets only")
    ap.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only the tools whose name contains NAME (repeatable)",
    )
    ap.add_argument(
        "--save-rtt", type=Path, metavar="PATH", help="keep synlens rtt's JSON here instead of /dev/null"
    )
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="runs of each synlens command; the median (by wall time) is kept")
    ap.add_argument("--rounds", type=int, default=1, metavar="R",
                    help="the whole list of tools R times in turn; medians over all runs, speed-ups per round")
    args = ap.parse_args(argv)
    if not args.capture.exists():
        sys.exit(f"bench: {args.capture} not found; make it with: python benchmarks/make_big_capture.py")
    if args.sweep is not None and not args.sweep.exists():
        sys.exit(f"bench: {args.sweep} not found; make it with: sudo python3 benchmarks/sweep.py")
    for tool in ("tshark",):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} is not installed")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="slbn") as tmp:
        capture = args.capture
        if args.quick:
            capture = Path(tmp) / f"head{args.quick}.pcap"
            head_capture(args.capture, args.quick, capture)
        packets = count_packets(capture)
        size = capture.stat().st_size
        capture.read_bytes()  # into the page cache, so the first tool does not pay for the disk
        # The analyzer's bytecode compiled once, as an installed package has it: a checkout run with
        # PYTHONDONTWRITEBYTECODE=1 (or from a read-only tree) would compile every module on every run.
        compileall.compile_dir(ROOT / "analyzer", quiet=1)
        print(f"capture: {capture} — {packets:,} packets, {size:,} bytes ({size / 1e6:.1f} MB)")
        sizes = {"benchmark": size}
        if args.sweep is not None:
            sizes["sweep"] = args.sweep.stat().st_size
            args.sweep.read_bytes()
            print(f"sweep: {args.sweep} — {count_packets(args.sweep):,} packets, {sizes['sweep']:,} bytes")
        print(versions())
        print(f"machine: {machine()}")
        print(
            f"peak RSS from {'GNU time -v' if os.path.exists(GNU_TIME) else 'getrusage(RUSAGE_CHILDREN)'}; "
            "each tool run once, in turn" + (f", {args.rounds} rounds" if args.rounds > 1 else "") + "\n",
            flush=True,
        )
        tools = {name: spec for name, spec in commands(capture, args.save_rtt, args.sweep).items()
                 if not args.only or any(o in name for o in args.only)}
        runs: dict[str, list[Result]] = {name: [] for name in tools}
        per_round = []
        for k in range(args.rounds):
            if args.rounds > 1:
                print(f"round {k + 1} of {args.rounds}", flush=True)
            medians = {}
            # synlens's runs interleaved (each command once, then each again, …), in an order rotated each round:
            # a drift of the machine's speed, or the slow seconds after tshark's gigabyte, falls on every command
            # alike rather than on whichever comes first.
            ours = [n for n in tools if n.startswith("synlens")]
            ours = ours[k % len(ours):] + ours[:k % len(ours)] if ours else []
            round_runs: dict[str, list[Result]] = {name: [] for name in tools}
            for _ in range(args.repeat):
                for name in ours:
                    round_runs[name].append(measure(name, *tools[name]))
            for name, spec in tools.items():
                if name not in ours:
                    round_runs[name].append(measure(name, *spec))
            for name in tools:
                mine = round_runs[name]
                runs[name] += mine
                r = medians[name] = median_run(mine)
                if len(mine) > 1:
                    print(f"  {name}: runs {', '.join(f'{x.seconds:.2f}' for x in mine)} s", flush=True)
                print(
                    f"  {name}: {r.seconds:.2f} s ({r.cpu_seconds:.2f} s CPU), {r.rss_bytes / 1e6:.0f} MB",
                    flush=True,
                )
            per_round.append(medians)
        results = [median_run(v) for v in runs.values()]
    print()
    print(table(results, packets, size))
    if args.rounds > 1 and "tshark -T fields" in tools:
        print("\nspeed-up against tshark within each round (its median run over the tool's):")
        for name in tools:
            if name.startswith("synlens"):
                ratios = [m["tshark -T fields"].seconds / m[name].seconds for m in per_round]
                print(f"  {name}: {' / '.join(f'{x:.1f}×' for x in ratios)}")
    print(
        f"\nfile: {size / 1e6:.1f} MB, {packets:,} packets; "
        f"benchmark took {time.perf_counter() - t_start:.1f} s"
    )
    print(f"\n{speed_table(results, sizes, per_round)}\n\nmachine: {machine()} (at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
