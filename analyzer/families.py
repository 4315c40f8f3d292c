"""RTT samples per port → families: sets of ports whose round-trip times are alike.

Two methods (README "Methods" says why in full):

``robust`` (default)
    Divisive, per target. A set of ports is one family unless Welch's heteroscedastic ANOVA on the
    10 %-trimmed means of log RTT (Lix & Keselman's robust form) rejects "all alike"; then the set is cut
    in two where the between-group sum of squares of the ports' floor locations (mean of the lower half
    of their log RTTs, far-out low values raised) is largest, and each part is examined the same way.
    Why each piece:
    log, because RTT is a path floor plus right-skewed queueing delay and a forwarded path shifts it
    multiplicatively; trimming, so one spike among ten replies cannot move a port; Welch, because
    forwarded ports also vary more; one omnibus test per set instead of k(k-1)/2 pairwise tests, because
    pooling gives the power that ten probes a port cannot; the floor to place the cut, because the path
    shows in the lower part of the distribution. α = 1 - confidence is spent in proportion to each set's
    share of the ports, and a cut must also clear equivalence margins (floors ≥ 1.25× and ≥ 30 µs
    apart): one path drifts by less over a scan. True families are disjoint, so the chance of splitting any of them falsely is at
    most α (family-wise control). Order-independent: only the data decide. Families are numbered by
    floor location, fastest first.

``qscan``
    nmap's qscan.nse: ports in port order, each unassigned port opens a family and absorbs every later
    unassigned port whose pooled-variance Student t is below the critical value. The critical value is
    `scipy.stats.t.ppf(confidence, n1 + n2 - 2)` (scipy.special.stdtrit) applied to |t|, which is qscan's own (one-sided
    quantile, absolute statistic): at confidence C it is a two-sided test at α = 2(1 - C).
    ``qscan-table`` uses qscan's hard-coded table as shipped, errors included, to reproduce nmap exactly.

Ports with no reply form one "no answer" family per target; a port with fewer than two RTT samples
cannot be tested and gets no family (-1, "too few samples").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .keys import ranges
from .stats import (
    DEFAULT_TRIM,
    Summary,
    _grouped_samples,
    _port_stats,
    _PortKeys,
    _special,
    holm,
    rtt_samples,
    select_probes,
    sorted_blocks,
    summarize,
    summarize_blocks,
    welch_anova,
    yuen_welch_matrix,
)

METHODS = ("robust", "qscan", "qscan-table")
DEFAULT_CONFIDENCE = {"robust": 0.99, "qscan": 0.95, "qscan-table": 0.95}
MIN_SAMPLES = 2
# Equivalence margins: floors closer than this are one path. Measured in the namespace lab, one host's
# ports differ by up to ~1.5x at tens of µs (scheduling, timer and drift over a scan); a forwarded
# hop adds far more. Both must be exceeded; callers can lower them for quiet networks.
MIN_RATIO = 1.25
MIN_DIFF_US = 30.0
# Below this an RTT is a timestamp artefact; flooring it keeps log() finite.
_FLOOR_US = 0.001


def _check_confidence(confidence: float) -> None:
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")


def group_robust(samples: list[np.ndarray], confidence: float = 0.99, trim: float = DEFAULT_TRIM,
                 min_ratio: float = MIN_RATIO, min_diff_us: float = MIN_DIFF_US) -> np.ndarray:
    """Family label per sample (0 = fastest). Samples are RTTs in µs, each with at least two values.

    Divisive: a set of ports is one family unless Welch's ANOVA on trimmed log-RTT means rejects
    "all alike" at α = 1 - confidence; then it is cut in two where the weighted between-group sum of
    squares of the sorted trimmed means is largest, and each part is examined the same way.
    A cut is made only where the two sides' floors differ by at least `min_ratio` and `min_diff_us`:
    smaller differences are within what one path shows over a scan (clock drift, load, timer jitter).
    """
    _check_confidence(confidence)
    lengths = np.array([len(s) for s in samples], dtype=np.int64)
    values = np.concatenate([np.asarray(s, float).reshape(-1) for s in samples]) if len(samples) else np.zeros(0)
    return _group_robust(values, lengths, confidence, trim, min_ratio, min_diff_us)


def _group_robust(values: np.ndarray, lengths: np.ndarray, confidence: float, trim: float, min_ratio: float,
                  min_diff_us: float) -> np.ndarray:
    """`group_robust` of samples given concatenated (`values`, float µs) with their `lengths`."""
    _check_confidence(confidence)
    k = len(lengths)
    if k <= 1:
        return np.zeros(k, int)
    alpha = 1.0 - confidence
    blocks = sorted_blocks(np.log(np.maximum(values, _FLOOR_US)), lengths)
    full = summarize_blocks(blocks, k, trim)
    floor = _floor_locations(blocks, k)
    labels = np.zeros(k, int)
    pending = [np.arange(k)]
    leaves = []
    while pending:
        node = pending.pop()
        # α is spent in proportion to the node's share of ports: the true families are disjoint, so
        # the tests that could split one of them falsely spend at most α in all (family-wise control).
        if len(node) < 2 or welch_anova(_subset(full, node))[3] > alpha * len(node) / k:
            leaves.append(node)
            continue
        cut = _best_cut(floor, full.h, node, np.log(min_ratio), min_diff_us)
        if cut is None:
            leaves.append(node)
            continue
        pending += list(cut)
    for i, leaf in enumerate(leaves):
        labels[leaf] = i
    return _number_by_speed(labels, floor)


def _subset(s: Summary, idx: np.ndarray) -> Summary:
    return Summary(s.n[idx], s.h[idx], s.mean[idx], s.d[idx])


def _floor_locations(blocks: list[tuple[int, np.ndarray, np.ndarray]], k: int) -> np.ndarray:
    """Where each port's path floor lies, from `sorted_blocks` of log RTTs: the mean of the lower half of its
    log RTTs, far-out low values raised.

    RTT = path delay + non-negative queueing and scheduling delay, so the path shows in the lower part
    of the distribution; the upper half is mostly queueing noise (and spikes). Nothing is faster than the
    path, so a value far below the rest is a timing artefact, not a path: one reply timed 7 µs after its
    probe among replies of 70-100 µs (seen in the lab) dragged its port's floor down by a third on the log
    scale and split two ports of one machine (it lay 14 interquartile ranges below the first quartile).
    Values more than 5 interquartile ranges below the first quartile of the log RTTs (Tukey's far-out fence
    is 3; at 5 it moves 1 port in 2,000 of the simulation below, and its power stays 97.8 %) are raised to
    the lowest value above that before the mean. Used to place cuts and check their margins; not to test.
    """
    out = np.full(k, np.nan)
    for size, rows, x in blocks:
        if size:
            q1, q3 = np.quantile(x, [0.25, 0.75], axis=1)
            inside = (x >= (q1 - 5 * (q3 - q1))[:, None]).argmax(axis=1)  # each row's lowest value inside
            lower = np.maximum(x[:, : max(1, (size + 1) // 2)], x[np.arange(len(x)), inside][:, None])
            out[rows] = lower.mean(axis=1)
    return out


def _best_cut(location: np.ndarray, size: np.ndarray, node: np.ndarray, min_log_ratio: float,
              min_diff_us: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Cut the node's ports, sorted by floor location, where the between-group sum of squares is
    largest among the cuts whose two sides differ by the margins; None when no cut does."""
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
    "too few samples" (fewer than two RTT samples: family -1, untested). Families are numbered per
    target from 0.
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
    # Rows are sorted by (target, protocol, port): each (target, protocol) is one run of rows.
    run = keys.target_protocol(port_keys)
    bounds = np.flatnonzero(np.diff(run)) + 1
    runs = zip(np.concatenate([[0], bounds]).tolist(), np.concatenate([bounds, [len(run)]]).tolist()) if len(run) else ()
    for a, b in runs:
        idx = np.arange(a, b)
        testable = n_samples[a:b] >= MIN_SAMPLES
        silent = received[a:b] == 0
        labels = np.full(len(idx), -1)
        if testable.any():
            lens = n_samples[a:b][testable]
            sub = values[ranges(first[a:b][testable], lens)]
            if method == "robust":
                labels[testable] = _group_robust(sub, lens, confidence, DEFAULT_TRIM, min_ratio, min_diff_us)
            else:
                parts = np.split(sub, np.cumsum(lens)[:-1])
                labels[testable] = group_qscan(parts, confidence, table=method == "qscan-table")
        nxt = labels.max() + 1
        # Untestable ports get no family (-1): a number of their own would claim they differ.
        kind[idx[~testable & ~silent]] = "too few samples"
        if silent.any():
            labels[silent] = nxt
            kind[idx[silent]] = "no answer"
        family[idx] = labels
    out = table.copy()
    out["family"] = family
    out["family_kind"] = kind
    out.attrs.update(method=method, confidence=confidence, probes=probes, min_ratio=min_ratio,
                     min_diff_us=min_diff_us)
    return out


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
