"""The integer-key helpers (analysis/groups.py, analysis/columns.py) against numpy's own answers."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.analysis import groups
from analyzer.analysis.columns import packet_rows, ranges
from analyzer.analysis.groups import stable_order

spans = st.sampled_from([1, 3, 255, 65_535, 65_537, 2**32 + 5, 2**47, 2**62])


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 3000), spans, st.integers(-(2**40), 2**40), st.integers(0, 2**32 - 1))
def test_stable_order_is_numpys_stable_argsort(n, span, low, seed):
    """Radix passes of 16 bits (one to three) or numpy's merge sort: the same permutation, ties in order."""
    values = np.random.default_rng(seed).integers(low, low + span, n)
    assert np.array_equal(stable_order(values), np.argsort(values, kind="stable"))


def test_stable_order_keeps_ties_in_row_order_across_passes():
    values = np.array([70_000, 5, 70_000, 5, 131_077, 5], np.int64)  # equal low digits, different high ones
    assert stable_order(values).tolist() == [1, 3, 5, 0, 2, 4]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=200), st.integers(0, 2**32 - 1))
def test_packet_rows_finds_each_frame(keep, seed):
    """A whole table (frames 1..n: arithmetic) and a filtered one (a search) give the rows holding the frames."""
    frame = np.arange(1, len(keep) + 1)
    for table in (frame, frame[np.asarray(keep)]):
        if not len(table):
            continue
        wanted = np.random.default_rng(seed).choice(table, size=min(5, len(table)), replace=False)
        assert np.array_equal(table[packet_rows(table, wanted)], wanted)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**31 - 10), st.integers(0, 3)), max_size=50), st.booleans())
def test_ranges_is_the_concatenated_aranges(pairs, ones):
    """Any counts (zeros among them), and all ones (the starts themselves): the loop's answer, in int32
    where the values fit."""
    starts = np.array([s for s, _ in pairs], np.int64)
    counts = np.ones(len(pairs), np.int64) if ones else np.array([c for _, c in pairs], np.int64)
    expected = np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts)] + [np.zeros(0, np.int64)])
    for narrow in (False, True):  # (int64 inputs, and int32 ones as the matcher passes them)
        got = ranges(starts.astype(np.int32), counts.astype(np.int32)) if narrow else ranges(starts, counts)
        assert got.tolist() == expected.tolist()
        assert got.dtype == (np.int32 if not len(expected) or expected.max() < 2**31 else np.int64)


def test_packet_rows_checks_every_block_of_a_long_table():
    """A table of 200,000 frames (four blocks of the check): counting, its rows are arithmetic; a frame
    repeated in the third block (first and last still 1 and n) is not a counting table, and is searched."""
    frame = np.arange(1, 200_001)
    frames = np.array([1, 65_537, 140_001, 150_000, 200_000])
    assert packet_rows(frame, frames).tolist() == (frames - 1).tolist()
    odd = frame.copy()
    odd[140_000] = odd[139_999]  # 140,000 twice, 140,001 gone
    assert packet_rows(odd, frames).tolist() == np.searchsorted(odd, frames).tolist()
    assert packet_rows(odd, frames).tolist() != (frames - 1).tolist()


def test_int_column_at_takes_the_rows_asked_in_their_order():
    """Every row in order (the whole column converted) and any other selection, a permutation of every row
    among them: the column's integers at those rows, -1 where missing."""
    import pandas as pd

    from analyzer.analysis.columns import int_column_at

    column = pd.Series(pd.array([5, None, 7, 9], dtype="UInt16"))
    for rows in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3], []):
        got = int_column_at(column, np.array(rows, np.int64), dtype=np.int32)
        assert got.tolist() == [[5, -1, 7, 9][r] for r in rows] and got.dtype == np.int32


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 2000), st.sampled_from([3, 300, 70_000, 2**40]), st.floats(0, 1), st.booleans(),
       st.integers(0, 2**32 - 1))
def test_modes_are_each_groups_most_common_values(n, port_span, mixed, two_columns, seed):
    """groups.modes against a plain count per group: the most common (values) tuple, ties to the least, and its
    count; groups of one value (found without sorting where the ports are dense) and groups of several alike."""
    from collections import Counter

    from analyzer.analysis.groups import modes

    rng = np.random.default_rng(seed)
    port = rng.integers(-1, port_span, n)
    v1 = np.where(rng.random(n) < mixed, rng.integers(-3, 4, n), port % 5)
    columns = [v1, rng.integers(0, 2, n)] if two_columns else [v1]
    got_port, got_values, got_counts = modes(port, columns)
    want = {}
    for p in sorted(set(port.tolist())):
        tally = Counter(zip(*(c[port == p].tolist() for c in columns)))
        top = max(tally.values())
        want[p] = (min(t for t, k in tally.items() if k == top), top)
    assert got_port.tolist() == list(want)
    assert [tuple(int(v[i]) for v in got_values) for i in range(len(got_port))] == [w[0] for w in want.values()]
    assert got_counts.tolist() == [w[1] for w in want.values()]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 3000), st.sampled_from([1, 2, 300, 70_000, 2**20, 2**40]), st.integers(0, 2**32 - 1),
       st.booleans())
def test_first_ids_is_pandas_factorize(n, span, seed, compiled_code):
    """groups.first_ids (accel.keys), through the compiled table (keys of a range up to about twice their number) or pandas'
    hash (wider ranges, or no compiled code): pandas' factorize codes, ids by first appearance."""
    import pandas as pd

    import analyzer.accel
    from analyzer.analysis.groups import first_ids

    keys = np.random.default_rng(seed).integers(0, span, n)
    saved = analyzer.accel.COMPILED
    try:
        analyzer.accel.COMPILED = saved if compiled_code else analyzer.accel.NONE
        got = first_ids(keys)
    finally:
        analyzer.accel.COMPILED = saved
    assert got.dtype == np.int64
    assert np.array_equal(got, pd.factorize(keys)[0])


def test_first_ids_compiled_refuses_keys_outside_its_table():
    import pytest

    import analyzer.accel

    fast = analyzer.accel.COMPILED.sort
    ids = np.empty(3, np.int64)
    assert fast.first_ids(np.array([4, 0, 4]), np.full(5, -1, np.int64), ids) == 2 and ids.tolist() == [0, 1, 0]
    for keys in ([0, 5, 1], [0, -1, 1]):
        with pytest.raises(ValueError, match="outside the table"):
            fast.first_ids(np.array(keys, np.int64), np.full(5, -1, np.int64), ids)
    with pytest.raises(ValueError, match="first_ids ids"):
        fast.first_ids(np.array([0, 1, 2, 3], np.int64), np.full(5, -1, np.int64), ids)


def test_value_codes_are_equal_where_the_values_are():
    """keys.value_codes at some rows: one code per distinct value (one value throughout: no hashing), -1 where
    the value is absent."""
    import pandas as pd

    from analyzer.analysis.columns import value_codes

    column = pd.Series(pd.array([7, None, 7, 2**63, 7, None], dtype="UInt64"))
    for rows, want in (([0, 2, 4], [0, 0, 0]), ([0, 1, 2], [0, -1, 0]), ([3, 0, 1, 4, 3], [0, 1, -1, 1, 0]),
                       ([], [])):
        got = value_codes(column, np.array(rows, np.int64))
        assert got.tolist() == want and got.dtype == np.int64
    assert value_codes(pd.Series(np.array([3, 1, 3])), np.array([0, 1, 2])).tolist() == [0, 1, 0]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 3000), st.sampled_from([1, 3, 300, 70_000, 2**40]), st.integers(-(2**40), 2**40),
       st.integers(0, 2**32 - 1))
def test_unique_inverse_is_numpys(n, span, low, seed):
    """keys.unique_inverse, by counting (small ranges) or by numpy's sort: np.unique's values and inverse."""
    from analyzer.analysis.groups import unique_inverse

    values = np.random.default_rng(seed).integers(low, low + span, n)
    uniques, inverse = unique_inverse(values)
    want_uniques, want_inverse = np.unique(values, return_inverse=True)
    assert np.array_equal(uniques, want_uniques) and np.array_equal(inverse, want_inverse.reshape(-1))


def _with_matches(rng, n, m, columns, span, dtypes):
    """Left and right columns of random integers >= -1, half the left rows copies of right rows."""
    right = [rng.integers(-1, span, m).astype(dtypes[i % len(dtypes)]) for i in range(columns)]
    left = [rng.integers(-1, span, n) for _ in range(columns)]
    if m:
        pick = rng.integers(0, m, n // 2)
        for a, b in zip(left, right):
            a[:n // 2] = b[pick]
    return left, right


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 3000), st.integers(0, 3000), st.integers(1, 5), st.sampled_from([2, 60, 70_000, 2**31 - 1]),
       st.integers(0, 2**32 - 1))
def test_rows_in_by_hashes_is_rows_in_by_packed_keys(n, m, columns, span, seed):
    """The two ways `rows_in` compares rows (the columns packed side by side; each row's 64-bit hash looked up
    among the other side's, then its columns compared) find the same rows, whatever the columns' integer types
    (int32 and int64 hash alike), and a row set against an empty side is in none."""
    left, right = _with_matches(np.random.default_rng(seed), n, m, columns, span, [np.int32, np.int64])
    packed = groups._packed_rows_in(left, right) if m else np.zeros(n, bool)
    assert np.array_equal(groups._hashed_rows_in(left, right), packed)
    if n and m:
        assert packed[:n // 2].all()  # (the copies are found)


def test_rows_in_by_hashes_compares_the_columns_where_hashes_collide(monkeypatch):
    """With every row hashed alike (a collision on every pair), rows whose hash a different row holds are
    compared with every right row: the answer is still exact."""
    left, right = _with_matches(np.random.default_rng(7), 2000, 300, 3, 5, [np.int64])
    want = groups._packed_rows_in(left, right)
    monkeypatch.setattr(groups, "hash_rows", lambda columns: np.zeros(len(columns[0]), np.uint64))
    assert np.array_equal(groups._hashed_rows_in(left, right), want)
    assert want.any() and not want.all()


@pytest.mark.parametrize("in_order", [0, 1 << 30])
def test_hashed_in_finds_the_hashes_held_in_either_order(monkeypatch, in_order):
    """Hashes looked up in the order asked or in ascending order (past `IN_ORDER` sorted hashes, or when the
    caller says they ascend) are found exactly where numpy's isin finds them: below, among and above the held
    ones, repeated, and in the held ones' top and bottom places."""
    monkeypatch.setattr(groups, "IN_ORDER", in_order)
    for seed in range(40):
        rng = np.random.default_rng(seed)
        held = np.unique(rng.integers(0, 2**64, rng.integers(1, 400), dtype=np.uint64))
        asked = np.concatenate([rng.choice(held, rng.integers(0, 300)), held[[0, -1]],
                                rng.integers(0, 2**64, rng.integers(0, 300), dtype=np.uint64),
                                np.array([0, 2**64 - 1], np.uint64)])
        rng.shuffle(asked)
        want = np.isin(asked, held)
        assert np.array_equal(groups.hashed_in(asked, held), want)
        ordered = np.sort(asked)
        assert np.array_equal(groups.hashed_in(ordered, held, ascending=True), np.isin(ordered, held))
    assert not groups.hashed_in(np.array([5], np.uint64), np.zeros(0, np.uint64)).any()
