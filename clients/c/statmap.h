/* statmap.h - C99 writer and reader for the statmap file format, version 1.
 *
 * Written from docs/format.md (the normative specification). libc and POSIX
 * only; value stores use the GCC/Clang __atomic builtins.
 *
 * Writer: one statmap_writer per process and publisher name. Adding series
 * (statmap_add_*) is not thread-safe: serialise it yourself (the exemplar
 * records that updates append at first use take a writer lock of their own,
 * so exemplar updates need no lock of yours). Updating values
 * is thread-safe: counters and gauges are single atomic words, and latched
 * values (histogram, summary, text) take a tiny per-series spin lock so that
 * there is one latch writer at a time (section 6).
 *
 * Reader: statmap_reader_open() maps a file read-only (or, for a file of
 * another user, reads it through copies: see below), validates it as
 * untrusted input (sections 4.2, 5 and 9) and statmap_reader_snapshot()
 * returns every series with a consistent value.
 */
#ifndef STATMAP_H
#define STATMAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define STATMAP_MAJOR 1
#define STATMAP_MINOR 2
#define STATMAP_HEADER_SIZE 256

/* Record types (section 4.3). */
enum {
    STATMAP_COUNTER = 1,
    STATMAP_GAUGE = 2,
    STATMAP_HISTOGRAM = 3,
    STATMAP_SUMMARY = 4,
    STATMAP_TEXT = 5,
    STATMAP_INFO = 6,
    STATMAP_ENUM = 7,
    STATMAP_KNOB = 8,          /* since 1.1: not a metric (section 13); statmap_add_knob below */
    STATMAP_EXP_HISTOGRAM = 9, /* since 1.2 (section 14); statmap_add_exp_histogram */
    STATMAP_EXEMPLAR = 10      /* since 1.2 (section 15): not a metric; value.text is its netstrings;
                                * written by statmap_*_exemplar */
};

/* An exponential histogram's stable copy (section 14): words
 * STATMAP_EXP_HEAD + 2 * capacity; bucket i of a sign is in slot i mod capacity. */
#define STATMAP_EXP_HEAD 10
enum {
    STATMAP_EXP_COUNT = 0, STATMAP_EXP_SUM, STATMAP_EXP_MIN, STATMAP_EXP_MAX, STATMAP_EXP_ZERO, STATMAP_EXP_SCALE,
    STATMAP_EXP_POS_LO, STATMAP_EXP_POS_LEN, STATMAP_EXP_NEG_LO, STATMAP_EXP_NEG_LEN
};

/* Record flags (section 4.4). */
#define STATMAP_FLAG_FLOAT 0x1u
#define STATMAP_FLAG_LOG_BUCKETS 0x2u

/* Gauge aggregation (section 4.5). */
enum {
    STATMAP_AGG_PER_PROCESS = 0,
    STATMAP_AGG_SUM = 1,
    STATMAP_AGG_MAX = 2,
    STATMAP_AGG_MIN = 3,
    STATMAP_AGG_LAST = 4
};
#define STATMAP_AGG_LIVE_ONLY 0x100u

/* Return codes. Functions that take `char *err, size_t errlen` write a
 * one-line explanation there on failure (err may be NULL). */
#define STATMAP_OK 0
#define STATMAP_NOT_READY 1   /* reader: file is being created; skip it */
#define STATMAP_ERROR (-1)    /* bad argument, system error */
#define STATMAP_CORRUPT (-2)  /* reader: the file breaks the format */

/* ------------------------------------------------------------------ */
/* Writer                                                              */
/* ------------------------------------------------------------------ */

typedef struct statmap_writer statmap_writer;
typedef struct statmap_series statmap_series;

/* Metadata shared by every series kind. label_names/label_values hold
 * label_count NUL-terminated UTF-8 strings. help and unit may be NULL. */
typedef struct {
    const char *name;
    const char *help;
    const char *unit;
    size_t label_count;
    const char *const *label_names;
    const char *const *label_values;
} statmap_meta;

/* Creates DIRECTORY/PUBLISHER.PID.INSTANCE8.statmap following section 7.
 * directory: NULL means $STATMAP_DIR, else /dev/shm/statmap-UID.
 * program: NULL means basename(argv[0]) from /proc/self/cmdline.
 * capacity: 0 means 16384 (rounded up to a multiple of 4096). */
int statmap_writer_open(statmap_writer **out, const char *directory, const char *publisher,
                        const char *program, size_t capacity, char *err, size_t errlen);
const char *statmap_writer_path(const statmap_writer *w);
/* Marks the file closed (closed_ns, then state = 2). The file stays. */
int statmap_writer_close(statmap_writer *w);
/* Unmaps and closes (releases the lifetime lock). Does not mark closed. */
void statmap_writer_free(statmap_writer *w);
/* Call in a child right after fork(), before it touches any series: gives
 * the child its own file (new identity, same series, zero values) and
 * re-points every series handle to it. */
int statmap_writer_after_fork(statmap_writer *w, char *err, size_t errlen);

/* Declaring series. A second call with the same name and label values
 * returns the existing series; with the same name, the declaration must
 * agree (type, help, unit, flags, label names, params) or it fails. */
int statmap_add_counter(statmap_writer *w, const statmap_meta *m, int is_float, statmap_series **out,
                        char *err, size_t errlen);
int statmap_add_gauge(statmap_writer *w, const statmap_meta *m, unsigned aggregation, statmap_series **out,
                      char *err, size_t errlen);
int statmap_add_histogram(statmap_writer *w, const statmap_meta *m, const double *bounds, size_t nbounds,
                          int log_buckets, statmap_series **out, char *err, size_t errlen);
int statmap_add_summary(statmap_writer *w, const statmap_meta *m, statmap_series **out, char *err,
                        size_t errlen);
int statmap_add_text(statmap_writer *w, const statmap_meta *m, size_t capacity, statmap_series **out,
                     char *err, size_t errlen);
/* kv: 2*npairs strings key, value, key, value... */
int statmap_add_info(statmap_writer *w, const statmap_meta *m, const char *const *kv, size_t npairs,
                     statmap_series **out, char *err, size_t errlen);
int statmap_add_enum(statmap_writer *w, const statmap_meta *m, const char *const *states, size_t nstates,
                     statmap_series **out, char *err, size_t errlen);

/* Updating values (no locks, no system calls, no allocation). */
void statmap_counter_add(statmap_series *s, uint64_t n);          /* integer counter */
int statmap_counter_add_float(statmap_series *s, double v);       /* FLOAT counter; v >= 0 */
void statmap_gauge_set(statmap_series *s, double v);
void statmap_gauge_add(statmap_series *s, double v);
int statmap_histogram_observe(statmap_series *s, double v);       /* -1 for NaN */
/* Exponential histogram (format 1.2, section 14): at most max_buckets (1..2048) buckets per sign,
 * |v| <= zero_threshold counts as zero; the first observation takes max_scale (-4..20, Python's
 * default 8) and the scale goes down when a sign's range outgrows max_buckets. Buckets are chosen
 * exactly as the Python cells choose them: the same stream gives the same value bytes. */
int statmap_add_exp_histogram(statmap_writer *w, const statmap_meta *m, size_t max_buckets, double zero_threshold,
                              int max_scale, statmap_series **out, char *err, size_t errlen);
int statmap_exp_observe(statmap_series *s, double v); /* -1 for NaN */
int statmap_summary_observe(statmap_series *s, double v);         /* -1 for NaN */
int statmap_text_set(statmap_series *s, const char *utf8, size_t len); /* cut at a char boundary */
int statmap_enum_set(statmap_series *s, uint64_t index);          /* -1 if out of range */
/* Exemplars (format 1.2, docs/format.md section 15): the update as above, then the latest exemplar of
 * the counter or of the histogram's bucket: labels holds 2*npairs strings name, value, ... (names
 * [a-zA-Z_][a-zA-Z0-9_]*, values UTF-8, at most 128 characters of names and values together, names
 * once), time_ns its Unix time (0: now). The exemplar record is appended at the first exemplar of
 * the series or bucket (thread-safe, like the updates). Returns 0, or -1 when the exemplar is bad or
 * its record cannot be added (the update is counted all the same), or when the update is refused. */
int statmap_counter_add_exemplar(statmap_series *s, uint64_t n, const char *const *labels, size_t npairs,
                                 uint64_t time_ns);
int statmap_counter_add_float_exemplar(statmap_series *s, double v, const char *const *labels, size_t npairs,
                                       uint64_t time_ns);
int statmap_histogram_observe_exemplar(statmap_series *s, double v, const char *const *labels, size_t npairs,
                                       uint64_t time_ns);

/* ------------------------------------------------------------------ */
/* Knobs (format 1.1, docs/format.md section 13; knobs.c)              */
/* ------------------------------------------------------------------ */

/* A value an operator changes at run time with `statmap set NAME KNOB=VALUE`.
 * Values are canonical text (section 13): bool "true"/"false", int decimal,
 * float as Python's repr, str the text. The C library has no thread: call
 * statmap_knobs_poll() every 50 ms or so (from your loop or a thread of your
 * own), and right after statmap_writer_after_fork(). Knob calls are not
 * thread-safe: serialise them with your own lock. */
enum { STATMAP_KNOB_BOOL = 1, STATMAP_KNOB_INT = 2, STATMAP_KNOB_FLOAT = 3, STATMAP_KNOB_STR = 4 };

typedef struct {
    int type;                      /* STATMAP_KNOB_* */
    const char *default_value;     /* canonical text, inside the declaration */
    const char *min, *max;         /* int/float: bounds as text, or NULL */
    const char *const *choices;    /* str: the allowed values (nchoices of them), or NULL */
    size_t nchoices;
    size_t size;                   /* str without choices: largest value in bytes (0: 256; at most 4096) */
} statmap_knob_decl;

typedef struct statmap_knob statmap_knob;

/* Declares a knob: its record, its start value ($STATMAP_KNOB_<NAME> if valid, else the default),
 * then the operator's desired state from DIRECTORY/PUBLISHER.knobs. */
int statmap_add_knob(statmap_writer *w, const char *name, const char *help, const statmap_knob_decl *d,
                     statmap_knob **out, char *err, size_t errlen);
/* Looks at the control file; applies (checked against each declaration) and publishes what changed.
 * Returns how many values changed, or STATMAP_ERROR (the control file is refused: nothing changed). */
int statmap_knobs_poll(statmap_writer *w);
const char *statmap_knob_value(const statmap_knob *k);  /* the applied value, canonical text */
const char *statmap_knob_origin(const statmap_knob *k); /* "default", "environment" or "operator" */
int statmap_knob_bool(const statmap_knob *k);
int64_t statmap_knob_int(const statmap_knob *k);
double statmap_knob_float(const statmap_knob *k);
/* Frees the knobs of w (call before statmap_writer_free). */
void statmap_knobs_free(statmap_writer *w);

/* Low level, for knobs.c: a knob record (type 8) with its declaration strings and state capacity. */
int statmap_add_knob_record(statmap_writer *w, const char *name, const char *help, const char *const *decl,
                            size_t ndecl, size_t capacity, statmap_series **out, char *err, size_t errlen);
/* Python's repr of a finite double (knobs, exemplars): the shortest digits that read back exactly. */
void statmap_repr_double(char *out, size_t outlen, double d);
const char *statmap_writer_directory(const statmap_writer *w);
const char *statmap_writer_publisher(const statmap_writer *w);
uint64_t statmap_process_start_time(void); /* this process's, clock ticks after boot (0 if unknown) */

/* ------------------------------------------------------------------ */
/* Reader                                                              */
/* ------------------------------------------------------------------ */

/* A string read from a file: UTF-8 after replacing invalid sequences with
 * U+FFFD; may contain NUL bytes, so always use len. s is NUL-terminated. */
typedef struct {
    char *s;
    size_t len;
} statmap_str;

typedef struct {
    uint16_t major, minor;
    uint64_t state;      /* 1 ready, 2 closed */
    uint64_t flags;
    uint64_t pid;
    uint64_t start_time;
    unsigned char boot_id[16];
    unsigned char instance_id[16];
    uint64_t created_ns;
    uint64_t closed_ns;
    statmap_str publisher;
    statmap_str program;
} statmap_identity;

/* Metadata of one series, parsed once and cached (records are immutable). */
typedef struct {
    uint64_t offset;  /* of the record in the file */
    uint16_t type, flags, aggregation;
    uint32_t value_offset, value_size, capacity;
    statmap_str name, help, unit;
    uint32_t label_count;
    statmap_str *labels;  /* 2*label_count: name, value, ... */
    uint32_t param_count;
    double *params;
    uint32_t extra_count;
    statmap_str *extra;   /* info keys/values, enum states */
    uint32_t record_size; /* histogram, summary: min and max may follow the value area (format 1.2) */
} statmap_record;

typedef struct {
    int readable;  /* 0: the latch could not be read consistently (bounded retries) */
    uint64_t u;    /* counter (integer), enum index, count of histogram/summary */
    double f;      /* gauge, float counter, sum of histogram/summary */
    uint64_t *buckets;  /* histogram: param_count+1 counts, not cumulative */
    statmap_str text;   /* text value */
    uint64_t *exp;      /* exponential histogram: its checked stable copy (STATMAP_EXP_*) */
    int has_extremes;   /* histogram, summary: 1 when min and max are known (format 1.2, docs/format.md 5.1) */
    double min, max;    /* lifetime smallest and largest observation */
} statmap_value;

typedef struct {
    const statmap_record *record;
    statmap_value value;
} statmap_series_value;

typedef struct {
    statmap_identity identity;
    const char *liveness;  /* "alive", "dead" or "closed" */
    size_t count;
    statmap_series_value *series;  /* known types only, in file order; exemplar records (STATMAP_EXEMPLAR)
                                    * too, when their shape is the format's (else skipped, as Python) */
} statmap_snapshot;

typedef struct statmap_reader statmap_reader;

/* Opens and validates; STATMAP_NOT_READY for a file still being created.
 *
 * A file owned by another user than this process's effective user (fstat
 * st_uid != geteuid(), checked at open and before every read) is never
 * mapped: that user could shrink it under the mapping and kill this process
 * with SIGBUS. It is read through copies (pread into buffers this reader
 * owns, at most three of up to 1 GiB each, the reader's file size limit),
 * and each multi-word value is proven whole: three copies in a row, and a
 * latch whose seq is equal in the first and the third was not written while
 * the second was made; latches that moved are read alone with the latch
 * protocol through pread. A file damaged meanwhile reads as corrupt or not
 * ready, never a crash. The reader's own files are mapped. */
int statmap_reader_open(statmap_reader **out, const char *path, char *err, size_t errlen);
/* Flags of statmap_reader_open_flags. */
#define STATMAP_READ_COPY 0x1u /* read through copies even a file this user owns */
int statmap_reader_open_flags(statmap_reader **out, const char *path, unsigned flags, char *err, size_t errlen);
/* 1 when the file is read through copies (not mapped), 0 when it is mapped. */
int statmap_reader_copied(const statmap_reader *r);
/* Reads everything now. The snapshot stays valid until the next snapshot
 * call on this reader or statmap_reader_free. */
int statmap_reader_snapshot(statmap_reader *r, statmap_snapshot *snap, char *err, size_t errlen);
void statmap_reader_free(statmap_reader *r);

/* Validates and reads a file image held in memory (no liveness: "dead" or
 * "closed"). For fuzzing and tests. Same codes as statmap_reader_open. */
int statmap_read_buffer(const unsigned char *data, size_t size, char *err, size_t errlen);

const char *statmap_type_name(unsigned type);

/* An exemplar (format 1.2, docs/format.md section 15), decoded from the text
 * of a STATMAP_EXEMPLAR series: its record's name and labels are those of
 * its counter or histogram series, param_count 1 means the histogram bucket
 * of upper bound params[0]. Strings point into the text (not NUL-terminated). */
#define STATMAP_EXEMPLAR_MAX_LABELS 128
typedef struct {
    const char *s;
    size_t len;
} statmap_span;
typedef struct {
    double value;
    uint64_t time_ns; /* Unix time in nanoseconds */
    size_t label_count;
    statmap_span labels[2 * STATMAP_EXEMPLAR_MAX_LABELS]; /* name, value, ... */
} statmap_exemplar;
/* 0 and *out filled; -1 when the text is empty (not written yet) or malformed
 * (the reference reader's exemplar_read.decode: netstrings value, ns, pairs). */
int statmap_exemplar_decode(const statmap_str *text, statmap_exemplar *out);

#ifdef __cplusplus
}
#endif
#endif
