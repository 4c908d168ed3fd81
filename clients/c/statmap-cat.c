/* statmap-cat: print the series of statmap files.
 *
 *   statmap-cat [--json] PATH...
 *
 * --json prints {"processes": [...], "errors": [...]} in the shape of
 * `statmap show --json` (one process object per file; "errors" only when
 * some file could not be read). Exit status 1 when a file is corrupt or
 * cannot be read, 2 on bad usage. */
#define _GNU_SOURCE 1
#include "statmap.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- numbers the way Python's repr() prints them ---- */
static double u2d(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static void fmt_double(char *out, size_t outlen, double d)
{
    if (isnan(d)) {
        snprintf(out, outlen, "\"NaN\"");
        return;
    }
    if (isinf(d)) {
        snprintf(out, outlen, d > 0 ? "\"+Inf\"" : "\"-Inf\"");
        return;
    }
    char buf[40];
    int p;
    for (p = 1; p <= 17; p++) { /* shortest digits that read back exactly */
        snprintf(buf, sizeof buf, "%.*e", p - 1, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    /* buf is [-]D[.DDD]e[+-]XX */
    const char *s = buf;
    int neg = 0;
    if (*s == '-') {
        neg = 1;
        s++;
    }
    char digits[24];
    int nd = 0;
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

/* ---- a JSON writer matching json.dump(indent=2, ensure_ascii=True) ---- */
static int depth;
static int first[64];

static void newline(void)
{
    putchar('\n');
    for (int i = 0; i < depth; i++)
        fputs("  ", stdout);
}

static void item(void) /* before every value or key in a container */
{
    if (depth == 0)
        return;
    if (!first[depth])
        putchar(',');
    first[depth] = 0;
    newline();
}

static void open_c(char c)
{
    putchar(c);
    depth++;
    first[depth] = 1;
}

static void close_c(char c)
{
    int empty = first[depth];
    depth--;
    if (!empty)
        newline();
    putchar(c);
}

static void str_raw(const char *s, size_t n)
{
    putchar('"');
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        unsigned cp;
        size_t k = 1;
        size_t need = c < 0x80 ? 1 : c < 0xC2 ? 0 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF5 ? 4 : 0;
        int ok = need && i + need <= n;
        for (size_t j = 1; ok && j < need; j++)
            ok = (u[i + j] & 0xC0) == 0x80;
        if (!ok) /* only paths could get here: reader strings are valid */
            cp = 0xFFFD;
        else if (c < 0x80)
            cp = c;
        else if (c < 0xE0) {
            cp = ((c & 0x1Fu) << 6) | (u[i + 1] & 0x3Fu);
            k = 2;
        } else if (c < 0xF0) {
            cp = ((c & 0x0Fu) << 12) | ((u[i + 1] & 0x3Fu) << 6) | (u[i + 2] & 0x3Fu);
            k = 3;
        } else {
            cp = ((c & 0x07u) << 18) | ((u[i + 1] & 0x3Fu) << 12) | ((u[i + 2] & 0x3Fu) << 6) | (u[i + 3] & 0x3Fu);
            k = 4;
        }
        i += k;
        switch (cp) {
        case '"': fputs("\\\"", stdout); break;
        case '\\': fputs("\\\\", stdout); break;
        case '\n': fputs("\\n", stdout); break;
        case '\r': fputs("\\r", stdout); break;
        case '\t': fputs("\\t", stdout); break;
        case '\b': fputs("\\b", stdout); break;
        case '\f': fputs("\\f", stdout); break;
        default:
            if (cp >= 0x20 && cp < 0x7F)
                putchar((int)cp);
            else if (cp < 0x10000)
                printf("\\u%04x", cp);
            else {
                cp -= 0x10000;
                printf("\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
            }
        }
    }
    putchar('"');
}

/* The strings handed out by the reader are valid UTF-8 (bad bytes replaced). */
static void jstr(const statmap_str *s) { str_raw(s->s, s->len); }
static void key(const char *k)
{
    item();
    str_raw(k, strlen(k));
    fputs(": ", stdout);
}
static void v_str(const char *s) { item(); str_raw(s, strlen(s)); }
static void v_raw(const char *s) { item(); fputs(s, stdout); }
static void v_u64(uint64_t u)
{
    char b[32];
    snprintf(b, sizeof b, "%llu", (unsigned long long)u);
    v_raw(b);
}
static void v_double(double d)
{
    char b[64];
    fmt_double(b, sizeof b, d);
    v_raw(b);
}
/* After key(), the value is printed without item(). */
static void kv_str(const char *k, const statmap_str *s) { key(k); jstr(s); }
static void kv_cstr(const char *k, const char *s) { key(k); str_raw(s, strlen(s)); }
static void kv_u64(const char *k, uint64_t u) { key(k); printf("%llu", (unsigned long long)u); }
static void kv_double(const char *k, double d)
{
    char b[64];
    fmt_double(b, sizeof b, d);
    key(k);
    fputs(b, stdout);
}
static void kv_open(const char *k, char c) { key(k); open_c(c); }
/* "min" and "max" of a histogram or summary (format 1.2), null when unknown, as the reference reader */
static void kv_extremes(const statmap_value *v)
{
    if (v->has_extremes) {
        kv_double("min", v->min);
        kv_double("max", v->max);
    } else {
        key("min");
        fputs("null", stdout);
        key("max");
        fputs("null", stdout);
    }
}

static int same(const statmap_str *a, const statmap_str *b) { return a->len == b->len && !memcmp(a->s, b->s, a->len); }

/* An object from key/value pairs with the semantics of a Python dict: a
 * repeated key keeps its first position and takes its last value. */
static void pairs_object(const char *k, const statmap_str *p, size_t npairs)
{
    kv_open(k, '{');
    for (size_t i = 0; i < npairs; i++) {
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++)
            seen = same(&p[2 * j], &p[2 * i]);
        if (seen)
            continue;
        size_t last = i;
        for (size_t j = i + 1; j < npairs; j++)
            if (same(&p[2 * j], &p[2 * i]))
                last = j;
        item();
        jstr(&p[2 * i]); /* keys may hold NUL bytes: print with their length */
        fputs(": ", stdout);
        jstr(&p[2 * last + 1]);
    }
    close_c('}');
}

static void value_json(const statmap_record *r, const statmap_value *v)
{
    key("value");
    if (!v->readable) {
        fputs("null", stdout);
        return;
    }
    char b[64];
    switch (r->type) {
    case STATMAP_COUNTER:
        if (r->flags & STATMAP_FLAG_FLOAT)
            fmt_double(b, sizeof b, v->f);
        else
            snprintf(b, sizeof b, "%llu", (unsigned long long)v->u);
        fputs(b, stdout);
        break;
    case STATMAP_GAUGE:
        fmt_double(b, sizeof b, v->f);
        fputs(b, stdout);
        break;
    case STATMAP_ENUM:
        jstr(&r->extra[v->u]);
        break;
    case STATMAP_TEXT:
        jstr(&v->text);
        break;
    case STATMAP_SUMMARY:
        open_c('{');
        kv_u64("count", v->u);
        kv_double("sum", v->f);
        kv_extremes(v);
        close_c('}');
        break;
    case STATMAP_HISTOGRAM: {
        open_c('{');
        kv_u64("count", v->u);
        kv_double("sum", v->f);
        kv_open("buckets", '[');
        uint64_t cum = 0;
        for (uint32_t i = 0; i <= r->param_count; i++) {
            cum += v->buckets[i];
            item();
            open_c('[');
            if (i < r->param_count)
                v_double(r->params[i]);
            else
                v_str("+Inf");
            v_u64(cum);
            close_c(']');
        }
        close_c(']');
        kv_extremes(v);
        close_c('}');
        break;
    }
    case STATMAP_EXP_HISTOGRAM: {
        const uint64_t *w = v->exp, m = r->capacity;
        open_c('{');
        kv_u64("count", w[STATMAP_EXP_COUNT]);
        kv_double("sum", v->f);
        kv_double("min", w[STATMAP_EXP_COUNT] ? u2d(w[STATMAP_EXP_MIN]) : NAN);
        kv_double("max", w[STATMAP_EXP_COUNT] ? u2d(w[STATMAP_EXP_MAX]) : NAN);
        /* no buckets: any scale holds it; the reference reader says the finest (20) */
        int none = !w[STATMAP_EXP_POS_LEN] && !w[STATMAP_EXP_NEG_LEN];
        snprintf(b, sizeof b, "%lld", none ? 20LL : (long long)(int64_t)w[STATMAP_EXP_SCALE]);
        key("scale");
        fputs(b, stdout);
        kv_double("zero_threshold", r->params[0]);
        kv_u64("zero_count", w[STATMAP_EXP_ZERO]);
        for (int sign = 0; sign < 2; sign++) {
            int64_t lo = (int64_t)w[STATMAP_EXP_POS_LO + 2 * sign];
            uint64_t len = w[STATMAP_EXP_POS_LEN + 2 * sign];
            kv_open(sign ? "negative" : "positive", '{');
            snprintf(b, sizeof b, "%lld", (long long)lo);
            key("offset");
            fputs(b, stdout);
            kv_open("counts", '[');
            for (uint64_t j = 0; j < len; j++) {
                int64_t slot = (int64_t)(((__int128)lo + (__int128)j) % (__int128)m);
                v_u64(w[STATMAP_EXP_HEAD + (uint64_t)sign * m + (uint64_t)(slot < 0 ? slot + (int64_t)m : slot)]);
            }
            close_c(']');
            close_c('}');
        }
        close_c('}');
        break;
    }
    case STATMAP_INFO:
        break; /* handled by the caller */
    }
}

static void hex(char *out, const unsigned char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

static int with_exemplars; /* --exemplars: each process lists its decoded exemplars too */

static void spans_object(const char *k, const statmap_span *p, size_t npairs)
{
    kv_open(k, '{');
    for (size_t i = 0; i < npairs; i++) { /* repeated names: the last wins, as a Python dict */
        int later = 0;
        for (size_t j = i + 1; j < npairs && !later; j++)
            later = p[2 * j].len == p[2 * i].len && !memcmp(p[2 * j].s, p[2 * i].s, p[2 * i].len);
        if (later)
            continue;
        item();
        str_raw(p[2 * i].s, p[2 * i].len);
        fputs(": ", stdout);
        str_raw(p[2 * i + 1].s, p[2 * i + 1].len);
    }
    close_c('}');
}

static void exemplars_json(const statmap_snapshot *s)
{
    static statmap_exemplar e;
    kv_open("exemplars", '[');
    for (size_t i = 0; i < s->count; i++) {
        const statmap_record *r = s->series[i].record;
        const statmap_value *v = &s->series[i].value;
        if (r->type != STATMAP_EXEMPLAR || !v->readable || statmap_exemplar_decode(&v->text, &e))
            continue;
        item();
        open_c('{');
        kv_str("name", &r->name);
        pairs_object("labels", r->labels, r->label_count);
        if (r->param_count)
            kv_double("bucket", r->params[0]);
        else {
            key("bucket");
            fputs("null", stdout);
        }
        kv_double("value", e.value);
        kv_u64("time_ns", e.time_ns);
        spans_object("exemplar_labels", e.labels, e.label_count);
        close_c('}');
    }
    close_c(']');
}

static void process_json(const char *path, const statmap_snapshot *s, int ready)
{
    item();
    open_c('{');
    kv_cstr("path", path);
    if (ready) {
        kv_str("name", &s->identity.publisher);
        kv_u64("pid", s->identity.pid);
        kv_cstr("state", s->liveness);
        kv_str("program", &s->identity.program);
        char inst[33];
        hex(inst, s->identity.instance_id, 16);
        kv_cstr("instance", inst);
        kv_double("created", (double)s->identity.created_ns / 1e9);
    } else {
        kv_cstr("name", "");
        kv_u64("pid", 0);
        kv_cstr("state", "not-ready");
        kv_cstr("program", "");
        kv_cstr("instance", "");
        key("created");
        fputs("null", stdout);
    }
    kv_open("metrics", '[');
    for (size_t i = 0; ready && i < s->count; i++) {
        const statmap_record *r = s->series[i].record;
        if (r->type == STATMAP_EXEMPLAR)
            continue; /* not a metric: as statmap show --json */
        item();
        open_c('{');
        kv_str("name", &r->name);
        kv_cstr("type", statmap_type_name(r->type));
        kv_str("help", &r->help);
        kv_str("unit", &r->unit);
        pairs_object("labels", r->labels, r->label_count);
        if (r->type == STATMAP_INFO)
            pairs_object("value", r->extra, r->extra_count / 2);
        else
            value_json(r, &s->series[i].value);
        close_c('}');
    }
    close_c(']');
    if (with_exemplars && ready)
        exemplars_json(s);
    close_c('}');
}

static void print_text_value(const statmap_record *r, const statmap_value *v)
{
    char b[64];
    if (!v->readable) {
        printf("(unreadable)");
        return;
    }
    switch (r->type) {
    case STATMAP_COUNTER:
        if (r->flags & STATMAP_FLAG_FLOAT) {
            fmt_double(b, sizeof b, v->f);
            printf("%s", b);
        } else
            printf("%llu", (unsigned long long)v->u);
        break;
    case STATMAP_GAUGE:
        fmt_double(b, sizeof b, v->f);
        printf("%s", b);
        break;
    case STATMAP_ENUM:
        printf("'%s'", r->extra[v->u].s);
        break;
    case STATMAP_TEXT:
        printf("'%s'", v->text.s);
        break;
    case STATMAP_SUMMARY:
        fmt_double(b, sizeof b, v->f);
        printf("count=%llu sum=%s", (unsigned long long)v->u, b);
        break;
    case STATMAP_EXP_HISTOGRAM:
        fmt_double(b, sizeof b, v->f);
        printf("count=%llu sum=%s scale=%lld", (unsigned long long)v->u, b, (long long)(int64_t)v->exp[5]);
        break;
    case STATMAP_HISTOGRAM: {
        fmt_double(b, sizeof b, v->f);
        printf("count=%llu sum=%s buckets:", (unsigned long long)v->u, b);
        uint64_t cum = 0;
        for (uint32_t i = 0; i <= r->param_count; i++) {
            cum += v->buckets[i];
            if (i < r->param_count) {
                fmt_double(b, sizeof b, r->params[i]);
                printf(" le=%s:%llu", b, (unsigned long long)cum);
            } else
                printf(" +Inf:%llu", (unsigned long long)cum);
        }
        break;
    }
    case STATMAP_INFO:
        for (uint32_t i = 0; i + 1 < r->extra_count; i += 2)
            printf("%s%s='%s'", i ? " " : "", r->extra[i].s, r->extra[i + 1].s);
        break;
    }
}

static void process_text(const char *path, const statmap_snapshot *s, int ready)
{
    if (!ready) {
        printf("%s  not-ready\n", path);
        return;
    }
    printf("%s  pid %llu  %s  %s  %s\n", s->identity.publisher.s, (unsigned long long)s->identity.pid, s->liveness,
           s->identity.program.s, path);
    for (size_t i = 0; i < s->count; i++) {
        const statmap_record *r = s->series[i].record;
        if (r->type == STATMAP_EXEMPLAR)
            continue;
        printf("  %s", r->name.s);
        if (r->label_count) {
            putchar('{');
            for (uint32_t k = 0; k < r->label_count; k++)
                printf("%s%s=\"%s\"", k ? "," : "", r->labels[2 * k].s, r->labels[2 * k + 1].s);
            putchar('}');
        }
        printf("  %s  ", statmap_type_name(r->type));
        print_text_value(r, &s->series[i].value);
        if (r->unit.len)
            printf(" %s", r->unit.s);
        putchar('\n');
    }
}

static int cat(int npaths, char **paths, statmap_reader **readers, int *open_rc, char (*open_err)[256], int json)
{
    const char **err_path = calloc((size_t)npaths + 1, sizeof *err_path);
    char(*err_msg)[256] = calloc((size_t)npaths + 1, sizeof *err_msg);
    int nerr = 0;
    if (!err_path || !err_msg)
        return 2;
    if (json) {
        open_c('{');
        kv_open("processes", '[');
    }
    for (int i = 0; i < npaths; i++) {
        const char *path = paths[i];
        statmap_snapshot snap;
        char err[256] = "";
        int rc = open_rc[i];
        if (rc == STATMAP_OK || rc == STATMAP_NOT_READY)
            rc = statmap_reader_snapshot(readers[i], &snap, err, sizeof err);
        else
            snprintf(err, sizeof err, "%s", open_err[i]);
        if (rc == STATMAP_OK || rc == STATMAP_NOT_READY) {
            if (json)
                process_json(path, &snap, rc == STATMAP_OK);
            else
                process_text(path, &snap, rc == STATMAP_OK);
        } else {
            err_path[nerr] = path;
            snprintf(err_msg[nerr], sizeof err_msg[nerr], "%s", err);
            nerr++;
        }
    }
    if (json) {
        close_c(']');
        if (nerr) {
            kv_open("errors", '[');
            for (int i = 0; i < nerr; i++) {
                item();
                open_c('{');
                kv_cstr("path", err_path[i]);
                kv_cstr("problem", err_msg[i]);
                close_c('}');
            }
            close_c(']');
        }
        close_c('}');
        putchar('\n');
    } else {
        for (int i = 0; i < nerr; i++)
            printf("%s: error: %s\n", err_path[i], err_msg[i]);
    }
    free(err_path);
    free(err_msg);
    return nerr ? 1 : 0;
}

int main(int argc, char **argv)
{
    int json = 0, npaths = 0;
    long repeat = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--exemplars"))
            with_exemplars = json = 1;
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc)
            repeat = atol(argv[++i]);
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: statmap-cat [--json] [--exemplars] [--repeat N] PATH...\n");
            return 0;
        } else
            argv[++npaths] = argv[i];
    }
    if (!npaths || repeat < 1) {
        fprintf(stderr, "usage: statmap-cat [--json] [--exemplars] [--repeat N] PATH...\n");
        return 2;
    }
    char **paths = argv + 1;
    statmap_reader **readers = calloc((size_t)npaths, sizeof *readers);
    int *open_rc = calloc((size_t)npaths, sizeof *open_rc);
    char(*open_err)[256] = calloc((size_t)npaths, sizeof *open_err);
    if (!readers || !open_rc || !open_err)
        return 2;
    for (int i = 0; i < npaths; i++)
        open_rc[i] = statmap_reader_open(&readers[i], paths[i], open_err[i], sizeof open_err[i]);
    int rc = 0;
    for (long k = 0; k < repeat; k++) /* readers are kept: records are parsed once */
        rc = cat(npaths, paths, readers, open_rc, open_err, json);
    for (int i = 0; i < npaths; i++)
        statmap_reader_free(readers[i]);
    free(readers);
    free(open_rc);
    free(open_err);
    return rc;
}
