"""Progress of long reading on a terminal: files done, bytes, rate, time left; quiet otherwise.

    synlens: reading 3 of 12 files, 2.41 of 9.80 GB (25%), 410 MB/s, about 0:18 left

On a terminal the line is rewritten in place, shown only once reading has taken a second (a quick command
prints nothing), and erased when reading ends. `SYNLENS_PROGRESS=1` shows it wherever stderr goes, a line per
update at most four times a second (for logs); `SYNLENS_PROGRESS=0` never.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

from ..reading.stream import Reading

SHOW_AFTER_S = 1.0  # on a terminal: a command that reads faster than this shows no progress
EVERY_S = 0.25  # at most this often


class Meter:
    """Told `Reading`s as a command reads (pipeline.analyze's `reading`); draws them (see the module)."""

    def __init__(self, stream: TextIO | None = None, *, mode: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream or sys.stderr
        mode = os.environ.get("SYNLENS_PROGRESS", "") if mode is None else mode
        self.tty = mode not in ("0", "1") and self.stream.isatty()
        self.enabled = mode == "1" or self.tty
        self.clock, self.start, self.last = clock, clock(), None
        self.drawn = False

    def __call__(self, reading: Reading) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if self.tty and now - self.start < SHOW_AFTER_S:
            return
        finished = reading.bytes_done >= reading.bytes_total and reading.files_done == reading.files
        if self.last is not None and now - self.last < EVERY_S and not finished:
            return
        self.last = now
        self._draw(line(reading, now - self.start))

    def close(self) -> None:
        """Reading is over: the terminal's line erased (a log keeps its last line)."""
        if self.tty and self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def _draw(self, text: str) -> None:
        self.stream.write(f"\r{text}\x1b[K" if self.tty else text + "\n")
        self.stream.flush()
        self.drawn = True


def line(reading: Reading, elapsed_s: float) -> str:
    """The progress line for `reading`, `elapsed_s` seconds after reading began."""
    parts = []
    if reading.files > 1:
        parts.append(f"{reading.files_done} of {reading.files} files")
    unit, scale = _unit(reading.bytes_total)
    share = reading.bytes_done / reading.bytes_total if reading.bytes_total else 1.0
    parts.append(f"{reading.bytes_done / scale:.2f} of {reading.bytes_total / scale:.2f} {unit} ({share:.0%})")
    if elapsed_s > 0 and reading.bytes_done:
        rate = reading.bytes_done / elapsed_s
        parts.append(f"{rate / 1e6:.0f} MB/s")
        left = (reading.bytes_total - reading.bytes_done) / rate
        parts.append(f"about {int(left // 60)}:{int(left % 60):02d} left")
    return "synlens: reading " + ", ".join(parts)


def _unit(total: int) -> tuple[str, float]:
    return ("GB", 1e9) if total >= 1e9 else ("MB", 1e6) if total >= 1e6 else ("kB", 1e3)
