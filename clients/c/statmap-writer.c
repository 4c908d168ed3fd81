/* statmap-writer: an example C publisher, used by the interoperability tests.
 *
 *   statmap-writer DIR PUBLISHER WORKER (--iterations N | --forever) [--close]
 *
 * Declares one series of each kind and updates them with self-checking
 * values (iteration i, 1-based):
 *   requests{worker=WORKER}  counter, +1 per iteration (so it equals i)
 *   bytes                    FLOAT counter, +0.5
 *   temperature              gauge (aggregate max), set to i
 *   latency                  histogram, bounds 1,2,5; observes 0.5,1.5,3,10 in turn
 *   average                  summary, observes 2.0 (sum == 2 * count)
 *   status                   text "I:" + "x" * (I % 50) + ":I" (capacity 80)
 *   phase                    enum start/run/stop, index i % 3
 *   build                    info version=1.0 lang=c
 * Prints "path PATH" once the file exists; with --iterations, prints
 * "done N" after the last update and waits for stdin to close (so the
 * process is alive while it is read), then exits (marking the file closed
 * with --close). With --forever it updates until killed. */
#define _GNU_SOURCE 1
#include "statmap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void die(const char *what, const char *err)
{
    fprintf(stderr, "statmap-writer: %s: %s\n", what, err);
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: statmap-writer DIR PUBLISHER WORKER (--iterations N | --forever) [--close]\n");
        return 2;
    }
    const char *dir = argv[1], *pub = argv[2], *worker = argv[3];
    long long iterations = -1;
    int close_at_end = 0;
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--iterations") && i + 1 < argc)
            iterations = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--forever"))
            iterations = -1;
        else if (!strcmp(argv[i], "--close"))
            close_at_end = 1;
    }
    char err[256];
    statmap_writer *w;
    if (statmap_writer_open(&w, dir, pub, "statmap-writer", 0, err, sizeof err))
        die("open", err);
    const char *lnames[] = {"worker"}, *lvals[] = {worker};
    statmap_meta m_req = {"requests", "Requests handled", "", 1, lnames, lvals};
    statmap_meta m_bytes = {"bytes", "Bytes sent", "bytes", 0, NULL, NULL};
    statmap_meta m_temp = {"temperature", "Last iteration, as a gauge", "", 0, NULL, NULL};
    statmap_meta m_lat = {"latency", "Observations 0.5, 1.5, 3, 10 in turn", "seconds", 0, NULL, NULL};
    statmap_meta m_avg = {"average", "Observations of 2.0", "", 0, NULL, NULL};
    statmap_meta m_status = {"status", "Self-checking text", "", 0, NULL, NULL};
    statmap_meta m_phase = {"phase", "Iteration modulo 3", "", 0, NULL, NULL};
    statmap_meta m_build = {"build", "Build information", "", 0, NULL, NULL};
    static const double bounds[] = {1, 2, 5};
    static const char *const states[] = {"start", "run", "stop"};
    static const char *const info[] = {"version", "1.0", "lang", "c"};
    statmap_series *req, *bytes, *temp, *lat, *avg, *status, *phase, *build;
    if (statmap_add_counter(w, &m_req, 0, &req, err, sizeof err) ||
        statmap_add_counter(w, &m_bytes, 1, &bytes, err, sizeof err) ||
        statmap_add_gauge(w, &m_temp, STATMAP_AGG_MAX, &temp, err, sizeof err) ||
        statmap_add_histogram(w, &m_lat, bounds, 3, 0, &lat, err, sizeof err) ||
        statmap_add_summary(w, &m_avg, &avg, err, sizeof err) || statmap_add_text(w, &m_status, 80, &status, err, sizeof err) ||
        statmap_add_enum(w, &m_phase, states, 3, &phase, err, sizeof err) ||
        statmap_add_info(w, &m_build, info, 2, &build, err, sizeof err))
        die("declare", err);
    printf("path %s\n", statmap_writer_path(w));
    fflush(stdout);
    static const double obs[] = {0.5, 1.5, 3.0, 10.0};
    char text[128];
    for (long long i = 1; iterations < 0 || i <= iterations; i++) {
        statmap_counter_add(req, 1);
        statmap_counter_add_float(bytes, 0.5);
        statmap_gauge_set(temp, (double)i);
        statmap_histogram_observe(lat, obs[(i - 1) % 4]);
        statmap_summary_observe(avg, 2.0);
        int n = snprintf(text, sizeof text, "%lld:", i);
        memset(text + n, 'x', (size_t)(i % 50));
        n += (int)(i % 50);
        n += snprintf(text + n, sizeof text - (size_t)n, ":%lld", i);
        statmap_text_set(status, text, (size_t)n);
        statmap_enum_set(phase, (uint64_t)(i % 3));
    }
    printf("done %lld\n", iterations);
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0)
        ;
    if (close_at_end)
        statmap_writer_close(w);
    statmap_writer_free(w);
    return 0;
}
