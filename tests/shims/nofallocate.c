/* LD_PRELOAD shim for the tests: a filesystem without fallocate.
 *
 * STATMAP_TEST_NOFALLOCATE=libc    posix_fallocate() fails with EOPNOTSUPP, as
 *                                  musl's does on NFSv3, FUSE or older ZFS (no
 *                                  emulation): statmap's own fallback runs.
 * STATMAP_TEST_NOFALLOCATE=kernel  the fallocate(2) system call fails with
 *                                  EOPNOTSUPP (a seccomp filter), so glibc's
 *                                  posix_fallocate() runs its emulation, as it
 *                                  does on those filesystems.
 * STATMAP_TEST_NOFALLOCATE_LOG=PATH appends "posix_fallocate OFFSET LEN" per
 *                                  call (libc mode), "seccomp" once (kernel mode).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *mode(void)
{
    const char *m = getenv("STATMAP_TEST_NOFALLOCATE");
    return m ? m : "";
}

static void note(const char *fmt, long long a, long long b)
{
    const char *path = getenv("STATMAP_TEST_NOFALLOCATE_LOG");
    if (!path)
        return;
    FILE *f = fopen(path, "a");
    if (!f)
        return;
    fprintf(f, fmt, a, b);
    fclose(f);
}

static int refuse(int fd, off_t offset, off_t len)
{
    (void)fd;
    note("posix_fallocate %lld %lld\n", (long long)offset, (long long)len);
    return EOPNOTSUPP; /* posix_fallocate returns the error number */
}

int posix_fallocate(int fd, off_t offset, off_t len)
{
    if (strcmp(mode(), "libc") == 0)
        return refuse(fd, offset, len);
    /* any other mode: the C library's own (with its emulation) */
    int (*real)(int, off_t, off_t) = (int (*)(int, off_t, off_t))dlsym(RTLD_NEXT, "posix_fallocate64");
    return real ? real(fd, offset, len) : ENOSYS;
}

int posix_fallocate64(int fd, off_t offset, off_t len) __attribute__((alias("posix_fallocate")));

__attribute__((constructor)) static void install(void)
{
    if (strcmp(mode(), "kernel") != 0)
        return;
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_fallocate, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EOPNOTSUPP & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {(unsigned short)(sizeof(filter) / sizeof(filter[0])), filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
        perror("nofallocate shim: seccomp");
        _exit(99);
    }
    note("seccomp %lld %lld\n", 0, 0);
}
