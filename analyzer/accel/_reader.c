/* analyzer.accel._reader: the reader's per-record loops, compiled (optional: setup.py builds it where a C compiler
 * is; the numpy and Python code of analyzer/accel/walk.py and decode.py does the same work and is the reference,
 * and the tests compare the two on every capture they read).
 *
 * walk_pcap  the classic pcap record chain: where each packet's bytes are, its lengths and timestamp.
 * walk_epb   the same for a run of pcapng enhanced packet blocks (reading/formats.py reads every other block).
 * tcp4       records of the dominant layout (Ethernet II / IPv4 without options / TCP, every header and
 *            option captured and inside the IP length): every field the packets table holds for them,
 *            written straight into the table's columns (accel/decode.py's numpy path is the same).
 *
 * No Python object per record. Every read is bounds-checked against the buffer and the record's captured length
 * before it is made.
 */
#include "_buffers.h"

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

static PyMethodDef methods[] = {
    {"walk_pcap", walk_pcap, METH_VARARGS, "Walk a classic pcap's record chain into int64 arrays."},
    {"walk_epb", walk_epb, METH_VARARGS, "Walk a run of pcapng enhanced packet blocks into arrays."},
    {"tcp4", tcp4, METH_VARARGS, "Decode Ethernet/IPv4/TCP records straight into the packets table's columns."},
    {NULL, NULL, 0, NULL},
};

/* The interface's version (accel/__init__.py's API["_reader"]): raised with every change of a function's arguments. */
ACCEL_MODULE(_reader, methods, 1)
