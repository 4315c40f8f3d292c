"""RTT families over time: one machine whose RTT drifts while it is probed (steps and trends over minutes).

A scan probes each port at its own moments; between those moments the network and the host change (load, the
scan itself, power saving), so two ports of one machine differ in RTT without another machine behind either.
These simulations give every target one such drift and check the promises of analyzer.families
(docs/families.md):

* nmap-style sampling (each port once or twice, in port order, over minutes): at most 1 % of targets split;
* qscan-style trips (every port in turn, trip after trip) with the same drift: no split of one machine in more
  than 1 % of targets, and three forwarded ports 1.6x slower found, exactly, in at least 95 % of targets.

Probes tables are built as `analyzer.match` makes them (one row per probe: send time, target, port, RTT) and go
through `analyzer.families`, sampling blocks and all.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import analyzer

T0_NS = 1_700_000_000 * 10**9


def drift(rng: np.random.Generator, duration_s: float):
    """A log-RTT offset over time: a trend of up to 1.5x either way over 3 minutes, plus steps (one every 30 s on
    average, each a factor of e^N(0, 0.2): a step of 1.22x or more in a third of them) at random moments."""
    slope = rng.uniform(-1, 1) * np.log(1.5) / 180
    n_steps = rng.poisson(duration_s / 30)
    at = np.sort(rng.uniform(0, duration_s, n_steps))
    size = rng.normal(0, 0.2, n_steps)

    def offset(t_s: np.ndarray) -> np.ndarray:
        return slope * t_s + (size[None, :] * (t_s[:, None] >= at[None, :])).sum(axis=1)
    return offset


def rtt_us(rng: np.random.Generator, n: int) -> np.ndarray:
    """One path's RTTs as in tests/test_families.py: 80 µs + lognormal queueing (median 60 µs, σ 0.6)."""
    return 80 + rng.lognormal(np.log(60), 0.6, n)


def probes_table(targets: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """(send times in s, ports, RTTs in µs) per target → a probes table (targets 10.0.<i>.<j>)."""
    rows = []
    for i, (t_s, port, rtt) in enumerate(targets):
        rows.append(pd.DataFrame({"ts_ns": T0_NS + (t_s * 1e9).astype(np.int64),
                                  "dst": f"10.0.{i // 250}.{i % 250 + 1}", "protocol": "tcp", "dport": port,
                                  "flags": 2, "transmissions": 1, "reply_frame": np.arange(len(port)),
                                  "rtt_ns": (rtt * 1000).astype(np.int64)}))
    frame = pd.concat(rows, ignore_index=True)
    return frame.astype({"dst": "category", "protocol": "category", "dport": "UInt16", "flags": "UInt16",
                         "reply_frame": "Int64", "rtt_ns": "Int64"})


def nmap_style(rng: np.random.Generator, n_ports: int = 100, gap_s: float = 1.8, passes: int = 1):
    """Ports in port order, one probe each `gap_s` apart (100 ports: 3 minutes a pass); after the last pass a
    random half of the ports probed once more (nmap's retries): each port once or twice when `passes` is 1."""
    port = np.tile(np.arange(1, n_ports + 1), passes)
    again = np.sort(rng.choice(n_ports, n_ports // 2, replace=False)) + 1
    port = np.concatenate([port, again])
    t_s = np.arange(len(port)) * gap_s
    rtt = rtt_us(rng, len(port)) * np.exp(drift(rng, t_s[-1])(t_s))
    return t_s, port, rtt


def qscan_style(rng: np.random.Generator, slow: set[int], n_ports: int = 8, trips: int = 10, gap_s: float = 1.0,
                factor: float = 1.6):
    """Every port in turn, trip after trip, `gap_s` apart (8 ports x 10 trips: 80 s); `slow` ports answer
    `factor` times slower (a forwarded path)."""
    port = np.tile(np.arange(1, n_ports + 1), trips)
    t_s = np.arange(len(port)) * gap_s
    rtt = rtt_us(rng, len(port)) * np.exp(drift(rng, t_s[-1])(t_s)) * np.where(np.isin(port, list(slow)), factor, 1)
    return t_s, port, rtt


def answered_partitions(fams: pd.DataFrame) -> dict[str, set[frozenset[int]]]:
    out: dict[str, set[frozenset[int]]] = {}
    answered = fams[fams["family_kind"] == "answered"]
    for (target, fam), rows in answered.groupby(["target", "family"]):
        out.setdefault(target, set()).add(frozenset(rows["port"].astype(int)))
    return out


TARGETS = 200


def test_nmap_style_sampling_of_a_drifting_machine_splits_at_most_1_percent() -> None:
    rng = np.random.default_rng(1818)
    fams = analyzer.families(probes_table([nmap_style(rng) for _ in range(TARGETS)]))
    split = [t for t, parts in answered_partitions(fams).items() if len(parts) > 1]
    assert len(split) <= 0.01 * TARGETS, split
    # And why: one or two samples a port, taken minutes apart, meet no evidence rule. Each port says so.
    assert set(fams["family_kind"]) == {"untestable"} and (fams["family"] == -1).all()


def test_nmap_style_passes_repeated_over_minutes_split_at_most_1_percent() -> None:
    """Six passes in port order (40 ports, 72 s a pass): each port has six samples, but a pass is longer than a
    sampling block, so ports are compared only within blocks of at most BLOCK_S seconds of a pass."""
    rng = np.random.default_rng(1819)
    fams = analyzer.families(probes_table([nmap_style(rng, n_ports=40, passes=6) for _ in range(TARGETS)]))
    split = [t for t, parts in answered_partitions(fams).items() if len(parts) > 1]
    assert len(split) <= 0.01 * TARGETS, split
    assert (fams["family_kind"] == "answered").mean() > 0.9  # tested, not merely untestable


def test_qscan_style_trips_of_a_drifting_machine_split_at_most_1_percent() -> None:
    rng = np.random.default_rng(1820)
    fams = analyzer.families(probes_table([qscan_style(rng, set()) for _ in range(TARGETS)]))
    parts = answered_partitions(fams)
    assert len(parts) == TARGETS and (fams["family_kind"] == "answered").all()
    split = [t for t, p in parts.items() if len(p) > 1]
    assert len(split) <= 0.01 * TARGETS, split


def test_qscan_style_trips_find_a_forwarded_trio_despite_the_drift() -> None:
    """Three forwarded ports of eight, 1.6x slower: the exact two families in at least 95 % of 3 x 200 targets
    (ten seeds give 94.5-97.0 %, 95.8 % in all: docs/families.md)."""
    right = 0
    for seed in (1821, 1822, 1823):
        rng = np.random.default_rng(seed)
        slow = [set((rng.choice(8, 3, replace=False) + 1).tolist()) for _ in range(TARGETS)]
        parts = answered_partitions(analyzer.families(probes_table([qscan_style(rng, s) for s in slow])))
        targets = sorted(parts, key=lambda t: tuple(int(x) for x in t.split(".")))  # (made in this order)
        right += sum(parts[t] == {frozenset(s), frozenset(set(range(1, 9)) - s)} for t, s in zip(targets, slow))
    assert right >= 0.95 * 3 * TARGETS, right


def test_the_evidence_rule_is_where_a_split_becomes_possible() -> None:
    """MIN_TRIPS = 5: with four trips the blocked test finds no forwarded trio at all (the rule labels such ports
    untestable rather than tested and alike); with five it finds some, with ten nearly all."""
    def found(trips: int, seed: int) -> tuple[int, set[str]]:
        rng = np.random.default_rng(seed)
        slow = [set((rng.choice(8, 3, replace=False) + 1).tolist()) for _ in range(TARGETS)]
        fams = analyzer.families(probes_table([qscan_style(rng, s, trips=trips) for s in slow]))
        parts = answered_partitions(fams)
        targets = sorted(parts, key=lambda t: tuple(int(x) for x in t.split(".")))
        right = sum(parts[t] == {frozenset(s), frozenset(set(range(1, 9)) - s)} for t, s in zip(targets, slow))
        return right, set(fams["family_kind"])

    assert found(4, 1822) == (0, {"untestable"})
    five, kinds = found(5, 1823)
    assert kinds == {"answered"} and 0.3 * TARGETS < five < 0.9 * TARGETS, five
