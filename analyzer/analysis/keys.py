"""Integer keys: rows grouped on several columns without pandas groupby and without Python objects.

Each column of a key becomes integers >= -1 (-1: missing), the columns of a key are packed into one int64,
and pandas' hash factorize numbers the keys (no sorting). The scan and host stages group on these.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import accel as compiled

KEY_SPAN = 1 << 62  # packed keys stay below this


def column_codes(column: pd.Series, dtype: type = np.int64) -> tuple[np.ndarray, np.ndarray]:
    """(codes, values): one integer per row (-1 where missing) and the value each code stands for."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(dtype), column.cat.categories.to_numpy(object)
    codes, values = pd.factorize(column)
    return codes.astype(dtype), np.asarray(values, dtype=object)


def column_values(column: pd.Series) -> np.ndarray:
    """The values `column_codes(column)`'s codes stand for (a categorical's categories: no codes made)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.categories.to_numpy(object)
    return column_codes(column)[1]


def categories_at(column: pd.Series, rows: np.ndarray) -> tuple[np.ndarray, pd.Index]:
    """A categorical column at `rows` as codes into the categories those rows hold (in the column's order; -1
    where absent), taken by code: no text per row."""
    codes = column.cat.codes.to_numpy()[rows]
    categories = column.cat.categories
    used = np.bincount(codes.astype(np.intp) + 1, minlength=len(categories) + 1)[1:] > 0  # (code -1: absent)
    if not used.all():
        new_code = np.append(np.cumsum(used) - 1, -1).astype(codes.dtype)  # old code → new; last: absent
        codes = new_code[codes]
        categories = categories[used]
    return codes, categories


def int_column(column: pd.Series, missing: int = -1, dtype: type = np.int64) -> np.ndarray:
    """A (nullable) integer column as `dtype` (int64 unless a narrower type holds its values), `missing`
    where absent."""
    return column.to_numpy(dtype=dtype, na_value=missing)


def int_column_at(column: pd.Series, rows: np.ndarray, missing: int = -1,
                  dtype: type = np.int64) -> np.ndarray:
    """`int_column(column)[rows]`, converting only those rows (every row: the whole column, no take)."""
    if len(rows) == len(column) and _is_range(rows, 0):  # every row, in order
        return int_column(column, missing, dtype)
    return column.array[rows].to_numpy(dtype, na_value=missing)


def masked_parts(column: pd.Series) -> tuple[np.ndarray, np.ndarray | None]:
    """An integer column's values in their own type (anything where absent) and its absence mask (None: a column
    with no absent values), as pandas keeps them: no conversion."""
    array = column.array
    if isinstance(array, pd.arrays.IntegerArray):  # (the nullable columns)
        return array._data, array._mask
    return np.asarray(array), None


def value_codes(column: pd.Series, rows: np.ndarray) -> np.ndarray:
    """Integer codes of a nullable integer column's values at `rows`, equal exactly where the values are (-1
    where absent): one value throughout (a capture's usual case, as one TCP option layout) takes no hashing."""
    values, absent = masked_parts(column)
    values = values[rows]
    if len(values) and (values == values[0]).all():
        codes = np.zeros(len(values), np.int64)
    else:
        codes = pd.factorize(values)[0].astype(np.int64)
    if absent is not None:
        codes[absent[rows]] = -1
    return codes


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


def pack_into(word: np.ndarray, values: np.ndarray | int, lo: int, hi: int, bits: int,
              keep: np.ndarray | None = None) -> None:
    """word = (word << bits) | (values - lo), in place: one column shifted into packed uint64 keys (an array, or
    one value for all rows; lo <= values <= hi, 0 <= hi - lo < 2^bits). Any integers of up to 64 bits, signed
    or unsigned, the whole range of each (a TCP option layout whose first kind is 128 or more is above 2^63).
    With `keep` (the matcher's replies' side), rows whose value lies outside [lo, hi] are dropped from it: they
    match no transmission, and their bits are 0 from then on. By analyzer._fast.pack_into in one pass where it
    was built (integers of up to 64 bits signed or 32 unsigned, lo and hi within int64)."""
    if np.ndim(values) == 0:
        inside = lo <= int(values) <= hi
        if keep is not None and not inside:
            keep[:] = False
        if bits:
            _shift_left(word, bits)
            if inside:
                np.bitwise_or(word, np.uint64(int(values) - lo), out=word)
        return
    fast = compiled.FAST
    if (fast is not None and bits < 64 and values.dtype.kind in "iu" and (values.dtype.kind == "i" or values.itemsize <= 4)
            and _INT64_MIN <= lo and hi <= _INT64_MAX):
        fast.pack_into(word, np.ascontiguousarray(values), lo, hi, bits, None if keep is None else keep.view(np.uint8))
        return
    if keep is not None:
        keep &= (values >= lo) & (values <= hi)
    if bits:
        # values - lo in uint64 arithmetic (modulo 2^64): exact wherever lo <= values <= hi, whatever the
        # integer type, since then 0 <= values - lo < 2^64.
        offset = values.astype(np.uint64) - np.uint64(lo % (1 << 64))
        if keep is not None:
            offset[~keep] = 0
        _shift_left(word, bits)
        np.bitwise_or(word, offset, out=word)


_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _shift_left(word: np.ndarray, bits: int) -> None:
    """word <<= bits in place (uint64); 64 bits leave 0 (numpy's shift, as C's, is undefined there)."""
    if bits >= 64:
        word[:] = 0
    else:
        np.left_shift(word, np.uint64(bits), out=word)


def group_ids(*columns: np.ndarray) -> np.ndarray:
    """Ids 0..k-1 of the rows' combinations of column values, numbered in order of first appearance."""
    return first_ids(pack_key(list(columns)))


DENSE_SLACK = 1 << 16  # first_ids: a table of up to 2n + this many entries for n keys


def first_ids(keys: np.ndarray) -> np.ndarray:
    """pd.factorize(keys)[0] for non-negative int64 keys: ids 0..k-1 in order of first appearance. Keys of a
    range up to about twice their number (packed keys mostly are) are numbered through a table of that range
    by analyzer._fast.first_ids, where it was built: no hashing. Others, by pandas' hash factorize."""
    fast = compiled.FAST
    if fast is not None and len(keys) and keys.dtype == np.int64:
        span = int(keys.max()) + 1
        if span <= 2 * len(keys) + DENSE_SLACK and int(keys.min()) >= 0:
            ids = np.empty(len(keys), np.int64)
            fast.first_ids(np.ascontiguousarray(keys), np.full(span, -1, np.int64), ids)
            return ids
    return pd.factorize(keys)[0].astype(np.int64)


def group_positions(ids: np.ndarray) -> list[np.ndarray]:
    """The positions of each group's rows (ids 0..k-1, ascending), each group's in row order."""
    order = stable_order(ids)
    return np.split(order, np.flatnonzero(np.diff(ids[order])) + 1) if len(order) else []


def rows_in(left: list[np.ndarray], right: list[np.ndarray]) -> np.ndarray:
    """Whether each left row's combination of column values is among the right rows' (integers >= -1)."""
    found, rows = np.zeros(len(left[0]), bool), np.arange(len(left[0]))
    # Screen column by column (last first) while many rows remain: the right side is mostly small, and
    # some column of it selective (nmap's SYNs share one seq, but few ports answer).
    for a, b in zip(left[::-1], right[::-1]):
        if len(rows) <= max(len(found) // 16, 1000):
            break
        rows = rows[pd.Series(a[rows]).isin(b).to_numpy()]
    keys = pack_key([np.concatenate([a[rows], b]) for a, b in zip(left, right)])
    found[rows] = pd.Series(keys[:len(rows)]).isin(keys[len(rows):]).to_numpy()
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


def sort_words(words: np.ndarray) -> None:
    """words.sort() for a uint64 array, in place: by analyzer._fast's radix sort where it was built (3 to 8 times
    numpy's sort of such keys on this project's machine, and it looks only at the bits in which they differ),
    else by numpy's. The two give the same array: equal integers are indistinguishable."""
    fast = compiled.FAST
    if fast is not None and words.dtype == np.uint64 and words.flags.c_contiguous and words.flags.writeable:
        fast.sort_u64(words)
    else:
        words.sort()


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


def packet_rows(frame: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Rows of the packets table (its column frame: ascending) that hold the given frame numbers."""
    if len(frame) and frame[0] == 1 and frame[-1] == len(frame) and _is_range(frame, 1):
        return np.asarray(frames, np.int64) - 1
    return np.searchsorted(frame, frames)  # a filtered packets table: look frames up


def _is_range(values: np.ndarray, start: int, block: int = 1 << 16) -> bool:
    """values == start, start + 1, …, compared a block at a time (no temporary as long as the values)."""
    return all(np.array_equal(values[a:a + block], np.arange(a + start, min(a + block, len(values)) + start))
               for a in range(0, len(values), block))


def ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts)]) without a Python loop, in int32
    where the values fit. Where every count is 1 (probes sent once) that is the starts themselves: they are
    returned as they are when already of that type (no copy, no int64 detour)."""
    starts, counts = np.asarray(starts), np.asarray(counts)
    total = int(counts.sum(dtype=np.int64))
    most = int(counts.max()) if len(counts) else 0
    fits = total < 2**31 and (not len(starts) or int(starts.max()) + most < 2**31)
    dtype = np.int32 if fits else np.int64
    if total == len(counts) and most <= 1:  # one each: the starts
        return starts.astype(dtype, copy=False)
    starts, counts = starts.astype(np.int64, copy=False), counts.astype(np.int64, copy=False)
    offsets = np.cumsum(counts) - counts
    return np.arange(total, dtype=dtype) - np.repeat((offsets - starts).astype(dtype), counts)
