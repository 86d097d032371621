# Waiting without burning a core, shared by SlotTable and ResultRing.
#
# The sleep/wake handshake (a Dekker pattern, so no wake is ever lost):
#   sleeper: sleepers += 1 (seq_cst); seen = seq; re-check; sleep while seq == seen
#   waker:   change the state; full fence; if sleepers: seq += 1; wake all
# Either the waker sees the sleeper registered (and bumps seq, so the sleep
# returns at once or is woken), or the sleeper's re-check sees the new state.
# Wakers pay one fence and one load when nobody sleeps: no syscall, no
# contended write on the hot path.
from libc.stdint cimport int64_t, uint32_t

from aip._core._layout cimport (
    AIP_AGAIN, AIP_CLOSED, AIP_EMPTY, AIP_FULL, AIP_TIMEOUT,
    aip_cpu_relax, aip_fence_seq_cst, aip_fetch_add_u32, aip_fetch_sub_u32,
    AIP_WAIT_WOKEN, aip_load_u32_acquire, aip_load_u32_relaxed, aip_now_ns,
    aip_wait_u32, aip_wake_all,
)

cdef enum:
    # Spin this long before sleeping. Longer catches a back-to-back stream
    # without a syscall on either side (a sleep + wake costs the waker a
    # futex syscall and the sleeper ~15-20 us of kernel wake-up); shorter
    # gives the core back sooner. 20 us covers the gap between records of a
    # busy producer and costs < 1 % CPU for waits that end in sleep at
    # up to a few hundred waits per second.
    SPIN_NS = 20000
    # pause instructions between two checks while spinning: each check reads
    # a line another core writes; pausing keeps that traffic down.
    SPIN_PAUSES = 16
    # Longest single sleep: a blocked call comes back to Python this often
    # to run signal handlers (Ctrl-C) and re-check its deadline.
    WAIT_SLICE_NS = 100000000

# One attempt at the operation: AIP_EMPTY / AIP_FULL mean "not yet".
ctypedef int (*attempt_fn)(void *ctx) noexcept nogil


cdef inline bint _not_yet(int status) noexcept nogil:
    return status == AIP_EMPTY or status == AIP_FULL


cdef inline int wait_until(attempt_fn attempt, void *ctx, uint32_t *seq,
                           uint32_t *sleepers, uint32_t *closed,
                           int64_t deadline) noexcept nogil:
    """Retry ``attempt`` until it succeeds or fails for good.

    Spins for SPIN_NS, then sleeps on ``seq`` for at most one WAIT_SLICE_NS.
    Returns the attempt's own status, AIP_CLOSED, AIP_TIMEOUT (``deadline``
    in aip_now_ns() time has passed; -1 means none), or AIP_AGAIN after a
    sleep that brought nothing, so that the caller can take the GIL, handle
    signals and call again. A wake is answered by one more attempt right
    here: the usual case returns its result without a round trip through
    Python. ``closed`` is only looked at once the attempt has found nothing,
    so what was published before a shutdown is still delivered.
    """
    cdef int status
    cdef int i
    cdef uint32_t seen
    cdef int64_t now
    cdef int64_t left
    cdef int64_t spin_until = aip_now_ns() + SPIN_NS
    while True:
        status = attempt(ctx)
        if not _not_yet(status):
            return status
        if aip_load_u32_acquire(closed):
            return AIP_CLOSED
        now = aip_now_ns()
        if deadline >= 0 and now >= deadline:
            return AIP_TIMEOUT
        if now >= spin_until:
            break
        for i in range(SPIN_PAUSES):
            aip_cpu_relax()

    aip_fetch_add_u32(sleepers, 1)
    seen = aip_load_u32_acquire(seq)
    status = attempt(ctx)
    if _not_yet(status):
        if aip_load_u32_acquire(closed):
            status = AIP_CLOSED
        else:
            left = WAIT_SLICE_NS
            if deadline >= 0 and deadline - aip_now_ns() < left:
                left = deadline - aip_now_ns()
            if left <= 0:
                status = AIP_TIMEOUT
            elif aip_wait_u32(seq, seen, left) == AIP_WAIT_WOKEN:
                status = attempt(ctx)
                if _not_yet(status):
                    status = AIP_AGAIN
            else:
                status = AIP_AGAIN
    aip_fetch_sub_u32(sleepers, 1)
    return status


cdef inline void wake_sleepers(uint32_t *seq, uint32_t *sleepers) noexcept nogil:
    """Wake whoever sleeps on ``seq``; call after the state change is stored."""
    aip_fence_seq_cst()  # orders our state store before the sleepers load
    if aip_load_u32_relaxed(sleepers) != 0:
        aip_fetch_add_u32(seq, 1)
        aip_wake_all(seq)


cdef inline int64_t deadline_after(object timeout) except? -2:
    """Absolute deadline in aip_now_ns() time for a timeout in seconds (None: -1, never)."""
    if timeout is None:
        return -1
    cdef double seconds = timeout
    if seconds < 0:
        raise ValueError("timeout must be None or >= 0")
    return aip_now_ns() + <int64_t>(seconds * 1e9)
