# Waiting without burning a core, shared by SlotTable and ResultRing.
#
# The sleep/wake handshake (a Dekker pattern, so no wake is ever lost; why
# each side needs its fence is in include/aip_atomic.h):
#   sleeper: sleepers += 1; fence; seen = seq; re-check; sleep while seq == seen
#   waker:   change the state; fence; if sleepers: seq += 1; wake
# Either the waker sees the sleeper registered (and bumps seq, so the sleep
# returns at once or is woken), or the sleeper's re-check sees the new state.
# Wakers pay one fence and one load when nobody sleeps: no syscall, no
# contended write on the hot path.
from libc.math cimport isnan
from libc.stdint cimport int64_t, uint32_t, uint64_t

from aip._core._layout cimport (
    AIP_AGAIN, AIP_CLOSED, AIP_EMPTY, AIP_FULL, AIP_OK, AIP_TIMEOUT,
    AIP_WAIT_CHANGED, AIP_WAIT_WOKEN, aip_cpu_relax, aip_fence_seq_cst,
    aip_fetch_add_u32, aip_fetch_sub_u32, aip_load_u32_acquire,
    aip_load_u32_relaxed, aip_now_ns, aip_wait_u32, aip_wake_all, aip_wake_one,
    aip_wake_line,
)

cdef enum:
    # Spinning before sleeping adapts per handle, as glibc's adaptive mutex
    # and KVM's halt-polling do: a spin that caught its record grows the
    # budget (a back-to-back stream is served without a syscall on either
    # side: a sleep + wake costs the waker a futex syscall and the sleeper
    # ~15-20 us of kernel wake-up), a spin that ended in sleep halves it (a
    # paced stream with gaps longer than any spin stops burning the core,
    # and sleeps at once: spinning there only delayed the sleep, kept the
    # vCPU busy and pushed the wake-up onto a halted one). SPIN_MIN_NS keeps
    # a short spin that can notice a stream speeding up again.
    SPIN_START_NS = 20000
    SPIN_MIN_NS = 2000
    SPIN_MAX_NS = 100000
    # pause instructions between two checks while spinning: each check reads
    # a line another core writes; pausing keeps that traffic down.
    SPIN_PAUSES = 16
    # Longest single sleep: a blocked call comes back to Python this often
    # to run signal handlers (Ctrl-C) and re-check its deadline.
    WAIT_SLICE_NS = 100000000
    # A timeout longer than this many seconds (about 31 years, inf included)
    # means "forever": it keeps seconds * 1e9 far inside int64.
    MAX_TIMEOUT_S = 1000000000

# One attempt at the operation: AIP_EMPTY / AIP_FULL mean "not yet".
ctypedef int (*attempt_fn)(void *ctx) noexcept nogil
# Called by a sleeper that was woken while it was not asleep yet and took
# its result without that wake: for "wake one" words, the wake was perhaps
# meant for work it did not take, so it passes the wake on.
ctypedef void (*pass_wake_fn)(void *ctx) noexcept nogil

ctypedef struct wait_spec:
    uint32_t *seq           # the word to sleep on
    uint32_t *sleepers      # its sleeper count
    uint32_t *closed        # shared: the segment was shut down (drain first)
    uint32_t *closing       # this handle is being closed: stop at once
    int64_t deadline        # aip_now_ns() time, -1 = none
    int64_t *spin_ns        # this handle's adaptive spin budget (in/out)
    pass_wake_fn pass_wake  # or NULL
    void *pass_ctx
    uint64_t wakeups        # out: sleeps ended by a wake


cdef inline bint _not_yet(int status) noexcept nogil:
    return status == AIP_EMPTY or status == AIP_FULL


cdef inline int wait_until(attempt_fn attempt, void *ctx, wait_spec *w) noexcept nogil:
    """Retry ``attempt`` until it succeeds or fails for good.

    Spins for the handle's budget (``w.spin_ns``), then sleeps on ``w.seq`` for at most one
    WAIT_SLICE_NS. Returns the attempt's own status, AIP_CLOSED, AIP_TIMEOUT
    (the deadline has passed), or AIP_AGAIN after a sleep that brought
    nothing, so that the caller can take the GIL, handle signals and call
    again. A wake is answered by one more attempt right here: the usual case
    returns its result without a round trip through Python. ``closed`` is
    only looked at once the attempt has found nothing, so what was published
    before a shutdown is still delivered; ``closing`` stops at once.
    """
    cdef int status
    cdef int i
    cdef int woke
    cdef uint32_t seen
    cdef int64_t now
    cdef int64_t left
    cdef int64_t budget = w.spin_ns[0]
    cdef int64_t spin_until = aip_now_ns() + budget
    cdef bint spun = False
    while True:
        if aip_load_u32_acquire(w.closing):
            return AIP_CLOSED
        status = attempt(ctx)
        if not _not_yet(status):
            if spun and budget < SPIN_MAX_NS:  # the spin paid off: allow a longer one
                w.spin_ns[0] = budget * 2 if budget * 2 < SPIN_MAX_NS else SPIN_MAX_NS
            return status
        spun = True
        if aip_load_u32_acquire(w.closed):
            return AIP_CLOSED
        now = aip_now_ns()
        if w.deadline >= 0 and now >= w.deadline:
            return AIP_TIMEOUT
        if now >= spin_until:
            break
        for i in range(SPIN_PAUSES):
            aip_cpu_relax()

    # The spin did not pay off: a shorter one next time.
    w.spin_ns[0] = budget // 2 if budget // 2 > SPIN_MIN_NS else SPIN_MIN_NS
    aip_fetch_add_u32(w.sleepers, 1)
    aip_fence_seq_cst()  # register before the re-check: see include/aip_atomic.h
    seen = aip_load_u32_acquire(w.seq)
    woke = 0
    if aip_load_u32_acquire(w.closing):
        status = AIP_CLOSED
    else:
        status = attempt(ctx)
    if _not_yet(status):
        if aip_load_u32_acquire(w.closed):
            status = AIP_CLOSED
        else:
            left = WAIT_SLICE_NS
            if w.deadline >= 0 and w.deadline - aip_now_ns() < left:
                left = w.deadline - aip_now_ns()
            if left <= 0:
                status = AIP_TIMEOUT
            else:
                woke = aip_wait_u32(w.seq, seen, left)
                if woke == AIP_WAIT_WOKEN or woke == AIP_WAIT_CHANGED:
                    w.wakeups += 1
                    woke = 1
                    status = AIP_CLOSED if aip_load_u32_acquire(w.closing) else attempt(ctx)
                    if _not_yet(status):
                        status = AIP_AGAIN
                else:
                    woke = 0
                    status = AIP_AGAIN
    aip_fetch_sub_u32(w.sleepers, 1)
    if (w.pass_wake != NULL and not woke and status == AIP_OK
            and aip_load_u32_acquire(w.seq) != seen):
        w.pass_wake(w.pass_ctx)
    return status


cdef inline void wake_sleepers(uint32_t *seq, uint32_t *sleepers) noexcept nogil:
    """Wake whoever sleeps on ``seq``; call after the state change is stored."""
    aip_fence_seq_cst()  # orders our state store before the sleepers load
    if aip_load_u32_relaxed(sleepers) != 0:
        aip_fetch_add_u32(seq, 1)
        aip_wake_all(seq)


cdef inline void wake_line(aip_wake_line *line) noexcept nogil:
    """Wake every sleeper of ``line``; the caller has fenced after its store."""
    if aip_load_u32_relaxed(&line.sleepers) != 0:
        aip_fetch_add_u32(&line.seq, 1)
        aip_wake_all(&line.seq)


cdef inline bint wake_one_of(aip_wake_line *lines, uint32_t n_lines,
                             uint32_t *cursor) noexcept nogil:
    """Wake one sleeper among ``lines``, the first with a sleeper from
    ``cursor`` on (round robin, so that back-to-back wakes spread over
    different sleepers). The caller has fenced after its store. Returns
    whether anybody was woken."""
    cdef uint32_t k, i
    for k in range(n_lines):
        i = (cursor[0] + k) % n_lines
        if aip_load_u32_relaxed(&lines[i].sleepers) != 0:
            aip_fetch_add_u32(&lines[i].seq, 1)
            aip_wake_one(&lines[i].seq)
            cursor[0] = (i + 1) % n_lines
            return True
    return False


cdef inline void bump_and_wake_all(uint32_t *seq) noexcept nogil:
    """Unconditional wake of every sleeper of ``seq`` (shutdown, close)."""
    aip_fetch_add_u32(seq, 1)
    aip_wake_all(seq)


cdef inline int64_t deadline_after(object timeout) except? -2:
    """Absolute deadline in aip_now_ns() time for a timeout in seconds
    (None, inf or more than MAX_TIMEOUT_S: -1, never)."""
    if timeout is None:
        return -1
    cdef double seconds = timeout
    if isnan(seconds) or seconds < 0:
        raise ValueError(f"timeout must be None or a number >= 0, got {timeout!r}")
    if seconds > MAX_TIMEOUT_S:
        return -1
    return aip_now_ns() + <int64_t>(seconds * 1e9)
