"""Columns of the packets and probes tables as plain integers: categorical and nullable columns as codes
(-1 where missing) without a Python object per row, values taken at some rows, and the rows of given frames.
The analyses group and compare these (analysis/groups.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def column_codes(column: pd.Series, dtype: type | None = np.int64) -> tuple[np.ndarray, np.ndarray]:
    """(codes, values): one integer per row (-1 where missing) and the value each code stands for. `dtype`
    None: a categorical's own codes (8 to 32 bits: not copied), int64 for other columns."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(dtype), column.cat.categories.to_numpy(object)
    codes, values = pd.factorize(column)
    return codes.astype(dtype or np.int64), np.asarray(values, dtype=object)


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
