"""Make a big capture of real SYN scans for the speed benchmark: benchmarks/data/big.pcap.

Real traffic, not synthesised packets: in a network namespace of its own (so no other traffic on the
machine gets in, and nothing leaves it), a few Python listeners hold some ports open, tcpdump records
the loopback interface, and Debian's nmap runs full-range SYN scans of 127.0.0.1 there
(`nmap -sS -Pn -n -p- --max-retries 0 -T5`). Each scan is ~131k packets (a SYN and a RST/ACK per closed
port; SYN, SYN/ACK and the scanner kernel's RST per open one).

The scans are then laid end to end, round robin, until the file holds at least --packets packets. The
records are copied byte for byte (parsed with struct, not with the analyzer); only the timestamps change,
so that each copy begins --gap seconds after the previous one ends. The gap is longer than the analyzer's
reply window (10 s), so each copy's probes are new probes with their own RTT samples rather than
retransmissions of the previous copy's.

Needs root (namespaces, raw sockets), nmap and tcpdump. Usage:

    python benchmarks/make_big_capture.py [--packets 1200000] [--scans 2] [--out benchmarks/data/big.pcap]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "data" / "big.pcap"
NS = f"slbn{os.getpid()}"
OPEN_PORTS = (22, 80, 443, 3306, 8080)
SCAN = ["nmap", "-sS", "-Pn", "-n", "-p-", "--max-retries", "0", "-T5", "127.0.0.1"]

LISTENER = """
import socket, sys, time
socks = []
for port in map(int, sys.argv[1:]):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(1024)
    socks.append(s)
print("ready", flush=True)
time.sleep(3600)
"""


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def _in_ns(cmd: list[str]) -> list[str]:
    return ["ip", "netns", "exec", NS, *cmd]


def capture_scans(count: int, workdir: Path) -> list[Path]:
    """Run `count` nmap SYN scans in a fresh namespace, each under its own tcpdump. Returns the pcaps."""
    for tool in ("ip", "nmap", "tcpdump"):
        if shutil.which(tool) is None:
            sys.exit(f"make_big_capture: {tool} is not installed")
    if os.geteuid() != 0:
        sys.exit("make_big_capture: needs root (network namespace, raw sockets)")
    _run(["ip", "netns", "add", NS])
    listener = None
    try:
        _run(_in_ns(["ip", "link", "set", "lo", "up"]))
        listener = subprocess.Popen(
            _in_ns([sys.executable, "-c", LISTENER, *map(str, OPEN_PORTS)]), stdout=subprocess.PIPE, text=True
        )
        if listener.stdout.readline().strip() != "ready":
            sys.exit("make_big_capture: listeners did not start")
        paths = []
        for i in range(count):
            path = workdir / f"scan{i}.pcap"
            dump = subprocess.Popen(
                _in_ns(["tcpdump", "-i", "lo", "-U", "-n", "-B", "65536", "-w", str(path)]),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(1.0)  # let tcpdump open the interface before the first probe
            t0 = time.monotonic()
            scan = _run(_in_ns(SCAN), timeout=600)
            took = time.monotonic() - t0
            time.sleep(0.5)  # the last replies
            dump.send_signal(signal.SIGINT)
            _, err = dump.communicate(timeout=30)
            summary = "; ".join(line.strip() for line in err.splitlines() if "packets" in line)
            open_lines = [
                line.split()[0] for line in scan.stdout.splitlines() if "/tcp" in line and " open " in line
            ]
            print(
                f"scan {i + 1}/{count}: {took:.1f} s, open {','.join(open_lines) or 'none'}; "
                f"tcpdump: {summary}",
                flush=True,
            )
            paths.append(path)
        return paths
    finally:
        if listener is not None:
            listener.terminate()
            listener.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", NS], check=False)


def read_pcap(path: Path) -> tuple[bytes, str, bool, list[tuple[int, int, bytes]]]:
    """Classic pcap → (global header, byte order, nanosecond?, [(ts_sec, ts_frac, rest of record)])."""
    raw = path.read_bytes()
    magic = raw[:4]
    for endian in ("<", ">"):
        m = struct.unpack(endian + "I", magic)[0]
        if m in (0xA1B2C3D4, 0xA1B23C4D):
            nano = m == 0xA1B23C4D
            break
    else:
        sys.exit(f"make_big_capture: {path} is not a classic pcap file")
    hdr = struct.Struct(endian + "IIII")
    records = []
    pos, end = 24, len(raw)
    while pos + 16 <= end:
        sec, frac, cap, _wire = hdr.unpack_from(raw, pos)
        nxt = pos + 16 + cap
        if nxt > end:
            break  # a record cut short by the stop: drop it
        records.append((sec, frac, raw[pos + 8 : nxt]))  # caplen, wirelen and the packet, verbatim
        pos = nxt
    return raw[:24], endian, nano, records


def tile(sources: list[Path], out: Path, min_packets: int, gap_s: float) -> tuple[int, int]:
    """Lay the captures end to end, round robin, shifting timestamps only. Returns (packets, copies)."""
    parsed = [read_pcap(p) for p in sources]
    header, endian, nano, _ = parsed[0]
    for h, e, n, recs in parsed:
        if (h, e, n) != (header, endian, nano):
            sys.exit("make_big_capture: the scans' pcap headers differ; cannot concatenate")
        if not recs:
            sys.exit("make_big_capture: a scan captured no packets")
    unit = 1_000_000_000 if nano else 1_000_000
    ts_hdr = struct.Struct(endian + "II")
    gap = int(gap_s * unit)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    written = copies = 0
    cursor = None  # where the next copy starts, in capture time units
    with open(tmp, "wb") as f:
        f.write(header)
        while written < min_packets:
            _, _, _, recs = parsed[copies % len(parsed)]
            first = recs[0][0] * unit + recs[0][1]
            shift = 0 if cursor is None else cursor - first
            last = first
            chunk = []
            for sec, frac, rest in recs:
                t = sec * unit + frac
                last = max(last, t)
                s, fr = divmod(t + shift, unit)
                chunk.append(ts_hdr.pack(s, fr))
                chunk.append(rest)
            f.write(b"".join(chunk))
            written += len(recs)
            copies += 1
            cursor = last + shift + gap
    os.replace(tmp, out)
    return written, copies


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--packets", type=int, default=1_200_000, help="at least this many packets (default 1.2M)"
    )
    ap.add_argument("--scans", type=int, default=2, help="real nmap scans to capture and tile (default 2)")
    ap.add_argument(
        "--gap", type=float, default=15.0, help="seconds between one copy's end and the next's start"
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--keep", type=Path, help="also keep the single-scan captures in this directory")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="slbn") as tmp:
        scans = capture_scans(args.scans, Path(tmp))
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for p in scans:
                shutil.copy(p, args.keep / p.name)
        packets, copies = tile(scans, args.out, args.packets, args.gap)
    size = args.out.stat().st_size
    print(
        f"{args.out}: {packets} packets ({copies} copies of {args.scans} scans), {size} bytes "
        f"({size / 1e6:.1f} MB), made in {time.monotonic() - t0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
