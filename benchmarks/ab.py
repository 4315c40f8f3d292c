"""A/B speed comparison: one synlens command, run from this checkout and from another commit, alternately.

This machine's speed drifts by a quarter within minutes, so two versions timed minutes apart can differ by more
than the change between them. Here each round runs both versions once, back to back, in an order that swaps
every round; the medians over all rounds are compared. The other commit is checked out into a temporary git
worktree, and its compiled modules (analyzer/accel/*.c) are built there in place; each version runs as
`python -m analyzer …` with its own tree first on PYTHONPATH, output to /dev/null.

    python benchmarks/ab.py BASE [--runs 8] -- rtt benchmarks/data/big.pcap --format json

BASE: a commit (hash, tag, HEAD~3, …). The README's "in alternating runs" figures come from this script.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def python_of(tree: Path) -> tuple[list[str], dict[str, str]]:
    """The interpreter's command and environment that import `tree`'s analyzer: its tree first on PYTHONPATH,
    and -P, so that the working directory (ROOT, for the arguments' relative paths) is not put before it."""
    return [sys.executable, "-P"], dict(os.environ, PYTHONPATH=str(tree))


def check_tree(tree: Path) -> None:
    """Fails unless `python_of(tree)` imports the analyzer from `tree`."""
    python, env = python_of(tree)
    where = subprocess.run([*python, "-c", "import analyzer; print(analyzer.__file__)"], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(tree.resolve()):
        sys.exit(f"ab: {tree}'s analyzer is not the one imported ({where})")


def run_once(tree: Path, args: list[str]) -> float:
    """Wall time of one `python -m analyzer ARGS` run with `tree`'s analyzer (relative paths: from ROOT)."""
    python, env = python_of(tree)
    start = time.perf_counter()
    subprocess.run([*python, "-m", "analyzer", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def compare(trees: dict[str, Path], args: list[str], runs: int) -> dict[str, list[float]]:
    """Each tree's run times, the trees alternating (the order swapped every round)."""
    names = list(trees)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(runs):
        for name in names if i % 2 == 0 else names[::-1]:
            times[name].append(run_once(trees[name], args))
    return times


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     usage="%(prog)s BASE [--runs N] -- SYNLENS ARGUMENTS")
    parser.add_argument("base", help="the commit to compare this checkout with")
    parser.add_argument("--runs", type=int, default=8, help="rounds (each runs both versions once)")
    opts = parser.parse_args(argv[:cut])
    args = argv[cut + 1:]
    if not args:
        parser.error("give the synlens arguments after --")
    with tempfile.TemporaryDirectory(prefix="synlens-ab-") as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base), opts.base], check=True)
        try:
            subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=base, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            trees = {opts.base: base, "this checkout": ROOT}
            for tree in trees.values():
                check_tree(tree)
            times = compare(trees, args, opts.runs)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    print(f"synlens {' '.join(args)}: {opts.runs} alternating runs each")
    for name, values in times.items():
        print(f"  {name:>14}: median {statistics.median(values):.3f} s, fastest {min(values):.3f} s  "
              f"({', '.join(f'{v:.2f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
