/* statmap's record decoder: a record's metadata (docs/format.md section 5)
 * read from a file's bytes with every check _layout.decode_record makes up to
 * its string table, for a reader's first pass over a file (record_table.py).
 * The type's own checks stay in _layout (checked_type, build_record); the bulk
 * builder here takes only records whose shape _layout has already checked
 * and that need no further check, and stops before any other. Every length
 * comes from the file, so each is checked against the buffer before use.
 */
#include "_cells.h"

static uint32_t le32(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint16_t le16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }

typedef struct {
    Py_ssize_t size, mtype, flags, aggregation, value_rel, vsize, label_count, param_count, string_count,
        strings_size, capacity;
} head_t;

/* limits: _layout.RECORD_LIMITS (header size, max record size, max params, max strings, max string). */
static int read_limits(PyObject *limits, Py_ssize_t lim[5])
{
    if (!PyTuple_Check(limits) || PyTuple_GET_SIZE(limits) != 5) {
        PyErr_SetString(PyExc_TypeError, "limits: a tuple of 5 ints");
        return -1;
    }
    for (int k = 0; k < 5; k++)
        lim[k] = PyLong_AsSsize_t(PyTuple_GET_ITEM(limits, k));
    if (PyErr_Occurred())
        return -1;
    if (lim[0] != 40) {
        PyErr_SetString(PyExc_ValueError, "this build reads 40-byte record headers");
        return -1;
    }
    return 0;
}

/* The record header at offset, checked as decode_record checks it: 0, or -1 when it breaks a check. */
static int read_head(const unsigned char *b, Py_ssize_t len, Py_ssize_t offset, Py_ssize_t end,
                     const Py_ssize_t lim[5], head_t *r)
{
    if (offset < 0 || end < 0 || offset % ALIGN || offset > end - 40 || end > len)
        return -1;
    const unsigned char *h = b + offset;
    r->size = le32(h), r->mtype = le16(h + 4), r->flags = le16(h + 6), r->aggregation = le16(h + 8);
    r->value_rel = le32(h + 12), r->vsize = le32(h + 16), r->label_count = le32(h + 20);
    r->param_count = le32(h + 24), r->string_count = le32(h + 28), r->strings_size = le32(h + 32);
    r->capacity = le32(h + 36);
    if (r->size < 40 || r->size % ALIGN || r->size > lim[1] || offset + r->size > end)
        return -1;
    if (r->param_count > lim[2] || r->string_count > lim[3] || r->string_count < 3 + 2 * r->label_count)
        return -1;
    Py_ssize_t params_end = 40 + 8 * r->param_count;
    if (params_end + r->strings_size > r->size)
        return -1;
    if (r->value_rel % ALIGN || r->value_rel < params_end + r->strings_size || r->value_rel + r->vsize > r->size)
        return -1;
    return 0;
}

/* The strings of the record decoded last in a run, by position: a record's name, help, unit and label
 * names usually repeat the previous record's (one family's series in a row), and are shared, not decoded
 * again (the same immutable objects; the bytes are compared first). */
#define SAME_STRINGS 16
typedef struct {
    PyObject *list;                 /* the previous record's strings (a reference), or NULL */
    const unsigned char *at[SAME_STRINGS];
    Py_ssize_t len[SAME_STRINGS];
} previous_t;

/* Its bounds (a tuple) and strings (a list): 0; 1 when the string table breaks a check; -1 on error.
 * prev: NULL, or the previous record's strings (read and updated). */
static int read_body(const unsigned char *h, const head_t *r, const Py_ssize_t lim[5], PyObject **bounds_out,
                     PyObject **strings_out, previous_t *prev)
{
    PyObject *bounds = PyTuple_New(r->param_count), *strings = PyList_New(r->string_count);
    int rc = -1;
    if (!bounds || !strings)
        goto out;
    for (Py_ssize_t i = 0; i < r->param_count; i++) {
        uint64_t bits = 0;
        for (int k = 7; k >= 0; k--)
            bits = bits << 8 | h[40 + 8 * i + k];
        PyObject *f = PyFloat_FromDouble(bits_dbl(bits));
        if (!f)
            goto out;
        PyTuple_SET_ITEM(bounds, i, f);
    }
    Py_ssize_t pos = 40 + 8 * r->param_count, stop = pos + r->strings_size;
    for (Py_ssize_t i = 0; i < r->string_count; i++) {
        if (pos + 4 > stop) {
            rc = 1;
            goto out;
        }
        Py_ssize_t length = le32(h + pos);
        pos += 4;
        if (length > lim[4] || pos + length > stop) {
            rc = 1;
            goto out;
        }
        PyObject *str = NULL;
        if (prev && prev->list && i < SAME_STRINGS && i < PyList_GET_SIZE(prev->list) && prev->len[i] == length &&
            memcmp(prev->at[i], h + pos, (size_t)length) == 0) {
            str = PyList_GET_ITEM(prev->list, i);
            Py_INCREF(str);
        } else if (!(str = PyUnicode_DecodeUTF8((const char *)h + pos, length, "replace")))
            goto out;
        PyList_SET_ITEM(strings, i, str);
        if (prev && i < SAME_STRINGS)
            prev->at[i] = h + pos, prev->len[i] = length;
        pos += length;
    }
    if (pos != stop) {
        rc = 1;
        goto out;
    }
    if (prev) {
        Py_XSETREF(prev->list, strings);
        Py_INCREF(strings);
    }
    *bounds_out = bounds, *strings_out = strings;
    return 0;
out:
    Py_XDECREF(bounds);
    Py_XDECREF(strings);
    return rc;
}

/* _record_fields(buffer, offset, end, limits): the fields of the record at
 * offset as _layout.decode_record reads them up to its string table (the
 * same checks, in the same order), its bounds and strings decoded: (size,
 * mtype, flags, aggregation, value_rel, vsize, label_count, param_count,
 * capacity, bounds, strings); None when any check fails or the record is
 * not inside the buffer, and the caller then takes decode_record, which
 * says why. The type's own checks: record_table.record_from_fields. */
static PyObject *record_fields(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t lim[5];
    head_t r;
    (void)mod;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "_record_fields(buffer, offset, end, limits)");
        return NULL;
    }
    Py_ssize_t offset = PyLong_AsSsize_t(args[1]), end = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred() || read_limits(args[3], lim) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *out = NULL, *bounds = NULL, *strings = NULL;
    int rc = read_head(view.buf, view.len, offset, end, lim, &r);
    if (rc == 0)
        rc = read_body((const unsigned char *)view.buf + offset, &r, lim, &bounds, &strings, NULL);
    if (rc == 0)
        out = Py_BuildValue("(nnnnnnnnnNN)", r.size, r.mtype, r.flags, r.aggregation, r.value_rel, r.vsize,
                            r.label_count, r.param_count, r.capacity, bounds, strings);
    else if (rc > 0 || (rc < 0 && !PyErr_Occurred())) {
        out = Py_None;
        Py_INCREF(out);
    }
    PyBuffer_Release(&view);
    return out;
}

/* A frozen dataclass instance (no __init__, no slots) given its fields whole:
 * object.__new__(cls), then each field stored past the class's __setattr__,
 * in field order (as its __init__ would: the instance keeps its attributes
 * inline, with the keys its class shares, not in a dict of its own). */
static PyObject *built(PyObject *cls, PyObject *names, PyObject *const *values, Py_ssize_t n)
{
    static PyObject *no_args;
    if (!no_args && !(no_args = PyTuple_New(0)))
        return NULL;
    if (!PyType_Check(cls) || !PyTuple_Check(names) || PyTuple_GET_SIZE(names) != n) {
        PyErr_SetString(PyExc_TypeError, "_decode_run: config names a class and its field names");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (!values[i])
            return NULL;
    PyObject *obj = PyBaseObject_Type.tp_new((PyTypeObject *)cls, no_args, NULL);
    for (Py_ssize_t i = 0; obj && i < n; i++)
        if (PyObject_GenericSetAttr(obj, PyTuple_GET_ITEM(names, i), values[i]) < 0)
            Py_CLEAR(obj);
    return obj;
}

/* One record built whole: (metadata bytes, Record) in *out; 1 when the record
 * is not one to build here (the caller stops before it); -1 on error. */
static int build_one(const unsigned char *b, Py_ssize_t len, Py_ssize_t offset, Py_ssize_t end,
                     const Py_ssize_t lim[5], PyObject *config, PyObject *shapes, PyObject *cache,
                     Py_ssize_t *budget, previous_t *prev, PyObject **key_out, PyObject **record_out,
                     Py_ssize_t *size)
{
    head_t r;
    if (read_head(b, len, offset, end, lim, &r) < 0 || r.value_rel > *budget)
        return 1; /* broken, or over the metadata budget: the caller's full path says why */
    const unsigned char *h = b + offset;
    PyObject *shape = Py_BuildValue("(nnnnn)", r.mtype, r.flags, r.capacity, r.vsize, r.param_count);
    if (!shape)
        return -1;
    PyObject *known = PyDict_GetItemWithError(shapes, shape); /* borrowed */
    Py_DECREF(shape);
    if (!known)
        return PyErr_Occurred() ? -1 : 1; /* a shape _layout has not checked yet */
    int is_known = PyObject_IsTrue(known);
    if (is_known < 0)
        return -1;
    Py_ssize_t extras_count = r.string_count - 3 - 2 * r.label_count;
    PyObject *checked = PyTuple_GET_ITEM(config, 1);
    if (is_known && (extras_count || r.param_count))
        return 1; /* bounds or extra strings: _layout checks them */
    if (is_known) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(checked); i++)
            if (PyLong_AsSsize_t(PyTuple_GET_ITEM(checked, i)) == r.mtype)
                return 1; /* a type _layout checks even without them */
        if (PyErr_Occurred())
            return -1;
    }
    PyObject *key = PyBytes_FromStringAndSize((const char *)h, r.value_rel);
    if (!key)
        return -1;
    int seen = PyDict_Contains(cache, key);
    if (seen != 0) {
        Py_DECREF(key);
        return seen < 0 ? -1 : 1; /* decoded before: the caller shares that one */
    }
    PyObject *bounds = NULL, *strings = NULL, *labels = NULL, *extras = NULL, *spec = NULL, *record = NULL;
    int rc = read_body(h, &r, lim, &bounds, &strings, prev);
    if (rc != 0)
        goto done;
    rc = -1;
    labels = PyTuple_New(r.label_count);
    extras = PyList_GetSlice(strings, 3 + 2 * r.label_count, r.string_count);
    if (!labels || !extras)
        goto done;
    PyObject *list = extras;
    extras = PyList_AsTuple(list);
    Py_DECREF(list);
    if (!extras)
        goto done;
    for (Py_ssize_t i = 0; i < r.label_count; i++) {
        PyObject *pair = PyTuple_Pack(2, PyList_GET_ITEM(strings, 3 + 2 * i), PyList_GET_ITEM(strings, 4 + 2 * i));
        if (!pair)
            goto done;
        PyTuple_SET_ITEM(labels, i, pair);
    }
    PyObject *sv[10] = {PyLong_FromSsize_t(r.mtype), PyList_GET_ITEM(strings, 0), PyList_GET_ITEM(strings, 1),
                        PyList_GET_ITEM(strings, 2), labels, PyLong_FromSsize_t(r.flags),
                        PyLong_FromSsize_t(r.aggregation), bounds, PyLong_FromSsize_t(r.capacity), extras};
    spec = built(PyTuple_GET_ITEM(config, 2), PyTuple_GET_ITEM(config, 3), sv, 10);
    Py_XDECREF(sv[0]), Py_XDECREF(sv[5]), Py_XDECREF(sv[6]), Py_XDECREF(sv[8]);
    if (!spec)
        goto done;
    PyObject *rv[6] = {PyLong_FromSsize_t(offset), PyLong_FromSsize_t(r.size), spec,
                       PyLong_FromSsize_t(offset + r.value_rel), PyLong_FromSsize_t(r.vsize), PyBool_FromLong(is_known)};
    record = built(PyTuple_GET_ITEM(config, 4), PyTuple_GET_ITEM(config, 5), rv, 6);
    Py_XDECREF(rv[0]), Py_XDECREF(rv[1]), Py_XDECREF(rv[3]), Py_XDECREF(rv[4]), Py_XDECREF(rv[5]);
    if (!record)
        goto done;
    *key_out = key, *record_out = record; /* the references go to the caller */
    key = record = NULL;
    *size = r.size;
    *budget -= r.value_rel;
    rc = 0;
done:
    Py_XDECREF(key);
    Py_XDECREF(bounds);
    Py_XDECREF(strings);
    Py_XDECREF(labels);
    Py_XDECREF(extras);
    Py_XDECREF(spec);
    Py_XDECREF(record);
    return rc;
}

/* _decode_run(buffer, offset, end, config, shapes, cache, most): the records
 * from offset on, built whole, while each passes every check of
 * _record_fields, its shape (type, flags, capacity, value size, params) is a
 * key of shapes (_layout checked it: the value says whether the type is
 * known), a known type has no bounds, no extra strings and is not one of
 * config's always-checked types, and its metadata bytes are not a key of
 * cache: (their metadata bytes, the Records, the metadata bytes in all).
 * most is (records, metadata bytes), the most it builds (the reader's
 * limits left); it ends before the first record that is not such or would
 * pass them (the caller takes that one by its full path, which says why).
 * config: (limits, always-checked types, RecordSpec, its field names,
 * Record, its field names), from record_table.DECODE_RUN. */
static PyObject *decode_run(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t lim[5];
    (void)mod;
    if (nargs != 7 || !PyTuple_Check(args[3]) || PyTuple_GET_SIZE(args[3]) != 6 ||
        !PyTuple_Check(PyTuple_GET_ITEM(args[3], 1)) || !PyDict_Check(args[4]) || !PyDict_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError, "_decode_run(buffer, offset, end, config, shapes, cache, most)");
        return NULL;
    }
    Py_ssize_t offset = PyLong_AsSsize_t(args[1]), end = PyLong_AsSsize_t(args[2]), most = 0, budget = 0;
    if (!PyTuple_Check(args[6]) || PyTuple_GET_SIZE(args[6]) != 2) {
        PyErr_SetString(PyExc_TypeError, "_decode_run: most is (records, metadata bytes)");
        return NULL;
    }
    most = PyLong_AsSsize_t(PyTuple_GET_ITEM(args[6], 0));
    budget = PyLong_AsSsize_t(PyTuple_GET_ITEM(args[6], 1));
    if (PyErr_Occurred() || read_limits(PyTuple_GET_ITEM(args[3], 0), lim) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *keys = PyList_New(0), *records = PyList_New(0), *out = NULL;
    previous_t prev = {NULL, {NULL}, {0}};
    Py_ssize_t metadata = budget, failed = !keys || !records;
    while (!failed && offset < end && PyList_GET_SIZE(records) < most) {
        PyObject *key = NULL, *record = NULL;
        Py_ssize_t size = 0;
        int rc = build_one(view.buf, view.len, offset, end, lim, args[3], args[4], args[5], &budget, &prev, &key,
                           &record, &size);
        if (rc != 0) {
            failed = rc < 0;
            break;
        }
        failed = PyList_Append(keys, key) < 0 || PyList_Append(records, record) < 0;
        Py_DECREF(key);
        Py_DECREF(record);
        offset += size;
    }
    if (!failed)
        out = Py_BuildValue("(OOn)", keys, records, metadata - budget);
    Py_XDECREF(keys);
    Py_XDECREF(records);
    Py_XDECREF(prev.list);
    PyBuffer_Release(&view);
    return out;
}

PyMethodDef statmap_record_methods[] = {
    {"_record_fields", (PyCFunction)(void (*)(void))record_fields, METH_FASTCALL,
     "_record_fields(buffer, offset, end, limits) -> the record's checked fields, or None"},
    {"_decode_run", (PyCFunction)(void (*)(void))decode_run, METH_FASTCALL,
     "_decode_run(buffer, offset, end, config, shapes, cache, most) -> (metadata bytes list, Records, total)"},
    {NULL, NULL, 0, NULL},
};
