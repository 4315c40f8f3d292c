"""Families: properties of the grouping methods and the simulation the issue sets as the bar."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.analysis.families import group_qscan, group_robust

RNG_SEEDS = st.integers(0, 2**32 - 1)


def same_partition(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return all((a[i] == a[j]) == (b[i] == b[j]) for i in range(len(a)) for j in range(len(a)))


def lab_like(rng, n_ports=8, n=10, slow=(), factor=1.6):
    """RTT = 80 µs + lognormal (median 60 µs, σ 0.6); `slow` ports answer `factor` times slower."""
    out = [80 + rng.lognormal(np.log(60), 0.6, n) for _ in range(n_ports)]
    return [s * factor if i in slow else s for i, s in enumerate(out)]


def simulate(seed, slow_count, targets=200, confidence=0.99, method="robust"):
    """The share of `targets` whose partition is exactly right; `seed` may be a list of seeds (pooled)."""
    if isinstance(seed, list):
        return float(np.mean([simulate(s, slow_count, targets, confidence, method) for s in seed]))
    rng = np.random.default_rng(seed)
    right = 0
    for _ in range(targets):
        slow = set(rng.choice(8, slow_count, replace=False).tolist()) if slow_count else set()
        samples = lab_like(rng, slow=slow)
        truth = [int(i in slow) for i in range(8)]
        labels = group_robust(samples, confidence) if method == "robust" else group_qscan(samples, confidence)
        right += same_partition(labels, truth)
    return right / targets


def test_simulation_all_alike_kept_together():
    """200 targets × 8 alike ports × 10 probes: at least 95 % kept in one family (qscan: ~60 %)."""
    assert simulate(seed=2026, slow_count=0) >= 0.95
    assert simulate(seed=2026, slow_count=0, confidence=0.95, method="qscan") < 0.8


def test_simulation_three_slow_ports_found():
    """3 of 8 ports answer 1.6× slower: the exact two families in at least 95 % of 4 × 200 targets."""
    assert simulate(seed=[2026, 2027, 2028, 2029], slow_count=3) >= 0.95
    assert simulate(seed=2027, slow_count=3, confidence=0.95, method="qscan") < 0.8


@settings(max_examples=40, deadline=None)
@given(RNG_SEEDS, st.permutations(range(8)))
def test_permuting_ports_changes_nothing(seed, perm):
    samples = lab_like(np.random.default_rng(seed), slow={1, 4, 6})
    labels = group_robust(samples)
    permuted = group_robust([samples[i] for i in perm])
    assert same_partition(permuted, labels[list(perm)])


@settings(max_examples=40, deadline=None)
@given(RNG_SEEDS, st.integers(0, 7), st.floats(1000, 20000))
def test_one_spike_does_not_split(seed, port, spike_us):
    """One spike (e.g. 2 ms among ~100 µs replies) in one port's ten replies never splits a family."""
    rng = np.random.default_rng(seed)
    samples = [100 + rng.lognormal(np.log(20), 0.3, 10) for _ in range(8)]
    before = group_robust(samples)
    samples[port] = samples[port].copy()
    samples[port][rng.integers(10)] = spike_us
    after = group_robust(samples)
    assert len(set(before)) == 1  # eight alike ports: one family
    assert same_partition(before, after)  # and the spike splits nothing off


def test_nat_like_families_are_found_and_numbered_fastest_first():
    rng = np.random.default_rng(5)
    local = [100 + rng.lognormal(np.log(20), 0.5, 10) for _ in range(3)]
    forwarded = [2900 + rng.lognormal(np.log(100), 0.5, 10) for _ in range(3)]
    labels = group_robust(forwarded[:1] + local + forwarded[1:])
    assert labels.tolist() == [1, 0, 0, 0, 1, 1]


@pytest.mark.parametrize("confidence", [0.5, 0.9, 0.999999])
def test_any_confidence_in_open_interval(confidence):
    rng = np.random.default_rng(1)
    assert len(group_robust(lab_like(rng), confidence)) == 8


@pytest.mark.parametrize("confidence", [0.0, 1.0, -1, 2])
def test_confidence_outside_open_interval_refused(confidence):
    with pytest.raises(ValueError):
        group_robust(lab_like(np.random.default_rng(1)), confidence)


def test_qscan_greedy_depends_on_port_order():
    """qscan's greedy grouping is order-dependent: a middle port bridges two ports or not."""
    a = np.array([100, 101, 99, 100, 102, 98, 100, 101, 99, 100.0])
    b, c = a + 0.7, a + 1.4  # a ~ b and b ~ c, but a differs from c
    in_order = group_qscan([a, b, c], 0.95)  # a opens, b joins a, c differs from a: two families
    b_first = group_qscan([b, a, c], 0.95)  # b opens, a and c both join b: one family
    assert len(set(in_order)) == 2 and len(set(b_first)) == 1
    robust = group_robust([a, b, c]), group_robust([b, a, c])
    assert same_partition(robust[0], robust[1][[1, 0, 2]])


def _probes(rows):
    return pd.DataFrame(rows).astype({"flags": "UInt16", "reply_frame": "Int64", "rtt_ns": "Int64", "dport": "UInt16",
                                      "ts_ns": "int64"})


def _probe(port, ts_ns, rtt_us):
    return dict(dst="10.0.0.2", protocol="tcp", dport=port, flags=2, ts_ns=ts_ns, transmissions=1,
                reply_frame=pd.NA if rtt_us is None else 1, rtt_ns=pd.NA if rtt_us is None else int(rtt_us * 1000))


def test_families_frame_kinds():
    from analyzer.analysis.families import families

    rng = np.random.default_rng(0)
    rows = []
    for trip in range(10):  # qscan's way: every port in turn, trip after trip, 20 ms apart
        for i, (port, base) in enumerate(((22, 100), (80, 100), (443, 3000), (135, None))):
            rtt = None if base is None else base + rng.normal(0, 5)
            rows.append(_probe(port, (trip * 4 + i) * 20_000_000, rtt))
    rows.append(_probe(25, 900_000_000, 90.0))
    fams = families(_probes(rows)).set_index("port")
    assert fams.loc[22, "family"] == fams.loc[80, "family"] == 0
    assert fams.loc[443, "family"] == 1
    assert fams.loc[135, "family_kind"] == "no answer" and fams.loc[135, "family"] == 2
    assert fams.loc[135, "loss"] == 1.0 and fams.loc[135, "sent"] == 10
    assert fams.loc[25, "family_kind"] == "untestable" and fams.loc[25, "family"] == -1


def test_ports_probed_one_after_another_are_untestable():
    """The same RTTs, but each port's ten probes sent before the next port's (hping3 one port at a time): no
    trip holds two ports, so RTT compares nothing and claims nothing, however far apart the ports are."""
    from analyzer.analysis.families import families

    rng = np.random.default_rng(0)
    rows = [_probe(port, (j * 10 + trip) * 20_000_000, base + rng.normal(0, 5))
            for j, (port, base) in enumerate(((22, 100), (80, 100), (443, 3000))) for trip in range(10)]
    fams = families(_probes(rows))
    assert (fams["family_kind"] == "untestable").all() and (fams["family"] == -1).all()


@pytest.mark.parametrize(("shared", "kind"), [(4, "untestable"), (5, "answered")])
def test_the_evidence_rule_needs_five_shared_trips(shared, kind):
    """Eight ports (three 30x slower), probed together in `shared` trips, then each alone in five more, a minute
    apart: a split needs MIN_TRIPS = 5 shared trips; with four, every port is untestable, none set apart."""
    from analyzer.analysis.families import MIN_TRIPS, families

    assert MIN_TRIPS == 5
    rng = np.random.default_rng(1)
    ports = ((22, 100), (23, 100), (25, 100), (80, 100), (110, 100), (443, 3000), (3306, 3000), (8080, 3000))
    rows, t = [], 0
    for trip in range(shared):
        for port, base in ports:
            rows.append(_probe(port, t, base + rng.normal(0, 5)))
            t += 20_000_000
    for port, base in ports:  # then each alone, trip after trip, a minute after the last port's
        t += 60_000_000_000
        for _ in range(5):
            rows.append(_probe(port, t, base + rng.normal(0, 5)))
            t += 20_000_000
    fams = families(_probes(rows)).set_index("port")
    assert set(fams["family_kind"]) == {kind}
    if kind == "answered":
        assert fams["family"].to_dict() == {22: 0, 23: 0, 25: 0, 80: 0, 110: 0, 443: 1, 3306: 1, 8080: 1}


def test_sampling_blocks_are_trips_and_windows():
    from analyzer.analysis.families import BLOCK_S, sampling_blocks

    second = 1_000_000_000
    # qscan: every port in turn → trip k holds each port's k-th probe
    port = np.tile([22, 80, 443], 4)
    blocks = sampling_blocks(np.zeros(12), port, np.arange(12) * second // 10)
    assert blocks.tolist() == np.repeat(np.arange(4), 3).tolist()
    # one port after another: every probe of a port opens a trip, the next port joins the last one
    port = np.repeat([22, 80], 3)
    assert sampling_blocks(np.zeros(6), port, np.arange(6) * second).tolist() == [0, 1, 2, 2, 3, 4]
    # one pass over many ports, longer than BLOCK_S: windows of it
    n = 40
    blocks = sampling_blocks(np.zeros(n), np.arange(n), np.arange(n) * second)
    assert blocks.tolist() == (np.arange(n) // int(BLOCK_S)).tolist()
    # groups (targets) never share a block, whatever the order of the rows
    g = np.array([0, 1, 0, 1])
    blocks = sampling_blocks(g, np.array([22, 22, 80, 80]), np.array([0, 0, 1, 1]))
    assert blocks[0] == blocks[2] and blocks[1] == blocks[3] and blocks[0] != blocks[1]


def test_a_reply_timed_microseconds_after_its_probe_does_not_split_a_machine():
    """A real qscan capture from the NAT lab (tests/data/lab/README.md): the first replies of ports 23 and 80
    came 7 and 10 µs after their probes, among replies of 70-100 µs. The gateway's ports stay one family,
    the forwarded ports another."""
    import analyzer

    capture = Path(__file__).parent / "data" / "lab" / "qscan_low_outliers.pcap"
    fams = analyzer.families(analyzer.match(analyzer.read(capture)))
    family = dict(zip(fams["port"], fams["family"]))
    assert {family[p] for p in (22, 23, 80)} == {0} and {family[p] for p in (443, 3306, 8080)} == {1}, family


def _trips_by_hand(group, port, ts):
    """The trip rule probe by probe: a probe opens a new trip when its port was probed in the current one."""
    order = np.lexsort((np.arange(len(port)), ts, group))
    trip, last, current, previous = np.empty(len(port), int), {}, 0, None
    for i, (g, p) in enumerate(zip(group[order].tolist(), port[order].tolist())):
        if g != previous:
            current, previous = 0, g
        seen = last.get((g, p))
        if seen is not None and seen >= current:
            current = seen + 1
        last[(g, p)] = trip[i] = current
    out = np.empty(len(port), int)
    out[order] = trip
    return out


@settings(max_examples=200, deadline=None)
@given(RNG_SEEDS, st.integers(1, 80), st.integers(1, 3), st.integers(1, 8))
def test_trips_are_the_rule_probe_by_probe(seed, n, groups, ports):
    """`sampling_blocks` numbers trips by whole-array rounds; the rule applied probe by probe gives the same trips
    (blocks of unbounded length are the trips themselves, numbered in order of first appearance)."""
    from analyzer.analysis.families import sampling_blocks

    rng = np.random.default_rng(seed)
    group, port, ts = rng.integers(0, groups, n), rng.integers(0, ports, n), rng.permutation(n)
    blocks = sampling_blocks(group, port, ts, block_s=np.inf)
    trips = _trips_by_hand(group, port, ts)
    assert same_partition(blocks, group * 1000 + trips)


@settings(max_examples=100, deadline=None)
@given(RNG_SEEDS, st.integers(1, 60))
def test_family_medians_are_the_median_of_port_medians(seed, n):
    """`family_medians` (the figure text, JSON and report give) is pandas' median of each answered family's
    ports' medians, NaN left out, per target and protocol."""
    from analyzer.analysis.families import family_medians

    rng = np.random.default_rng(seed)
    ports = pd.DataFrame({"target": rng.choice(["10.0.0.1", "10.0.0.2"], n), "protocol": rng.choice(["tcp", "udp"], n),
                          "family": rng.integers(-1, 3, n), "family_kind": rng.choice(["answered", "no answer"], n),
                          "median_us": np.where(rng.random(n) < 0.2, np.nan, rng.normal(100, 10, n))})
    answered = ports[(ports["family"] >= 0) & (ports["family_kind"] != "no answer")]
    want = answered.groupby(["target", "protocol", "family"])["median_us"].median().sort_index()
    got = family_medians(ports).sort_index()
    assert list(got.index) == list(want.index)
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy())
