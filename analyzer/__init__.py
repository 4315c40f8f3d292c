"""synlens analyzer: captures → packets → matched probes → RTT statistics → port families, scans, hosts.

The public API, each step a pure function over DataFrames::

    packets = read("scan.pcap")                 # packets table (analyzer.schema)
    probes = match(packets)                     # one row per probe, its reply, RTT (ns)
    stats = rtt(probes)                         # per (target, protocol, port): sent, loss, RTT statistics (µs)
    fams = families(probes)                     # stats plus each port's RTT family
    pairs = pairwise(probes)                    # every pair of ports: t, dof, p, Holm-adjusted p
    ports, fam = signal_families(packets, probes)   # families from RTT, TTL, stack, clock, IP ID + evidence
    found, states = scans(packets, probes)      # scan phases, and each probed port's state
    host_table = hosts(packets, probes, states) # MAC, vendor, OS hints with evidence
"""

import gc as _gc

# The imports below (pandas, numpy and theirs) make a few hundred thousand objects that live as long as the
# process. Left to the cyclic collector, each young collection walks those made since the last, and they
# are walked again as they age: 50-60 ms of a command's start-up (measured with gc.callbacks), all of it
# finding nothing to free. So the collector pauses while they are made, and they are then moved straight
# to the oldest generation (freeze, then unfreeze: a list splice, no walk), where every object stays
# collectable as before.
_collecting = _gc.isenabled()
_gc.disable()
try:
    from .errors import CaptureError, CaptureWarning
    from .families import families, pairwise
    from .hosts import hosts
    from .match import match, match_columns
    from .packets import read
    from .scans import scans
    from .signals import signal_families
    from .stats import TTest, pooled_t, port_stats, yuen_welch
finally:
    _gc.freeze()
    _gc.unfreeze()
    if _collecting:
        _gc.enable()
    del _collecting

rtt = port_stats

__all__ = [
    "CaptureError", "CaptureWarning", "TTest", "families", "hosts", "match", "match_columns", "pairwise", "pooled_t",
    "port_stats",
    "read", "rtt", "scans", "signal_families", "yuen_welch",
]
