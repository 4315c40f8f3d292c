"""Progress of long reading: what reading tells (bytes and files done, to the end), and how the terminal
line draws it (render/progress.py), with a clock the test moves."""

from __future__ import annotations

import glob
import io
import os
import subprocess
import sys
from pathlib import Path

from analyzer.reading.many import read_sources
from analyzer.reading.sources import sources
from analyzer.reading.stream import Reading
from analyzer.render.progress import Meter, line

ROOT = Path(__file__).resolve().parent.parent
SCANS = sorted(glob.glob(str(ROOT / "sample_pcaps" / "scans_*.pcap")))


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _told(inputs: list[str], **kw: object) -> list[Reading]:
    told: list[Reading] = []
    found = sources(inputs)
    read_sources(found, columns=["ts_ns"], progress=told.append, **kw)
    return told


def test_reading_tells_bytes_and_files_up_to_the_end() -> None:
    total = sum(os.path.getsize(p) for p in SCANS)
    for told in (_told(SCANS), _told(SCANS, chunk=40), _told([SCANS[0]])):
        assert told, "nothing told"
        done = [r.bytes_done for r in told]
        assert done == sorted(done)  # (never backwards)
        assert told[-1].bytes_done == told[-1].bytes_total and told[-1].files_done == told[-1].files
        assert all(r.files_done < r.files or r.bytes_done == r.bytes_total for r in told)
    assert _told(SCANS)[-1].bytes_total == total and _told(SCANS)[-1].files == len(SCANS)
    assert len(_told(SCANS, chunk=40)) > len(SCANS) + 1  # (told within files too, chunk by chunk)


def test_the_line_says_files_bytes_rate_and_time_left() -> None:
    text = line(Reading(2_410_000_000, 9_800_000_000, 3, 12), elapsed_s=5.878)
    assert text == "synlens: reading 3 of 12 files, 2.41 of 9.80 GB (25%), 410 MB/s, about 0:18 left"
    assert line(Reading(500_000, 2_000_000, 0, 1), elapsed_s=0.5) == \
        "synlens: reading 0.50 of 2.00 MB (25%), 1 MB/s, about 0:01 left"
    assert line(Reading(0, 2_000, 0, 1), elapsed_s=0.0) == "synlens: reading 0.00 of 2.00 kB (0%)"


def test_on_a_terminal_only_long_reading_shows_and_its_line_is_erased() -> None:
    clock, out = _Clock(), _Terminal()
    meter = Meter(out, clock=clock)
    assert meter.enabled
    meter(Reading(10, 100, 0, 1))
    clock.now += 0.5
    meter(Reading(20, 100, 0, 1))
    assert out.getvalue() == ""  # (a quick command shows nothing)
    clock.now += 0.6
    meter(Reading(30, 100, 0, 1))
    clock.now += 0.1
    meter(Reading(40, 100, 0, 1))  # (within a quarter second: not drawn)
    assert out.getvalue().count("\r") == 1 and "(30%)" in out.getvalue() and "\n" not in out.getvalue()
    clock.now += 0.1
    meter(Reading(100, 100, 1, 1))  # (the end is always drawn)
    meter.close()
    assert out.getvalue().endswith("(100%), 0 MB/s, about 0:00 left\x1b[K\r\x1b[K")


def test_forced_on_it_logs_lines_and_forced_off_it_is_silent() -> None:
    clock, out = _Clock(), io.StringIO()
    meter = Meter(out, mode="1", clock=clock)
    for done in (10, 20, 30):
        meter(Reading(done, 100, 0, 1))
        clock.now += 0.3
    meter.close()
    assert [x.split(" (")[0] for x in out.getvalue().splitlines()] == [
        "synlens: reading 0.01 of 0.10 kB", "synlens: reading 0.02 of 0.10 kB", "synlens: reading 0.03 of 0.10 kB"]
    quiet, term = io.StringIO(), _Terminal()
    for meter in (Meter(quiet, mode="0"), Meter(term, mode="0")):
        meter(Reading(100, 100, 1, 1))
        meter.close()
        assert not meter.enabled
    assert quiet.getvalue() == term.getvalue() == ""


def test_a_command_with_progress_prints_the_same_output() -> None:
    run = [sys.executable, "-m", "analyzer", "scans", *SCANS[:3], "--format", "json"]
    plain = subprocess.run(run, capture_output=True, text=True, check=True)
    shown = subprocess.run(run, capture_output=True, text=True, check=True, env={**os.environ, "SYNLENS_PROGRESS": "1"})
    assert shown.stdout == plain.stdout and "synlens: reading" not in plain.stderr
    last = [x for x in shown.stderr.splitlines() if x.startswith("synlens: reading")][-1]
    assert last.startswith("synlens: reading 3 of 3 files, ") and "(100%)" in last
