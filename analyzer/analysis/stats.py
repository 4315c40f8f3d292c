"""Probes table → per-port RTT and loss statistics, and the two-sample tests the families are built from.

All distributions are scipy's exact ones (the `scipy.special` functions behind `scipy.stats.t` and
`scipy.stats.f`, without the cost of importing `scipy.stats`); the statistics are computed here in
vectorised form so that every pair of ports of a target is tested at once, and the test suite checks
each against `scipy.stats.ttest_ind` on the same samples.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..protocols import ACK, FIN, RST, SYN
from .groups import stable_order

PORT_KEYS = ["dst", "protocol", "dport"]
DEFAULT_TRIM = 0.1


def _special():
    """scipy.special, imported on first use (a tenth of a second: a command that tests no RTTs never
    pays it)."""
    import scipy.special

    return scipy.special


def load_in_background() -> None:
    """Start importing scipy.special in a daemon thread, for a command that will test RTTs once it has read and
    matched the capture. The reader's per-record loops (analyzer/accel/_reader.c) and matching's large numpy
    operations let go of the GIL, so the import (0.1-0.15 s, mostly Python) runs on the other core meanwhile;
    `_special` then finds it done, or waits on the import lock for the rest: `rtt` on the benchmark capture
    takes 0.04-0.05 s less (medians of alternating runs with and without it)."""
    import sys
    import threading

    if "scipy.special" not in sys.modules:
        threading.Thread(target=_special, name="synlens-import-scipy", daemon=True).start()


@dataclass(frozen=True)
class TTest:
    """A two-sample t test: statistic, two-sided p-value, degrees of freedom and sample sizes."""

    statistic: float
    pvalue: float
    dof: float
    n_a: int
    n_b: int


# The probes-table columns the statistics (and the families made from them) read: `analyzer.match(packets,
# columns=PROBE_FIELDS)` is all they need.
PROBE_FIELDS = ("ts_ns", "dst", "protocol", "dport", "flags", "transmissions", "reply_frame", "rtt_ns")


def select_probes(matches: pd.DataFrame, probes: str = "syn") -> pd.DataFrame:
    """The probes RTT statistics are drawn from.

    ``"syn"``: bare TCP SYNs (qscan's and hping3 -S's probes, and the agent's); ``"any"``: every probe.
    """
    if probes == "any":
        return matches
    if probes != "syn":
        raise ValueError(f"probes must be 'syn' or 'any', not {probes!r}")
    flags = matches["flags"].to_numpy(dtype=np.int64, na_value=-1)
    keep = (flags >= 0) & ((flags & (SYN | ACK | RST | FIN)) == SYN)
    return matches if keep.all() else matches[keep]  # (a SYN scan's table is kept whole: no copy)


def _text_codes(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per row an int64 code into the sorted distinct texts of `col.astype(str)`, without making that text
    per row: only the distinct values become strings (a categorical's categories, or factorize's uniques)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy(np.int64)
        text = [str(c) for c in col.cat.categories]
        if (codes < 0).any():  # astype(str) writes a missing value as "nan"
            codes = np.where(codes < 0, len(text), codes)
            text.append("nan")
    else:
        codes, uniques = pd.factorize(col, use_na_sentinel=False)
        codes = codes.astype(np.int64, copy=False)
        text = [str(u) for u in uniques]
    sorted_text, inverse = np.unique(np.array(text, dtype=object), return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)[codes], sorted_text


class _PortKeys:
    """One int64 per row whose order is the order of (target text, protocol text, port): the three keys
    port statistics are grouped on, compared as numbers instead of as 2 × rows strings."""

    _PORTS = 65537  # dport -1 (absent) … 65535

    def __init__(self, m: pd.DataFrame) -> None:
        dst, self.targets = _text_codes(m["dst"])
        proto, self.protocols = _text_codes(m["protocol"])
        dport = m["dport"].to_numpy(dtype=np.int64, na_value=-1)
        self.key = (dst * len(self.protocols) + proto) * self._PORTS + (dport + 1)

    @functools.cached_property
    def order(self) -> np.ndarray:
        """The rows in key order, in capture order within a key (a stable sort)."""
        return stable_order(self.key)

    def target_protocol(self, keys: np.ndarray) -> np.ndarray:
        return np.asarray(keys, np.int64) // self._PORTS

    def decode(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(target, protocol) as object arrays of text, port as int64, for sorted keys."""
        tp, port = np.divmod(np.asarray(keys, np.int64), self._PORTS)
        t, p = np.divmod(tp, len(self.protocols)) if len(self.protocols) else (tp, tp)
        return self.targets[t].astype(object), self.protocols[p].astype(object), port - 1


def port_stats(matches: pd.DataFrame, *, probes: str = "syn") -> pd.DataFrame:
    """Per (target, protocol, port): sent, received, loss, and RTT mean, sample stddev, min, median, p95 (µs).

    sent counts probe groups (a retransmission is not a new probe; `retransmissions` counts the extra
    copies), received those answered, loss = 1 - received/sent. RTT statistics use the samples Karn's rule
    keeps, and are numpy's of each port's samples in capture order: np.mean, np.std with n-1, np.min,
    np.median, and np.percentile(…, 95) (linear interpolation). NaN where there are no samples (stddev: fewer
    than two).
    """
    m = select_probes(matches, probes)
    return _port_stats(m, _PortKeys(m))[0]


def _port_stats(m: pd.DataFrame, keys: _PortKeys) -> tuple[pd.DataFrame, np.ndarray]:
    """`port_stats` of the selected probes, and each row's port key. Computed on the rows in key order
    (`_PortKeys.order`): counts and sums per run of equal keys, the RTT statistics by `_sample_stats`."""
    order = keys.order
    key = keys.key[order]
    n = len(key)
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if n else np.zeros(0, np.int64)
    port_keys = key[starts]
    sent = np.diff(np.append(starts, n))
    rtt_us = m["rtt_ns"].to_numpy(dtype=float, na_value=np.nan)[order] / 1000.0
    has = ~np.isnan(rtt_us)
    samples = np.bincount(np.repeat(np.arange(len(starts)), sent)[has], minlength=len(starts))

    def run_sums(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values, starts) if n else np.zeros(0, np.int64)

    out = pd.DataFrame({
        "sent": sent,
        "received": run_sums(m["reply_frame"].notna().to_numpy()[order].astype(np.int64)),
        "retransmissions": run_sums(m["transmissions"].to_numpy(np.int64)[order] - 1),
        "samples": samples,
        **_sample_stats(rtt_us[has], samples),
    })
    out["loss"] = 1.0 - out["received"] / out["sent"]
    out["target"], out["protocol"], out["port"] = keys.decode(port_keys)
    cols = ["target", "protocol", "port", "sent", "received", "loss", "retransmissions", "samples",
            "mean_us", "stddev_us", "min_us", "median_us", "p95_us"]
    return out[cols], port_keys


def _sample_stats(values: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """mean_us, stddev_us (n-1), min_us, median_us, p95_us of samples given concatenated (`counts` long each,
    zero allowed), each numpy's of the sample on its own: computed for all samples of one size at once, along
    the rows of a matrix (numpy reduces each row of a matrix as it reduces that row alone), the mean and
    stddev in capture order, the order statistics after sorting each row, p95 with np.percentile's own
    interpolation (`_lerp`). NaN where a sample is empty (stddev: shorter than two)."""
    k = len(counts)
    out = {name: np.full(k, np.nan) for name in ("mean_us", "stddev_us", "min_us", "median_us", "p95_us")}
    starts = np.cumsum(counts) - counts
    by_size = np.argsort(counts, kind="stable")
    sizes, first = np.unique(counts[by_size], return_index=True)
    for size, rows in zip(sizes.tolist(), np.split(by_size, first[1:])):
        if not size:
            continue
        x = values[starts[rows, None] + np.arange(size)]
        out["mean_us"][rows] = x.mean(axis=1)
        if size > 1:
            out["stddev_us"][rows] = x.std(axis=1, ddof=1)
        x.sort(axis=1)
        out["min_us"][rows] = x[:, 0]
        half = size // 2
        out["median_us"][rows] = x[:, half] if size % 2 else (x[:, half - 1] + x[:, half]) / 2
        place = 0.95 * (size - 1)
        lo = int(place)
        out["p95_us"][rows] = _lerp(x[:, lo], x[:, min(lo + 1, size - 1)], place - lo)
    return out


def _lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """np.percentile's linear interpolation between neighbours a and b at fraction t, as numpy computes it
    (from the nearer end, so that it is monotone and exact at both ends)."""
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


def _grouped_samples(m: pd.DataFrame, keys: _PortKeys) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RTT samples (µs) grouped by port key: (distinct keys ascending, their sample counts, the samples
    concatenated in that key order, each port's in capture order)."""
    rtt = m["rtt_ns"].to_numpy(dtype=float, na_value=np.nan)
    order = keys.order  # (the rows with samples, taken from the rows' stable order: their own stable order)
    order = order[~np.isnan(rtt[order])]
    values = rtt[order] / 1000.0
    key = keys.key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, np.int64)
    return key[starts], np.diff(np.append(starts, len(key))), values


def rtt_samples(matches: pd.DataFrame, *, probes: str = "syn") -> dict[tuple[str, str, int], np.ndarray]:
    """RTT samples in µs per (target, protocol, port), in capture order."""
    m = select_probes(matches, probes)
    keys = _PortKeys(m)
    ukeys, counts, values = _grouped_samples(m, keys)
    target, protocol, port = keys.decode(ukeys)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    # Ports in order of their first sample in the capture, as a dict filled row by row would hold them.
    rtt = m["rtt_ns"].to_numpy(dtype=float, na_value=np.nan)
    key = keys.key[~np.isnan(rtt)]
    _, first = np.unique(key, return_index=True)
    out = {}
    for i in np.argsort(first, kind="stable").tolist():
        out[(target[i], protocol[i], int(port[i]))] = values[starts[i] : starts[i] + counts[i]]
    return out


# ---------------------------------------------------------------- tests


@dataclass(frozen=True)
class Summary:
    """What a (trimmed) two-sample t test needs of each sample, for many samples at once."""

    n: np.ndarray  # sample sizes
    h: np.ndarray  # sizes after trimming
    mean: np.ndarray  # (trimmed) means
    d: np.ndarray  # squared standard error of each mean


def summarize(samples: list[np.ndarray], trim: float = DEFAULT_TRIM) -> Summary:
    """Yuen's summary: the mean with `trim` cut from each end, and the error term from the winsorized variance.

    With trim = 0 it is the ordinary mean and s²/n, so Welch's test is the special case.
    """
    lengths = np.array([len(s) for s in samples], dtype=np.int64)
    values = np.concatenate([np.asarray(s, float).reshape(-1) for s in samples]) if len(samples) else np.zeros(0)
    return summarize_blocks(sorted_blocks(values, lengths), len(lengths), trim)


def sorted_blocks(values: np.ndarray, lengths: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Samples given concatenated (`lengths` long each), as blocks of equal size: (size, which samples,
    a matrix with one sorted sample per row).

    Numpy's mean and var along the rows of a matrix are bit for bit those of each row on its own, so the
    statistics of thousands of ports take one numpy call per distinct sample size, not one per port.
    """
    lengths = np.asarray(lengths, np.int64)
    starts = np.zeros(len(lengths), np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    order = np.argsort(lengths, kind="stable")
    sizes, first = np.unique(lengths[order], return_index=True)
    blocks = []
    for size, rows in zip(sizes.tolist(), np.split(order, first[1:])):
        matrix = values[starts[rows, None] + np.arange(size)]
        matrix.sort(axis=1)
        blocks.append((size, rows, matrix))
    return blocks


def summarize_blocks(blocks: list[tuple[int, np.ndarray, np.ndarray]], k: int, trim: float = DEFAULT_TRIM) -> Summary:
    """`summarize` of k samples given as `sorted_blocks`."""
    n = np.zeros(k, np.int64)
    mean = np.full(k, np.nan)
    d = np.full(k, np.nan)
    for size, rows, x in blocks:
        n[rows] = size
        g = int(np.floor(trim * size))
        h = size - 2 * g
        lo, hi = g, size - g
        if h > 0:
            mean[rows] = x[:, lo:hi].mean(axis=1)
        if size < 2 or h < 2:
            continue
        w = np.clip(x, x[:, lo : lo + 1], x[:, hi - 1 : hi])
        d[rows] = (size - 1) * w.var(axis=1, ddof=1) / (h * (h - 1))
    g = np.floor(trim * n).astype(int)
    return Summary(n=n, h=n - 2 * g, mean=mean, d=d)


def welch_anova(s: Summary) -> tuple[float, float, float, float]:
    """Welch's heteroscedastic one-way ANOVA on (trimmed) means: F, df1, df2, p.

    Welch (1951); with trimmed means and winsorized error terms it is Lix & Keselman's (1998) robust
    version. For two groups F = t² and df2 is Welch's dof, so p equals Yuen–Welch's two-sided p exactly.
    """
    k = len(s.n)
    d = np.asarray(s.d, float)
    if not (d > 0).any():  # no spread anywhere: equal means are one group, unequal ones certainly not
        same = np.all(s.mean == s.mean[0])
        return (0.0 if same else np.inf), float(k - 1), np.inf, (1.0 if same else 0.0)
    # A group without spread weighs infinitely; a floor far below the others' gives the limit exactly
    # (for two groups: Welch's t with that variance zero).
    w = 1.0 / np.maximum(d, d.max() * 1e-15)
    u = w.sum()
    grand = (w * s.mean).sum() / u
    a = (w * (s.mean - grand) ** 2).sum() / (k - 1)
    lam = ((1 - w / u) ** 2 / (s.h - 1)).sum()
    f = a / (1 + 2 * (k - 2) / (k**2 - 1) * lam)
    df2 = (k**2 - 1) / (3 * lam)
    return float(f), float(k - 1), float(df2), _f_sf(f, k - 1, df2)


def _f_sf(f: float, dfn: float, dfd: float) -> float:
    """scipy.stats.f.sf(f, dfn, dfd), exactly: fdtrc, plus the distribution wrapper's 1 at and below 0."""
    if f <= 0 and dfn > 0 and dfd > 0:
        return 1.0
    return float(_special().fdtrc(dfn, dfd, f))


@dataclass(frozen=True)
class BlockTest:
    """A test of "all ports alike" in a blocked layout (ports × sampling blocks): statistic, p-value, degrees of
    freedom, and the blocks it used (those holding at least two of the ports)."""

    statistic: float
    pvalue: float
    dof: int
    blocks: int


def midranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks 1..k_i within each row of `x` (NaN: absent, ranked NaN), ties given their mean rank; and per row
    Σ(t³ - t) over its groups of ties (t: a group's size), for the tie correction."""
    rows, k = x.shape
    order = np.argsort(x, axis=1)  # (NaN sorts last; the order among ties does not matter: they share a rank)
    xs = np.take_along_axis(x, order, axis=1)
    present = ~np.isnan(xs)
    # Runs of equal present values within a row: a run starts where the value or the row changes.
    starts = np.ones(rows * k, bool)
    if k > 1:
        starts.reshape(rows, k)[:, 1:] = xs[:, 1:] != xs[:, :-1]
    run = np.cumsum(starts) - 1
    pos = np.tile(np.arange(1, k + 1, dtype=float), rows)
    first = np.minimum.reduceat(pos, np.flatnonzero(starts)) if len(pos) else pos
    last = np.maximum.reduceat(pos, np.flatnonzero(starts)) if len(pos) else pos
    ranked = np.where(present.reshape(-1), (first[run] + last[run]) / 2, np.nan)
    out = np.empty_like(ranked)
    out.reshape(rows, k)[np.arange(rows)[:, None], order] = ranked.reshape(rows, k)
    size = (last - first + 1)[run]  # each cell's tie-group size, t
    # Σ over present cells of t² - 1 = Σ over groups of ties of t³ - t
    ties = np.where(present.reshape(-1), size**2 - 1, 0.0).reshape(rows, k).sum(axis=1)
    return out.reshape(rows, k), ties


def skillings_mack(x: np.ndarray) -> BlockTest:
    """Skillings & Mack's (1981) rank test of "no column effect" in a two-way layout with blocks as rows and
    missing cells (NaN), with the tie correction: Friedman's test where every block is complete.

    Within each block of k_i ≥ 2 present cells, the midranks centred and scaled, a_ij = √(12/(k_i+1)) (r_ij -
    (k_i+1)/2), have (given the block's ties) variance c_i (k_i - 1) and covariance -c_i between two present cells,
    c_i = 1 - Σ(t³-t)/(k_i(k_i²-1)). Their column sums A then have covariance Σ = Σ_i c_i L_i (L_i: the complete
    graph Laplacian of block i's present columns), and A'Σ⁺A is chi-square with rank(Σ) dof under the null (the
    columns not linked through shared blocks are not compared). With complete blocks it is Friedman's chi-square
    with scipy's tie correction (`scipy.stats.friedmanchisquare`, checked in the tests); p from `scipy.special`'s
    chi-square survival function.
    """
    x = np.asarray(x, float)
    present = ~np.isnan(x)
    k_i = present.sum(axis=1)
    x, present, k_i = x[k_i >= 2], present[k_i >= 2], k_i[k_i >= 2]
    if not len(x):
        return BlockTest(0.0, 1.0, 0, 0)
    r, ties = midranks(x)
    c = 1.0 - ties / (k_i * (k_i**2 - 1.0))
    a = np.where(present, np.sqrt(12.0 / (k_i + 1.0))[:, None] * (r - ((k_i + 1.0) / 2)[:, None]), 0.0)
    total = a.sum(axis=0)
    k = x.shape[1]
    if present.all():  # complete blocks: Σ = Σc (kI - J), and A sums to zero: A'Σ⁺A = A'A / (k Σc)
        weight = float(c.sum())
        statistic, dof = (float((total**2).sum()) / (k * weight), k - 1) if weight > 0 else (0.0, 0)
    elif k <= EIGEN_PORTS:
        m = present.astype(float)
        cov = -(m.T @ (c[:, None] * m))
        np.fill_diagonal(cov, (c[:, None] * (k_i - 1.0)[:, None] * m).sum(axis=0))
        values, vectors = np.linalg.eigh(cov)
        keep = values > max(values.max(initial=0.0), 1.0) * 1e-9 * len(values)
        statistic, dof = float(((vectors[:, keep].T @ total) ** 2 / values[keep]).sum()), int(keep.sum())
    else:
        statistic, dof = _laplacian_form(present, c, k_i, total)
    if not dof:
        return BlockTest(0.0, 1.0, 0, len(x))
    return BlockTest(statistic, float(_special().chdtrc(dof, statistic)), dof, len(x))


# Up to this many ports Skillings–Mack's quadratic form is solved exactly (eigh of a k × k matrix); beyond, by
# conjugate gradients on the Laplacian, never formed (k × k of 65,535 ports would be 34 GB).
EIGEN_PORTS = 1000


def _laplacian_form(present: np.ndarray, c: np.ndarray, k_i: np.ndarray, total: np.ndarray) -> tuple[float, int]:
    """A'Σ⁺A and rank(Σ) for Σ = Σ_i c_i L_i given by the blocks' presence, without forming Σ: conjugate
    gradients (A lies in Σ's range: it sums to zero over each set of ports linked through blocks), and the rank as
    ports less such sets (connected components, by propagating the least port number through the blocks)."""
    m = present.astype(float)
    scale = m.T @ (c * k_i)

    def apply(v: np.ndarray) -> np.ndarray:
        return scale * v - m.T @ (c * (m @ v))

    solution, residual = np.zeros_like(total), total.copy()
    direction, rr = residual.copy(), float(residual @ residual)
    goal = 1e-24 * max(rr, 1e-300)
    for _ in range(10 * len(total)):
        if rr <= goal:
            break
        step = apply(direction)
        alpha = rr / float(direction @ step)
        solution += alpha * direction
        residual -= alpha * step
        rr, previous = float(residual @ residual), rr
        direction = residual + (rr / previous) * direction
    live = (c > 0)[:, None] & present  # (a block whose cells are all tied carries no comparison)
    label = np.arange(present.shape[1])
    while True:
        block_least = np.where(live, label[None, :], label.size).min(axis=1)
        linked = np.minimum(label, np.where(live, block_least[:, None], label.size).min(axis=0))
        if np.array_equal(linked, label):
            break
        label = linked
    components = len(np.unique(label[live.any(axis=0)])) + int((~live.any(axis=0)).sum())
    return float(total @ solution), present.shape[1] - components


def yuen_welch_matrix(s: Summary) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair at once: t statistic, Welch–Satterthwaite dof, two-sided p (k × k matrices)."""
    diff = s.mean[:, None] - s.mean[None, :]
    dsum = s.d[:, None] + s.d[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = diff / np.sqrt(dsum)
        dof = dsum**2 / (s.d[:, None] ** 2 / (s.h[:, None] - 1) + s.d[None, :] ** 2 / (s.h[None, :] - 1))
        p = 2 * _special().stdtr(dof, -np.abs(t))
    # Two samples without spread: equal means are the same, unequal ones certainly differ.
    flat = (dsum == 0) & np.isfinite(diff)
    p = np.where(flat, np.where(diff == 0, 1.0, 0.0), p)
    with np.errstate(invalid="ignore"):
        t = np.where(flat, np.where(diff == 0, 0.0, np.sign(diff) * np.inf), t)
    return t, dof, p


def yuen_welch(a: np.ndarray, b: np.ndarray, trim: float = DEFAULT_TRIM) -> TTest:
    """Yuen's trimmed-means test with Welch's dof (scipy: ttest_ind(a, b, equal_var=False, trim=trim))."""
    t, dof, p = yuen_welch_matrix(summarize([a, b], trim))
    return TTest(float(t[0, 1]), float(p[0, 1]), float(dof[0, 1]), len(a), len(b))


def pooled_t(a: np.ndarray, b: np.ndarray) -> TTest:
    """Student's pooled-variance t (qscan's test; scipy: ttest_ind(a, b, equal_var=True))."""
    na, nb = len(a), len(b)
    dof = na + nb - 2
    sp2 = ((na - 1) * np.var(a, ddof=1) + (nb - 1) * np.var(b, ddof=1)) / dof
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (np.mean(a) - np.mean(b)) / np.sqrt(sp2 * (1 / na + 1 / nb))
    return TTest(float(t), float(2 * _special().stdtr(dof, -abs(t))), float(dof), na, nb)


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control, valid under any dependence)."""
    p = np.asarray(pvalues, float)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out
