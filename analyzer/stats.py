"""Probes table → per-port RTT and loss statistics, and the two-sample tests the families are built from.

All distributions are scipy's exact ones (`scipy.stats.t`); the statistics are computed here in
vectorised form so that every pair of ports of a target is tested at once, and the test suite checks
each against `scipy.stats.ttest_ind` on the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from .flags import ACK, FIN, RST, SYN

PORT_KEYS = ["dst", "protocol", "dport"]
DEFAULT_TRIM = 0.1


@dataclass(frozen=True)
class TTest:
    """A two-sample t test: statistic, two-sided p-value, degrees of freedom and sample sizes."""

    statistic: float
    pvalue: float
    dof: float
    n_a: int
    n_b: int


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
    return matches[keep]


def port_stats(matches: pd.DataFrame, *, probes: str = "syn") -> pd.DataFrame:
    """Per (target, protocol, port): sent, received, loss, and RTT mean, sample stddev, min, median, p95 (µs).

    sent counts probe groups (a retransmission is not a new probe; `retransmissions` counts the extra
    copies), received those answered, loss = 1 - received/sent. RTT statistics use the samples Karn's rule
    keeps; stddev uses n-1; p95 is numpy's linear-interpolation percentile. NaN where there are no samples
    (stddev: fewer than two).
    """
    m = select_probes(matches, probes)
    rtt_us = m["rtt_ns"].to_numpy(dtype=float, na_value=np.nan) / 1000.0
    frame = pd.DataFrame({
        "dst": m["dst"].astype(str).to_numpy(),
        "protocol": m["protocol"].astype(str).to_numpy(),
        "dport": m["dport"].to_numpy(dtype=np.int64, na_value=-1),
        "answered": m["reply_frame"].notna().to_numpy(),
        "retrans": m["transmissions"].to_numpy() - 1,
        "rtt_us": rtt_us,
    })
    g = frame.groupby(PORT_KEYS, sort=True)
    out = pd.DataFrame({
        "sent": g.size(),
        "received": g["answered"].sum(),
        "retransmissions": g["retrans"].sum(),
        "samples": g["rtt_us"].count(),
        "mean_us": g["rtt_us"].mean(),
        "stddev_us": g["rtt_us"].std(ddof=1),
        "min_us": g["rtt_us"].min(),
        "median_us": g["rtt_us"].median(),
        "p95_us": g["rtt_us"].quantile(0.95),
    })
    out["loss"] = 1.0 - out["received"] / out["sent"]
    out = out.reset_index().rename(columns={"dst": "target", "dport": "port"})
    cols = ["target", "protocol", "port", "sent", "received", "loss", "retransmissions", "samples",
            "mean_us", "stddev_us", "min_us", "median_us", "p95_us"]
    return out[cols]


def rtt_samples(matches: pd.DataFrame, *, probes: str = "syn") -> dict[tuple[str, str, int], np.ndarray]:
    """RTT samples in µs per (target, protocol, port), in capture order."""
    m = select_probes(matches, probes)
    m = m[m["rtt_ns"].notna()]
    keys = zip(m["dst"].astype(str), m["protocol"].astype(str), m["dport"].astype(int))
    values = m["rtt_ns"].to_numpy(dtype=float) / 1000.0
    out: dict[tuple[str, str, int], list[float]] = {}
    for key, v in zip(keys, values):
        out.setdefault(key, []).append(v)
    return {k: np.asarray(v) for k, v in out.items()}


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
    n = np.array([len(s) for s in samples])
    g = np.floor(trim * n).astype(int)
    h = n - 2 * g
    mean = np.empty(len(samples))
    d = np.empty(len(samples))
    for i, s in enumerate(samples):
        x = np.sort(np.asarray(s, float))
        lo, hi = g[i], n[i] - g[i]
        mean[i] = x[lo:hi].mean()
        if n[i] < 2 or h[i] < 2:
            d[i] = np.nan
            continue
        w = np.clip(x, x[lo], x[hi - 1])
        d[i] = (n[i] - 1) * w.var(ddof=1) / (h[i] * (h[i] - 1))
    return Summary(n=n, h=h, mean=mean, d=d)


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
    return float(f), float(k - 1), float(df2), float(sps.f.sf(f, k - 1, df2))


def yuen_welch_matrix(s: Summary) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair at once: t statistic, Welch–Satterthwaite dof, two-sided p (k × k matrices)."""
    diff = s.mean[:, None] - s.mean[None, :]
    dsum = s.d[:, None] + s.d[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = diff / np.sqrt(dsum)
        dof = dsum**2 / (s.d[:, None] ** 2 / (s.h[:, None] - 1) + s.d[None, :] ** 2 / (s.h[None, :] - 1))
        p = 2 * sps.t.sf(np.abs(t), dof)
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
    return TTest(float(t), float(2 * sps.t.sf(abs(t), dof)), float(dof), na, nb)


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
