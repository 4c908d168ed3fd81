/* statmap's labelled-family lookup: labels(...) of a metric declared with
 * labels. A write-path helper but not a value cell: it never touches the
 * mapping, only a dict of the series already created (see metrics.py). */
#include "_cells.h"
#include <structmember.h>

/* A labelled metric's child lookup: labels(*values) or labels(**by_name) is
 * one dict lookup on the tuple of values in label order; a miss calls
 * create(values, by_name) (Python), which makes the child and caches it.
 *
 * Before that, the last hit: when every value is the very object of the
 * last looked-up key (a call site passing the same strings: literals,
 * interned names), its child is returned with no tuple built, hashed or
 * looked up. Sound because an entry of `children` never changes once made
 * (metrics.py only adds; equal values always map to the same series) and
 * `last_key` owns its values, so their addresses cannot be reused. */
typedef struct {
    PyObject_HEAD
    PyObject *name;
    PyObject *label_names; /* tuple of str */
    PyObject *children;    /* dict: tuple of values -> series */
    PyObject *create;
    PyObject *last_key;    /* tuple of the last hit's values, in label order, or NULL */
    PyObject *last_child;  /* its series, or NULL */
} Family;

static void family_dealloc(Family *self)
{
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->name);
    Py_CLEAR(self->label_names);
    Py_CLEAR(self->children);
    Py_CLEAR(self->create);
    Py_CLEAR(self->last_key);
    Py_CLEAR(self->last_child);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int family_traverse(Family *self, visitproc visit, void *arg)
{
    Py_VISIT(self->name);
    Py_VISIT(self->label_names);
    Py_VISIT(self->children);
    Py_VISIT(self->create);
    Py_VISIT(self->last_key);
    Py_VISIT(self->last_child);
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

/* The last hit's child if these arguments are its values, object for object; else NULL (no error). */
static PyObject *family_last(Family *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *last = self->last_key;
    if (!last)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(last);
    if (!kwnames) {
        if (nargs != n)
            return NULL;
        for (Py_ssize_t i = 0; i < n; i++)
            if (args[i] != PyTuple_GET_ITEM(last, i))
                return NULL;
        return self->last_child;
    }
    if (nargs || PyTuple_GET_SIZE(kwnames) != n)
        return NULL;
    for (Py_ssize_t k = 0; k < n; k++) { /* names compared by identity: a miss just takes the usual way */
        PyObject *kname = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t pos = -1;
        for (Py_ssize_t i = 0; i < n; i++)
            if (PyTuple_GET_ITEM(self->label_names, i) == kname) {
                pos = i;
                break;
            }
        if (pos < 0 || args[k] != PyTuple_GET_ITEM(last, pos))
            return NULL;
    }
    return self->last_child;
}

static PyObject *family_labels(Family *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *last = family_last(self, args, nargs, kwnames);
    if (last) {
        Py_INCREF(last);
        return last;
    }
    PyObject *key = family_key(self, args, nargs, kwnames);
    if (key) {
        PyObject *child = PyDict_GetItemWithError(self->children, key);
        if (child) {
            /* remember it: both fields set before the old ones are released (their
             * deallocation may run Python code that calls labels() again) */
            PyObject *old_key = self->last_key, *old_child = self->last_child;
            Py_INCREF(child);
            self->last_key = key; /* takes our reference */
            self->last_child = child;
            Py_XDECREF(old_key);
            Py_XDECREF(old_child);
            Py_INCREF(child);
            return child;
        }
        Py_DECREF(key);
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
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject statmap_FamilyType = {
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
