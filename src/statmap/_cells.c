/* statmap value cells: every store into a live mapping.
 *
 * Each cell owns a Py_buffer on the mapping (so the mapping outlives it) and
 * a pointer to its value area. The encodings are those of docs/format.md:
 *   counter     u64 (or f64 with the float flag), atomic add
 *   gauge       f64 bits in a u64, atomic store / CAS loop for inc
 *   enum        u64 state index, atomic store
 *   summary,    sequence word then two copies; the writer bumps the sequence
 *   histogram,  (release) before rewriting each copy, so the copy selected by
 *   text        the sequence's parity is always complete ("latch" seqlock).
 * Every word is accessed with __atomic builtins, so there is no data race in
 * the C11 sense and the code is sound on weakly ordered CPUs (ARM64).
 * Writers are serialised by the GIL: a cell method never releases it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define SEQ_OFF 0
#define COPIES_OFF 8
#define SUMMARY_COPY 16

static inline uint64_t load_relaxed(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void store_relaxed(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

static inline uint64_t dbl_bits(double d) { uint64_t u; memcpy(&u, &d, 8); return u; }
static inline double bits_dbl(uint64_t u) { double d; memcpy(&d, &u, 8); return d; }

/* Start rewriting copy 0, then copy 1, of a latch: see docs/format.md. */
static inline uint64_t latch_begin(uint64_t *seq)
{
    uint64_t s = load_relaxed(seq) + 1; /* odd: readers use copy 1 */
    __atomic_store_n(seq, s, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_RELEASE); /* seq before copy 0's stores */
    return s;
}

static inline void latch_switch(uint64_t *seq, uint64_t s)
{
    __atomic_store_n(seq, s + 1, __ATOMIC_RELEASE); /* even: readers use copy 0 */
    __atomic_thread_fence(__ATOMIC_RELEASE);        /* seq before copy 1's stores */
}

/* ------------------------------------------------------------------ */

/* statmap._timing's classes, imported on first use (not on the write path). */
static PyObject *timing_module = NULL;

static PyObject *wrap_in(const char *cls_name, PyObject *arg)
{
    if (!timing_module) {
        timing_module = PyImport_ImportModule("statmap._timing");
        if (!timing_module)
            return NULL;
    }
    PyObject *cls = PyObject_GetAttrString(timing_module, cls_name);
    if (!cls)
        return NULL;
    PyObject *out = PyObject_CallOneArg(cls, arg);
    Py_DECREF(cls);
    return out;
}

/* Timing(self.<method>): a context manager and decorator recording seconds. */
static PyObject *timing_of(PyObject *self, const char *method)
{
    PyObject *bound = PyObject_GetAttrString(self, method);
    if (!bound)
        return NULL;
    PyObject *out = wrap_in("Timing", bound);
    Py_DECREF(bound);
    return out;
}

/* The stable copy of one of our own latches. Our writes happen under the GIL,
 * so no write of ours is in progress; the check only guards against misuse. */
static const uint64_t *own_stable_copy(const uint64_t *value, Py_ssize_t words)
{
    for (;;) {
        uint64_t s = __atomic_load_n(value, __ATOMIC_ACQUIRE);
        const uint64_t *copy = value + 1 + (s & 1) * (uint64_t)words;
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(value, __ATOMIC_RELAXED) == s)
            return copy;
    }
}

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    uint64_t *p; /* value area */
    Py_ssize_t offset;
    Py_ssize_t size; /* bytes of the value area */
    /* type-specific */
    double *bounds;  /* histogram: finite upper bounds */
    Py_ssize_t nbounds;
    Py_ssize_t capacity; /* text: byte capacity */
    /* Set while the cell writes into private memory in a forked child whose
     * file does not exist yet: the first update calls it to create the file
     * (which re-points every cell and clears this) before it writes. */
    PyObject *pending;
} Cell;

/* The check on every write path: one load and a branch that is never taken
 * once the file exists. After it, self->p may point into the new file. */
static int cell_materialise(Cell *self)
{
    PyObject *create = self->pending;
    Py_INCREF(create);
    PyObject *r = PyObject_CallNoArgs(create);
    Py_DECREF(create);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}
#define CELL_READY(self, fail)                                                                                 \
    do {                                                                                                       \
        if (__builtin_expect((self)->pending != NULL, 0) && cell_materialise(self) < 0)                        \
            return fail;                                                                                       \
    } while (0)

static int cell_attach(Cell *self, PyObject *buffer, Py_ssize_t offset, Py_ssize_t size)
{
    Py_buffer view;
    if (PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE | PyBUF_SIMPLE) < 0)
        return -1;
    if (offset < 0 || offset % 8 || size < 0 || offset > view.len - size ||
        ((uintptr_t)view.buf % 8)) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "value area %zd+%zd does not fit an aligned buffer of %zd bytes",
                     offset, size, view.len);
        return -1;
    }
    if (self->view.obj)
        PyBuffer_Release(&self->view);
    self->view = view;
    self->offset = offset;
    self->size = size;
    self->p = (uint64_t *)((char *)view.buf + offset);
    return 0;
}

static void cell_dealloc(Cell *self)
{
    if (self->view.obj)
        PyBuffer_Release(&self->view);
    PyMem_Free(self->bounds);
    Py_CLEAR(self->pending);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* _rebind(buffer[, offset[, pending]]): pending (a callable, or None) is
 * called by the first update before it writes; see Cell.pending. */
static PyObject *cell_rebind(Cell *self, PyObject *args)
{
    PyObject *buffer, *offset_arg = Py_None, *pending = Py_None;
    Py_ssize_t offset = self->offset;
    if (!PyArg_ParseTuple(args, "O|OO", &buffer, &offset_arg, &pending))
        return NULL;
    if (offset_arg != Py_None) {
        offset = PyLong_AsSsize_t(offset_arg);
        if (offset == -1 && PyErr_Occurred())
            return NULL;
    }
    if (pending != Py_None && !PyCallable_Check(pending)) {
        PyErr_SetString(PyExc_TypeError, "pending must be callable or None");
        return NULL;
    }
    if (cell_attach(self, buffer, offset, self->size) < 0)
        return NULL;
    Py_XINCREF(pending == Py_None ? NULL : pending);
    Py_XSETREF(self->pending, pending == Py_None ? NULL : pending);
    Py_RETURN_NONE;
}

static PyObject *cell_get_offset(Cell *self, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(self->offset);
}

/* Parse (buffer, offset) for the fixed-size cells. */
static PyObject *simple_new(PyTypeObject *type, PyObject *args, Py_ssize_t size)
{
    PyObject *buffer;
    Py_ssize_t offset;
    if (!PyArg_ParseTuple(args, "On", &buffer, &offset))
        return NULL;
    Cell *self = (Cell *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    if (cell_attach(self, buffer, offset, size) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int parse_amount(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, double *out, double dflt)
{
    PyObject *arg = NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw > 1) {
        PyErr_SetString(PyExc_TypeError, "takes at most one argument");
        return -1;
    }
    if (nargs == 1)
        arg = args[0];
    else if (nkw == 1) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, 0);
        if (PyUnicode_CompareWithASCIIString(k, "n") && PyUnicode_CompareWithASCIIString(k, "amount") &&
            PyUnicode_CompareWithASCIIString(k, "value")) {
            PyErr_Format(PyExc_TypeError, "unexpected keyword argument %R", k);
            return -1;
        }
        arg = args[0];
    }
    if (!arg) {
        *out = dflt;
        return 0;
    }
    if (PyFloat_CheckExact(arg))
        *out = PyFloat_AS_DOUBLE(arg);
    else {
        *out = PyFloat_AsDouble(arg);
        if (*out == -1.0 && PyErr_Occurred())
            return -1;
    }
    return 0;
}

/* ---------------------------- Counter (u64) ------------------------- */

static int counter_add(Cell *self, PyObject *arg)
{
    uint64_t n;
    if (PyLong_CheckExact(arg) || PyLong_Check(arg)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(arg, &overflow);
        if (v == -1 && PyErr_Occurred())
            return -1;
        if (overflow > 0) {
            n = PyLong_AsUnsignedLongLong(arg);
            if (n == (uint64_t)-1 && PyErr_Occurred())
                return -1;
        } else if (overflow < 0 || v < 0) {
            PyErr_SetString(PyExc_ValueError, "counters only go up: negative increment rejected");
            return -1;
        } else
            n = (uint64_t)v;
    } else {
        PyErr_Format(PyExc_TypeError,
                     "counter increments must be int, not %.100s (declare the counter with float=True for fractions)",
                     Py_TYPE(arg)->tp_name);
        return -1;
    }
    CELL_READY(self, -1);
    __atomic_fetch_add(self->p, n, __ATOMIC_RELAXED);
    return 0;
}

static PyObject *counter_inc(Cell *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs == 0 && !kwnames) {
        CELL_READY(self, NULL);
        __atomic_fetch_add(self->p, 1, __ATOMIC_RELAXED);
        Py_RETURN_NONE;
    }
    if (nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0) != 1) {
        PyErr_SetString(PyExc_TypeError, "inc() takes at most one argument");
        return NULL;
    }
    if (kwnames && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "n")) {
        PyErr_Format(PyExc_TypeError, "unexpected keyword argument %R", PyTuple_GET_ITEM(kwnames, 0));
        return NULL;
    }
    if (counter_add(self, args[0]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *counter_iadd(PyObject *self, PyObject *arg)
{
    if (counter_add((Cell *)self, arg) < 0)
        return NULL;
    Py_INCREF(self);
    return self;
}

static PyObject *counter_get(Cell *self, PyObject *unused)
{
    (void)unused;
    return PyLong_FromUnsignedLongLong(load_relaxed(self->p));
}

static PyObject *counter_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    (void)kw;
    return simple_new(type, args, 8);
}

/* --------------------------- FloatCounter --------------------------- */

static int add_f64(uint64_t *p, double d)
{
    uint64_t old = load_relaxed(p), want;
    do {
        want = dbl_bits(bits_dbl(old) + d);
    } while (!__atomic_compare_exchange_n(p, &old, want, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return 0;
}

static int fcounter_add(Cell *self, PyObject *arg, double dflt, int has)
{
    double d = dflt;
    if (has) {
        d = PyFloat_AsDouble(arg);
        if (d == -1.0 && PyErr_Occurred())
            return -1;
    }
    if (!(d >= 0) || isinf(d)) {
        PyErr_SetString(PyExc_ValueError, "counters only go up: increment must be finite and not negative");
        return -1;
    }
    CELL_READY(self, -1);
    return add_f64(self->p, d);
}

static PyObject *fcounter_inc(Cell *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    double d;
    if (parse_amount(args, nargs, kwnames, &d, 1.0) < 0)
        return NULL;
    if (!(d >= 0) || isinf(d)) {
        PyErr_SetString(PyExc_ValueError, "counters only go up: increment must be finite and not negative");
        return NULL;
    }
    CELL_READY(self, NULL);
    add_f64(self->p, d);
    Py_RETURN_NONE;
}

static PyObject *fcounter_iadd(PyObject *self, PyObject *arg)
{
    if (fcounter_add((Cell *)self, arg, 0, 1) < 0)
        return NULL;
    Py_INCREF(self);
    return self;
}

static PyObject *float_get(Cell *self, PyObject *unused)
{
    (void)unused;
    return PyFloat_FromDouble(bits_dbl(load_relaxed(self->p)));
}

/* ------------------------------- Gauge ------------------------------ */

static PyObject *gauge_set(Cell *self, PyObject *arg)
{
    double d;
    if (PyFloat_CheckExact(arg))
        d = PyFloat_AS_DOUBLE(arg);
    else {
        d = PyFloat_AsDouble(arg);
        if (d == -1.0 && PyErr_Occurred())
            return NULL;
    }
    CELL_READY(self, NULL);
    store_relaxed(self->p, dbl_bits(d));
    Py_RETURN_NONE;
}

static PyObject *gauge_inc(Cell *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    double d;
    if (parse_amount(args, nargs, kwnames, &d, 1.0) < 0)
        return NULL;
    CELL_READY(self, NULL);
    add_f64(self->p, d);
    Py_RETURN_NONE;
}

static PyObject *gauge_dec(Cell *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    double d;
    if (parse_amount(args, nargs, kwnames, &d, 1.0) < 0)
        return NULL;
    CELL_READY(self, NULL);
    add_f64(self->p, -d);
    Py_RETURN_NONE;
}

static PyObject *gauge_iadd(PyObject *self, PyObject *arg)
{
    double d = PyFloat_AsDouble(arg);
    if (d == -1.0 && PyErr_Occurred())
        return NULL;
    CELL_READY((Cell *)self, NULL);
    add_f64(((Cell *)self)->p, d);
    Py_INCREF(self);
    return self;
}

static PyObject *gauge_isub(PyObject *self, PyObject *arg)
{
    double d = PyFloat_AsDouble(arg);
    if (d == -1.0 && PyErr_Occurred())
        return NULL;
    CELL_READY((Cell *)self, NULL);
    add_f64(((Cell *)self)->p, -d);
    Py_INCREF(self);
    return self;
}

static PyObject *gauge_set_to_current_time(Cell *self, PyObject *unused)
{
    (void)unused;
    PyObject *time = PyImport_ImportModule("time");
    if (!time)
        return NULL;
    PyObject *now = PyObject_CallMethod(time, "time", NULL);
    Py_DECREF(time);
    if (!now)
        return NULL;
    double d = PyFloat_AsDouble(now);
    Py_DECREF(now);
    if (d == -1.0 && PyErr_Occurred())
        return NULL;
    CELL_READY(self, NULL);
    store_relaxed(self->p, dbl_bits(d));
    Py_RETURN_NONE;
}

static PyObject *gauge_track_inprogress(PyObject *self, PyObject *unused)
{
    (void)unused;
    return wrap_in("InProgress", self);
}

static PyObject *gauge_time(PyObject *self, PyObject *unused)
{
    (void)unused;
    return timing_of(self, "set");
}

static PyObject *observe_time(PyObject *self, PyObject *unused)
{
    (void)unused;
    return timing_of(self, "observe");
}

/* ------------------------------- Enum ------------------------------- */

static PyObject *enum_set_index(Cell *self, PyObject *arg)
{
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (i < 0 || i >= self->capacity) {
        PyErr_Format(PyExc_ValueError, "state index %zd out of range 0..%zd", i, self->capacity - 1);
        return NULL;
    }
    CELL_READY(self, NULL);
    store_relaxed(self->p, (uint64_t)i);
    Py_RETURN_NONE;
}

static PyObject *enum_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    PyObject *buffer;
    Py_ssize_t offset, count;
    (void)kw;
    if (!PyArg_ParseTuple(args, "Onn", &buffer, &offset, &count))
        return NULL;
    if (count < 1) {
        PyErr_SetString(PyExc_ValueError, "an enum needs at least one state");
        return NULL;
    }
    Cell *self = (Cell *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->capacity = count;
    if (cell_attach(self, buffer, offset, 8) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* ------------------------------ Summary ----------------------------- */

static PyObject *summary_observe(Cell *self, PyObject *arg)
{
    double d = PyFloat_AsDouble(arg);
    if (d == -1.0 && PyErr_Occurred())
        return NULL;
    if (isnan(d)) {
        PyErr_SetString(PyExc_ValueError, "cannot observe NaN");
        return NULL;
    }
    CELL_READY(self, NULL);
    uint64_t *seq = self->p + SEQ_OFF / 8;
    uint64_t *c0 = self->p + COPIES_OFF / 8, *c1 = c0 + SUMMARY_COPY / 8;
    uint64_t s = latch_begin(seq);
    store_relaxed(c0, load_relaxed(c1) + 1);
    store_relaxed(c0 + 1, dbl_bits(bits_dbl(load_relaxed(c1 + 1)) + d));
    latch_switch(seq, s);
    store_relaxed(c1, load_relaxed(c0));
    store_relaxed(c1 + 1, load_relaxed(c0 + 1));
    Py_RETURN_NONE;
}

static PyObject *summary_get(Cell *self, PyObject *unused)
{
    (void)unused;
    const uint64_t *c = own_stable_copy(self->p, SUMMARY_COPY / 8);
    return Py_BuildValue("(Kd)", (unsigned long long)load_relaxed(c), bits_dbl(load_relaxed(c + 1)));
}

static PyObject *summary_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    (void)kw;
    return simple_new(type, args, 8 + 2 * SUMMARY_COPY);
}

/* ----------------------------- Histogram ---------------------------- */

static PyObject *histogram_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    PyObject *buffer, *bounds;
    Py_ssize_t offset;
    (void)kw;
    if (!PyArg_ParseTuple(args, "OnO", &buffer, &offset, &bounds))
        return NULL;
    PyObject *seq = PySequence_Fast(bounds, "bounds must be a sequence of floats");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    Cell *self = (Cell *)type->tp_alloc(type, 0);
    if (!self) {
        Py_DECREF(seq);
        return NULL;
    }
    self->bounds = PyMem_Malloc(sizeof(double) * (size_t)(n ? n : 1));
    if (!self->bounds) {
        Py_DECREF(seq);
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->nbounds = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        double b = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        if ((b == -1.0 && PyErr_Occurred()) || !isfinite(b) || (i && !(b > self->bounds[i - 1]))) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "bounds must be finite and strictly increasing");
            Py_DECREF(seq);
            Py_DECREF(self);
            return NULL;
        }
        self->bounds[i] = b;
    }
    Py_DECREF(seq);
    if (cell_attach(self, buffer, offset, 8 + 2 * 8 * (n + 3)) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* The bucket counting d: the first bound >= d, or the +Inf bucket. */
static inline Py_ssize_t bucket_of(const Cell *self, double d)
{
    Py_ssize_t lo = 0, hi = self->nbounds;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (d <= self->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static PyObject *histogram_observe(Cell *self, PyObject *arg)
{
    double d;
    if (PyFloat_CheckExact(arg))
        d = PyFloat_AS_DOUBLE(arg);
    else {
        d = PyFloat_AsDouble(arg);
        if (d == -1.0 && PyErr_Occurred())
            return NULL;
    }
    if (isnan(d)) {
        PyErr_SetString(PyExc_ValueError, "cannot observe NaN");
        return NULL;
    }
    CELL_READY(self, NULL);
    Py_ssize_t b = bucket_of(self, d), words = self->nbounds + 3;
    uint64_t *seq = self->p + SEQ_OFF / 8;
    uint64_t *c0 = self->p + COPIES_OFF / 8, *c1 = c0 + words;
    /* copy 1 is complete; build copy 0 from it, then bring copy 1 level */
    uint64_t count = load_relaxed(c1) + 1;
    uint64_t sum = dbl_bits(bits_dbl(load_relaxed(c1 + 1)) + d);
    uint64_t bucket = load_relaxed(c1 + 2 + b) + 1;
    uint64_t s = latch_begin(seq);
    store_relaxed(c0, count);
    store_relaxed(c0 + 1, sum);
    store_relaxed(c0 + 2 + b, bucket);
    latch_switch(seq, s);
    store_relaxed(c1, count);
    store_relaxed(c1 + 1, sum);
    store_relaxed(c1 + 2 + b, bucket);
    Py_RETURN_NONE;
}

static PyObject *histogram_get(Cell *self, PyObject *unused)
{
    (void)unused;
    Py_ssize_t n = self->nbounds + 1;
    const uint64_t *c = own_stable_copy(self->p, n + 2);
    PyObject *buckets = PyTuple_New(n);
    if (!buckets)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(load_relaxed(c + 2 + i));
        if (!v) {
            Py_DECREF(buckets);
            return NULL;
        }
        PyTuple_SET_ITEM(buckets, i, v);
    }
    return Py_BuildValue("(KdN)", (unsigned long long)load_relaxed(c), bits_dbl(load_relaxed(c + 1)), buckets);
}

static PyObject *histogram_get_bounds(Cell *self, void *closure)
{
    (void)closure;
    PyObject *out = PyTuple_New(self->nbounds);
    for (Py_ssize_t i = 0; out && i < self->nbounds; i++) {
        PyObject *b = PyFloat_FromDouble(self->bounds[i]);
        if (!b) {
            Py_CLEAR(out);
            break;
        }
        PyTuple_SET_ITEM(out, i, b);
    }
    return out;
}

static PyObject *histogram_bucket_index(Cell *self, PyObject *arg)
{
    double d = PyFloat_AsDouble(arg);
    if (d == -1.0 && PyErr_Occurred())
        return NULL;
    return PyLong_FromSsize_t(bucket_of(self, d));
}

/* -------------------------------- Text ------------------------------ */

static PyObject *text_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    PyObject *buffer;
    Py_ssize_t offset, capacity;
    (void)kw;
    if (!PyArg_ParseTuple(args, "Onn", &buffer, &offset, &capacity))
        return NULL;
    if (capacity < 0 || capacity > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "text capacity must be 0..1048576 bytes");
        return NULL;
    }
    Cell *self = (Cell *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->capacity = capacity;
    if (cell_attach(self, buffer, offset, 8 + 2 * (8 + ((capacity + 7) & ~(Py_ssize_t)7))) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* Write len and bytes into one copy, zeroing what an older, longer text left.
 * The old length comes from the shared file: never trust it past the capacity. */
static void text_fill(uint64_t *copy, Py_ssize_t capacity, const char *data, Py_ssize_t len)
{
    uint64_t old = load_relaxed(copy);
    Py_ssize_t old_words = (Py_ssize_t)((old < (uint64_t)capacity ? old : (uint64_t)capacity) + 7) / 8;
    Py_ssize_t words = (len + 7) / 8;
    for (Py_ssize_t w = 0; w < words; w++) {
        uint64_t v = 0;
        Py_ssize_t n = len - w * 8 < 8 ? len - w * 8 : 8;
        memcpy(&v, data + w * 8, (size_t)n);
        store_relaxed(copy + 1 + w, v);
    }
    for (Py_ssize_t w = words; w < old_words; w++)
        store_relaxed(copy + 1 + w, 0);
    store_relaxed(copy, (uint64_t)len);
}

static PyObject *text_set(Cell *self, PyObject *arg)
{
    Py_ssize_t len;
    const char *data;
    if (!PyUnicode_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "text value must be str, not %.100s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    data = PyUnicode_AsUTF8AndSize(arg, &len);
    if (!data)
        return NULL;
    if (len > self->capacity) {
        len = self->capacity;
        /* back off to a character boundary: never split a UTF-8 sequence */
        while (len > 0 && ((unsigned char)data[len] & 0xC0) == 0x80)
            len--;
    }
    CELL_READY(self, NULL);
    Py_ssize_t words = 1 + ((self->capacity + 7) / 8);
    uint64_t *seq = self->p + SEQ_OFF / 8;
    uint64_t *c0 = self->p + COPIES_OFF / 8, *c1 = c0 + words;
    uint64_t s = latch_begin(seq);
    text_fill(c0, self->capacity, data, len);
    latch_switch(seq, s);
    text_fill(c1, self->capacity, data, len);
    Py_RETURN_NONE;
}

static PyObject *text_get(Cell *self, PyObject *unused)
{
    (void)unused;
    Py_ssize_t words = 1 + ((self->capacity + 7) / 8);
    const uint64_t *c = own_stable_copy(self->p, words);
    uint64_t len = load_relaxed(c);
    if (len > (uint64_t)self->capacity)
        len = (uint64_t)self->capacity;
    char *buf = PyMem_Malloc((size_t)len + 1);
    if (!buf)
        return PyErr_NoMemory();
    for (uint64_t w = 0; w * 8 < len; w++) {
        uint64_t v = load_relaxed(c + 1 + w);
        memcpy(buf + w * 8, &v, len - w * 8 < 8 ? (size_t)(len - w * 8) : 8);
    }
    PyObject *out = PyUnicode_DecodeUTF8(buf, (Py_ssize_t)len, "replace");
    PyMem_Free(buf);
    return out;
}

static PyObject *cell_get_capacity(Cell *self, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(self->capacity);
}

/* ------------------------------ Reading ----------------------------- */

/* Copy the stable copy of a latch at value_offset into a new bytes object,
 * or return None when the writer kept moving for `tries` attempts. */
static PyObject *read_latch(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t offset, copy_size, tries = 10000;
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
    if (offset < 0 || offset % 8 || copy_size < 0 || copy_size % 8 || (uintptr_t)view.buf % 8 ||
        offset > view.len - 8 - 2 * copy_size) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "latch %zd+%zd outside buffer of %zd bytes", offset, 8 + 2 * copy_size,
                     view.len);
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, copy_size);
    if (!out) {
        PyBuffer_Release(&view);
        return NULL;
    }
    uint64_t *dst = (uint64_t *)PyBytes_AS_STRING(out);
    const uint64_t *seq = (const uint64_t *)((char *)view.buf + offset);
    Py_ssize_t words = copy_size / 8;
    int ok = 0;
    for (Py_ssize_t t = 0; t < tries && !ok; t++) {
        uint64_t s1 = __atomic_load_n(seq, __ATOMIC_ACQUIRE);
        const uint64_t *src = seq + 1 + (s1 & 1) * (uint64_t)words;
        for (Py_ssize_t w = 0; w < words; w++) {
            uint64_t v = load_relaxed(src + w);
            memcpy(dst + w, &v, 8); /* PyBytes data may be unaligned for words */
        }
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        ok = load_relaxed(seq) == s1;
    }
    PyBuffer_Release(&view);
    if (!ok) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    return out;
}

static int word_args(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, Py_buffer *view, Py_ssize_t *off,
                     int writable)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "expected %zd arguments", want);
        return -1;
    }
    *off = PyLong_AsSsize_t(args[1]);
    if (*off == -1 && PyErr_Occurred())
        return -1;
    if (PyObject_GetBuffer(args[0], view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0)
        return -1;
    if (*off < 0 || *off % 8 || *off > view->len - 8 || (uintptr_t)view->buf % 8) {
        PyErr_Format(PyExc_ValueError, "word at %zd outside buffer of %zd bytes", *off, view->len);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *load_u64(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t off;
    (void)mod;
    if (word_args(args, nargs, 2, &view, &off, 0) < 0)
        return NULL;
    uint64_t v = __atomic_load_n((uint64_t *)((char *)view.buf + off), __ATOMIC_ACQUIRE);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(v);
}

static PyObject *store_u64(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t off;
    (void)mod;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "store_u64(buffer, offset, value)");
        return NULL;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(args[2]);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (word_args(args, 2, 2, &view, &off, 1) < 0)
        return NULL;
    __atomic_store_n((uint64_t *)((char *)view.buf + off), (uint64_t)v, __ATOMIC_RELEASE);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
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
    Py_ssize_t n = PySequence_Fast_GET_SIZE(offs);
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out && i < n; i++) {
        Py_ssize_t off = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(offs, i));
        if ((off == -1 && PyErr_Occurred()) || off < 0 || off % 8 || off > view.len - 8) {
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


/* ------------------------------ Family ------------------------------ */

/* A labelled metric's child lookup: labels(*values) or labels(**by_name) is
 * one dict lookup on the tuple of values in label order; a miss calls
 * create(values, by_name) (Python), which makes the child and caches it. */
typedef struct {
    PyObject_HEAD
    PyObject *name;
    PyObject *label_names; /* tuple of str */
    PyObject *children;    /* dict: tuple of values -> series */
    PyObject *create;
} Family;

static void family_dealloc(Family *self)
{
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->name);
    Py_CLEAR(self->label_names);
    Py_CLEAR(self->children);
    Py_CLEAR(self->create);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int family_traverse(Family *self, visitproc visit, void *arg)
{
    Py_VISIT(self->name);
    Py_VISIT(self->label_names);
    Py_VISIT(self->children);
    Py_VISIT(self->create);
    return 0;
}

static PyObject *family_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    PyObject *name, *label_names, *children, *create;
    (void)kw;
    if (!PyArg_ParseTuple(args, "UO!O!O", &name, &PyTuple_Type, &label_names, &PyDict_Type, &children, &create))
        return NULL;
    Family *self = (Family *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    Py_INCREF(name);
    Py_INCREF(label_names);
    Py_INCREF(children);
    Py_INCREF(create);
    self->name = name;
    self->label_names = label_names;
    self->children = children;
    self->create = create;
    return (PyObject *)self;
}

/* The values in label order, or NULL with no error set when the keywords do
 * not name exactly the labels (the slow path then explains what is wrong). */
static PyObject *family_key(Family *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    Py_ssize_t n = PyTuple_GET_SIZE(self->label_names);
    if (nkw && (nargs || nkw != n))
        return NULL;
    PyObject *key = PyTuple_New(nkw ? n : nargs);
    if (!key)
        return NULL;
    if (!nkw) {
        for (Py_ssize_t i = 0; i < nargs; i++) {
            Py_INCREF(args[i]);
            PyTuple_SET_ITEM(key, i, args[i]);
        }
        return key;
    }
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *kname = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t pos = -1;
        for (Py_ssize_t i = 0; i < n && pos < 0; i++) {
            PyObject *label = PyTuple_GET_ITEM(self->label_names, i);
            if (label == kname || PyUnicode_Compare(label, kname) == 0)
                pos = i;
        }
        if (pos < 0 || PyTuple_GET_ITEM(key, pos)) {
            PyErr_Clear();
            Py_DECREF(key);
            return NULL;
        }
        Py_INCREF(args[k]);
        PyTuple_SET_ITEM(key, pos, args[k]);
    }
    return key;
}

static PyObject *family_labels(Family *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *key = family_key(self, args, nargs, kwnames);
    if (key) {
        PyObject *child = PyDict_GetItemWithError(self->children, key);
        Py_DECREF(key);
        if (child) {
            Py_INCREF(child);
            return child;
        }
    }
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_TypeError)) /* unhashable values: the slow path copes */
            return NULL;
        PyErr_Clear();
    }
    /* miss: create(values, by_name) */
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *values = PyTuple_New(nargs);
    PyObject *by_name = PyDict_New();
    PyObject *out = NULL;
    if (values && by_name) {
        for (Py_ssize_t i = 0; i < nargs; i++) {
            Py_INCREF(args[i]);
            PyTuple_SET_ITEM(values, i, args[i]);
        }
        int ok = 1;
        for (Py_ssize_t k = 0; k < nkw && ok; k++)
            ok = PyDict_SetItem(by_name, PyTuple_GET_ITEM(kwnames, k), args[nargs + k]) == 0;
        if (ok)
            out = PyObject_CallFunctionObjArgs(self->create, values, by_name, NULL);
    }
    Py_XDECREF(values);
    Py_XDECREF(by_name);
    return out;
}

static PyObject *family_no_labels(Family *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    (void)args;
    (void)nargs;
    (void)kwnames;
    PyErr_Format(PyExc_TypeError, "%U has labels %R: call .labels(...) first", self->name, self->label_names);
    return NULL;
}

static PyObject *family_repr(Family *self)
{
    return PyUnicode_FromFormat("<statmap.Family %R labels=%R series=%zd>", self->name, self->label_names,
                                PyDict_GET_SIZE(self->children));
}

#define NO_LABELS(name) {name, (PyCFunction)(void (*)(void))family_no_labels, METH_FASTCALL | METH_KEYWORDS, NULL}
static PyMethodDef family_methods[] = {
    {"labels", (PyCFunction)(void (*)(void))family_labels, METH_FASTCALL | METH_KEYWORDS,
     "the series for these label values, by position or by name"},
    NO_LABELS("inc"), NO_LABELS("dec"), NO_LABELS("set"), NO_LABELS("observe"), NO_LABELS("time"),
    NO_LABELS("get"), NO_LABELS("state"), NO_LABELS("info"), NO_LABELS("track_inprogress"),
    {NULL, NULL, 0, NULL},
};

static PyMemberDef family_members[] = {
    {"name", T_OBJECT_EX, offsetof(Family, name), READONLY, "metric name"},
    {"label_names", T_OBJECT_EX, offsetof(Family, label_names), READONLY, "label names, in order"},
    {"_children", T_OBJECT_EX, offsetof(Family, children), READONLY, "cache: values -> series"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject FamilyType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "statmap._cells.Family",
    .tp_basicsize = sizeof(Family),
    .tp_dealloc = (destructor)family_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "a labelled metric: labels(...) returns the cached series for a label set",
    .tp_traverse = (traverseproc)family_traverse,
    .tp_methods = family_methods,
    .tp_members = family_members,
    .tp_repr = (reprfunc)family_repr,
    .tp_new = family_new,
};

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
        if (at[i] < 0 || at[i] % 8) {
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
        if ((uintptr_t)view.buf % 8 || (n && max_off > view.len - 8)) {
            PyErr_Format(PyExc_ValueError, "word at %zd outside buffer of %zd bytes", max_off, view.len);
            PyBuffer_Release(&view);
            goto done;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            uint64_t v = load_relaxed((const uint64_t *)((const char *)view.buf + at[i]));
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
 * several mappings. sizes[i] is the copy size of latch i (16: count and
 * sum; more: count, sum and bucket counts, and count must equal the sum of
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
    uint64_t *acc = NULL, copy[4096 + 3];
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
        if (at[i] < 0 || at[i] % 8 || size < 16 || size % 8 || size / 8 > 4096 + 3) {
            PyErr_Format(PyExc_ValueError, "latch %zd with copy size %zd is not valid", at[i], size);
            goto done;
        }
        words[i] = size / 8;
        first[i] = total_words;
        total_words += words[i];
        if (at[i] + 8 + 2 * size > reach)
            reach = at[i] + 8 + 2 * size;
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
        if ((uintptr_t)view.buf % 8 || reach > view.len) {
            PyErr_Format(PyExc_ValueError, "latches reach %zd, outside buffer of %zd bytes", reach, view.len);
            PyBuffer_Release(&view);
            goto done;
        }
        for (Py_ssize_t i = 0; i < n && !busy; i++) {
            const uint64_t *seq = (const uint64_t *)((const char *)view.buf + at[i]);
            Py_ssize_t w = words[i];
            int ok = 0;
            for (int t = 0; t < 10000 && !ok; t++) {
                uint64_t s1 = __atomic_load_n(seq, __ATOMIC_ACQUIRE);
                const uint64_t *src = seq + 1 + (s1 & 1) * (uint64_t)w;
                for (Py_ssize_t k = 0; k < w; k++)
                    copy[k] = load_relaxed(src + k);
                __atomic_thread_fence(__ATOMIC_ACQUIRE);
                ok = load_relaxed(seq) == s1;
            }
            if (!ok) {
                busy = 1;
                break;
            }
            uint64_t *a = acc + first[i];
            if (w > 2) { /* a histogram: the count must match its buckets */
                uint64_t buckets = 0;
                int wrapped = 0;
                for (Py_ssize_t k = 2; k < w; k++) {
                    buckets += copy[k];
                    wrapped |= buckets < copy[k];
                }
                if (wrapped || buckets != copy[0]) {
                    PyErr_Format(PyExc_ValueError, "buffer %zd: histogram at %zd: bucket counts do not sum to its count %llu",
                                 b, at[i], (unsigned long long)copy[0]);
                    PyBuffer_Release(&view);
                    goto done;
                }
            }
            for (Py_ssize_t k = 0; k < w; k++) {
                if (k == 1) {
                    a[1] = dbl_bits(bits_dbl(a[1]) + bits_dbl(copy[1]));
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
            PyObject *v = k == 1 ? PyFloat_FromDouble(bits_dbl(a[1])) : PyLong_FromUnsignedLongLong(a[k]);
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

static PyTypeObject CounterType, FloatCounterType, GaugeType, EnumType, SummaryType, HistogramType, TextType;

/* move_cells(cells, dst, src, start, end): copy src[start:end] into dst, then
 * re-point every cell at the same offset in dst and clear its pending
 * callable. One C call with the GIL held throughout: no Python code (a
 * signal handler, another thread) runs between the copy and the last
 * re-pointing, so no update made to src before it is lost and none made
 * after it lands in src. */
static PyObject *move_cells(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    (void)mod;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "move_cells(cells, dst, src, start, end)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[3]), end = PyLong_AsSsize_t(args[4]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *list = PySequence_Fast(args[0], "cells must be a sequence");
    if (!list)
        return NULL;
    Py_buffer dst, src;
    if (PyObject_GetBuffer(args[1], &dst, PyBUF_WRITABLE | PyBUF_SIMPLE) < 0) {
        Py_DECREF(list);
        return NULL;
    }
    if (PyObject_GetBuffer(args[2], &src, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&dst);
        Py_DECREF(list);
        return NULL;
    }
    PyObject *out = NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(list);
    if (start < 0 || start > end || end > dst.len || end > src.len) {
        PyErr_Format(PyExc_ValueError, "range %zd..%zd outside the buffers (%zd and %zd bytes)", start, end, dst.len,
                     src.len);
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) { /* check everything before changing anything */
        PyObject *c = PySequence_Fast_GET_ITEM(list, i);
        if (!PyObject_TypeCheck(c, &CounterType) && !PyObject_TypeCheck(c, &FloatCounterType) &&
            !PyObject_TypeCheck(c, &GaugeType) && !PyObject_TypeCheck(c, &EnumType) &&
            !PyObject_TypeCheck(c, &SummaryType) && !PyObject_TypeCheck(c, &HistogramType) &&
            !PyObject_TypeCheck(c, &TextType)) {
            PyErr_Format(PyExc_TypeError, "not a value cell: %.100s", Py_TYPE(c)->tp_name);
            goto done;
        }
        Cell *cell = (Cell *)c;
        if (cell->offset > dst.len - cell->size || (uintptr_t)dst.buf % 8) {
            PyErr_Format(PyExc_ValueError, "value area %zd+%zd does not fit an aligned buffer of %zd bytes",
                         cell->offset, cell->size, dst.len);
            goto done;
        }
    }
    memcpy((char *)dst.buf + start, (const char *)src.buf + start, (size_t)(end - start));
    for (Py_ssize_t i = 0; i < n; i++) {
        Cell *cell = (Cell *)PySequence_Fast_GET_ITEM(list, i);
        if (cell_attach(cell, args[1], cell->offset, cell->size) < 0) /* checked above: cannot fail but for memory */
            goto done;
        Py_CLEAR(cell->pending);
    }
    out = Py_None;
    Py_INCREF(out);
done:
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    Py_DECREF(list);
    return out;
}

/* ---------------------------- Type tables --------------------------- */

#define OFFSET_GETTER {"offset", (getter)cell_get_offset, NULL, "offset of the value area in the mapping", NULL}
static PyGetSetDef cell_getset[] = {OFFSET_GETTER, {NULL, NULL, NULL, NULL, NULL}};
static PyGetSetDef histogram_getset[] = {
    OFFSET_GETTER,
    {"bounds", (getter)histogram_get_bounds, NULL, "finite upper bounds of the buckets", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
static PyGetSetDef text_getset[] = {
    OFFSET_GETTER,
    {"capacity", (getter)cell_get_capacity, NULL, "byte capacity", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

#define COMMON_METHODS                                                                                         \
    {"_rebind", (PyCFunction)cell_rebind, METH_VARARGS,                                                         \
     "_rebind(buffer[, offset[, pending]]): point the cell at the same value in another mapping; "               \
     "pending, if given, is called by the first update before it writes"}

static PyMethodDef counter_methods[] = {
    {"inc", (PyCFunction)(void (*)(void))counter_inc, METH_FASTCALL | METH_KEYWORDS, "add n (default 1)"},
    {"get", (PyCFunction)counter_get, METH_NOARGS, "current value"},
    COMMON_METHODS,
    {NULL, NULL, 0, NULL},
};
static PyMethodDef fcounter_methods[] = {
    {"inc", (PyCFunction)(void (*)(void))fcounter_inc, METH_FASTCALL | METH_KEYWORDS, "add n (default 1)"},
    {"get", (PyCFunction)float_get, METH_NOARGS, "current value"},
    COMMON_METHODS,
    {NULL, NULL, 0, NULL},
};
static PyMethodDef gauge_methods[] = {
    {"set", (PyCFunction)gauge_set, METH_O, "set the value"},
    {"inc", (PyCFunction)(void (*)(void))gauge_inc, METH_FASTCALL | METH_KEYWORDS, "add n (default 1)"},
    {"dec", (PyCFunction)(void (*)(void))gauge_dec, METH_FASTCALL | METH_KEYWORDS, "subtract n (default 1)"},
    {"get", (PyCFunction)float_get, METH_NOARGS, "current value"},
    {"set_to_current_time", (PyCFunction)gauge_set_to_current_time, METH_NOARGS, "set to the Unix time now"},
    {"track_inprogress", (PyCFunction)gauge_track_inprogress, METH_NOARGS,
     "context manager and decorator: +1 while a block or call runs"},
    {"time", (PyCFunction)gauge_time, METH_NOARGS, "context manager and decorator: set to the seconds taken"},
    COMMON_METHODS,
    {NULL, NULL, 0, NULL},
};
static PyMethodDef enum_methods[] = {
    {"_set_index", (PyCFunction)enum_set_index, METH_O, "set the state by index"},
    {"_get_index", (PyCFunction)counter_get, METH_NOARGS, "current state index"},
    COMMON_METHODS,
    {NULL, NULL, 0, NULL},
};
static PyMethodDef summary_methods[] = {
    {"observe", (PyCFunction)summary_observe, METH_O, "record one observation"},
    {"get", (PyCFunction)summary_get, METH_NOARGS, "(count, sum)"},
    {"time", (PyCFunction)observe_time, METH_NOARGS, "context manager and decorator: observe the seconds taken"},
    COMMON_METHODS,
    {NULL, NULL, 0, NULL},
};
static PyMethodDef histogram_methods[] = {
    {"observe", (PyCFunction)histogram_observe, METH_O, "record one observation"},
    {"get", (PyCFunction)histogram_get, METH_NOARGS, "(count, sum, non-cumulative bucket counts)"},
    {"time", (PyCFunction)observe_time, METH_NOARGS, "context manager and decorator: observe the seconds taken"},
    {"_bucket_index", (PyCFunction)histogram_bucket_index, METH_O, "bucket an observation falls in"},
    COMMON_METHODS,
    {NULL, NULL, 0, NULL},
};
static PyMethodDef text_methods[] = {
    {"set", (PyCFunction)text_set, METH_O, "set the text (UTF-8, cut at a character boundary)"},
    {"get", (PyCFunction)text_get, METH_NOARGS, "the text"},
    COMMON_METHODS,
    {NULL, NULL, 0, NULL},
};

static PyNumberMethods counter_as_number = {.nb_inplace_add = counter_iadd};
static PyNumberMethods fcounter_as_number = {.nb_inplace_add = fcounter_iadd};
static PyNumberMethods gauge_as_number = {.nb_inplace_add = gauge_iadd, .nb_inplace_subtract = gauge_isub};

#define CELL_TYPE(cname, pyname, newf, methods, number, getset)                                                        \
    static PyTypeObject cname = {                                                                              \
        PyVarObject_HEAD_INIT(NULL, 0).tp_name = "statmap._cells." pyname,                                     \
        .tp_basicsize = sizeof(Cell),                                                                          \
        .tp_dealloc = (destructor)cell_dealloc,                                                                \
        .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,                                                  \
        .tp_doc = "statmap value cell: " pyname,                                                               \
        .tp_methods = methods,                                                                                 \
        .tp_getset = getset,                                                                                   \
        .tp_new = newf,                                                                                        \
        .tp_as_number = number,                                                                                \
    };

CELL_TYPE(CounterType, "Counter", counter_new, counter_methods, &counter_as_number, cell_getset)
CELL_TYPE(FloatCounterType, "FloatCounter", counter_new, fcounter_methods, &fcounter_as_number, cell_getset)
CELL_TYPE(GaugeType, "Gauge", counter_new, gauge_methods, &gauge_as_number, cell_getset)
CELL_TYPE(EnumType, "Enum", enum_new, enum_methods, NULL, cell_getset)
CELL_TYPE(SummaryType, "Summary", summary_new, summary_methods, NULL, cell_getset)
CELL_TYPE(HistogramType, "Histogram", histogram_new, histogram_methods, NULL, histogram_getset)
CELL_TYPE(TextType, "Text", text_new, text_methods, NULL, text_getset)

static PyMethodDef module_methods[] = {
    {"read_latch", (PyCFunction)(void (*)(void))read_latch, METH_FASTCALL,
     "read_latch(buffer, offset, copy_size[, tries]) -> bytes of the stable copy, or None"},
    {"load_u64", (PyCFunction)(void (*)(void))load_u64, METH_FASTCALL, "load_u64(buffer, offset): acquire load"},
    {"store_u64", (PyCFunction)(void (*)(void))store_u64, METH_FASTCALL,
     "store_u64(buffer, offset, value): release store"},
    {"load_words", (PyCFunction)(void (*)(void))load_words, METH_FASTCALL,
     "load_words(buffer, offsets) -> list of u64"},
    {"sum_latches", (PyCFunction)(void (*)(void))sum_latches, METH_FASTCALL,
     "sum_latches(buffers, offsets, sizes) -> list of (count, sum, buckets...) summed across the buffers, or None"},
    {"move_cells", (PyCFunction)(void (*)(void))move_cells, METH_FASTCALL,
     "move_cells(cells, dst, src, start, end): copy src[start:end] into dst and re-point the cells there, at once"},
    {"sum_words", (PyCFunction)(void (*)(void))sum_words, METH_FASTCALL,
     "sum_words(buffers, offsets) -> list of the sums of the u64 words at each offset across the buffers"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef cells_module = {
    PyModuleDef_HEAD_INIT, "statmap._cells", "statmap value cells in C", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cells(void)
{
    PyTypeObject *types[] = {&CounterType,   &FloatCounterType, &GaugeType,  &EnumType,
                             &SummaryType,   &HistogramType,    &TextType,   &FamilyType};
    const char *names[] = {"Counter", "FloatCounter", "Gauge", "Enum", "Summary", "Histogram", "Text", "Family"};
    PyObject *m = PyModule_Create(&cells_module);
    if (!m)
        return NULL;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (PyType_Ready(types[i]) < 0) {
            Py_DECREF(m);
            return NULL;
        }
        Py_INCREF(types[i]);
        if (PyModule_AddObject(m, names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(types[i]);
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
