"""Whether a whole packets table will fit: a reading's memory projected from what reading has taken so far.

`scans`, `hosts`, `report` and an `rtt` of captures under 2 GB read the captures' packets into one table. Its size
follows the packets, not the bytes on disk (a capture of 60-byte SYNs takes twice its size in memory, one of
full-size frames a tenth of it), so it is measured while the captures are read: the growth of the process's
anonymous memory (`RssAnon`: its own, not the pages of the files it maps) per share of the captures' bytes read,
from the first time reading tells its progress (after the reader has indexed a file's records, which it holds
throughout). Reading and matching take up to `PEAK_FACTOR` times that growth at their peak: the reader makes its
columns whole at the end. Measured on the spam bot's traffic: of 0.98 GB, 1.8 GB projected by the end of reading
and 1.7 GB at matching's peak; of 9.84 GB, 16.6 GB projected after a tenth and 10.3 GB at reading's peak. The
projection may be two thirds too high early on; it stops a run that cannot fit after a tenth of its bytes.

Captures that `scans` and `hosts` read a chunk at a time (analysis/screen.py) hold no whole table: only
`before_steps` checks them, once matched, with the rows the screen kept as the packets. `rtt` read a chunk at a time
holds no whole table either; past `--buffer-size` its probes wait on disk by buckets of targets, and `before_bucket`
checks each bucket before it is read (a target's probes are tested together: a scan of one machine is one bucket).

Once the table is read and matched, `before_steps` checks again with what is then known: the memory held, and
what `scans` and `hosts` add for so many packets and probes (`SCAN_BYTES_PER_PACKET`, `SCAN_BYTES_PER_PROBE`,
`HOST_BYTES_PER_PACKET`, `HOST_BYTES_PER_SLICE_ROW`, measured): a capture whose every packet is a probe (nmap's
runs) takes `scans` several times its table, which reading alone cannot see.

(Measured once matched: 731 MB projected for nmap's scans 25 times, 668 MB at the peak; 11.9 GB for the spam bot's
9.84 GB, 10.3 GB at the peak, which is reading's; 535 MB for the benchmark's scan, 351 MB at the peak: the more held
memory glibc has not given back, the higher.) When either projection passes the memory the run may take (by
default what the system had available when reading began, `MemAvailable`, beside what the process held), the run
stops with `NotEnoughMemory`, a one-line error, instead of the kernel's out-of-memory killer ending the process
later without a word. Where /proc is not there (not Linux), nothing is checked.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import NotEnoughMemory
from .stream import Reading

PEAK_FACTOR = 2.1  # reading's and matching's peak, in the memory reading grew by
# What the steps add at their peak, once the packets are matched: scans screens every packet's TCP flags and 4-tuple
# and holds a row of readings per probe; hosts reads a slice of the table at a time and keeps per slice its rows'
# hosts, and per reply and per host what it tallies. Measured with glibc giving freed memory back
# (MALLOC_MMAP_THRESHOLD_=262144): scans added 1,316 MB for the spam bot's 71.2 million packets and 3.09 million
# probes (its 9.84 GB), 318 MB for its 7.1 million packets and 0.31 million probes, 436 MB for nmap's scans 25 times
# (1.08 million packets, 1.06 million probes), 148 MB for the benchmark's scan (1.31 million packets, 0.66 million
# probes); hosts 883 MB, 289 MB, 78 MB and 84 MB.
SCAN_BYTES_PER_PACKET = 25
SCAN_BYTES_PER_PROBE = 420
HOST_BYTES_PER_PACKET = 16
HOST_BYTES_PER_SLICE_ROW = 60  # … and per row of its largest slice (hosts.SLICE_ROWS)
# What `rtt` adds at its peak while it analyses a bucket of targets (analysis/buckets.py), per byte the bucket takes
# on disk: a target's probes are tested together. Measured on ten copies of the benchmark capture (6.55 million
# probes of one target, one bucket: 557 MB on disk for signals, 275 MB for RTT alone): 1,552 MB and 1,015 MB.
BUCKET_PEAK_FACTOR = {"signals": 3.0, "families": 4.0}
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
    held: str = "the packets table whole"  # what the steps hold, for the message
    first: tuple[float, int] | None = None  # (share read, anonymous bytes) at the first progress

    @classmethod
    def of(cls, limit: int | None, holding: str, held: str = "the packets table whole") -> MemoryGuard | None:
        """The guard of a reading about to begin: `limit` bytes (None: what is available now, beside what the
        process holds; 0: no guard). None where there is nothing to check."""
        now = anonymous_memory()
        if limit == 0 or now is None:
            return None
        if limit is not None:
            return cls(limit, holding, limit_given=True, held=held)
        available = available_memory()
        return None if available is None else cls(now + available, holding, held=held)

    def __call__(self, reading: Reading) -> None:
        if reading.bytes_total <= 0:
            return
        share = reading.bytes_done / reading.bytes_total
        if self.first is not None and (share - self.first[0] < MIN_SHARE or reading.bytes_done < MIN_BYTES):
            return  # (too little read since the first look to project from: /proc is not read)
        held = anonymous_memory()
        if held is None:
            return
        if self.first is None:
            self.first = (share, held)
            return
        peak = projected_peak(self.first, (share, held))
        if peak > self.limit:
            self._stop(peak, f"projected after reading {share:.0%} of {gigabytes(reading.bytes_total)}")

    def before_steps(self, packets: int, probes: int, steps: tuple[str, ...], slice_rows: int) -> None:
        """Once the table is read and matched: raises `NotEnoughMemory` when what `scans` and `hosts` (those of
        `steps`; hosts reads `slice_rows` packets at a time) add at their peak, for this many packets and probes,
        would pass the limit. They run one after the other: the peak is the larger."""
        held = anonymous_memory()
        if held is None:
            return
        scans = SCAN_BYTES_PER_PACKET * packets + SCAN_BYTES_PER_PROBE * probes if "scans" in steps else 0
        hosts = (HOST_BYTES_PER_PACKET * packets + HOST_BYTES_PER_SLICE_ROW * min(packets, slice_rows)
                 if "hosts" in steps else 0)
        peak = held + max(scans, hosts)
        if peak > self.limit:
            self._stop(peak, f"for {packets:,} packets and {probes:,} probes, once matched")

    def before_bucket(self, on_disk: int, steps: tuple[str, ...]) -> None:
        """Before a bucket of targets `on_disk` bytes in its file is read and analysed (`steps`, of
        `BUCKET_PEAK_FACTOR`): raises `NotEnoughMemory` when what they add at their peak would pass the limit."""
        held = anonymous_memory()
        if held is None:
            return
        peak = held + int(max(BUCKET_PEAK_FACTOR.get(step, 0) for step in steps) * on_disk)
        if peak > self.limit:
            self._stop(peak, f"for a bucket of targets of {gigabytes(on_disk)} on disk")

    def _stop(self, peak: int, when: str) -> None:
        limit = f"--max-memory {gigabytes(self.limit)}" if self.limit_given else f"{gigabytes(self.limit)} available"
        raise NotEnoughMemory(
            f"{self.holding} {self.held}: about {gigabytes(peak)} at the peak for these captures, "
            f"{when}, {limit}; read a part of them (--since/--until, --host/--net/--port) or fewer files, or set "
            "the limit with --max-memory")
