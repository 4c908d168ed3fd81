/* statmap-knobs-example: a C program with knobs, turned by the Python `statmap set`.
 *
 *   statmap-knobs-example DIR   declares knobs under the publisher "cknobs", prints "ready",
 *                               then polls every 20 ms and prints the values whenever one changes;
 *                               exits when stdin closes.
 */
#include "statmap.h"

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <unistd.h>

static void show(statmap_knob *const *k)
{
    printf("values maintenance=%s rate_limit=%lld ratio=%s mode=%s origin=%s\n", statmap_knob_value(k[0]),
           (long long)statmap_knob_int(k[1]), statmap_knob_value(k[2]), statmap_knob_value(k[3]),
           statmap_knob_origin(k[0]));
    fflush(stdout);
}

int main(int argc, char **argv)
{
    char err[256];
    statmap_writer *w;
    if (argc != 2) {
        fprintf(stderr, "usage: statmap-knobs-example DIR\n");
        return 2;
    }
    if (statmap_writer_open(&w, argv[1], "cknobs", NULL, 0, err, sizeof err) != STATMAP_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    static const char *const modes[] = {"fast", "safe"};
    statmap_knob_decl decls[4] = {
        {STATMAP_KNOB_BOOL, "false", NULL, NULL, NULL, 0, 0},
        {STATMAP_KNOB_INT, "100", "1", "10000", NULL, 0, 0},
        {STATMAP_KNOB_FLOAT, "0.5", "0", "1", NULL, 0, 0},
        {STATMAP_KNOB_STR, "fast", NULL, NULL, modes, 2, 0},
    };
    const char *names[4] = {"maintenance", "rate_limit", "ratio", "mode"};
    statmap_knob *k[4];
    for (int i = 0; i < 4; i++)
        if (statmap_add_knob(w, names[i], "a knob of the C example", &decls[i], &k[i], err, sizeof err) != STATMAP_OK) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    printf("ready\n");
    show(k);
    for (;;) {
        struct pollfd p = {0, POLLIN, 0};
        if (poll(&p, 1, 20) > 0) {
            char buf[64];
            if (read(0, buf, sizeof buf) <= 0)
                break;
        }
        if (statmap_knobs_poll(w) > 0)
            show(k);
    }
    statmap_writer_close(w);
    statmap_knobs_free(w);
    statmap_writer_free(w);
    return 0;
}
