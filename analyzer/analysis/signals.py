"""Which machine really answers each port: families from every signal a reply carries, with evidence.

A port forwarded to another machine gives itself away in more ways than time: its replies come from another
IP stack, usually one hop further. Per port (from the replies to its SYN probes):

=============  ==============================================================================================
signal         apart when …  (each needs enough replies to be trusted: a one-off glitch never splits)
=============  ==============================================================================================
ttl            modal reply TTLs differ, each agreed by ≥ 80 % of ≥ 3 replies ("TTL 63 vs 64 on 30/30 replies")
rtt            the robust RTT families (analyzer.families) put them apart ("RTT median 70.10 µs vs 2103.30 µs")
stack          SYN/ACK window or TCP option layout differ (open ports only), each consistent over ≥ 2 replies
rst            closed ports' RSTs differ in window or ACK behaviour (RST/ACK acknowledging the probe vs bare
               RST), each consistent over ≥ 2 replies; their TTL counts under ttl
clock          TCP timestamp clocks differ: TSval − rate·t offsets more than `CLOCK_TOLERANCE` ticks apart
               after fitting one rate per port (needs probes that carry the option: agent --tcp-timestamps)
ip_id          both ports use an incremental IP ID counter and the merged sequence is not one counter
               ("IP ID counters 1 apart vs 4000 apart")
=============  ==============================================================================================

Families: ports are taken fastest first (by median RTT) and each joins the first family none of whose members
it is apart from; a port apart from all opens a new family. Each family split records the evidence that
decided it. `signals=("rtt",)` keeps qscan's RTT-only meaning.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..protocols import ACK, RST, SYN
from .columns import column_codes, packet_rows
from .families import families as rtt_families
from .families import medians_by_family
from .groups import group_ids, modes
from .stacks import IP_ID_STEP, ip_id_classes, option_layout
from .stats import select_probes

ALL_SIGNALS = ("ttl", "rtt", "stack", "rst", "clock", "ip_id")
TTL_AGREEMENT = 0.8
TTL_MIN_REPLIES = 3
CLOCK_TOLERANCE = 1000  # TSval ticks (1 s at Linux's 1 kHz): one machine's clock stays far closer
WRAP = 1 << 32
REPLY_FIELDS = ("ts_ns", "ttl", "tcp_flags", "window", "tcp_options", "ip_id", "tsval")


@dataclass(frozen=True)
class PortSignals:
    """One port's signals, as `_port_table` reads them, and the signals whose value it can trust (`SIGNALS`)."""

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
    trusted: frozenset[str] = frozenset()


def _ttl_apart(a: PortSignals, b: PortSignals) -> str | None:
    if a.ttl == b.ttl:
        return None
    return f"TTL {a.ttl} vs {b.ttl} on {a.ttl_agree}/{a.replies} and {b.ttl_agree}/{b.replies} replies"


def _clock_apart(a: PortSignals, b: PortSignals) -> str | None:
    gap = abs(a.ts_offset - b.ts_offset) % WRAP
    gap = min(gap, WRAP - gap)  # two 32-bit clocks are never more than 2^31 ticks apart
    return f"TCP timestamp clocks {gap:.0f} ticks apart" if gap > CLOCK_TOLERANCE else None


def _stack_apart(a: PortSignals, b: PortSignals) -> str | None:
    if (a.window, a.options) == (b.window, b.options):
        return None
    return f"SYN/ACK window {a.window} [{a.options}] vs {b.window} [{b.options}]"


def _rst_apart(a: PortSignals, b: PortSignals) -> str | None:
    return f"RSTs {a.rst} vs {b.rst}" if a.rst != b.rst else None


def _ip_id_apart(a: PortSignals, b: PortSignals) -> str | None:
    merged = sorted(a.ipid_series + b.ipid_series)
    steps = np.diff([v for _, v in merged]) % 65536
    own = np.median(np.concatenate([np.diff([v for _, v in s.ipid_series]) % 65536 for s in (a, b)]))
    if len(steps) and (steps >= IP_ID_STEP).mean() > 0.3:
        return f"IP ID counters {own:.0f} apart vs {np.median(steps):.0f} apart when merged"
    return None


@dataclass(frozen=True)
class Signal:
    """A signal a port's replies carry, declared once: when a port's value can be trusted (column-wise over the
    port table), what of it decides (`identity`: ports whose trusted values are equal there are never apart by
    it; empty: the port's own series decides, as a clock or a counter), whether trusting it lets a port be
    placed on its own (`evidence`), and the evidence when two trusted ports differ (`apart`)."""

    name: str
    trusted: Callable[[pd.DataFrame], pd.Series]
    identity: tuple[str, ...]
    evidence: bool
    apart: Callable[[PortSignals, PortSignals], str | None]


# The signals read from the replies, most certain first (the order evidence is given in); RTT, the families'
# own test, comes last (`_apart`).
SIGNALS = (
    Signal("ttl", lambda t: (t["ttl"].notna() & (t["ttl_agree"] >= TTL_MIN_REPLIES)
                             & (t["ttl_agree"] >= TTL_AGREEMENT * t["replies"])).fillna(False).astype(bool),
           ("ttl",), True, _ttl_apart),
    Signal("clock", lambda t: t["ts_offset"].notna(), (), True, _clock_apart),
    Signal("stack", lambda t: t["options"].notna() & (t["stack_agree"] >= 2), ("window", "options"), True,
           _stack_apart),
    Signal("rst", lambda t: t["rst"].notna() & (t["rst_agree"] >= 2), ("rst",), True, _rst_apart),
    Signal("ip_id", lambda t: t["ip_id_class"] == "incremental", (), False, _ip_id_apart),
)


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


def _per_port(index: pd.Index, ports: np.ndarray, values: np.ndarray, fill: object) -> np.ndarray:
    """Values given for some ports (`ports`, distinct) laid out along `index`, `fill` elsewhere."""
    out = np.full(len(index), fill, dtype=values.dtype)
    pos = index.get_indexer(ports)
    out[pos[pos >= 0]] = values[pos >= 0]
    return out


def _counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(values, return_counts=True) for integers: by counting where they are few and small (ports)."""
    if len(values) and values.min() >= 0 and values.max() < max(4 * len(values), 1 << 17):
        counts = np.bincount(values)
        uniq = np.flatnonzero(counts)
        return uniq.astype(values.dtype), counts[uniq]
    return np.unique(values, return_counts=True)


def _port_table(replies: pd.DataFrame, ports: list[int] | np.ndarray, t_ref_ns: int) -> pd.DataFrame:
    """Every port's signals as columns (index: port), computed column-wise over all replies at once.

    Columns: replies, ttl, ttl_agree, window, options, stack_agree, ip_id_class, rst, rst_agree, ts_offset,
    ts_rate, ts_consistent, ipid_series, and the derived <signal>_trusted of each of `SIGNALS` and
    has_evidence (a signal that counts as evidence is trusted). Only the few ports whose
    verdicts need their own series (an incremental IP ID counter, three or more TCP timestamps) are visited
    one by one.
    """
    index = pd.Index(np.asarray(ports, np.int64), name="_port")  # (from an array: no Python int per port)
    table = pd.DataFrame(index=index)
    port = replies["_port"].to_numpy()
    uniq, n = _counts(port)
    table["replies"] = _per_port(index, uniq, n, 0)
    has = replies["ttl"].notna().to_numpy()
    m_port, (m_ttl,), m_n = modes(port[has], [replies["ttl"].to_numpy(np.int64, na_value=0)[has]])
    table["ttl"] = pd.array(_per_port(index, m_port, m_ttl, -1), dtype="Int64")
    table.loc[table["ttl"] < 0, "ttl"] = pd.NA
    table["ttl_agree"] = _per_port(index, m_port, m_n, 0)
    flags = replies["tcp_flags"].to_numpy(np.int32, na_value=0)
    window = replies["window"].to_numpy(np.int32, na_value=-1)
    synack = (flags & (SYN | ACK)) == (SYN | ACK)
    options = replies["tcp_options"].to_numpy(np.uint64, na_value=0)
    m_port, (m_win, m_opt), m_n = modes(port[synack], [window[synack], options[synack]])
    win = _per_port(index, m_port, m_win, -1)
    table["window"] = pd.array(np.where(win >= 0, win, 0), dtype="Int64")
    table.loc[win < 0, "window"] = pd.NA
    layouts = {int(code): option_layout(int(code)) or "none" for code in np.unique(m_opt)}
    table["options"] = _per_port(index, m_port, np.array([layouts[int(c)] for c in m_opt], dtype=object), None)
    table["stack_agree"] = _per_port(index, m_port, m_n, 0)
    rst = (flags & RST) != 0
    if "_probe_ack" in replies.columns:
        # A RST answering an ACK probe is bare by rule (RFC 9293: it takes its sequence number from the ACK), one
        # answering a SYN or FIN acknowledges it: with `probes="any"` the probe's kind, not the machine, would
        # decide. Only RSTs to probes without ACK are compared.
        rst &= ~replies["_probe_ack"].to_numpy(bool)
    m_port, (m_win, m_ack), m_n = modes(port[rst], [window[rst], ((flags[rst] & ACK) != 0).astype(np.int64)])
    # One text per distinct (window, ACK) behaviour, not per port.
    kinds, which = np.unique(m_win * 2 + m_ack, return_inverse=True)
    texts = np.array([f"window {k >> 1}, {'RST/ACK' if k & 1 else 'bare RST'}" for k in kinds.tolist()],
                     dtype=object)[which.reshape(-1)]
    table["rst"] = _per_port(index, m_port, texts, None)
    table["rst_agree"] = _per_port(index, m_port, m_n, 0)
    del flags, window, options, synack, rst  # (a reply's worth each: freed before the next signal's arrays)
    # IP ID class from each port's IDs in time order (`stacks.ip_id_classes`, as hosts read them).
    has = replies["ip_id"].notna().to_numpy()
    o = np.argsort(replies["ts_ns"].to_numpy(np.int64)[has], kind="stable")
    pos = index.get_indexer(port[has][o])
    ok = pos >= 0
    _, classes = ip_id_classes(pos[ok], replies["ip_id"].to_numpy(np.int64, na_value=0)[has][o][ok], len(index))
    table["ip_id_class"] = classes.astype(object)
    incremental = classes == "incremental"
    del o, pos, ok
    table["ts_offset"] = table["ts_rate"] = np.nan
    table["ts_consistent"] = None
    table["ipid_series"] = [()] * len(index)
    ts_port = port[replies["tsval"].notna().to_numpy()]
    pos = index.get_indexer(ts_port)
    has_ts = np.bincount(pos[pos >= 0], minlength=len(index))
    special = index[incremental | (has_ts >= 3)]
    if len(special):
        # Each special port's replies in capture order (one sort, then slices: no scan per port).
        mine_all = replies[replies["_port"].isin(special)].sort_values("_port", kind="stable")
        bounds = np.searchsorted(mine_all["_port"].to_numpy(), special.to_numpy(), side="left")
        ends = np.searchsorted(mine_all["_port"].to_numpy(), special.to_numpy(), side="right")
        for port, a, b in zip(special, bounds, ends):
            mine = mine_all.iloc[a:b]
            if table.at[port, "ip_id_class"] == "incremental":
                pairs = mine[["ts_ns", "ip_id"]].dropna()
                table.at[port, "ipid_series"] = tuple(zip(pairs["ts_ns"].astype(np.int64), pairs["ip_id"].astype(int)))
            offset, rate, ok = _clock(mine, t_ref_ns)
            table.at[port, "ts_consistent"] = ok
            if offset is not None:
                table.at[port, "ts_offset"], table.at[port, "ts_rate"] = offset, rate
    evidence = np.zeros(len(index), bool)
    for signal in SIGNALS:
        trusted = signal.trusted(table).to_numpy(bool)
        table[f"{signal.name}_trusted"] = trusted
        evidence |= trusted & signal.evidence
    table["has_evidence"] = evidence
    return table


def _port_signals(table: pd.DataFrame, port: int) -> PortSignals:
    """One port's row of `_port_table` as the PortSignals that `_apart` compares."""
    r = table.loc[port]
    def opt(v: object) -> object:
        return None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else v
    ttl, window = opt(r["ttl"]), opt(r["window"])
    return PortSignals(int(port), int(r["replies"]), None if ttl is None else int(ttl), int(r["ttl_agree"]),
                       None if window is None else int(window), opt(r["options"]), int(r["stack_agree"]),
                       r["ip_id_class"], opt(r["ts_offset"]), opt(r["ts_rate"]), r["ipid_series"],
                       r["ts_consistent"], opt(r["rst"]), int(r["rst_agree"]),
                       frozenset(sg.name for sg in SIGNALS if r[f"{sg.name}_trusted"]))


def _apart(a: PortSignals, b: PortSignals, rtt_apart: str | None, use: tuple[str, ...]) -> list[tuple[str, str]]:
    """Every (signal, evidence) that separates ports a and b, most certain first; empty when none does. A signal
    separates only ports that both can trust it (`Signal.trusted`)."""
    found = []
    for signal in SIGNALS:
        if signal.name in use and signal.name in a.trusted and signal.name in b.trusted:
            text = signal.apart(a, b)
            if text:
                found.append((signal.name, text))
    if "rtt" in use and rtt_apart:
        found.append(("rtt", rtt_apart))
    return found


def _lazy_signals(table: pd.DataFrame) -> Callable[[int], PortSignals]:
    """port → its PortSignals, built on first use only (most ports never need theirs)."""
    cache: dict[int, PortSignals] = {}

    def sig(port: int) -> PortSignals:
        if port not in cache:
            cache[port] = _port_signals(table, port)
        return cache[port]
    return sig


def _signature_codes(table: pd.DataFrame, rtt_family: np.ndarray) -> np.ndarray:
    """Per port, a code for what `_apart` looks at, derived from `SIGNALS`: equal codes, equal verdicts against
    any port (the same RTT family, the same signals trusted, the same identity where trusted). Ports trusted in
    a signal whose verdicts depend on their own series (a clock, a counter: no identity) get a code of their own."""
    if not len(table):
        return np.zeros(0, np.int64)
    parts = [np.asarray(rtt_family, np.int64)]
    own = np.zeros(len(table), bool)
    for signal in SIGNALS:
        trusted = table[f"{signal.name}_trusted"].to_numpy(bool)
        if not signal.identity:
            own |= trusted
            continue
        parts.append(trusted.astype(np.int64))
        parts += [pd.factorize(table[name].where(trusted))[0].astype(np.int64) for name in signal.identity]
    codes = group_ids(*parts)
    codes[own] = codes.max(initial=-1) + 1 + np.arange(int(own.sum()))
    return codes


def _unavailable(table: pd.DataFrame, use: tuple[str, ...], protocol: str = "tcp") -> list[str]:
    """Signals that could not be read for this target, and why: ports they would separate may still differ.
    Clock and stack are TCP's (timestamps, SYN/ACKs): for another protocol only the IP ID can be missing."""
    out = []
    tcp = protocol == "tcp"
    any_clock = table["ts_offset"].notna().any()
    if tcp and "clock" in use and (table["ts_consistent"] == False).any() and not any_clock:
        out.append("clock: TCP timestamps do not follow one clock per port (per-connection offsets, as current "
                   "Linux hashes the ports into them): they carry no host identity")
    elif tcp and "clock" in use and not any_clock:
        out.append("clock: no TCP timestamps in the replies (probes carried no timestamp option; "
                   "synlens-agent --tcp-timestamps adds one): machines alike in TTL and RTT cannot be told apart")
    if "ip_id" in use and not (table["ip_id_class"] == "incremental").any():
        out.append("ip_id: no incremental IP ID counter (zero or random IDs carry no host identity)")
    if tcp and "stack" in use and table["options"].notna().sum() < 2:
        out.append("stack: fewer than two open ports answered with SYN/ACKs")
    return out


def _place(ports: np.ndarray, codes: np.ndarray, sig: Callable[[int], PortSignals], rtt_fam: dict[int, int],
           means: dict[int, float], use: tuple[str, ...]) -> tuple[np.ndarray, list[list | None]]:
    """Greedy families: each port, in the given order, joins the first family none of whose members it is
    apart from (`_apart`), else opens a new one. Returns each port's family and the reasons the last family
    it tried gave against it (None when it joined the first).

    Per family one representative per signature code is compared: members with equal codes give equal
    verdicts. And a port whose code was placed while the representatives stayed as they are now meets the
    same verdicts again: runs of such ports are placed at once (65,535 alike ports cost a few comparisons).
    """
    n = len(ports)
    fam_of = np.empty(n, np.int64)
    reasons_of: list[list | None] = [None] * n
    reps: list[dict[int, int]] = []
    n_codes = int(codes.max()) + 1 if n else 0
    memo_version = np.full(n_codes, -1, np.int64)  # the representatives' version a verdict was reached under
    memo_fam = np.zeros(n_codes, np.int64)
    memo_reasons: list[list | None] = [None] * n_codes
    version = 0
    plist, clist = ports.tolist(), codes.tolist()
    i = 0
    while i < n:
        c = clist[i]
        if memo_version[c] == version:
            j, step = i + 1, 16
            while j < n:
                same = memo_version[codes[j : j + step]] == version
                if same.all():
                    j, step = j + len(same), step * 2
                else:
                    j += int(np.argmin(same))
                    break
            fam_of[i:j] = memo_fam[codes[i:j]]
            reasons_of[i:j] = map(memo_reasons.__getitem__, clist[i:j])
            i = j
            continue
        p = plist[i]
        placed, last = None, None
        for f, fam_reps in enumerate(reps):
            reasons = []
            for q in fam_reps.values():
                rtt_reason = None
                if rtt_fam[p] >= 0 and rtt_fam[q] >= 0 and rtt_fam[p] != rtt_fam[q]:
                    rtt_reason = (f"RTT median {means[q]:.2f} µs vs {means[p]:.2f} µs "
                                  f"(RTT families {rtt_fam[q]} and {rtt_fam[p]})")
                reasons += _apart(sig(p), sig(q), rtt_reason, use)
            if not reasons:
                if c not in fam_reps:
                    fam_reps[c] = p
                    version += 1
                placed = f
                break
            last = reasons  # the last family tried: the nearest in RTT order
        if placed is None:
            reps.append({c: p})
            version += 1
            placed = len(reps) - 1
        fam_of[i], reasons_of[i] = placed, last
        memo_version[c], memo_fam[c], memo_reasons[c] = version, placed, last
        i += 1
    return fam_of, reasons_of


def _with_signals(rows: pd.DataFrame, table: pd.DataFrame, family: np.ndarray, deciding: np.ndarray) -> pd.DataFrame:
    """A target's rows of the RTT families with each port's signals (`_port_table`, in the rows' order), its
    family from all signals and the signal that decided it."""
    return rows.assign(
        ttl=table["ttl"].array, ttl_agree=table["ttl_agree"].to_numpy(),
        window=table["window"].array, options=table["options"].to_numpy(),
        ip_id_class=table["ip_id_class"].to_numpy(), rst=table["rst"].to_numpy(),
        ts_offset=table["ts_offset"].astype(object).where(table["ts_offset"].notna(), None).to_numpy(),
        ts_rate=table["ts_rate"].astype(object).where(table["ts_rate"].notna(), None).to_numpy(),
        signal_family=family, deciding_signal=deciding)


def _silent_groups(base: pd.DataFrame) -> tuple[np.ndarray | None, np.ndarray]:
    """Which rows of `base` belong to a (target, protocol) none of whose ports answered, and each row's
    group number in order of first appearance; (None, …) when there is no such target."""
    no_answer = (base["family_kind"] == "no answer").to_numpy(bool)
    if not no_answer.any():
        return None, np.zeros(0, np.int64)
    keys = [base["target"], base["protocol"]]
    rank = base.groupby(keys, sort=False).ngroup().to_numpy()
    answered_groups = np.bincount(rank, weights=~no_answer, minlength=int(rank.max()) + 1) > 0
    quiet = ~answered_groups[rank]
    return (quiet if quiet.any() else None), rank


# A target of one port with fewer replies than this has no per-port series to read (clock, IP ID counter): a
# sweep's answering targets are read all at once (`_single_port_targets`).
SERIES_MIN_REPLIES = 3


def _single_port_groups(base: pd.DataFrame, where: dict, quiet: np.ndarray | None) -> np.ndarray | None:
    """Which rows of `base` are the one port of a target probed on one port and protocol only, answered, with
    fewer than SERIES_MIN_REPLIES replies in all (most of a sweep's answering targets); None when none is."""
    if len(base) < 2 or any(rows is None for rows in where.values()):  # (one target: the loop)
        return None
    target = base["target"].to_numpy(object)
    codes, names = pd.factorize(target)
    alone = np.bincount(codes, minlength=len(names))[codes] == 1  # the target's only (protocol, port) row
    few = np.array([len(where.get(t, ())) < SERIES_MIN_REPLIES for t in names], bool)[codes]
    single = alone & few & (quiet is None or ~quiet) & (base["family_kind"] != "no answer").to_numpy(bool)
    return single if single.any() else None


def _single_port_targets(rows: pd.DataFrame, where: dict, reply_rows: pd.DataFrame, signals: tuple[str, ...],
                         port_rows: list, fam_rows: list) -> None:
    """The rows of one-port targets (`_single_port_groups`) as the per-target loop makes them, for all of them
    at once: one `_port_table` over their replies keyed by (target, port); a port is its target's family 0
    when RTT could test it or another signal of its own can be trusted, else it has none."""
    names = rows["target"].to_numpy(object)
    port = rows["port"].astype(int).to_numpy()
    key = np.arange(len(rows), dtype=np.int64) * 65536 + port  # (one row per target: its number, its port)
    mine = [where.get(t, np.zeros(0, np.int64)) for t in names]
    replies = reply_rows.take(np.concatenate(mine)) if mine else reply_rows.iloc[0:0]
    replies = replies.assign(_port=np.repeat(np.arange(len(rows), dtype=np.int64) * 65536, [len(m) for m in mine])
                             + replies["_port"].to_numpy(np.int64))
    table = _port_table(replies, key, 0)  # (no clock is fitted under SERIES_MIN_REPLIES: no t_ref)
    placed = (rows["family"].to_numpy(np.int64) >= 0) | table["has_evidence"].to_numpy(bool)
    frame = _with_signals(rows, table, np.where(placed, 0, -1).astype(np.int64), np.full(len(rows), None, object))
    for name in ("options", "rst"):  # (as one frame per target gives them: None where a target has none)
        values = table[name].to_numpy(object).copy()  # (may be a read-only view)
        missing_at = pd.isna(values)
        if missing_at.any():
            values[missing_at] = None
            frame[name] = pd.Series(values, index=frame.index, dtype=object)
    port_rows.append(frame)
    # (one port, few replies: the same for each target of a protocol)
    missing = {proto: _unavailable(table.iloc[:1], signals, proto) for proto in set(rows["protocol"])}
    for target, proto, p in zip(names[placed], rows["protocol"].to_numpy(object)[placed], port[placed].tolist()):
        fam_rows.append(dict(target=target, protocol=proto, family=0, ports=[p], kind="answered", signals=[],
                             evidence=[], unavailable=missing[proto]))


def _silent_targets(base: pd.DataFrame, quiet: np.ndarray, rank: np.ndarray, reply_rows: pd.DataFrame,
                    signals: tuple[str, ...], port_rows: list, fam_rows: list) -> None:
    """The rows of the targets none of whose ports answered (`quiet`) as the per-target loop makes them, for all
    of them at once: each port's signals are those of no reply, and each target is one "no answer" family."""
    rows = base[quiet]
    port = rows["port"].astype(int).to_numpy()
    kinds = np.unique(port).tolist()
    table = _port_table(reply_rows.iloc[0:0], kinds, 0).loc[port]  # (no reply: the same values for every port)
    port_rows.append(_with_signals(rows, table, np.zeros(len(rows), np.int64), np.full(len(rows), None, object)))
    group = rank[quiet]
    order = np.lexsort((port, group))
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    firsts = order[np.r_[0, bounds]]
    targets, protocols = rows["target"].to_numpy(object)[firsts], rows["protocol"].to_numpy(object)[firsts]
    for target, proto, members in zip(targets, protocols, np.split(port[order], bounds)):
        # (nothing answered: no signal to miss)
        fam_rows.append(dict(target=target, protocol=proto, family=0, ports=members.tolist(), kind="no answer",
                             signals=[], evidence=["no reply to any probe"], unavailable=[]))


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
    frame_pos = packet_rows(packets["frame"].to_numpy(), syn["reply_frame"].to_numpy(np.int64))
    # Only the fields the signals read: a copy of all 42 columns for every reply costs ~100 MB a million.
    # (made whole: no column added later)
    reply_rows = pd.DataFrame({name: packets[name].array.take(frame_pos) for name in REPLY_FIELDS}
                              | {"_port": syn["dport"].to_numpy(np.int32)}, copy=False)
    probe_flags = syn["flags"].to_numpy(np.int64, na_value=0)
    if (probe_flags & ACK).any():  # (bare SYNs have none: no column to carry)
        reply_rows["_probe_ack"] = (probe_flags & ACK) != 0
    del frame_pos
    # Each target's replies: positions grouped by target (one sort), not a comparison of every row per target.
    codes, names = column_codes(syn["dst"])  # (the probes' addresses: a categorical's codes, no hashing)
    names = [str(name) for name in names]  # (as the families name targets)
    if len(names) > 1:
        by_target = np.argsort(codes, kind="stable")
        cuts = np.searchsorted(codes[by_target], np.arange(len(names) + 1))
        where = {name: by_target[cuts[k]:cuts[k + 1]] for k, name in enumerate(names)}
    else:  # one target: all the replies
        where = {name: None for name in names}
    del codes
    port_rows, fam_rows = [], []
    # Targets none of whose ports answered (most of a sweep's) have nothing to read but their silence: one
    # frame for all of them, placed where the loop would have put each (`_silent_targets`).
    quiet, rank = _silent_groups(base)
    single = _single_port_groups(base, where, quiet)
    batched = quiet if single is None else single if quiet is None else quiet | single
    for (target, proto), rows in (base[~batched] if batched is not None else base).groupby(["target", "protocol"],
                                                                                          sort=False):
        mine = where.get(target, np.zeros(0, np.int64))
        of_target = reply_rows if mine is None else reply_rows.take(mine)
        t_ref = int(of_target["ts_ns"].min()) if len(of_target) else 0
        port_arr = rows["port"].to_numpy(np.int64)
        port_list = port_arr.tolist()
        table = _port_table(of_target, port_arr, t_ref)
        sig = _lazy_signals(table)
        fam_arr = rows["family"].to_numpy(np.int64)
        median = rows["median_us"].to_numpy(float)
        evidence = table["has_evidence"].to_numpy()
        # Placed: ports RTT could test (fastest first, by RTT floor), then those it could not but another
        # signal of their own can be trusted. Unplaced (no family): untestable with no such signal. Silent:
        # no reply at all, the "no answer" family.
        no_answer = (rows["family_kind"] == "no answer").to_numpy(bool)
        silent = (fam_arr >= 0) & no_answer
        pos = np.flatnonzero(((fam_arr >= 0) & ~silent) | ((fam_arr < 0) & evidence))
        pos = pos[np.lexsort((port_arr[pos], np.where(np.isnan(median[pos]), np.inf, median[pos])))]
        # The RTT evidence names each port's RTT family's median (`family_medians`: the figure every output gives).
        fam_median = medians_by_family(fam_arr, median, ~no_answer)
        lookup = np.full(int(fam_arr.max(initial=-1)) + 2, np.nan)  # (family -1, no family: the last, NaN)
        lookup[list(fam_median)] = list(fam_median.values())
        fam_of, reasons = _place(port_arr[pos], _signature_codes(table, fam_arr)[pos], sig,
                                 dict(zip(port_list, fam_arr.tolist())), dict(zip(port_list, lookup[fam_arr].tolist())),
                                 signals)
        n_fams = int(fam_of.max()) + 1 if len(fam_of) else 0
        labels = np.full(len(port_list), -1, np.int64)
        labels[pos] = fam_of
        labels[silent] = n_fams
        deciding = np.full(len(port_list), None, object)
        deciding[pos] = [r[0][0] if r else None for r in reasons]
        # (a target that answered nothing misses no signal: it has none)
        missing = _unavailable(table, signals, proto) if (rows["received"] > 0).any() else []
        firsts = np.flatnonzero(np.r_[True, np.diff(np.sort(fam_of)) != 0]) if len(fam_of) else np.zeros(0, np.int64)
        first_at = np.argsort(fam_of, kind="stable")[firsts]  # each family's first member, in placement order
        members = np.split(port_arr[pos][np.argsort(fam_of, kind="stable")], firsts[1:])
        for i, (at, fam) in enumerate(zip(first_at, members)):
            # Evidence of the family's first member: why it could join no earlier family (all signals).
            why = reasons[at] or []
            first_per_signal = dict(reversed(why))  # one line of evidence per signal, the first found
            names = list(dict.fromkeys(s for s, _ in why))
            fam_rows.append(dict(target=target, protocol=proto, family=i, ports=sorted(fam.tolist()), kind="answered",
                                 signals=names, evidence=[first_per_signal[s] for s in names], unavailable=missing))
        if silent.any():
            fam_rows.append(dict(target=target, protocol=proto, family=n_fams, ports=sorted(port_arr[silent].tolist()),
                                 kind="no answer", signals=[], evidence=["no reply to any probe"], unavailable=missing))
        port_rows.append(_with_signals(rows, table, labels, deciding))
    if quiet is not None:
        _silent_targets(base, quiet, rank, reply_rows, signals, port_rows, fam_rows)
    if single is not None:
        _single_port_targets(base[single], where, reply_rows, signals, port_rows, fam_rows)
    if not port_rows:  # no port: the columns of one with none of its rows
        none = np.zeros(0, np.int64)
        port_rows.append(_with_signals(base.iloc[0:0], _port_table(reply_rows.iloc[0:0], none, 0), none,
                                       np.zeros(0, object)))
    ports = pd.concat(port_rows, ignore_index=True)
    ports = ports.rename(columns={"family": "rtt_family"}).rename(columns={"signal_family": "family"})
    fam_table = pd.DataFrame(fam_rows, columns=["target", "protocol", "family", "ports", "kind", "signals", "evidence",
                                                "unavailable"])
    if batched is not None:  # each target's rows where the loop over all targets would have put them
        if not len(rank):
            rank = base.groupby(["target", "protocol"], sort=False).ngroup().to_numpy()
        key = {(t, p): r for t, p, r in zip(base["target"], base["protocol"], rank)}
        ports = ports.iloc[np.argsort([key[t, p] for t, p in zip(ports["target"], ports["protocol"])],
                                      kind="stable")].reset_index(drop=True)
        fam_table = fam_table.iloc[np.argsort([key[t, p] for t, p in zip(fam_table["target"],
                                                                          fam_table["protocol"])],
                                              kind="stable")].reset_index(drop=True)
    ports.attrs.update(base.attrs, signals=list(signals))
    return ports, fam_table
