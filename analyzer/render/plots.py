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

MAX_POINTS = 5000  # a series with more points is subsampled (evenly, reproducibly) to this many
RASTER_OVER = 1000  # a scatter layer with more points is drawn as an image inside the SVG
CATEGORICAL_PORTS = 40  # a scan of at most this many ports gets one row per port in its walk plot
MAX_BOXES = 40  # an RTT plot of more ports draws samples at their port numbers, without boxes
MAX_LEGEND = 12  # legend entries (phases) shown at most
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
    """Number the next figures' SVG id prefixes from 1 again (one report, one sequence: reproducible output)."""
    _ids["next"] = 0


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _styled(plot):
    """Run a plot function under the report's matplotlib style (rcParams are read as artists are made)."""
    @functools.wraps(plot)
    def run(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(_RC):
            return plot(*args, **kwargs)
    return run


def _figure(width: float, height: float, rows: int = 1, sharex: bool = False):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, list(fig.subplots(rows, 1, sharex=sharex, squeeze=False)[:, 0])


def to_svg(fig) -> str:
    """The figure as an <svg> element for inline HTML: no XML prolog, no comments, unique ids."""
    import matplotlib

    buf = io.StringIO()
    _ids["next"] += 1
    prefix = f"f{_ids['next']}-"
    with matplotlib.rc_context({"svg.hashsalt": "synlens"}):  # fixed salt: reproducible clip-path ids
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, dpi=110)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.DOTALL)
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.DOTALL)
    svg = re.sub(r"\n\s*", "\n", svg)
    # every figure numbers its ids from 1 (figure_1, axes_1 …): a prefix per figure keeps them unique on the page
    svg = re.sub(r'(\bid="|url\(#|href="#)', lambda m: m.group(1) + prefix, svg)
    return svg.replace("<svg ", '<svg role="img" ', 1)


def _subsample(n: int) -> tuple[np.ndarray, str]:
    if n <= MAX_POINTS:
        return np.arange(n), ""
    return np.linspace(0, n - 1, MAX_POINTS).round().astype(int), f"{MAX_POINTS} of {n} points shown (evenly spaced)."


@_styled
def port_walk(probes: pd.DataFrame, states: pd.DataFrame, t0: float, title: str) -> tuple[str, str]:
    """Destination port against time (from `t0`, the phase's first probe) for one phase's probes, coloured by
    the port's state. Time in ms when the phase is shorter than a second."""
    ports_seen = probes["dport"].nunique()
    fig, (ax,) = _figure(8.0, 2.8 if ports_seen > 12 else max(1.9, 1.1 + 0.17 * ports_seen) if ports_seen > 0 else 2.8)
    ts = probes["ts_ns"].to_numpy() / 1e9 - t0
    unit = "ms" if np.ptp(ts) < 1 else "seconds"
    ts = ts * 1000 if unit == "ms" else ts
    dst = probes["dst"].astype(str).to_numpy()
    port = probes["dport"].astype("Int64").fillna(-1).to_numpy(int)
    state_of = dict(zip(zip(states["target"].astype(str).to_numpy(), states["port"].to_numpy(int)),
                        states["state"].astype(str).to_numpy()))
    state = np.array([state_of.get((d, p), "unknown") for d, p in zip(dst, port)], dtype=object)
    targets = sorted(set(dst))
    horizontal = len(targets) > 1 and len(set(port)) == 1
    ports = np.unique(port)
    if horizontal:  # one port across many hosts: the walk is over targets
        index = {t: i for i, t in enumerate(targets)}
        y = np.array([index[d] for d in dst])
        ax.set_ylabel(f"target (of {len(targets)}, sorted)")
    elif len(ports) <= CATEGORICAL_PORTS:  # few ports: one row each, so the order of the walk shows
        y = np.searchsorted(ports, port)
        ax.set_yticks(range(len(ports)), [str(p) for p in ports], fontsize=7 if len(ports) > 20 else 8)
        ax.set_ylim(-0.7, len(ports) - 0.3)
        ax.set_ylabel("destination port")
    else:
        y = port
        ax.set_ylabel("destination port")
    groups = {name: np.flatnonzero(state == name) for name in STATE_COLOURS}
    groups = {name: idx for name, idx in groups.items() if len(idx)}
    # the budget goes to the rare states first: a few open ports must not vanish among 65,000 closed ones
    budget, shown, note = MAX_POINTS, {}, ""
    for i, (name, idx) in enumerate(sorted(groups.items(), key=lambda g: len(g[1]))):
        share = budget // (len(groups) - i)
        shown[name] = idx if len(idx) <= share else idx[np.linspace(0, len(idx) - 1, share).round().astype(int)]
        budget -= len(shown[name])
    if sum(len(v) for v in shown.values()) < len(ts):
        note = f"{MAX_POINTS} of {len(ts)} probes shown (all of the rarer states, evenly spaced samples of the rest)."
    for name, idx in sorted(groups.items(), key=lambda g: -len(g[1])):  # commonest first, rare ones on top
        sel = shown[name]
        ports_in_state = len(set(zip(dst[idx], port[idx])))
        ax.scatter(ts[sel], y[sel], s=9, c=STATE_COLOURS[name], label=f"{name} ({ports_in_state})", linewidths=0,
                   rasterized=len(sel) > RASTER_OVER, zorder=2 + 1 / (1 + len(idx)))
    ax.set_xlabel(f"{unit} since the phase's first probe")
    ax.set_title(title, loc="left")
    handles, names = ax.get_legend_handles_labels()
    order = sorted(range(len(names)), key=lambda i: list(STATE_COLOURS).index(names[i].split(" (")[0]))
    ax.legend([handles[i] for i in order], [names[i] for i in order], title="port state", loc="upper left",
              bbox_to_anchor=(1.0, 1.0))
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
                label=_short(label), linewidth=1.2)
    ax.set_xlabel("seconds since the capture's first packet")
    ax.set_ylabel("probes / s")
    ax.set_ylim(bottom=0)
    _legend_below(fig, ax)
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
                ax.scatter(ts[sel], values[sel], s=7, c=c, linewidths=0, label=_short(label),
                           rasterized=len(sel) > RASTER_OVER)
        if np.isnan(values).all():
            ax.text(0.5, 0.5, f"no {name} (IPv6 has none)" if col == "ip_id" else f"no {name}", ha="center",
                    va="center", transform=ax.transAxes, color="#666")
            ax.set_yticks([])
        ax.set_ylabel(name)
    axes[0].set_title(title, loc="left")
    axes[-1].set_xlabel("seconds since the capture's first packet")
    _legend_below(fig, axes[0])
    return to_svg(fig), note


def _short(label: str, most: int = 64) -> str:
    """Long labels (IPv6 addresses, many targets) cut in the middle, so the legend cannot squeeze the plot."""
    return label if len(label) <= most else label[: most // 2 - 1] + "…" + label[-(most // 2 - 1):]


def _legend_below(fig, ax) -> None:
    handles, names = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles[:MAX_LEGEND], names[:MAX_LEGEND], loc="outside lower center", ncols=min(2, len(handles)),
                   markerscale=1.5)


@_styled
def rtt_strip(rows: pd.DataFrame, samples: dict[tuple[str, str, int], np.ndarray], colours: dict[int, str],
              title: str) -> tuple[str, str]:
    """Each port's RTT samples (log scale): box plot plus jittered points, coloured by family."""
    if len(rows) > MAX_BOXES:
        return _rtt_scatter(rows, samples, colours, title)
    rng = np.random.default_rng(0)
    n = len(rows)
    fig, (ax,) = _figure(min(8.0, max(5.0, 2.2 + 0.6 * n)), 3.2)
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
                       boxprops={"facecolor": c + "33", "edgecolor": c}, medianprops={"color": c},
                       whiskerprops={"color": c}, capprops={"color": c})
        ax.scatter(x + rng.uniform(-0.18, 0.18, len(keep)), s[keep], s=10, c=c, linewidths=0, alpha=0.85, zorder=3,
                   rasterized=len(keep) > RASTER_OVER)
    ax.set_xticks(range(n), [str(int(p)) for p in rows["port"]], rotation=90 if n > 16 else 0)
    ax.set_xlim(-0.7, n - 0.3)
    ax.set_xlabel("port")
    _rtt_axes(ax, rows, colours, title, log=shown > 0)
    return to_svg(fig), " ".join(sorted({n for n in notes if n}))


def _rtt_scatter(rows: pd.DataFrame, samples: dict[tuple[str, str, int], np.ndarray], colours: dict[int, str],
                 title: str) -> tuple[str, str]:
    """Too many ports for a box each: every RTT sample at its port number, coloured by family."""
    xs, ys, cs = [np.zeros(0)], [np.zeros(0)], [np.zeros(0, object)]
    answered = (rows["family_kind"] == "answered").to_numpy()
    for target, proto, port, fam, ok in zip(rows["target"].astype(str).to_numpy(), rows["protocol"].astype(str).to_numpy(),
                                            rows["port"].to_numpy(int), rows["family"].to_numpy(int), answered):
        s = samples.get((target, proto, port))
        if s is not None:
            xs.append(np.full(len(s), port))
            ys.append(np.maximum(s, 0.1))
            cs.append(np.full(len(s), colours.get(fam, OTHER) if ok else OTHER, object))
    x, y, c = np.concatenate(xs), np.concatenate(ys), np.concatenate(cs)
    keep, note = _subsample(len(x))
    fig, (ax,) = _figure(8.0, 3.2)
    ax.scatter(x[keep], y[keep], s=4, c=list(c[keep]), linewidths=0, alpha=0.7, rasterized=len(keep) > RASTER_OVER)
    ax.set_xlabel("port")
    _rtt_axes(ax, rows, colours, title, log=len(x) > 0)
    silent = int((rows["received"] == 0).sum())
    return to_svg(fig), " ".join(t for t in (note, f"{silent} ports with no reply are not shown." if silent else "") if t)


def _rtt_axes(ax, rows: pd.DataFrame, colours: dict[int, str], title: str, log: bool) -> None:
    if log:
        from matplotlib import ticker

        ax.set_yscale("log")
        ax.margins(y=0.08)
        # plain numbers: the default 10^k labels are mathtext, which the report's style turns off
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_ylabel("RTT (µs, log scale)" if log else "RTT (µs)")
    ax.set_title(title, loc="left")
    fams = sorted({int(f) for f, k in zip(rows["family"], rows["family_kind"]) if k == "answered"})
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=colours[f], label=f"family {f}") for f in fams]
    if (rows["family_kind"] != "answered").any():
        handles.append(Line2D([], [], marker="o", ls="", color=OTHER, label="no family"))
    if handles:
        ax.legend(handles=handles[:12], loc="upper left", bbox_to_anchor=(1.0, 1.0))
