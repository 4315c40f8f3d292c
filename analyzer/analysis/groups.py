"""Rows grouped on integer keys, without pandas groupby and without Python objects.

Each column of a key is integers >= -1 (-1: missing; analysis/columns.py makes them), the columns of a key
are packed into one int64 (`pack_key`), and the keys are numbered by first appearance (`group_ids`, no
sorting). Orders, modes and distinct counts per group are taken the same way. The matcher, the families, the
signals, the scan and host stages group on these.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..accel.keys import first_ids, pack_into
from ..accel.order import sort_words

KEY_SPAN = 1 << 62  # packed keys stay below this
HASHED_ROWS = 1 << 20  # rows of the two sides past which `rows_in` looks rows up by their hashes
IN_ORDER = 1 << 16  # sorted hashes past which `hashed_in` looks hashes up in ascending order


def pack_key(columns: list[np.ndarray]) -> np.ndarray:
    """One int64 per row, equal exactly where the rows agree on every column (integers >= -1)."""
    key, span = np.zeros(len(columns[0]), np.int64), 1
    for column in columns:
        width = int(column.max(initial=-1)) + 2
        if span > KEY_SPAN // width:  # no room beside this column: number the keys so far densely
            key = pd.factorize(key)[0].astype(np.int64)
            span = int(key.max(initial=0)) + 1
            if span > KEY_SPAN // width:  # nor then: the column by its codes too (at most one per row)
                column = pd.factorize(column)[0].astype(np.int64)
                width = int(column.max(initial=-1)) + 2
        key *= width  # (in place: no temporary as long as the rows)
        key += column
        key += 1
        span *= width
    return key


# Odd 64-bit multipliers (of xxHash and splitmix) that spread a row's values over a 64-bit hash (`hash_rows`).
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9),
        np.uint64(0x27D4EB2F165667C5))


def hash_rows(columns: list[np.ndarray]) -> np.ndarray:
    """A 64-bit hash of each row's combination of integer column values, whatever the columns' integer types
    (rows that agree hash alike; two that differ hash alike with odds of about 2^-64): a set of many rows
    held and looked up as one sorted array of uint64 (`hashed_in`), where packed keys take several."""
    h = np.zeros(len(columns[0]), np.uint64)
    part = np.empty_like(h)  # (each step in place: two arrays as long as the rows, whatever the columns)
    with np.errstate(over="ignore"):
        for i, column in enumerate(columns):
            part[:] = column  # (a negative integer wraps round, alike from any integer type)
            part *= _MIX[i % 4]
            h ^= part
            np.right_shift(h, np.uint64(29), out=part)
            h ^= part
            h *= _MIX[(i + 1) % 4]
        np.right_shift(h, np.uint64(32), out=part)
        h ^= part
    return h


def hashed_in(hashes: np.ndarray, sorted_hashes: np.ndarray, *, ascending: bool = False) -> np.ndarray:
    """Whether each hash is among `sorted_hashes` (ascending). `ascending`: the hashes asked about are in
    ascending order too."""
    if not len(sorted_hashes):
        return np.zeros(len(hashes), bool)
    return sorted_hashes[_sorted_at(sorted_hashes, hashes, ascending)] == hashes


def _sorted_at(sorted_hashes: np.ndarray, hashes: np.ndarray, ascending: bool = False) -> np.ndarray:
    """Per hash, the place among `sorted_hashes` (not empty) that holds it if any holds it. Among many sorted
    hashes (past `IN_ORDER`), the hashes are looked up in ascending order: a binary search for each of a million
    random hashes among millions misses the cache at nearly every step, in order each search ends near the
    last (3 to 10 times faster, the sort of the hashes included, on this project's machine). The places are
    the same whatever the order."""
    if ascending or len(sorted_hashes) <= IN_ORDER or len(hashes) < 2:
        at = np.searchsorted(sorted_hashes, hashes)
    else:
        order = np.argsort(hashes)
        at = np.empty(len(hashes), np.intp)
        at[order] = np.searchsorted(sorted_hashes, hashes[order])
    return np.minimum(at, len(sorted_hashes) - 1, out=at)


def group_ids(*columns: np.ndarray) -> np.ndarray:
    """Ids 0..k-1 of the rows' combinations of column values, numbered in order of first appearance."""
    return first_ids(pack_key(list(columns)))


def first_rows(ids: np.ndarray) -> np.ndarray:
    """The position of each id's first row, in id order, for ids numbered by first appearance (`group_ids`: a
    new id is one more than all before it)."""
    return np.flatnonzero(np.r_[True, ids[1:] > np.maximum.accumulate(ids)[:-1]]) if len(ids) else np.zeros(0, np.int64)


def group_positions(ids: np.ndarray) -> list[np.ndarray]:
    """The positions of each group's rows (ids 0..k-1, ascending), each group's in row order."""
    order = stable_order(ids)
    return np.split(order, np.flatnonzero(np.diff(ids[order])) + 1) if len(order) else []


def rows_in(left: list[np.ndarray], right: list[np.ndarray]) -> np.ndarray:
    """Whether each left row's combination of column values is among the right rows' (integers >= -1)."""
    return _hashed_rows_in(left, right) if len(left[0]) + len(right[0]) > HASHED_ROWS else _packed_rows_in(left, right)


def _packed_rows_in(left: list[np.ndarray], right: list[np.ndarray]) -> np.ndarray:
    found, rows = np.zeros(len(left[0]), bool), None  # (None: every row, not taken)
    # Screen column by column (last first) while many rows remain: the right side is mostly small, and
    # some column of it selective (nmap's SYNs share one seq, but few ports answer).
    for a, b in zip(left[::-1], right[::-1]):
        if len(found if rows is None else rows) <= max(len(found) // 16, 1000):
            break
        hit = pd.Series(a if rows is None else a[rows], copy=False).isin(b).to_numpy()
        rows = np.flatnonzero(hit) if rows is None else rows[hit]
    if rows is None:
        rows = np.arange(len(found))
    keys = pack_key([np.concatenate([a[rows], b]) for a, b in zip(left, right)])
    found[rows] = pd.Series(keys[:len(rows)]).isin(keys[len(rows):]).to_numpy()
    return found


def _hashed_rows_in(left: list[np.ndarray], right: list[np.ndarray]) -> np.ndarray:
    """`rows_in` for millions of rows (every SYN of a busy capture), for which hash tables of the values and
    the two sides packed side by side would take several times the columns' own memory:
    each left row's hash (`hash_rows`) is looked up among the right rows' sorted, and where a right row shares
    it, the two rows' columns are compared. Left rows whose hash a differing right row holds (odds of about
    2^-64 a pair) are compared with every right row as `_packed_rows_in` compares."""
    if not len(right[0]):
        return np.zeros(len(left[0]), bool)
    hashes = hash_rows(right)
    order = np.argsort(hashes)
    hashes = hashes[order]
    mine = hash_rows(left)
    at = _sorted_at(hashes, mine)
    rows = np.flatnonzero(hashes[at] == mine)
    del hashes, mine
    twin = at[rows]
    del at
    np.take(order, twin, out=twin)  # (the right row with each left row's hash)
    del order
    same = np.ones(len(rows), bool)
    for a, b in zip(left, right):
        same &= a[rows] == b[twin]
    found = np.zeros(len(left[0]), bool)
    found[rows[same]] = True
    doubt = rows[~same]
    if len(doubt):
        found[doubt] = _packed_rows_in([a[doubt] for a in left], right)
    return found


def group_of(ids: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """For ids that each lie within one group: the group of each id (ids 0..k-1)."""
    out = np.zeros(int(ids.max(initial=-1)) + 1, np.int64)
    out[ids] = groups
    return out


def distinct_per_group(groups: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group (0..n_groups-1), how many distinct values its rows hold."""
    return np.bincount(group_of(group_ids(groups, values), groups), minlength=n_groups)


def narrow(codes: np.ndarray) -> np.ndarray:
    """Non-negative codes in the narrowest unsigned type: numpy sorts 8- and 16-bit integers by radix."""
    top = int(codes.max(initial=0))
    return codes.astype(np.uint8 if top < 1 << 8 else np.uint16 if top < 1 << 16 else np.int64)


def unique_inverse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(values, return_inverse=True) for integers: the distinct values ascending, and each row's place
    among them; by counting where their range is at most a few times their number (ports, hosts, counts), by
    numpy's sort otherwise."""
    if len(values):
        lo, hi = int(values.min()), int(values.max())
        if hi - lo <= 4 * len(values) + (1 << 16):
            offset = values - lo
            seen = np.bincount(offset) > 0
            return np.flatnonzero(seen) + lo, (np.cumsum(seen) - 1)[offset]
    uniques, inverse = np.unique(values, return_inverse=True)
    return uniques, inverse.reshape(-1)


def stable_order(values: np.ndarray) -> np.ndarray:
    """np.argsort(values, kind="stable") for integers, by radix: numpy sorts 8- and 16-bit integers by radix,
    so the values (offset by their minimum) are sorted 16 bits at a time, least significant digit first,
    each pass stable (three passes at most cover 48 bits; wider ranges take numpy's merge sort)."""
    values = np.asarray(values)
    if len(values) < 2:
        return np.arange(len(values))
    lo = int(values.min())
    span = int(values.max()) - lo
    if span >= 1 << 48:
        return np.argsort(values, kind="stable")
    shifted = np.subtract(values, lo, dtype=np.int64)
    order = None
    for shift in range(0, max(span.bit_length(), 1), 16):
        digit = (shifted >> shift).astype(np.uint16) if order is None else (shifted[order] >> shift).astype(np.uint16)
        step = np.argsort(digit, kind="stable")
        order = step if order is None else order[step]
    return order


def modes(port: np.ndarray, values: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Per distinct group (`port`, ascending): the most frequent tuple of `values` (ties: the smallest) and
    how many rows have it. One sort of the rows' (group, values) keys packed into a 64-bit word where they
    fit (else a lexsort)."""
    if not len(port):
        return port, [v[:0] for v in values], np.zeros(0, np.int64)
    cols = [port] + values
    los = [int(c.min()) for c in cols]
    bits = [max((int(c.max()) - lo).bit_length(), 1) for c, lo in zip(cols, los)]
    if sum(bits) <= 64:
        packed = np.zeros(len(port), np.uint64)  # (built and sorted in place: one row-long array)
        for c, lo, b in zip(cols, los, bits):
            pack_into(packed, c, lo, lo + (1 << b) - 1, b)
        keys, counts = _distinct_counts(packed, port)
        del packed
        runs, shift = [], 0
        for lo, b in zip(reversed(los), reversed(bits)):  # unpack, least significant column first
            part = (keys >> np.uint64(shift)) & np.uint64((1 << b) - 1)
            runs.append(part.astype(np.int64) + lo if lo < 0 else part + np.uint64(lo))
            shift += b
        runs.reverse()
    else:
        o = np.lexsort(tuple(reversed(cols)))
        sorted_cols = [c[o] for c in cols]
        new = np.zeros(len(o), bool)
        new[0] = True
        for c in sorted_cols:
            new[1:] |= c[1:] != c[:-1]
        starts = np.flatnonzero(new)
        counts = np.diff(np.append(starts, len(o)))
        runs = [c[starts] for c in sorted_cols]
    # Runs are in (port, values) order: each port's mode is its first run with the port's largest count.
    run_port = runs[0].astype(np.int64)
    first_of_port = np.flatnonzero(np.r_[True, run_port[1:] != run_port[:-1]])
    top = np.maximum.reduceat(counts, first_of_port)
    seg = np.cumsum(np.r_[True, run_port[1:] != run_port[:-1]]) - 1
    best = np.flatnonzero(counts == top[seg])
    best = best[np.r_[True, run_port[best][1:] != run_port[best][:-1]]]
    return run_port[best], [r[best].astype(v.dtype) for r, v in zip(runs[1:], values)], counts[best]


def _distinct_counts(packed: np.ndarray, port: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of `packed` (each row's (port, values) key, the port in the top bits), ascending, and
    how many rows hold each. Most ports hold one value (a port's TTL, window): where the ports are dense enough
    to index an array, each port's least and greatest key are found in one pass, the ports whose two are equal
    are done, and only the other ports' rows are sorted (`sort_words`, in place of the one sort of them all)."""
    lo = int(port.min())
    span = int(port.max()) - lo + 1
    if span <= 4 * len(port) + (1 << 16):
        g = np.subtract(port, lo, dtype=np.intp)
        low, high = np.full(span, np.iinfo(np.uint64).max, np.uint64), np.zeros(span, np.uint64)
        np.minimum.at(low, g, packed)
        np.maximum.at(high, g, packed)
        count = np.bincount(g, minlength=span)
        uniform = (count > 0) & (low == high)
        mixed = ~uniform[g]
        one_keys, one_counts = low[uniform], count[uniform]
        if not mixed.any():
            return one_keys, one_counts
        packed = packed[mixed]
    else:
        one_keys, one_counts = np.zeros(0, np.uint64), np.zeros(0, np.int64)
    sort_words(packed)
    starts = np.flatnonzero(np.r_[True, packed[1:] != packed[:-1]])
    keys, counts = packed[starts], np.diff(np.append(starts, len(packed)))
    if not len(one_keys):
        return keys, counts
    keys, counts = np.concatenate([one_keys, keys]), np.concatenate([one_counts, counts])
    order = np.argsort(keys)  # (distinct keys: any sort is the order)
    return keys[order], counts[order]
