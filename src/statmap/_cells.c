/* statmap value cells: every store into a live mapping, and the module
 * statmap._cells (with _family.c's Family, _reads.c's bulk reads and _records.c's record decoder).
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
 * Besides the cells: store_u64 (the header words a writer publishes) and
 * move_cells (re-point every cell at once).
 */
#include "_cells.h"
#include <float.h>
#include <math.h>

/* Start rewriting copy 0, then copy 1, of a latch: see docs/format.md. */
static inline uint64_t latch_begin(uint64_t *seq)
{
    uint64_t s = load_relaxed(seq) + 1; /* odd: readers use copy 1 */
    store_release(seq, s);
    __atomic_thread_fence(__ATOMIC_RELEASE); /* seq before copy 0's stores */
    return s;
}

static inline void latch_switch(uint64_t *seq, uint64_t s)
{
    store_release(seq, s + 1);               /* even: readers use copy 0 */
    __atomic_thread_fence(__ATOMIC_RELEASE); /* seq before copy 1's stores */
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

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    uint64_t *p; /* value area */
    Py_ssize_t offset;
    Py_ssize_t size; /* bytes of the value area */
    /* type-specific */
    double *bounds;  /* histogram: finite upper bounds */
    Py_ssize_t nbounds;
    Py_ssize_t capacity; /* text: byte capacity; exponential histogram: buckets per sign */
    double zero_threshold; /* exponential histogram */
    int max_scale;         /* exponential histogram: the scale it starts at */
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

/* The stable copy of one of our own latches, into dst. Our writes happen
 * under the GIL, so none is in progress and the first try succeeds; like the
 * pure-Python cells, keep trying rather than fail. */
static inline void own_stable_copy(const Cell *self, Py_ssize_t words, uint64_t *dst)
{
    while (!stable_copy(self->p + VALUE_SEQ / 8, words, dst, PY_SSIZE_T_MAX))
        ;
}

/* get()'s room for a stable copy: on the stack when it is small. */
#define STACK_COPY_WORDS 64
#define COPY_ROOM(words, stack) ((words) <= STACK_COPY_WORDS ? (stack) : PyMem_Malloc(sizeof(uint64_t) * (size_t)(words)))
#define FREE_COPY_ROOM(room, stack)                                                                            \
    do {                                                                                                       \
        if ((room) != (stack))                                                                                 \
            PyMem_Free(room);                                                                                  \
    } while (0)

static int cell_attach(Cell *self, PyObject *buffer, Py_ssize_t offset, Py_ssize_t size)
{
    Py_buffer view;
    if (PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE | PyBUF_SIMPLE) < 0)
        return -1;
    if (offset < 0 || offset % ALIGN || size < 0 || offset > view.len - size ||
        ((uintptr_t)view.buf % ALIGN)) {
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

/* Exemplars (format 1.2, docs/format.md section 15): an update given `exemplar=` stores as usual, then calls
 * the hook that statmap.exemplars registered (it writes the exemplar's record). The slow path only: an update
 * without keywords never reaches this code. */
static PyObject *exemplar_hook;

static PyObject *set_exemplar_hook(PyObject *module, PyObject *hook)
{
    (void)module;
    Py_INCREF(hook);
    Py_XSETREF(exemplar_hook, hook);
    Py_RETURN_NONE;
}

/* (amount or NULL, exemplar or NULL) of a call with keywords; `names` the amount's accepted keywords. */
static int exemplar_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, const char *const *names,
                         PyObject **amount, PyObject **exemplar)
{
    *amount = nargs == 1 ? args[0] : NULL;
    *exemplar = NULL;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "takes at most one positional argument");
        return -1;
    }
    for (Py_ssize_t i = 0; kwnames && i < PyTuple_GET_SIZE(kwnames); i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i), **slot = NULL;
        if (!PyUnicode_CompareWithASCIIString(k, "exemplar"))
            slot = exemplar;
        for (const char *const *n = names; !slot && *n; n++)
            if (!PyUnicode_CompareWithASCIIString(k, *n))
                slot = amount;
        if (!slot) {
            PyErr_Format(PyExc_TypeError, "unexpected keyword argument %R", k);
            return -1;
        }
        if (*slot) {
            PyErr_Format(PyExc_TypeError, "argument %R given twice", k);
            return -1;
        }
        *slot = args[nargs + i];
    }
    return 0;
}

static int has_exemplar_kw(PyObject *kwnames)
{
    for (Py_ssize_t i = 0; kwnames && i < PyTuple_GET_SIZE(kwnames); i++)
        if (!PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, i), "exemplar"))
            return 1;
    return 0;
}

/* After the update: hand (cell, value, exemplar) to the hook; None means no exemplar. */
static PyObject *exemplar_after(PyObject *self, PyObject *value, PyObject *exemplar)
{
    if (!exemplar || exemplar == Py_None)
        Py_RETURN_NONE;
    if (!exemplar_hook) {
        PyErr_SetString(PyExc_RuntimeError, "exemplars need statmap.exemplars (no hook registered)");
        return NULL;
    }
    PyObject *call[3] = {self, value, exemplar};
    return PyObject_Vectorcall(exemplar_hook, call, 3, NULL);
}

static const char *const amount_names[] = {"n", "amount", "value", NULL};

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
    if (has_exemplar_kw(kwnames)) {
        PyObject *amount, *exemplar;
        if (exemplar_args(args, nargs, kwnames, amount_names, &amount, &exemplar) < 0)
            return NULL;
        PyObject *one = amount ? NULL : PyLong_FromLong(1);
        if (!amount && !one)
            return NULL;
        PyObject *out = counter_add(self, amount ? amount : one) < 0 ? NULL
                        : exemplar_after((PyObject *)self, amount ? amount : one, exemplar);
        Py_XDECREF(one);
        return out;
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
    if (has_exemplar_kw(kwnames)) {
        PyObject *amount, *exemplar, *value;
        if (exemplar_args(args, nargs, kwnames, amount_names, &amount, &exemplar) < 0 ||
            parse_amount(&amount, amount ? 1 : 0, NULL, &d, 1.0) < 0 || fcounter_add(self, NULL, d, 0) < 0 ||
            !(value = PyFloat_FromDouble(d)))
            return NULL;
        PyObject *out = exemplar_after((PyObject *)self, value, exemplar);
        Py_DECREF(value);
        return out;
    }
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

/* Lifetime min and max (format 1.2, docs/format.md 5.1): two f64 words right
 * after the latch, stored before latch_begin's release so that a reader that
 * sees an observation counted sees it in them too. Writers are serialised by
 * the GIL (as for the latch), so a load and a store suffice: no CAS loop. */
#define EXTREMES_SIZE 16
static inline void note_extremes(uint64_t *mm, double d, int first)
{
    if (first || d < bits_dbl(load_relaxed(mm)))
        store_relaxed(mm, dbl_bits(d));
    if (first || d > bits_dbl(load_relaxed(mm + 1)))
        store_relaxed(mm + 1, dbl_bits(d));
}

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
    uint64_t *seq = self->p + VALUE_SEQ / 8;
    uint64_t *c0 = self->p + VALUE_COPIES / 8, *c1 = c0 + SUMMARY_COPY_SIZE / 8;
    note_extremes(c1 + SUMMARY_COPY_SIZE / 8, d, load_relaxed(c1 + COPY_COUNT) == 0);
    uint64_t s = latch_begin(seq);
    store_relaxed(c0 + COPY_COUNT, load_relaxed(c1 + COPY_COUNT) + 1);
    store_relaxed(c0 + COPY_SUM, dbl_bits(bits_dbl(load_relaxed(c1 + COPY_SUM)) + d));
    latch_switch(seq, s);
    store_relaxed(c1 + COPY_COUNT, load_relaxed(c0 + COPY_COUNT));
    store_relaxed(c1 + COPY_SUM, load_relaxed(c0 + COPY_SUM));
    Py_RETURN_NONE;
}

static PyObject *summary_get(Cell *self, PyObject *unused)
{
    (void)unused;
    uint64_t c[SUMMARY_COPY_SIZE / 8];
    own_stable_copy(self, SUMMARY_COPY_SIZE / 8, c);
    return Py_BuildValue("(Kd)", (unsigned long long)c[COPY_COUNT], bits_dbl(c[COPY_SUM]));
}

static PyObject *summary_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    (void)kw;
    return simple_new(type, args, LATCH_SIZE(SUMMARY_COPY_SIZE) + EXTREMES_SIZE);
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
    if (cell_attach(self, buffer, offset, LATCH_SIZE(HISTOGRAM_COPY_SIZE(n)) + EXTREMES_SIZE) < 0) {
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
    Py_ssize_t b = COPY_BUCKETS + bucket_of(self, d), words = HISTOGRAM_COPY_WORDS(self->nbounds);
    uint64_t *seq = self->p + VALUE_SEQ / 8;
    uint64_t *c0 = self->p + VALUE_COPIES / 8, *c1 = c0 + words;
    /* copy 1 is complete; build copy 0 from it, then bring copy 1 level */
    uint64_t count = load_relaxed(c1 + COPY_COUNT) + 1;
    uint64_t sum = dbl_bits(bits_dbl(load_relaxed(c1 + COPY_SUM)) + d);
    uint64_t bucket = load_relaxed(c1 + b) + 1;
    note_extremes(c1 + words, d, count == 1);
    uint64_t s = latch_begin(seq);
    store_relaxed(c0 + COPY_COUNT, count);
    store_relaxed(c0 + COPY_SUM, sum);
    store_relaxed(c0 + b, bucket);
    latch_switch(seq, s);
    store_relaxed(c1 + COPY_COUNT, count);
    store_relaxed(c1 + COPY_SUM, sum);
    store_relaxed(c1 + b, bucket);
    Py_RETURN_NONE;
}

/* observe(v) and observe(v, exemplar=...): without keywords exactly histogram_observe. */
static PyObject *histogram_observe_kw(Cell *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs == 1 && !kwnames)
        return histogram_observe(self, args[0]);
    static const char *const names[] = {"value", NULL};
    PyObject *value, *exemplar, *r;
    if (exemplar_args(args, nargs, kwnames, names, &value, &exemplar) < 0)
        return NULL;
    if (!value) {
        PyErr_SetString(PyExc_TypeError, "observe() missing its value");
        return NULL;
    }
    if (!(r = histogram_observe(self, value)))
        return NULL;
    Py_DECREF(r);
    return exemplar_after((PyObject *)self, value, exemplar);
}

static PyObject *histogram_get(Cell *self, PyObject *unused)
{
    (void)unused;
    Py_ssize_t n = self->nbounds + 1, words = HISTOGRAM_COPY_WORDS(self->nbounds);
    uint64_t stack[STACK_COPY_WORDS], *c = COPY_ROOM(words, stack);
    if (!c)
        return PyErr_NoMemory();
    own_stable_copy(self, words, c);
    PyObject *out = NULL, *buckets = PyTuple_New(n);
    for (Py_ssize_t i = 0; buckets && i < n; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(c[COPY_BUCKETS + i]);
        if (!v) {
            Py_CLEAR(buckets);
            break;
        }
        PyTuple_SET_ITEM(buckets, i, v);
    }
    if (buckets)
        out = Py_BuildValue("(KdN)", (unsigned long long)c[COPY_COUNT], bits_dbl(c[COPY_SUM]), buckets);
    FREE_COPY_ROOM(c, stack);
    return out;
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

/* ------------------- Exponential histogram (format 1.2) -------------------
 * docs/format.md section 14; the pure twin is _pycells_exp.py and the two
 * must place every observation alike (same tables, same libm log above scale 8, same operations). */

#include "_exp_index.h" /* the bucket index and the downscaling plan, shared with clients/c */

#define EXP_HEAD 10 /* count, sum, min, max, zero, scale, pos lo, pos len, neg lo, neg len */
#define EXP_MAX_BUCKETS 2048

static PyObject *exphist_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    PyObject *buffer;
    Py_ssize_t offset, m;
    double zt = 0.0;
    int max_scale = 8;
    (void)kw;
    if (!PyArg_ParseTuple(args, "Onn|di", &buffer, &offset, &m, &zt, &max_scale))
        return NULL;
    if (m < 1 || m > EXP_MAX_BUCKETS || !(zt >= 0 && isfinite(zt)) || max_scale < EXP_MIN_SCALE ||
        max_scale > EXP_MAX_SCALE) {
        PyErr_Format(PyExc_ValueError,
                     "max_buckets must be 1..%d, zero_threshold finite and not negative, max_scale %d..%d",
                     EXP_MAX_BUCKETS, EXP_MIN_SCALE, EXP_MAX_SCALE);
        return NULL;
    }
    Cell *self = (Cell *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->capacity = m;
    self->zero_threshold = zt;
    self->max_scale = max_scale;
    if (cell_attach(self, buffer, offset, LATCH_SIZE(8 * (EXP_HEAD + 2 * m))) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* The rare path: downscale until idx fits, rewriting all of copy 0 from copy
 * 1 under the latch, then copy 1 from copy 0. head[0..4] are the new count,
 * sum, min, max bits and zero count. */
static void exphist_rescale(uint64_t *seq, uint64_t *c0, uint64_t *c1, Py_ssize_t m, const uint64_t *head, int pos,
                            int64_t scale, int64_t idx, int64_t nl, int64_t nh)
{
    Py_ssize_t words = EXP_HEAD + 2 * m;
    int64_t first[2], len[2];
    for (int sign = 0; sign < 2; sign++)
        first[sign] = (int64_t)load_relaxed(c1 + 6 + 2 * sign), len[sign] = (int64_t)load_relaxed(c1 + 7 + 2 * sign);
    exp_plan_t p = exp_downscale(m, pos, scale, idx, nl, nh, first, len);
    uint64_t s = latch_begin(seq);
    for (int w = 0; w < 5; w++)
        store_relaxed(c0 + w, head[w]);
    store_relaxed(c0 + 5, (uint64_t)(scale - p.k));
    for (Py_ssize_t w = EXP_HEAD; w < words; w++)
        store_relaxed(c0 + w, 0);
    for (int sign = 0; sign < 2; sign++) {
        uint64_t *src = c1 + EXP_HEAD + sign * m, *dst = c0 + EXP_HEAD + sign * m;
        for (int64_t j = 0; j < p.n[sign]; j++) {
            uint64_t c = load_relaxed(src + mod_m(first[sign] + j, m));
            uint64_t *to = dst + mod_m(shr_floor(first[sign] + j, p.k), m);
            if (c)
                store_relaxed(to, load_relaxed(to) + c);
        }
        int on = p.n[sign] || sign == p.side;
        store_relaxed(c0 + 6 + 2 * sign, on ? (uint64_t)p.lo[sign] : 0);
        store_relaxed(c0 + 7 + 2 * sign, on ? (uint64_t)(p.hi[sign] - p.lo[sign] + 1) : 0);
    }
    uint64_t *b = c0 + EXP_HEAD + p.side * m + mod_m(p.i2, m);
    store_relaxed(b, load_relaxed(b) + 1);
    latch_switch(seq, s);
    for (Py_ssize_t w = 0; w < words; w++)
        store_relaxed(c1 + w, load_relaxed(c0 + w));
}

static PyObject *exphist_observe(Cell *self, PyObject *arg)
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
    Py_ssize_t m = self->capacity;
    uint64_t *seq = self->p + VALUE_SEQ / 8;
    uint64_t *c0 = self->p + VALUE_COPIES / 8, *c1 = c0 + EXP_HEAD + 2 * m;
    uint64_t old = load_relaxed(c1 + 0);
    double mn = bits_dbl(load_relaxed(c1 + 2)), mx = bits_dbl(load_relaxed(c1 + 3));
    uint64_t head[5] = {old + 1, dbl_bits(bits_dbl(load_relaxed(c1 + 1)) + d), dbl_bits(!old || d < mn ? d : mn),
                        dbl_bits(!old || d > mx ? d : mx), load_relaxed(c1 + 4)};
    double a = fabs(d);
    if (a <= self->zero_threshold) {
        head[4]++;
        uint64_t s = latch_begin(seq);
        for (int w = 0; w < 5; w++)
            store_relaxed(c0 + w, head[w]);
        latch_switch(seq, s);
        for (int w = 0; w < 5; w++)
            store_relaxed(c1 + w, head[w]);
        Py_RETURN_NONE;
    }
    int pos = d > 0;
    int64_t scale = (int64_t)load_relaxed(c1 + 5);
    uint64_t plen = load_relaxed(c1 + 7), nlen = load_relaxed(c1 + 9);
    if (!plen && !nlen)
        scale = self->max_scale;
    else if (scale < EXP_MIN_SCALE || scale > EXP_MAX_SCALE) /* (our own file: only corruption does this) */
        scale = EXP_MIN_SCALE;
    int64_t idx = exp_index(a <= DBL_MAX ? a : DBL_MAX, (int)scale);
    Py_ssize_t lo_w = pos ? 6 : 8;
    int64_t lo = (int64_t)load_relaxed(c1 + lo_w), n = (int64_t)(pos ? plen : nlen);
    int64_t nl = idx, nh = idx;
    if (n > 0) {
        nl = lo < idx ? lo : idx;
        nh = lo + n - 1 > idx ? lo + n - 1 : idx;
    }
    if (n < 0 || n > m || nh - nl >= m) {
        exphist_rescale(seq, c0, c1, m, head, pos, scale, idx, nl, nh);
        Py_RETURN_NONE;
    }
    Py_ssize_t slot = EXP_HEAD + (pos ? 0 : m) + mod_m(idx, m);
    uint64_t bucket = load_relaxed(c1 + slot) + 1, len = (uint64_t)(nh - nl + 1);
    uint64_t s = latch_begin(seq);
    for (int w = 0; w < 4; w++)
        store_relaxed(c0 + w, head[w]);
    store_relaxed(c0 + 5, (uint64_t)scale);
    store_relaxed(c0 + lo_w, (uint64_t)nl);
    store_relaxed(c0 + lo_w + 1, len);
    store_relaxed(c0 + slot, bucket);
    latch_switch(seq, s);
    for (int w = 0; w < 4; w++)
        store_relaxed(c1 + w, head[w]);
    store_relaxed(c1 + 5, (uint64_t)scale);
    store_relaxed(c1 + lo_w, (uint64_t)nl);
    store_relaxed(c1 + lo_w + 1, len);
    store_relaxed(c1 + slot, bucket);
    Py_RETURN_NONE;
}

/* One sign's (offset, counts) from a stable copy. */
static PyObject *exphist_side(const uint64_t *c, Py_ssize_t m, int sign)
{
    int64_t lo = (int64_t)c[6 + 2 * sign];
    uint64_t len = c[7 + 2 * sign];
    Py_ssize_t n = len > (uint64_t)m ? m : (Py_ssize_t)len;
    PyObject *counts = PyTuple_New(n);
    for (Py_ssize_t j = 0; counts && j < n; j++) {
        PyObject *v = PyLong_FromUnsignedLongLong(c[EXP_HEAD + sign * m + mod_m(lo + j, m)]);
        if (!v) {
            Py_CLEAR(counts);
            break;
        }
        PyTuple_SET_ITEM(counts, j, v);
    }
    return counts ? Py_BuildValue("(LN)", (long long)lo, counts) : NULL;
}

static PyObject *exphist_get(Cell *self, PyObject *unused)
{
    (void)unused;
    Py_ssize_t m = self->capacity, words = EXP_HEAD + 2 * m;
    uint64_t stack[STACK_COPY_WORDS], *c = COPY_ROOM(words, stack);
    if (!c)
        return PyErr_NoMemory();
    own_stable_copy(self, words, c);
    PyObject *pos = exphist_side(c, m, 0), *neg = pos ? exphist_side(c, m, 1) : NULL, *out = NULL;
    if (pos && neg)
        out = Py_BuildValue("(KdddLKNN)", (unsigned long long)c[0], bits_dbl(c[1]), bits_dbl(c[2]), bits_dbl(c[3]),
                            (long long)(int64_t)c[5], (unsigned long long)c[4], pos, neg);
    else {
        Py_XDECREF(pos);
        Py_XDECREF(neg);
    }
    FREE_COPY_ROOM(c, stack);
    return out;
}

static PyObject *exphist_get_max_buckets(Cell *self, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(self->capacity);
}

static PyObject *exphist_get_zero_threshold(Cell *self, void *closure)
{
    (void)closure;
    return PyFloat_FromDouble(self->zero_threshold);
}

/* -------------------------------- Text ------------------------------ */

static PyObject *text_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    PyObject *buffer;
    Py_ssize_t offset, capacity;
    (void)kw;
    if (!PyArg_ParseTuple(args, "Onn", &buffer, &offset, &capacity))
        return NULL;
    if (capacity < 0 || capacity > MAX_TEXT_CAPACITY) {
        PyErr_Format(PyExc_ValueError, "text capacity must be 0..%d bytes", MAX_TEXT_CAPACITY);
        return NULL;
    }
    Cell *self = (Cell *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->capacity = capacity;
    if (cell_attach(self, buffer, offset, LATCH_SIZE(TEXT_COPY_SIZE(capacity))) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* Write len and bytes into one copy, zeroing what an older, longer text left.
 * The old length comes from the shared file: never trust it past the capacity. */
static void text_fill(uint64_t *copy, Py_ssize_t capacity, const char *data, Py_ssize_t len)
{
    uint64_t old = load_relaxed(copy + TEXT_LENGTH);
    Py_ssize_t old_words = (Py_ssize_t)((old < (uint64_t)capacity ? old : (uint64_t)capacity) + 7) / 8;
    Py_ssize_t words = (len + 7) / 8;
    for (Py_ssize_t w = 0; w < words; w++) {
        uint64_t v = 0;
        Py_ssize_t n = len - w * 8 < 8 ? len - w * 8 : 8;
        memcpy(&v, data + w * 8, (size_t)n);
        store_relaxed(copy + TEXT_BYTES + w, v);
    }
    for (Py_ssize_t w = words; w < old_words; w++)
        store_relaxed(copy + TEXT_BYTES + w, 0);
    store_relaxed(copy + TEXT_LENGTH, (uint64_t)len);
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
    Py_ssize_t words = TEXT_COPY_WORDS(self->capacity);
    uint64_t *seq = self->p + VALUE_SEQ / 8;
    uint64_t *c0 = self->p + VALUE_COPIES / 8, *c1 = c0 + words;
    uint64_t s = latch_begin(seq);
    text_fill(c0, self->capacity, data, len);
    latch_switch(seq, s);
    text_fill(c1, self->capacity, data, len);
    Py_RETURN_NONE;
}

static PyObject *text_get(Cell *self, PyObject *unused)
{
    (void)unused;
    Py_ssize_t words = TEXT_COPY_WORDS(self->capacity);
    uint64_t stack[STACK_COPY_WORDS], *c = COPY_ROOM(words, stack);
    if (!c)
        return PyErr_NoMemory();
    own_stable_copy(self, words, c);
    uint64_t len = c[TEXT_LENGTH];
    if (len > (uint64_t)self->capacity)
        len = (uint64_t)self->capacity;
    PyObject *out = PyUnicode_DecodeUTF8((const char *)(c + TEXT_BYTES), (Py_ssize_t)len, "replace");
    FREE_COPY_ROOM(c, stack);
    return out;
}

static PyObject *cell_get_capacity(Cell *self, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(self->capacity);
}

/* ------------------------------ Stores ------------------------------ */

/* store_u64(buffer, offset, value): a release store, for the header words a
 * writer publishes (state, end, capacity; load_u64 reads them). */
static PyObject *store_u64(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    uint64_t *word;
    (void)mod;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "store_u64(buffer, offset, value)");
        return NULL;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(args[2]);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (word_at(args[0], args[1], 1, &view, &word) < 0)
        return NULL;
    store_release(word, (uint64_t)v);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyTypeObject CounterType, FloatCounterType, GaugeType, EnumType, SummaryType, HistogramType, TextType,
    ExpHistogramType;

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
            !PyObject_TypeCheck(c, &TextType) && !PyObject_TypeCheck(c, &ExpHistogramType)) {
            PyErr_Format(PyExc_TypeError, "not a value cell: %.100s", Py_TYPE(c)->tp_name);
            goto done;
        }
        Cell *cell = (Cell *)c;
        if (cell->offset > dst.len - cell->size || (uintptr_t)dst.buf % ALIGN) {
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
static PyGetSetDef exphist_getset[] = {
    OFFSET_GETTER,
    {"max_buckets", (getter)exphist_get_max_buckets, NULL, "bucket slots per sign", NULL},
    {"zero_threshold", (getter)exphist_get_zero_threshold, NULL, "|v| at most this counts in the zero bucket", NULL},
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
    {"observe", (PyCFunction)(void (*)(void))histogram_observe_kw, METH_FASTCALL | METH_KEYWORDS,
     "record one observation (exemplar=: docs/format.md section 15)"},
    {"get", (PyCFunction)histogram_get, METH_NOARGS, "(count, sum, non-cumulative bucket counts)"},
    {"time", (PyCFunction)observe_time, METH_NOARGS, "context manager and decorator: observe the seconds taken"},
    COMMON_METHODS,
    {NULL, NULL, 0, NULL},
};
static PyMethodDef exphist_methods[] = {
    {"observe", (PyCFunction)exphist_observe, METH_O, "record one observation"},
    {"get", (PyCFunction)exphist_get, METH_NOARGS,
     "(count, sum, min, max, scale, zero count, (positive offset, counts), (negative offset, counts))"},
    {"time", (PyCFunction)observe_time, METH_NOARGS, "context manager and decorator: observe the seconds taken"},
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
CELL_TYPE(ExpHistogramType, "ExpHistogram", exphist_new, exphist_methods, NULL, exphist_getset)

static PyMethodDef module_methods[] = {
    {"store_u64", (PyCFunction)(void (*)(void))store_u64, METH_FASTCALL,
     "store_u64(buffer, offset, value): release store"},
    {"set_exemplar_hook", (PyCFunction)set_exemplar_hook, METH_O, "set_exemplar_hook(f): f(cell, value, exemplar)"},
    {"move_cells", (PyCFunction)(void (*)(void))move_cells, METH_FASTCALL,
     "move_cells(cells, dst, src, start, end): copy src[start:end] into dst and re-point the cells there, at once"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef cells_module = {
    PyModuleDef_HEAD_INIT, "statmap._cells", "statmap value cells in C", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

/* The format's sizes this file and _reads.c use, exported so that the tests
 * can check them against _layout.py. */
static const struct {
    const char *name;
    long value;
} layout_constants[] = {
    {"ALIGN", ALIGN},
    {"VALUE_SEQ", VALUE_SEQ},
    {"VALUE_COPIES", VALUE_COPIES},
    {"SUMMARY_COPY_SIZE", SUMMARY_COPY_SIZE},
    {"MAX_PARAMS", MAX_PARAMS},
    {"MAX_TEXT_CAPACITY", MAX_TEXT_CAPACITY},
};

PyMODINIT_FUNC PyInit__cells(void)
{
    PyTypeObject *types[] = {&CounterType, &FloatCounterType, &GaugeType, &EnumType,
                             &SummaryType, &HistogramType,    &TextType,  &statmap_FamilyType, &ExpHistogramType};
    const char *names[] = {"Counter", "FloatCounter", "Gauge", "Enum", "Summary", "Histogram", "Text", "Family",
                           "ExpHistogram"};
    PyObject *m = PyModule_Create(&cells_module);
    if (!m)
        return NULL;
    if (PyModule_AddFunctions(m, statmap_read_methods) < 0 || PyModule_AddFunctions(m, statmap_record_methods) < 0)
        goto fail;
    for (size_t i = 0; i < sizeof(layout_constants) / sizeof(layout_constants[0]); i++)
        if (PyModule_AddIntConstant(m, layout_constants[i].name, layout_constants[i].value) < 0)
            goto fail;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (PyType_Ready(types[i]) < 0)
            goto fail;
        Py_INCREF(types[i]);
        if (PyModule_AddObject(m, names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(types[i]);
            goto fail;
        }
    }
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
