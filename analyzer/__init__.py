"""synlens analyzer: captures → packets → matched probes → RTT statistics → port families, scans, hosts.

The public API, each step a pure function over DataFrames::

    packets = read("scan.pcap")                 # packets table (analyzer.schema)
    packets = read_many(["a.pcap", "sensor2/"])  # several captures as one, merged by time (analyzer.dask: dask)
    probes = match(packets)                     # one row per probe, its reply, RTT (ns)
    stats = rtt(probes)                         # per (target, protocol, port): sent, loss, RTT statistics (µs)
    fams = families(probes)                     # stats plus each port's RTT family
    pairs = pairwise(probes)                    # every pair of ports: t, dof, p, Holm-adjusted p
    ports, fam = signal_families(packets, probes)   # families from RTT, TTL, stack, clock, IP ID + evidence
    found, states = scans(packets, probes)      # scan phases, and each probed port's state
    host_table = hosts(packets, probes, states, found)  # MAC, vendor, OS hints with evidence

or all of it in one call, the pipeline every `synlens` command runs (only the columns the steps read are
read, and each table is let go once used)::

    a = analyze("scan.pcap", ["scans", "hosts", "signals"])   # Analysis: a.scans, a.hosts, a.signals, a.notes

Each name is imported from its module on first use: importing the package loads neither pandas nor numpy,
so the `synlens` command (analyzer.__main__) sets up its process before they load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# name → (module, attribute)
_API = {
    "Analysis": ("pipeline", "Analysis"), "Options": ("pipeline", "Options"), "analyze": ("pipeline", "analyze"),
    "CaptureError": ("errors", "CaptureError"), "CaptureWarning": ("errors", "CaptureWarning"),
    "TTest": ("analysis.stats", "TTest"), "families": ("analysis.families", "families"), "hosts": ("analysis.hosts", "hosts"),
    "match": ("analysis.match", "match"), "match_columns": ("analysis.match", "match_columns"),
    "pairwise": ("analysis.families", "pairwise"),
    "pooled_t": ("analysis.stats", "pooled_t"), "port_stats": ("analysis.stats", "port_stats"), "read": ("reading.packets", "read"),
    "read_many": ("reading.many", "read_many"),
    "rtt": ("analysis.stats", "port_stats"), "scans": ("analysis.scans", "scans"),
    "signal_families": ("analysis.signals", "signal_families"),
    "yuen_welch": ("analysis.stats", "yuen_welch"),
}
__all__ = [
    "Analysis", "CaptureError", "CaptureWarning", "Options", "TTest", "analyze", "families", "hosts", "match",
    "match_columns", "pairwise", "pooled_t", "port_stats", "read", "read_many", "rtt", "scans", "signal_families", "yuen_welch",
]  # (_API's names: tests/test_import.py checks the two agree)

if TYPE_CHECKING:
    from .analysis.families import families, pairwise
    from .analysis.hosts import hosts
    from .analysis.match import match, match_columns
    from .analysis.scans import scans
    from .analysis.signals import signal_families
    from .analysis.stats import TTest, pooled_t, port_stats, yuen_welch
    from .errors import CaptureError, CaptureWarning
    from .pipeline import Analysis, Options, analyze
    from .reading.many import read_many
    from .reading.packets import read

    rtt = port_stats


def __getattr__(name: str) -> object:
    """An API name, imported from its module on first use (then bound here: later reads find it at once)."""
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _API[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
