/* conformance probe: reports, as one JSON object on stdout, what a process
 * inside the container sees.  Compiled at run time with `gcc -static` and
 * copied into each test bundle's rootfs as /probe.
 *
 *   /probe            full report (identity, caps, limits, namespaces, mounts...)
 *   /probe stat P...  lstat() of each path
 *   /probe open P...  errno of open(P, O_RDONLY) and open(P, O_WRONLY) (0 = ok)
 *   /probe sys        errno of a few syscalls used by the seccomp checks
 *   /probe sleep N    full report, then sleep N seconds (for exec/poll checks)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

extern char **environ;
static int first;

static void jstr(const char *s) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
        if (*p == '"' || *p == '\\') { putchar('\\'); putchar(*p); }
        else if (*p == '\n') fputs("\\n", stdout);
        else if (*p == '\t') fputs("\\t", stdout);
        else if (*p < 0x20 || *p >= 0x7f) printf("\\u%04x", *p);
        else putchar(*p);
    }
    putchar('"');
}
static void key(const char *k) { if (!first) putchar(','); first = 0; jstr(k); putchar(':'); }
static void kstr(const char *k, const char *v) { key(k); if (v) jstr(v); else fputs("null", stdout); }
static void kint(const char *k, long long v) { key(k); printf("%lld", v); }

static char *slurp(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (len == cap) { cap *= 2; buf = realloc(buf, cap + 1); }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n <= 0) break;
        len += n;
    }
    close(fd);
    buf[len] = 0;
    return buf;
}
static void kfile(const char *k, const char *path) { char *s = slurp(path); kstr(k, s); free(s); }

static const struct { const char *name; int res; } rl[] = {
    {"RLIMIT_CPU", RLIMIT_CPU}, {"RLIMIT_FSIZE", RLIMIT_FSIZE}, {"RLIMIT_DATA", RLIMIT_DATA},
    {"RLIMIT_STACK", RLIMIT_STACK}, {"RLIMIT_CORE", RLIMIT_CORE}, {"RLIMIT_RSS", RLIMIT_RSS},
    {"RLIMIT_NPROC", RLIMIT_NPROC}, {"RLIMIT_NOFILE", RLIMIT_NOFILE}, {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK},
    {"RLIMIT_AS", RLIMIT_AS}, {"RLIMIT_LOCKS", RLIMIT_LOCKS}, {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
    {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE}, {"RLIMIT_NICE", RLIMIT_NICE}, {"RLIMIT_RTPRIO", RLIMIT_RTPRIO},
    {"RLIMIT_RTTIME", RLIMIT_RTTIME},
};

static void report(void) {
    char buf[4096];
    first = 1;
    putchar('{');
    kint("pid", getpid());
    kint("ppid", getppid());
    kint("uid", getuid()); kint("euid", geteuid());
    kint("gid", getgid()); kint("egid", getegid());
    gid_t groups[256]; int ng = getgroups(256, groups);
    key("groups"); putchar('[');
    for (int i = 0; i < ng; i++) printf(i ? ",%u" : "%u", groups[i]);
    putchar(']');
    key("cwd"); if (getcwd(buf, sizeof buf)) jstr(buf); else fputs("null", stdout);
    mode_t um = umask(0); umask(um); kint("umask", um);
    struct utsname u; uname(&u);
    kstr("hostname", u.nodename); kstr("domainname", u.domainname); kstr("machine", u.machine);
    kint("personality", personality(0xffffffff));
    kint("no_new_privs", prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
    kint("dumpable", prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
    kfile("status", "/proc/self/status");
    kfile("oom_score_adj", "/proc/self/oom_score_adj");
    kfile("mountinfo", "/proc/self/mountinfo");
    kfile("uid_map", "/proc/self/uid_map");
    kfile("gid_map", "/proc/self/gid_map");
    kfile("cgroup", "/proc/self/cgroup");
    kfile("netdev", "/proc/net/dev");
    kfile("attr_current", "/proc/self/attr/current");
    key("rlimits"); putchar('{');
    for (size_t i = 0; i < sizeof rl / sizeof rl[0]; i++) {
        struct rlimit r;
        if (getrlimit(rl[i].res, &r) != 0) continue;
        printf(i ? ",\"%s\":[%lld,%lld]" : "\"%s\":[%lld,%lld]", rl[i].name,
               r.rlim_cur == RLIM_INFINITY ? -1LL : (long long)r.rlim_cur,
               r.rlim_max == RLIM_INFINITY ? -1LL : (long long)r.rlim_max);
    }
    putchar('}');
    struct sched_param sp; sched_getparam(0, &sp);
    kint("sched_policy", sched_getscheduler(0));
    kint("sched_priority", sp.sched_priority);
    errno = 0; kint("nice", getpriority(PRIO_PROCESS, 0));
    kint("ioprio", syscall(SYS_ioprio_get, 1, 0));
    cpu_set_t cs; CPU_ZERO(&cs); sched_getaffinity(0, sizeof cs, &cs);
    key("affinity"); putchar('['); int f = 1;
    for (int i = 0; i < CPU_SETSIZE; i++) if (CPU_ISSET(i, &cs)) { printf(f ? "%d" : ",%d", i); f = 0; }
    putchar(']');
    int mode = -1; unsigned long nodemask[16] = {0};
    long mr = syscall(SYS_get_mempolicy, &mode, nodemask, 1024, NULL, 0);
    kint("mempolicy", mr == 0 ? mode : -errno);
    kint("mempolicy_nodes", mr == 0 ? (long long)nodemask[0] : -1);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); kint("monotonic", ts.tv_sec);
    clock_gettime(CLOCK_BOOTTIME, &ts); kint("boottime", ts.tv_sec);
    key("ns"); putchar('{');
    const char *nss[] = {"mnt", "pid", "net", "ipc", "uts", "user", "cgroup", "time", "pid_for_children", "time_for_children"};
    for (size_t i = 0; i < sizeof nss / sizeof nss[0]; i++) {
        struct stat st; snprintf(buf, sizeof buf, "/proc/self/ns/%s", nss[i]);
        printf(i ? ",\"%s\":%lld" : "\"%s\":%lld", nss[i], stat(buf, &st) == 0 ? (long long)st.st_ino : -1LL);
    }
    putchar('}');
    key("fds"); putchar('{');
    DIR *d = opendir("/proc/self/fd"); f = 1;
    if (d) {
        struct dirent *e; int dfd = dirfd(d);
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.' || atoi(e->d_name) == dfd) continue;
            char target[512] = {0}; snprintf(buf, sizeof buf, "/proc/self/fd/%s", e->d_name);
            if (readlink(buf, target, sizeof target - 1) < 0) strcpy(target, "?");
            if (!f) putchar(',');
            f = 0; jstr(e->d_name); putchar(':'); jstr(target);
        }
        closedir(d);
    }
    putchar('}');
    key("isatty"); printf("[%d,%d,%d]", isatty(0), isatty(1), isatty(2));
    key("ttyname0"); { char *t = ttyname(0); if (t) jstr(t); else fputs("null", stdout); }
    key("env"); putchar('[');
    for (char **e = environ; *e; e++) { if (e != environ) putchar(','); jstr(*e); }
    putchar(']');
    putchar('}'); putchar('\n');
    fflush(stdout);
}

static void do_stat(int argc, char **argv) {
    putchar('{'); first = 1;
    for (int i = 2; i < argc; i++) {
        struct stat st; key(argv[i]);
        if (lstat(argv[i], &st) != 0) { printf("{\"errno\":%d}", errno); continue; }
        char t = S_ISCHR(st.st_mode) ? 'c' : S_ISBLK(st.st_mode) ? 'b' : S_ISFIFO(st.st_mode) ? 'p' :
                 S_ISLNK(st.st_mode) ? 'l' : S_ISDIR(st.st_mode) ? 'd' : S_ISSOCK(st.st_mode) ? 's' : 'f';
        char target[512] = {0};
        if (t == 'l' && readlink(argv[i], target, sizeof target - 1) < 0) target[0] = 0;
        printf("{\"type\":\"%c\",\"mode\":%u,\"uid\":%u,\"gid\":%u,\"major\":%u,\"minor\":%u,\"dev\":%llu,\"ino\":%llu,\"target\":",
               t, st.st_mode & 07777, st.st_uid, st.st_gid, major(st.st_rdev), minor(st.st_rdev),
               (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
        jstr(target); putchar('}');
    }
    puts("}");
}

static void do_open(int argc, char **argv) {
    putchar('{'); first = 1;
    for (int i = 2; i < argc; i++) {
        int r, w, fd;
        fd = open(argv[i], O_RDONLY | O_NONBLOCK); r = fd < 0 ? errno : 0; if (fd >= 0) close(fd);
        fd = open(argv[i], O_WRONLY | O_NONBLOCK); w = fd < 0 ? errno : 0; if (fd >= 0) close(fd);
        key(argv[i]); printf("[%d,%d]", r, w);
    }
    puts("}");
}

static void do_sys(void) {
    putchar('{'); first = 1;
    errno = 0; kint("mkdir", mkdir("/tmp/.probe-sc", 0700) == 0 ? 0 : errno); rmdir("/tmp/.probe-sc");
    errno = 0; kint("kill0", kill(getpid(), 0) == 0 ? 0 : errno);
    errno = 0; kint("getcwd", syscall(SYS_getcwd, (char[256]){0}, 256) >= 0 ? 0 : errno);
    errno = 0; kint("personality_query", syscall(SYS_personality, 0xffffffffUL) >= 0 ? 0 : errno);
    errno = 0; kint("acct", syscall(SYS_acct, NULL) == 0 ? 0 : errno);
    puts("}");
}

int main(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], "stat") == 0) { do_stat(argc, argv); return 0; }
    if (argc > 2 && strcmp(argv[1], "open") == 0) { do_open(argc, argv); return 0; }
    if (argc > 1 && strcmp(argv[1], "sys") == 0) { do_sys(); return 0; }
    report();
    if (argc > 2 && strcmp(argv[1], "sleep") == 0) sleep(atoi(argv[2]));
    return 0;
}
