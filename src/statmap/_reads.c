/* statmap's bulk reads: what the reader and the collector load from live
 * mappings. One call reads many words, or sums the same words or latches
 * across many mappings (one scrape of many processes), so a scrape costs a
 * handful of C calls instead of one Python call per value. Every offset and
 * size comes from a file, so each is checked against the buffer first.
 */
#include "_cells.h"

#include <errno.h>
#include <limits.h>
#include <sys/file.h>
#include <sys/stat.h>

/* read_latch(buffer, offset, copy_size[, tries]): the stable copy of the
 * latch at offset as bytes, or None when the writer kept it moving for all
 * the tries. */
static PyObject *read_latch(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t offset, copy_size, tries = LATCH_TRIES;
    (void)mod;
    if (nargs < 3 || nargs > 4) {
        PyErr_SetString(PyExc_TypeError, "read_latch(buffer, offset, copy_size[, tries])");
        return NULL;
    }
    offset = PyLong_AsSsize_t(args[1]);
    copy_size = PyLong_AsSsize_t(args[2]);
    if (nargs == 4)
        tries = PyLong_AsSsize_t(args[3]);
    if (PyErr_Occurred())
        return NULL;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (offset < 0 || offset % ALIGN || copy_size < 0 || copy_size % ALIGN || (uintptr_t)view.buf % ALIGN ||
        offset > view.len - LATCH_SIZE(copy_size)) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "latch %zd+%zd outside buffer of %zd bytes", offset, LATCH_SIZE(copy_size),
                     view.len);
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, copy_size);
    if (!out) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const uint64_t *seq = (const uint64_t *)((char *)view.buf + offset + VALUE_SEQ);
    int ok = stable_copy(seq, copy_size / 8, PyBytes_AS_STRING(out), tries);
    PyBuffer_Release(&view);
    if (!ok) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    return out;
}

int word_at(PyObject *buffer, PyObject *offset, int writable, Py_buffer *view, uint64_t **word)
{
    Py_ssize_t off = PyLong_AsSsize_t(offset);
    if (off == -1 && PyErr_Occurred())
        return -1;
    if (PyObject_GetBuffer(buffer, view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0)
        return -1;
    if (off < 0 || off % ALIGN || off > view->len - 8 || (uintptr_t)view->buf % ALIGN) {
        PyErr_Format(PyExc_ValueError, "word at %zd outside buffer of %zd bytes", off, view->len);
        PyBuffer_Release(view);
        return -1;
    }
    *word = (uint64_t *)((char *)view->buf + off);
    return 0;
}

/* load_u64(buffer, offset): an acquire load, for the header words a writer
 * publishes with store_u64 (state, end, capacity). */
static PyObject *load_u64(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    uint64_t *word;
    (void)mod;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "load_u64(buffer, offset)");
        return NULL;
    }
    if (word_at(args[0], args[1], 0, &view, &word) < 0)
        return NULL;
    uint64_t v = load_acquire(word);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(v);
}

/* Read many u64 words at once: a scrape's counters in one call. */
static PyObject *load_words(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    (void)mod;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "load_words(buffer, offsets)");
        return NULL;
    }
    PyObject *offs = PySequence_Fast(args[1], "offsets must be a sequence");
    if (!offs)
        return NULL;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        Py_DECREF(offs);
        return NULL;
    }
    if ((uintptr_t)view.buf % ALIGN) { /* atomic loads need aligned words */
        PyErr_SetString(PyExc_ValueError, "load_words needs an 8-byte aligned buffer");
        PyBuffer_Release(&view);
        Py_DECREF(offs);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(offs);
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out && i < n; i++) {
        Py_ssize_t off = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(offs, i));
        if ((off == -1 && PyErr_Occurred()) || off < 0 || off % ALIGN || off > view.len - 8) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "word at %zd outside buffer of %zd bytes", off, view.len);
            Py_CLEAR(out);
            break;
        }
        PyObject *v = PyLong_FromUnsignedLongLong(load_relaxed((uint64_t *)((char *)view.buf + off)));
        if (!v) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, v);
    }
    PyBuffer_Release(&view);
    Py_DECREF(offs);
    return out;
}

/* Sum the u64 words at the same offsets across several mappings: a scrape's
 * integer counters of every process with the same layout, in one call.
 * Returns a list of ints (exact: a carry word per column). */
static PyObject *sum_words(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    (void)mod;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "sum_words(buffers, offsets)");
        return NULL;
    }
    PyObject *bufs = PySequence_Fast(args[0], "buffers must be a sequence");
    if (!bufs)
        return NULL;
    PyObject *offs = PySequence_Fast(args[1], "offsets must be a sequence");
    if (!offs) {
        Py_DECREF(bufs);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(offs), nb = PySequence_Fast_GET_SIZE(bufs);
    Py_ssize_t *at = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n ? n : 1));
    uint64_t *lo = PyMem_Calloc((size_t)(n ? n : 1), sizeof(uint64_t));
    uint64_t *hi = PyMem_Calloc((size_t)(n ? n : 1), sizeof(uint64_t));
    PyObject *out = NULL;
    Py_ssize_t max_off = -1;
    if (!at || !lo || !hi) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        at[i] = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(offs, i));
        if (at[i] == -1 && PyErr_Occurred())
            goto done;
        if (at[i] < 0 || at[i] % ALIGN) {
            PyErr_Format(PyExc_ValueError, "offset %zd is not an aligned word offset", at[i]);
            goto done;
        }
        if (at[i] > max_off)
            max_off = at[i];
    }
    for (Py_ssize_t b = 0; b < nb; b++) {
        Py_buffer view;
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(bufs, b), &view, PyBUF_SIMPLE) < 0)
            goto done;
        if ((uintptr_t)view.buf % ALIGN || (n && max_off > view.len - 8)) {
            PyErr_Format(PyExc_ValueError, "word at %zd outside buffer of %zd bytes", max_off, view.len);
            PyBuffer_Release(&view);
            goto done;
        }
        const char *base = view.buf; /* a local: stores to lo and hi cannot change it */
        for (Py_ssize_t i = 0; i < n; i++) {
            uint64_t v = load_relaxed((const uint64_t *)(base + at[i]));
            lo[i] += v;
            hi[i] += lo[i] < v; /* carry */
        }
        PyBuffer_Release(&view);
    }
    out = PyList_New(n);
    for (Py_ssize_t i = 0; out && i < n; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(lo[i]);
        if (v && hi[i]) { /* beyond 2**64: hi * 2**64 + lo */
            PyObject *h = PyLong_FromUnsignedLongLong(hi[i]), *shift = PyLong_FromLong(64), *big = NULL, *sum = NULL;
            if (h && shift)
                big = PyNumber_Lshift(h, shift);
            if (big)
                sum = PyNumber_Add(big, v);
            Py_XDECREF(h);
            Py_XDECREF(shift);
            Py_XDECREF(big);
            Py_DECREF(v);
            v = sum;
        }
        if (!v) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, v);
    }
done:
    PyMem_Free(at);
    PyMem_Free(lo);
    PyMem_Free(hi);
    Py_DECREF(bufs);
    Py_DECREF(offs);
    return out;
}

/* Sum latched values (summaries, histograms) at the same offsets across
 * several mappings. sizes[i] is the copy size of latch i (SUMMARY_COPY_SIZE:
 * count and sum; more: count, sum and bucket counts, and count must equal the sum of
 * the buckets). Returns a list of tuples (count, sum, buckets...), or None
 * if some writer kept a latch moving for all the tries. A copy whose count
 * disagrees with its buckets raises ValueError naming the buffer index and
 * the offset; a total that overflows 64 bits raises OverflowError. */
static PyObject *sum_latches(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    (void)mod;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "sum_latches(buffers, offsets, sizes)");
        return NULL;
    }
    PyObject *bufs = PySequence_Fast(args[0], "buffers must be a sequence");
    PyObject *offs = bufs ? PySequence_Fast(args[1], "offsets must be a sequence") : NULL;
    PyObject *szs = offs ? PySequence_Fast(args[2], "sizes must be a sequence") : NULL;
    PyObject *out = NULL;
    Py_ssize_t *at = NULL, *words = NULL, *first = NULL, total_words = 0, reach = 0;
    uint64_t *acc = NULL, copy[HISTOGRAM_COPY_WORDS(MAX_PARAMS)];
    int busy = 0;
    if (!szs)
        goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(offs), nb = PySequence_Fast_GET_SIZE(bufs);
    if (PySequence_Fast_GET_SIZE(szs) != n) {
        PyErr_SetString(PyExc_ValueError, "offsets and sizes differ in length");
        goto done;
    }
    at = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n + 1));
    words = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n + 1));
    first = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n + 1));
    if (!at || !words || !first) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        at[i] = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(offs, i));
        Py_ssize_t size = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(szs, i));
        if (PyErr_Occurred())
            goto done;
        if (at[i] < 0 || at[i] % ALIGN || size < SUMMARY_COPY_SIZE || size % ALIGN ||
            size > HISTOGRAM_COPY_SIZE(MAX_PARAMS)) {
            PyErr_Format(PyExc_ValueError, "latch %zd with copy size %zd is not valid", at[i], size);
            goto done;
        }
        words[i] = size / 8;
        first[i] = total_words;
        total_words += words[i];
        if (at[i] + LATCH_SIZE(size) > reach)
            reach = at[i] + LATCH_SIZE(size);
    }
    acc = PyMem_Calloc((size_t)(total_words + 1), sizeof(uint64_t));
    if (!acc) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t b = 0; b < nb && !busy; b++) {
        Py_buffer view;
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(bufs, b), &view, PyBUF_SIMPLE) < 0)
            goto done;
        if ((uintptr_t)view.buf % ALIGN || reach > view.len) {
            PyErr_Format(PyExc_ValueError, "latches reach %zd, outside buffer of %zd bytes", reach, view.len);
            PyBuffer_Release(&view);
            goto done;
        }
        for (Py_ssize_t i = 0; i < n && !busy; i++) {
            const uint64_t *seq = (const uint64_t *)((const char *)view.buf + at[i] + VALUE_SEQ);
            Py_ssize_t w = words[i];
            int ok = stable_copy(seq, w, copy, LATCH_TRIES);
            if (!ok) {
                busy = 1;
                break;
            }
            uint64_t *a = acc + first[i];
            if (w > COPY_BUCKETS) { /* a histogram: the count must match its buckets */
                uint64_t buckets = 0;
                int wrapped = 0;
                for (Py_ssize_t k = COPY_BUCKETS; k < w; k++) {
                    buckets += copy[k];
                    wrapped |= buckets < copy[k];
                }
                if (wrapped || buckets != copy[COPY_COUNT]) {
                    PyErr_Format(PyExc_ValueError, "buffer %zd: histogram at %zd: bucket counts do not sum to its count %llu",
                                 b, at[i], (unsigned long long)copy[COPY_COUNT]);
                    PyBuffer_Release(&view);
                    goto done;
                }
            }
            for (Py_ssize_t k = 0; k < w; k++) {
                if (k == COPY_SUM) {
                    a[k] = dbl_bits(bits_dbl(a[k]) + bits_dbl(copy[k]));
                    continue;
                }
                uint64_t before = a[k];
                a[k] += copy[k];
                if (a[k] < before) {
                    PyErr_SetString(PyExc_OverflowError, "a summed count passed 2**64");
                    PyBuffer_Release(&view);
                    goto done;
                }
            }
        }
        PyBuffer_Release(&view);
    }
    if (busy) {
        out = Py_None;
        Py_INCREF(out);
        goto done;
    }
    out = PyList_New(n);
    for (Py_ssize_t i = 0; out && i < n; i++) {
        PyObject *t = PyTuple_New(words[i]);
        const uint64_t *a = acc + first[i];
        for (Py_ssize_t k = 0; t && k < words[i]; k++) {
            PyObject *v = k == COPY_SUM ? PyFloat_FromDouble(bits_dbl(a[k])) : PyLong_FromUnsignedLongLong(a[k]);
            if (!v) {
                Py_CLEAR(t);
                break;
            }
            PyTuple_SET_ITEM(t, k, v);
        }
        if (!t) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, t);
    }
done:
    PyMem_Free(at);
    PyMem_Free(words);
    PyMem_Free(first);
    PyMem_Free(acc);
    Py_XDECREF(bufs);
    Py_XDECREF(offs);
    Py_XDECREF(szs);
    return out;
}

/* _same_spans(buffer, reference, base, spans): True when buffer[a:b] equals
 * reference[a - base:b - base] for every (a, b) of spans (little-endian u64
 * pairs, record_table.metadata_spans): is a file's metadata byte for byte that of
 * one parsed before (record_table.py)? A private accelerator of
 * record_table.same_spans, its pure-Python twin (kept equal by the tests). */
static PyObject *same_spans(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer buf, ref, spans;
    (void)mod;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "_same_spans(buffer, reference, base, spans)");
        return NULL;
    }
    Py_ssize_t base = PyLong_AsSsize_t(args[2]);
    if (base == -1 && PyErr_Occurred())
        return NULL;
    if (PyObject_GetBuffer(args[0], &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &ref, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    if (PyObject_GetBuffer(args[3], &spans, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&buf);
        PyBuffer_Release(&ref);
        return NULL;
    }
    int same = base >= 0 && spans.len % 16 == 0;
    const unsigned char *s = spans.buf;
    for (Py_ssize_t i = 0; same && i < spans.len; i += 16) {
        uint64_t a, b;
        memcpy(&a, s + i, 8);
        memcpy(&b, s + i + 8, 8);
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
        a = __builtin_bswap64(a); /* little-endian u64s, whatever the host */
        b = __builtin_bswap64(b);
#endif
        if (a < (uint64_t)base || b < a || b > (uint64_t)buf.len || b - (uint64_t)base > (uint64_t)ref.len)
            same = 0;
        else
            same = memcmp((const char *)buf.buf + a, (const char *)ref.buf + (a - (uint64_t)base), (size_t)(b - a)) == 0;
    }
    PyBuffer_Release(&buf);
    PyBuffer_Release(&ref);
    PyBuffer_Release(&spans);
    return PyBool_FromLong(same);
}

/* _poll_steady(items, layout): the repeat poll of many files in one call
 * (steady.py; its pure-Python twin is steady.poll_steady, kept equal by the
 * tests). items: per file None, or (buffer, fd, size, end, capacity) as the
 * last full poll left them; layout: (magic, off_state, off_end, off_capacity,
 * ready) from _layout. Per file one byte: 0 when the file is as it was (fstat
 * size, magic, state, end, capacity) and its writer holds its lock (a shared
 * lock on fd is refused), else 1: the caller takes the full poll, which
 * checks everything again and says what changed. */
static PyObject *poll_steady(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer magic;
    Py_ssize_t off[3];
    unsigned long long ready;
    (void)mod;
    if (nargs != 2 || !PyTuple_Check(args[1]) || PyTuple_GET_SIZE(args[1]) != 5) {
        PyErr_SetString(PyExc_TypeError, "_poll_steady(items, (magic, off_state, off_end, off_capacity, ready))");
        return NULL;
    }
    for (int k = 0; k < 3; k++) {
        off[k] = PyLong_AsSsize_t(PyTuple_GET_ITEM(args[1], k + 1));
        if (off[k] == -1 && PyErr_Occurred())
            return NULL;
        if (off[k] < 0 || off[k] % ALIGN) {
            PyErr_SetString(PyExc_ValueError, "header offsets must be aligned");
            return NULL;
        }
    }
    ready = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(args[1], 4));
    if (ready == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    PyObject *items = PySequence_Fast(args[0], "items must be a sequence");
    if (!items)
        return NULL;
    if (PyObject_GetBuffer(PyTuple_GET_ITEM(args[1], 0), &magic, PyBUF_SIMPLE) < 0) {
        Py_DECREF(items);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items), reach = magic.len;
    for (int k = 0; k < 3; k++)
        if (off[k] + 8 > reach)
            reach = off[k] + 8;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (!out)
        goto done;
    char *code = PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(items, i);
        code[i] = 1;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 5)
            continue;
        long fd = PyLong_AsLong(PyTuple_GET_ITEM(item, 1));
        Py_ssize_t size = PyLong_AsSsize_t(PyTuple_GET_ITEM(item, 2));
        unsigned long long end = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(item, 3));
        unsigned long long capacity = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(item, 4));
        if (PyErr_Occurred()) {
            PyErr_Clear(); /* not what a reader leaves: the full poll */
            continue;
        }
        Py_buffer view;
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(item, 0), &view, PyBUF_SIMPLE) < 0) {
            PyErr_Clear(); /* a closed mapping, say: the full poll */
            continue;
        }
        struct stat st;
        int same = fd >= 0 && fd <= INT_MAX && view.len == size && view.len >= reach && (uintptr_t)view.buf % ALIGN == 0 &&
                   fstat((int)fd, &st) == 0 && st.st_size == (off_t)size && memcmp(view.buf, magic.buf, (size_t)magic.len) == 0;
        /* state, then end, then capacity: the order of the full poll (reader._read_header) */
        same = same && load_acquire((const uint64_t *)((const char *)view.buf + off[0])) == ready;
        same = same && load_acquire((const uint64_t *)((const char *)view.buf + off[1])) == end;
        same = same && load_acquire((const uint64_t *)((const char *)view.buf + off[2])) == capacity;
        PyBuffer_Release(&view);
        if (!same)
            continue;
        if (flock((int)fd, LOCK_SH | LOCK_NB) == 0) {
            flock((int)fd, LOCK_UN); /* no writer holds it: the full poll says dead */
            continue;
        }
        if (errno == EWOULDBLOCK)
            code[i] = 0; /* the writer holds its exclusive lock: alive */
    }
done:
    PyBuffer_Release(&magic);
    Py_DECREF(items);
    return out;
}

PyMethodDef statmap_read_methods[] = {
    {"_same_spans", (PyCFunction)(void (*)(void))same_spans, METH_FASTCALL,
     "_same_spans(buffer, reference, base, spans) -> True when every metadata span equals the reference's"},
    {"_poll_steady", (PyCFunction)(void (*)(void))poll_steady, METH_FASTCALL,
     "_poll_steady(items, layout) -> bytes, per file 0 when it is as it was and its writer alive, else 1"},
    {"read_latch", (PyCFunction)(void (*)(void))read_latch, METH_FASTCALL,
     "read_latch(buffer, offset, copy_size[, tries]) -> bytes of the stable copy, or None"},
    {"load_u64", (PyCFunction)(void (*)(void))load_u64, METH_FASTCALL, "load_u64(buffer, offset): acquire load"},
    {"load_words", (PyCFunction)(void (*)(void))load_words, METH_FASTCALL,
     "load_words(buffer, offsets) -> list of u64"},
    {"sum_words", (PyCFunction)(void (*)(void))sum_words, METH_FASTCALL,
     "sum_words(buffers, offsets) -> list of the sums of the u64 words at each offset across the buffers"},
    {"sum_latches", (PyCFunction)(void (*)(void))sum_latches, METH_FASTCALL,
     "sum_latches(buffers, offsets, sizes) -> list of (count, sum, buckets...) summed across the buffers, or None"},
    {NULL, NULL, 0, NULL},
};
