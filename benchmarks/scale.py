"""Make the scale benchmark's captures from the benchmark capture, and measure `synlens rtt` on them.

Copies of benchmarks/data/big.pcap (make_big_capture.py) are laid end to end in time: copy i is big.pcap with
every timestamp moved by i × (its duration + 20 s) (`editcap -t`, Wireshark's), so each copy's probes are new
probes of the same ports. `--rotated` leaves them as one file per copy (a sensor's rotated files); otherwise
`mergecap -a` writes them as one file. Then `synlens rtt --format json` runs on them whole (`--chunk 0`) and a
chunk at a time (`--chunk 1048576`), each timed with its peak RSS (GNU time), and the two outputs compared.

    python3 benchmarks/scale.py --copies 10 [--rotated] [--dir /tmp/synlens-scale] [--keep]
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIG = HERE / "data" / "big.pcap"


def duration_s(path: Path) -> float:
    out = subprocess.run(["capinfos", "-u", "-M", str(path)], capture_output=True, text=True, check=True).stdout
    return float(next(line.split(":", 1)[1] for line in out.splitlines() if "duration" in line).split()[0])


def make(copies: int, folder: Path, rotated: bool) -> list[Path]:
    step = duration_s(BIG) + 20.0
    parts = []
    for i in range(copies):
        part = folder / f"part-{i:04d}.pcap"
        subprocess.run(["editcap", "-t", f"{i * step:.6f}", str(BIG), str(part)], check=True)
        parts.append(part)
    if rotated:
        return parts
    one = folder / "all.pcap"
    subprocess.run(["mergecap", "-a", "-F", "pcap", "-w", str(one), *map(str, parts)], check=True)
    for part in parts:
        part.unlink()
    return [one]


def measure(inputs: list[Path], chunk: int, out: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (MB) of `synlens rtt --format json --chunk N` on the inputs."""
    cmd = ["/usr/bin/time", "-f", "%e %M", sys.executable, "-m", "analyzer", "rtt", *map(str, inputs),
           "--format", "json", "--chunk", str(chunk)]
    with out.open("wb") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.PIPE, text=True, check=True)
    seconds, kb = done.stderr.strip().splitlines()[-1].split()
    return float(seconds), int(kb) * 1024 // 10**6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--rotated", action="store_true", help="one file per copy (default: one file)")
    ap.add_argument("--dir", type=Path, default=None, help="where to write them (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the captures made")
    args = ap.parse_args(argv)
    folder = args.dir or Path(tempfile.mkdtemp(prefix="synlens-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        inputs = make(args.copies, folder, args.rotated)
        size = sum(os.path.getsize(p) for p in inputs)
        print(f"{args.copies} copies of {BIG.name}, {'rotated' if args.rotated else 'one file'}: "
              f"{size / 1e9:.2f} GB in {len(inputs)} file(s)")
        results = {}
        for chunk in (0, 1 << 20):
            seconds, mb = measure(inputs, chunk, folder / f"rtt-{chunk}.json")
            results[chunk] = folder / f"rtt-{chunk}.json"
            print(f"rtt --chunk {chunk}: {seconds:.1f} s, peak RSS {mb} MB")
        same = filecmp.cmp(results[0], results[1 << 20], shallow=False)
        print("outputs identical" if same else "OUTPUTS DIFFER")
        return 0 if same else 1
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
