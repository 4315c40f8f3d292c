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

import math
from collections.abc import Callable
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


def _mode_per_port(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per port: the most frequent value of `keys` (ties: the smallest) and how many rows have it."""
    counts = frame.groupby(["_port"] + keys, dropna=False).size().reset_index(name="n")
    counts = counts.sort_values(["_port", "n"] + keys, ascending=[True, False] + [True] * len(keys), kind="stable")
    return counts.drop_duplicates("_port").set_index("_port")


def _port_table(replies: pd.DataFrame, ports: list[int], t_ref_ns: int) -> pd.DataFrame:
    """Every port's signals as columns (index: port), computed column-wise over all replies at once.

    Columns: replies, ttl, ttl_agree, window, options, stack_agree, ip_id_class, rst, rst_agree, ts_offset,
    ts_rate, ts_consistent, ipid_series, and the derived ttl_trusted, has_evidence. Only the few ports whose
    verdicts need their own series (an incremental IP ID counter, three or more TCP timestamps) are visited
    one by one.
    """
    index = pd.Index(ports, name="_port")
    table = pd.DataFrame(index=index)
    table["replies"] = replies.groupby("_port").size().reindex(index, fill_value=0).astype(np.int64)
    ttl = _mode_per_port(replies[replies["ttl"].notna()].assign(ttl=lambda f: f["ttl"].astype(np.int64)), ["ttl"])
    table["ttl"] = ttl["ttl"].reindex(index).astype("Int64")
    table["ttl_agree"] = ttl["n"].reindex(index, fill_value=0).astype(np.int64)
    flags = replies["tcp_flags"].fillna(0).astype(np.int64)
    synacks = replies[(flags & (SYN | ACK)) == (SYN | ACK)].assign(
        window=lambda f: f["window"].fillna(-1).astype(np.int64),
        tcp_options=lambda f: f["tcp_options"].fillna(0).astype(np.uint64))
    stack = _mode_per_port(synacks, ["window", "tcp_options"]).reindex(index)
    table["window"] = stack["window"].where(stack["window"] >= 0).astype("Int64")
    layouts = {code: option_layout(int(code)) or "none" for code in stack["tcp_options"].dropna().unique()}
    table["options"] = stack["tcp_options"].map(layouts).astype(object).where(stack["tcp_options"].notna(), None)
    table["stack_agree"] = stack["n"].fillna(0).astype(np.int64)
    rsts = replies.loc[(flags & RST) != 0, ["_port", "window", "tcp_flags"]].assign(
        window=lambda f: f["window"].fillna(-1).astype(np.int64),
        with_ack=lambda f: (f["tcp_flags"].fillna(0).astype(np.int64) & ACK) != 0)
    rst = _mode_per_port(rsts, ["window", "with_ack"]).reindex(index)
    seen = rst["n"].notna()
    texts = {(w, a): f"window {int(w)}, {'RST/ACK' if a else 'bare RST'}"
             for w, a in zip(rst["window"][seen], rst["with_ack"][seen])}
    table["rst"] = pd.Series([texts[k] for k in zip(rst["window"][seen], rst["with_ack"][seen])],
                             index=index[seen.to_numpy()], dtype=object).reindex(index)
    table["rst"] = table["rst"].astype(object).where(seen, None)
    table["rst_agree"] = rst["n"].fillna(0).astype(np.int64)
    # IP ID class from each port's IDs in time order: all zero, steps mostly small (one counter), or random.
    ids = replies[replies["ip_id"].notna()].sort_values(["_port", "ts_ns"], kind="stable")
    id_port = ids["_port"].to_numpy()
    id_vals = ids["ip_id"].astype(np.int64).to_numpy()
    same = np.r_[False, id_port[1:] == id_port[:-1]] if len(id_port) else np.zeros(0, bool)
    small = (np.r_[False, (np.diff(id_vals) % 65536) < IPID_STEP] & same) if len(id_port) else same
    id_stats = pd.DataFrame({"_port": id_port, "count": 1, "zero": id_vals == 0, "small": small, "step": same}
                            ).groupby("_port").sum().reindex(index, fill_value=0)
    count, steps = id_stats["count"].to_numpy(), id_stats["step"].to_numpy()
    incremental = (steps > 0) & (id_stats["small"].to_numpy() > 0.9 * np.maximum(steps, 1))
    table["ip_id_class"] = np.select([count < 3, id_stats["zero"].to_numpy() == count, incremental],
                                     ["unknown", "zero", "incremental"], "random").astype(object)
    table["ts_offset"] = table["ts_rate"] = np.nan
    table["ts_consistent"] = None
    table["ipid_series"] = [()] * len(index)
    has_ts = replies[replies["tsval"].notna()].groupby("_port").size().reindex(index, fill_value=0)
    special = index[(table["ip_id_class"] == "incremental").to_numpy() | (has_ts >= 3).to_numpy()]
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
    table["ttl_trusted"] = (table["ttl"].notna() & (table["ttl_agree"] >= TTL_MIN_REPLIES)
                            & (table["ttl_agree"] >= TTL_AGREEMENT * table["replies"])).fillna(False).astype(bool)
    table["has_evidence"] = (table["ttl_trusted"] | (table["stack_agree"] >= 2) | (table["rst_agree"] >= 2)
                             | table["ts_offset"].notna())
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
                       r["ts_consistent"], opt(r["rst"]), int(r["rst_agree"]))


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


def _lazy_signals(table: pd.DataFrame) -> Callable[[int], PortSignals]:
    """port → its PortSignals, built on first use only (most ports never need theirs)."""
    cache: dict[int, PortSignals] = {}

    def sig(port: int) -> PortSignals:
        if port not in cache:
            cache[port] = _port_signals(table, port)
        return cache[port]
    return sig


def _signatures(table: pd.DataFrame, rtt_family: pd.Series) -> list[tuple]:
    """Per port, what `_apart` looks at, as a key; ports whose verdicts depend on their own series (TCP
    timestamps, an incremental IP ID counter) get a key of their own."""
    own = (table["ts_offset"].notna() | (table["ip_id_class"] == "incremental")).tolist()
    ttl = table["ttl"].astype(object).where(table["ttl_trusted"], None).tolist()
    stack_ok = (table["stack_agree"] >= 2).tolist()
    rst_ok = (table["rst_agree"] >= 2).tolist()
    keys = []
    for port, mine, fam, t, trusted, w, o, s_ok, r, r_ok in zip(
            table.index, own, rtt_family, ttl, table["ttl_trusted"].tolist(),
            table["window"].astype(object).where(table["window"].notna(), None).tolist(),
            table["options"].tolist(), stack_ok, table["rst"].tolist(), rst_ok):
        keys.append(("port", port) if mine else (fam, t, trusted, (w, o) if s_ok else None, r if r_ok else None))
    return keys


def _unavailable(table: pd.DataFrame, use: tuple[str, ...]) -> list[str]:
    """Signals that could not be read for this target, and why: ports they would separate may still differ."""
    out = []
    any_clock = table["ts_offset"].notna().any()
    if "clock" in use and (table["ts_consistent"] == False).any() and not any_clock:
        out.append("clock: TCP timestamps do not follow one clock per port (per-connection offsets, as current "
                   "Linux hashes the ports into them): they carry no host identity")
    elif "clock" in use and not any_clock:
        out.append("clock: no TCP timestamps in the replies (probes carried no timestamp option; "
                   "synlens-agent --tcp-timestamps adds one): machines alike in TTL and RTT cannot be told apart")
    if "ip_id" in use and not (table["ip_id_class"] == "incremental").any():
        out.append("ip_id: no incremental IP ID counter (zero or random IDs carry no host identity)")
    if "stack" in use and table["options"].notna().sum() < 2:
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
        of_target = reply_rows[reply_rows["_target"] == target]
        t_ref = int(of_target["ts_ns"].min()) if len(of_target) else 0
        port_list = rows["port"].astype(int).tolist()
        table = _port_table(of_target, port_list, t_ref)
        sig = _lazy_signals(table)
        rtt_fam = dict(zip(port_list, rows["family"].astype(int)))
        means = dict(zip(port_list, rows["median_us"]))
        kinds = dict(zip(port_list, rows["family_kind"]))
        evidence_of = dict(zip(port_list, table["has_evidence"].tolist()))
        key_of = dict(zip(port_list, _signatures(table, rows["family"].astype(int).tolist())))
        answered = [p for p in rtt_fam if rtt_fam[p] >= 0 and kinds[p] != "no answer"]
        # Untestable by RTT: placed only when another signal of its own can be trusted; else no family.
        unplaced = [p for p in rtt_fam if rtt_fam[p] < 0 and not evidence_of[p]]
        answered += [p for p in rtt_fam if rtt_fam[p] < 0 and evidence_of[p]]
        answered.sort(key=lambda p: (means[p] if means[p] == means[p] else math.inf, p))  # NaN last
        fams: list[list[int]] = []
        # Per family, one representative per signal signature: members alike in every signal give the
        # same verdict, so a port is compared with each signature once, not with every member.
        reps: list[dict[tuple, int]] = []
        decided: dict[int, list[tuple[str, str]]] = {}
        # A port whose signature was placed while the representatives stayed as they are now meets the same
        # verdicts: reuse them (65,535 alike ports cost one comparison each, not one per family).
        version = 0
        verdicts: dict[tuple, tuple[int, int, list | None]] = {}
        for p in answered:
            key = key_of[p]
            seen = verdicts.get(key)
            if seen is not None and seen[0] == version:
                fams[seen[1]].append(p)
                if seen[2] is not None:
                    decided[p] = seen[2]
                continue
            placed = None
            for i, (fam, fam_reps) in enumerate(zip(fams, reps)):
                reasons = []
                for q in fam_reps.values():
                    rtt_reason = None
                    if rtt_fam[p] >= 0 and rtt_fam[q] >= 0 and rtt_fam[p] != rtt_fam[q]:
                        rtt_reason = (f"RTT median {means[q] / 1000:.2f} ms vs {means[p] / 1000:.2f} ms "
                                      f"(robust families {rtt_fam[q]} and {rtt_fam[p]})")
                    reasons += _apart(sig(p), sig(q), rtt_reason, signals)
                if not reasons:
                    fam.append(p)
                    if key not in fam_reps:
                        fam_reps[key] = p
                        version += 1
                    placed = i
                    break
                decided[p] = reasons  # the last family tried: the nearest in RTT order
            if placed is None:
                fams.append([p])
                reps.append({key: p})
                version += 1
                placed = len(fams) - 1
            verdicts[key] = (version, placed, decided.get(p))
        placed_or_not = set(answered) | set(unplaced)
        silent = [p for p in rtt_fam if p not in placed_or_not]
        missing = _unavailable(table, signals)
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
        port_rows.append(rows.assign(
            ttl=table["ttl"].array, ttl_agree=table["ttl_agree"].to_numpy(),
            window=table["window"].array, options=table["options"].to_numpy(),
            ip_id_class=table["ip_id_class"].to_numpy(), rst=table["rst"].to_numpy(),
            ts_offset=table["ts_offset"].astype(object).where(table["ts_offset"].notna(), None).to_numpy(),
            ts_rate=table["ts_rate"].astype(object).where(table["ts_rate"].notna(), None).to_numpy(),
            signal_family=[labels[p] for p in port_list],
            deciding_signal=[decided[p][0][0] if p in decided else None for p in port_list]))
    ports = (pd.concat(port_rows, ignore_index=True) if port_rows else base.iloc[0:0])
    ports = ports.rename(columns={"family": "rtt_family"}).rename(columns={"signal_family": "family"})
    fam_table = pd.DataFrame(fam_rows, columns=["target", "protocol", "family", "ports", "kind", "signals", "evidence",
                                                "unavailable"])
    ports.attrs.update(base.attrs, signals=list(signals))
    return ports, fam_table
