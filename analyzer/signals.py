"""Which machine really answers each port: families from every signal a reply carries, with evidence.

A port forwarded to another machine gives itself away in more ways than time: its replies come from another
IP stack, usually one hop further. Per port (from the replies to its SYN probes):

=============  ==============================================================================================
signal         apart when …  (each needs enough replies to be trusted: a one-off glitch never splits)
=============  ==============================================================================================
ttl            modal reply TTLs differ, each agreed by ≥ 80 % of ≥ 3 replies ("TTL 63 vs 64 on 30/30 replies")
rtt            the robust RTT families (analyzer.families) put them apart ("RTT 2.9 ms vs 0.1 ms, p = 1e-7")
stack          SYN/ACK window or TCP option layout differ (open ports only), each consistent over ≥ 2 replies
rst            closed ports' RSTs differ in window or ACK behaviour (RST/ACK acknowledging the probe vs bare
               RST), each consistent over ≥ 2 replies; their TTL counts under ttl
clock          TCP timestamp clocks differ: TSval − rate·t offsets more than `CLOCK_TOLERANCE` ticks apart
               after fitting one rate per port (needs probes that carry the option: agent --tcp-timestamps)
ip_id          both ports use an incremental IP ID counter and the merged sequence is not one counter
               ("IP ID counters 1 apart vs 4000 apart")
=============  ==============================================================================================

Families: ports are taken fastest first (by RTT floor) and each joins the first family none of whose members
it is apart from; a port apart from all opens a new family. Each family split records the evidence that
decided it. `signals=("rtt",)` keeps qscan's RTT-only meaning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .families import families as rtt_families
from .flags import ACK, RST, SYN
from .hosts import option_layout
from .stats import select_probes

ALL_SIGNALS = ("ttl", "rtt", "stack", "rst", "clock", "ip_id")
TTL_AGREEMENT = 0.8
TTL_MIN_REPLIES = 3
CLOCK_TOLERANCE = 1000  # TSval ticks (1 s at Linux's 1 kHz): one machine's clock stays far closer
IPID_STEP = 1000
WRAP = 1 << 32
REPLY_FIELDS = ("ts_ns", "ttl", "tcp_flags", "window", "tcp_options", "ip_id", "tsval")


@dataclass(frozen=True)
class PortSignals:
    port: int
    replies: int
    ttl: int | None
    ttl_agree: int
    window: int | None
    options: str | None
    stack_agree: int
    ip_id_class: str
    ts_offset: float | None
    ts_rate: float | None
    ipid_series: tuple = field(default=(), repr=False)  # (ts_ns, ip_id) of replies
    ts_consistent: bool | None = None  # None: no timestamps; False: replies do not fit one clock
    rst: str | None = None  # RST behaviour: "window W, RST/ACK" or "window W, bare RST"
    rst_agree: int = 0

    @property
    def ttl_trusted(self) -> bool:
        return self.ttl is not None and self.ttl_agree >= TTL_MIN_REPLIES and self.ttl_agree >= TTL_AGREEMENT * self.replies

    @property
    def has_evidence(self) -> bool:
        """Whether any signal of this port can be trusted on its own (else it cannot be placed)."""
        return self.ttl_trusted or self.stack_agree >= 2 or self.rst_agree >= 2 or self.ts_offset is not None


def _clock(replies: pd.DataFrame, t_ref_ns: int) -> tuple[float | None, float | None, bool | None]:
    """(offset at t_ref, rate in Hz, consistent) of the TCP timestamp clock behind a port's replies.

    TSvals are unwrapped modulo 2^32; the rate is the median of pairwise slopes (robust to a bad TSval);
    the offset is taken at one reference time shared by the target's ports, so a small rate error does not
    grow into a false gap. Replies that do not fit one clock (per-connection offsets, which current Linux
    uses: it hashes the ports into the offset) make the signal unusable for this port.
    """
    ts = replies[["ts_ns", "tsval"]].dropna()
    if len(ts) < 3:
        return None, None, None
    v = ts["tsval"].astype(np.int64).to_numpy()
    d = np.diff(v) % WRAP
    d[d >= WRAP // 2] -= WRAP
    u = v[0] + np.concatenate([[0], np.cumsum(d)])
    t = (ts["ts_ns"].astype(np.int64).to_numpy() - t_ref_ns) / 1e9
    rate = 1000.0
    if t[-1] - t[0] > 0.05:
        i, j = np.triu_indices(len(t), 1)
        ok = t[j] - t[i] > 0.01
        if ok.any():
            rate = float(np.median((u[j] - u[i])[ok] / (t[j] - t[i])[ok]))
    if not 1.0 <= rate <= 10_000:  # RFC 7323: a tick between 1 ms and 1 s
        return None, None, False
    resid = u - rate * t
    offset = float(np.median(resid))
    if np.mean(np.abs(resid - offset) < CLOCK_TOLERANCE) < 0.8:
        return None, None, False
    return offset % WRAP, rate, True


def _port_signals(port: int, replies: pd.DataFrame, t_ref_ns: int = 0) -> PortSignals:
    ttl_vals = replies["ttl"].dropna().astype(int)
    ttl, agree = (None, 0)
    if len(ttl_vals):
        counts = ttl_vals.value_counts()
        ttl, agree = int(counts.index[0]), int(counts.iloc[0])
    flags = replies["tcp_flags"].fillna(0).astype(int)
    synacks = replies[(flags & (SYN | ACK)) == (SYN | ACK)]
    window = options = None
    stack_agree = 0
    if len(synacks):
        sig = synacks["window"].astype("Int64").astype(str) + "|" + synacks["tcp_options"].astype("UInt64").fillna(0).astype(str)
        counts = sig.value_counts()
        top = counts.index[0].split("|")
        window = int(top[0]) if top[0] != "<NA>" else None
        options = option_layout(int(top[1])) or "none"
        stack_agree = int(counts.iloc[0])
    ids = replies[["ts_ns", "ip_id"]].dropna()
    id_vals = ids["ip_id"].astype(int).to_numpy()
    if len(id_vals) < 3:
        id_class = "unknown"
    elif (id_vals == 0).all():
        id_class = "zero"
    else:
        steps = np.diff(id_vals) % 65536
        id_class = "incremental" if (steps < IPID_STEP).mean() > 0.9 else "random"
    ts_offset, ts_rate, ts_consistent = _clock(replies, t_ref_ns)
    return PortSignals(port, len(replies), ttl, agree, window, options, stack_agree, id_class, ts_offset, ts_rate,
                       tuple(zip(ids["ts_ns"].astype(np.int64), id_vals)), ts_consistent)


def _mode_per_port(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per port: the most frequent value of `keys` (ties: the smallest) and how many rows have it."""
    counts = frame.groupby(["_port"] + keys, dropna=False).size().reset_index(name="n")
    counts = counts.sort_values(["_port", "n"] + keys, ascending=[True, False] + [True] * len(keys), kind="stable")
    return counts.drop_duplicates("_port").set_index("_port")


def _signals_of_ports(replies: pd.DataFrame, ports: list[int], t_ref_ns: int) -> dict[int, PortSignals]:
    """`_port_signals` for every port of a target at once (column-wise: 65,535 ports take a second)."""
    n = replies.groupby("_port").size()
    ttl = _mode_per_port(replies[replies["ttl"].notna()].assign(ttl=lambda f: f["ttl"].astype(int)), ["ttl"])
    flags = replies["tcp_flags"].fillna(0).astype(int)
    synacks = replies[(flags & (SYN | ACK)) == (SYN | ACK)].assign(
        window=lambda f: f["window"].fillna(-1).astype(int), tcp_options=lambda f: f["tcp_options"].fillna(0).astype(np.uint64))
    stack = _mode_per_port(synacks, ["window", "tcp_options"]) if len(synacks) else None
    rsts = replies.loc[(flags & RST) != 0, ["_port", "window", "tcp_flags"]].assign(
        window=lambda f: f["window"].fillna(-1).astype(int),
        with_ack=lambda f: (f["tcp_flags"].fillna(0).astype(int) & ACK) != 0)
    rst_mode = _mode_per_port(rsts, ["window", "with_ack"]) if len(rsts) else None
    rst_of = {} if rst_mode is None else dict(zip(rst_mode.index, zip(rst_mode["window"].astype(int),
                                                                      rst_mode["with_ack"], rst_mode["n"])))
    ids = replies[replies["ip_id"].notna()].sort_values(["_port", "ts_ns"], kind="stable")
    id_port = ids["_port"].to_numpy()
    id_vals = ids["ip_id"].astype(np.int64).to_numpy()
    same = np.r_[False, id_port[1:] == id_port[:-1]] if len(id_port) else np.zeros(0, bool)
    small = (np.r_[False, (np.diff(id_vals) % 65536) < IPID_STEP] & same) if len(id_port) else same
    id_stats = pd.DataFrame({"_port": id_port, "zero": id_vals == 0, "small": small, "step": same}).groupby("_port").sum()
    id_count = pd.Series(id_port).value_counts()
    has_ts = replies[replies["tsval"].notna()].groupby("_port").size().to_dict()
    # Plain dicts: a pandas lookup per port and field would cost more than all the grouping above.
    n, id_count = n.to_dict(), id_count.to_dict()
    ttl_of = dict(zip(ttl.index, zip(ttl["ttl"].astype(int), ttl["n"].astype(int))))
    stack_of = {} if stack is None else dict(zip(stack.index, zip(stack["window"].astype(int),
                                                                  stack["tcp_options"].astype(np.uint64), stack["n"])))
    ids_of = dict(zip(id_stats.index, zip(id_stats["zero"], id_stats["small"], id_stats["step"])))
    layouts: dict[int, str] = {}
    out = {}
    for port in ports:
        replies_n = int(n.get(port, 0))
        t_val, t_agree = ttl_of.get(port, (None, 0))
        window = options = None
        stack_agree = 0
        if port in stack_of:
            w, opts, stack_agree = stack_of[port]
            window = int(w) if w >= 0 else None
            if opts not in layouts:
                layouts[opts] = option_layout(int(opts)) or "none"
            options = layouts[opts]
            stack_agree = int(stack_agree)
        count = int(id_count.get(port, 0))
        zero, small, steps = ids_of.get(port, (0, 0, 0))
        if count < 3:
            id_class = "unknown"
        elif zero == count:
            id_class = "zero"
        else:
            id_class = "incremental" if steps and small / steps > 0.9 else "random"
        series: tuple = ()
        ts_offset = ts_rate = ts_ok = None
        if id_class == "incremental" or has_ts.get(port, 0) >= 3:
            mine = replies[replies["_port"] == port]  # only the few ports whose series matter
            if id_class == "incremental":
                pairs = mine[["ts_ns", "ip_id"]].dropna()
                series = tuple(zip(pairs["ts_ns"].astype(np.int64), pairs["ip_id"].astype(int)))
            ts_offset, ts_rate, ts_ok = _clock(mine, t_ref_ns)
        rst_text, rst_agree = None, 0
        if port in rst_of:
            w, with_ack, rst_agree = rst_of[port]
            rst_text = f"window {int(w)}, {'RST/ACK' if with_ack else 'bare RST'}"
        out[port] = PortSignals(port, replies_n, t_val, t_agree, window, options, stack_agree, id_class,
                                ts_offset, ts_rate, series, ts_ok, rst_text, int(rst_agree))
    return out


def _apart(a: PortSignals, b: PortSignals, rtt_apart: str | None, use: tuple[str, ...]) -> list[tuple[str, str]]:
    """Every (signal, evidence) that separates ports a and b, most certain first; empty when none does."""
    found = []
    if "ttl" in use and a.ttl != b.ttl and a.ttl_trusted and b.ttl_trusted:
        found.append(("ttl", f"TTL {a.ttl} vs {b.ttl} on {a.ttl_agree}/{a.replies} and {b.ttl_agree}/{b.replies} replies"))
    if "clock" in use and a.ts_offset is not None and b.ts_offset is not None:
        gap = abs(a.ts_offset - b.ts_offset) % WRAP
        gap = min(gap, WRAP - gap)  # two 32-bit clocks are never more than 2^31 ticks apart
        if gap > CLOCK_TOLERANCE:
            found.append(("clock", f"TCP timestamp clocks {gap:.0f} ticks apart"))
    if ("stack" in use and a.options is not None and b.options is not None
            and min(a.stack_agree, b.stack_agree) >= 2 and (a.window, a.options) != (b.window, b.options)):
        found.append(("stack", f"SYN/ACK window {a.window} [{a.options}] vs {b.window} [{b.options}]"))
    if ("rst" in use and a.rst is not None and b.rst is not None and min(a.rst_agree, b.rst_agree) >= 2
            and a.rst != b.rst):
        found.append(("rst", f"RSTs {a.rst} vs {b.rst}"))
    if "ip_id" in use and a.ip_id_class == b.ip_id_class == "incremental":
        merged = sorted(a.ipid_series + b.ipid_series)
        steps = np.diff([v for _, v in merged]) % 65536
        own = np.median(np.concatenate([np.diff([v for _, v in s.ipid_series]) % 65536 for s in (a, b)]))
        if len(steps) and (steps >= IPID_STEP).mean() > 0.3:
            found.append(("ip_id", f"IP ID counters {own:.0f} apart vs {np.median(steps):.0f} apart when merged"))
    if "rtt" in use and rtt_apart:
        found.append(("rtt", rtt_apart))
    return found


def _signature(s: PortSignals, rtt_family: int) -> tuple:
    """What `_apart` looks at, as a key; ports whose verdicts depend on their own series stay unique."""
    if s.ts_offset is not None or s.ip_id_class == "incremental":
        return ("port", s.port)
    return (rtt_family, s.ttl if s.ttl_trusted else None, s.ttl_trusted,
            (s.window, s.options) if s.stack_agree >= 2 else None, s.rst if s.rst_agree >= 2 else None)


def _unavailable(sig: list[PortSignals], use: tuple[str, ...]) -> list[str]:
    """Signals that could not be read for this target, and why: ports they would separate may still differ."""
    out = []
    if "clock" in use and any(s.ts_consistent is False for s in sig) and not any(s.ts_offset is not None for s in sig):
        out.append("clock: TCP timestamps do not follow one clock per port (per-connection offsets, as current "
                   "Linux hashes the ports into them): they carry no host identity")
    elif "clock" in use and not any(s.ts_offset is not None for s in sig):
        out.append("clock: no TCP timestamps in the replies (probes carried no timestamp option; "
                   "synlens-agent --tcp-timestamps adds one): machines alike in TTL and RTT cannot be told apart")
    if "ip_id" in use and not any(s.ip_id_class == "incremental" for s in sig):
        out.append("ip_id: no incremental IP ID counter (zero or random IDs carry no host identity)")
    if "stack" in use and sum(s.options is not None for s in sig) < 2:
        out.append("stack: fewer than two open ports answered with SYN/ACKs")
    return out


def signal_families(packets: pd.DataFrame, matches: pd.DataFrame, *, signals: tuple[str, ...] = ALL_SIGNALS,
                    **rtt_options: object) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ports, families): per port its RTT statistics, observed signals and family; per family its evidence.

    ports: the columns of `analyzer.families`, with `family` now the family from all signals and
    `rtt_family` the RTT-only one, plus ttl, ttl_agree, window, options, ip_id_class, ts_offset, ts_rate,
    deciding_signal. families: target, protocol, family, ports, kind, signals (those
    that separate it from the families before it), evidence, unavailable (signals with no data, and why).
    """
    unknown = set(signals) - set(ALL_SIGNALS)
    if unknown:
        raise ValueError(f"unknown signals {sorted(unknown)}; choose from {ALL_SIGNALS}")
    base = rtt_families(matches, **rtt_options)
    syn = select_probes(matches, rtt_options.get("probes", "syn"))  # type: ignore[arg-type]
    syn = syn[syn["reply_frame"].notna()]
    frame_pos = np.searchsorted(packets["frame"].to_numpy(), syn["reply_frame"].astype(np.int64).to_numpy())
    # Only the fields the signals read: a copy of all 42 columns for every reply costs ~100 MB a million.
    reply_rows = packets.iloc[frame_pos][list(REPLY_FIELDS)].reset_index(drop=True)
    reply_rows["_target"] = syn["dst"].astype(str).to_numpy()
    reply_rows["_port"] = syn["dport"].astype(int).to_numpy()
    port_rows, fam_rows = [], []
    for (target, proto), rows in base.groupby(["target", "protocol"], sort=False):
        sig = {}
        of_target = reply_rows[reply_rows["_target"] == target]
        t_ref = int(of_target["ts_ns"].min()) if len(of_target) else 0
        sig = _signals_of_ports(of_target, rows["port"].astype(int).tolist(), t_ref)
        rtt_fam = dict(zip(rows["port"].astype(int), rows["family"].astype(int)))
        means = dict(zip(rows["port"].astype(int), rows["median_us"]))
        kinds = dict(zip(rows["port"].astype(int), rows["family_kind"]))
        answered = [p for p in rtt_fam if rtt_fam[p] >= 0 and kinds[p] != "no answer"]
        # Untestable by RTT: placed only when another signal of its own can be trusted; else no family.
        unplaced = [p for p in rtt_fam if rtt_fam[p] < 0 and not sig[p].has_evidence]
        answered += [p for p in rtt_fam if rtt_fam[p] < 0 and sig[p].has_evidence]
        answered.sort(key=lambda p: (np.nan_to_num(means[p], nan=np.inf), p))
        fams: list[list[int]] = []
        # Per family, one representative per signal signature: members alike in every signal give the
        # same verdict, so a port is compared with each signature once, not with every member.
        reps: list[dict[tuple, int]] = []
        decided: dict[int, tuple[str, str]] = {}
        for p in answered:
            placed = False
            for fam, fam_reps in zip(fams, reps):
                reasons = []
                for q in fam_reps.values():
                    rtt_reason = None
                    if rtt_fam[p] >= 0 and rtt_fam[q] >= 0 and rtt_fam[p] != rtt_fam[q]:
                        rtt_reason = (f"RTT median {means[q] / 1000:.2f} ms vs {means[p] / 1000:.2f} ms "
                                      f"(robust families {rtt_fam[q]} and {rtt_fam[p]})")
                    reasons += _apart(sig[p], sig[q], rtt_reason, signals)
                if not reasons:
                    fam.append(p)
                    fam_reps.setdefault(_signature(sig[p], rtt_fam[p]), p)
                    placed = True
                    break
                decided[p] = reasons  # the last family tried: the nearest in RTT order
            if not placed:
                fams.append([p])
                reps.append({_signature(sig[p], rtt_fam[p]): p})
        placed_or_not = set(answered) | set(unplaced)
        silent = [p for p in rtt_fam if p not in placed_or_not]
        missing = _unavailable(list(sig.values()), signals)
        labels = {p: i for i, fam in enumerate(fams) for p in fam}
        for p in silent:
            labels[p] = len(fams)
        for p in unplaced:
            labels[p] = -1
        for i, fam in enumerate(fams):
            # Evidence of the family's first member: why it could join no earlier family (all signals).
            why = decided.get(fam[0], [])
            first_per_signal = dict(reversed(why))  # one line of evidence per signal, the first found
            deciding = list(dict.fromkeys(s for s, _ in why))
            evidence = [first_per_signal[s] for s in deciding]
            fam_rows.append(dict(target=target, protocol=proto, family=i, ports=sorted(fam), kind="answered",
                                 signals=deciding, evidence=evidence, unavailable=missing))
        if silent:
            fam_rows.append(dict(target=target, protocol=proto, family=len(fams), ports=sorted(silent), kind="no answer",
                                 signals=[], evidence=["no reply to any probe"], unavailable=missing))
        order = [sig[p] for p in rows["port"].astype(int)]
        port_rows.append(rows.assign(
            ttl=pd.array([s.ttl for s in order], dtype="Int64"), ttl_agree=[s.ttl_agree for s in order],
            window=pd.array([s.window for s in order], dtype="Int64"), options=[s.options for s in order],
            ip_id_class=[s.ip_id_class for s in order], rst=[s.rst for s in order],
            ts_offset=[s.ts_offset for s in order],
            ts_rate=[s.ts_rate for s in order], signal_family=[labels[s.port] for s in order],
            deciding_signal=[decided[s.port][0][0] if s.port in decided else None for s in order]))
    ports = (pd.concat(port_rows, ignore_index=True) if port_rows else base.iloc[0:0])
    ports = ports.rename(columns={"family": "rtt_family"}).rename(columns={"signal_family": "family"})
    fam_table = pd.DataFrame(fam_rows, columns=["target", "protocol", "family", "ports", "kind", "signals", "evidence",
                                                "unavailable"])
    ports.attrs.update(base.attrs, signals=list(signals))
    return ports, fam_table
