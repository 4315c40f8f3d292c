"""Orders of uint64 keys: an in-place sort (`sort_words`), the matcher's order of entries by (key, time)
(`key_time_order`), and each reply's latest transmission in that order (`latest_in_runs`). Each in one
compiled pass (_sort.c) where it was built, and by numpy (the reference) where not, or where the compiled pass
leaves the case to it (a hash collision)."""

from __future__ import annotations

import numpy as np

from .. import accel


def sort_words(words: np.ndarray) -> None:
    """words.sort() for a uint64 array, in place: by _sort.c's radix sort where it was built (3 to 8 times
    numpy's sort of such keys on this project's machine, and it looks only at the bits in which they differ),
    else by numpy's. The two give the same array: equal integers are indistinguishable."""
    fast = accel.COMPILED.sort
    if fast is not None and words.dtype == np.uint64 and words.flags.c_contiguous and words.flags.writeable:
        fast.sort_u64(words)
    else:
        words.sort()


def key_time_order(words: list[np.ndarray], used: int, box: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The order of entries by (key, time rank), and, in that order, where an entry's key equals the one before
    it (a bool per entry, False for the first): keys as uint64 words (the last using `used` bits; the list is
    emptied, its words freed once used), time ranks distinct non-negative integers (the one array in `box`, taken
    out of it so that it can be freed as soon as it is no longer needed). One sort of 64-bit values (not an index
    sort: each value carries its entry's rank in its low bits, and the rank leads back to the entry):

    - key bits and rank bits fit one word: exact;
    - else the key is replaced by the top bits of a hash of its words, beside the rank. Entries with equal
      hashes are then adjacent; if any two of them differ in their words (a collision, rare: about
      n² / 2^(64 - rank bits) for n distinct keys), the order is made again exactly with lexsort.

    _sort.c's key_order does it in one compiled pass where it was built (`_compiled_key_order`), the numpy
    code below where it was not, or where it finds a collision.
    """
    when = box.pop()
    if not len(when):
        return np.zeros(0, np.int64), np.zeros(0, bool)
    done = _compiled_key_order(words, used, when)
    if done is not None:
        words.clear()
        return done
    top = int(when.max())
    rank_bits = max(top.bit_length(), 1)
    rank_shift, low = np.uint64(rank_bits), np.uint64((1 << rank_bits) - 1)
    exact = len(words) == 1 and used + rank_bits <= 64
    if exact:
        packed = words[0] << rank_shift
    elif 64 - rank_bits >= 24:
        packed = _hash(words)
        np.right_shift(packed, rank_shift, out=packed)  # the hash's top bits …
        np.left_shift(packed, rank_shift, out=packed)  # … above the rank
    else:
        return _exact_order(words, when)
    unsigned = when if when.dtype.kind == "u" else when.view(f"u{when.dtype.itemsize}")  # (>= 0: same bits)
    np.bitwise_or(packed, unsigned, out=packed)
    del unsigned
    entry = np.empty(top + 1, np.int32 if len(when) < 2**31 else np.int64)  # rank → entry
    block = 1 << 16
    for a in range(0, len(when), block):  # (in blocks: no temporary as long as the entries)
        entry[when[a:a + block]] = np.arange(a, min(a + block, len(when)), dtype=entry.dtype)
    del when
    sort_words(packed)
    o = np.empty(len(packed), entry.dtype)
    for a in range(0, len(packed), block):  # (in blocks: no temporary as long as the entries)
        o[a:a + block] = entry[packed[a:a + block] & low]
    del entry
    same = np.zeros(len(packed), bool)
    if exact:
        np.right_shift(packed, rank_shift, out=packed)  # the key itself, in order
        np.equal(packed[1:], packed[:-1], out=same[1:])
        words.clear()
        return o, same
    for a in range(0, len(same) - 1, block):  # adjacent values with equal hashes (in blocks: no temporaries)
        hashes = packed[a:a + block + 1] >> rank_shift
        same[a + 1:a + block + 1] = hashes[1:] == hashes[:-1]
    del packed
    tied = same.copy()
    for word in words:  # each word in sorted order, one at a time
        w = word[o]
        if (tied[1:] & (w[1:] != w[:-1])).any():  # a collision: equal hashes, unequal words
            # Exactly, then; within one hash the entries are in time order: their sorted places are ranks.
            when = np.empty(len(o), np.int64)
            when[o] = np.arange(len(o))
            return _exact_order(words, when)
        same[1:] &= w[1:] == w[:-1]
    words.clear()
    return o, same


# The hash bits _sort.c's key_order keeps at most (all the room beside the ranks; tests lower it to make
# collisions, which it leaves to numpy).
KEY_HASH_BITS = 64


def _compiled_key_order(words: list[np.ndarray], used: int, when: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray] | None:
    """`key_time_order` by _sort.c's key_order: (order, same key as the entry before); None where it was not
    built, or where it leaves the order to numpy (a hash collision; ranks too wide to leave room for a hash)."""
    fast = accel.COMPILED.sort
    if fast is None or not all(w.dtype == np.uint64 and w.flags.c_contiguous for w in words):
        return None
    o = np.empty(len(when), np.int32 if len(when) < 2**31 else np.int64)
    same = np.empty(len(when), bool)
    ranks = when if when.dtype in (np.uint32, np.int32, np.int64) else when.astype(np.int64)  # (ranks >= 0: int32 reads as uint32)
    if fast.key_order(tuple(words), np.ascontiguousarray(ranks), used, o, same.view(np.uint8), KEY_HASH_BITS) != 0:
        return None
    return o, same


def _exact_order(words: list[np.ndarray], when: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`key_time_order` by lexsort: the entries' order, and where an entry's key equals the one before it."""
    o = np.lexsort((when,) + tuple(reversed(words)))
    same = np.zeros(len(o), bool)
    same[1:] = True
    for w in words:
        ordered = w[o]
        same[1:] &= ordered[1:] == ordered[:-1]
    words.clear()
    return o, same


def _hash(words: list[np.ndarray]) -> np.ndarray:
    """A 64-bit multiply-xor hash of uint64 words, computed in place in its one result array: each word is
    xored in and the sum multiplied by an odd constant, which carries every bit into the top bits (the bits
    used)."""
    with np.errstate(over="ignore"):
        h = np.multiply(words[0], np.uint64(0x9E3779B97F4A7C15))
        for w in words[1:]:
            np.bitwise_xor(h, w, out=h)
            np.multiply(h, np.uint64(0xBF58476D1CE4E5B9), out=h)
    return h


def latest_in_runs(o: np.ndarray, same: np.ndarray, n_ev: int) -> tuple[np.ndarray, np.ndarray]:
    """In an order by (key, time) of transmissions (entries 0..n_ev-1) and replies (entries n_ev and up), with
    `same` saying where an entry's key equals the one before it (`key_time_order`): each reply that has a
    transmission of its key sorted before it, and the latest such transmission. Returns (reply, transmission):
    the reply's number among the replies, the transmission's entry; replies in sorted order. In one compiled
    pass (_sort.c's latest_in_runs) where it was built."""
    fast = accel.COMPILED.sort
    if fast is not None:
        n_replies = len(o) - n_ev
        reply_at, ev = np.empty(n_replies, np.int64), np.empty(n_replies, np.int64)
        count = fast.latest_in_runs(o, same.view(np.uint8), n_ev, reply_at, ev)
        return reply_at[:count], ev[:count]
    is_ev = o < n_ev
    ev_at = _where(is_ev)  # transmissions, in sorted order
    at = _where(~is_ev)  # replies, in sorted order
    del is_ev
    prev = np.searchsorted(ev_at, at) - 1  # the last transmission sorted before each reply
    found = prev >= 0
    at, prev = at[found], ev_at[prev[found]]
    del ev_at, found
    run = np.cumsum(~same, dtype=np.int32 if len(same) < 2**31 else np.int64)  # each key's run of entries
    keyed = run[at] == run[prev]  # the transmission must have the reply's key (not just precede it)
    del run
    at, prev = at[keyed], prev[keyed]
    return o[at] - n_ev, o[prev]


def _where(mask: np.ndarray) -> np.ndarray:
    """np.flatnonzero(mask), as int32 when the entries' numbers fit (half the memory of every index taken)."""
    rows = np.flatnonzero(mask)
    return rows.astype(np.int32) if len(mask) < 2**31 else rows
