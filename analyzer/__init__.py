"""synlens analyzer: captures → packets → matched probes → RTT statistics → port families.

The public API, each step a pure function over DataFrames::

    packets = read("scan.pcap")       # packets table (analyzer.schema)
    probes = match(packets)           # one row per probe, its reply, RTT (ns)
    stats = rtt(probes)               # per (target, protocol, port): sent, loss, RTT statistics (µs)
    fams = families(probes)           # stats plus each port's family
    pairs = pairwise(probes)          # every pair of ports: t, dof, p, Holm-adjusted p
"""

from .errors import CaptureError, CaptureWarning
from .families import families, pairwise
from .match import match
from .packets import read
from .stats import TTest, port_stats, pooled_t, yuen_welch

rtt = port_stats

__all__ = [
    "CaptureError", "CaptureWarning", "TTest", "families", "match", "pairwise", "pooled_t", "port_stats",
    "read", "rtt", "yuen_welch",
]
