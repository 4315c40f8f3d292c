/* analyzer._fast: the reader's per-record loops and a sort, compiled (optional: setup.py builds it where a C
 * compiler is; the numpy and Python code in capture.py, packets.py and keys.py does the same work and is the
 * reference, and the tests compare the two on every capture they read).
 *
 * walk_pcap  the classic pcap record chain: where each packet's bytes are, its lengths and timestamp.
 * walk_epb   the same for a run of pcapng enhanced packet blocks (capture._pcapng reads every other block).
 * tcp4       records of the dominant layout (Ethernet II / IPv4 without options / TCP, every header and
 *            option captured and inside the IP length): every field the packets table holds for them,
 *            written straight into the table's columns (packets._fast_tcp4 is the same, in numpy).
 * sort_u64   an in-place radix sort of unsigned 64-bit keys: numpy's sort of them (keys.sort_words), the
 *            matcher's and the signals' packed keys, faster.
 * key_order  the matcher's order of entries by (key, time) with that sort, and where each key's run starts
 *            (match._key_time_order does the same in numpy).
 * pack_into  one column shifted into packed uint64 keys, in place (keys.pack_into: the matcher's keys, modes).
 * latest_in_runs  after that order, each reply's latest transmission of its key (the matcher's pairing).
 * first_ids  integer keys of a small range numbered by first appearance through a table (keys.group_ids:
 *            pandas' hash factorize does the same).
 *
 * Plain C over the buffer protocol: no numpy headers, no Python object per record. Every read is bounds-checked
 * against the buffer and the record's captured length before it is made.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t be16(const uint8_t *p) { return ((uint32_t)p[0] << 8) | p[1]; }
static inline uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint32_t le32(const uint8_t *p) {
    return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}

/* The buffers a call holds, released together on every way out. */
enum { MAX_HELD = 64 };
typedef struct {
    Py_buffer v[MAX_HELD];
    int n;
} Held;

static void release_all(Held *h) {
    while (h->n)
        PyBuffer_Release(&h->v[--h->n]);
}

/* obj's buffer (writable if asked), C-contiguous, of items of `itemsize` bytes (0: any of 1, 2, 4, 8), at
 * least `n` of them (n < 0: any number); NULL with an exception set otherwise. */
static Py_buffer *hold(Held *h, PyObject *obj, Py_ssize_t n, Py_ssize_t itemsize, int writable, const char *what) {
    if (h->n == MAX_HELD) {
        PyErr_SetString(PyExc_RuntimeError, "too many buffers");
        return NULL;
    }
    Py_buffer *v = &h->v[h->n];
    if (PyObject_GetBuffer(obj, v, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return NULL;
    h->n++;
    Py_ssize_t size = v->itemsize;
    int ok = itemsize ? size == itemsize : (size == 1 || size == 2 || size == 4 || size == 8);
    if (!ok || v->len / size < n) {
        if (!ok)
            PyErr_Format(PyExc_ValueError, "%s: items of %zd bytes, not %zd", what, itemsize, size);
        else
            PyErr_Format(PyExc_ValueError, "%s: %zd items, fewer than %zd", what, v->len / size, n);
        return NULL;
    }
    return v;
}

/* walk_pcap(raw, pos, big_endian, nano, limit, offset, caplen, wirelen, ts_ns)
 *   -> (records, pos, status, claimed)
 * Walks records from byte `pos` until the outputs (int64 arrays of one length) are full or the chain ends.
 * offset: first byte of each packet (after its 16-byte header). status: 0 the outputs are full or fewer than
 * 16 bytes remain; 1 the record at `pos` claims `claimed` bytes, more than `limit`; 2 the record at `pos`
 * runs past the end of the buffer. `pos` is where the walk stopped (the next record's header). */
static PyObject *walk_pcap(PyObject *self, PyObject *args) {
    Py_buffer raw;
    Py_ssize_t pos;
    int big, nano;
    long long limit;
    PyObject *o_off, *o_cap, *o_wire, *o_ts;
    if (!PyArg_ParseTuple(args, "y*nppLOOOO", &raw, &pos, &big, &nano, &limit, &o_off, &o_cap, &o_wire, &o_ts))
        return NULL;
    Held held = {.n = 0};
    Py_buffer *v[4];
    PyObject *outs[4] = {o_off, o_cap, o_wire, o_ts};
    Py_ssize_t cap_n = -1;
    for (int i = 0; i < 4; i++) {
        if (!(v[i] = hold(&held, outs[i], -1, 8, 1, "walk_pcap output"))) {
            release_all(&held);
            PyBuffer_Release(&raw);
            return NULL;
        }
        Py_ssize_t n = v[i]->len / 8;
        if (cap_n < 0 || n < cap_n)
            cap_n = n;
    }
    int64_t *off = v[0]->buf, *capl = v[1]->buf, *wire = v[2]->buf, *ts = v[3]->buf;
    const uint8_t *b = raw.buf;
    Py_ssize_t end = raw.len, k = 0;
    int status = 0;
    long long claimed = 0;
    if (pos < 0)
        pos = end;
    Py_BEGIN_ALLOW_THREADS
    while (k < cap_n && pos + 16 <= end) {
        const uint8_t *h = b + pos;
        uint32_t sec = big ? be32(h) : le32(h), frac = big ? be32(h + 4) : le32(h + 4);
        uint32_t cl = big ? be32(h + 8) : le32(h + 8), wl = big ? be32(h + 12) : le32(h + 12);
        if ((long long)cl > limit) {
            status = 1;
            claimed = cl;
            break;
        }
        if (pos + 16 + (Py_ssize_t)cl > end) {
            status = 2;
            claimed = cl;
            break;
        }
        off[k] = pos + 16;
        capl[k] = cl;
        wire[k] = wl;
        ts[k] = (int64_t)sec * 1000000000 + (nano ? (int64_t)frac : (int64_t)frac * 1000);
        k++;
        pos += 16 + cl;
    }
    Py_END_ALLOW_THREADS
    release_all(&held);
    PyBuffer_Release(&raw);
    return Py_BuildValue("nniL", k, pos, status, claimed);
}

/* walk_epb(raw, pos, big_endian, interfaces, base, max_block, offset, caplen, wirelen, ts_units, iface)
 *   -> (records, pos)
 * The run of pcapng enhanced packet blocks starting at byte `pos`, in a section of that byte order with
 * `interfaces` interfaces so far: each block's packet offset, caplen and wirelen (int64), its timestamp in
 * its interface's units (uint64) and its interface id plus `base` (uint16). Stops, without taking it, at the
 * first block that is not an enhanced packet block, or not a whole and consistent one (length below 32, not
 * a multiple of 4, above `max_block` or past the end; an interface id not yet described; a caplen that does
 * not fit): the caller's block loop reads that one, and names its damage. Stops too when the outputs are full. */
static PyObject *walk_epb(PyObject *self, PyObject *args) {
    Py_buffer raw;
    Py_ssize_t pos;
    int big;
    unsigned int interfaces, base;
    long long max_block;
    PyObject *outs[5];
    if (!PyArg_ParseTuple(args, "y*npIIL" "OOOOO", &raw, &pos, &big, &interfaces, &base, &max_block, &outs[0],
                          &outs[1], &outs[2], &outs[3], &outs[4]))
        return NULL;
    Held held = {.n = 0};
    Py_buffer *v[5];
    static const Py_ssize_t sizes[5] = {8, 8, 8, 8, 2};
    Py_ssize_t cap_n = -1;
    for (int i = 0; i < 5; i++) {
        if (!(v[i] = hold(&held, outs[i], -1, sizes[i], 1, "walk_epb output"))) {
            release_all(&held);
            PyBuffer_Release(&raw);
            return NULL;
        }
        Py_ssize_t n = v[i]->len / sizes[i];
        if (cap_n < 0 || n < cap_n)
            cap_n = n;
    }
    int64_t *off = v[0]->buf, *capl = v[1]->buf, *wire = v[2]->buf;
    uint64_t *ts = v[3]->buf;
    uint16_t *ifid = v[4]->buf;
    const uint8_t *b = raw.buf;
    Py_ssize_t end = raw.len, k = 0;
    if (pos < 0)
        pos = end;
    Py_BEGIN_ALLOW_THREADS
    while (k < cap_n && pos + 32 <= end) {
        const uint8_t *h = b + pos;
#define U32(at) (big ? be32(h + (at)) : le32(h + (at)))
        uint32_t btype = U32(0), blen = U32(4);
        if (btype != 6 || blen < 32 || blen % 4 || (long long)blen > max_block || pos + (Py_ssize_t)blen > end)
            break;
        uint32_t id = U32(8), hi = U32(12), lo = U32(16), cl = U32(20), wl = U32(24);
        if (id >= interfaces || 20 + (uint64_t)cl > blen - 12)
            break;
#undef U32
        off[k] = pos + 28;
        capl[k] = cl;
        wire[k] = wl;
        ts[k] = ((uint64_t)hi << 32) | lo;
        ifid[k] = (uint16_t)(base + id);
        k++;
        pos += blen;
    }
    Py_END_ALLOW_THREADS
    release_all(&held);
    PyBuffer_Release(&raw);
    return Py_BuildValue("nn", k, pos);
}

/* The columns tcp4 writes, in this order (packets.FAST_COLUMNS names them). */
enum {
    C_ETH_DST, C_ETH_SRC, C_ETHERTYPE, C_IP_VERSION, C_IP_PROTO, C_IP_LEN, C_IP_ID, C_TTL, C_FRAGMENT,
    C_SPORT, C_DPORT, C_SEQ, C_ACK, C_TCP_FLAGS, C_WINDOW, C_PAYLOAD_LEN,
    C_TCP_OPTIONS, C_MSS, C_WSCALE, C_TSVAL, C_TSECR, N_COLUMNS
};

typedef struct {
    void *values;      /* NULL: column not kept, or not made yet */
    uint8_t *absent;   /* NULL: column not nullable */
    int size;
    uint32_t bit;      /* this column's bit in `missing` when it is wanted but not made yet, else 0 */
    uint32_t *missing; /* the columns a record had a value for but no array to put it in */
} Column;

static inline void put(const Column *c, Py_ssize_t row, uint64_t value) {
    if (!c->values) {
        *c->missing |= c->bit;
        return;
    }
    switch (c->size) {
    case 1: ((uint8_t *)c->values)[row] = (uint8_t)value; break;
    case 2: ((uint16_t *)c->values)[row] = (uint16_t)value; break;
    case 4: ((uint32_t *)c->values)[row] = (uint32_t)value; break;
    default: ((uint64_t *)c->values)[row] = value; break;
    }
    if (c->absent)
        c->absent[row] = 0;
}

/* tcp4(data, offset, caplen, rows, columns, wanted, src, dst, fast) -> (records decoded, missing)
 * offset, caplen, rows: int64, one per candidate record (Ethernet records); rows: its row in the table.
 * columns: a tuple of 2 * N_COLUMNS objects, (values, absent) per column: writable arrays of table length,
 * or None (values: column not kept or not made yet; absent: not nullable). wanted: a bit per column (1 << its
 * place) the caller keeps. src, dst: uint32 per candidate (the addresses, for the caller's address table);
 * fast: uint8 per candidate, set to 1 for the records decoded. missing: the wanted columns some record had a
 * value for but that were given as None: the caller makes them and calls again (the values written are the
 * same each time), so a column no record holds is never made. */
static PyObject *tcp4(PyObject *self, PyObject *args) {
    Py_buffer data;
    PyObject *o_off, *o_cap, *o_rows, *o_cols, *o_src, *o_dst, *o_fast;
    unsigned int wanted;
    uint32_t missing = 0;
    if (!PyArg_ParseTuple(args, "y*OOOO!IOOO", &data, &o_off, &o_cap, &o_rows, &PyTuple_Type, &o_cols, &wanted,
                          &o_src, &o_dst, &o_fast))
        return NULL;
    Held held = {.n = 0};
    Py_buffer *colv[2 * N_COLUMNS] = {NULL}, *v_off, *v_cap, *v_rows, *v_src, *v_dst, *v_fast;
    Column col[N_COLUMNS];
    Py_ssize_t n, table_n = -1, decoded = 0;
    if (PyTuple_GET_SIZE(o_cols) != 2 * N_COLUMNS) {
        PyErr_SetString(PyExc_ValueError, "tcp4: columns must hold (values, absent) for each fast column");
        goto fail;
    }
    if (!(v_off = hold(&held, o_off, -1, 8, 0, "tcp4 offset")))
        goto fail;
    n = v_off->len / 8;
    if (!(v_cap = hold(&held, o_cap, n, 8, 0, "tcp4 caplen")) || !(v_rows = hold(&held, o_rows, n, 8, 0, "tcp4 rows"))
        || !(v_src = hold(&held, o_src, n, 4, 1, "tcp4 src")) || !(v_dst = hold(&held, o_dst, n, 4, 1, "tcp4 dst"))
        || !(v_fast = hold(&held, o_fast, n, 1, 1, "tcp4 fast")))
        goto fail;
    for (int i = 0; i < 2 * N_COLUMNS; i++) {
        PyObject *o = PyTuple_GET_ITEM(o_cols, i);
        if (o == Py_None)
            continue;
        if (!(colv[i] = hold(&held, o, -1, (i & 1) ? 1 : 0, 1, "tcp4 column")))
            goto fail;
        Py_ssize_t len = colv[i]->len / colv[i]->itemsize;
        if (table_n < 0 || len < table_n)
            table_n = len;
    }
    for (int c = 0; c < N_COLUMNS; c++) {
        col[c].values = colv[2 * c] ? colv[2 * c]->buf : NULL;
        col[c].size = colv[2 * c] ? (int)colv[2 * c]->itemsize : 0;
        col[c].absent = (colv[2 * c] && colv[2 * c + 1]) ? colv[2 * c + 1]->buf : NULL;
        col[c].bit = (!colv[2 * c] && (wanted >> c & 1)) ? 1u << c : 0;
        col[c].missing = &missing;
    }
    const int64_t *off = v_off->buf, *capl = v_cap->buf, *rows = v_rows->buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (table_n >= 0 && (rows[i] < 0 || rows[i] >= table_n)) {
            PyErr_SetString(PyExc_IndexError, "tcp4: row outside the columns");
            goto fail;
        }
    }
    int options = col[C_TCP_OPTIONS].values || col[C_MSS].values || col[C_WSCALE].values ||
                  col[C_TSVAL].values || col[C_TSECR].values ||
                  (wanted >> C_TCP_OPTIONS & 0x1F); /* (the five option columns' bits, in enum order) */
    uint32_t *src = v_src->buf, *dst = v_dst->buf;
    uint8_t *fast = v_fast->buf;
    const uint8_t *base = data.buf;
    Py_ssize_t end = data.len;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        fast[i] = 0;
        int64_t o = off[i], cl = capl[i];
        if (o < 0 || cl < 54 || o + cl > end)
            continue;
        const uint8_t *p = base + o;
        if (be16(p + 12) != 0x0800 || p[14] != 0x45 || p[23] != 6 || (be16(p + 20) & 0x1FFF) != 0)
            continue;
        uint32_t off_flags = be16(p + 46), doff = (off_flags >> 12) * 4, ip_len = be16(p + 16);
        if (doff < 20 || ip_len < doff + 20 || cl < (int64_t)doff + 34)
            continue;
        Py_ssize_t r = rows[i];
        fast[i] = 1;
        decoded++;
        uint64_t dst_mac = ((uint64_t)be32(p) << 16) | be16(p + 4);
        uint64_t src_mac = ((uint64_t)be32(p + 6) << 16) | be16(p + 10);
        put(&col[C_ETH_DST], r, dst_mac);
        put(&col[C_ETH_SRC], r, src_mac);
        put(&col[C_ETHERTYPE], r, 0x0800);
        put(&col[C_IP_VERSION], r, 4);
        put(&col[C_IP_PROTO], r, 6);
        put(&col[C_IP_LEN], r, ip_len);
        put(&col[C_IP_ID], r, be16(p + 18));
        put(&col[C_TTL], r, p[22]);
        put(&col[C_FRAGMENT], r, (be16(p + 20) & 0x2000) != 0);
        put(&col[C_SPORT], r, be16(p + 34));
        put(&col[C_DPORT], r, be16(p + 36));
        put(&col[C_SEQ], r, be32(p + 38));
        put(&col[C_ACK], r, be32(p + 42));
        put(&col[C_TCP_FLAGS], r, off_flags & 0x1FF);
        put(&col[C_WINDOW], r, be16(p + 48));
        put(&col[C_PAYLOAD_LEN], r, ip_len - (doff + 20));
        src[i] = be32(p + 26);
        dst[i] = be32(p + 30);
        if (!options || doff == 20)
            continue;
        /* TCP options, parsed as packets._tcp_options does: the first 8 kinds recorded, the parse stops at
         * end-of-list, at an option whose length is below 2 or runs past the option space, or at the end. */
        const uint8_t *opt = p + 54;
        uint32_t len = doff - 20, cur = 0, count = 0;
        uint64_t kinds = 0;
        while (cur < len) {
            uint32_t kind = opt[cur];
            if (count < 8) {
                kinds = (kinds << 8) | kind;
                count++;
            }
            if (kind == 0)
                break;
            if (kind == 1) {
                cur++;
                continue;
            }
            if (cur + 1 >= len)
                break;
            uint32_t olen = opt[cur + 1];
            if (olen < 2 || cur + olen > len)
                break;
            if (kind == 2 && olen == 4)
                put(&col[C_MSS], r, be16(opt + cur + 2));
            else if (kind == 3 && olen == 3)
                put(&col[C_WSCALE], r, opt[cur + 2]);
            else if (kind == 8 && olen == 10) {
                put(&col[C_TSVAL], r, be32(opt + cur + 2));
                put(&col[C_TSECR], r, be32(opt + cur + 6));
            }
            cur += olen;
        }
        put(&col[C_TCP_OPTIONS], r, kinds << ((8 - count) * 8));
    }
    Py_END_ALLOW_THREADS
    release_all(&held);
    PyBuffer_Release(&data);
    return Py_BuildValue("nI", decoded, (unsigned int)missing);
fail:
    release_all(&held);
    PyBuffer_Release(&data);
    return NULL;
}

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
    release_all(&held);
    return PyLong_FromLong(status);
fail:
    release_all(&held);
    return NULL;
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
    release_all(&held);
    Py_RETURN_NONE;
fail:
    release_all(&held);
    return NULL;
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
    release_all(&held);
    return PyLong_FromSsize_t(count);
fail:
    release_all(&held);
    return NULL;
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
    release_all(&held);
    return PyLong_FromLongLong(next);
fail:
    release_all(&held);
    return NULL;
}

static PyMethodDef methods[] = {
    {"walk_pcap", walk_pcap, METH_VARARGS, "Walk a classic pcap's record chain into int64 arrays."},
    {"walk_epb", walk_epb, METH_VARARGS, "Walk a run of pcapng enhanced packet blocks into arrays."},
    {"tcp4", tcp4, METH_VARARGS, "Decode Ethernet/IPv4/TCP records straight into the packets table's columns."},
    {"sort_u64", sort_u64, METH_O, "Sort an array of unsigned 64-bit integers in place (radix)."},
    {"key_order", key_order, METH_VARARGS, "Entries in (key, time rank) order, and where each key run starts."},
    {"pack_into", pack_into, METH_VARARGS, "Shift a column's offsets into uint64 key words, in place."},
    {"latest_in_runs", latest_in_runs, METH_VARARGS, "Each reply's last transmission before it in its key's run."},
    {"first_ids", first_ids, METH_VARARGS, "Dense integer keys numbered by first appearance (a factorize)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_fast", .m_doc = NULL, .m_size = -1, .m_methods = methods,
};

/* The interface's version: analyzer/accel/__init__.py uses this module only when it is the one it was written for
 * (a build left over from older sources is ignored, not called with the wrong arguments). */
#define API_VERSION 7

PyMODINIT_FUNC PyInit__fast(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "API", API_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
