/* statmap-exemplar-writer DIR PUBLISHER < commands
 * Declares a counter "requests" {route="/a"}, a float counter "bytes" and a histogram "latency"
 * {route="/a"} (bounds 0.1, 1), then runs one command per line (tab-separated):
 *   c N TIME_NS [NAME VALUE]...    statmap_counter_add_exemplar(requests, N, ...)
 *   f V TIME_NS [NAME VALUE]...    statmap_counter_add_float_exemplar(bytes, V, ...)
 *   h V TIME_NS [NAME VALUE]...    statmap_histogram_observe_exemplar(latency, V, ...)
 *   t THREADS N                    THREADS threads each give latency N exemplars (values 0, 0.5, 2 in turn)
 * printing each call's return code; then marks the file closed and prints its path. For
 * tests/test_exemplars_c.py, which compares the file with the Python writer's. */
#include "statmap.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static statmap_series *latency;
static long per_thread;

static void *observer(void *arg)
{
    char id[32];
    snprintf(id, sizeof id, "t%ld", (long)(size_t)arg);
    const char *labels[2] = {"trace_id", id};
    static const double values[3] = {0, 0.5, 2};
    for (long i = 0; i < per_thread; i++)
        if (statmap_histogram_observe_exemplar(latency, values[i % 3], labels, 1, 0) != 0)
            return (void *)1;
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: statmap-exemplar-writer DIR PUBLISHER < commands\n");
        return 2;
    }
    char err[256];
    statmap_writer *w;
    statmap_series *requests, *bytes;
    const char *ln[1] = {"route"}, *lv[1] = {"/a"};
    statmap_meta mr = {"requests", "Requests", "", 1, ln, lv}, mb = {"bytes", "Bytes", "", 0, NULL, NULL};
    statmap_meta ml = {"latency", "Latency", "seconds", 1, ln, lv};
    const double bounds[2] = {0.1, 1};
    if (statmap_writer_open(&w, argv[1], argv[2], "exemplar-writer", 0, err, sizeof err) != STATMAP_OK ||
        statmap_add_counter(w, &mr, 0, &requests, err, sizeof err) != STATMAP_OK ||
        statmap_add_counter(w, &mb, 1, &bytes, err, sizeof err) != STATMAP_OK ||
        statmap_add_histogram(w, &ml, bounds, 2, 0, &latency, err, sizeof err) != STATMAP_OK) {
        fprintf(stderr, "statmap-exemplar-writer: %s\n", err);
        return 1;
    }
    static char line[1 << 16];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        const char *f[1024];
        size_t n = 0;
        for (char *p = line; n < 1024;) { /* fields may be empty: no strtok */
            f[n++] = p;
            char *tab = strchr(p, '\t');
            if (!tab)
                break;
            *tab = 0;
            p = tab + 1;
        }
        if (n < 3 || (n - 3) % 2) {
            fprintf(stderr, "statmap-exemplar-writer: bad line\n");
            return 2;
        }
        uint64_t t = strtoull(f[2], NULL, 10);
        int rc;
        if (!strcmp(f[0], "c"))
            rc = statmap_counter_add_exemplar(requests, strtoull(f[1], NULL, 10), f + 3, (n - 3) / 2, t);
        else if (!strcmp(f[0], "f"))
            rc = statmap_counter_add_float_exemplar(bytes, strtod(f[1], NULL), f + 3, (n - 3) / 2, t);
        else if (!strcmp(f[0], "h"))
            rc = statmap_histogram_observe_exemplar(latency, strtod(f[1], NULL), f + 3, (n - 3) / 2, t);
        else if (!strcmp(f[0], "t")) {
            long threads = atol(f[1]);
            pthread_t th[64];
            per_thread = (long)t;
            rc = 0;
            for (long i = 0; i < threads && i < 64; i++)
                pthread_create(&th[i], NULL, observer, (void *)(size_t)i);
            for (long i = 0; i < threads && i < 64; i++) {
                void *r;
                pthread_join(th[i], &r);
                if (r)
                    rc = -1;
            }
        } else {
            fprintf(stderr, "statmap-exemplar-writer: unknown command %s\n", f[0]);
            return 2;
        }
        printf("%d\n", rc);
    }
    statmap_writer_close(w);
    printf("%s\n", statmap_writer_path(w));
    statmap_writer_free(w);
    return 0;
}
