/* Who holds a role in a segment, in a way that PID reuse cannot fool.
 *
 *   aip_process_start(pid, &start): the start time of process `pid`, in
 *       the kernel's own units (clock ticks since boot on Linux, microseconds
 *       since the epoch on macOS). Returns AIP_PROC_FOUND, AIP_PROC_GONE (no
 *       such process) or AIP_PROC_UNKNOWN (it exists, its start time cannot
 *       be read here: callers treat it as alive).
 *   aip_pid_namespace(): an id of this process's PID namespace (Linux: the
 *       inode of /proc/self/ns/pid), 0 where there is no such thing.
 *
 * A pid alone is not an identity: once its process exits the kernel hands
 * the number to the next process, and a liveness probe like kill(pid, 0)
 * then reports the newcomer as the dead owner. pid plus start time names one
 * process for the life of the machine. Pids of another PID namespace mean
 * nothing here, so segments record their creator's namespace and attach
 * refuses a foreign one. */
#ifndef AIP_PROC_H
#define AIP_PROC_H

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#define AIP_PROC_FOUND 0
#define AIP_PROC_GONE 1
#define AIP_PROC_UNKNOWN 2

#if defined(__linux__)
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

static inline int aip_process_start(int pid, uint64_t *start) {
    char path[32];
    char buf[1024];
    int fd;
    ssize_t n;
    char *p;
    int field;
    if (pid <= 0) return AIP_PROC_GONE;
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ESRCH) return AIP_PROC_GONE;
        return kill(pid, 0) == 0 || errno == EPERM ? AIP_PROC_UNKNOWN : AIP_PROC_GONE;
    }
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return AIP_PROC_GONE; /* exited between open and read */
    buf[n] = '\0';
    /* "pid (comm) state ppid ...": comm may hold spaces and parentheses, so
     * fields are counted from the last ')'. starttime is field 22. */
    p = strrchr(buf, ')');
    if (p == NULL) return AIP_PROC_UNKNOWN;
    for (field = 2; field < 22 && p != NULL; field++) p = strchr(p + 1, ' ');
    if (p == NULL) return AIP_PROC_UNKNOWN;
    *start = (uint64_t)strtoull(p + 1, NULL, 10);
    return AIP_PROC_FOUND;
}

static inline uint64_t aip_pid_namespace(void) {
    struct stat st;
    if (stat("/proc/self/ns/pid", &st) != 0) return 0;
    return (uint64_t)st.st_ino;
}

#elif defined(__APPLE__)
#include <libproc.h>
#include <sys/proc_info.h>

static inline int aip_process_start(int pid, uint64_t *start) {
    struct proc_bsdinfo info;
    if (pid <= 0) return AIP_PROC_GONE;
    if (proc_pidinfo(pid, PROC_PIDTBSDINFO, 0, &info, sizeof info) == (int)sizeof info) {
        *start = (uint64_t)info.pbi_start_tvsec * 1000000u + (uint64_t)info.pbi_start_tvusec;
        return AIP_PROC_FOUND;
    }
    return kill(pid, 0) == 0 || errno == EPERM ? AIP_PROC_UNKNOWN : AIP_PROC_GONE;
}

static inline uint64_t aip_pid_namespace(void) { return 0; }

#else

static inline int aip_process_start(int pid, uint64_t *start) {
    (void)start;
    if (pid <= 0) return AIP_PROC_GONE;
    return kill(pid, 0) == 0 || errno == EPERM ? AIP_PROC_UNKNOWN : AIP_PROC_GONE;
}

static inline uint64_t aip_pid_namespace(void) { return 0; }

#endif

#endif /* AIP_PROC_H */
