/* statmap-exp-writer DIR PUBLISHER MAX_BUCKETS ZERO_THRESHOLD MAX_SCALE < values
 * Observes each value of stdin (one per line; strtod: hex floats, inf, -inf) in one exponential
 * histogram "latency" (format 1.2), marks the file closed and prints its path. For the tests that
 * compare its bytes with the Python cells' (tests/test_exphist_c.py). */
#include "statmap.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: statmap-exp-writer DIR PUBLISHER MAX_BUCKETS ZERO_THRESHOLD MAX_SCALE < values\n");
        return 2;
    }
    char err[256];
    statmap_writer *w;
    statmap_series *h;
    statmap_meta m = {"latency", "Request latency", "seconds", 0, NULL, NULL};
    if (statmap_writer_open(&w, argv[1], argv[2], "exp-writer", 0, err, sizeof err) != STATMAP_OK ||
        statmap_add_exp_histogram(w, &m, (size_t)atol(argv[3]), strtod(argv[4], NULL), atoi(argv[5]), &h, err,
                                  sizeof err) != STATMAP_OK) {
        fprintf(stderr, "statmap-exp-writer: %s\n", err);
        return 1;
    }
    char line[128];
    while (fgets(line, sizeof line, stdin))
        if (statmap_exp_observe(h, strtod(line, NULL)) != 0) {
            fprintf(stderr, "statmap-exp-writer: refused %s", line);
            return 1;
        }
    statmap_writer_close(w);
    printf("%s\n", statmap_writer_path(w));
    statmap_writer_free(w);
    return 0;
}
