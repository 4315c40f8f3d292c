"""Integer keys, packed and numbered: a column shifted into packed uint64 keys (`pack_into`), and non-negative
int64 keys numbered by first appearance (`first_ids`). Each in one compiled pass (_sort.c) where it was built,
and by numpy or pandas (the reference) where not; the analyses' groups (analysis/groups.py) are built on these."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import accel


def pack_into(word: np.ndarray, values: np.ndarray | int, lo: int, hi: int, bits: int,
              keep: np.ndarray | None = None) -> None:
    """word = (word << bits) | (values - lo), in place: one column shifted into packed uint64 keys (an array, or
    one value for all rows; lo <= values <= hi, 0 <= hi - lo < 2^bits). Any integers of up to 64 bits, signed
    or unsigned, the whole range of each (a TCP option layout whose first kind is 128 or more is above 2^63).
    With `keep` (the matcher's replies' side), rows whose value lies outside [lo, hi] are dropped from it: they
    match no transmission, and their bits are 0 from then on. By _sort.c's pack_into in one pass where it
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
    fast = accel.COMPILED.sort
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


DENSE_SLACK = 1 << 16  # first_ids: a table of up to 2n + this many entries for n keys


def first_ids(keys: np.ndarray) -> np.ndarray:
    """pd.factorize(keys)[0] for non-negative int64 keys: ids 0..k-1 in order of first appearance. Keys of a
    range up to about twice their number (packed keys mostly are) are numbered through a table of that range
    by _sort.c's first_ids, where it was built: no hashing. Others, by pandas' hash factorize."""
    fast = accel.COMPILED.sort
    if fast is not None and len(keys) and keys.dtype == np.int64:
        span = int(keys.max()) + 1
        if span <= 2 * len(keys) + DENSE_SLACK and int(keys.min()) >= 0:
            ids = np.empty(len(keys), np.int64)
            fast.first_ids(np.ascontiguousarray(keys), np.full(span, -1, np.int64), ids)
            return ids
    return pd.factorize(keys)[0].astype(np.int64)
