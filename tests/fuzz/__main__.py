"""python -m tests.fuzz: run or resume a campaign, check or minimize a reproducer, print a campaign's figures.

    PYTHONPATH=. python3 -m tests.fuzz run --out build/fuzz --cases 100000 [--seed 19] [--jobs 2] [--no-asan]
    PYTHONPATH=. python3 -m tests.fuzz check FILE…
    PYTHONPATH=. python3 -m tests.fuzz minimize FILE --out MINIMAL
    PYTHONPATH=. python3 -m tests.fuzz summary build/fuzz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run or resume a campaign")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--cases", type=int, required=True)
    r.add_argument("--seed", type=int, default=19)
    r.add_argument("--jobs", type=int, default=1)
    r.add_argument("--block", type=int, default=50)
    r.add_argument("--timeout", type=float, default=120.0, help="seconds one case may take before it is a hang")
    r.add_argument("--no-asan", action="store_true", help="the ordinary build of analyzer.accel's compiled modules")
    w = sub.add_parser("worker", help="(internal) the campaign's worker process")
    w.add_argument("--seed", type=int, required=True)
    w.add_argument("--workdir", type=Path, required=True)
    c = sub.add_parser("check", help="check captures as a fuzz case (exit 1 on a finding)")
    c.add_argument("files", type=Path, nargs="+")
    c.add_argument("--report", action="store_true", help="the HTML report too")
    c.add_argument("--json", action="store_true", help="one JSON list of findings per file")
    m = sub.add_parser("minimize", help="shrink a reproducer, keeping its findings' signatures")
    m.add_argument("file", type=Path)
    m.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("summary", help="a campaign's figures, as Markdown")
    s.add_argument("out", type=Path)
    args = parser.parse_args(argv)

    if args.command == "run":
        from .campaign import run

        state = run(args.out, cases=args.cases, seed=args.seed, jobs=args.jobs, use_asan=not args.no_asan,
                    timeout=args.timeout, block=args.block)
        print(f"{state.cases} cases, {len(state.findings)} findings, {state.seconds:.0f} s")
        return 1 if state.findings else 0
    if args.command == "worker":
        from .campaign import worker

        worker(args.seed, args.workdir)
        return 0
    if args.command == "check":
        from .minimize import check_files

        return check_files(args.files, report=args.report, as_json=args.json)
    if args.command == "minimize":
        from .minimize import minimize_file

        return minimize_file(args.file, args.out)
    from .report import summary

    print(summary(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
