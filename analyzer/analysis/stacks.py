"""What a TCP/IP stack's packets say of it, read the same way wherever they are read: TCP option layouts by
name, and IP ID sequences by class (hosts' OS hints and the families' ip_id signal both use them)."""

from __future__ import annotations

import numpy as np

from ..protocols import OPTION_NAMES
from .groups import stable_order

# IP ID sequence classes, as nmap's (simplified): every ID zero, one constant ID, incremental (one counter: more
# than 90 % of the steps between consecutive IDs under IP_ID_STEP, modulo 2^16), random; unknown below IP_ID_MIN
# IDs (two steps at least: one step tells no sequence).
IP_ID_CLASSES = ("unknown", "zero", "constant", "incremental", "random")
IP_ID_MIN = 3
IP_ID_STEP = 1000


def option_layout(kinds: int) -> str:
    """packets.tcp_options (kinds left-aligned, top byte first) → "MSS,SACK,TS,NOP,WS"."""
    names = []
    for shift in range(56, -1, -8):
        k = (kinds >> shift) & 0xFF
        if k == 0 and not names:
            continue
        if k == 0 and all(((kinds >> s) & 0xFF) == 0 for s in range(shift, -1, -8)):
            break
        names.append(OPTION_NAMES.get(k, str(k)))
    return ",".join(names)


def ip_id_class(ids: np.ndarray) -> str:
    """The class of one sequence of IP IDs (`ip_id_classes` of one group)."""
    return str(ip_id_classes(np.zeros(len(ids), np.int64), np.asarray(ids, np.int64), 1)[1][0])


def ip_id_classes(groups: np.ndarray, ids: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Per group (0..n_groups-1): how many IP IDs, and the class of its IDs in the order given (`IP_ID_CLASSES`;
    unknown below IP_ID_MIN of them)."""
    order = stable_order(groups)
    g, v = groups[order], ids[order]
    n = np.bincount(g, minlength=n_groups)
    first = v[np.minimum(np.cumsum(n) - n, max(len(v) - 1, 0))] if len(v) else np.zeros(n_groups, np.int64)
    zero = np.bincount(g, weights=v == 0, minlength=n_groups) == n
    constant = np.bincount(g, weights=v == first[g], minlength=n_groups) == n
    within = g[1:] == g[:-1]
    small_steps = np.bincount(g[1:][within], weights=(np.diff(v) % 65536 < IP_ID_STEP)[within], minlength=n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        incremental = small_steps / (n - 1) > 0.9
    classes = np.select([n < IP_ID_MIN, zero, constant, incremental], ["unknown", "zero", "constant", "incremental"], "random")
    return n, classes
