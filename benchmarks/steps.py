"""Where a command's time goes: the pipeline's steps timed in one process, as `synlens` runs them.

The process is set up as the `synlens` command sets it up (accel/tuning.py), the libraries imported, then
`analyzer.analyze` runs the command's steps with a progress hook that stamps each step's start; the output is
written to /dev/null by the command's own writer. Each run is a fresh process, timed from its first line
(the interpreter's own start, about 0.05 s, is not counted); the medians over the runs are printed, in seconds.

    python benchmarks/steps.py [CAPTURE] [--command rtt|scans] [--runs 5]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_CAPTURE = HERE / "data" / "big.pcap"

# One run, in a fresh interpreter: the stamps as JSON on stdout's last line.
_ONE_RUN = r"""
import gc, json, os, sys, time
t0 = time.perf_counter()
from analyzer.accel.tuning import prepare
gc.disable()
prepare(sys.argv[1:])
from analyzer import cli
from analyzer.pipeline import analyze
gc.freeze(); gc.enable()
stamps = {}
command, capture = sys.argv[1], sys.argv[2]
steps = ("signals",) if command == "rtt" else ("scans", "hosts")
def progress(step, detail):
    stamps[step] = time.perf_counter()
analysis = analyze(capture, steps, progress=progress)
stamps["output"] = time.perf_counter()
from analyzer.render.output import rtt_json_pieces, scans_json_pieces
with open(os.devnull, "wb") as out:
    if command == "rtt":
        fams, table = analysis.signals
        pieces = rtt_json_pieces(fams, {"capture": capture}, table)
    else:
        pieces = scans_json_pieces(analysis.scans.scans, analysis.scans.states, analysis.hosts, {"capture": capture},
                                   analysis.scans.notes)
    for piece in pieces:
        out.write(piece)
stamps["end"] = time.perf_counter()
names = list(stamps)
print(json.dumps({"start": 0.0} | {n: stamps[n] - t0 for n in names}))
"""


def one_run(command: str, capture: Path) -> dict[str, float]:
    """Each phase's seconds in one fresh process: set-up and imports, reading, matching, each step, output (each
    phase named by the stamp that opens it)."""
    out = subprocess.run([sys.executable, "-P", "-c", _ONE_RUN, command, str(capture)], cwd=ROOT, check=True,
                         capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    stamps = json.loads(out.stdout.strip().splitlines()[-1])
    return {a if a != "start" else "start-up and imports": stamps[b] - stamps[a]
            for a, b in itertools.pairwise(stamps)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("capture", nargs="?", type=Path, default=DEFAULT_CAPTURE)
    ap.add_argument("--command", choices=("rtt", "scans"), default="rtt", help="rtt --format json, or scans --format json")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    runs = [one_run(args.command, args.capture) for _ in range(args.runs)]
    print(f"{args.command} --format json on {args.capture}: median seconds of {args.runs} runs")
    for phase in runs[0]:
        values = [r[phase] for r in runs if phase in r]
        label = {"output": "writing the JSON"}.get(phase, phase)
        print(f"  {label:24} {statistics.median(values):.3f}  ({min(values):.3f}-{max(values):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
