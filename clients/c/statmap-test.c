/* statmap-test: unit tests of the C writer and reader (run under ASan/UBSan
 * by `make asan`). Exit status 0 when everything passed. */
#define _GNU_SOURCE 1
#include "statmap.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures, checks;
#define CHECK(cond)                                                                                                   \
    do {                                                                                                              \
        checks++;                                                                                                     \
        if (!(cond)) {                                                                                                \
            failures++;                                                                                               \
            fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, #cond);                                        \
        }                                                                                                             \
    } while (0)

static char dir[256];
static char err[256];

static const statmap_series_value *find(const statmap_snapshot *s, const char *name, const char *label_value)
{
    for (size_t i = 0; i < s->count; i++) {
        const statmap_record *r = s->series[i].record;
        if (strcmp(r->name.s, name))
            continue;
        if (label_value && (r->label_count < 1 || strcmp(r->labels[1].s, label_value)))
            continue;
        return &s->series[i];
    }
    return NULL;
}

static unsigned char *slurp(const char *path, size_t *size)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st))
        return NULL;
    unsigned char *b = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t k = read(fd, b + got, (size_t)st.st_size - got);
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    close(fd);
    *size = got;
    return b;
}

static void test_roundtrip(void)
{
    statmap_writer *w;
    CHECK(statmap_writer_open(&w, dir, "rt", "prog", 0, err, sizeof err) == STATMAP_OK);
    const char *ln[] = {"method"}, *lv1[] = {"GET"}, *lv2[] = {"P\"OST\n\xc3\xa9"};
    statmap_meta mc1 = {"req", "requests", "", 1, ln, lv1}, mc2 = {"req", "requests", "", 1, ln, lv2};
    statmap_meta mg = {"g", "gauge", "celsius", 0, NULL, NULL}, mh = {"h", "", "", 0, NULL, NULL};
    statmap_meta mt = {"t", "", "", 0, NULL, NULL}, ms = {"s", "", "", 0, NULL, NULL};
    statmap_meta me = {"e", "", "", 0, NULL, NULL}, mi = {"i", "", "", 0, NULL, NULL};
    statmap_meta mf = {"f", "", "", 0, NULL, NULL};
    statmap_series *c1, *c2, *c1again, *g, *h, *t, *s, *e, *i, *f;
    double b[] = {1, 2, 5};
    const char *states[] = {"a", "b"}, *kv[] = {"k", "v"};
    CHECK(statmap_add_counter(w, &mc1, 0, &c1, err, sizeof err) == 0);
    CHECK(statmap_add_counter(w, &mc2, 0, &c2, err, sizeof err) == 0);
    CHECK(statmap_add_counter(w, &mc1, 0, &c1again, err, sizeof err) == 0 && c1again == c1);
    statmap_meta bad = {"req", "other help", "", 1, ln, lv1};
    statmap_series *x;
    CHECK(statmap_add_counter(w, &bad, 0, &x, err, sizeof err) == STATMAP_ERROR);
    CHECK(statmap_add_gauge(w, &mc1, 0, &x, err, sizeof err) == STATMAP_ERROR);
    statmap_meta reserved = {"r", "", "", 1, (const char *[]){"le"}, lv1};
    CHECK(statmap_add_counter(w, &reserved, 0, &x, err, sizeof err) == STATMAP_ERROR);
    statmap_meta badname = {"9x", "", "", 0, NULL, NULL};
    CHECK(statmap_add_counter(w, &badname, 0, &x, err, sizeof err) == STATMAP_ERROR);
    double badb[] = {2, 1};
    CHECK(statmap_add_histogram(w, &mh, badb, 2, 0, &x, err, sizeof err) == STATMAP_ERROR);
    CHECK(statmap_add_gauge(w, &mg, STATMAP_AGG_SUM | STATMAP_AGG_LIVE_ONLY, &g, err, sizeof err) == 0);
    CHECK(statmap_add_histogram(w, &mh, b, 3, 0, &h, err, sizeof err) == 0);
    CHECK(statmap_add_text(w, &mt, 5, &t, err, sizeof err) == 0);
    CHECK(statmap_add_summary(w, &ms, &s, err, sizeof err) == 0);
    CHECK(statmap_add_enum(w, &me, states, 2, &e, err, sizeof err) == 0);
    CHECK(statmap_add_info(w, &mi, kv, 1, &i, err, sizeof err) == 0);
    CHECK(statmap_add_counter(w, &mf, 1, &f, err, sizeof err) == 0);
    statmap_counter_add(c1, 3);
    statmap_counter_add(c2, 1);
    statmap_gauge_set(g, 2.5);
    statmap_gauge_add(g, -1.0);
    CHECK(statmap_histogram_observe(h, 0.5) == 0);
    CHECK(statmap_histogram_observe(h, 2.0) == 0);
    CHECK(statmap_histogram_observe(h, 7.0) == 0);
    CHECK(statmap_histogram_observe(h, NAN) == -1);
    CHECK(statmap_text_set(t, "h\xc3\xa9llo", 6) == 0); /* "héllo" is 6 bytes: cut to "héll" (5) */
    CHECK(statmap_text_set(t, "\xff", 1) == -1);
    CHECK(statmap_summary_observe(s, 1.5) == 0);
    CHECK(statmap_enum_set(e, 1) == 0);
    CHECK(statmap_enum_set(e, 2) == -1);
    CHECK(statmap_counter_add_float(f, 0.25) == 0);

    statmap_reader *r;
    statmap_snapshot snap;
    CHECK(statmap_reader_open(&r, statmap_writer_path(w), err, sizeof err) == STATMAP_OK);
    CHECK(statmap_reader_snapshot(r, &snap, err, sizeof err) == STATMAP_OK);
    CHECK(snap.count == 9);
    CHECK(!strcmp(snap.liveness, "alive"));
    CHECK(!strcmp(snap.identity.publisher.s, "rt") && !strcmp(snap.identity.program.s, "prog"));
    CHECK(snap.identity.pid == (uint64_t)getpid());
    const statmap_series_value *v;
    CHECK((v = find(&snap, "req", "GET")) && v->value.u == 3);
    CHECK((v = find(&snap, "req", "P\"OST\n\xc3\xa9")) && v->value.u == 1);
    CHECK((v = find(&snap, "g", NULL)) && v->value.f == 1.5 && v->record->aggregation == 0x101);
    CHECK((v = find(&snap, "h", NULL)) && v->value.u == 3 && v->value.f == 9.5 && v->value.buckets[0] == 1 &&
          v->value.buckets[1] == 1 && v->value.buckets[2] == 0 && v->value.buckets[3] == 1);
    CHECK((v = find(&snap, "t", NULL)) && !strcmp(v->value.text.s, "h\xc3\xa9ll"));
    CHECK((v = find(&snap, "s", NULL)) && v->value.u == 1 && v->value.f == 1.5);
    CHECK((v = find(&snap, "e", NULL)) && v->value.u == 1);
    CHECK((v = find(&snap, "i", NULL)) && v->record->extra_count == 2 && !strcmp(v->record->extra[1].s, "v"));
    CHECK((v = find(&snap, "f", NULL)) && v->value.f == 0.25);
    CHECK(!statmap_reader_copied(r));
    {
        /* the same values through copies (how files of another user are read) */
        statmap_reader *rc2;
        statmap_snapshot cs;
        CHECK(statmap_reader_open_flags(&rc2, statmap_writer_path(w), STATMAP_READ_COPY, err, sizeof err) == 0);
        CHECK(statmap_reader_copied(rc2));
        CHECK(statmap_reader_snapshot(rc2, &cs, err, sizeof err) == STATMAP_OK && cs.count == snap.count);
        CHECK(!strcmp(cs.liveness, "alive"));
        for (size_t k = 0; k < cs.count && k < snap.count; k++) {
            const statmap_value *a = &snap.series[k].value, *b2 = &cs.series[k].value;
            CHECK(a->readable == b2->readable && a->u == b2->u && !memcmp(&a->f, &b2->f, sizeof a->f));
            CHECK(a->text.len == b2->text.len && (!a->text.len || !memcmp(a->text.s, b2->text.s, a->text.len)));
            if (snap.series[k].record->type == STATMAP_HISTOGRAM)
                CHECK(!memcmp(a->buckets, b2->buckets, 4 * sizeof *a->buckets));
        }
        statmap_reader_free(rc2);
        CHECK(statmap_reader_open_flags(&rc2, statmap_writer_path(w), 0x80, err, sizeof err) == STATMAP_ERROR);
    }

    /* growth: many series, old handles keep writing through old mappings */
    statmap_series *many[3000];
    char name[32];
    int ok = 1;
    for (int k = 0; k < 3000 && ok; k++) {
        snprintf(name, sizeof name, "grow_%d", k);
        statmap_meta m = {name, "", "", 0, NULL, NULL};
        ok = statmap_add_counter(w, &m, 0, &many[k], err, sizeof err) == 0;
    }
    CHECK(ok);
    statmap_counter_add(c1, 1);
    for (int k = 0; k < 3000; k++)
        statmap_counter_add(many[k], (uint64_t)k);
    CHECK(statmap_reader_snapshot(r, &snap, err, sizeof err) == STATMAP_OK);
    CHECK(snap.count == 9 + 3000);
    CHECK((v = find(&snap, "req", "GET")) && v->value.u == 4);
    CHECK((v = find(&snap, "grow_2999", NULL)) && v->value.u == 2999);

    /* fork: the child gets its own file */
    int pipefd[2];
    CHECK(pipe(pipefd) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(pipefd[0]);
        int rc = statmap_writer_after_fork(w, err, sizeof err);
        statmap_counter_add(c1, 100);
        dprintf(pipefd[1], "%s\n", rc == 0 ? statmap_writer_path(w) : "FAILED");
        close(pipefd[1]);
        _exit(0);
    }
    close(pipefd[1]);
    char childpath[4096] = "";
    ssize_t n = read(pipefd[0], childpath, sizeof childpath - 1);
    close(pipefd[0]);
    waitpid(pid, NULL, 0);
    if (n > 0)
        childpath[n - 1] = 0;
    CHECK(statmap_reader_snapshot(r, &snap, err, sizeof err) == STATMAP_OK);
    CHECK((v = find(&snap, "req", "GET")) && v->value.u == 4); /* parent's file untouched */
    CHECK(!strcmp(snap.liveness, "alive"));                      /* child's exit kept our lock */
    statmap_reader *rc;
    CHECK(statmap_reader_open(&rc, childpath, err, sizeof err) == STATMAP_OK);
    if (rc) {
        statmap_snapshot cs;
        CHECK(statmap_reader_snapshot(rc, &cs, err, sizeof err) == STATMAP_OK);
        CHECK(cs.count == snap.count);
        CHECK((v = find(&cs, "req", "GET")) && v->value.u == 100);
        CHECK((v = find(&cs, "grow_5", NULL)) && v->value.u == 0);
        CHECK(!strcmp(cs.liveness, "dead"));
        CHECK(cs.identity.pid == (uint64_t)pid);
        statmap_reader_free(rc);
    }
    statmap_writer_close(w);
    CHECK(statmap_reader_snapshot(r, &snap, err, sizeof err) == STATMAP_OK && !strcmp(snap.liveness, "closed"));

    /* every truncation and many corruptions of this file: never a crash */
    size_t size = 0;
    unsigned char *img = slurp(statmap_writer_path(w), &size);
    CHECK(img != NULL);
    CHECK(statmap_read_buffer(img, size, err, sizeof err) == STATMAP_OK);
    int notready = 0, corrupt = 0;
    for (size_t len = 0; len <= 4096 && len <= size; len++) {
        int x2 = statmap_read_buffer(img, len, err, sizeof err);
        notready += x2 == STATMAP_NOT_READY;
        corrupt += x2 == STATMAP_CORRUPT;
        CHECK(x2 != STATMAP_OK || len == size);
    }
    CHECK(notready == 256);
    CHECK(corrupt > 0);
    srand(12345);
    unsigned char *mut = malloc(size);
    for (int k = 0; k < 3000; k++) {
        memcpy(mut, img, size);
        int flips = 1 + rand() % 4;
        for (int j = 0; j < flips; j++) {
            size_t at = (size_t)rand() % (k % 2 ? 2048 : size);
            mut[at] = (unsigned char)rand();
        }
        (void)statmap_read_buffer(mut, size, err, sizeof err);
    }
    free(mut);
    free(img);
    statmap_reader_free(r);
    statmap_writer_free(w);
}

static void test_directory_rules(void)
{
    char d[300];
    statmap_writer *w;
    snprintf(d, sizeof d, "%s/open", dir);
    CHECK(mkdir(d, 0777) == 0 && chmod(d, 0777) == 0);
    CHECK(statmap_writer_open(&w, d, "x", NULL, 0, err, sizeof err) == STATMAP_ERROR);
    snprintf(d, sizeof d, "%s/link", dir);
    CHECK(symlink(dir, d) == 0);
    CHECK(statmap_writer_open(&w, d, "x", NULL, 0, err, sizeof err) == STATMAP_ERROR);
    CHECK(statmap_writer_open(&w, dir, ".hidden", NULL, 0, err, sizeof err) == STATMAP_ERROR);
    CHECK(statmap_writer_open(&w, dir, "a/b", NULL, 0, err, sizeof err) == STATMAP_ERROR);
    snprintf(d, sizeof d, "%s/new", dir);
    CHECK(statmap_writer_open(&w, d, "ok", NULL, 0, err, sizeof err) == STATMAP_OK);
    struct stat st;
    CHECK(stat(d, &st) == 0 && (st.st_mode & 0777) == 0700);
    CHECK(stat(statmap_writer_path(w), &st) == 0 && (st.st_mode & 0777) == 0600 && st.st_size == 16384);
    statmap_writer_free(w);
}

/* Latch consistency: a thread writes flat out, the main thread reads. */
static statmap_series *th, *tt;
static volatile int stop;
static void *writer_thread(void *arg)
{
    (void)arg;
    static const double obs[] = {0.5, 1.5, 3.0, 10.0};
    char text[128];
    for (long i = 1; !stop; i++) {
        statmap_histogram_observe(th, obs[(i - 1) % 4]);
        int n = snprintf(text, sizeof text, "%ld:", i);
        memset(text + n, 'x', (size_t)(i % 50));
        n += (int)(i % 50);
        n += snprintf(text + n, sizeof text - (size_t)n, ":%ld", i);
        statmap_text_set(tt, text, (size_t)n);
    }
    return NULL;
}

static int text_ok(const char *s)
{
    long a, b;
    int n1, n2;
    if (sscanf(s, "%ld:%n", &a, &n1) != 1)
        return 0;
    const char *p = s + n1;
    long x = 0;
    while (p[x] == 'x')
        x++;
    if (sscanf(p + x, ":%ld%n", &b, &n2) != 1 || p[x + n2] != 0)
        return 0;
    return a == b && x == a % 50;
}

static void test_concurrency(unsigned flags)
{
    stop = 0;
    statmap_writer *w;
    CHECK(statmap_writer_open(&w, dir, "conc", NULL, 0, err, sizeof err) == 0);
    double b[] = {1, 2, 5};
    statmap_meta mh = {"h", "", "", 0, NULL, NULL}, mt = {"t", "", "", 0, NULL, NULL};
    CHECK(statmap_add_histogram(w, &mh, b, 3, 0, &th, err, sizeof err) == 0);
    CHECK(statmap_add_text(w, &mt, 80, &tt, err, sizeof err) == 0);
    pthread_t t;
    pthread_create(&t, NULL, writer_thread, NULL);
    statmap_reader *r;
    CHECK(statmap_reader_open_flags(&r, statmap_writer_path(w), flags, err, sizeof err) == 0);
    long reads = 0, torn = 0, unreadable = 0;
    uint64_t last = 0;
    for (int k = 0; k < (flags ? 20000 : 200000); k++) {
        statmap_snapshot s;
        if (statmap_reader_snapshot(r, &s, err, sizeof err) != 0) {
            torn++;
            fprintf(stderr, "snapshot failed: %s\n", err);
            break;
        }
        const statmap_value *h = &s.series[0].value, *x = &s.series[1].value;
        reads++;
        if (flags && (!h->readable || !x->readable)) {
            unreadable++; /* copies: a latch that kept moving through every attempt (never a torn value) */
            continue;
        }
        uint64_t c = h->u;
        double want = 15.0 * (double)(c / 4);
        static const double prefix[] = {0, 0.5, 2.0, 5.0};
        want += prefix[c % 4];
        int ok = h->readable && x->readable && h->f == want && c >= last;
        for (int i = 0; i < 4; i++)
            ok = ok && h->buckets[i] == c / 4 + ((uint64_t)i < c % 4);
        ok = ok && (x->text.len == 0 || text_ok(x->text.s));
        torn += !ok;
        last = c;
    }
    stop = 1;
    pthread_join(t, NULL);
    printf("concurrency%s: %ld reads of a histogram and a text written flat out, %ld torn, %ld unreadable, last "
           "count %llu\n",
           flags ? " (through copies)" : "", reads, torn, unreadable, (unsigned long long)last);
    CHECK(torn == 0);
    CHECK(unreadable < reads);
    statmap_reader_free(r);
    statmap_writer_free(w);
}

/* A file truncated and restored again and again by another process while
 * read through copies: never a crash (no mapping to fault), errors reported. */
static void test_truncation_under_copies(void)
{
    statmap_writer *w;
    CHECK(statmap_writer_open(&w, dir, "trunc", NULL, 0, err, sizeof err) == 0);
    double b[] = {1, 2, 5};
    statmap_meta mh = {"h", "", "", 0, NULL, NULL}, mc = {"c", "", "", 0, NULL, NULL};
    statmap_series *h, *c;
    CHECK(statmap_add_histogram(w, &mh, b, 3, 0, &h, err, sizeof err) == 0);
    CHECK(statmap_add_counter(w, &mc, 0, &c, err, sizeof err) == 0);
    statmap_counter_add(c, 7);
    CHECK(statmap_histogram_observe(h, 1.5) == 0);
    const char *path = statmap_writer_path(w);
    struct stat st;
    CHECK(stat(path, &st) == 0);
    size_t size = 0;
    unsigned char *img = slurp(path, &size);
    CHECK(img && size == (size_t)st.st_size);
    pid_t pid = fork();
    if (pid == 0) {
        /* truncate, then restore the size and the bytes */
        int fd = open(path, O_WRONLY);
        for (int k = 0; fd >= 0 && k < 3000; k++) {
            off_t lens[] = {0, 8, 256, 300, st.st_size / 2};
            if (ftruncate(fd, lens[k % 5]) != 0 || pwrite(fd, img, size, 0) != (ssize_t)size)
                _exit(1);
        }
        _exit(fd >= 0 ? 0 : 1);
    }
    free(img);
    int ok = 0, bad = 0, notready = 0;
    for (int k = 0; k < 2000; k++) {
        statmap_reader *r;
        statmap_snapshot s;
        int x = statmap_reader_open_flags(&r, path, STATMAP_READ_COPY, err, sizeof err);
        if (x == STATMAP_OK || x == STATMAP_NOT_READY) {
            x = statmap_reader_snapshot(r, &s, err, sizeof err);
            if (x == STATMAP_OK) {
                const statmap_value *v = &s.series[1].value;
                CHECK(s.count == 2);
                CHECK(s.count == 2 && (v->u == 7 || v->u == 0)); /* 0: pages the truncation zeroed */
            }
            statmap_reader_free(r);
        }
        ok += x == STATMAP_OK;
        notready += x == STATMAP_NOT_READY;
        bad += x == STATMAP_CORRUPT;
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    printf("truncation under copies: %d read, %d not ready, %d corrupt\n", ok, notready, bad);
    CHECK(ok + notready + bad == 2000);
    statmap_writer_free(w); /* not closed: the truncations zeroed what close would write into */
}

/* Exemplar texts (format 1.2, section 15) and the golden vector's exemplar records. */
static int decodes(const char *text, statmap_exemplar *e)
{
    statmap_str t = {(char *)(uintptr_t)text, strlen(text)};
    return statmap_exemplar_decode(&t, e);
}

static void test_exemplar_records(unsigned flags);

static void test_exemplars(void)
{
    static statmap_exemplar e;
    CHECK(decodes("4:0.25,19:1767225601500000000,8:trace_id,2:ab,", &e) == 0);
    CHECK(e.value == 0.25 && e.time_ns == 1767225601500000000ull && e.label_count == 1);
    CHECK(e.labels[0].len == 8 && !memcmp(e.labels[0].s, "trace_id", 8) && e.labels[1].len == 2);
    CHECK(decodes("1:1,1:5,", &e) == 0 && e.value == 1 && e.time_ns == 5 && e.label_count == 0);
    CHECK(decodes("", &e) == -1);                      /* not written yet */
    CHECK(decodes("1:1,", &e) == -1);                  /* no time */
    CHECK(decodes("1:1,1:5,1:a,", &e) == -1);          /* a label name without its value */
    CHECK(decodes("1:x,1:5,", &e) == -1);              /* not a number */
    CHECK(decodes("1:1,2:-5,", &e) == -1);             /* the time is digits */
    CHECK(decodes("4:0x10,1:5,", &e) == -1 && decodes("6:nan(1),1:5,", &e) == -1); /* not float() syntax */
    CHECK(decodes("4:-inf,1:5,", &e) == 0 && isinf(e.value) && e.value < 0);
    CHECK(decodes("1:1,01:5,", &e) == -1);             /* leading zero in a length */
    CHECK(decodes("1:1,1:5", &e) == -1);               /* no ',' */
    CHECK(decodes("1:1,9:5,", &e) == -1);              /* runs past the text */
    test_exemplar_records(0);
    test_exemplar_records(STATMAP_READ_COPY); /* as a file of another user is read */
}

static void test_exemplar_records(unsigned flags)
{
    static statmap_exemplar e;
    statmap_reader *r;
    statmap_snapshot snap;
    /* run from clients/c (make asan) or from the repository root (tests/test_interop.py) */
    const char *vec = access("../../tests/vectors/exemplars.statmap", R_OK) == 0 ? "../../tests/vectors/exemplars.statmap"
                                                                                  : "tests/vectors/exemplars.statmap";
    CHECK(statmap_reader_open_flags(&r, vec, flags, err, sizeof err) == STATMAP_OK);
    if (failures)
        return;
    CHECK(statmap_reader_snapshot(r, &snap, err, sizeof err) == STATMAP_OK);
    int found = 0;
    for (size_t i = 0; i < snap.count; i++) {
        const statmap_series_value *v = &snap.series[i];
        if (v->record->type != STATMAP_EXEMPLAR)
            continue;
        CHECK(v->value.readable && statmap_exemplar_decode(&v->value.text, &e) == 0);
        CHECK(e.time_ns == 1767225601500000000ull && e.label_count >= 1);
        if (!strcmp(v->record->name.s, "requests"))
            CHECK(v->record->param_count == 0 && e.value == 1.0);
        else
            CHECK(v->record->param_count == 1 && (e.value == 0.25 || e.value == 7.5));
        found++;
    }
    CHECK(found == 3);
    statmap_reader_free(r);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/statmap-test.%ld", (long)getpid());
    CHECK(mkdir(dir, 0700) == 0);
    test_roundtrip();
    test_directory_rules();
    test_concurrency(0);
    test_concurrency(STATMAP_READ_COPY);
    test_truncation_under_copies();
    test_exemplars();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    printf("statmap-test: %d checks, %d failed\n", checks, failures);
    return failures != 0;
}
