"""The report's plots: matplotlib figures rendered to inline SVG text (private to analyzer.report).

Why matplotlib → inline SVG: the report must open offline in any browser. SVG needs no JavaScript (no
plotting library to inline, nothing to execute), is vector (sharp at any zoom, prints well), and for the
few hundred points a scan plot usually holds it is smaller than a PNG. Dense scatter layers are rasterized
inside the SVG (an embedded PNG) and series beyond `MAX_POINTS` are subsampled, which the caption says.
Figures are built with `matplotlib.figure.Figure` directly, never pyplot: no global state, no GUI
backend, nothing to close; the SVG backend renders them (Agg only for the rasterized layers).

Every function returns ``(svg, note)``: the SVG markup and a sentence for the caption ("" when none).
"""

from __future__ import annotations

import functools
import io
import re

import numpy as np
import pandas as pd

from .flags import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG
from .scans import TECHNIQUES

MAX_POINTS = 5000  # a series with more points is subsampled (evenly, reproducibly) to this many
RASTER_OVER = 1000  # a scatter layer with more points is drawn as an image inside the SVG
STATE_COLOURS = {"open": "#2ca02c", "closed": "#d62728", "filtered": "#7f7f7f", "unfiltered": "#1f77b4",
                 "open|filtered": "#ff7f0e", "unknown": "#9467bd"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
OTHER = "#b0b0b0"
_RC = {"svg.fonttype": "none",  # text stays <text> (small, selectable); the page's CSS picks the font
       "text.parse_math": False,  # "$" in a label is a dollar sign, never mathtext
       "font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False,
       "axes.grid": True, "grid.color": "#e6e6e6", "grid.linewidth": 0.6, "legend.fontsize": 8,
       "legend.frameon": False}
_ids = {"next": 0}


def reset_ids() -> None:
    """Number the next figures' SVG ids from 0 again (one report = one sequence: reproducible output)."""
    _ids["next"] = 0


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _styled(plot):  # noqa: ANN001, ANN202
    """Run a plot function under the report's matplotlib style (rcParams are read as artists are made)."""
    @functools.wraps(plot)
    def run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        import matplotlib

        with matplotlib.rc_context(_RC):
            return plot(*args, **kwargs)
    return run


def _figure(width: float, height: float, rows: int = 1, sharex: bool = False):  # noqa: ANN202
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, list(fig.subplots(rows, 1, sharex=sharex, squeeze=False)[:, 0])


def to_svg(fig) -> str:  # noqa: ANN001
    """The figure as an <svg> element for inline HTML: no XML prolog, no comments, unique ids."""
    import matplotlib

    buf = io.StringIO()
    # a salt per figure keeps clip-path ids unique across the page; fixed, so output is reproducible
    _ids["next"] += 1
    with matplotlib.rc_context({"svg.hashsalt": f"synlens-{_ids['next']}"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, dpi=110)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.S)
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r"\n\s*", "\n", svg)
    return svg.replace("<svg ", '<svg role="img" ', 1)


def _subsample(n: int) -> tuple[np.ndarray, str]:
    if n <= MAX_POINTS:
        return np.arange(n), ""
    return np.linspace(0, n - 1, MAX_POINTS).round().astype(int), f"{MAX_POINTS} of {n} points shown (evenly spaced)."


def technique_family(protocol: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """scans.technique_of for many probes, with CONNECT read as SYN and WINDOW as ACK (as phases are keyed)."""
    base = flags & (SYN | ACK | FIN | RST | PSH | URG | ECE | CWR)
    tcp = np.array([TECHNIQUES.get(int(b), "CUSTOM") for b in base], dtype=object)
    return np.where(protocol == "udp", "UDP", np.where(protocol == "icmp", "PING", tcp))


def phase_of_probes(probes: pd.DataFrame, scans: pd.DataFrame) -> np.ndarray:
    """Each probe's scan phase (-1: none): same scanner, one of the phase's targets, its technique, its time span.

    analyzer.scans does not return per-probe phases; this reconstructs them from the scans table. Two phases
    of one scanner and technique that overlap in time (rare) would give their shared probes to the first.
    """
    out = np.full(len(probes), -1)
    if probes.empty or scans.empty:
        return out
    src, dst = probes["src"].astype(str).to_numpy(), probes["dst"].astype(str).to_numpy()
    ts = probes["ts_ns"].to_numpy() / 1e9
    fam = technique_family(probes["protocol"].astype(str).to_numpy(), probes["flags"].fillna(0).astype(int).to_numpy())
    for phase, rows in scans.groupby("phase", sort=True):
        kind = {"CONNECT": "SYN", "WINDOW": "ACK"}.get(rows["type"].iloc[0], rows["type"].iloc[0])
        mask = ((out == -1) & (src == rows["scanner"].iloc[0]) & np.isin(dst, rows["target"].to_numpy())
                & (fam == kind) & (ts >= rows["first"].min() - 1e-6) & (ts <= rows["last"].max() + 1e-6))
        out[mask] = int(phase)
    return out


@_styled
def port_walk(probes: pd.DataFrame, states: pd.DataFrame, t0: float, title: str) -> tuple[str, str]:
    """Destination port against time for one phase's probes, coloured by the port's state."""
    fig, (ax,) = _figure(8.0, 2.8)
    ts = probes["ts_ns"].to_numpy() / 1e9 - t0
    dst = probes["dst"].astype(str).to_numpy()
    port = probes["dport"].astype("Int64").fillna(-1).to_numpy(int)
    state_of = {(str(r.target), int(r.port)): str(r.state) for r in states.itertuples()}
    state = np.array([state_of.get((d, p), "unknown") for d, p in zip(dst, port)], dtype=object)
    targets = sorted(set(dst))
    horizontal = len(targets) > 1 and len(set(port)) == 1
    if horizontal:  # one port across many hosts: the walk is over targets
        index = {t: i for i, t in enumerate(targets)}
        y = np.array([index[d] for d in dst])
        ax.set_ylabel(f"target (of {len(targets)}, sorted)")
    else:
        y = port
        ax.set_ylabel("destination port")
    keep, note = _subsample(len(ts))
    for name, c in STATE_COLOURS.items():
        sel = keep[state[keep] == name]
        if len(sel):
            ax.scatter(ts[sel], y[sel], s=9, c=c, label=f"{name} ({len(set(zip(dst[sel], port[sel])))})",
                       linewidths=0, rasterized=len(sel) > RASTER_OVER)
    ax.set_xlabel("seconds since the capture's first packet")
    ax.set_title(title, loc="left")
    ax.legend(title="port state", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return to_svg(fig), note


@_styled
def probe_rate(probes: pd.DataFrame, phase: np.ndarray, labels: dict[int, str], t0: float) -> tuple[str, str]:
    """Probes per second over time, one line per phase (bin width chosen from the longest phase)."""
    ts = probes["ts_ns"].to_numpy() / 1e9 - t0
    spans = [np.ptp(ts[phase == k]) for k in labels]
    span = max(spans + [0.0])
    width = next((w for w in (0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0) if span / w <= 200), 3600.0)
    fig, (ax,) = _figure(8.0, 2.6)
    for i, (k, label) in enumerate(labels.items()):
        t = ts[phase == k]
        edges = np.arange(t.min(), t.max() + width, width)
        if len(edges) < 2:
            edges = np.array([t.min(), t.min() + width])
        counts, edges = np.histogram(t, bins=edges)
        ax.step(np.r_[edges[:-1], edges[-1]], np.r_[counts, counts[-1]] / width, where="post", color=colour(i),
                label=label, linewidth=1.2)
    ax.set_xlabel("seconds since the capture's first packet")
    ax.set_ylabel("probes / s")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    unit = f"{width * 1000:g} ms" if width < 1 else f"{width:g} s"
    return to_svg(fig), f"Probes counted in {unit} bins."


@_styled
def fingerprint(probe_pkts: pd.DataFrame, phase: np.ndarray, labels: dict[int, str], t0: float,
                title: str) -> tuple[str, str]:
    """TTL, IP ID and source port of one scanner's probes against time, coloured by phase."""
    ts = probe_pkts["ts_ns"].to_numpy() / 1e9 - t0
    keep, note = _subsample(len(ts))
    fields = [("ttl", "TTL"), ("ip_id", "IP ID"), ("sport", "source port")]
    fig, axes = _figure(8.0, 5.2, rows=3, sharex=True)
    groups = [(k, label, colour(i)) for i, (k, label) in enumerate(labels.items())] + [(-1, "not in a scan", OTHER)]
    for ax, (col, name) in zip(axes, fields):
        values = probe_pkts[col].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        for k, label, c in groups:
            sel = keep[(phase[keep] == k) & ~np.isnan(values[keep])]
            if len(sel):
                ax.scatter(ts[sel], values[sel], s=7, c=c, linewidths=0, label=label, rasterized=len(sel) > RASTER_OVER)
        if np.isnan(values).all():
            ax.text(0.5, 0.5, f"no {name} (IPv6 has none)" if col == "ip_id" else f"no {name}", ha="center",
                    va="center", transform=ax.transAxes, color="#666")
        ax.set_ylabel(name)
    axes[0].set_title(title, loc="left")
    axes[-1].set_xlabel("seconds since the capture's first packet")
    handles, names = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="outside right upper", fontsize=8, frameon=False)
    return to_svg(fig), note


@_styled
def rtt_strip(rows: pd.DataFrame, samples: dict[tuple[str, str, int], np.ndarray], colours: dict[int, str],
              title: str) -> tuple[str, str]:
    """Each port's RTT samples (log scale): box plot plus jittered points, coloured by family."""
    rng = np.random.default_rng(0)
    n = len(rows)
    fig, (ax,) = _figure(min(8.0, max(4.5, 1.6 + 0.45 * n)), 3.2)
    notes = []
    shown = 0
    for x, r in enumerate(rows.itertuples()):
        s = samples.get((str(r.target), str(r.protocol), int(r.port)), np.zeros(0))
        c = colours.get(int(r.family), OTHER) if r.family_kind == "answered" else OTHER
        if len(s) == 0:
            ax.annotate("no reply" if r.received == 0 else "no sample", (x, 0), xycoords=("data", "axes fraction"),
                        xytext=(0, 4), textcoords="offset points", ha="center", rotation=90, fontsize=7, color="#666")
            continue
        s = np.maximum(s, 0.1)  # a 0 µs RTT (timestamp resolution) cannot sit on a log axis
        keep, note = _subsample(len(s))
        notes.append(note)
        shown += len(keep)
        if len(s) >= 2:
            ax.boxplot([s], positions=[x], widths=0.55, whis=(5, 95), showfliers=False, patch_artist=True,
                       boxprops=dict(facecolor=c + "33", edgecolor=c), medianprops=dict(color=c),
                       whiskerprops=dict(color=c), capprops=dict(color=c))
        ax.scatter(x + rng.uniform(-0.18, 0.18, len(keep)), s[keep], s=10, c=c, linewidths=0, alpha=0.85, zorder=3,
                   rasterized=len(keep) > RASTER_OVER)
    ax.set_xticks(range(n), [str(int(p)) for p in rows["port"]], rotation=90 if n > 16 else 0)
    ax.set_xlim(-0.7, n - 0.3)
    if shown:
        ax.set_yscale("log")
    ax.set_xlabel("port")
    ax.set_ylabel("RTT (µs, log scale)")
    ax.set_title(title, loc="left")
    fams = sorted({int(f) for f, k in zip(rows["family"], rows["family_kind"]) if k == "answered"})
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=colours[f], label=f"family {f}") for f in fams]
    if (rows["family_kind"] != "answered").any():
        handles.append(Line2D([], [], marker="o", ls="", color=OTHER, label="no family"))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return to_svg(fig), " ".join(sorted({n for n in notes if n}))
