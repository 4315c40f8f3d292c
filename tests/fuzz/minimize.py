"""Checking a reproducer again, and shrinking it to the least that still shows its fault (the same signatures).

Tracebacks, warnings, disagreements and commands' faults are checked in process; crashes, sanitizer reports
and hangs in a worker process like the campaign's (its sanitized module, a timeout). Shrinking: whole records
(pcap) or blocks (pcapng) first, by delta debugging, then the end of the file, then runs of bytes.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from . import asan, formats

REPO = Path(__file__).resolve().parents[2]
IN_PROCESS = ("traceback", "warning", "differential", "command")


def check_files(files: list[Path], *, report: bool = False, as_json: bool = False) -> int:
    """Check each capture as a fuzz case; print its findings (one JSON list per file with `as_json`). Exit 1
    when any file has a finding."""
    from .harness import check

    found = False
    with tempfile.TemporaryDirectory() as work:
        for path in files:
            outcome = check(path.read_bytes(), Path(work), report=report)
            found |= bool(outcome.findings)
            if as_json:
                print(json.dumps([f.as_dict() for f in outcome.findings]))
                continue
            print(f"{path}: {'readable' if outcome.readable else 'refused (CaptureError)'}, "
                  f"{len(outcome.findings)} finding(s)")
            for f in outcome.findings:
                print(f"  {f.kind}: {f.signature} [{f.stage}]\n    " + f.detail.strip().replace("\n", "\n    "))
    return 1 if found else 0


def signatures_in_process(data: bytes, work: Path) -> set[str]:
    from .harness import check

    return {f.signature for f in check(data, work, report=True).findings}


def signatures_in_worker(data: bytes, work: Path, timeout: float = 120.0) -> set[str]:
    """The signatures a fresh worker process finds (with the sanitized module when it can be built)."""
    from .campaign import crash_record

    path = work / "try.bin"
    path.write_bytes(data)
    try:
        env = asan.environment(asan.build())
    except (RuntimeError, subprocess.CalledProcessError):
        env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    try:
        done = subprocess.run([sys.executable, "-m", "tests.fuzz", "check", "--json", str(path)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"hang"}
    if done.returncode not in (0, 1):
        return {crash_record(done.stderr, done.returncode, "check")["signature"]}
    return {f["signature"] for f in json.loads(done.stdout.splitlines()[-1])}


def ddmin(items: list, keeps: Callable[[list], bool]) -> list:
    """The smallest sublist (1-minimal, by Zeller's delta debugging on complements) for which `keeps` holds."""
    n = 2
    while len(items) >= 2:
        size = -(-len(items) // n)
        for start in range(0, len(items), size):
            rest = items[:start] + items[start + size:]
            if keeps(rest):
                items, n = rest, max(n - 1, 2)
                break
        else:
            if n >= len(items):
                break
            n = min(len(items), 2 * n)
    return items


def minimize(data: bytes, want: set[str], signatures: Callable[[bytes], set[str]]) -> bytes:
    """The least bytes whose signatures still include all of `want`."""
    def keeps(candidate: bytes) -> bool:
        return want <= signatures(candidate)

    if data[:2] == b"\x1f\x8b":
        try:
            inner = gzip.decompress(data)
        except (OSError, EOFError):
            inner = None
        if inner is not None and keeps(inner):
            data = inner
    cap = formats.parse(data)
    if isinstance(cap, formats.Pcap):
        def with_records(records: list) -> bytes:
            return formats.Pcap(cap.endian, cap.header, records, cap.tail).bytes()
        cap.records = ddmin(cap.records, lambda r: keeps(with_records(r)))
        data = with_records(cap.records)
    elif isinstance(cap, formats.Pcapng):
        def with_blocks(blocks: list) -> bytes:
            return formats.Pcapng(blocks, cap.tail).bytes()
        cap.blocks = ddmin(cap.blocks, lambda b: keeps(with_blocks(b)))
        data = with_blocks(cap.blocks)
    lo, hi = 0, len(data)  # the shortest prefix that keeps it
    while lo < hi:
        mid = (lo + hi) // 2
        if keeps(data[:mid]):
            hi = mid
        else:
            lo = mid + 1
    data = data[:hi]
    for size in (256, 64, 16, 4, 1):
        if len(data) > 64 * 1024:
            break
        at = 0
        while at < len(data):
            candidate = data[:at] + data[at + size:]
            if keeps(candidate):
                data = candidate
            else:
                at += size
    return data


def minimize_file(path: Path, out: Path) -> int:
    """Shrink the reproducer `path` (keeping every signature it shows now) into `out`."""
    data = path.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        how = signatures_in_process
        found = how(data, work)
        if not found:
            how = signatures_in_worker
            found = how(data, work)
        if not found:
            print(f"{path}: no finding to keep", file=sys.stderr)
            return 1
        small = minimize(data, found, lambda d: how(d, work))
    out.write_bytes(small)
    print(f"{out}: {len(small)} bytes (from {len(data)}), keeping: {sorted(found)}")
    return 0
