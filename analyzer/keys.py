"""Integer keys: rows grouped on several columns without pandas groupby and without Python objects.

Each column of a key becomes integers >= -1 (-1: missing), the columns of a key are packed into one int64,
and pandas' hash factorize numbers the keys (no sorting). The scan and host stages group on these.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KEY_SPAN = 1 << 62  # packed keys stay below this


def column_codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(codes, values): one integer per row (-1 where missing) and the value each code stands for."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(np.int64), column.cat.categories.to_numpy(object)
    codes, values = pd.factorize(column)
    return codes.astype(np.int64), np.asarray(values, dtype=object)


def int_column(column: pd.Series, missing: int = -1) -> np.ndarray:
    """A (nullable) integer column as int64, `missing` where absent."""
    return column.to_numpy(dtype=np.int64, na_value=missing)


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
        key, span = key * width + (column + 1), span * width
    return key


def group_ids(*columns: np.ndarray) -> np.ndarray:
    """Ids 0..k-1 of the rows' combinations of column values, numbered in order of first appearance."""
    return pd.factorize(pack_key(list(columns)))[0].astype(np.int64)


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
