/* knobs.c - knobs for C programs (docs/format.md section 13, docs/knobs.md).
 *
 * A knob is a record of type 8 whose value area is a text latch holding the
 * applied state as netstrings; the operator's desired state is the control
 * file DIRECTORY/PUBLISHER.knobs (netstrings too). statmap_knobs_poll() reads
 * the control file when it changed, checks every requested value against the
 * knob's declaration, applies it and publishes the state. The control file is
 * untrusted: every length, count and number is checked; a file that fails a
 * check changes nothing.
 */
#define _GNU_SOURCE
#include "statmap.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONTROL (1u << 20)
#define MAX_FIELDS (1u << 14)
#define HISTORY 8
#define MAX_VALUE 4096
#define MAX_REASON 200

typedef struct {
    uint64_t when_ns, uid, pid;
    char origin[12];
    char *old, *new_;
} change_t;

struct statmap_knob {
    statmap_writer *w;
    statmap_series *series;
    char *name;
    int type;
    char *def, *min, *max;
    char **choices;
    size_t nchoices, size, capacity;
    char *start, start_origin[12]; /* the start-up value and its origin */
    /* the published state */
    uint64_t seen_seq, applied_seq, uid, pid, when_ns, refused_seq, refused_when_ns;
    char origin[12];
    char *value, *refused_value, *refused_reason;
    change_t history[HISTORY];
    size_t nhistory;
};

/* Every knob of the process (few): statmap_knobs_poll(w) takes those of w. */
static statmap_knob **knobs;
static size_t nknobs;
/* What was last read, per writer: (writer, file signature, pid). */
typedef struct {
    statmap_writer *w;
    struct timespec mtime, ctime;
    ino_t ino;
    off_t size;
    int present;
    pid_t pid;
} seen_t;
static seen_t *seen;
static size_t nseen;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static char *dupn(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}
static char *dup0(const char *s) { return dupn(s, strlen(s)); }

/* ---- canonical values (section 13) ---- */


static int utf8_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (!k || i + k > n || (k == 2 && c < 0xC2) || (k == 4 && c > 0xF4))
            return 0;
        for (size_t j = 1; j < k; j++)
            if (((unsigned char)s[i + j] & 0xC0) != 0x80)
                return 0;
        if (k == 3) {
            unsigned char c1 = (unsigned char)s[i + 1];
            if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 >= 0xA0))
                return 0;
        }
        if (k == 4) {
            unsigned char c1 = (unsigned char)s[i + 1];
            if ((c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 >= 0x90))
                return 0;
        }
        i += k;
    }
    return 1;
}

static int ieq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if ((*a | 0x20) != (*b | 0x20))
            return 0;
    return *a == *b;
}

/* The canonical text of `text` (len bytes) as a value of k into out, or -1 with the reason in why. */
static int parse_value(const statmap_knob *k, const char *text, size_t len, char *out, size_t outlen, char *why,
                       size_t whylen)
{
    char t[64];
    if (k->type != STATMAP_KNOB_STR) {
        /* trim spaces, drop '_' (as Python's int() and float() allow between digits) */
        size_t a = 0, b = len, n = 0;
        while (a < b && (text[a] == ' ' || text[a] == '\t'))
            a++;
        while (b > a && (text[b - 1] == ' ' || text[b - 1] == '\t'))
            b--;
        for (size_t i = a; i < b; i++) {
            if (text[i] == '_')
                continue;
            if (n + 1 >= sizeof t || text[i] == 0) {
                snprintf(why, whylen, "not a valid %s", k->type == STATMAP_KNOB_BOOL ? "boolean" : "number");
                return -1;
            }
            t[n++] = text[i];
        }
        t[n] = 0;
    }
    if (k->type == STATMAP_KNOB_BOOL) {
        if (ieq(t, "true") || !strcmp(t, "1") || ieq(t, "yes") || ieq(t, "on")) {
            snprintf(out, outlen, "true");
            return 0;
        }
        if (ieq(t, "false") || !strcmp(t, "0") || ieq(t, "no") || ieq(t, "off")) {
            snprintf(out, outlen, "false");
            return 0;
        }
        snprintf(why, whylen, "not a boolean (true/false)");
        return -1;
    }
    if (k->type == STATMAP_KNOB_INT) {
        const char *s = t + (t[0] == '+' || t[0] == '-');
        size_t nd = strlen(s);
        if (nd == 0 || nd > 19 || strspn(s, "0123456789") != nd) {
            snprintf(why, whylen, "not an integer");
            return -1;
        }
        errno = 0;
        long long v = strtoll(t, NULL, 10);
        if (errno == ERANGE) {
            snprintf(why, whylen, "outside the 64-bit range");
            return -1;
        }
        if (k->min && v < strtoll(k->min, NULL, 10)) {
            snprintf(why, whylen, "%lld is below the minimum %s", v, k->min);
            return -1;
        }
        if (k->max && v > strtoll(k->max, NULL, 10)) {
            snprintf(why, whylen, "%lld is above the maximum %s", v, k->max);
            return -1;
        }
        snprintf(out, outlen, "%lld", v);
        return 0;
    }
    if (k->type == STATMAP_KNOB_FLOAT) {
        /* [+-](digits[.digits]|.digits)([eE][+-]digits{1,3})? */
        const char *s = t + (t[0] == '+' || t[0] == '-');
        size_t i = strspn(s, "0123456789"), frac = 0;
        if (s[i] == '.') {
            frac = strspn(s + i + 1, "0123456789");
            i += 1 + frac;
        }
        int ok = i > 0 && !(i == 1 && s[0] == '.');
        if (ok && (s[i] == 'e' || s[i] == 'E')) {
            size_t j = i + 1 + (s[i + 1] == '+' || s[i + 1] == '-');
            size_t ed = strspn(s + j, "0123456789");
            ok = ed >= 1 && ed <= 3;
            i = j + ed;
        }
        double v = ok && s[i] == 0 ? strtod(t, NULL) : NAN;
        if (!isfinite(v)) {
            snprintf(why, whylen, "not a finite number");
            return -1;
        }
        if (k->min && v < strtod(k->min, NULL)) {
            snprintf(why, whylen, "below the minimum %s", k->min);
            return -1;
        }
        if (k->max && v > strtod(k->max, NULL)) {
            snprintf(why, whylen, "above the maximum %s", k->max);
            return -1;
        }
        statmap_repr_double(out, outlen, v);
        return 0;
    }
    if (k->nchoices) {
        for (size_t i = 0; i < k->nchoices; i++)
            if (strlen(k->choices[i]) == len && !memcmp(k->choices[i], text, len)) {
                snprintf(out, outlen, "%s", k->choices[i]);
                return 0;
            }
        snprintf(why, whylen, "not one of the choices");
        return -1;
    }
    if (len > k->size || !utf8_ok(text, len) || memchr(text, 0, len)) {
        snprintf(why, whylen, "text longer than %zu bytes or not valid UTF-8", k->size);
        return -1;
    }
    memcpy(out, text, len);
    out[len] = 0;
    return 0;
}

/* ---- netstrings ---- */

typedef struct {
    const char *p;
    size_t len;
} field_t;

/* Splits data into at most max fields; returns the count, or -1 if malformed. */
static long split(const char *data, size_t n, field_t *f, size_t max)
{
    size_t pos = 0, count = 0;
    while (pos < n) {
        if (count >= max)
            return -1;
        size_t d = 0;
        uint64_t len = 0;
        while (pos + d < n && d <= 10 && data[pos + d] >= '0' && data[pos + d] <= '9')
            len = len * 10 + (uint64_t)(data[pos + d++] - '0');
        if (d == 0 || d > 10 || (d > 1 && data[pos] == '0') || pos + d >= n || data[pos + d] != ':')
            return -1;
        size_t start = pos + d + 1;
        if (len >= n - start + 1 || start + len >= n || data[start + len] != ',')
            return -1;
        f[count].p = data + start;
        f[count].len = (size_t)len;
        count++;
        pos = start + (size_t)len + 1;
    }
    return (long)count;
}

static int is_num(field_t f, uint64_t *out)
{
    if (f.len == 0 || f.len > 20 || (f.len > 1 && f.p[0] == '0'))
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < f.len; i++) {
        if (f.p[i] < '0' || f.p[i] > '9')
            return 0;
        uint64_t nv = v * 10 + (uint64_t)(f.p[i] - '0');
        if (nv / 10 != v)
            return 0; /* overflow */
        v = nv;
    }
    *out = v;
    return 1;
}

static int feq(field_t f, const char *s) { return strlen(s) == f.len && !memcmp(f.p, s, f.len); }

/* ---- publishing the state ---- */

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sput(sbuf *b, const char *s, size_t n)
{
    char head[24];
    int h = snprintf(head, sizeof head, "%zu:", n);
    size_t need = b->len + (size_t)h + n + 1;
    if (b->oom)
        return;
    if (need > b->cap) {
        size_t c = b->cap ? b->cap : 512;
        while (c < need)
            c *= 2;
        char *p = realloc(b->p, c);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = c;
    }
    memcpy(b->p + b->len, head, (size_t)h);
    memcpy(b->p + b->len + h, s, n);
    b->p[b->len + (size_t)h + n] = ',';
    b->len = need;
}
static void sstr(sbuf *b, const char *s) { sput(b, s, strlen(s)); }
static void snum(sbuf *b, uint64_t v)
{
    char t[24];
    sstr(b, (snprintf(t, sizeof t, "%llu", (unsigned long long)v), t));
}

static void publish(statmap_knob *k)
{
    size_t first = 0;
    for (;;) {
        sbuf b = {0};
        sstr(&b, "1");
        snum(&b, k->seen_seq);
        snum(&b, k->applied_seq);
        sstr(&b, k->origin);
        snum(&b, k->uid);
        snum(&b, k->pid);
        snum(&b, k->when_ns);
        sstr(&b, k->value);
        snum(&b, k->refused_seq);
        sstr(&b, k->refused_value ? k->refused_value : "");
        sstr(&b, k->refused_reason ? k->refused_reason : "");
        snum(&b, k->refused_when_ns);
        snum(&b, k->nhistory - first);
        for (size_t i = first; i < k->nhistory; i++) {
            change_t *c = &k->history[i];
            snum(&b, c->when_ns);
            sstr(&b, c->origin);
            snum(&b, c->uid);
            snum(&b, c->pid);
            sstr(&b, c->old);
            sstr(&b, c->new_);
        }
        if (!b.oom && (b.len <= k->capacity || first >= k->nhistory)) {
            if (b.len <= k->capacity)
                statmap_text_set(k->series, b.p, b.len);
            free(b.p);
            return;
        }
        free(b.p);
        if (b.oom)
            return;
        first++; /* drop the oldest change until it fits */
    }
}

static void record_change(statmap_knob *k, const char *old)
{
    if (k->nhistory == HISTORY) {
        free(k->history[0].old);
        free(k->history[0].new_);
        memmove(k->history, k->history + 1, (HISTORY - 1) * sizeof(change_t));
        k->nhistory--;
    }
    change_t *c = &k->history[k->nhistory];
    c->when_ns = now_ns();
    snprintf(c->origin, sizeof c->origin, "%s", k->origin);
    c->uid = k->uid;
    c->pid = k->pid;
    c->old = dup0(old);
    c->new_ = dup0(k->value);
    if (c->old && c->new_)
        k->nhistory++;
    else {
        free(c->old);
        free(c->new_);
    }
}

/* Apply one desired entry (or none: the start value) to k. Returns 1 if the value changed. */
static int evaluate(statmap_knob *k, uint64_t seq, const field_t *entry)
{
    char canon[MAX_VALUE + 32], why[256];
    const char *want = NULL, *origin = NULL;
    uint64_t uid = (uint64_t)getuid(), pid = (uint64_t)getpid(), when = 0, applied = 0;
    int changed = 0;
    k->seen_seq = seq;
    if (entry && feq(entry[2], "set")) {
        if (parse_value(k, entry[3].p, entry[3].len, canon, sizeof canon, why, sizeof why) != 0) {
            free(k->refused_value);
            free(k->refused_reason);
            k->refused_value = dupn(entry[3].p, entry[3].len < 256 ? entry[3].len : 256);
            k->refused_reason = dup0(why);
            k->refused_seq = seq;
            k->refused_when_ns = now_ns();
            return 0;
        }
        want = canon;
        origin = "operator";
        is_num(entry[4], &uid);
        is_num(entry[5], &pid);
        is_num(entry[6], &when);
        applied = seq;
    } else {
        want = k->start;
        origin = k->start_origin;
        if (entry) {
            is_num(entry[4], &uid);
            is_num(entry[5], &pid);
            is_num(entry[6], &when);
            applied = seq;
        } else
            when = now_ns();
    }
    free(k->refused_value);
    free(k->refused_reason);
    k->refused_value = k->refused_reason = NULL;
    k->refused_seq = k->refused_when_ns = 0;
    if (strcmp(want, k->value) || strcmp(origin, k->origin)) {
        char *old = k->value, *nv = dup0(want);
        if (!nv)
            return 0;
        changed = strcmp(want, old) != 0;
        k->value = nv;
        snprintf(k->origin, sizeof k->origin, "%s", origin);
        k->uid = uid;
        k->pid = pid;
        k->when_ns = when;
        k->applied_seq = applied;
        record_change(k, old);
        free(old);
    } else if (!strcmp(origin, "operator")) {
        k->uid = uid;
        k->pid = pid;
        k->when_ns = when;
        k->applied_seq = applied;
    }
    return changed;
}

static seen_t *seen_of(statmap_writer *w)
{
    for (size_t i = 0; i < nseen; i++)
        if (seen[i].w == w)
            return &seen[i];
    seen_t *p = realloc(seen, (nseen + 1) * sizeof *p);
    if (!p)
        return NULL;
    seen = p;
    memset(&seen[nseen], 0, sizeof *seen);
    seen[nseen].w = w;
    seen[nseen].present = -1;
    return &seen[nseen++];
}

/* Reads and applies the control file; force: even if it looks unchanged. */
static int poll_writer(statmap_writer *w, int force)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s.knobs", statmap_writer_directory(w), statmap_writer_publisher(w));
    seen_t *sn = seen_of(w);
    if (!sn)
        return STATMAP_ERROR;
    if (sn->pid != getpid()) { /* a forked child: its new file holds zeroed states */
        sn->pid = getpid();
        force = 1;
    }
    struct stat st;
    int present = lstat(path, &st) == 0;
    int recent = present && (uint64_t)st.st_mtim.tv_sec + 1 >= (uint64_t)time(NULL);
    if (!force && !recent && present == sn->present &&
        (!present || (st.st_ino == sn->ino && st.st_size == sn->size && st.st_mtim.tv_sec == sn->mtime.tv_sec &&
                      st.st_mtim.tv_nsec == sn->mtime.tv_nsec && st.st_ctim.tv_nsec == sn->ctime.tv_nsec)))
        return 0;
    sn->present = present;
    if (present) {
        sn->ino = st.st_ino;
        sn->size = st.st_size;
        sn->mtime = st.st_mtim;
        sn->ctime = st.st_ctim;
    }
    char *data = NULL;
    size_t n = 0;
    if (present) {
        int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
            return STATMAP_ERROR;
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
            (st.st_mode & (S_IWGRP | S_IWOTH)) || st.st_size > (off_t)MAX_CONTROL) {
            close(fd);
            return STATMAP_ERROR; /* not the owner's, shared, or too large: ignored */
        }
        data = malloc((size_t)st.st_size + 1);
        ssize_t got = data ? read(fd, data, (size_t)st.st_size + 1) : -1;
        close(fd);
        if (got < 0 || (size_t)got > (size_t)st.st_size) {
            free(data);
            return STATMAP_ERROR;
        }
        n = (size_t)got;
    }
    field_t *f = present ? malloc(MAX_FIELDS * sizeof *f) : NULL;
    long nf = present ? (f ? split(data, n, f, MAX_FIELDS) : -1) : 0;
    uint64_t seq = 0, count = 0;
    int bad = present && (nf < 4 || !feq(f[0], "statmap-knobs") || !feq(f[1], "1") || !is_num(f[2], &seq) ||
                          !is_num(f[3], &count) || (uint64_t)nf != 4 + 7 * count);
    for (uint64_t e = 0; !bad && e < count; e++) {
        const field_t *en = f + 4 + 7 * e;
        uint64_t x;
        bad = !(feq(en[2], "set") || feq(en[2], "reset")) || !is_num(en[4], &x) || !is_num(en[5], &x) ||
              !is_num(en[6], &x);
    }
    if (bad) {
        free(f);
        free(data);
        return STATMAP_ERROR;
    }
    char target[64];
    snprintf(target, sizeof target, "%ld:%llu", (long)getpid(), (unsigned long long)statmap_process_start_time());
    int changed = 0;
    for (size_t i = 0; i < nknobs; i++) {
        statmap_knob *k = knobs[i];
        if (k->w != w)
            continue;
        const field_t *mine = NULL, *common = NULL;
        for (uint64_t e = 0; e < count; e++) {
            const field_t *en = f + 4 + 7 * e;
            if (!feq(en[0], k->name))
                continue;
            if (feq(en[1], target))
                mine = en;
            else if (en[1].len == 0)
                common = en;
        }
        changed += evaluate(k, seq, mine ? mine : common);
        publish(k);
    }
    free(f);
    free(data);
    return changed;
}

int statmap_knobs_poll(statmap_writer *w) { return poll_writer(w, 0); }

static void free_knob(statmap_knob *k)
{
    if (!k)
        return;
    free(k->name);
    free(k->def);
    free(k->min);
    free(k->max);
    for (size_t i = 0; i < k->nchoices; i++)
        free(k->choices[i]);
    free(k->choices);
    free(k->start);
    free(k->value);
    free(k->refused_value);
    free(k->refused_reason);
    for (size_t i = 0; i < k->nhistory; i++) {
        free(k->history[i].old);
        free(k->history[i].new_);
    }
    free(k);
}

int statmap_add_knob(statmap_writer *w, const char *name, const char *help, const statmap_knob_decl *d,
                     statmap_knob **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!d || d->type < STATMAP_KNOB_BOOL || d->type > STATMAP_KNOB_STR || !d->default_value || !name) {
        if (err)
            snprintf(err, errlen, "bad knob declaration");
        return STATMAP_ERROR;
    }
    statmap_knob *k = calloc(1, sizeof *k);
    if (!k)
        return STATMAP_ERROR;
    k->w = w;
    k->type = d->type;
    k->name = dup0(name);
    k->size = d->size ? d->size : 256;
    k->value = dup0("");
    snprintf(k->origin, sizeof k->origin, "default");
    char canon[MAX_VALUE + 32], why[256] = "", bound[64];
    if (d->type == STATMAP_KNOB_INT || d->type == STATMAP_KNOB_FLOAT) {
        statmap_knob bare = {0};
        bare.type = d->type;
        if (d->min) {
            if (parse_value(&bare, d->min, strlen(d->min), bound, sizeof bound, why, sizeof why) != 0)
                goto bad;
            k->min = dup0(bound);
        }
        if (d->max) {
            if (parse_value(&bare, d->max, strlen(d->max), bound, sizeof bound, why, sizeof why) != 0)
                goto bad;
            k->max = dup0(bound);
        }
    }
    if (d->nchoices) {
        if (d->type != STATMAP_KNOB_STR || d->nchoices > 256 || !(k->choices = calloc(d->nchoices, sizeof(char *))))
            goto bad;
        for (size_t i = 0; i < d->nchoices; i++)
            if (!(k->choices[k->nchoices++] = dup0(d->choices[i])))
                goto bad;
    }
    if (k->size > MAX_VALUE ||
        parse_value(k, d->default_value, strlen(d->default_value), canon, sizeof canon, why, sizeof why) != 0)
        goto bad;
    k->def = dup0(canon);
    /* start value: the environment if valid, else the default */
    char envname[300];
    snprintf(envname, sizeof envname, "STATMAP_KNOB_%s", name);
    for (char *c = envname; *c; c++)
        if (*c >= 'a' && *c <= 'z')
            *c = (char)(*c - 32);
    const char *env = getenv(envname);
    if (env && parse_value(k, env, strlen(env), canon, sizeof canon, why, sizeof why) == 0) {
        k->start = dup0(canon);
        snprintf(k->start_origin, sizeof k->start_origin, "environment");
    } else {
        k->start = dup0(k->def);
        snprintf(k->start_origin, sizeof k->start_origin, "default");
    }
    /* the declaration strings (section 13.1) */
    const char *decl[8 + 2 * 256];
    size_t nd = 0;
    static const char *const types[] = {"", "bool", "int", "float", "str"};
    char sizebuf[24];
    decl[nd++] = "type";
    decl[nd++] = types[d->type];
    decl[nd++] = "default";
    decl[nd++] = k->def;
    if (k->min) {
        decl[nd++] = "min";
        decl[nd++] = k->min;
    }
    if (k->max) {
        decl[nd++] = "max";
        decl[nd++] = k->max;
    }
    for (size_t i = 0; i < k->nchoices; i++) {
        decl[nd++] = "choice";
        decl[nd++] = k->choices[i];
    }
    if (d->type == STATMAP_KNOB_STR && !k->nchoices) {
        snprintf(sizebuf, sizeof sizebuf, "%zu", k->size);
        decl[nd++] = "size";
        decl[nd++] = sizebuf;
    }
    size_t vb = d->type == STATMAP_KNOB_BOOL ? 5 : d->type == STATMAP_KNOB_INT ? 20 : d->type == STATMAP_KNOB_FLOAT ? 24 : 0;
    if (d->type == STATMAP_KNOB_STR) {
        vb = k->nchoices ? 0 : k->size;
        for (size_t i = 0; i < k->nchoices; i++)
            if (strlen(k->choices[i]) > vb)
                vb = strlen(k->choices[i]);
    }
    k->capacity = (9 * 25 + 2 * (vb + 8) + 4 * MAX_REASON + 40 + HISTORY * (4 * 25 + 2 * (vb + 8)) + 7) & ~(size_t)7;
    statmap_knob **grown = realloc(knobs, (nknobs + 1) * sizeof *grown);
    if (!k->def || !k->start || !k->value || !grown)
        goto bad;
    knobs = grown;
    if (statmap_add_knob_record(w, name, help ? help : "", decl, nd, k->capacity, &k->series, err, errlen) != 0) {
        free_knob(k);
        return STATMAP_ERROR;
    }
    /* published first, then the control file read: see docs/format.md section 13.2 */
    free(k->value);
    k->value = dup0(k->start);
    snprintf(k->origin, sizeof k->origin, "%s", k->start_origin);
    k->uid = (uint64_t)getuid();
    k->pid = (uint64_t)getpid();
    k->when_ns = now_ns();
    publish(k);
    knobs[nknobs++] = k;
    seen_t *sn = seen_of(w);
    if (sn)
        sn->pid = getpid();
    poll_writer(w, 1);
    *out = k;
    return STATMAP_OK;
bad:
    if (err)
        snprintf(err, errlen, "knob %s: bad declaration (%s)", name, why[0] ? why : "bounds, choices or size");
    free_knob(k);
    return STATMAP_ERROR;
}

const char *statmap_knob_value(const statmap_knob *k) { return k->value; }
const char *statmap_knob_origin(const statmap_knob *k) { return k->origin; }
int statmap_knob_bool(const statmap_knob *k) { return !strcmp(k->value, "true"); }
int64_t statmap_knob_int(const statmap_knob *k) { return (int64_t)strtoll(k->value, NULL, 10); }
double statmap_knob_float(const statmap_knob *k) { return strtod(k->value, NULL); }

void statmap_knobs_free(statmap_writer *w)
{
    size_t kept = 0;
    for (size_t i = 0; i < nknobs; i++) {
        if (knobs[i]->w == w)
            free_knob(knobs[i]);
        else
            knobs[kept++] = knobs[i];
    }
    nknobs = kept;
    for (size_t i = 0; i < nseen; i++)
        if (seen[i].w == w)
            seen[i] = seen[--nseen];
}
