"""Make the scale benchmark's captures from the benchmark capture (or another), and measure `synlens rtt` on them.

Copies of benchmarks/data/big.pcap (make_big_capture.py; `--capture` names another) are laid end to end in time:
copy i is the capture with every timestamp moved by i × (its duration + 20 s) (`editcap -t`, Wireshark's), so each copy's probes are new
probes of the same ports. `--rotated` leaves them as one file per copy (a sensor's rotated files); otherwise
`mergecap -a` writes them as one file. Then `synlens rtt --format json` runs on them whole (`--chunk 0`) and a
chunk at a time (`--chunk 1048576`), alternately, `--runs` times each, timed with peak RSS (GNU time; the
medians are printed), and the two outputs compared.

    python3 benchmarks/scale.py --copies 10 [--capture PCAP] [--runs 3] [--rotated] [--dir DIR] [--keep]
                                [--chunks 0 1048576] [--make-only]

A capture of many gigabytes is made in two steps: copies of a small capture into one file (`--make-only --keep`),
then copies of that file (`--capture DIR/all.pcap`). `--chunks` names the runs to time (a whole run of many
gigabytes needs more memory than this machine has).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIG = HERE / "data" / "big.pcap"


def duration_s(path: Path) -> float:
    # (no check: capinfos, as editcap below, says what it read of a capture cut short, and exits 1)
    out = subprocess.run(["capinfos", "-u", "-M", str(path)], check=False, capture_output=True, text=True).stdout
    return float(next(line.split(":", 1)[1] for line in out.splitlines() if "duration" in line).split()[0])


def make(capture: Path, copies: int, folder: Path, rotated: bool) -> list[Path]:
    step = duration_s(capture) + 20.0
    parts = []
    for i in range(copies):
        part = folder / f"part-{i:04d}.pcap"
        subprocess.run(["editcap", "-F", "pcap", "-t", f"{i * step:.6f}", str(capture), str(part)],
                       check=False, stderr=subprocess.DEVNULL)
        if not part.exists():
            raise SystemExit(f"editcap wrote nothing for {capture}")
        parts.append(part)
    if rotated:
        return parts
    one = folder / "all.pcap"
    subprocess.run(["mergecap", "-a", "-F", "pcap", "-w", str(one), *map(str, parts)], check=True)
    for part in parts:
        part.unlink()
    return [one]


def measure(inputs: list[Path], chunk: int, out: Path, buffer: str | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (MB) of `synlens rtt --format json --chunk N [--buffer-size SIZE]` on the
    inputs."""
    cmd = ["/usr/bin/time", "-f", "%e %M", sys.executable, "-m", "analyzer", "rtt", *map(str, inputs),
           "--format", "json", "--chunk", str(chunk), *(("--buffer-size", buffer) if buffer else ())]
    with out.open("wb") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.PIPE, text=True, check=True)
    seconds, kb = done.stderr.strip().splitlines()[-1].split()
    return float(seconds), int(kb) * 1024 // 10**6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--capture", type=Path, default=BIG, help="the capture to copy (default: the benchmark's)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each (default 3)")
    ap.add_argument("--rotated", action="store_true", help="one file per copy (default: one file)")
    ap.add_argument("--dir", type=Path, default=None, help="where to write them (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the captures made")
    ap.add_argument("--chunks", type=int, nargs="+", default=[0, 1 << 20], help="--chunk values to time")
    ap.add_argument("--buffer-sizes", nargs="+", default=[None], metavar="SIZE",
                    help="--buffer-size values to time with each --chunk (default: the default)")
    ap.add_argument("--make-only", action="store_true", help="make the captures, time nothing")
    args = ap.parse_args(argv)
    folder = args.dir or Path(tempfile.mkdtemp(prefix="synlens-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        inputs = make(args.capture, args.copies, folder, args.rotated)
        size = sum(os.path.getsize(p) for p in inputs)
        print(f"{args.copies} copies of {args.capture.name}, {'rotated' if args.rotated else 'one file'}: "
              f"{size / 1e9:.2f} GB in {len(inputs)} file(s)")
        if args.make_only:
            return 0
        cases = [(chunk, buffer) for chunk in args.chunks for buffer in args.buffer_sizes]
        runs: dict[tuple[int, str | None], list[tuple[float, int]]] = {case: [] for case in cases}

        def output(case: tuple[int, str | None]) -> Path:
            return folder / f"rtt-{case[0]}-{case[1] or 'default'}.json"

        for _ in range(args.runs):
            for case in cases:
                runs[case].append(measure(inputs, case[0], output(case), case[1]))
        for (chunk, buffer), done in runs.items():
            print(f"rtt --chunk {chunk}{f' --buffer-size {buffer}' if buffer else ''}: "
                  f"{statistics.median(s for s, _ in done):.2f} s, "
                  f"peak RSS {statistics.median(mb for _, mb in done):.0f} MB (medians of {len(done)})")
        if len(cases) < 2:
            return 0
        same = all(filecmp.cmp(output(cases[0]), output(case), shallow=False) for case in cases[1:])
        print("outputs identical" if same else "OUTPUTS DIFFER")
        return 0 if same else 1
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
