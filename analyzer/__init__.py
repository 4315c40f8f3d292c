"""synlens analyzer: captures → packets → matched probes → RTT statistics → port families, scans, hosts.

The public API, each step a pure function over DataFrames::

    packets = read("scan.pcap")                 # packets table (analyzer.schema)
    probes = match(packets)                     # one row per probe, its reply, RTT (ns)
    stats = rtt(probes)                         # per (target, protocol, port): sent, loss, RTT statistics (µs)
    fams = families(probes)                     # stats plus each port's RTT family
    pairs = pairwise(probes)                    # every pair of ports: t, dof, p, Holm-adjusted p
    ports, fam = signal_families(packets, probes)   # families from RTT, TTL, stack, clock, IP ID + evidence
    found, states = scans(packets, probes)      # scan phases, and each probed port's state
    host_table = hosts(packets, probes, states, found)  # MAC, vendor, OS hints with evidence

Each name is imported from its module on first use: importing the package loads neither pandas nor numpy,
so the `synlens` command (analyzer.__main__) sets up its process before they load. Four names are both a
function and the module that holds it (families, hosts, match, scans): here, as `from analyzer import …`
gives them, they are the functions; the modules are imported by their full names (analyzer.match, …).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

# name → (module, attribute)
_API = {
    "CaptureError": ("errors", "CaptureError"), "CaptureWarning": ("errors", "CaptureWarning"),
    "TTest": ("analysis.stats", "TTest"), "families": ("analysis.families", "families"), "hosts": ("analysis.hosts", "hosts"),
    "match": ("analysis.match", "match"), "match_columns": ("analysis.match", "match_columns"),
    "pairwise": ("analysis.families", "pairwise"),
    "pooled_t": ("analysis.stats", "pooled_t"), "port_stats": ("analysis.stats", "port_stats"), "read": ("reading.packets", "read"),
    "rtt": ("analysis.stats", "port_stats"), "scans": ("analysis.scans", "scans"),
    "signal_families": ("analysis.signals", "signal_families"),
    "yuen_welch": ("analysis.stats", "yuen_welch"),
}
__all__ = [
    "CaptureError", "CaptureWarning", "TTest", "families", "hosts", "match", "match_columns", "pairwise", "pooled_t",
    "port_stats", "read", "rtt", "scans", "signal_families", "yuen_welch",
]  # (_API's names: tests/test_import.py checks the two agree)

if TYPE_CHECKING:
    from .analysis.families import families, pairwise
    from .analysis.hosts import hosts
    from .analysis.match import match, match_columns
    from .analysis.scans import scans
    from .analysis.signals import signal_families
    from .analysis.stats import TTest, pooled_t, port_stats, yuen_welch
    from .errors import CaptureError, CaptureWarning
    from .reading.packets import read

    rtt = port_stats


class _Package(types.ModuleType):
    """The package module: API names resolve on first use, and keep naming the functions when the import
    system binds a submodule of the same name to the package (it does so on that submodule's first import)."""

    def __getattr__(self, name: str) -> object:
        if name not in _API:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        module, attribute = _API[name]
        value = getattr(importlib.import_module(f"{self.__name__}.{module}"), attribute)
        super().__setattr__(name, value)
        return value

    def __setattr__(self, name: str, value: object) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return  # (the submodule stays reachable by its full name: `from analyzer.match import …`)
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(_API))


sys.modules[__name__].__class__ = _Package
