"""Whether a whole packets table will fit: a reading's memory projected from what reading has taken so far.

`scans`, `hosts`, `report` and an `rtt` of captures under 2 GB read the captures' packets into one table. Its size
follows the packets, not the bytes on disk (a capture of 60-byte SYNs takes twice its size in memory, one of
full-size frames a tenth of it), so it is measured while the captures are read: the growth of the process's
anonymous memory (`RssAnon`: its own, not the pages of the files it maps) per share of the captures' bytes read,
from the first time reading tells its progress (after the reader has indexed a file's records, which it holds
throughout). The steps that follow take up to `PEAK_FACTOR` times that growth at their peak: the reader makes its
columns whole at the end, matching and `hosts` make arrays as long as the table. Measured on the spam bot's traffic
(1 to 10 GB, one file and rotated files), the benchmark's scan and ten rotated copies of it, the peak was 1.9 to 2.9
times the growth: the projection may be a third too high or a seventh too low.

When that projection passes the memory the run may take (by default what the system had available when reading
began, `MemAvailable`, beside what the process held), reading stops with `NotEnoughMemory`, a one-line error,
instead of the kernel's out-of-memory killer ending the process later without a word. Where /proc is not there
(not Linux), nothing is checked.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import NotEnoughMemory
from .stream import Reading

PEAK_FACTOR = 2.5  # the steps' peak, in the memory reading grew by
MIN_SHARE = 0.1  # of the captures' bytes read past the first progress before a projection (earlier: noise)
MIN_BYTES = 32 << 20  # … and at least this many


def _proc_kib(path: str, field: str) -> int | None:
    """A `field:  N kB` line of a /proc file, in bytes (None: no such file or line)."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def anonymous_memory() -> int | None:
    """This process's anonymous resident memory in bytes (None: unknown)."""
    return _proc_kib("/proc/self/status", "RssAnon")


def available_memory() -> int | None:
    """The memory the system can give without swapping, in bytes (None: unknown)."""
    return _proc_kib("/proc/meminfo", "MemAvailable")


def gigabytes(n: float) -> str:
    """Bytes as the error says them: GB, or MB below one."""
    return f"{n / (1 << 30):.1f} GB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MB"


def projected_peak(first: tuple[float, int], now: tuple[float, int]) -> int:
    """The peak of a reading that held `first` = (share of its captures read, anonymous bytes) when it first told
    its progress, and holds `now` (the same), once the table is whole and the steps run on it: what it held
    before the table began, and `PEAK_FACTOR` times the growth per share."""
    (share0, held0), (share, held) = first, now
    growth = max(held - held0, 0) / (share - share0)
    return int(held0 - growth * share0 + growth * PEAK_FACTOR)


@dataclass
class MemoryGuard:
    """Told how far reading has gone (a `Reading`), raises `NotEnoughMemory` once the projected peak passes
    `limit` bytes. `holding`: who reads the table, for the message (as "scans and hosts read")."""

    limit: int
    holding: str
    limit_given: bool = False  # the limit is the user's (--max-memory), not the memory available
    first: tuple[float, int] | None = None  # (share read, anonymous bytes) at the first progress

    @classmethod
    def of(cls, limit: int | None, holding: str) -> MemoryGuard | None:
        """The guard of a reading about to begin: `limit` bytes (None: what is available now, beside what the
        process holds; 0: no guard). None where there is nothing to check."""
        held = anonymous_memory()
        if limit == 0 or held is None:
            return None
        if limit is not None:
            return cls(limit, holding, limit_given=True)
        available = available_memory()
        return None if available is None else cls(held + available, holding)

    def __call__(self, reading: Reading) -> None:
        held = anonymous_memory()
        if reading.bytes_total <= 0 or held is None:
            return
        share = reading.bytes_done / reading.bytes_total
        if self.first is None:
            self.first = (share, held)
            return
        if share - self.first[0] < MIN_SHARE or reading.bytes_done < MIN_BYTES:
            return
        peak = projected_peak(self.first, (share, held))
        if peak > self.limit:
            limit = f"--max-memory {gigabytes(self.limit)}" if self.limit_given else f"{gigabytes(self.limit)} available"
            raise NotEnoughMemory(
                f"{self.holding} the packets table whole: about {gigabytes(peak)} at the peak for these captures, "
                f"projected after reading {share:.0%} of {gigabytes(reading.bytes_total)}, {limit}; read a part of "
                "them (--since/--until, --host/--net/--port) or fewer files, or set the limit with --max-memory")
