/* Sleeping on a 32-bit word in shared memory until another process changes
 * it, with a timeout, and waking every sleeper of a word.
 *
 *   aip_wait_u32(addr, expected, timeout_ns): sleeps only while *addr ==
 *       expected (checked atomically by the kernel, so a wake between the
 *       caller's check and the sleep is never lost). Returns AIP_WAIT_WOKEN
 *       (woken, possibly spuriously: re-check), AIP_WAIT_CHANGED (the value
 *       had changed before the sleep), AIP_WAIT_INTERRUPTED (a signal
 *       arrived) or AIP_WAIT_TIMEOUT. timeout_ns is clamped to
 *       0..AIP_WAIT_MAX_NS.
 *   aip_wake_all(addr): wakes every process sleeping on addr.
 *   aip_wake_one(addr): wakes one of them.
 *
 * Linux: futex on the shared mapping (not FUTEX_PRIVATE_FLAG: the sleepers
 * are other processes). macOS: os_sync_wait_on_address with the SHARED flag
 * (macOS 14.4+), else the __ulock_wait shared variant that libc++ and
 * libdispatch use. Elsewhere: a timed back-off poll, correct but slower. */
#ifndef AIP_WAIT_H
#define AIP_WAIT_H

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <time.h>

#include "aip_atomic.h"

#define AIP_WAIT_WOKEN 0
#define AIP_WAIT_TIMEOUT 1
#define AIP_WAIT_INTERRUPTED 2 /* a signal: let the caller run its handlers */
#define AIP_WAIT_CHANGED 3     /* the word was no longer `expected`: no sleep */

/* The longest single sleep: callers sleep in slices anyway (to run signal
 * handlers), and a bound keeps every conversion below in range. */
#define AIP_WAIT_MAX_NS (60LL * 1000000000LL)

static inline int64_t aip_clamp_wait_ns(int64_t timeout_ns) {
    if (timeout_ns < 0) return 0;
    return timeout_ns > AIP_WAIT_MAX_NS ? AIP_WAIT_MAX_NS : timeout_ns;
}

/* The clock of Python's time.perf_counter_ns(), so that times stamped here
 * and in Python compare: CLOCK_MONOTONIC on Linux, mach_absolute_time
 * (CLOCK_UPTIME_RAW) on macOS. */
static inline int64_t aip_now_ns(void) {
#if defined(__APPLE__)
    return (int64_t)clock_gettime_nsec_np(CLOCK_UPTIME_RAW);
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + (int64_t)ts.tv_nsec;
#endif
}

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#define AIP_WAIT_BACKEND "futex"

static inline int aip_wait_u32(uint32_t *addr, uint32_t expected, int64_t timeout_ns) {
    struct timespec rel;
    timeout_ns = aip_clamp_wait_ns(timeout_ns);
    rel.tv_sec = (time_t)(timeout_ns / 1000000000LL);
    rel.tv_nsec = (long)(timeout_ns % 1000000000LL);
    if (syscall(SYS_futex, addr, FUTEX_WAIT, expected, &rel, NULL, 0) == 0)
        return AIP_WAIT_WOKEN;
    if (errno == ETIMEDOUT) return AIP_WAIT_TIMEOUT;
    if (errno == EINTR) return AIP_WAIT_INTERRUPTED;
    if (errno == EAGAIN) return AIP_WAIT_CHANGED;
    return AIP_WAIT_WOKEN;
}

static inline void aip_wake_all(uint32_t *addr) {
    syscall(SYS_futex, addr, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static inline void aip_wake_one(uint32_t *addr) {
    syscall(SYS_futex, addr, FUTEX_WAKE, 1, NULL, NULL, 0);
}

#elif defined(__APPLE__)

#if defined(__has_include) && __has_include(<os/os_sync_wait_on_address.h>)
#include <os/clock.h>
#include <os/os_sync_wait_on_address.h>
#define AIP_HAVE_OS_SYNC 1
#endif

/* Private but stable since macOS 10.12: the libc++ atomic wait uses it. */
extern int __ulock_wait(uint32_t operation, void *addr, uint64_t value, uint32_t timeout_us);
extern int __ulock_wake(uint32_t operation, void *addr, uint64_t wake_value);
#define AIP_UL_COMPARE_AND_WAIT_SHARED 3
#define AIP_ULF_WAKE_ALL 0x00000100

#define AIP_WAIT_BACKEND "ulock"

static inline int aip_wait_u32(uint32_t *addr, uint32_t expected, int64_t timeout_ns) {
    timeout_ns = aip_clamp_wait_ns(timeout_ns);
    if (timeout_ns == 0) timeout_ns = 1; /* 0 means "no timeout" to these calls */
    if (aip_load_u32_acquire(addr) != expected) return AIP_WAIT_CHANGED;
#ifdef AIP_HAVE_OS_SYNC
    if (__builtin_available(macOS 14.4, *)) {
        int rc = os_sync_wait_on_address_with_timeout(
            addr, expected, sizeof(uint32_t), OS_SYNC_WAIT_ON_ADDRESS_SHARED,
            OS_CLOCK_MACH_ABSOLUTE_TIME, (uint64_t)timeout_ns);
        if (rc >= 0) return AIP_WAIT_WOKEN;
        if (errno == ETIMEDOUT) return AIP_WAIT_TIMEOUT;
        return errno == EINTR ? AIP_WAIT_INTERRUPTED : AIP_WAIT_WOKEN;
    }
#endif
    {
        uint64_t us = (uint64_t)(timeout_ns / 1000);
        int rc = __ulock_wait(AIP_UL_COMPARE_AND_WAIT_SHARED, addr, expected,
                              (uint32_t)(us == 0 ? 1 : (us > UINT32_MAX ? UINT32_MAX : us)));
        if (rc >= 0) return AIP_WAIT_WOKEN;
        if (errno == ETIMEDOUT) return AIP_WAIT_TIMEOUT;
        return errno == EINTR ? AIP_WAIT_INTERRUPTED : AIP_WAIT_WOKEN;
    }
}

static inline void aip_wake_all(uint32_t *addr) {
#ifdef AIP_HAVE_OS_SYNC
    if (__builtin_available(macOS 14.4, *)) {
        os_sync_wake_by_address_all(addr, sizeof(uint32_t), OS_SYNC_WAKE_BY_ADDRESS_SHARED);
        return;
    }
#endif
    __ulock_wake(AIP_UL_COMPARE_AND_WAIT_SHARED | AIP_ULF_WAKE_ALL, addr, 0);
}

static inline void aip_wake_one(uint32_t *addr) {
#ifdef AIP_HAVE_OS_SYNC
    if (__builtin_available(macOS 14.4, *)) {
        os_sync_wake_by_address_any(addr, sizeof(uint32_t), OS_SYNC_WAKE_BY_ADDRESS_SHARED);
        return;
    }
#endif
    __ulock_wake(AIP_UL_COMPARE_AND_WAIT_SHARED, addr, 0);
}

#else /* portable fallback: poll with a growing sleep */

#define AIP_WAIT_BACKEND "backoff"

static inline int aip_wait_u32(uint32_t *addr, uint32_t expected, int64_t timeout_ns) {
    int64_t deadline = aip_now_ns() + aip_clamp_wait_ns(timeout_ns);
    if (aip_load_u32_acquire(addr) != expected) return AIP_WAIT_CHANGED;
    long step_ns = 1000; /* 1 us, doubling to 1 ms: fast first, cheap later */
    while (aip_load_u32_acquire(addr) == expected) {
        int64_t left = deadline - aip_now_ns();
        if (left <= 0) return AIP_WAIT_TIMEOUT;
        struct timespec ts = {0, step_ns < left ? step_ns : (long)left};
        nanosleep(&ts, NULL);
        if (step_ns < 1000000) step_ns *= 2;
    }
    return AIP_WAIT_WOKEN;
}

static inline void aip_wake_all(uint32_t *addr) { (void)addr; }
static inline void aip_wake_one(uint32_t *addr) { (void)addr; }

#endif

#endif /* AIP_WAIT_H */
