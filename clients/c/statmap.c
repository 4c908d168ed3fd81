/* statmap.c - writer and reader for the statmap file format, version 1.
 * Written from docs/format.md; see statmap.h for the API. */
#define _GNU_SOURCE 1 /* O_NOFOLLOW, O_CLOEXEC, flock, posix_fallocate */

#include "statmap.h"
#include "_exp_index.h" /* src/statmap: the Python cells' bucket index, downscaling plan and thresholds */

#include <errno.h>
#include <float.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "statmap.c: value words are accessed natively; this build supports little-endian hosts only"
#endif

/* ---- format constants (docs/format.md sections 3-5, 11) ---- */
#define MAGIC_LE UINT64_C(0x3150414D54415453) /* "STATMAP1" */
#define MAGIC_BE UINT64_C(0x535441544D415031) /* "1PAMTATS" as read on a little-endian host */
#define H_MAGIC 0
#define H_MAJOR 8
#define H_MINOR 10
#define H_HEADER_SIZE 12
#define H_STATE 16
#define H_CAPACITY 24
#define H_END 32
#define H_FLAGS 40
#define H_PID 48
#define H_START_TIME 56
#define H_BOOT_ID 64
#define H_INSTANCE_ID 80
#define H_CREATED_NS 96
#define H_CLOSED_NS 104
#define H_PUBLISHER 112
#define H_PUBLISHER_LEN 64
#define H_PROGRAM 176
#define H_PROGRAM_LEN 80

#define R_SIZE 0
#define R_TYPE 4
#define R_FLAGS 6
#define R_AGG 8
#define R_VALUE_OFFSET 12
#define R_VALUE_SIZE 16
#define R_LABEL_COUNT 20
#define R_PARAM_COUNT 24
#define R_STRING_COUNT 28
#define R_STRINGS_SIZE 32
#define R_CAPACITY 36
#define R_HEADER 40

#define STATE_INIT 0
#define STATE_READY 1
#define STATE_CLOSED 2

#define MAX_RECORD_SIZE (16u * 1024u * 1024u)
#define MAX_PARAMS 4096u
#define MAX_STRINGS 4096u
#define MAX_STRING_LEN 65535u
#define MAX_TEXT_CAPACITY (1024u * 1024u)
#define MAX_FILE_SIZE (UINT64_C(1) << 30)
#define DEFAULT_CAPACITY 16384u
/* Reader limits (format.md section 11): what one file can cost a reader. */
#define MAX_RECORDS (UINT64_C(1) << 17)
#define MAX_METADATA (UINT64_C(1) << 23)

#define LATCH_FAST_TRIES 10000
#define LATCH_YIELDS 100
#define COPY_ROUNDS 20          /* copy mode: rounds of three whole copies */
#define EXP_MAX_BUCKETS 2048   /* section 14 */
#define COPY_LATCH_TRIES 10000  /* then per latch, with the latch protocol through pread */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- little-endian field access for metadata (byte-wise, any alignment) ---- */
static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }
static void wr16(unsigned char *p, uint16_t v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); }
static void wr32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static void wr64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static double u2d(uint64_t u) { double d; memcpy(&d, &u, 8); return d; }
static uint64_t d2u(double d) { uint64_t u; memcpy(&u, &d, 8); return u; }

/* ---- atomic words in the mapping (aligned 8-byte accesses) ---- */
static uint64_t *word(unsigned char *base, uint64_t off) { return (uint64_t *)(void *)(base + off); }
static const uint64_t *cword(const unsigned char *base, uint64_t off)
{
    return (const uint64_t *)(const void *)(base + off);
}
static uint64_t load_acq(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static uint64_t load_rlx(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static void store_rel(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static void store_rlx(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

static uint64_t align8(uint64_t n) { return (n + 7u) & ~(uint64_t)7u; }

/* ---- UTF-8 ---- */

/* What a lead byte c promises: the sequence length (0: c cannot lead) and
 * the range of the byte after it (narrower than 80..BF for E0, ED, F0, F4). */
static size_t utf8_lead(unsigned char c, unsigned char *lo, unsigned char *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        return 2;
    if (c >= 0xE0 && c <= 0xEF) {
        if (c == 0xE0)
            *lo = 0xA0;
        else if (c == 0xED)
            *hi = 0x9F;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (c == 0xF0)
            *lo = 0x90;
        else if (c == 0xF4)
            *hi = 0x8F;
        return 4;
    }
    return 0;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if invalid there. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    unsigned char lo, hi;
    size_t need = utf8_lead(c, &lo, &hi);
    if (!need)
        return 0;
    /* Returns 0 when invalid; the caller's replacement logic uses
     * utf8_maximal_subpart for how many bytes one U+FFFD covers. */
    if (n < need)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return need;
}

/* For an invalid sequence at s: how many bytes one U+FFFD replaces (the
 * "maximal subpart" practice of Unicode, also used by Python and Rust). */
static size_t utf8_maximal_subpart(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    unsigned char lo, hi;
    size_t need = utf8_lead(c, &lo, &hi);
    if (!need)
        return 1;
    size_t i = 1;
    if (i < n && i < need && s[i] >= lo && s[i] <= hi) {
        i++;
        while (i < n && i < need && s[i] >= 0x80 && s[i] <= 0xBF)
            i++;
    }
    return i;
}

static int utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t k = utf8_seq(u + i, n - i);
        if (!k)
            return 0;
        i += k;
    }
    return 1;
}

/* Decodes untrusted bytes into a NUL-terminated valid UTF-8 copy. */
static int make_str(statmap_str *out, const unsigned char *s, size_t n)
{
    char *buf = malloc(n * 3 + 1); /* each bad byte becomes at most 3 bytes */
    if (!buf)
        return -1;
    size_t i = 0, o = 0;
    while (i < n) {
        size_t k = utf8_seq(s + i, n - i);
        if (k) {
            memcpy(buf + o, s + i, k);
            o += k;
            i += k;
        } else {
            buf[o++] = (char)0xEF;
            buf[o++] = (char)0xBF;
            buf[o++] = (char)0xBD;
            i += utf8_maximal_subpart(s + i, n - i);
        }
    }
    buf[o] = 0;
    out->s = buf;
    out->len = o;
    return 0;
}

static void free_str(statmap_str *s)
{
    free(s->s);
    s->s = NULL;
    s->len = 0;
}

const char *statmap_type_name(unsigned type)
{
    static const char *const names[] = {"unknown", "counter", "gauge",       "histogram",   "summary",
                                        "text",    "info",    "enum",        "unknown",     "exphistogram", "exemplar"};
    return type < 11 ? names[type] : "unknown";
}

/* ================================================================== */
/* Writer                                                              */
/* ================================================================== */

struct mapping {
    unsigned char *base;
    size_t size;
    struct mapping *next;
};

struct statmap_series {
    statmap_writer *w;
    unsigned type;
    uint64_t value_abs;      /* offset of the value area in the file */
    unsigned char *value;    /* value area through a mapping of the file */
    uint32_t nbounds;
    double *bounds;
    uint32_t capacity;       /* text */
    uint64_t nstates;        /* enum */
    char *name;
    unsigned char *sig;      /* what series of one name must agree on */
    size_t siglen;
    unsigned char *lvals;    /* label values, for returning the same series */
    size_t lvalslen;
    unsigned char lock;      /* one latch writer at a time */
    statmap_series **exemplars; /* counter: 1, histogram: nbounds + 1 exemplar records, made at first use */
    int max_scale;           /* exponential histogram: the scale of its first observation */
};

struct statmap_writer {
    int dirfd, fd;
    char *dir;
    char publisher[H_PUBLISHER_LEN + 1];
    char program[H_PROGRAM_LEN + 1];
    char path[4096];
    unsigned char *base;
    size_t capacity;
    uint64_t end;
    struct mapping *old;     /* earlier, shorter mappings kept for old series */
    statmap_series **series;
    size_t nseries, cap_series;
    unsigned char add_lock;  /* series are added by statmap_add_* and by exemplar updates (any thread) */
};

static int read_small_file(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = 0;
    return (int)n;
}

/* Field 22 (start time in clock ticks) of a /proc/PID/stat file; 0 if unknown. */
static uint64_t stat_start_time(const char *path)
{
    char buf[1024];
    if (read_small_file(path, buf, sizeof buf) <= 0)
        return 0;
    char *p = strrchr(buf, ')'); /* comm may hold spaces and parentheses */
    if (!p)
        return 0;
    p++;
    /* the fields after comm start with field 3 (state) */
    for (int field = 3; field <= 22; field++) {
        while (*p == ' ')
            p++;
        if (!*p)
            return 0;
        if (field == 22)
            return strtoull(p, NULL, 10);
        while (*p && *p != ' ')
            p++;
    }
    return 0;
}

static uint64_t proc_start_time(void) { return stat_start_time("/proc/self/stat"); }

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void boot_id(unsigned char out[16])
{
    char buf[128];
    memset(out, 0, 16);
    if (read_small_file("/proc/sys/kernel/random/boot_id", buf, sizeof buf) <= 0)
        return;
    unsigned char tmp[16];
    int n = 0;
    for (const char *p = buf; *p && n < 32; p++) {
        if (*p == '-')
            continue;
        int v = hexval((unsigned char)*p);
        if (v < 0)
            break;
        if (n % 2 == 0)
            tmp[n / 2] = (unsigned char)(v << 4);
        else
            tmp[n / 2] |= (unsigned char)v;
        n++;
    }
    if (n == 32)
        memcpy(out, tmp, 16);
}

static int random_bytes(unsigned char *out, size_t n)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, out + got, n - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            close(fd);
            return -1;
        }
        got += (size_t)k;
    }
    close(fd);
    return 0;
}

/* Python's repr of a finite double: the shortest digits that read back exactly. */
void statmap_repr_double(char *out, size_t outlen, double d)
{
    char buf[40], digits[24];
    int p, nd = 0, neg = 0;
    if (d == 0)
        d = 0.0; /* -0.0 is written 0.0 */
    for (p = 1; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*e", p - 1, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    const char *s = buf;
    if (*s == '-') {
        neg = 1;
        s++;
    }
    for (; *s && *s != 'e'; s++)
        if (*s != '.')
            digits[nd++] = *s;
    digits[nd] = 0;
    int exp = atoi(s + 1);
    char *o = out;
    size_t left = outlen;
#define PUT(...)                                                                                                      \
    do {                                                                                                              \
        int k_ = snprintf(o, left, __VA_ARGS__);                                                                      \
        if (k_ < 0 || (size_t)k_ >= left)                                                                             \
            return;                                                                                                   \
        o += k_;                                                                                                      \
        left -= (size_t)k_;                                                                                           \
    } while (0)
    if (neg)
        PUT("-");
    if (exp >= -4 && exp < 16) {
        if (exp < 0) {
            PUT("0.");
            for (int i = -1; i > exp; i--)
                PUT("0");
            PUT("%s", digits);
        } else if (nd <= exp + 1) {
            PUT("%s", digits);
            for (int i = nd; i < exp + 1; i++)
                PUT("0");
            PUT(".0");
        } else {
            PUT("%.*s.%s", exp + 1, digits, digits + exp + 1);
        }
    } else {
        PUT("%c", digits[0]);
        if (nd > 1)
            PUT(".%s", digits + 1);
        PUT("e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
#undef PUT
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Copies at most max bytes of a UTF-8 string, cut at a character boundary. */
static void cut_utf8(char *dst, const char *src, size_t max)
{
    size_t n = strlen(src);
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = 0;
}

static void default_program(char *out)
{
    char buf[4096];
    int n = read_small_file("/proc/self/cmdline", buf, sizeof buf);
    if (n <= 0) {
        strcpy(out, "");
        return;
    }
    const char *slash = strrchr(buf, '/'); /* buf holds argv[0] up to its NUL */
    cut_utf8(out, slash ? slash + 1 : buf, H_PROGRAM_LEN);
    if (!utf8_valid(out, strlen(out)))
        strcpy(out, "");
}

static int valid_publisher(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > H_PUBLISHER_LEN || s[0] == '.' || s[0] == '-')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-'))
            return 0;
    }
    return 1;
}

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 200)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return 0;
    }
    return 1;
}

/* Characters (code points) in valid UTF-8. */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

/* Directory checks of section 7, step 1. Returns an O_DIRECTORY fd. */
static int open_private_dir(const char *dir, char *err, size_t errlen)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        set_err(err, errlen, "%s: cannot create directory: %s", dir, strerror(errno));
        return -1;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        set_err(err, errlen, "%s: cannot open directory (symbolic links are refused): %s", dir, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISDIR(st.st_mode)) {
        set_err(err, errlen, "%s: not a directory", dir);
        close(fd);
        return -1;
    }
    if (st.st_uid != geteuid()) {
        set_err(err, errlen, "%s: owned by uid %ld, not by this user", dir, (long)st.st_uid);
        close(fd);
        return -1;
    }
    if (st.st_mode & 022) {
        set_err(err, errlen, "%s: writable by group or others (mode %o)", dir, (unsigned)(st.st_mode & 0777));
        close(fd);
        return -1;
    }
    return fd;
}

static int reserve(int fd, size_t size, char *err, size_t errlen)
{
    int rc = posix_fallocate(fd, 0, (off_t)size);
    if (rc != 0) {
        set_err(err, errlen, "cannot reserve %zu bytes: %s", size, strerror(rc));
        return -1;
    }
    return 0;
}

/* Creates a ready file holding records [header, end) copied from `records`
 * (or none), with a new identity; sets w->fd, w->base, w->path. */
static int create_file(statmap_writer *w, const unsigned char *records, uint64_t records_end, char *err,
                       size_t errlen)
{
    unsigned char instance[16];
    if (random_bytes(instance, sizeof instance) != 0) {
        set_err(err, errlen, "cannot read /dev/urandom: %s", strerror(errno));
        return STATMAP_ERROR;
    }
    long pid = (long)getpid();
    char final[200], tmp[210];
    snprintf(final, sizeof final, "%s.%ld.%02x%02x%02x%02x.statmap", w->publisher, pid, instance[0], instance[1],
             instance[2], instance[3]);
    snprintf(tmp, sizeof tmp, ".%s.tmp", final);
    int fd = openat(w->dirfd, tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        set_err(err, errlen, "%s/%s: cannot create: %s", w->dir, tmp, strerror(errno));
        return STATMAP_ERROR;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        set_err(err, errlen, "%s/%s: cannot lock: %s", w->dir, tmp, strerror(errno));
        goto fail;
    }
    if (reserve(fd, w->capacity, err, errlen) != 0)
        goto fail;
    unsigned char *base = mmap(NULL, w->capacity, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        set_err(err, errlen, "cannot map %s: %s", tmp, strerror(errno));
        goto fail;
    }
    /* Header with state 0 (the file is not ready); then records; end; state. */
    memset(base, 0, STATMAP_HEADER_SIZE);
    wr64(base + H_MAGIC, MAGIC_LE);
    wr16(base + H_MAJOR, STATMAP_MAJOR);
    wr16(base + H_MINOR, STATMAP_MINOR);
    wr32(base + H_HEADER_SIZE, STATMAP_HEADER_SIZE);
    wr64(base + H_CAPACITY, w->capacity);
    wr64(base + H_END, STATMAP_HEADER_SIZE);
    wr64(base + H_PID, (uint64_t)pid);
    wr64(base + H_START_TIME, proc_start_time());
    boot_id(base + H_BOOT_ID);
    memcpy(base + H_INSTANCE_ID, instance, 16);
    wr64(base + H_CREATED_NS, now_ns());
    memcpy(base + H_PUBLISHER, w->publisher, strlen(w->publisher));
    memcpy(base + H_PROGRAM, w->program, strlen(w->program));
    uint64_t end = STATMAP_HEADER_SIZE;
    if (records && records_end > end) {
        memcpy(base + end, records + end, records_end - end);
        /* zero every value area */
        for (uint64_t o = end; o < records_end;) {
            uint32_t size = rd32(base + o + R_SIZE);
            uint32_t voff = rd32(base + o + R_VALUE_OFFSET), vsize = rd32(base + o + R_VALUE_SIZE);
            memset(base + o + voff, 0, vsize);
            o += size;
        }
        end = records_end;
    }
    store_rel(word(base, H_END), end);
    store_rel(word(base, H_STATE), STATE_READY);
    if (renameat(w->dirfd, tmp, w->dirfd, final) != 0) {
        set_err(err, errlen, "cannot rename %s to %s: %s", tmp, final, strerror(errno));
        munmap(base, w->capacity);
        goto fail;
    }
    w->fd = fd;
    w->base = base;
    w->end = end;
    snprintf(w->path, sizeof w->path, "%s/%s", w->dir, final);
    return STATMAP_OK;
fail:
    unlinkat(w->dirfd, tmp, 0);
    close(fd);
    return STATMAP_ERROR;
}

int statmap_writer_open(statmap_writer **out, const char *directory, const char *publisher, const char *program,
                        size_t capacity, char *err, size_t errlen)
{
    *out = NULL;
    if (!publisher || !valid_publisher(publisher)) {
        set_err(err, errlen, "publisher name must be 1-64 bytes of [A-Za-z0-9_.-], not starting with . or -");
        return STATMAP_ERROR;
    }
    if (capacity == 0)
        capacity = DEFAULT_CAPACITY;
    if (capacity > MAX_FILE_SIZE) {
        set_err(err, errlen, "capacity above 1 GiB");
        return STATMAP_ERROR;
    }
    capacity = (capacity + 4095u) & ~(size_t)4095u;
    char defdir[64];
    if (!directory || !*directory) {
        directory = getenv("STATMAP_DIR");
        if (!directory || !*directory) {
            snprintf(defdir, sizeof defdir, "/dev/shm/statmap-%ld", (long)geteuid());
            directory = defdir;
        }
    }
    statmap_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->dir = strdup(directory))) {
        free(w);
        set_err(err, errlen, "out of memory");
        return STATMAP_ERROR;
    }
    w->fd = -1;
    strcpy(w->publisher, publisher);
    if (program) {
        if (!utf8_valid(program, strlen(program))) {
            set_err(err, errlen, "program name is not UTF-8");
            goto fail;
        }
        cut_utf8(w->program, program, H_PROGRAM_LEN);
    } else
        default_program(w->program);
    w->capacity = capacity;
    w->dirfd = open_private_dir(directory, err, errlen);
    if (w->dirfd < 0)
        goto fail;
    if (create_file(w, NULL, 0, err, errlen) != STATMAP_OK) {
        close(w->dirfd);
        goto fail;
    }
    *out = w;
    return STATMAP_OK;
fail:
    free(w->dir);
    free(w);
    return STATMAP_ERROR;
}

const char *statmap_writer_path(const statmap_writer *w) { return w->path; }

int statmap_writer_close(statmap_writer *w)
{
    store_rlx(word(w->base, H_CLOSED_NS), now_ns());
    store_rel(word(w->base, H_STATE), STATE_CLOSED);
    return STATMAP_OK;
}

static void unmap_all(statmap_writer *w)
{
    if (w->base)
        munmap(w->base, w->capacity);
    w->base = NULL;
    for (struct mapping *m = w->old, *next; m; m = next) {
        next = m->next;
        munmap(m->base, m->size);
        free(m);
    }
    w->old = NULL;
}

void statmap_writer_free(statmap_writer *w)
{
    if (!w)
        return;
    unmap_all(w);
    if (w->fd >= 0)
        close(w->fd);
    if (w->dirfd >= 0)
        close(w->dirfd);
    for (size_t i = 0; i < w->nseries; i++) {
        statmap_series *s = w->series[i];
        free(s->bounds);
        free(s->name);
        free(s->sig);
        free(s->lvals);
        free(s->exemplars);
        free(s);
    }
    free(w->series);
    free(w->dir);
    free(w);
}

int statmap_writer_after_fork(statmap_writer *w, char *err, size_t errlen)
{
    /* Keep a private copy of the records, drop the parent's mappings and
     * descriptor (the lock belongs to the parent's open file description,
     * so closing our inherited copy leaves the parent's lock in place). */
    unsigned char *copy = malloc(w->end);
    if (!copy) {
        set_err(err, errlen, "out of memory");
        return STATMAP_ERROR;
    }
    memcpy(copy, w->base, w->end);
    uint64_t end = w->end;
    unmap_all(w);
    close(w->fd);
    w->fd = -1;
    int rc = create_file(w, copy, end, err, errlen);
    free(copy);
    if (rc != STATMAP_OK)
        return rc;
    for (size_t i = 0; i < w->nseries; i++)
        w->series[i]->value = w->base + w->series[i]->value_abs;
    w->add_lock = 0; /* a thread of the parent may have held it at fork(); the child has only this one */
    return STATMAP_OK;
}

/* Growth (section 8): reserve, map the larger file, publish capacity. */
static int grow(statmap_writer *w, uint64_t need, char *err, size_t errlen)
{
    uint64_t cap = w->capacity;
    while (cap < need)
        cap *= 2;
    if (cap > MAX_FILE_SIZE) {
        set_err(err, errlen, "file would exceed 1 GiB");
        return STATMAP_ERROR;
    }
    if (reserve(w->fd, (size_t)cap, err, errlen) != 0)
        return STATMAP_ERROR;
    unsigned char *base = mmap(NULL, (size_t)cap, PROT_READ | PROT_WRITE, MAP_SHARED, w->fd, 0);
    if (base == MAP_FAILED) {
        set_err(err, errlen, "cannot map %s: %s", w->path, strerror(errno));
        return STATMAP_ERROR;
    }
    struct mapping *m = malloc(sizeof *m);
    if (!m) {
        munmap(base, (size_t)cap);
        set_err(err, errlen, "out of memory");
        return STATMAP_ERROR;
    }
    m->base = w->base;
    m->size = w->capacity;
    m->next = w->old;
    w->old = m;
    w->base = base;
    w->capacity = (size_t)cap;
    store_rel(word(base, H_CAPACITY), cap);
    return STATMAP_OK;
}

/* A growable byte buffer for encoding records. */
typedef struct {
    unsigned char *p;
    size_t len, cap;
    int oom;
} buf_t;

static void buf_put(buf_t *b, const void *data, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->len + n)
            c *= 2;
        unsigned char *p = realloc(b->p, c);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = c;
    }
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
}
static void buf_u32(buf_t *b, uint32_t v)
{
    unsigned char t[4];
    wr32(t, v);
    buf_put(b, t, 4);
}
static void buf_str(buf_t *b, const char *s)
{
    size_t n = strlen(s);
    buf_u32(b, (uint32_t)n);
    buf_put(b, s, n);
}

typedef struct {
    unsigned type, flags, agg;
    const double *params;
    size_t nparams;
    const char *const *extra;
    size_t nextra;
    uint32_t capacity;   /* text */
    uint32_t value_size;
} rec_spec;

static int check_str(const char *what, const char *s, size_t max_chars, char *err, size_t errlen)
{
    if (!s) {
        set_err(err, errlen, "%s is NULL", what);
        return -1;
    }
    size_t n = strlen(s);
    if (!utf8_valid(s, n)) {
        set_err(err, errlen, "%s is not valid UTF-8", what);
        return -1;
    }
    if (utf8_chars(s) > max_chars || n > MAX_STRING_LEN) {
        set_err(err, errlen, "%s is longer than %zu characters", what, max_chars);
        return -1;
    }
    return 0;
}

static int add_series_locked(statmap_writer *w, const statmap_meta *m, const rec_spec *r, statmap_series **out,
                             char *err, size_t errlen)
{
    *out = NULL;
    const char *help = m->help ? m->help : "", *unit = m->unit ? m->unit : "";
    if (!m->name || !valid_name(m->name)) {
        set_err(err, errlen, "metric name must match [A-Za-z_][A-Za-z0-9_]* (at most 200 characters)");
        return STATMAP_ERROR;
    }
    if (check_str("help", help, 4096, err, errlen) || check_str("unit", unit, 200, err, errlen))
        return STATMAP_ERROR;
    if (m->label_count > 1000) {
        set_err(err, errlen, "too many labels");
        return STATMAP_ERROR;
    }
    for (size_t i = 0; i < m->label_count; i++) {
        const char *ln = m->label_names[i];
        if (!ln || !valid_name(ln) || !strcmp(ln, "pid") || !strcmp(ln, "le") || !strcmp(ln, "quantile") ||
            !strncmp(ln, "__", 2)) {
            set_err(err, errlen, "label name %s is invalid or reserved", ln ? ln : "(null)");
            return STATMAP_ERROR;
        }
        for (size_t j = 0; j < i; j++)
            if (!strcmp(ln, m->label_names[j])) {
                set_err(err, errlen, "label name %s given twice", ln);
                return STATMAP_ERROR;
            }
        if (check_str("label value", m->label_values[i], 1024, err, errlen))
            return STATMAP_ERROR;
    }
    for (size_t i = 0; i < r->nextra; i++)
        if (check_str("string", r->extra[i], 1024, err, errlen))
            return STATMAP_ERROR;
    if (3 + 2 * m->label_count + r->nextra > MAX_STRINGS) {
        set_err(err, errlen, "too many strings in one record");
        return STATMAP_ERROR;
    }

    /* What every series of this name must agree on, and this label set. */
    buf_t sig = {0}, lv = {0};
    unsigned char t[8];
    wr16(t, (uint16_t)r->type);
    wr16(t + 2, (uint16_t)r->flags);
    wr16(t + 4, (uint16_t)r->agg);
    buf_put(&sig, t, 6);
    buf_str(&sig, help);
    buf_str(&sig, unit);
    buf_u32(&sig, (uint32_t)m->label_count);
    for (size_t i = 0; i < m->label_count; i++) {
        buf_str(&sig, m->label_names[i]);
        buf_str(&lv, m->label_values[i]);
    }
    for (size_t i = 0; i < r->nparams; i++) {
        wr64(t, d2u(r->params[i]));
        buf_put(&sig, t, 8);
    }
    buf_put(&lv, "", 0);
    if (sig.oom || lv.oom) {
        free(sig.p);
        free(lv.p);
        set_err(err, errlen, "out of memory");
        return STATMAP_ERROR;
    }
    size_t same_name = 0;
    for (size_t i = 0; i < w->nseries; i++) {
        statmap_series *s = w->series[i];
        /* exemplar records (one per series or bucket) are found through their series, not here */
        if (r->type == STATMAP_EXEMPLAR)
            break;
        if (strcmp(s->name, m->name) || s->type == STATMAP_EXEMPLAR)
            continue;
        if (s->siglen != sig.len || memcmp(s->sig, sig.p, sig.len)) {
            free(sig.p);
            free(lv.p);
            set_err(err, errlen, "%s: declared again with a different type, help, unit, flags, labels or buckets",
                    m->name);
            return STATMAP_ERROR;
        }
        if (s->lvalslen == lv.len && (lv.len == 0 || !memcmp(s->lvals, lv.p, lv.len))) {
            free(sig.p);
            free(lv.p);
            *out = s;
            return STATMAP_OK;
        }
        same_name++;
    }
    if (same_name >= 1000) {
        free(sig.p);
        free(lv.p);
        set_err(err, errlen, "%s: more than 1000 label sets", m->name);
        return STATMAP_ERROR;
    }

    /* Encode the record (section 4.1) with its value area zeroed. */
    buf_t strings = {0};
    buf_str(&strings, m->name);
    buf_str(&strings, help);
    buf_str(&strings, unit);
    for (size_t i = 0; i < m->label_count; i++) {
        buf_str(&strings, m->label_names[i]);
        buf_str(&strings, m->label_values[i]);
    }
    for (size_t i = 0; i < r->nextra; i++)
        buf_str(&strings, r->extra[i]);
    uint64_t value_offset = align8(R_HEADER + 8 * (uint64_t)r->nparams + strings.len);
    /* histograms and summaries: their lifetime min and max after the value area (format 1.2, 5.1) */
    int extremes = r->type == STATMAP_HISTOGRAM || r->type == STATMAP_SUMMARY;
    uint64_t record_size = value_offset + r->value_size + (extremes ? 16 : 0);
    statmap_series *s = calloc(1, sizeof *s);
    if (strings.oom || !s || record_size > MAX_RECORD_SIZE) {
        set_err(err, errlen, record_size > MAX_RECORD_SIZE ? "record too large" : "out of memory");
        goto fail;
    }
    if (w->nseries == w->cap_series) {
        size_t c = w->cap_series ? 2 * w->cap_series : 16;
        statmap_series **p = realloc(w->series, c * sizeof *p);
        if (!p) {
            set_err(err, errlen, "out of memory");
            goto fail;
        }
        w->series = p;
        w->cap_series = c;
    }
    if (r->nparams) {
        s->bounds = malloc(r->nparams * sizeof(double));
        if (!s->bounds) {
            set_err(err, errlen, "out of memory");
            goto fail;
        }
        memcpy(s->bounds, r->params, r->nparams * sizeof(double));
    }
    s->name = strdup(m->name);
    if (!s->name) {
        set_err(err, errlen, "out of memory");
        goto fail;
    }
    if (w->end + record_size > w->capacity && grow(w, w->end + record_size, err, errlen) != STATMAP_OK)
        goto fail;
    unsigned char *rec = w->base + w->end;
    memset(rec, 0, (size_t)record_size);
    wr32(rec + R_SIZE, (uint32_t)record_size);
    wr16(rec + R_TYPE, (uint16_t)r->type);
    wr16(rec + R_FLAGS, (uint16_t)r->flags);
    wr16(rec + R_AGG, (uint16_t)r->agg);
    wr32(rec + R_VALUE_OFFSET, (uint32_t)value_offset);
    wr32(rec + R_VALUE_SIZE, r->value_size);
    wr32(rec + R_LABEL_COUNT, (uint32_t)m->label_count);
    wr32(rec + R_PARAM_COUNT, (uint32_t)r->nparams);
    wr32(rec + R_STRING_COUNT, (uint32_t)(3 + 2 * m->label_count + r->nextra));
    wr32(rec + R_STRINGS_SIZE, (uint32_t)strings.len);
    wr32(rec + R_CAPACITY, r->capacity);
    for (size_t i = 0; i < r->nparams; i++)
        wr64(rec + R_HEADER + 8 * i, d2u(r->params[i]));
    memcpy(rec + R_HEADER + 8 * r->nparams, strings.p, strings.len);
    s->w = w;
    s->type = r->type;
    s->value_abs = w->end + value_offset;
    s->value = w->base + s->value_abs;
    s->nbounds = (uint32_t)r->nparams;
    s->capacity = r->capacity;
    s->nstates = r->type == STATMAP_ENUM ? r->nextra : 0;
    s->sig = sig.p;
    s->siglen = sig.len;
    s->lvals = lv.p;
    s->lvalslen = lv.len;
    w->end += record_size;
    store_rel(word(w->base, H_END), w->end); /* the record is now published */
    w->series[w->nseries++] = s;
    free(strings.p);
    *out = s;
    return STATMAP_OK;
fail:
    if (s) {
        free(s->bounds);
        free(s->name);
        free(s);
    }
    free(strings.p);
    free(sig.p);
    free(lv.p);
    return STATMAP_ERROR;
}

static void writer_lock(statmap_writer *w)
{
    while (__atomic_test_and_set(&w->add_lock, __ATOMIC_ACQUIRE))
        sched_yield();
}
static void writer_unlock(statmap_writer *w) { __atomic_clear(&w->add_lock, __ATOMIC_RELEASE); }

/* Taken so that an exemplar update creating its record in another thread does not race a declaration. */
static int add_series(statmap_writer *w, const statmap_meta *m, const rec_spec *r, statmap_series **out, char *err,
                      size_t errlen)
{
    writer_lock(w);
    int rc = add_series_locked(w, m, r, out, err, errlen);
    writer_unlock(w);
    return rc;
}

static void meta_default(statmap_meta *m, const statmap_meta *in)
{
    *m = *in;
    if (!m->label_count) {
        m->label_names = NULL;
        m->label_values = NULL;
    }
}

int statmap_add_counter(statmap_writer *w, const statmap_meta *m, int is_float, statmap_series **out, char *err,
                        size_t errlen)
{
    statmap_meta mm;
    meta_default(&mm, m);
    rec_spec r = {STATMAP_COUNTER, is_float ? STATMAP_FLAG_FLOAT : 0, 0, NULL, 0, NULL, 0, 0, 8};
    return add_series(w, &mm, &r, out, err, errlen);
}

int statmap_add_gauge(statmap_writer *w, const statmap_meta *m, unsigned aggregation, statmap_series **out, char *err,
                      size_t errlen)
{
    if ((aggregation & 0xFF) > STATMAP_AGG_LAST || (aggregation & ~(0xFFu | STATMAP_AGG_LIVE_ONLY))) {
        set_err(err, errlen, "unknown gauge aggregation 0x%x", aggregation);
        return STATMAP_ERROR;
    }
    statmap_meta mm;
    meta_default(&mm, m);
    rec_spec r = {STATMAP_GAUGE, 0, aggregation, NULL, 0, NULL, 0, 0, 8};
    return add_series(w, &mm, &r, out, err, errlen);
}

int statmap_add_histogram(statmap_writer *w, const statmap_meta *m, const double *bounds, size_t nbounds,
                          int log_buckets, statmap_series **out, char *err, size_t errlen)
{
    if (nbounds > MAX_PARAMS) {
        set_err(err, errlen, "more than 4096 bucket bounds");
        return STATMAP_ERROR;
    }
    for (size_t i = 0; i < nbounds; i++)
        if (!isfinite(bounds[i]) || (i && !(bounds[i] > bounds[i - 1]))) {
            set_err(err, errlen, "bucket bounds must be finite and strictly increasing");
            return STATMAP_ERROR;
        }
    statmap_meta mm;
    meta_default(&mm, m);
    rec_spec r = {STATMAP_HISTOGRAM, log_buckets ? STATMAP_FLAG_LOG_BUCKETS : 0, 0, bounds, nbounds, NULL, 0, 0,
                  (uint32_t)(8 + 2 * 8 * (nbounds + 3))};
    return add_series(w, &mm, &r, out, err, errlen);
}

int statmap_add_exp_histogram(statmap_writer *w, const statmap_meta *m, size_t max_buckets, double zero_threshold,
                              int max_scale, statmap_series **out, char *err, size_t errlen)
{
    if (max_buckets < 1 || max_buckets > EXP_MAX_BUCKETS || !(zero_threshold >= 0 && isfinite(zero_threshold)) ||
        max_scale < EXP_MIN_SCALE || max_scale > EXP_MAX_SCALE) {
        set_err(err, errlen, "max_buckets must be 1..%d, zero_threshold finite and not negative, max_scale %d..%d",
                EXP_MAX_BUCKETS, EXP_MIN_SCALE, EXP_MAX_SCALE);
        return STATMAP_ERROR;
    }
    statmap_meta mm;
    meta_default(&mm, m);
    double zt = zero_threshold + 0.0; /* -0.0 as +0.0: the same record bytes as Python's float(...) >= 0 */
    rec_spec r = {STATMAP_EXP_HISTOGRAM, 0, 0, &zt, 1, NULL, 0, (uint32_t)max_buckets,
                  (uint32_t)(8 + 2 * 8 * (STATMAP_EXP_HEAD + 2 * max_buckets))};
    int rc = add_series(w, &mm, &r, out, err, errlen);
    if (rc == STATMAP_OK)
        (*out)->max_scale = max_scale;
    return rc;
}

int statmap_add_summary(statmap_writer *w, const statmap_meta *m, statmap_series **out, char *err, size_t errlen)
{
    statmap_meta mm;
    meta_default(&mm, m);
    rec_spec r = {STATMAP_SUMMARY, 0, 0, NULL, 0, NULL, 0, 0, 40};
    return add_series(w, &mm, &r, out, err, errlen);
}

int statmap_add_text(statmap_writer *w, const statmap_meta *m, size_t capacity, statmap_series **out, char *err,
                     size_t errlen)
{
    if (capacity < 1 || capacity > MAX_TEXT_CAPACITY) {
        set_err(err, errlen, "text capacity must be 1 byte to 1 MiB");
        return STATMAP_ERROR;
    }
    statmap_meta mm;
    meta_default(&mm, m);
    rec_spec r = {STATMAP_TEXT, 0, 0, NULL, 0, NULL, 0, (uint32_t)capacity,
                  (uint32_t)(8 + 2 * (8 + align8(capacity)))};
    return add_series(w, &mm, &r, out, err, errlen);
}

int statmap_add_knob_record(statmap_writer *w, const char *name, const char *help, const char *const *decl,
                            size_t ndecl, size_t capacity, statmap_series **out, char *err, size_t errlen)
{
    if (capacity < 8 || capacity > 65536) {
        set_err(err, errlen, "knob state capacity must be 8 bytes to 64 KiB");
        return STATMAP_ERROR;
    }
    statmap_meta mm = {name, help, "", 0, NULL, NULL};
    rec_spec r = {STATMAP_KNOB, 0, 0, NULL, 0, decl, ndecl, (uint32_t)capacity,
                  (uint32_t)(8 + 2 * (8 + align8(capacity)))};
    return add_series(w, &mm, &r, out, err, errlen);
}

const char *statmap_writer_directory(const statmap_writer *w) { return w->dir; }
const char *statmap_writer_publisher(const statmap_writer *w) { return w->publisher; }
uint64_t statmap_process_start_time(void) { return proc_start_time(); }

int statmap_add_info(statmap_writer *w, const statmap_meta *m, const char *const *kv, size_t npairs,
                     statmap_series **out, char *err, size_t errlen)
{
    statmap_meta mm;
    meta_default(&mm, m);
    rec_spec r = {STATMAP_INFO, 0, 0, NULL, 0, kv, 2 * npairs, 0, 0};
    return add_series(w, &mm, &r, out, err, errlen);
}

int statmap_add_enum(statmap_writer *w, const statmap_meta *m, const char *const *states, size_t nstates,
                     statmap_series **out, char *err, size_t errlen)
{
    if (nstates < 1) {
        set_err(err, errlen, "an enum needs at least one state");
        return STATMAP_ERROR;
    }
    statmap_meta mm;
    meta_default(&mm, m);
    rec_spec r = {STATMAP_ENUM, 0, 0, NULL, 0, states, nstates, 0, 8};
    return add_series(w, &mm, &r, out, err, errlen);
}

/* ---- value updates ---- */

void statmap_counter_add(statmap_series *s, uint64_t n)
{
    __atomic_fetch_add(word(s->value, 0), n, __ATOMIC_RELEASE);
}

static void float_add(uint64_t *p, double v)
{
    uint64_t old = __atomic_load_n(p, __ATOMIC_RELAXED), neu;
    do
        neu = d2u(u2d(old) + v);
    while (!__atomic_compare_exchange_n(p, &old, neu, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
}

int statmap_counter_add_float(statmap_series *s, double v)
{
    if (!(v >= 0))
        return -1;
    float_add(word(s->value, 0), v);
    return 0;
}

void statmap_gauge_set(statmap_series *s, double v) { store_rel(word(s->value, 0), d2u(v)); }
void statmap_gauge_add(statmap_series *s, double v) { float_add(word(s->value, 0), v); }

int statmap_enum_set(statmap_series *s, uint64_t index)
{
    if (index >= s->nstates)
        return -1;
    store_rel(word(s->value, 0), index);
    return 0;
}

static void spin_lock(statmap_series *s)
{
    while (__atomic_test_and_set(&s->lock, __ATOMIC_ACQUIRE))
        sched_yield();
}
static void spin_unlock(statmap_series *s) { __atomic_clear(&s->lock, __ATOMIC_RELEASE); }

/* Section 6, writer steps 1 and 3. */
static uint64_t latch_begin(uint64_t *seq)
{
    uint64_t s = load_rlx(seq) + 1;
    store_rel(seq, s);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    return s;
}
static void latch_middle(uint64_t *seq, uint64_t s)
{
    store_rel(seq, s + 1);
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

/* The lifetime min and max after a latch (format 1.2, docs/format.md 5.1), stored under the series'
 * lock before the latch write that counts v; first: the count was 0. */
static void note_extremes(uint64_t *mm, double v, int first)
{
    if (first || v < u2d(load_rlx(mm)))
        store_rlx(mm, d2u(v));
    if (first || v > u2d(load_rlx(mm + 1)))
        store_rlx(mm + 1, d2u(v));
}

int statmap_histogram_observe(statmap_series *s, double v)
{
    if (isnan(v))
        return -1;
    uint32_t n = s->nbounds, i = 0;
    while (i < n && !(v <= s->bounds[i]))
        i++;
    uint64_t copy = 8 * ((uint64_t)n + 3);
    uint64_t *seq = word(s->value, 0);
    uint64_t *c0 = word(s->value, 8), *c1 = word(s->value, 8 + copy);
    spin_lock(s);
    /* Both copies equal the current value; only three words change. */
    uint64_t count = load_rlx(c1) + 1;
    uint64_t sum = d2u(u2d(load_rlx(c1 + 1)) + v);
    uint64_t bucket = load_rlx(c1 + 2 + i) + 1;
    note_extremes(c1 + copy / 8, v, count == 1);
    uint64_t sq = latch_begin(seq);
    store_rlx(c0, count);
    store_rlx(c0 + 1, sum);
    store_rlx(c0 + 2 + i, bucket);
    latch_middle(seq, sq);
    store_rlx(c1, count);
    store_rlx(c1 + 1, sum);
    store_rlx(c1 + 2 + i, bucket);
    spin_unlock(s);
    return 0;
}

/* ---- exponential histograms (format 1.2, docs/format.md 14) ----
 * The same bucket for every observation as the Python cells (src/statmap/_cells.c, _pycells_exp.py):
 * the one exact threshold table (_exp_bounds.h, included from src/statmap), libm log above scale 8,
 * the same operations in the same order, and the same downscaling; so the value areas are equal byte
 * for byte (tests/test_exphist_c.py). */

/* The rare path: downscale until idx fits (_exp_index.h's plan), rewriting all of copy 0 from copy 1
 * under the latch, then copy 1 from copy 0 (section 6: readers see the histogram before or after).
 * head: count, sum, min, max bits, zero count. */
static void exp_rescale(uint64_t *seq, uint64_t *c0, uint64_t *c1, int64_t m, const uint64_t *head, int pos,
                        int64_t scale, int64_t idx, int64_t nl, int64_t nh)
{
    int64_t words = STATMAP_EXP_HEAD + 2 * m, first[2], len[2];
    for (int sign = 0; sign < 2; sign++)
        first[sign] = (int64_t)load_rlx(c1 + 6 + 2 * sign), len[sign] = (int64_t)load_rlx(c1 + 7 + 2 * sign);
    exp_plan_t p = exp_downscale(m, pos, scale, idx, nl, nh, first, len);
    uint64_t sq = latch_begin(seq);
    for (int w = 0; w < 5; w++)
        store_rlx(c0 + w, head[w]);
    store_rlx(c0 + 5, (uint64_t)(scale - p.k));
    for (int64_t w = STATMAP_EXP_HEAD; w < words; w++)
        store_rlx(c0 + w, 0);
    for (int sign = 0; sign < 2; sign++) {
        uint64_t *src = c1 + STATMAP_EXP_HEAD + sign * m, *dst = c0 + STATMAP_EXP_HEAD + sign * m;
        for (int64_t j = 0; j < p.n[sign]; j++) {
            uint64_t c = load_rlx(src + mod_m(first[sign] + j, m));
            uint64_t *to = dst + mod_m(shr_floor(first[sign] + j, p.k), m);
            if (c)
                store_rlx(to, load_rlx(to) + c);
        }
        int on = p.n[sign] || sign == p.side;
        store_rlx(c0 + 6 + 2 * sign, on ? (uint64_t)p.lo[sign] : 0);
        store_rlx(c0 + 7 + 2 * sign, on ? (uint64_t)(p.hi[sign] - p.lo[sign] + 1) : 0);
    }
    uint64_t *b = c0 + STATMAP_EXP_HEAD + p.side * m + mod_m(p.i2, m);
    store_rlx(b, load_rlx(b) + 1);
    latch_middle(seq, sq);
    for (int64_t w = 0; w < words; w++)
        store_rlx(c1 + w, load_rlx(c0 + w));
}

int statmap_exp_observe(statmap_series *s, double d)
{
    if (isnan(d) || s->type != STATMAP_EXP_HISTOGRAM)
        return -1;
    int64_t m = s->capacity;
    uint64_t *seq = word(s->value, 0), *c0 = word(s->value, 8), *c1 = c0 + STATMAP_EXP_HEAD + 2 * m;
    spin_lock(s);
    uint64_t old = load_rlx(c1 + 0);
    double mn = u2d(load_rlx(c1 + 2)), mx = u2d(load_rlx(c1 + 3));
    uint64_t head[5] = {old + 1, d2u(u2d(load_rlx(c1 + 1)) + d), d2u(!old || d < mn ? d : mn),
                        d2u(!old || d > mx ? d : mx), load_rlx(c1 + 4)};
    double a = fabs(d);
    if (a <= s->bounds[0]) { /* the zero bucket */
        head[4]++;
        uint64_t sq = latch_begin(seq);
        for (int w = 0; w < 5; w++)
            store_rlx(c0 + w, head[w]);
        latch_middle(seq, sq);
        for (int w = 0; w < 5; w++)
            store_rlx(c1 + w, head[w]);
        spin_unlock(s);
        return 0;
    }
    int pos = d > 0;
    int64_t scale = (int64_t)load_rlx(c1 + 5);
    uint64_t plen = load_rlx(c1 + 7), nlen = load_rlx(c1 + 9);
    if (!plen && !nlen)
        scale = s->max_scale;
    else if (scale < EXP_MIN_SCALE || scale > EXP_MAX_SCALE) /* (our own file: only corruption does this) */
        scale = EXP_MIN_SCALE;
    int64_t idx = exp_index(a <= DBL_MAX ? a : DBL_MAX, (int)scale);
    int lo_w = pos ? 6 : 8;
    int64_t lo = (int64_t)load_rlx(c1 + lo_w), n = (int64_t)(pos ? plen : nlen);
    int64_t nl = idx, nh = idx;
    if (n > 0) {
        nl = lo < idx ? lo : idx;
        nh = lo + n - 1 > idx ? lo + n - 1 : idx;
    }
    if (n < 0 || n > m || nh - nl >= m) {
        exp_rescale(seq, c0, c1, m, head, pos, scale, idx, nl, nh);
        spin_unlock(s);
        return 0;
    }
    int64_t slot = STATMAP_EXP_HEAD + (pos ? 0 : m) + mod_m(idx, m);
    uint64_t bucket = load_rlx(c1 + slot) + 1, len = (uint64_t)(nh - nl + 1);
    uint64_t sq = latch_begin(seq);
    for (int w = 0; w < 4; w++)
        store_rlx(c0 + w, head[w]);
    store_rlx(c0 + 5, (uint64_t)scale);
    store_rlx(c0 + lo_w, (uint64_t)nl);
    store_rlx(c0 + lo_w + 1, len);
    store_rlx(c0 + slot, bucket);
    latch_middle(seq, sq);
    for (int w = 0; w < 4; w++)
        store_rlx(c1 + w, head[w]);
    store_rlx(c1 + 5, (uint64_t)scale);
    store_rlx(c1 + lo_w, (uint64_t)nl);
    store_rlx(c1 + lo_w + 1, len);
    store_rlx(c1 + slot, bucket);
    spin_unlock(s);
    return 0;
}

int statmap_summary_observe(statmap_series *s, double v)
{
    if (isnan(v))
        return -1;
    uint64_t *seq = word(s->value, 0), *c0 = word(s->value, 8), *c1 = word(s->value, 24);
    spin_lock(s);
    uint64_t count = load_rlx(c1) + 1, sum = d2u(u2d(load_rlx(c1 + 1)) + v);
    note_extremes(c1 + 2, v, count == 1);
    uint64_t sq = latch_begin(seq);
    store_rlx(c0, count);
    store_rlx(c0 + 1, sum);
    latch_middle(seq, sq);
    store_rlx(c1, count);
    store_rlx(c1 + 1, sum);
    spin_unlock(s);
    return 0;
}

/* Writes a text copy: length, then the bytes word by word; clears the words
 * the previous, longer text used. */
static void text_copy(uint64_t *c, const char *utf8, size_t len, size_t oldlen)
{
    store_rlx(c, len);
    size_t words = (size_t)(align8(len) / 8), oldwords = (size_t)(align8(oldlen) / 8);
    for (size_t i = 0; i < words; i++) {
        unsigned char b[8] = {0};
        size_t k = len - 8 * i < 8 ? len - 8 * i : 8;
        memcpy(b, utf8 + 8 * i, k);
        uint64_t v;
        memcpy(&v, b, 8);
        store_rlx(c + 1 + i, v);
    }
    for (size_t i = words; i < oldwords; i++)
        store_rlx(c + 1 + i, 0);
}

int statmap_text_set(statmap_series *s, const char *utf8, size_t len)
{
    if (!utf8_valid(utf8, len))
        return -1;
    if (len > s->capacity) {
        len = s->capacity;
        while (len > 0 && ((unsigned char)utf8[len] & 0xC0) == 0x80)
            len--;
    }
    uint64_t copy = 8 + align8(s->capacity);
    uint64_t *seq = word(s->value, 0), *c0 = word(s->value, 8), *c1 = word(s->value, 8 + copy);
    spin_lock(s);
    uint64_t old = load_rlx(c1);
    if (old > s->capacity)
        old = s->capacity;
    uint64_t sq = latch_begin(seq);
    text_copy(c0, utf8, len, (size_t)old);
    latch_middle(seq, sq);
    text_copy(c1, utf8, len, (size_t)old);
    spin_unlock(s);
    return 0;
}


/* ---- exemplars (format 1.2, docs/format.md 15) ----
 * As the Python writer (src/statmap/exemplars.py): the update is counted first; then the exemplar's
 * labels are checked (OpenMetrics: names [a-zA-Z_][a-zA-Z0-9_]*, at most 128 characters of names and
 * values), its record (type 10, the series' name and labels, params () or (bucket bound,), capacity
 * 1024) is appended at the first exemplar of the series or bucket, and its text latch takes the
 * netstrings value (Python repr), Unix ns, name, value, ... */
#define EXEMPLAR_CAPACITY 1024u
#define EXEMPLAR_MAX_CHARS 128u

static int put_netstring(char *out, size_t cap, size_t *len, const char *s, size_t n)
{
    int k = snprintf(out + *len, cap - *len, "%zu:", n);
    if (k < 0 || (size_t)k + n + 1 > cap - *len)
        return -1;
    *len += (size_t)k;
    memcpy(out + *len, s, n);
    *len += n;
    out[(*len)++] = ',';
    return 0;
}

static int exemplar_label_name(const char *s)
{
    if (!s || !(*s == '_' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')))
        return 0;
    for (; *s; s++)
        if (!(*s == '_' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')))
            return 0;
    return 1;
}

/* The exemplar text into out (EXEMPLAR_CAPACITY + 1 bytes); -1 for a bad exemplar. */
static int exemplar_encode(char *out, size_t *len, double v, uint64_t time_ns, const char *const *labels,
                         size_t npairs)
{
    if (npairs && !labels)
        return -1;
    size_t chars = 0;
    for (size_t i = 0; i < npairs; i++) {
        const char *name = labels[2 * i], *value = labels[2 * i + 1];
        if (!exemplar_label_name(name) || !value || !utf8_valid(value, strlen(value)))
            return -1;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(name, labels[2 * j])) /* a Python mapping cannot say it twice */
                return -1;
        chars += strlen(name) + utf8_chars(value);
        if (chars > EXEMPLAR_MAX_CHARS)
            return -1;
    }
    char num[40];
    if (isnan(v))
        strcpy(num, "nan");
    else if (isinf(v))
        strcpy(num, v > 0 ? "inf" : "-inf");
    else
        statmap_repr_double(num, sizeof num, v);
    char ns[24];
    snprintf(ns, sizeof ns, "%" PRIu64, time_ns ? time_ns : now_ns());
    *len = 0;
    if (put_netstring(out, EXEMPLAR_CAPACITY + 1, len, num, strlen(num)) ||
        put_netstring(out, EXEMPLAR_CAPACITY + 1, len, ns, strlen(ns)))
        return -1;
    for (size_t i = 0; i < 2 * npairs; i++)
        if (put_netstring(out, EXEMPLAR_CAPACITY + 1, len, labels[i], strlen(labels[i])))
            return -1;
    return *len <= EXEMPLAR_CAPACITY ? 0 : -1;
}

/* Reads n length-prefixed strings (buf_str) at *p into NUL-terminated copies. */
static int unpack_strs(const unsigned char **p, size_t n, char **out)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t len = rd32(*p);
        out[i] = malloc((size_t)len + 1);
        if (!out[i])
            return -1;
        memcpy(out[i], *p + 4, len);
        out[i][len] = 0;
        *p += 4 + (size_t)len;
    }
    return 0;
}

/* The exemplar record of s's slot (bucket), appended at its first use; NULL if it cannot be. */
static statmap_series *exemplar_series(statmap_series *s, uint32_t slot)
{
    statmap_series **slots = __atomic_load_n(&s->exemplars, __ATOMIC_ACQUIRE);
    statmap_series *x = slots ? __atomic_load_n(&slots[slot], __ATOMIC_ACQUIRE) : NULL;
    if (x)
        return x;
    statmap_writer *w = s->w;
    writer_lock(w);
    if (!s->exemplars) {
        slots = calloc((size_t)s->nbounds + 1, sizeof *slots);
        if (!slots)
            goto out;
        __atomic_store_n(&s->exemplars, slots, __ATOMIC_RELEASE);
    }
    slots = s->exemplars;
    if (slots[slot]) {
        x = slots[slot];
        goto out;
    }
    /* The series' label names and values, from what add_series kept of its declaration. */
    const unsigned char *p = s->sig + 6;
    p += 4 + rd32(p); /* help */
    p += 4 + rd32(p); /* unit */
    size_t nl = rd32(p);
    p += 4;
    char **names = calloc(nl + 1, sizeof *names), **values = calloc(nl + 1, sizeof *values);
    const unsigned char *q = s->lvals;
    if (names && values && !unpack_strs(&p, nl, names) && !unpack_strs(&q, nl, values)) {
        statmap_meta m = {s->name, "", "", nl, (const char *const *)names, (const char *const *)values};
        double bound = slot < s->nbounds ? s->bounds[slot] : INFINITY;
        rec_spec r = {STATMAP_EXEMPLAR, 0, 0, &bound, s->type == STATMAP_HISTOGRAM ? 1 : 0, NULL, 0,
                      EXEMPLAR_CAPACITY, 8 + 2 * (8 + EXEMPLAR_CAPACITY)};
        if (add_series_locked(w, &m, &r, &x, NULL, 0) == STATMAP_OK)
            __atomic_store_n(&slots[slot], x, __ATOMIC_RELEASE);
        else
            x = NULL;
    }
    for (size_t i = 0; i < nl; i++) {
        if (names)
            free(names[i]);
        if (values)
            free(values[i]);
    }
    free(names);
    free(values);
out:
    writer_unlock(w);
    return x;
}

static int exemplar_store(statmap_series *s, uint32_t slot, double v, const char *const *labels, size_t npairs,
                          uint64_t time_ns)
{
    char text[EXEMPLAR_CAPACITY + 1];
    size_t len;
    if (exemplar_encode(text, &len, v, time_ns, labels, npairs) != 0)
        return -1;
    statmap_series *x = exemplar_series(s, slot);
    if (!x)
        return -1;
    return statmap_text_set(x, text, len);
}

int statmap_counter_add_exemplar(statmap_series *s, uint64_t n, const char *const *labels, size_t npairs,
                                 uint64_t time_ns)
{
    statmap_counter_add(s, n);
    return exemplar_store(s, 0, (double)n, labels, npairs, time_ns);
}

int statmap_counter_add_float_exemplar(statmap_series *s, double v, const char *const *labels, size_t npairs,
                                       uint64_t time_ns)
{
    if (statmap_counter_add_float(s, v) != 0)
        return -1;
    return exemplar_store(s, 0, v, labels, npairs, time_ns);
}

int statmap_histogram_observe_exemplar(statmap_series *s, double v, const char *const *labels, size_t npairs,
                                       uint64_t time_ns)
{
    if (statmap_histogram_observe(s, v) != 0)
        return -1;
    uint32_t i = 0;
    while (i < s->nbounds && !(v <= s->bounds[i]))
        i++;
    return exemplar_store(s, i, v, labels, npairs, time_ns);
}

/* ================================================================== */
/* Reader                                                              */
/* ================================================================== */

typedef struct {
    uint64_t capacity, end, state;
    uint32_t header_size;
} hdr_t;

/* Per-file counts for the reader limits (format.md section 11). */
typedef struct {
    uint64_t records, metadata;
} walk_limits;

struct statmap_reader {
    char *path;
    int fd;
    unsigned char *map;
    size_t mapsize;
    /* Copy mode (a file another user owns, or STATMAP_READ_COPY): never
     * mapped; three copies read with pread, cp[1] is the one read from. */
    int copied;
    uint64_t *cp[3];
    size_t cpcap;             /* bytes allocated in each of cp[0..2] */
    size_t cpsize;            /* bytes copied (the shortest of the three reads) */
    unsigned char *unproven;  /* per record: a latch the copies could not prove whole */
    size_t capunproven;
    walk_limits lim;          /* records and metadata walked so far */
    statmap_record *recs;     /* known types, in order */
    size_t nrecs, caprecs;
    uint64_t parsed_end;      /* records before this offset are validated */
    int corrupt;
    char problem[256];
    statmap_identity ident;
    int have_ident;
    /* snapshot storage */
    statmap_series_value *vals;
    size_t capvals, nvals;    /* nvals: entries initialised by read_values */
    uint64_t *words;          /* latch copies of the last snapshot */
    size_t capwords;
};

static void free_record(statmap_record *r)
{
    free_str(&r->name);
    free_str(&r->help);
    free_str(&r->unit);
    for (uint32_t i = 0; i < 2 * r->label_count && r->labels; i++)
        free_str(&r->labels[i]);
    free(r->labels);
    for (uint32_t i = 0; i < r->extra_count && r->extra; i++)
        free_str(&r->extra[i]);
    free(r->extra);
    free(r->params);
    memset(r, 0, sizeof *r);
}

static void free_ident(statmap_identity *id)
{
    free_str(&id->publisher);
    free_str(&id->program);
}

/* Section 9, step 2. `size` is the size of the mapped image. */
static int check_header(const unsigned char *base, size_t size, hdr_t *h, char *err, size_t errlen)
{
    if (size < STATMAP_HEADER_SIZE)
        return STATMAP_NOT_READY;
    uint64_t magic = rd64(base + H_MAGIC);
    if (magic == 0)
        return STATMAP_NOT_READY;
    if (magic == MAGIC_BE) {
        set_err(err, errlen, "big-endian statmap file (magic \"1PAMTATS\"); only little-endian files exist in version 1");
        return STATMAP_CORRUPT;
    }
    if (magic != MAGIC_LE) {
        set_err(err, errlen, "not a statmap file (bad magic)");
        return STATMAP_CORRUPT;
    }
    if (size % 8) {
        set_err(err, errlen, "file size %zu is not a multiple of 8", size);
        return STATMAP_CORRUPT;
    }
    /* State first: a writer may be half-way through the rest of the header. */
    h->state = load_acq(cword(base, H_STATE));
    if (h->state == STATE_INIT)
        return STATMAP_NOT_READY;
    uint16_t major = rd16(base + H_MAJOR);
    if (major != STATMAP_MAJOR) {
        set_err(err, errlen, "unsupported format major version %u (this reader knows %d)", major, STATMAP_MAJOR);
        return STATMAP_CORRUPT;
    }
    h->header_size = rd32(base + H_HEADER_SIZE);
    /* end before capacity: capacity is then never older than end (section 9) */
    h->end = load_acq(cword(base, H_END));
    h->capacity = load_acq(cword(base, H_CAPACITY));
    if (h->header_size % 8 || h->header_size < STATMAP_HEADER_SIZE || h->header_size > size) {
        set_err(err, errlen, "bad header_size %u", h->header_size);
        return STATMAP_CORRUPT;
    }
    if (h->state != STATE_READY && h->state != STATE_CLOSED) {
        set_err(err, errlen, "bad state %llu", (unsigned long long)h->state);
        return STATMAP_CORRUPT;
    }
    if (h->capacity < h->header_size || h->capacity > size) {
        set_err(err, errlen, "capacity %llu outside [header_size, file size %zu]", (unsigned long long)h->capacity,
                size);
        return STATMAP_CORRUPT;
    }
    if (h->end < h->header_size || h->end > h->capacity) {
        set_err(err, errlen, "end %llu outside [header_size, capacity]", (unsigned long long)h->end);
        return STATMAP_CORRUPT;
    }
    return STATMAP_OK;
}

static int read_identity(const unsigned char *base, uint64_t state, statmap_identity *id)
{
    memset(id, 0, sizeof *id);
    id->major = rd16(base + H_MAJOR);
    id->minor = rd16(base + H_MINOR);
    id->state = state;
    id->flags = rd64(base + H_FLAGS);
    id->pid = rd64(base + H_PID);
    id->start_time = rd64(base + H_START_TIME);
    memcpy(id->boot_id, base + H_BOOT_ID, 16);
    memcpy(id->instance_id, base + H_INSTANCE_ID, 16);
    id->created_ns = rd64(base + H_CREATED_NS);
    id->closed_ns = load_rlx(cword(base, H_CLOSED_NS));
    const unsigned char *pub = base + H_PUBLISHER, *prog = base + H_PROGRAM;
    const unsigned char *z1 = memchr(pub, 0, H_PUBLISHER_LEN), *z2 = memchr(prog, 0, H_PROGRAM_LEN);
    if (make_str(&id->publisher, pub, z1 ? (size_t)(z1 - pub) : H_PUBLISHER_LEN) ||
        make_str(&id->program, prog, z2 ? (size_t)(z2 - prog) : H_PROGRAM_LEN)) {
        free_ident(id);
        return -1;
    }
    return 0;
}

/* Validates the record at offset o (section 4.2 and the type's rules) and
 * parses it into *r. Returns OK, CORRUPT, or NOT_READY meaning "unknown
 * type, skip it". *size receives record_size. */
static int parse_record(const unsigned char *base, uint64_t o, uint64_t end, statmap_record *r, uint32_t *size,
                        uint32_t *meta, char *err, size_t errlen)
{
#define BAD(...)                                                                                                      \
    do {                                                                                                              \
        char m_[200];                                                                                                 \
        snprintf(m_, sizeof m_, __VA_ARGS__);                                                                         \
        set_err(err, errlen, "record at offset %llu: %s", (unsigned long long)o, m_);                                 \
        free_record(r);                                                                                               \
        return STATMAP_CORRUPT;                                                                                       \
    } while (0)
    memset(r, 0, sizeof *r);
    if (o % 8 || o + R_HEADER > end)
        BAD("truncated record header (end %llu)", (unsigned long long)end);
    /* Read every field once: the bytes are shared with an untrusted writer. */
    unsigned char h[R_HEADER];
    memcpy(h, base + o, R_HEADER);
    uint32_t rsize = rd32(h + R_SIZE), voff = rd32(h + R_VALUE_OFFSET), vsize = rd32(h + R_VALUE_SIZE);
    uint32_t nlabels = rd32(h + R_LABEL_COUNT), nparams = rd32(h + R_PARAM_COUNT);
    uint32_t nstrings = rd32(h + R_STRING_COUNT), ssize = rd32(h + R_STRINGS_SIZE), cap = rd32(h + R_CAPACITY);
    uint16_t type = rd16(h + R_TYPE), flags = rd16(h + R_FLAGS), agg = rd16(h + R_AGG);
    if (rsize < R_HEADER || rsize % 8 || rsize > MAX_RECORD_SIZE || o + rsize > end)
        BAD("bad record_size %u", rsize);
    if (nparams > MAX_PARAMS || nstrings > MAX_STRINGS)
        BAD("too many params (%u) or strings (%u)", nparams, nstrings);
    if ((uint64_t)nstrings < 3 + 2 * (uint64_t)nlabels)
        BAD("string_count %u below 3 + 2 * label_count %u", nstrings, nlabels);
    uint64_t meta_end = R_HEADER + 8 * (uint64_t)nparams + ssize;
    if (meta_end > rsize)
        BAD("params and strings (%llu bytes) pass record_size %u", (unsigned long long)meta_end, rsize);
    if (voff % 8 || voff < meta_end || (uint64_t)voff + vsize > rsize)
        BAD("bad value_offset %u / value_size %u", voff, vsize);
    /* string table */
    const unsigned char *st = base + o + R_HEADER + 8 * (uint64_t)nparams;
    uint32_t pos = 0;
    uint32_t *lens = malloc((nstrings ? nstrings : 1) * sizeof *lens);
    uint32_t *offs = malloc((nstrings ? nstrings : 1) * sizeof *offs);
    if (!lens || !offs) {
        free(lens);
        free(offs);
        BAD("out of memory");
    }
    for (uint32_t i = 0; i < nstrings; i++) {
        if ((uint64_t)pos + 4 > ssize) {
            free(lens);
            free(offs);
            BAD("string %u passes the string table", i);
        }
        uint32_t len = rd32(st + pos);
        if (len > MAX_STRING_LEN || (uint64_t)pos + 4 + len > ssize) {
            free(lens);
            free(offs);
            BAD("string %u (length %u) passes the string table or is too long", i, len);
        }
        lens[i] = len;
        offs[i] = pos + 4;
        pos += 4 + len;
    }
    if (pos != ssize) {
        free(lens);
        free(offs);
        BAD("strings use %u bytes, strings_size says %u", pos, ssize);
    }
    *size = rsize;
    *meta = voff; /* the record's bytes before its value area */
    /* An exemplar record (section 15) of another shape is skipped as an unknown record, never an error:
     * the reference reader (exemplar_read.usable) does so; its params, flags and strings are not checked. */
    int exemplar = type == STATMAP_EXEMPLAR && nparams <= 1 && cap > 0 && cap <= MAX_TEXT_CAPACITY && cap % 8 == 0 &&
                   vsize == 8 + 2 * (8 + (uint64_t)cap);
    if ((type < STATMAP_COUNTER || type > STATMAP_ENUM) && type != STATMAP_EXP_HISTOGRAM && !exemplar) {
        free(lens);
        free(offs);
        return STATMAP_NOT_READY; /* unknown type: skipped */
    }
    /* known type: its own rules */
    uint32_t nextra = nstrings - 3 - 2 * nlabels;
    uint64_t want = 0;
    const char *why = NULL;
    /* "Unknown flag bits" (section 4.2) read as: bits no 1.x type defines.
     * The reference reader accepts FLOAT or LOG_BUCKETS on any type (and
     * they mean nothing there); see docs/implementations.md. */
    uint16_t allowed = STATMAP_FLAG_FLOAT | STATMAP_FLAG_LOG_BUCKETS;
    switch (type) {
    case STATMAP_COUNTER:
    case STATMAP_GAUGE:
    case STATMAP_ENUM:
        want = 8;
        break;
    case STATMAP_HISTOGRAM:
        want = 8 + 2 * 8 * ((uint64_t)nparams + 3);
        break;
    case STATMAP_SUMMARY:
        want = 40;
        break;
    case STATMAP_TEXT:
        if (cap > MAX_TEXT_CAPACITY)
            why = "text capacity above 1 MiB";
        want = 8 + 2 * (8 + align8(cap));
        break;
    case STATMAP_EXP_HISTOGRAM:
        if (nparams != 1 || cap < 1 || cap > EXP_MAX_BUCKETS)
            why = "needs one param and 1..2048 buckets";
        want = 8 + 2 * 8 * ((uint64_t)STATMAP_EXP_HEAD + 2 * (uint64_t)cap);
        break;
    case STATMAP_EXEMPLAR:
        want = vsize;
        allowed = 0xffff;
        break;
    case STATMAP_INFO:
        want = 0;
        if (nextra % 2)
            why = "info needs an even number of key/value strings";
        break;
    }
    if (type == STATMAP_ENUM && nextra < 1)
        why = "enum without states";
    if (type != STATMAP_ENUM && type != STATMAP_INFO && !exemplar && nextra)
        why = "extra strings on a type that has none";
    if (why)
        ;
    else if (flags & ~allowed)
        why = "unknown flag bits";
    else if (vsize != want)
        why = "value_size does not match the type";
    else if (nparams && type != STATMAP_HISTOGRAM && type != STATMAP_EXP_HISTOGRAM && !exemplar)
        why = "parameters on a type that has none";
    if (why) {
        free(lens);
        free(offs);
        BAD("%s %s", statmap_type_name(type), why);
    }
    r->offset = o;
    r->type = type;
    r->flags = flags;
    r->aggregation = agg;
    r->value_offset = voff;
    r->value_size = vsize;
    r->record_size = rsize;
    r->capacity = cap;
    r->label_count = nlabels;
    r->param_count = nparams;
    r->extra_count = nextra;
    if (nparams) {
        r->params = malloc(nparams * sizeof(double));
        if (!r->params) {
            free(lens);
            free(offs);
            BAD("out of memory");
        }
        for (uint32_t i = 0; i < nparams; i++) {
            double b = u2d(rd64(base + o + R_HEADER + 8 * (uint64_t)i));
            r->params[i] = b;
            if (!exemplar && (!isfinite(b) || (i && !(b > r->params[i - 1])))) {
                free(lens);
                free(offs);
                BAD("histogram bounds not finite and strictly increasing");
            }
            if (type == STATMAP_EXP_HISTOGRAM && !(b >= 0)) {
                free(lens);
                free(offs);
                BAD("exponential histogram zero threshold below 0");
            }
        }
    }
    r->labels = calloc(2 * (size_t)nlabels + 1, sizeof *r->labels);
    r->extra = calloc((size_t)nextra + 1, sizeof *r->extra);
    int oom = !r->labels || !r->extra;
    oom = oom || make_str(&r->name, st + offs[0], lens[0]) || make_str(&r->help, st + offs[1], lens[1]) ||
          make_str(&r->unit, st + offs[2], lens[2]);
    for (uint32_t i = 0; !oom && i < 2 * nlabels; i++)
        oom = make_str(&r->labels[i], st + offs[3 + i], lens[3 + i]) != 0;
    for (uint32_t i = 0; !oom && i < nextra; i++)
        oom = make_str(&r->extra[i], st + offs[3 + 2 * nlabels + i], lens[3 + 2 * nlabels + i]) != 0;
    free(lens);
    free(offs);
    if (oom)
        BAD("out of memory");
    return STATMAP_OK;
#undef BAD
}

/* Walks records [from, end), appending known ones to the arrays. */
static int walk_records(const unsigned char *base, uint64_t from, uint64_t end, statmap_record **recs, size_t *nrecs,
                        size_t *caprecs, uint64_t *parsed_end, walk_limits *lim, char *err, size_t errlen)
{
    uint64_t o = from;
    while (o < end) {
        if (lim->records >= MAX_RECORDS) {
            set_err(err, errlen, "more than %llu records: over the reader limit (format.md 11)",
                    (unsigned long long)MAX_RECORDS);
            return STATMAP_CORRUPT;
        }
        statmap_record r;
        uint32_t size = 0, meta = 0;
        int rc = parse_record(base, o, end, &r, &size, &meta, err, errlen);
        if (rc == STATMAP_CORRUPT)
            return rc;
        lim->records++;
        lim->metadata += meta;
        if (lim->metadata > MAX_METADATA) {
            if (rc == STATMAP_OK)
                free_record(&r);
            set_err(err, errlen, "more than %llu bytes of record metadata: over the reader limit (format.md 11)",
                    (unsigned long long)MAX_METADATA);
            return STATMAP_CORRUPT;
        }
        if (rc == STATMAP_OK) {
            if (*nrecs == *caprecs) {
                size_t c = *caprecs ? 2 * *caprecs : 32;
                statmap_record *p = realloc(*recs, c * sizeof *p);
                if (!p) {
                    free_record(&r);
                    set_err(err, errlen, "out of memory");
                    return STATMAP_ERROR;
                }
                *recs = p;
                *caprecs = c;
            }
            (*recs)[(*nrecs)++] = r;
        }
        o += size;
        *parsed_end = o;
    }
    return STATMAP_OK;
}

/* Section 6 reader. Copies `nwords` words of the stable copy into out.
 * For text (text_cap > 0 means a text latch), copies only the words the
 * length needs. Returns 1 if consistent, 0 if the retries ran out. */
static int latch_read(const unsigned char *value, uint64_t copy_size, uint64_t *out, size_t nwords, int is_text,
                      uint64_t text_cap)
{
    const uint64_t *seq = cword(value, 0);
    for (int round = 0; round <= LATCH_YIELDS; round++) {
        for (int i = 0; i < LATCH_FAST_TRIES; i++) {
            uint64_t s1 = load_acq(seq);
            const uint64_t *c = cword(value, 8 + (s1 & 1) * copy_size);
            size_t n = nwords;
            if (is_text) {
                out[0] = load_rlx(c);
                uint64_t len = out[0] > text_cap ? text_cap : out[0];
                n = 1 + (size_t)(align8(len) / 8);
            }
            for (size_t k = is_text ? 1 : 0; k < n; k++)
                out[k] = load_rlx(c + k);
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            if (load_rlx(seq) == s1)
                return 1;
        }
        sched_yield();
    }
    return 0;
}

static int words_reserve(uint64_t **words, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 1024;
    while (c < need)
        c *= 2;
    uint64_t *p = realloc(*words, c * sizeof *p);
    if (!p)
        return -1;
    *words = p;
    *cap = c;
    return 0;
}

/* Section 13's checks of an exponential histogram's stable copy: NULL if it
 * is sound, else what is wrong. */
static const char *exp_check(const uint64_t *w, uint32_t m)
{
    int64_t scale = (int64_t)w[STATMAP_EXP_SCALE];
    if (scale < -4 || scale > 20)
        return "scale outside -4..20";
    uint64_t total = w[STATMAP_EXP_ZERO];
    for (int sign = 0; sign < 2; sign++) {
        int64_t lo = (int64_t)w[STATMAP_EXP_POS_LO + 2 * sign];
        uint64_t len = w[STATMAP_EXP_POS_LEN + 2 * sign];
        if (len > m)
            return "bucket range longer than its slots";
        for (uint64_t j = 0; j < len; j++) {
            int64_t r = (int64_t)(((__int128)lo + (__int128)j) % (__int128)m);
            uint64_t c = w[STATMAP_EXP_HEAD + (uint64_t)sign * m + (uint64_t)(r < 0 ? r + m : r)];
            if (total + c < total)
                return "bucket counts overflow";
            total += c;
        }
    }
    return total == w[STATMAP_EXP_COUNT] ? NULL : "bucket counts do not add up to the count";
}

/* A histogram's or summary's lifetime min and max, after its value area (format 1.2, docs/format.md
 * 5.1), read after its latch showed a count: unknown without observations, from older writers, or
 * when not min <= max. */
static void read_extremes(const unsigned char *base, const statmap_record *r, statmap_value *out)
{
    uint64_t at = (uint64_t)r->value_offset + r->value_size;
    if (!out->u || rd16(base + H_MINOR) < 2 || r->record_size < at + 16)
        return;
    double lo = u2d(load_acq(cword(base, r->offset + at))), hi = u2d(load_acq(cword(base, r->offset + at + 8)));
    if (lo <= hi) {
        out->has_extremes = 1;
        out->min = lo;
        out->max = hi;
    }
}

static int exemplar_text(statmap_str *out, const char *raw, size_t n);

/* Reads every value. Latch copies go into *words (grown as needed); the
 * returned values point into it, so fix up bucket pointers afterwards. */
static int read_values(const unsigned char *base, const statmap_record *recs, size_t nrecs,
                       const unsigned char *unproven, statmap_series_value *vals, uint64_t **words, size_t *capwords,
                       char *err, size_t errlen)
{
    /* First pass: how many words. */
    size_t need = 0;
    for (size_t i = 0; i < nrecs; i++) {
        const statmap_record *r = &recs[i];
        if (r->type == STATMAP_HISTOGRAM)
            need += (size_t)r->param_count + 3;
        else if (r->type == STATMAP_EXP_HISTOGRAM)
            need += STATMAP_EXP_HEAD + 2 * (size_t)r->capacity;
        else if (r->type == STATMAP_TEXT || r->type == STATMAP_EXEMPLAR)
            need += 1 + (size_t)(align8(r->capacity) / 8);
    }
    if (words_reserve(words, capwords, need + 2)) {
        set_err(err, errlen, "out of memory");
        return STATMAP_ERROR;
    }
    size_t at = 0;
    uint64_t sum_buf[2];
    for (size_t i = 0; i < nrecs; i++) {
        const statmap_record *r = &recs[i];
        const unsigned char *v = base + r->offset + r->value_offset;
        statmap_series_value *sv = &vals[i];
        memset(sv, 0, sizeof *sv);
        sv->record = r;
        sv->value.readable = 1;
        switch (r->type) {
        case STATMAP_COUNTER:
        case STATMAP_GAUGE:
        case STATMAP_ENUM: {
            uint64_t x = load_acq(cword(v, 0));
            sv->value.u = x;
            sv->value.f = u2d(x);
            if (r->type == STATMAP_ENUM && x >= r->extra_count)
                sv->value.readable = 0; /* no such state: no value (as the reference reader) */
            break;
        }
        case STATMAP_SUMMARY:
            if ((unproven && unproven[i]) || !latch_read(v, 16, sum_buf, 2, 0, 0)) {
                sv->value.readable = 0;
                break;
            }
            sv->value.u = sum_buf[0];
            sv->value.f = u2d(sum_buf[1]);
            read_extremes(base, r, &sv->value);
            break;
        case STATMAP_HISTOGRAM: {
            size_t n = (size_t)r->param_count + 3;
            uint64_t *w = *words + at;
            at += n;
            if ((unproven && unproven[i]) || !latch_read(v, 8 * (uint64_t)n, w, n, 0, 0)) {
                sv->value.readable = 0;
                break;
            }
            uint64_t total = 0;
            for (size_t k = 2; k < n; k++) {
                if (total + w[k] < total) {
                    total = 0;
                    w[0] = 1; /* force the mismatch below */
                    break;
                }
                total += w[k];
            }
            if (total != w[0]) {
                set_err(err, errlen, "record at offset %llu: histogram count %llu is not the sum of its buckets",
                        (unsigned long long)r->offset, (unsigned long long)w[0]);
                return STATMAP_CORRUPT;
            }
            sv->value.u = w[0];
            sv->value.f = u2d(w[1]);
            sv->value.buckets = (uint64_t *)(uintptr_t)(2 + (at - n)); /* index, fixed up by the caller */
            read_extremes(base, r, &sv->value);
            break;
        }
        case STATMAP_EXP_HISTOGRAM: {
            size_t n = STATMAP_EXP_HEAD + 2 * (size_t)r->capacity;
            uint64_t *w = *words + at;
            at += n;
            if ((unproven && unproven[i]) || !latch_read(v, 8 * (uint64_t)n, w, n, 0, 0)) {
                sv->value.readable = 0;
                break;
            }
            const char *bad = exp_check(w, r->capacity);
            if (bad) {
                set_err(err, errlen, "record at offset %llu: exponential histogram %s", (unsigned long long)r->offset,
                        bad);
                return STATMAP_CORRUPT;
            }
            sv->value.u = w[STATMAP_EXP_COUNT];
            sv->value.f = u2d(w[STATMAP_EXP_SUM]);
            sv->value.exp = (uint64_t *)(uintptr_t)(at - n); /* index, fixed up below */
            break;
        }
        case STATMAP_TEXT:
        case STATMAP_EXEMPLAR: {
            uint64_t copy = 8 + align8(r->capacity);
            size_t n = (size_t)(copy / 8);
            uint64_t *w = *words + at;
            at += n;
            if ((unproven && unproven[i]) || !latch_read(v, copy, w, n, 1, r->capacity)) {
                sv->value.readable = 0;
                break;
            }
            if (r->type == STATMAP_EXEMPLAR) {
                /* no exemplar when torn or malformed; the file is fine (as the reference reader) */
                int got = w[0] <= r->capacity ? exemplar_text(&sv->value.text, (const char *)(w + 1), (size_t)w[0]) : -1;
                if (got == -2) {
                    set_err(err, errlen, "out of memory");
                    return STATMAP_ERROR;
                }
                sv->value.readable = got == 0;
                break;
            }
            if (w[0] > r->capacity) {
                set_err(err, errlen, "record at offset %llu: text length %llu above its capacity %u",
                        (unsigned long long)r->offset, (unsigned long long)w[0], r->capacity);
                return STATMAP_CORRUPT;
            }
            if (make_str(&sv->value.text, (const unsigned char *)(w + 1), (size_t)w[0])) {
                set_err(err, errlen, "out of memory");
                return STATMAP_ERROR;
            }
            break;
        }
        default:
            break;
        }
    }
    for (size_t i = 0; i < nrecs; i++) {
        if (vals[i].record->type == STATMAP_HISTOGRAM && vals[i].value.readable)
            vals[i].value.buckets = *words + (size_t)(uintptr_t)vals[i].value.buckets;
        if (vals[i].record->type == STATMAP_EXP_HISTOGRAM && vals[i].value.readable)
            vals[i].value.exp = *words + (size_t)(uintptr_t)vals[i].value.exp;
    }
    return STATMAP_OK;
}

static void free_values(statmap_series_value *vals, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free_str(&vals[i].value.text);
}

int statmap_read_buffer(const unsigned char *data, size_t size, char *err, size_t errlen)
{
    /* The reader needs 8-aligned words: work on an aligned copy. */
    size_t words = size / 8 + 1;
    uint64_t *copy = calloc(words, 8);
    if (!copy)
        return STATMAP_ERROR;
    memcpy(copy, data, size);
    const unsigned char *base = (const unsigned char *)copy;
    hdr_t h;
    int rc = check_header(base, size, &h, err, errlen);
    statmap_record *recs = NULL;
    size_t nrecs = 0, caprecs = 0;
    uint64_t parsed = 0;
    uint64_t *w = NULL;
    size_t capw = 0;
    statmap_series_value *vals = NULL;
    if (rc == STATMAP_OK) {
        statmap_identity id;
        if (read_identity(base, h.state, &id) == 0)
            free_ident(&id);
        walk_limits lim = {0, 0};
        rc = walk_records(base, h.header_size, h.end, &recs, &nrecs, &caprecs, &parsed, &lim, err, errlen);
    }
    if (rc == STATMAP_OK) {
        vals = calloc(nrecs + 1, sizeof *vals);
        rc = vals ? read_values(base, recs, nrecs, NULL, vals, &w, &capw, err, errlen) : STATMAP_ERROR;
        if (vals)
            free_values(vals, nrecs);
    }
    for (size_t i = 0; i < nrecs; i++)
        free_record(&recs[i]);
    free(recs);
    free(vals);
    free(w);
    free(copy);
    return rc;
}

/* (Re)maps the file at its current size (st_size of the caller's fstat). */
static int remap(statmap_reader *r, size_t size, char *err, size_t errlen)
{
    if (r->map && size == r->mapsize)
        return STATMAP_OK;
    if (r->map && size < r->mapsize) {
        set_err(err, errlen, "file shrank from %zu to %zu bytes", r->mapsize, size);
        return STATMAP_CORRUPT;
    }
    if (r->map)
        munmap(r->map, r->mapsize);
    r->map = NULL;
    r->mapsize = 0;
    if (size < STATMAP_HEADER_SIZE)
        return STATMAP_NOT_READY;
    void *m = mmap(NULL, size, PROT_READ, MAP_SHARED, r->fd, 0);
    if (m == MAP_FAILED) {
        set_err(err, errlen, "cannot map: %s", strerror(errno));
        return STATMAP_ERROR;
    }
    r->map = m;
    r->mapsize = size;
    return STATMAP_OK;
}

/* pread until n bytes or the end of the file: the bytes read, or -1. */
static ssize_t pread_full(int fd, unsigned char *buf, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(fd, buf + got, n - got, (off_t)(off + got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        if (k == 0)
            break; /* shorter now than when we looked: the caller sees fewer bytes */
        got += (size_t)k;
    }
    return (ssize_t)got;
}

/* Three copies of the file's first n bytes in a row; cpsize becomes the
 * shortest read (the file may shrink meanwhile). n <= MAX_FILE_SIZE. */
static int copy_three(statmap_reader *r, size_t n, char *err, size_t errlen)
{
    size_t need = (size_t)align8(n < STATMAP_HEADER_SIZE ? STATMAP_HEADER_SIZE : n);
    if (need > r->cpcap) {
        for (int i = 0; i < 3; i++) {
            free(r->cp[i]);
            r->cp[i] = calloc(need / 8, 8); /* aligned for the word loads of the reader */
        }
        r->cpcap = r->cp[0] && r->cp[1] && r->cp[2] ? need : 0;
        if (!r->cpcap) {
            r->cpsize = 0;
            set_err(err, errlen, "out of memory for copies of %zu bytes", n);
            return STATMAP_ERROR;
        }
    }
    size_t least = n;
    for (int i = 0; i < 3; i++) {
        ssize_t k = pread_full(r->fd, (unsigned char *)r->cp[i], n, 0);
        if (k < 0) {
            r->cpsize = 0;
            set_err(err, errlen, "cannot read: %s", strerror(errno));
            return STATMAP_ERROR;
        }
        if ((size_t)k < least)
            least = (size_t)k;
    }
    r->cpsize = least;
    return STATMAP_OK;
}

/* Copy mode's remap: copies of the file up to its end of records (records
 * before end are complete, and end only grows). *image: the size to check
 * the header against (the file's, when the copies hold a whole header). */
static int recopy(statmap_reader *r, size_t size, size_t *image, char *err, size_t errlen)
{
    unsigned char head[STATMAP_HEADER_SIZE];
    ssize_t k = pread_full(r->fd, head, size < sizeof head ? size : sizeof head, 0);
    if (k < 0) {
        set_err(err, errlen, "cannot read: %s", strerror(errno));
        return STATMAP_ERROR;
    }
    size_t n = (size_t)k;
    if (n == sizeof head && rd64(head + H_MAGIC) == MAGIC_LE) {
        uint64_t end = rd64(head + H_END);
        n = end < size ? (size_t)end : size;
        if (n < sizeof head)
            n = sizeof head;
    }
    int rc = copy_three(r, n, err, errlen);
    if (rc != STATMAP_OK)
        return rc;
    if (r->cpsize < n) {
        /* Only truncation shortens a statmap file: never read what is left as the whole file. */
        set_err(err, errlen, "file shrank to %zu bytes while read (it had %zu)", r->cpsize, n);
        return STATMAP_CORRUPT;
    }
    *image = r->cpsize >= STATMAP_HEADER_SIZE ? size : r->cpsize;
    return STATMAP_OK;
}

/* Brings the mapping (or the copies) up to the file as it is now. *image:
 * the size the header is checked against. */
static int sync_file(statmap_reader *r, size_t *image, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(r->fd, &st) != 0) {
        set_err(err, errlen, "cannot stat: %s", strerror(errno));
        return STATMAP_ERROR;
    }
    if (st.st_size < 0 || (uint64_t)st.st_size > MAX_FILE_SIZE) {
        set_err(err, errlen, "file size %lld exceeds the reader limit of %llu bytes (format.md 11)",
                (long long)st.st_size, (unsigned long long)MAX_FILE_SIZE);
        return STATMAP_CORRUPT;
    }
    size_t size = (size_t)st.st_size;
    if (!r->copied && st.st_uid != geteuid()) {
        /* Another user can shrink this file under a mapping (SIGBUS):
         * from now on it is read through copies, never mapped. */
        if (r->map)
            munmap(r->map, r->mapsize);
        r->map = NULL;
        r->mapsize = 0;
        r->copied = 1;
    }
    if (r->copied)
        return recopy(r, size, image, err, errlen);
    *image = size;
    return remap(r, size, err, errlen);
}

static const unsigned char *image_base(const statmap_reader *r)
{
    return r->copied ? (const unsigned char *)r->cp[1] : r->map;
}

/* Maps or copies (again if needed) and checks the header. */
static int refresh(statmap_reader *r, hdr_t *h, char *err, size_t errlen)
{
    for (int attempt = 0;; attempt++) {
        size_t image = 0;
        int rc = sync_file(r, &image, err, errlen);
        if (rc != STATMAP_OK)
            return rc;
        rc = check_header(image_base(r), image, h, err, errlen);
        if (rc == STATMAP_CORRUPT && attempt == 0) {
            /* capacity or end past what we read: the file may have grown */
            struct stat st;
            if (fstat(r->fd, &st) == 0 && st.st_size > 0 && (uint64_t)st.st_size > image)
                continue;
        }
        if (rc == STATMAP_OK && r->copied && h->end > r->cpsize)
            h->end = r->cpsize; /* the copies hold the records up to the end read just before them */
        return rc;
    }
}

static int latched(unsigned type)
{
    return type == STATMAP_HISTOGRAM || type == STATMAP_SUMMARY || type == STATMAP_TEXT ||
           type == STATMAP_EXP_HISTOGRAM || type == STATMAP_EXEMPLAR;
}

/* Copy mode: makes every latch of the middle copy one the writer did not
 * touch while it was copied. Three reads in a row: a latch whose seq is the
 * same in the first and the third was not written while the second was
 * read (seq only grows, and its stable copy is written only after seq
 * moved), so the second holds it whole. Latches that moved are copied
 * again; after COPY_ROUNDS each is read alone with the latch protocol
 * through pread. One still moving after that is marked unproven (read as
 * unreadable, as a mapped read whose retries ran out). */
static int prove_latches(statmap_reader *r, char *err, size_t errlen)
{
    if (r->nrecs > r->capunproven) {
        unsigned char *p = realloc(r->unproven, r->nrecs);
        if (!p) {
            set_err(err, errlen, "out of memory");
            return STATMAP_ERROR;
        }
        r->unproven = p;
        r->capunproven = r->nrecs;
    }
    size_t n = r->cpsize, moving = 0;
    for (int round = 0;; round++) {
        moving = 0;
        const unsigned char *first = (const unsigned char *)r->cp[0], *last = (const unsigned char *)r->cp[2];
        for (size_t i = 0; i < r->nrecs; i++) {
            const statmap_record *rec = &r->recs[i];
            uint64_t off = rec->offset + rec->value_offset;
            /* records lie before end <= n (checked by the walk); checked again, cheaply */
            r->unproven[i] = latched(rec->type) && (off + rec->value_size > n || memcmp(first + off, last + off, 8));
            moving += r->unproven[i];
        }
        if (!moving || round == COPY_ROUNDS)
            break;
        sched_yield();
        int rc = copy_three(r, n, err, errlen);
        if (rc != STATMAP_OK)
            return rc;
        if (r->cpsize < n) {
            set_err(err, errlen, "file shrank to %zu bytes while read (records end at %zu)", r->cpsize, n);
            return STATMAP_CORRUPT;
        }
        /* n >= the header (refresh checked it): still a ready statmap file? */
        const unsigned char *mid = (const unsigned char *)r->cp[1];
        uint64_t state = rd64(mid + H_STATE);
        if (rd64(mid + H_MAGIC) != MAGIC_LE || (state != STATE_READY && state != STATE_CLOSED)) {
            set_err(err, errlen, "header overwritten while read (magic or state)");
            return STATMAP_CORRUPT;
        }
    }
    unsigned char *mid = (unsigned char *)r->cp[1];
    for (size_t i = 0; moving && i < r->nrecs; i++) {
        if (!r->unproven[i])
            continue;
        const statmap_record *rec = &r->recs[i];
        uint64_t off = rec->offset + rec->value_offset;
        if (rec->value_size < 8 || off + rec->value_size > n)
            continue; /* stays unproven */
        uint64_t copy = (rec->value_size - 8) / 2;
        for (int t = 0; t < COPY_LATCH_TRIES; t++) {
            unsigned char s1[8], s2[8];
            if (pread_full(r->fd, s1, 8, off) != 8)
                break;
            uint64_t start = off + 8 + (rd64(s1) & 1) * copy;
            ssize_t k = pread_full(r->fd, mid + start, (size_t)copy, start);
            if (k < 0 || pread_full(r->fd, s2, 8, off) != 8)
                break;
            if ((uint64_t)k == copy && !memcmp(s1, s2, 8)) {
                memcpy(mid + off, s1, 8);
                r->unproven[i] = 0;
                break;
            }
        }
    }
    return STATMAP_OK;
}

int statmap_reader_open(statmap_reader **out, const char *path, char *err, size_t errlen)
{
    return statmap_reader_open_flags(out, path, 0, err, errlen);
}

int statmap_reader_copied(const statmap_reader *r) { return r ? r->copied : 0; }

int statmap_reader_open_flags(statmap_reader **out, const char *path, unsigned flags, char *err, size_t errlen)
{
    *out = NULL;
    if (flags & ~(unsigned)STATMAP_READ_COPY) {
        set_err(err, errlen, "unknown reader flags 0x%x", flags);
        return STATMAP_ERROR;
    }
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        set_err(err, errlen, "cannot open: %s", strerror(errno));
        return STATMAP_ERROR;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        set_err(err, errlen, "not a regular file");
        close(fd);
        return STATMAP_CORRUPT;
    }
    statmap_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(path))) {
        free(r);
        close(fd);
        set_err(err, errlen, "out of memory");
        return STATMAP_ERROR;
    }
    r->fd = fd;
    r->copied = (flags & STATMAP_READ_COPY) || st.st_uid != geteuid();
    hdr_t h;
    int rc = refresh(r, &h, err, errlen);
    if (rc != STATMAP_OK && rc != STATMAP_NOT_READY) {
        statmap_reader_free(r);
        return rc;
    }
    *out = r;
    return rc;
}

static const char *liveness(statmap_reader *r)
{
    if (r->ident.state == STATE_CLOSED)
        return "closed";
    if (flock(r->fd, LOCK_SH | LOCK_NB) == 0) {
        flock(r->fd, LOCK_UN);
        return "dead";
    }
    if (errno == EWOULDBLOCK)
        return "alive";
    /* No locks here: fall back to identity (section 9). */
    unsigned char boot[16];
    boot_id(boot);
    if (memcmp(boot, r->ident.boot_id, 16) || r->ident.pid == 0 || r->ident.pid > INT_MAX)
        return "dead";
    if (kill((pid_t)r->ident.pid, 0) != 0 && errno == ESRCH)
        return "dead";
    if (r->ident.start_time) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%llu/stat", (unsigned long long)r->ident.pid);
        if (stat_start_time(path) != r->ident.start_time)
            return "dead";
    }
    return "alive";
}

static int reader_snapshot(statmap_reader *r, statmap_snapshot *snap, char *err, size_t errlen);

int statmap_reader_snapshot(statmap_reader *r, statmap_snapshot *snap, char *err, size_t errlen)
{
    char msg[256] = "";
    int rc = reader_snapshot(r, snap, msg, sizeof msg);
    if (rc == STATMAP_CORRUPT && !r->corrupt) {
        r->corrupt = 1;
        snprintf(r->problem, sizeof r->problem, "%s", msg);
    }
    if (rc != STATMAP_OK)
        set_err(err, errlen, "%s", msg);
    return rc;
}

static int reader_snapshot(statmap_reader *r, statmap_snapshot *snap, char *err, size_t errlen)
{
    memset(snap, 0, sizeof *snap);
    free_values(r->vals, r->nvals);
    r->nvals = 0;
    if (r->corrupt) {
        set_err(err, errlen, "%s", r->problem);
        return STATMAP_CORRUPT;
    }
    hdr_t h;
    int rc = refresh(r, &h, err, errlen);
    if (rc == STATMAP_NOT_READY) {
        snap->liveness = "not-ready";
        return rc;
    }
    if (rc == STATMAP_OK && h.end < r->parsed_end) {
        set_err(err, errlen, "end moved backwards");
        rc = STATMAP_CORRUPT;
    }
    if (rc == STATMAP_OK) {
        if (r->have_ident)
            free_ident(&r->ident);
        r->have_ident = 0;
        if (read_identity(image_base(r), h.state, &r->ident) != 0) {
            set_err(err, errlen, "out of memory");
            return STATMAP_ERROR;
        }
        r->have_ident = 1;
        rc = walk_records(image_base(r), r->parsed_end ? r->parsed_end : h.header_size, h.end, &r->recs,
                          &r->nrecs, &r->caprecs, &r->parsed_end, &r->lim, err, errlen);
    }
    if (rc == STATMAP_OK && r->copied)
        rc = prove_latches(r, err, errlen);
    if (rc == STATMAP_OK && r->nrecs + 1 > r->capvals) {
        statmap_series_value *p = realloc(r->vals, (r->nrecs + 1) * sizeof *p);
        if (!p) {
            set_err(err, errlen, "out of memory");
            return STATMAP_ERROR;
        }
        r->vals = p;
        r->capvals = r->nrecs + 1;
    }
    if (rc == STATMAP_OK) {
        memset(r->vals, 0, r->nrecs * sizeof *r->vals);
        r->nvals = r->nrecs;
        rc = read_values(image_base(r), r->recs, r->nrecs, r->copied ? r->unproven : NULL, r->vals, &r->words,
                         &r->capwords, err, errlen);
    }
    if (rc != STATMAP_OK)
        return rc;
    snap->identity = r->ident;
    snap->liveness = liveness(r);
    snap->count = r->nrecs;
    snap->series = r->vals;
    return STATMAP_OK;
}

void statmap_reader_free(statmap_reader *r)
{
    if (!r)
        return;
    if (r->vals)
        free_values(r->vals, r->nvals);
    free(r->vals);
    for (size_t i = 0; i < r->nrecs; i++)
        free_record(&r->recs[i]);
    free(r->recs);
    free(r->words);
    if (r->have_ident)
        free_ident(&r->ident);
    if (r->map)
        munmap(r->map, r->mapsize);
    for (int i = 0; i < 3; i++)
        free(r->cp[i]);
    free(r->unproven);
    close(r->fd);
    free(r->path);
    free(r);
}

/* ---- exemplars (section 15) ---- */

/* One netstring at data[*pos..n): its bytes in *f; -1 if malformed (as _knob_layout.decode_netstrings). */
static int netstring(const char *data, size_t n, size_t *pos, statmap_span *f)
{
    size_t p = *pos, d = 0;
    uint64_t len = 0;
    while (p + d < n && d < 11 && data[p + d] >= '0' && data[p + d] <= '9')
        len = len * 10 + (uint64_t)(data[p + d++] - '0');
    if (d == 0 || d > 10 || (d > 1 && data[p] == '0') || p + d >= n || data[p + d] != ':')
        return -1;
    size_t start = p + d + 1;
    if (len >= n - start || data[start + len] != ',')
        return -1;
    f->s = data + start;
    f->len = (size_t)len;
    *pos = start + (size_t)len + 1;
    return 0;
}

/* The netstrings of an exemplar's raw text with each field made valid UTF-8 apart (U+FFFD), as Python
 * decodes them: 0, -1 if malformed, -2 out of memory. */
static int exemplar_text(statmap_str *out, const char *raw, size_t n)
{
    char *buf = malloc(11 * n + 1); /* a field of k >= 0 bytes: <= 3k replaced + 22 framing, k + 3 <= n */
    size_t pos = 0, at = 0;
    if (!buf)
        return -2;
    while (pos < n) {
        statmap_span f;
        statmap_str u;
        if (netstring(raw, n, &pos, &f)) {
            free(buf);
            return -1;
        }
        if (make_str(&u, (const unsigned char *)f.s, f.len)) {
            free(buf);
            return -2;
        }
        at += (size_t)sprintf(buf + at, "%zu:", u.len);
        memcpy(buf + at, u.s, u.len);
        at += u.len;
        buf[at++] = ',';
        free(u.s);
    }
    int rc = make_str(out, (const unsigned char *)buf, at) ? -2 : 0;
    free(buf);
    return rc;
}

int statmap_exemplar_decode(const statmap_str *text, statmap_exemplar *out)
{
    statmap_span value, ns;
    size_t pos = 0, n = text->len;
    const char *d = text->s;
    if (!n || netstring(d, n, &pos, &value) || pos >= n || netstring(d, n, &pos, &ns))
        return -1;
    out->label_count = 0;
    while (pos < n) {
        if (out->label_count >= STATMAP_EXEMPLAR_MAX_LABELS)
            return -1;
        statmap_span *l = &out->labels[2 * out->label_count];
        if (netstring(d, n, &pos, &l[0]) || pos >= n || netstring(d, n, &pos, &l[1]))
            return -1;
        out->label_count++;
    }
    /* the time: decimal digits; the value: a number as Python's float() reads the common forms */
    if (!ns.len || ns.len > 20)
        return -1;
    uint64_t t = 0;
    for (size_t i = 0; i < ns.len; i++) {
        if (ns.s[i] < '0' || ns.s[i] > '9' || t > (UINT64_MAX - 9) / 10)
            return -1;
        t = t * 10 + (uint64_t)(ns.s[i] - '0');
    }
    char buf[64];
    if (!value.len || value.len >= sizeof buf)
        return -1;
    memcpy(buf, value.s, value.len);
    buf[value.len] = 0;
    if (strpbrk(buf, "xX(")) /* strtod's hex floats and nan(...) are not Python float() syntax */
        return -1;
    char *end = NULL;
    double v = strtod(buf, &end);
    while (end && (*end == ' ' || (*end >= '\t' && *end <= '\r')))
        end++; /* float() takes surrounding whitespace (strtod the leading) */
    if (end == buf || end != buf + value.len)
        return -1;
    out->value = v;
    out->time_ns = t;
    return 0;
}
