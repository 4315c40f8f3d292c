"""RTT samples per port → families: sets of ports whose round-trip times are alike.

Two methods (docs/families.md says why in full):

``robust`` (default)
    Ports are compared only where they were sampled together: in sampling blocks (`sampling_blocks`: trips, one
    pass over the ports each, cut into windows of at most BLOCK_S seconds), because an RTT drifts while a scan
    runs and two moments differ more than two ports of one machine. A port with samples in fewer than MIN_TRIPS
    blocks shared with other ports is "untestable": RTT cannot set it apart. Over the testable ports, divisive:
    a set is one family unless Skillings–Mack's blocked rank test on log RTT (Friedman's where blocks are
    complete; `stats.skillings_mack`) rejects "all alike" at the set's share of α = 1 - confidence; then it is
    cut where the between-group sum of squares of the ports' floors (lower-half means of log RTT, the block
    effect taken out) is largest, among cuts whose sides were sampled together in MIN_TRIPS blocks and clear the
    equivalence margins (floors ≥ 1.25× and ≥ 30 µs apart); each part is examined the same way. True families
    are disjoint, so the chance of splitting any of them falsely is at most α. Families are numbered by floor,
    fastest first.

``qscan``
    nmap's qscan.nse: ports in port order, each unassigned port opens a family and absorbs every later
    unassigned port whose pooled-variance Student t is below the critical value. The critical value is
    `scipy.stats.t.ppf(confidence, n1 + n2 - 2)` (scipy.special.stdtrit) applied to |t|, which is qscan's own (one-sided
    quantile, absolute statistic): at confidence C it is a two-sided test at α = 2(1 - C).
    ``qscan-table`` uses qscan's hard-coded table as shipped, errors included, to reproduce nmap exactly.
    A port with fewer than two samples is untestable.

Ports with no reply form one "no answer" family per target; untestable ports get no family (-1).
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from .columns import ranges
from .groups import group_ids, group_positions, stable_order, unique_inverse
from .stats import (
    DEFAULT_TRIM,
    _grouped_samples,
    _port_stats,
    _PortKeys,
    _special,
    holm,
    rtt_samples,
    select_probes,
    skillings_mack,
    sorted_blocks,
    summarize,
    yuen_welch_matrix,
)

METHODS = ("robust", "qscan", "qscan-table")
DEFAULT_CONFIDENCE = {"robust": 0.99, "qscan": 0.95, "qscan-table": 0.95}
MIN_SAMPLES = 2  # qscan's methods: fewer cannot be tested at all
# The evidence rule of `robust`: a port's RTT can set it apart only with samples in at least this many sampling
# blocks (trips) shared with other ports (docs/families.md says why, with the simulation).
MIN_TRIPS = 5
# A sampling block spans at most this long: a trip longer than this (a pass over thousands of ports) is cut
# into windows of it, so that what a block's ports share is one moment of the network, not minutes of drift.
BLOCK_S = 10.0
# Equivalence margins: floors closer than this are one path. Measured in the namespace lab, one host's
# ports differ by up to ~1.5x at tens of µs (scheduling, timer and drift over a scan); a forwarded
# hop adds far more. Both must be exceeded; callers can lower them for quiet networks.
MIN_RATIO = 1.25
MIN_DIFF_US = 30.0
# Below this an RTT is a timestamp artefact; flooring it keeps log() finite.
_FLOOR_US = 0.001


def sampling_blocks(group: np.ndarray, port: np.ndarray, ts_ns: np.ndarray | None,
                    block_s: float = BLOCK_S) -> np.ndarray:
    """Each probe's sampling block: an id shared by the probes of one (target, protocol) `group` sent in one trip
    and one window of at most `block_s` seconds of it. Probes are taken in time order (`ts_ns`; row order
    where None); a trip is one pass over the ports, as qscan and synlens-agent send them: a probe opens a new
    trip when its port was probed already in the current one (so a trip never holds a port twice, and a
    scan that probes each port once is one trip). Ids are numbered in order of first appearance.
    """
    n = len(port)
    if not n:
        return np.zeros(0, np.int64)
    group = np.asarray(group, np.int64)
    ts = np.arange(n, dtype=np.int64) if ts_ns is None else np.asarray(ts_ns, np.int64)
    order = np.lexsort((np.arange(n), ts, group))
    out = np.empty(n, np.int64)
    out[order] = _blocks_in_order(group[order], group_ids(group[order], np.asarray(port, np.int64)[order]),
                                  ts[order], None, block_s if ts_ns is not None else np.inf)
    return out


def _blocks_in_order(group: np.ndarray, key: np.ndarray, ts: np.ndarray, by_key: np.ndarray | None,
                     block_s: float) -> np.ndarray:
    """`sampling_blocks` of probes given in (group, time) order; `key` tells their ports apart (within and across
    groups), `by_key` (optional) is the rows' stable order by key, when the caller has it."""
    n = len(key)
    one = not n or group[0] == group[-1]  # (sorted: one group)
    trip = _trips(group, key, by_key, one)
    run = trip if one else group * (n + 1) + trip  # (each (group, trip) is one run of the rows)
    starts = np.flatnonzero(np.r_[True, run[1:] != run[:-1]])
    if np.isfinite(block_s) and n:
        length = np.diff(np.append(starts, n))
        span = ts[np.append(starts[1:], n) - 1] - ts[starts]
        if (span >= block_s * 1e9).any():  # (a trip longer than a block: windows of it)
            window = (ts - np.repeat(ts[starts], length)) // max(int(block_s * 1e9), 1)
            return group_ids(run, window)
    # Each run one block: numbered in order (a single group's trips are 0, 1, … already).
    return trip if one else np.repeat(np.arange(len(starts)), np.diff(np.append(starts, n)))


def _trips(group: np.ndarray, key: np.ndarray, by_key: np.ndarray | None = None, one: bool = False) -> np.ndarray:
    """Trip numbers of probes in time order within sorted `group`s (`key`: their port's id): the least
    non-decreasing numbering (per group) under which a probe's trip is past its port's previous probe's:
    trip(i) = max(trip(i - 1), trip(previous probe of i's port) + 1), by a fixed-point iteration over whole
    arrays. It starts from each probe's count of earlier probes of its port (a bound from below, and the answer
    itself where every trip visits the ports in one order, as qscan's and the agent's do), so it ends at once
    there; each further round settles at least one more trip. `one`: every row is of one group."""
    n = len(key)
    by_key = stable_order(key) if by_key is None else by_key
    sorted_key = key[by_key]
    same = sorted_key[1:] == sorted_key[:-1]
    starts = np.flatnonzero(np.r_[True, ~same])
    occurrence = np.empty(n, np.int64)
    occurrence[by_key] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    # A running maximum within each group: the groups' offsets keep one group's trips from lifting the next's.
    offset = 0 if one or not n else (np.asarray(group, np.int64) - int(group.min())) * (n + 1)

    def settle(trip: np.ndarray) -> np.ndarray:
        return np.maximum.accumulate(trip + offset) - offset if not one else np.maximum.accumulate(trip)

    trip = settle(occurrence)
    if np.array_equal(trip, occurrence):  # (each probe one past its port's previous one already: settled)
        return trip
    previous = np.full(n, -1, np.int64)
    previous[by_key[1:][same]] = by_key[:-1][same]
    has = previous >= 0
    while True:
        lifted = trip.copy()
        lifted[has] = np.maximum(trip[has], trip[previous[has]] + 1)
        lifted = settle(lifted)
        if np.array_equal(lifted, trip):
            return trip
        trip = lifted


def _check_confidence(confidence: float) -> None:
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")


def group_robust(samples: list[np.ndarray], confidence: float = 0.99, min_ratio: float = MIN_RATIO,
                 min_diff_us: float = MIN_DIFF_US, blocks: list[np.ndarray] | None = None) -> np.ndarray:
    """Family label per port (0 = fastest; -1: untestable). Samples are RTTs in µs; `blocks` gives each sample's
    sampling block (`sampling_blocks`): by default the i-th sample of every port is in block i (qscan's trips).

    A port is testable when it has samples in at least MIN_TRIPS blocks that also hold another port's sample.
    Divisive over the testable ports: a set is one family unless Skillings–Mack's blocked rank test rejects "all
    alike" at its share of α = 1 - confidence; then it is cut in two where the between-group sum of squares of
    the ports' block-aligned floors is largest, among the cuts whose sides differ by `min_ratio` and
    `min_diff_us` and were sampled together in at least MIN_TRIPS blocks; each part is examined the same way.
    """
    _check_confidence(confidence)
    if blocks is None:
        blocks = [np.arange(len(s)) for s in samples]
    if not len(samples):
        return np.zeros(0, int)
    values = np.concatenate([np.asarray(s, float).reshape(-1) for s in samples])
    block = np.concatenate([np.asarray(b, np.int64).reshape(-1) for b in blocks])
    port = np.repeat(np.arange(len(samples)), [len(s) for s in samples])
    return _group_blocked(_block_matrix(values, block, port, len(samples)), confidence, min_ratio, min_diff_us)


def _block_matrix(values: np.ndarray, block: np.ndarray, port: np.ndarray, k: int) -> np.ndarray:
    """Log RTTs (µs) as a blocks × ports matrix, NaN where a port has no sample in a block (a port's second
    sample in one block, which a trip never holds, overwrites the first)."""
    logs = np.log(np.maximum(values, _FLOOR_US))
    size = len(values) // max(k, 1)
    if size * k == len(values) and (block.reshape(k, size) == block[:size]).all() and (
            np.unique(block[:size]).size == size):
        # Every port sampled once in each of the same blocks (qscan's trips, no loss): the matrix as it lies.
        return logs.reshape(k, size)[:, np.argsort(block[:size], kind="stable")].T.copy()
    rows, at = unique_inverse(block)
    x = np.full((len(rows), k), np.nan)
    x[at, port] = logs
    return x


def testable(present: np.ndarray, min_trips: int = MIN_TRIPS) -> np.ndarray:
    """Which ports (columns of a blocks × ports presence matrix) meet the evidence rule: samples in at least
    `min_trips` blocks that hold a sample of another testable port too (repeated until it holds for all)."""
    if present.shape[1] >= 2 and present.shape[0] >= min_trips and present.all():
        return np.ones(present.shape[1], bool)
    ok = present.any(axis=0)
    while True:
        shared = present & ok & ((present & ok).sum(axis=1, keepdims=True) >= 2)
        now = ok & (shared.sum(axis=0) >= min_trips)
        if (now == ok).all():
            return now
        ok = now


def _group_blocked(x: np.ndarray, confidence: float, min_ratio: float, min_diff_us: float) -> np.ndarray:
    """`group_robust` of a blocks × ports matrix of log RTTs (NaN: no sample)."""
    _check_confidence(confidence)
    k = x.shape[1]
    labels = np.full(k, -1)
    ok = np.flatnonzero(testable(~np.isnan(x)))
    if not len(ok):
        return labels
    x = x[:, ok]
    x = x[~np.isnan(x).all(axis=1)]  # (blocks of untestable ports only)
    present = ~np.isnan(x)
    floor = _floors(x, present)
    alpha = 1.0 - confidence
    n_ok = len(ok)
    pending, leaves = [np.arange(n_ok)], []
    while pending:
        node = pending.pop()
        # α is spent in proportion to the node's share of ports: the true families are disjoint, so
        # the tests that could split one of them falsely spend at most α in all (family-wise control).
        # (the cut is found first: where none clears the margins, the node stays whole whatever the test says,
        # and the test is not needed)
        cut = None if len(node) < 2 else _best_cut(floor, present.sum(axis=0), node, present, np.log(min_ratio),
                                                   min_diff_us)
        if cut is None or skillings_mack(x[:, node]).pvalue > alpha * len(node) / n_ok:
            leaves.append(node)
            continue
        pending += list(cut)
    sub = np.zeros(n_ok, int)
    for i, leaf in enumerate(leaves):
        sub[leaf] = i
    labels[ok] = _number_by_speed(sub, floor)
    return labels


def _floors(x: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Each port's floor (`_floor_locations`) of its log RTTs less the time effect: what the blocks × ports
    matrix `x` (blocks in time order) shares per block: one sweep of Tukey's median polish (each block's median of
    its ports' log RTTs less their medians), smoothed by a running median over each block and its two neighbours
    (the time effect moves over minutes, blocks are seconds apart: the smoothing damps the noise a block's few
    ports put in its estimate); the median block effect is added back, so that floors keep their scale in µs.
    In the drift simulation (tests/test_families_drift.py) this finds a forwarded trio in 95.8 % of targets over
    ten seeds where the floors of the raw RTTs find it in 93.9 %; without drift, 96.5 % and 96.8 %."""
    # (a block or port with no sample: NaN, taken as no effect)
    block = np.nan_to_num(_median_of(x - np.nan_to_num(_median_of(x, axis=0))[None, :], axis=1))
    if len(block) >= 3:
        block = np.median(np.lib.stride_tricks.sliding_window_view(np.r_[block[0], block, block[-1]], 3), axis=1)
    aligned = x - block[:, None]
    if present.all():  # (every port in every block: one sorted row of B values per port, no gather)
        rows = [(x.shape[0], np.arange(x.shape[1]), np.sort(aligned.T, axis=1))]
    else:
        rows = sorted_blocks(aligned.T[present.T], present.sum(axis=0))
    return _floor_locations(rows, x.shape[1]) + float(np.median(block))


def _median_of(x: np.ndarray, axis: int) -> np.ndarray:
    """np.nanmedian along `axis` (NaN where all are NaN), by one sort: numpy's median partitions, several times
    slower for the shapes here (a few blocks of thousands of ports), and its nanmedian slower still."""
    s = np.sort(x, axis=axis)  # (NaN last)
    count = (~np.isnan(s)).sum(axis=axis, keepdims=True)
    lo = np.take_along_axis(s, np.maximum(count - 1, 0) // 2, axis=axis)
    hi = np.take_along_axis(s, np.minimum(count // 2, s.shape[axis] - 1), axis=axis)
    return np.where(count > 0, (lo + hi) / 2, np.nan).squeeze(axis=axis)


def _floor_locations(blocks: list[tuple[int, np.ndarray, np.ndarray]], k: int) -> np.ndarray:
    """Where each port's path floor lies, from `sorted_blocks` of log RTTs: the mean of the lower half of its
    log RTTs, far-out low values raised.

    RTT = path delay + non-negative queueing and scheduling delay, so the path shows in the lower part
    of the distribution; the upper half is mostly queueing noise (and spikes). Nothing is faster than the
    path, so a value far below the rest is a timing artefact, not a path: one reply timed 7 µs after its
    probe among replies of 70-100 µs (seen in the lab) dragged its port's floor down by a third on the log
    scale and split two ports of one machine (it lay 14 interquartile ranges below the first quartile).
    Values more than 5 interquartile ranges below the first quartile of the log RTTs (Tukey's far-out fence
    is 3; at 5 it moves 1 port in 2,000 of tests/test_families.py's simulation) are raised to the lowest value
    above that before the mean. Used to place cuts and check their margins; not to test.
    """
    out = np.full(k, np.nan)
    for size, rows, x in blocks:
        if size:
            q1, q3 = np.quantile(x, [0.25, 0.75], axis=1)
            inside = (x >= (q1 - 5 * (q3 - q1))[:, None]).argmax(axis=1)  # each row's lowest value inside
            lower = np.maximum(x[:, : max(1, (size + 1) // 2)], x[np.arange(len(x)), inside][:, None])
            out[rows] = lower.mean(axis=1)
    return out


def _best_cut(location: np.ndarray, size: np.ndarray, node: np.ndarray, present: np.ndarray,
              min_log_ratio: float, min_diff_us: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Cut the node's ports, sorted by floor location, where the between-group sum of squares is largest
    among the cuts whose two sides differ by the margins and were sampled together (a block holding a sample
    of each side) in at least MIN_TRIPS blocks; None when no cut does."""
    order = node[np.lexsort((node, location[node]))]
    w, x = size[order].astype(float), location[order]
    wl, wxl = np.cumsum(w)[:-1], np.cumsum(w * x)[:-1]
    wr, wxr = w.sum() - wl, (w * x).sum() - wxl
    mean_l, mean_r = wxl / wl, wxr / wr
    between = wl * wr / (wl + wr) * (mean_l - mean_r) ** 2

    def apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (b - a >= min_log_ratio) & (np.exp(b) - np.exp(a) >= min_diff_us)

    # Each side's mean floor must clear the other side's nearest port too, not only its mean: a wide lower
    # group (ports 1.2x apart) must not make its slowest member's neighbour look far.
    wide = apart(mean_l, mean_r) & apart(x[:-1], mean_r) & apart(mean_l, x[1:])
    # And the two sides must have been compared: ports never sampled at the same time are never cut apart.
    p = present[:, order]
    left = np.cumsum(p, axis=1)[:, :-1] > 0
    right = np.cumsum(p[:, ::-1], axis=1)[:, ::-1][:, 1:] > 0
    wide &= (left & right).sum(axis=0) >= MIN_TRIPS
    if not wide.any():
        return None
    cut = int(np.argmax(np.where(wide, between, -np.inf))) + 1
    return order[:cut], order[cut:]


def _number_by_speed(labels: np.ndarray, location: np.ndarray) -> np.ndarray:
    """Labels 0..n-1 (each used) renumbered by their members' median location, fastest first (ties: by label)."""
    n = int(labels.max()) + 1 if len(labels) else 0
    order = sorted(range(n), key=lambda lab: np.median(location[labels == lab]))
    rank = np.empty(n, int)
    rank[order] = np.arange(n)
    return rank[labels]


# qscan.nse's table, as shipped (rows: dof 1..20, 25, 30 … 100; columns: its confidence levels).
_QSCAN_LEVELS = (0.75, 0.9, 0.95, 0.975, 0.99, 0.995, 0.9995)
_QSCAN_TABLE = np.array([
    [1.0000, 3.0777, 6.3138, 12.7062, 31.8207, 63.6574, 636.6192], [0.8165, 1.8856, 2.9200, 4.3027, 6.9646, 9.9248, 31.5991],
    [0.7649, 1.6377, 2.3534, 3.1824, 4.5407, 5.8409, 12.9240], [0.7407, 1.5332, 2.1318, 2.7764, 3.7649, 4.6041, 8.6103],
    [0.7267, 1.4759, 2.0150, 2.5706, 3.3649, 4.0322, 6.8688], [0.7176, 1.4398, 1.9432, 2.4469, 3.1427, 3.7074, 5.9588],
    [0.7111, 1.4149, 1.8946, 2.3646, 2.9980, 3.4995, 5.4079], [0.7064, 1.3968, 1.8595, 3.3060, 2.8965, 3.3554, 5.0413],
    [0.7027, 1.3830, 1.8331, 2.2622, 2.8214, 3.2498, 4.7809], [0.6998, 1.3722, 1.8125, 2.2281, 2.7638, 1.1693, 4.5869],
    [0.6974, 1.3634, 1.7959, 2.2010, 2.7181, 3.1058, 4.4370], [0.6955, 1.3562, 1.7823, 2.1788, 2.6810, 3.0545, 4.3178],
    [0.6938, 1.3502, 1.7709, 2.1604, 2.6403, 3.0123, 4.2208], [0.6924, 1.3450, 1.7613, 2.1448, 2.6245, 2.9768, 4.1405],
    [0.6912, 1.3406, 1.7531, 2.1315, 2.6025, 2.9467, 4.0728], [0.6901, 1.3368, 1.7459, 2.1199, 2.5835, 2.9208, 4.0150],
    [0.6892, 1.3334, 1.7396, 2.1098, 2.5669, 2.8982, 3.9651], [0.6884, 1.3304, 1.7341, 2.1009, 2.5524, 2.8784, 3.9216],
    [0.6876, 1.3277, 1.7291, 2.0930, 2.5395, 2.8609, 3.8834], [0.6870, 1.3253, 1.7247, 2.0860, 2.5280, 2.8453, 3.8495],
    [0.6844, 1.3163, 1.7081, 2.0595, 2.4851, 2.7874, 3.7251], [0.6828, 1.3104, 1.6973, 2.0423, 2.4573, 2.7500, 3.6460],
    [0.6816, 1.3062, 1.6896, 2.0301, 2.4377, 2.7238, 3.5911], [0.6807, 1.3031, 1.6839, 2.0211, 2.4233, 2.7045, 3.5510],
    [0.6800, 1.3006, 1.6794, 2.0141, 2.4121, 2.6896, 3.5203], [0.6794, 1.2987, 1.6759, 2.0086, 2.4033, 2.6778, 3.4960],
    [0.6786, 1.2958, 1.6706, 2.0003, 2.3901, 2.6603, 3.4602], [0.6780, 1.2938, 1.6669, 1.9944, 2.3808, 2.6479, 3.4350],
    [0.6776, 1.2922, 1.6641, 1.9901, 2.3739, 2.6387, 3.4163], [0.6772, 1.2910, 1.6620, 1.9867, 2.3685, 2.6316, 3.4019],
    [0.6770, 1.2901, 1.6602, 1.9840, 2.3642, 2.6259, 3.3905],
])


def qscan_table_quantile(confidence: float, dof: int) -> float:
    """qscan.nse's tinv(): its table lookup, with its row bucketing, errors and all."""
    if confidence not in _QSCAN_LEVELS:
        raise ValueError(f"qscan's table knows only confidence {_QSCAN_LEVELS}")
    if dof <= 20:
        row = dof - 1
    else:
        # 21–24 use the dof-20 row, 25–29 the "25" row, … , >= 100 the "100" row (qscan's tinv buckets)
        row = 19 + sum(dof >= b for b in (25, 30, 35, 40, 45, 50, 60, 70, 80, 90, 100))
    return float(_QSCAN_TABLE[row, _QSCAN_LEVELS.index(confidence)])


def group_qscan(samples: list[np.ndarray], confidence: float = 0.95, table: bool = False) -> np.ndarray:
    """qscan's greedy grouping over samples given in port order; labels in order of first appearance."""
    _check_confidence(confidence)
    k = len(samples)
    fam = np.full(k, -1)
    stats = [(len(s), float(np.mean(s)), float(np.var(s, ddof=1)) if len(s) > 1 else np.nan) for s in samples]
    nxt = 0
    for i in range(k):
        if fam[i] != -1:
            continue
        fam[i] = nxt
        nxt += 1
        n1, u1, v1 = stats[i]
        for j in range(k):
            if j == i or fam[j] != -1:
                continue
            n2, u2, v2 = stats[j]
            dof = n1 + n2 - 2
            with np.errstate(divide="ignore", invalid="ignore"):
                t = abs(u1 - u2) / np.sqrt((n1 + n2) / (n1 * n2) * (((n1 - 1) * v1 + (n2 - 1) * v2) / dof))
            crit = qscan_table_quantile(confidence, dof) if table else float(_special().stdtrit(dof, confidence))
            if t < crit:  # NaN (a zero-variance pair) is never below: qscan keeps such ports apart too
                fam[j] = fam[i]
    return fam


def families(matches: pd.DataFrame, *, method: str = "robust", confidence: float | None = None,
             probes: str = "syn", min_ratio: float = MIN_RATIO, min_diff_us: float = MIN_DIFF_US) -> pd.DataFrame:
    """Port statistics (`port_stats`) plus each port's family and its kind, per target.

    `family_kind`: "answered" (a tested family), "no answer" (no reply at all: one family per target),
    "untestable" (family -1: robust, fewer than MIN_TRIPS sampling blocks shared with other ports; qscan's
    methods, fewer than two samples). Families are numbered per target from 0. The probes' send times
    (`ts_ns`) place them in sampling blocks (`sampling_blocks`); without that column, row order stands for time.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    confidence = DEFAULT_CONFIDENCE[method] if confidence is None else confidence
    _check_confidence(confidence)
    m = select_probes(matches, probes)
    keys = _PortKeys(m)
    table, port_keys = _port_stats(m, keys)
    sample_keys, counts, values = _grouped_samples(m, keys)
    starts = np.zeros(len(counts), np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    # Each table row's samples: a slice of `values` (ports without samples have none).
    at = np.minimum(np.searchsorted(sample_keys, port_keys), max(len(sample_keys) - 1, 0))
    found = (sample_keys[at] == port_keys) if len(sample_keys) else np.zeros(len(port_keys), bool)
    n_samples = np.where(found, counts[at] if len(counts) else 0, 0)
    first = np.where(found, starts[at] if len(starts) else 0, 0)
    received = table["received"].to_numpy()
    family = np.full(len(table), -1)
    kind = np.array(["answered"] * len(table), dtype=object)
    probe_rows = _ProbeRows(m, keys)
    # Rows are sorted by (target, protocol, port): each (target, protocol) is one run of rows.
    run = keys.target_protocol(port_keys)
    bounds = np.flatnonzero(np.diff(run)) + 1
    runs = zip(np.concatenate([[0], bounds]).tolist(), np.concatenate([bounds, [len(run)]]).tolist()) if len(run) else ()
    for a, b in runs:
        idx = np.arange(a, b)
        silent = received[a:b] == 0
        labels = np.full(len(idx), -1)
        if method == "robust":
            # Only a run with two ports of MIN_TRIPS samples or more can meet the evidence rule.
            has = n_samples[a:b] > 0
            if (n_samples[a:b] >= MIN_TRIPS).sum() >= 2:
                lens = n_samples[a:b][has]
                sub = values[ranges(first[a:b][has], lens)]
                # (a run's samples are one slice of them, as of `values`)
                lo, hi = first[a:b][has][0], first[a:b][has][-1] + lens[-1]
                block = probe_rows.blocks[lo:hi]
                port = np.repeat(np.arange(int(has.sum())), lens)
                x = _block_matrix(sub, block, port, int(has.sum()))
                labels[has] = _group_blocked(x, confidence, min_ratio, min_diff_us)
        else:
            has = n_samples[a:b] >= MIN_SAMPLES
            if has.any():
                lens = n_samples[a:b][has]
                parts = np.split(values[ranges(first[a:b][has], lens)], np.cumsum(lens)[:-1])
                labels[has] = group_qscan(parts, confidence, table=method == "qscan-table")
        nxt = labels.max() + 1
        # Untestable ports get no family (-1): a number of their own would claim they differ.
        kind[idx[(labels < 0) & ~silent]] = "untestable"
        if silent.any():
            labels[silent] = nxt
            kind[idx[silent]] = "no answer"
        family[idx] = labels
    out = table.copy()
    out["family"] = family
    out["family_kind"] = kind
    out.attrs.update(method=method, confidence=confidence, probes=probes, min_ratio=min_ratio,
                     min_diff_us=min_diff_us, min_trips=MIN_TRIPS)
    return out


def family_medians(ports: pd.DataFrame, family: str = "family") -> pd.Series:
    """Each answered family's RTT median in µs: the median of its ports' RTT medians (`median_us`; ports without
    one left out), indexed by (target, protocol, family). The one source of the figure: the text's evidence, the
    JSON's families and the report's family tables all give this number for a family (`medians_by_family`)."""
    keys = [ports["target"].to_numpy(object), ports["protocol"].to_numpy(object)]
    fam = ports[family].to_numpy(np.int64)
    median = ports["median_us"].to_numpy(float)
    answered = (fam >= 0) & (ports["family_kind"] != "no answer").to_numpy(bool)
    index, values = [], []
    one = len(ports) and (keys[0][0] == keys[0]).all() and (keys[1][0] == keys[1]).all()
    groups = [np.arange(len(ports))] if one else group_positions(group_ids(*(pd.factorize(k)[0] for k in keys)))
    for rows in groups if len(ports) else []:
        for f, value in medians_by_family(fam[rows], median[rows], answered[rows]).items():
            index.append((keys[0][rows[0]], keys[1][rows[0]], f))
            values.append(value)
    return pd.Series(values, index=pd.MultiIndex.from_tuples(index, names=["target", "protocol", family]) if index
                     else pd.MultiIndex.from_tuples([], names=["target", "protocol", family]), dtype=float)


def medians_by_family(family: np.ndarray, median_us: np.ndarray, answered: np.ndarray) -> dict[int, float]:
    """One target's family → the median of its answered ports' `median_us` (NaN left out; NaN when none has
    one): `family_medians` for one (target, protocol), from its columns."""
    fam, value = family[answered], median_us[answered]
    order = np.lexsort((value, fam))  # (NaN last within a family)
    fam, value = fam[order], value[order]
    starts = np.flatnonzero(np.r_[True, fam[1:] != fam[:-1]]) if len(fam) else np.zeros(0, np.int64)
    counts = np.add.reduceat(~np.isnan(value), starts) if len(fam) else np.zeros(0, np.int64)
    lo, hi = starts + np.maximum(counts - 1, 0) // 2, starts + counts // 2
    hi = np.where(counts > 0, hi, lo)
    out = np.where(counts > 0, (value[lo] + value[hi]) / 2, np.nan) if len(fam) else np.zeros(0)
    return dict(zip(fam[starts].tolist(), out.tolist()))


class _ProbeRows:
    """The sampling blocks of the selected probes, made once for all targets when a first target needs them."""

    def __init__(self, m: pd.DataFrame, keys: _PortKeys) -> None:
        self.m, self.keys = m, keys

    @functools.cached_property
    def blocks(self) -> np.ndarray:
        """The sampling block of each RTT sample, in the order of `_grouped_samples`'s samples (key order)."""
        key, order = self.keys.key, self.keys.order
        n = len(key)
        timed = "ts_ns" in self.m.columns
        ts = self.m["ts_ns"].to_numpy(np.int64) if timed else np.arange(n, dtype=np.int64)
        group = self.keys.target_protocol(key)
        if not n or (ts[1:] >= ts[:-1]).all():
            # Probes tables are in time order (by first transmission): the rows need grouping only (not when
            # there is one target), and the key order (time order within each key) carries over to them.
            if not n or (group == group[0]).all():
                blocks = _blocks_in_order(group, key, ts, order, BLOCK_S if timed else np.inf)
                return blocks[order[~self.m["rtt_ns"].isna().to_numpy()[order]]]
            pos = stable_order(group)
            rank = np.empty(n, np.int64)
            rank[pos] = np.arange(n)
            by_key = rank[order]
        else:
            pos, by_key = np.lexsort((np.arange(n), ts, group)), None
        blocks = np.empty(n, np.int64)
        blocks[pos] = _blocks_in_order(group[pos], key[pos], ts[pos], by_key, BLOCK_S if timed else np.inf)
        sampled = order[~self.m["rtt_ns"].isna().to_numpy()[order]]
        return blocks[sampled]


def pairwise(matches: pd.DataFrame, *, confidence: float = 0.99, probes: str = "syn",
             trim: float = DEFAULT_TRIM) -> pd.DataFrame:
    """Every pair of testable ports of each target: Yuen–Welch t on log RTT, dof, p, Holm-adjusted p."""
    samples = rtt_samples(matches, probes=probes)
    rows = []
    by_target: dict[tuple[str, str], list[int]] = {}
    for (target, proto, port), s in sorted(samples.items()):
        if len(s) >= MIN_SAMPLES:
            by_target.setdefault((target, proto), []).append(port)
    for (target, proto), ports in by_target.items():
        logs = [np.log(np.maximum(samples[(target, proto, p)], _FLOOR_US)) for p in ports]
        t, dof, p = yuen_welch_matrix(summarize(logs, trim))
        iu = np.triu_indices(len(ports), 1)
        pv = np.nan_to_num(p[iu], nan=1.0)
        adj = holm(pv)
        for (i, j), pval, padj in zip(zip(*iu), pv, adj):
            rows.append((target, proto, ports[i], ports[j], t[i, j], dof[i, j], pval, padj, padj <= 1 - confidence))
    return pd.DataFrame(rows, columns=["target", "protocol", "port_a", "port_b", "statistic", "dof", "pvalue",
                                       "pvalue_holm", "different"])
