/* Atomics on words that live in shared memory, as static inline wrappers
 * over the GCC/Clang __atomic builtins (C11 memory model). Every shared word
 * of aip is touched only through these. Each wrapper names its memory order;
 * callers pick the weakest order that keeps their invariant and say why. */
#ifndef AIP_ATOMIC_H
#define AIP_ATOMIC_H

#include <stdint.h>

/* The protocol is cross-process: a lock-based fallback (libatomic's
 * per-process mutex table) would not exclude another process. Refuse to
 * build where these widths are not lock-free. */
_Static_assert(__atomic_always_lock_free(sizeof(uint32_t), 0),
               "aip needs lock-free 32-bit atomics");
_Static_assert(__atomic_always_lock_free(sizeof(uint64_t), 0),
               "aip needs lock-free 64-bit atomics");

/* acquire: what the writer published before its release store is visible
 * after this load (frame bytes, record bytes, slot fields). */
static inline uint32_t aip_load_u32_acquire(const uint32_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
static inline uint64_t aip_load_u64_acquire(const uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

/* relaxed: only atomicity is needed (a hint re-checked by a later CAS, a
 * counter for reports, a word that only this process writes). */
static inline uint32_t aip_load_u32_relaxed(const uint32_t *p) {
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}
static inline uint64_t aip_load_u64_relaxed(const uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}
static inline void aip_store_u32_relaxed(uint32_t *p, uint32_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}
static inline void aip_store_u64_relaxed(uint64_t *p, uint64_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

/* release: publishes everything written before it (pairs with acquire). */
static inline void aip_store_u32_release(uint32_t *p, uint32_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
static inline void aip_store_u64_release(uint64_t *p, uint64_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* Compare-and-swap, strong. acq_rel on success: the winner sees what the
 * previous owner published and publishes what it wrote before the CAS;
 * acquire on failure: the fresh value written into *expected is used to
 * decide what to try next. Returns 1 when the swap happened. */
static inline int aip_cas_u64(uint64_t *p, uint64_t *expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, expected, desired, 0,
                                       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
static inline int aip_cas_u32(uint32_t *p, uint32_t *expected, uint32_t desired) {
    return __atomic_compare_exchange_n(p, expected, desired, 0,
                                       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* seq_cst read-modify-writes and fence: the sleep/wake handshake is a Dekker
 * pattern (one side stores "I sleep" then loads the state, the other stores
 * the state then loads "someone sleeps"); only a full fence orders a store
 * before a later load of another word, so each side puts one between its
 * store and its load:
 *   sleeper: fetch_add(sleepers); FENCE; load seq; load state; sleep
 *   waker:   store state;         FENCE; load sleepers; bump seq; wake
 * The sleeper needs its fence too, although its fetch_add is seq_cst: C11
 * orders a seq_cst RMW only against other seq_cst operations, and the state
 * loads after it are acquire loads. On x86 the locked RMW is a full barrier
 * anyway, but AArch64 with RCpc loads (LDAPR, which compilers emit for
 * acquire) may perform them before the RMW's store is visible: the sleeper
 * would read the old state, the waker would read no sleeper, and the wake
 * would be lost until the next timeout. */
static inline uint32_t aip_fetch_add_u32(uint32_t *p, uint32_t v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
static inline uint32_t aip_fetch_sub_u32(uint32_t *p, uint32_t v) {
    return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST);
}
static inline void aip_fence_seq_cst(void) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* A polite spin: tells the core we are busy-waiting (frees the sibling
 * hyper-thread, saves power) without giving up the time slice. */
static inline void aip_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

#endif /* AIP_ATOMIC_H */
