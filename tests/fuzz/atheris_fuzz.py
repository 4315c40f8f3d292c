"""Coverage-guided fuzzing with atheris (libFuzzer for Python): the analyzer's modules instrumented, so that a
mutation reaching a new branch of the reader or an analysis stage is kept in the corpus and mutated further;
this package's structure-aware mutators are libFuzzer's custom mutator (half the time; libFuzzer's own byte
mutations the other half), and each input is checked as a campaign case is (harness.check: a finding raises,
and libFuzzer saves the input as crash-<sha1>).

    PYTHONPATH=. python3 -m tests.fuzz.atheris_fuzz build/atheris-corpus -runs=20000 -seed=1

The corpus folder starts as the trimmed seeds when empty. atheris's libFuzzer does not work beside gcc's
AddressSanitizer runtime (no coverage is seen), so this runs the ordinary build of analyzer.accel._reader and _sort: what it
finds is checked again under ASan and UBSan with `python -m tests.fuzz check` in the environment
asan.environment makes (minimize.signatures_in_worker does so), and the campaign (campaign.py) is what runs
the compiled code sanitized.
"""

from __future__ import annotations

import importlib
import random
import sys
import tempfile
from pathlib import Path

import atheris

from . import mutators, seeds

with atheris.instrument_imports(include=["analyzer"]):
    for module in ("cli", "analysis.hosts", "render.report", "analysis.scans", "analysis.signals"):  # (every module a
        # case goes through)
        importlib.import_module(f"analyzer.{module}")
from . import harness  # (after the analyzer is loaded instrumented)

CORPUS = seeds.corpus()
WORK = Path(tempfile.mkdtemp(prefix="synlens-atheris-"))


class FuzzFinding(Exception):
    """A finding: libFuzzer stops and saves the input."""


def test_one_input(data: bytes) -> None:
    outcome = harness.check(data, WORK, seed=len(data))
    if outcome.findings:
        f = outcome.findings[0]
        raise FuzzFinding(f"{f.kind}: {f.signature} [{f.stage}]\n{f.detail}")


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    if rng.random() < 0.5:
        return atheris.Mutate(data, max_size)
    name = rng.choices(list(mutators.MUTATORS), [w for _, w in mutators.MUTATORS.values()])[0]
    out = mutators.MUTATORS[name][0](rng, data, CORPUS)
    return (out if out is not None else atheris.Mutate(data, max_size))[:max_size]


def main(argv: list[str]) -> None:
    folders = [Path(a) for a in argv[1:] if not a.startswith("-")]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        if not any(folder.iterdir()):
            for k, (name, data) in enumerate(CORPUS):
                (folder / f"seed{k:03d}-{Path(name).name}").write_bytes(data)
    if not any(a.startswith("-max_len") for a in argv):
        argv = [*argv, f"-max_len={1 << 20}"]
    if not any(a.startswith("-rss_limit_mb") for a in argv):
        # atheris's process grows by about 0.35 MB an input (the harness alone levels off at 110 MB over 1,000
        # cases): libFuzzer's 2 GB limit would stop a run near its 5,500th input and call that a finding.
        argv = [*argv, "-rss_limit_mb=16384"]
    atheris.Setup(argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
