/* Shared by the C files of the statmap._cells extension; not a public API.
 *
 *   _cells.c    the value cells and the simple stores; the module itself
 *   _family.c   the labelled-family lookup (labels(...))
 *   _reads.c    the reader's and the collector's bulk reads
 *
 * The sizes and offsets below are those of src/statmap/_layout.py (the
 * module exports them under the same names and tests/test_cells.py checks
 * that they agree).
 */
#ifndef STATMAP_CELLS_H
#define STATMAP_CELLS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Names shared between the files, but not exported from the shared object. */
#define STATMAP_INTERNAL __attribute__((visibility("hidden")))

/* -- The format (docs/format.md, _layout.py) ------------------------------ */

#define ALIGN 8                  /* every value area and word is 8-byte aligned */
#define VALUE_SEQ 0              /* the sequence word of a double-buffered value */
#define VALUE_COPIES 8           /* the first of its two copies */
#define SUMMARY_COPY_SIZE 16     /* count u64, sum f64 */
#define MAX_PARAMS 4096          /* histogram bounds */
#define MAX_TEXT_CAPACITY (1 << 20)

/* Copy sizes in words and in bytes, as _layout's histogram_copy_size and
 * text_copy_size. (Words from the word counts: the build's -fwrapv keeps the
 * compiler from simplifying bytes / 8 on the write path.) */
#define HISTOGRAM_COPY_WORDS(nbounds) ((Py_ssize_t)(nbounds) + 3) /* count, sum, buckets and +Inf */
#define TEXT_COPY_WORDS(capacity) (1 + ((Py_ssize_t)(capacity) + 7) / 8) /* length, bytes padded */
#define HISTOGRAM_COPY_SIZE(nbounds) (8 * HISTOGRAM_COPY_WORDS(nbounds))
#define TEXT_COPY_SIZE(capacity) (8 * TEXT_COPY_WORDS(capacity))
/* A double-buffered value area: the sequence word and two copies. */
#define LATCH_SIZE(copy_size) (VALUE_COPIES + 2 * (Py_ssize_t)(copy_size))
/* Word indices inside one histogram or summary copy. */
#define COPY_COUNT 0
#define COPY_SUM 1
#define COPY_BUCKETS 2
/* ...and inside one text copy: the length, then the bytes. */
#define TEXT_LENGTH 0
#define TEXT_BYTES 1

/* How many times a reader retries a latch whose writer keeps moving. */
#define LATCH_TRIES 10000

/* -- Word access: every shared word goes through __atomic builtins -------- */

static inline uint64_t load_relaxed(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void store_relaxed(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline uint64_t load_acquire(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void store_release(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

static inline uint64_t dbl_bits(double d) { uint64_t u; memcpy(&u, &d, sizeof u); return u; }
static inline double bits_dbl(uint64_t u) { double d; memcpy(&d, &u, sizeof d); return d; }

/* The one read of a latch (the reader's side of the sequence protocol):
 * copy the copy that the sequence's parity marks stable, `words` words, into
 * dst (which need not be aligned), and return 1 once the sequence held still
 * across the copy; 0 when the writer kept it moving for `tries` attempts.
 * Inline so that each caller's loop is compiled for its own sizes. */
static inline int stable_copy(const uint64_t *seq, Py_ssize_t words, void *dst, Py_ssize_t tries)
{
    for (Py_ssize_t t = 0; t < tries; t++) {
        uint64_t s = load_acquire(seq);
        const uint64_t *src = seq + VALUE_COPIES / 8 + (s & 1) * (uint64_t)words;
        for (Py_ssize_t w = 0; w < words; w++) {
            uint64_t v = load_relaxed(src + w);
            memcpy((char *)dst + w * 8, &v, 8);
        }
        __atomic_thread_fence(__ATOMIC_ACQUIRE); /* the copy's loads before the re-check */
        if (load_relaxed(seq) == s)
            return 1;
    }
    return 0;
}

/* The u64 word at `offset` of `buffer`, checked to be aligned and inside it.
 * On success *view holds the buffer (release it) and the word is returned
 * through *word; on failure an exception is set and -1 returned. */
STATMAP_INTERNAL int word_at(PyObject *buffer, PyObject *offset, int writable, Py_buffer *view, uint64_t **word);

/* -- What each file contributes to the module ----------------------------- */

STATMAP_INTERNAL extern PyMethodDef statmap_read_methods[]; /* _reads.c */
STATMAP_INTERNAL extern PyMethodDef statmap_record_methods[]; /* _records.c */
STATMAP_INTERNAL extern PyTypeObject statmap_FamilyType;    /* _family.c */

#endif
