/* analyzer.accel._sort: keys and their order, compiled (optional, as _reader.c; analyzer/accel/order.py and
 * keys.py hold the numpy reference of each, and the tests compare the two).
 *
 * sort_u64   an in-place radix sort of unsigned 64-bit keys: numpy's sort of them, faster.
 * key_order  the matcher's order of entries by (key, time) with that sort, and where each key's run starts.
 * pack_into  one column shifted into packed uint64 keys, in place (the matcher's keys, modes).
 * latest_in_runs  after that order, each reply's latest transmission of its key (the matcher's pairing).
 * first_ids  integer keys of a small range numbered by first appearance through a table (a factorize).
 */
#include "_buffers.h"

/* ---- sort_u64: an in-place radix sort of unsigned 64-bit keys (numpy's sort of them, faster).
 *
 * Most significant digit first, in place (the "American flag" permutation: counts, bucket starts, then each key
 * swapped along the cycle of places it belongs to), on the top 8 of the bits in which the keys differ; each
 * bucket is then sorted the same way, until it fits a small buffer (LSD_MAX keys, 512 kB): there, least
 * significant digit first through the buffer, 8 bits a pass, digits no key differs in skipped; below
 * INSERTION_MAX keys, insertion sort. Only the bits in which the keys differ are ever looked at, so keys packed
 * into few bits take few passes. Extra memory: the buffer, whatever the number of keys. */
enum { LSD_MAX = 1 << 16, INSERTION_MAX = 48 };
enum { PREFETCH = 8 }; /* entries ahead whose random loads a loop asks for before it needs them */

static void insertion_u64(uint64_t *a, Py_ssize_t n) {
    for (Py_ssize_t i = 1; i < n; i++) {
        uint64_t v = a[i];
        Py_ssize_t j = i;
        while (j > 0 && a[j - 1] > v) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = v;
    }
}

/* The bits in which a[0..n) differ (0: all equal). */
static uint64_t varying_u64(const uint64_t *a, Py_ssize_t n) {
    uint64_t diff = 0, first = a[0];
    for (Py_ssize_t i = 1; i < n; i++)
        diff |= a[i] ^ first;
    return diff;
}

static int top_bit(uint64_t x) { return 63 - __builtin_clzll(x); }

static void lsd_u64(uint64_t *a, Py_ssize_t n, uint64_t diff, uint64_t *buf) {
    Py_ssize_t count[256];
    uint64_t *src = a, *dst = buf;
    for (int shift = 0; shift <= top_bit(diff); shift += 8) {
        if (!((diff >> shift) & 0xFF))
            continue; /* every key has the same digit here */
        memset(count, 0, sizeof count);
        for (Py_ssize_t i = 0; i < n; i++)
            count[(src[i] >> shift) & 0xFF]++;
        Py_ssize_t sum = 0;
        for (int d = 0; d < 256; d++) {
            Py_ssize_t c = count[d];
            count[d] = sum;
            sum += c;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            uint64_t v = src[i];
            dst[count[(v >> shift) & 0xFF]++] = v;
        }
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != a)
        memcpy(a, src, (size_t)n * sizeof *a);
}

static void msd_u64(uint64_t *a, Py_ssize_t n, uint64_t *buf) {
    if (n <= INSERTION_MAX) {
        insertion_u64(a, n);
        return;
    }
    uint64_t diff = varying_u64(a, n);
    if (!diff)
        return;
    if (n <= LSD_MAX) {
        lsd_u64(a, n, diff, buf);
        return;
    }
    int shift = top_bit(diff) - 7;
    if (shift < 0)
        shift = 0;
    Py_ssize_t start[257], next[256];
    memset(start, 0, sizeof start);
    for (Py_ssize_t i = 0; i < n; i++)
        start[((a[i] >> shift) & 0xFF) + 1]++;
    for (int d = 0; d < 256; d++)
        start[d + 1] += start[d];
    memcpy(next, start, sizeof next);
    for (int d = 0; d < 256; d++) {
        while (next[d] < start[d + 1]) { /* place the key at next[d], then the one it displaces, … */
            uint64_t v = a[next[d]];
            int vd = (int)((v >> shift) & 0xFF);
            while (vd != d) {
                uint64_t t = a[next[vd]];
                a[next[vd]++] = v;
                v = t;
                vd = (int)((v >> shift) & 0xFF);
            }
            a[next[d]++] = v;
        }
    }
    if (!shift)
        return; /* the digit was the last bits: each bucket holds one value */
    for (int d = 0; d < 256; d++)
        if (start[d + 1] - start[d] > 1)
            msd_u64(a + start[d], start[d + 1] - start[d], buf);
}

/* sort_u64(array) -> None: sorts a writable, C-contiguous array of unsigned 64-bit integers in place. */
static PyObject *sort_u64(PyObject *self, PyObject *arg) {
    Py_buffer v;
    if (PyObject_GetBuffer(arg, &v, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return NULL;
    const char *f = v.format ? v.format : "B";
    if (*f == '<' || *f == '=' || *f == '@')
        f++;
    if (v.itemsize != 8 || !(strcmp(f, "Q") == 0 || strcmp(f, "L") == 0)) {
        PyBuffer_Release(&v);
        PyErr_SetString(PyExc_ValueError, "sort_u64: the array must hold unsigned 64-bit integers");
        return NULL;
    }
    Py_ssize_t n = v.len / 8;
    uint64_t *buf = n > INSERTION_MAX ? PyMem_RawMalloc(sizeof(uint64_t) * (size_t)(n < LSD_MAX ? n : LSD_MAX)) : NULL;
    if (n > INSERTION_MAX && !buf) {
        PyBuffer_Release(&v);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    if (n > 1)
        msd_u64((uint64_t *)v.buf, n, buf);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(buf);
    PyBuffer_Release(&v);
    Py_RETURN_NONE;
}

/* key_order(words, when, used, o, same) -> status
 * The entries' order by (key, time rank), for match._key_time_order: words, a tuple of uint64 arrays (an entry's
 * key, most significant word first; the last word uses `used` bits); when, uint32 or int64 (each entry's time
 * rank: distinct, non-negative). Writes o (int32 or int64): the entries in that order, and same (uint8): 1 where
 * an entry's key equals the one before it in that order. One radix sort of 64-bit values, each an entry's key
 * (exact: one word that fits beside the rank) or the top bits of its key's hash (match._hash, the same
 * arithmetic), above its rank, which leads back to the entry. status 0: done; 1: two keys share a hash (a
 * collision: keys may interleave), nothing is to be used; 2: the ranks leave fewer than 24 bits for a hash.
 * The caller orders the entries by numpy in both other cases. hash_bits (optional, 64): at most this many of
 * the hash's top bits are kept (tests keep few, to make collisions). */
static PyObject *key_order(PyObject *self, PyObject *args) {
    PyObject *o_words, *o_when, *o_o, *o_same;
    int used, hash_bits = 64;
    if (!PyArg_ParseTuple(args, "O!OiOO|i", &PyTuple_Type, &o_words, &o_when, &used, &o_o, &o_same, &hash_bits))
        return NULL;
    if (hash_bits < 1 || hash_bits > 64) {
        PyErr_SetString(PyExc_ValueError, "key_order: hash_bits between 1 and 64");
        return NULL;
    }
    Py_ssize_t n_words = PyTuple_GET_SIZE(o_words);
    if (n_words < 1 || n_words > MAX_HELD - 3) {
        PyErr_SetString(PyExc_ValueError, "key_order: between 1 and 60 key words");
        return NULL;
    }
    Held held = {.n = 0};
    Py_buffer *v_when, *v_o, *v_same;
    const uint64_t *w[MAX_HELD];
    if (!(v_when = hold(&held, o_when, -1, 0, 0, "key_order when")))
        goto fail;
    Py_ssize_t n = v_when->len / v_when->itemsize;
    if (v_when->itemsize != 4 && v_when->itemsize != 8) {
        PyErr_SetString(PyExc_ValueError, "key_order when: uint32 or int64 ranks");
        goto fail;
    }
    for (Py_ssize_t k = 0; k < n_words; k++) {
        Py_buffer *b = hold(&held, PyTuple_GET_ITEM(o_words, k), n, 8, 0, "key_order word");
        if (!b)
            goto fail;
        w[k] = b->buf;
    }
    if (!(v_o = hold(&held, o_o, n, 0, 1, "key_order o")) || !(v_same = hold(&held, o_same, n, 1, 1, "key_order same")))
        goto fail;
    if (v_o->itemsize != 4 && v_o->itemsize != 8) {
        PyErr_SetString(PyExc_ValueError, "key_order o: int32 or int64");
        goto fail;
    }
    const int wide_when = v_when->itemsize == 8, wide_o = v_o->itemsize == 8;
    uint64_t top = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t r = wide_when ? (uint64_t)((const int64_t *)v_when->buf)[i] : ((const uint32_t *)v_when->buf)[i];
        if (r > top)
            top = r;
    }
    if (top >= (uint64_t)PY_SSIZE_T_MAX / 8 || (!wide_o && n > INT32_MAX)) {
        PyErr_SetString(PyExc_ValueError, "key_order: ranks or entries out of range");
        goto fail;
    }
    int rank_bits = top ? 64 - __builtin_clzll(top) : 1;
    int exact = n_words == 1 && used + rank_bits <= 64;
    if (!exact && 64 - rank_bits < 24) {
        release_all(&held);
        return PyLong_FromLong(2);
    }
    uint64_t *packed = PyMem_RawMalloc(sizeof(uint64_t) * (size_t)(n ? n : 1));
    void *entry = PyMem_RawMalloc((size_t)v_o->itemsize * (size_t)(top + 1)); /* rank -> entry, as wide as o */
    uint64_t *buf = PyMem_RawMalloc(sizeof(uint64_t) * (size_t)(n < LSD_MAX ? (n ? n : 1) : LSD_MAX));
    if (!packed || !entry || !buf) {
        PyMem_RawFree(packed);
        PyMem_RawFree(entry);
        PyMem_RawFree(buf);
        PyErr_NoMemory();
        goto fail;
    }
    int status = 0;
    uint8_t *same = v_same->buf;
    Py_BEGIN_ALLOW_THREADS
    const uint64_t low = rank_bits == 64 ? ~(uint64_t)0 : (((uint64_t)1 << rank_bits) - 1);
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t r = wide_when ? (uint64_t)((const int64_t *)v_when->buf)[i] : ((const uint32_t *)v_when->buf)[i];
        uint64_t key;
        if (exact) {
            key = rank_bits == 64 ? 0 : w[0][i] << rank_bits;
        } else {
            uint64_t h = w[0][i] * 0x9E3779B97F4A7C15ULL;
            for (Py_ssize_t k = 1; k < n_words; k++)
                h = (h ^ w[k][i]) * 0xBF58476D1CE4E5B9ULL;
            int keep = 64 - rank_bits < hash_bits ? 64 - rank_bits : hash_bits;
            key = h >> (64 - keep) << rank_bits;
        }
        packed[i] = key | r;
        if (wide_o)
            ((int64_t *)entry)[r] = i;
        else
            ((int32_t *)entry)[r] = (int32_t)i;
    }
    if (n > 1)
        msd_u64(packed, n, buf);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i + 2 * PREFETCH < n) { /* (the loop's loads are random: ask for them ahead, two steps deep) */
            uint64_t r = packed[i + 2 * PREFETCH] & low;
            __builtin_prefetch(wide_o ? (const void *)((int64_t *)entry + r) : (const void *)((int32_t *)entry + r));
        }
        if (!exact && i + PREFETCH < n) {
            uint64_t r = packed[i + PREFETCH] & low;
            int64_t f = wide_o ? ((int64_t *)entry)[r] : ((int32_t *)entry)[r];
            for (Py_ssize_t k = 0; k < n_words; k++)
                __builtin_prefetch(w[k] + f);
        }
        int64_t e = wide_o ? ((int64_t *)entry)[packed[i] & low] : ((int32_t *)entry)[packed[i] & low];
        if (wide_o)
            ((int64_t *)v_o->buf)[i] = e;
        else
            ((int32_t *)v_o->buf)[i] = (int32_t)e;
        if (!i) {
            same[i] = 0;
            continue;
        }
        if ((packed[i] & ~low) != (packed[i - 1] & ~low)) {
            same[i] = 0;
            continue;
        }
        if (exact) {
            same[i] = 1;
            continue;
        }
        int64_t p = wide_o ? ((int64_t *)entry)[packed[i - 1] & low] : ((int32_t *)entry)[packed[i - 1] & low];
        int equal = 1;
        for (Py_ssize_t k = 0; k < n_words && equal; k++)
            equal = w[k][e] == w[k][p];
        if (!equal) {
            status = 1; /* one hash, two keys */
            break;
        }
        same[i] = 1;
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(packed);
    PyMem_RawFree(entry);
    PyMem_RawFree(buf);
    return done(&held, PyLong_FromLong(status));
fail:
    return done(&held, NULL);
}

/* pack_into(word, values, lo, hi, bits, keep) -> None
 * keys.pack_into for an array, in one pass: word = (word << bits) | (values - lo) (uint64, in place; bits 0:
 * word unchanged), values any integers of up to 64 bits signed or 32 unsigned; lo <= values <= hi is known of
 * them, or, with keep (uint8, or None), checked: keep is cleared where a value lies outside, and that value's
 * bits are 0. */
static PyObject *pack_into(PyObject *self, PyObject *args) {
    PyObject *o_word, *o_values, *o_keep;
    long long lo, hi;
    int bits;
    if (!PyArg_ParseTuple(args, "OOLLiO", &o_word, &o_values, &lo, &hi, &bits, &o_keep))
        return NULL;
    if (bits < 0 || bits > 63 || hi < lo || ((unsigned long long)hi - (unsigned long long)lo) >> bits) {
        PyErr_SetString(PyExc_ValueError, "pack_into: hi - lo must fit the bits (0 to 63)");
        return NULL;
    }
    Held held = {.n = 0};
    Py_buffer *v_word, *v_values, *v_keep = NULL;
    if (!(v_word = hold(&held, o_word, -1, 8, 1, "pack_into word")))
        goto fail;
    Py_ssize_t n = v_word->len / 8;
    if (!(v_values = hold(&held, o_values, n, 0, 0, "pack_into values")) ||
        (o_keep != Py_None && !(v_keep = hold(&held, o_keep, n, 1, 1, "pack_into keep"))))
        goto fail;
    const char *f = v_values->format ? v_values->format : "B";
    if (*f == '<' || *f == '=' || *f == '@')
        f++;
    int is_signed = *f == 'b' || *f == 'h' || *f == 'i' || *f == 'l' || *f == 'q';
    int size = (int)v_values->itemsize;
    if (!is_signed && (size == 8 || !strchr("BHIL", *f))) {
        PyErr_SetString(PyExc_ValueError, "pack_into values: signed integers, or unsigned of up to 32 bits");
        goto fail;
    }
    uint64_t *word = v_word->buf;
    uint8_t *keep = v_keep ? v_keep->buf : NULL;
    const void *vals = v_values->buf;
    const uint64_t ulo = (uint64_t)lo;
    /* One loop per value type (the type switched on once, so that each loop is a plain pass the compiler can
     * vectorize). Unsigned types widen to int64 exactly; so do the signed. */
#define PACK_LOOP(T)                                                                                          \
    do {                                                                                                      \
        const T *x = vals;                                                                                    \
        if (keep) {                                                                                           \
            for (Py_ssize_t i = 0; i < n; i++) {                                                              \
                int64_t v = (int64_t)x[i];                                                                    \
                uint8_t k = keep[i] & (v >= lo) & (v <= hi);                                                  \
                keep[i] = k;                                                                                  \
                if (bits)                                                                                     \
                    word[i] = (word[i] << bits) | (k ? (uint64_t)v - ulo : 0);                                 \
            }                                                                                                 \
        } else if (bits) {                                                                                    \
            for (Py_ssize_t i = 0; i < n; i++)                                                                \
                word[i] = (word[i] << bits) | ((uint64_t)(int64_t)x[i] - ulo);                                \
        }                                                                                                     \
    } while (0)
    Py_BEGIN_ALLOW_THREADS
    switch (size * (is_signed ? -1 : 1)) {
    case -1: PACK_LOOP(int8_t); break;
    case 1: PACK_LOOP(uint8_t); break;
    case -2: PACK_LOOP(int16_t); break;
    case 2: PACK_LOOP(uint16_t); break;
    case -4: PACK_LOOP(int32_t); break;
    case 4: PACK_LOOP(uint32_t); break;
    default: PACK_LOOP(int64_t); break;
    }
    Py_END_ALLOW_THREADS
#undef PACK_LOOP
    return done(&held, Py_NewRef(Py_None));
fail:
    return done(&held, NULL);
}

/* latest_in_runs(o, same, n_ev, reply, tx) -> count
 * After key_order, for match._latest_transmissions: o (int32 or int64) the entries in (key, time) order, same
 * (uint8) 1 where an entry's key equals the one before it. Entries below n_ev are transmissions, the others
 * replies. For each reply in that order whose key's run holds a transmission before it, the last such
 * transmission: reply[c] = the reply's entry - n_ev, tx[c] = the transmission's entry (int64 arrays, as long as
 * there are replies), c = 0, 1, ... Returns how many were written. */
static PyObject *latest_in_runs(PyObject *self, PyObject *args) {
    PyObject *o_o, *o_same, *o_reply, *o_tx;
    Py_ssize_t n_ev;
    if (!PyArg_ParseTuple(args, "OOnOO", &o_o, &o_same, &n_ev, &o_reply, &o_tx))
        return NULL;
    Held held = {.n = 0};
    Py_buffer *v_o, *v_same, *v_reply, *v_tx;
    if (!(v_o = hold(&held, o_o, -1, 0, 0, "latest_in_runs o")))
        goto fail;
    if (v_o->itemsize != 4 && v_o->itemsize != 8) {
        PyErr_SetString(PyExc_ValueError, "latest_in_runs o: int32 or int64");
        goto fail;
    }
    Py_ssize_t n = v_o->len / v_o->itemsize;
    if (n_ev < 0 || n_ev > n) {
        PyErr_SetString(PyExc_ValueError, "latest_in_runs: n_ev outside the entries");
        goto fail;
    }
    if (!(v_same = hold(&held, o_same, n, 1, 0, "latest_in_runs same")) ||
        !(v_reply = hold(&held, o_reply, n - n_ev, 8, 1, "latest_in_runs reply")) ||
        !(v_tx = hold(&held, o_tx, n - n_ev, 8, 1, "latest_in_runs tx")))
        goto fail;
    const int wide = v_o->itemsize == 8;
    const uint8_t *same = v_same->buf;
    int64_t *reply = v_reply->buf, *tx = v_tx->buf, last = -1;
    Py_ssize_t count = 0, cap = n - n_ev, bad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t e = wide ? ((const int64_t *)v_o->buf)[i] : ((const int32_t *)v_o->buf)[i];
        if (!same[i])
            last = -1; /* a new key: no transmission of it yet */
        if (e < 0 || e >= n) {
            bad = 1;
            break;
        }
        if (e < n_ev) {
            last = e;
        } else if (last >= 0) {
            if (count == cap) {
                bad = 1;
                break;
            }
            reply[count] = e - n_ev;
            tx[count++] = last;
        }
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "latest_in_runs: o is not an order of the entries");
        goto fail;
    }
    return done(&held, PyLong_FromSsize_t(count));
fail:
    return done(&held, NULL);
}

/* first_ids(keys, table, ids) -> groups
 * keys.factorize for dense keys: each key (int64, 0 <= key < len(table)) numbered by its first appearance, as
 * pandas' factorize numbers them, into ids (int64, as long as keys). table (int64, every entry -1): the id of each
 * key value seen, filled in as they are. Returns how many distinct keys there are. */
static PyObject *first_ids(PyObject *self, PyObject *args) {
    PyObject *o_keys, *o_table, *o_ids;
    if (!PyArg_ParseTuple(args, "OOO", &o_keys, &o_table, &o_ids))
        return NULL;
    Held held = {.n = 0};
    Py_buffer *v_keys, *v_table, *v_ids;
    if (!(v_keys = hold(&held, o_keys, -1, 8, 0, "first_ids keys")))
        goto fail;
    Py_ssize_t n = v_keys->len / 8;
    if (!(v_table = hold(&held, o_table, -1, 8, 1, "first_ids table")) ||
        !(v_ids = hold(&held, o_ids, n, 8, 1, "first_ids ids")))
        goto fail;
    const int64_t *keys = v_keys->buf;
    int64_t *table = v_table->buf, *ids = v_ids->buf, next = 0, span = v_table->len / 8;
    Py_ssize_t bad = -1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t k = keys[i];
        if (k < 0 || k >= span) {
            bad = i;
            break;
        }
        if (table[k] < 0)
            table[k] = next++;
        ids[i] = table[k];
    }
    Py_END_ALLOW_THREADS
    if (bad >= 0) {
        PyErr_Format(PyExc_ValueError, "first_ids: key %lld outside the table of %lld", (long long)keys[bad],
                     (long long)span);
        goto fail;
    }
    return done(&held, PyLong_FromLongLong(next));
fail:
    return done(&held, NULL);
}

static PyMethodDef methods[] = {
    {"sort_u64", sort_u64, METH_O, "Sort an array of unsigned 64-bit integers in place (radix)."},
    {"key_order", key_order, METH_VARARGS, "Entries in (key, time rank) order, and where each key run starts."},
    {"pack_into", pack_into, METH_VARARGS, "Shift a column's offsets into uint64 key words, in place."},
    {"latest_in_runs", latest_in_runs, METH_VARARGS, "Each reply's last transmission before it in its key's run."},
    {"first_ids", first_ids, METH_VARARGS, "Dense integer keys numbered by first appearance (a factorize)."},
    {NULL, NULL, 0, NULL},
};

/* The interface's version (accel/__init__.py's API["_sort"]): raised with every change of a function's arguments. */
ACCEL_MODULE(_sort, methods, 1)
