/* What analyzer/accel's compiled modules share: big-endian and little-endian reads, the buffers a call holds
 * (each released on every way out), and the module definition. Plain C over the buffer protocol: no numpy
 * headers. */
#ifndef SYNLENS_BUFFERS_H
#define SYNLENS_BUFFERS_H
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

static inline void release_all(Held *h) {
    while (h->n)
        PyBuffer_Release(&h->v[--h->n]);
}

/* A call's way out: its buffers released, its result (NULL: the exception set) returned. */
static inline PyObject *done(Held *h, PyObject *result) {
    release_all(h);
    return result;
}

/* obj's buffer (writable if asked), C-contiguous, of items of `itemsize` bytes (0: any of 1, 2, 4, 8), at
 * least `n` of them (n < 0: any number); NULL with an exception set otherwise. */
static inline Py_buffer *hold(Held *h, PyObject *obj, Py_ssize_t n, Py_ssize_t itemsize, int writable, const char *what) {
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

/* The module NAME with these methods, and its init function, which adds the interface's version as API:
 * analyzer/accel/__init__.py uses a module only when it is the one it was written for (a build left over from
 * older sources is ignored, not called with the wrong arguments). */
#define ACCEL_MODULE(NAME, METHODS, VERSION)                                                                   \
    static struct PyModuleDef NAME##_module = {                                                                \
        PyModuleDef_HEAD_INIT, .m_name = #NAME, .m_doc = NULL, .m_size = -1, .m_methods = METHODS,             \
    };                                                                                                         \
    PyMODINIT_FUNC PyInit_##NAME(void) {                                                                       \
        PyObject *m = PyModule_Create(&NAME##_module);                                                         \
        if (m && PyModule_AddIntConstant(m, "API", VERSION) < 0) {                                             \
            Py_DECREF(m);                                                                                      \
            return NULL;                                                                                       \
        }                                                                                                      \
        return m;                                                                                              \
    }

#endif
