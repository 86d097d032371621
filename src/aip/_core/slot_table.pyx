# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""SlotTable: who holds which frame slot, in shared memory.

Each slot carries a frame (``slot_bytes`` of payload, e.g. one 640x480x3
image) and a control word changed only by compare-and-swap, so that a
manager and any number of workers in other processes hand frames over
without a lock:

    manager: acquire_free -> write payload -> publish(frame_id, hint)
    worker:  claim(hint)  -> read payload  -> (publish result) -> release
    manager: reclaim(dead_worker) puts a dead worker's frames back as READY

Blocking calls spin briefly, then sleep on a futex word; every wait has a
timeout and wakes on shutdown().
"""
from libc.stdint cimport UINT64_MAX, int64_t, uint32_t, uint64_t

from aip._core._layout cimport (
    AIP_AGAIN, AIP_BAD_INDEX, AIP_CLOSED, AIP_CTL_GENERATION, AIP_CTL_MAKE,
    AIP_CTL_OWNER, AIP_CTL_STATE, AIP_EMPTY, AIP_FULL, AIP_HINT_ANY,
    AIP_MAGIC_SLOT_TABLE, AIP_MAX_WORKER, AIP_NO_OWNER, AIP_NOT_OWNER, AIP_OK,
    AIP_SLOT_FREE, AIP_SLOT_READING, AIP_SLOT_READY, AIP_SLOT_WRITING, AIP_TIMEOUT,
    AIP_WRONG_STATE, AIP_ASSERT, AIP_DEBUG, aip_cas_u64, aip_fetch_add_u32, aip_load_u32_acquire,
    aip_load_u32_relaxed, aip_load_u64_acquire, aip_load_u64_relaxed,
    aip_now_ns, aip_slot, aip_slot_table_header, aip_store_u32_release,
    aip_store_u32_relaxed, aip_store_u64_relaxed, aip_wake_all,
)
from aip._core._segment cimport (
    Segment, check_header, create_segment, header_of, init_header,
    open_segment, publish_header,
)
from aip._core._status cimport raise_for_status
from aip._core._sync cimport deadline_after, wait_until, wake_sleepers

from cpython.exc cimport PyErr_CheckSignals

DEBUG_BUILD = bool(AIP_DEBUG)  # invariant checks compiled in (AIP_DEBUG=ON)
FREE = AIP_SLOT_FREE
WRITING = AIP_SLOT_WRITING
READY = AIP_SLOT_READY
READING = AIP_SLOT_READING
HINT_ANY = AIP_HINT_ANY
NO_OWNER = AIP_NO_OWNER
MAX_WORKER = AIP_MAX_WORKER
STATE_NAMES = ("FREE", "WRITING", "READY", "READING")

# Payloads start on a page so a frame never straddles more pages than it
# must, and each payload on a cache line so that SIMD copies are aligned.
cdef enum:
    PAGE = 4096
    LINE = 64


cdef inline uint64_t _round_up(uint64_t n, uint64_t to) noexcept nogil:
    return (n + to - 1) // to * to


# ---- attempts: one try each, no waiting; AIP_EMPTY / AIP_FULL = not yet ----

ctypedef struct claim_attempt:
    aip_slot *slots
    uint32_t n_slots
    uint32_t hint      # the claimer's backend, or AIP_HINT_ANY for any frame
    uint32_t worker
    Py_ssize_t slot    # out


cdef int try_claim(void *p) noexcept nogil:
    """READY -> READING on the oldest READY frame meant for this hint."""
    cdef claim_attempt *a = <claim_attempt *>p
    cdef uint32_t i, slot_hint
    cdef uint64_t ctl, best_ctl = 0, frame_id, best_frame
    cdef Py_ssize_t best
    while True:
        best = -1
        best_frame = UINT64_MAX
        for i in range(a.n_slots):
            ctl = aip_load_u64_acquire(&a.slots[i].ctl)
            if AIP_CTL_STATE(ctl) != AIP_SLOT_READY:
                continue
            # Relaxed is enough: if the slot changed since the acquire
            # above, its generation changed too and the CAS below fails.
            slot_hint = aip_load_u32_relaxed(&a.slots[i].backend_hint)
            if a.hint != AIP_HINT_ANY and slot_hint != a.hint and slot_hint != AIP_HINT_ANY:
                continue
            frame_id = aip_load_u64_relaxed(&a.slots[i].frame_id)
            if frame_id < best_frame:
                best, best_frame, best_ctl = i, frame_id, ctl
        if best < 0:
            return AIP_EMPTY
        if aip_cas_u64(&a.slots[best].ctl, &best_ctl,
                       AIP_CTL_MAKE(AIP_SLOT_READING, a.worker, AIP_CTL_GENERATION(best_ctl))):
            AIP_ASSERT(AIP_CTL_OWNER(best_ctl) == AIP_NO_OWNER)  # READY slots have no owner
            aip_store_u64_relaxed(<uint64_t *>&a.slots[best].t_claim_ns, <uint64_t>aip_now_ns())
            a.slot = best
            return AIP_OK
        # Another worker won this slot (or the manager dropped it): rescan.


ctypedef struct free_attempt:
    aip_slot *slots
    uint32_t n_slots
    uint32_t start
    Py_ssize_t slot    # out


cdef int try_acquire_free(void *p) noexcept nogil:
    """FREE -> WRITING, bumping the generation (a new frame, a new identity)."""
    cdef free_attempt *a = <free_attempt *>p
    cdef uint32_t k, i
    cdef uint64_t ctl
    for k in range(a.n_slots):
        i = (a.start + k) % a.n_slots
        ctl = aip_load_u64_acquire(&a.slots[i].ctl)
        if AIP_CTL_STATE(ctl) != AIP_SLOT_FREE:
            continue
        if aip_cas_u64(&a.slots[i].ctl, &ctl,
                       AIP_CTL_MAKE(AIP_SLOT_WRITING, AIP_NO_OWNER, AIP_CTL_GENERATION(ctl) + 1)):
            AIP_ASSERT(AIP_CTL_OWNER(ctl) == AIP_NO_OWNER)  # FREE slots have no owner
            a.slot = i
            return AIP_OK
    return AIP_FULL


cdef class SlotTable:
    """Frame slots in shared memory, handed over by compare-and-swap.

    Create one in the manager with :meth:`create`, open it in workers with
    :meth:`attach`. ``hint`` is a backend number (or ``HINT_ANY``); a
    ``worker`` id is a number in ``0..MAX_WORKER`` unique among live workers.
    """

    def __cinit__(self):
        self._header = NULL

    @classmethod
    def create(cls, name=None, *, n_slots, slot_bytes=0):
        """Create a table of ``n_slots`` slots of ``slot_bytes`` payload each.

        ``name`` defaults to a random, unguessable ``aip_...`` name.
        """
        if not 1 <= n_slots <= 1 << 20:
            raise ValueError(f"n_slots must be in 1..{1 << 20}, got {n_slots}")
        if slot_bytes < 0:
            raise ValueError(f"slot_bytes must be >= 0, got {slot_bytes}")
        cdef uint64_t slots_offset = sizeof(aip_slot_table_header)
        cdef uint64_t data_offset = _round_up(slots_offset + n_slots * sizeof(aip_slot), PAGE)
        cdef uint64_t stride = _round_up(slot_bytes, LINE)
        cdef Segment segment = create_segment(name, data_offset + stride * n_slots)
        cdef aip_slot_table_header *header = <aip_slot_table_header *>header_of(segment)
        cdef aip_slot *slots = <aip_slot *>(segment.base + slots_offset)
        init_header(segment, sizeof(aip_slot_table_header))
        header.n_slots = n_slots
        header.slot_bytes = slot_bytes
        header.slots_offset = slots_offset
        header.data_offset = data_offset
        header.data_stride = stride
        for i in range(n_slots):
            slots[i].ctl = AIP_CTL_MAKE(AIP_SLOT_FREE, AIP_NO_OWNER, 0)
            slots[i].backend_hint = AIP_HINT_ANY
        publish_header(segment, AIP_MAGIC_SLOT_TABLE)
        return cls._bind(segment)

    @classmethod
    def attach(cls, str name):
        """Open an existing table; ValueError if ``name`` is not one of ours."""
        cdef Segment segment = open_segment(name)
        cdef aip_slot_table_header *header
        try:
            check_header(segment, AIP_MAGIC_SLOT_TABLE, "SlotTable", sizeof(aip_slot_table_header))
            header = <aip_slot_table_header *>header_of(segment)
            if (header.slots_offset + header.n_slots * sizeof(aip_slot) > header.data_offset
                    or header.data_offset + header.data_stride * header.n_slots > <uint64_t>segment.size
                    or header.data_stride < header.slot_bytes):
                raise ValueError(f"SlotTable {name!r} has an inconsistent header: corrupt segment")
            return cls._bind(segment)
        except BaseException:
            segment.close()
            raise

    @classmethod
    def _bind(cls, Segment segment):
        cdef SlotTable table = cls.__new__(cls)
        cdef aip_slot_table_header *header = <aip_slot_table_header *>header_of(segment)
        table._segment = segment
        table._header = header
        table._slots = <aip_slot *>(segment.base + header.slots_offset)
        table.n_slots = header.n_slots
        table.slot_bytes = header.slot_bytes
        table._data_offset = header.data_offset
        table._data_stride = header.data_stride
        table._free_cursor = 0
        return table

    # ---- lifecycle -------------------------------------------------------

    @property
    def name(self):
        """The segment's name: pass it to :meth:`attach` in another process."""
        return self._segment.name

    @property
    def closed(self):
        """True once this handle is closed."""
        return self._header == NULL

    @property
    def is_shutdown(self):
        """True once :meth:`shutdown` was called by any process."""
        return aip_load_u32_acquire(&self._live_header().seg.closed) != 0

    def close(self):
        """Unmap this handle (the segment lives on for other processes)."""
        if self._header != NULL:
            self._header = NULL
            self._segment.close()

    def unlink(self):
        """Remove the segment's name; call once, from the creator."""
        self._segment.unlink()

    def shutdown(self):
        """Tell every process the table is done: all blocked calls wake and
        raise ``Closed`` (claims still get frames already READY first)."""
        cdef aip_slot_table_header *h = self._live_header()
        aip_store_u32_release(&h.seg.closed, 1)
        aip_fetch_add_u32(&h.ready_seq, 1)
        aip_fetch_add_u32(&h.free_seq, 1)
        aip_wake_all(&h.ready_seq)
        aip_wake_all(&h.free_seq)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        """Close; the creating handle also unlinks."""
        created = self._segment.created
        self.close()
        if created:
            self.unlink()

    def __repr__(self):
        if self._header == NULL:
            return f"<SlotTable {self._segment.name!r} closed>"
        return (f"<SlotTable {self._segment.name!r} n_slots={self.n_slots} "
                f"slot_bytes={self.slot_bytes}>")

    cdef aip_slot_table_header *_live_header(self) except NULL:
        if self._header == NULL:
            raise ValueError("SlotTable is closed")
        return self._header

    cdef int _check_slot(self, Py_ssize_t slot) except -1:
        self._live_header()
        if slot < 0 or slot >= self.n_slots:
            raise_for_status(AIP_BAD_INDEX, f"slot {slot} not in 0..{self.n_slots - 1}")
        return 0

    # ---- manager side ----------------------------------------------------

    def acquire_free(self, timeout=None):
        """FREE -> WRITING: take a free slot to write a frame into.

        Waits up to ``timeout`` seconds (None: forever; 0: don't wait) and
        raises ``TimeoutError`` when none frees up, ``Closed`` after shutdown.
        """
        cdef aip_slot_table_header *h = self._live_header()
        cdef free_attempt a
        a.slots = self._slots
        a.n_slots = self.n_slots
        a.start = self._free_cursor
        cdef int status = try_acquire_free(&a)
        cdef int64_t deadline
        if status == AIP_FULL:
            if aip_load_u32_acquire(&h.seg.closed):
                raise_for_status(AIP_CLOSED, "SlotTable was shut down")
            deadline = deadline_after(timeout)
            while True:
                with nogil:
                    status = wait_until(try_acquire_free, &a, &h.free_seq,
                                        &h.free_sleepers, &h.seg.closed, deadline)
                if status != AIP_AGAIN:
                    break
                PyErr_CheckSignals()
        if status == AIP_FULL:
            status = AIP_TIMEOUT
        raise_for_status(status, "no free slot")
        self._free_cursor = <uint32_t>((a.slot + 1) % self.n_slots)
        return a.slot

    def publish(self, Py_ssize_t slot, uint64_t frame_id, uint32_t hint=AIP_HINT_ANY):
        """WRITING -> READY: the frame in ``slot`` is complete; ``hint`` names
        the backend that should take it (``HINT_ANY``: whoever is free)."""
        self._check_slot(slot)
        cdef aip_slot *s = &self._slots[slot]
        cdef uint64_t ctl = aip_load_u64_acquire(&s.ctl)
        if AIP_CTL_STATE(ctl) != AIP_SLOT_WRITING:
            raise_for_status(AIP_WRONG_STATE, f"publish: slot {slot} is "
                             f"{STATE_NAMES[AIP_CTL_STATE(ctl)]}, not WRITING")
        aip_store_u64_relaxed(&s.frame_id, frame_id)
        aip_store_u32_relaxed(&s.backend_hint, hint)
        aip_store_u64_relaxed(<uint64_t *>&s.t_publish_ns, <uint64_t>aip_now_ns())
        # The CAS is the release: the payload and the fields above are
        # visible to whoever sees READY.
        if not aip_cas_u64(&s.ctl, &ctl, AIP_CTL_MAKE(AIP_SLOT_READY, AIP_NO_OWNER,
                                                      AIP_CTL_GENERATION(ctl))):
            raise_for_status(AIP_WRONG_STATE, f"publish: slot {slot} changed under the writer")
        wake_sleepers(&self._header.ready_seq, &self._header.ready_sleepers)

    def abort(self, Py_ssize_t slot):
        """WRITING -> FREE: give up a slot without publishing it."""
        self._transition(slot, AIP_SLOT_WRITING, AIP_SLOT_FREE, AIP_NO_OWNER, 0)
        wake_sleepers(&self._header.free_seq, &self._header.free_sleepers)

    def drop_oldest(self, uint32_t hint=AIP_HINT_ANY):
        """READY -> WRITING on the oldest READY frame that no worker took yet.

        For the drop-oldest policy of live streams: the caller overwrites the
        slot with a newer frame. ``hint`` limits the choice to frames meant
        for one backend. Returns ``(slot, dropped_frame_id)`` or None.
        """
        self._live_header()
        cdef uint32_t i
        cdef uint64_t ctl, best_ctl = 0, frame_id, best_frame
        cdef Py_ssize_t best
        cdef uint32_t slot_hint
        while True:
            best = -1
            best_frame = UINT64_MAX
            for i in range(self.n_slots):
                ctl = aip_load_u64_acquire(&self._slots[i].ctl)
                if AIP_CTL_STATE(ctl) != AIP_SLOT_READY:
                    continue
                slot_hint = aip_load_u32_relaxed(&self._slots[i].backend_hint)
                if hint != AIP_HINT_ANY and slot_hint != hint:
                    continue
                frame_id = aip_load_u64_relaxed(&self._slots[i].frame_id)
                if frame_id < best_frame:
                    best, best_frame, best_ctl = i, frame_id, ctl
            if best < 0:
                return None
            if aip_cas_u64(&self._slots[best].ctl, &best_ctl,
                           AIP_CTL_MAKE(AIP_SLOT_WRITING, AIP_NO_OWNER,
                                        AIP_CTL_GENERATION(best_ctl) + 1)):
                return best, best_frame

    def reclaim(self, uint32_t owner, uint32_t hint=AIP_HINT_ANY):
        """READING -> READY for every slot held by ``owner`` (a dead worker).

        The frames are re-hinted to ``hint`` (default: any worker) so that a
        live worker takes them. Returns the list of ``(slot, frame_id)``.
        """
        cdef aip_slot_table_header *h = self._live_header()
        cdef uint32_t i
        cdef uint64_t ctl
        reclaimed = []
        for i in range(self.n_slots):
            ctl = aip_load_u64_acquire(&self._slots[i].ctl)
            if AIP_CTL_STATE(ctl) != AIP_SLOT_READING or AIP_CTL_OWNER(ctl) != owner:
                continue
            # Nobody else writes a READING slot's fields: the owner is dead.
            aip_store_u32_relaxed(&self._slots[i].backend_hint, hint)
            if aip_cas_u64(&self._slots[i].ctl, &ctl,
                           AIP_CTL_MAKE(AIP_SLOT_READY, AIP_NO_OWNER, AIP_CTL_GENERATION(ctl))):
                reclaimed.append((i, aip_load_u64_relaxed(&self._slots[i].frame_id)))
        if reclaimed:
            wake_sleepers(&h.ready_seq, &h.ready_sleepers)
        return reclaimed

    def retarget(self, uint32_t from_hint, uint32_t to_hint=AIP_HINT_ANY):
        """Re-hint every READY frame hinted ``from_hint`` (a backend that died
        or stalled) to ``to_hint``. Returns how many frames moved.

        Each frame goes READY -> WRITING -> READY, so a worker never claims
        it half re-hinted. Its publish time is kept.
        """
        cdef aip_slot_table_header *h = self._live_header()
        cdef uint32_t i
        cdef uint64_t ctl
        cdef uint32_t generation
        cdef int moved = 0
        for i in range(self.n_slots):
            ctl = aip_load_u64_acquire(&self._slots[i].ctl)
            if (AIP_CTL_STATE(ctl) != AIP_SLOT_READY
                    or aip_load_u32_relaxed(&self._slots[i].backend_hint) != from_hint):
                continue
            generation = AIP_CTL_GENERATION(ctl) + 1
            if not aip_cas_u64(&self._slots[i].ctl, &ctl,
                               AIP_CTL_MAKE(AIP_SLOT_WRITING, AIP_NO_OWNER, generation)):
                continue  # claimed meanwhile: it is being served
            aip_store_u32_relaxed(&self._slots[i].backend_hint, to_hint)
            ctl = AIP_CTL_MAKE(AIP_SLOT_WRITING, AIP_NO_OWNER, generation)
            aip_cas_u64(&self._slots[i].ctl, &ctl,
                        AIP_CTL_MAKE(AIP_SLOT_READY, AIP_NO_OWNER, generation))
            moved += 1
        if moved:
            wake_sleepers(&h.ready_seq, &h.ready_sleepers)
        return moved

    # ---- worker side -----------------------------------------------------

    def claim(self, uint32_t hint, uint32_t worker, timeout=None):
        """READY -> READING: take the oldest READY frame hinted ``hint`` (or
        hinted ``HINT_ANY``; ``hint=HINT_ANY`` takes any frame).

        Returns the slot. Waits up to ``timeout`` seconds (None: forever;
        0: don't wait); raises ``TimeoutError``, or ``Closed`` after
        shutdown once no frame for this worker is left.
        """
        cdef aip_slot_table_header *h = self._live_header()
        if worker > AIP_MAX_WORKER:
            raise ValueError(f"worker must be in 0..{AIP_MAX_WORKER}, got {worker}")
        cdef claim_attempt a
        a.slots = self._slots
        a.n_slots = self.n_slots
        a.hint = hint
        a.worker = worker
        cdef int status = try_claim(&a)
        cdef int64_t deadline
        if status == AIP_EMPTY:
            deadline = deadline_after(timeout)
            while True:
                with nogil:
                    status = wait_until(try_claim, &a, &h.ready_seq,
                                        &h.ready_sleepers, &h.seg.closed, deadline)
                if status != AIP_AGAIN:
                    break
                PyErr_CheckSignals()
        if status == AIP_EMPTY:
            status = AIP_TIMEOUT
        raise_for_status(status, f"no READY frame for hint {hint}")
        return a.slot

    def release(self, Py_ssize_t slot, uint32_t worker):
        """READING -> FREE, only by the worker that holds the slot.

        Raises ``SlotStateError`` if the slot was reclaimed meanwhile (the
        frame was handed to another worker: drop this worker's result).
        """
        self._check_slot(slot)
        cdef aip_slot *s = &self._slots[slot]
        aip_store_u64_relaxed(<uint64_t *>&s.t_release_ns, <uint64_t>aip_now_ns())
        self._transition(slot, AIP_SLOT_READING, AIP_SLOT_FREE, AIP_NO_OWNER, worker)
        wake_sleepers(&self._header.free_seq, &self._header.free_sleepers)

    cdef _transition(self, Py_ssize_t slot, uint32_t from_state, uint32_t to_state,
                     uint32_t to_owner, uint32_t expected_owner):
        self._check_slot(slot)
        cdef aip_slot *s = &self._slots[slot]
        cdef uint64_t ctl = aip_load_u64_acquire(&s.ctl)
        cdef uint32_t state = AIP_CTL_STATE(ctl)
        if state != from_state:
            raise_for_status(AIP_WRONG_STATE, f"slot {slot} is {STATE_NAMES[state]}, "
                             f"not {STATE_NAMES[from_state]}")
        if from_state == AIP_SLOT_READING and AIP_CTL_OWNER(ctl) != expected_owner:
            raise_for_status(AIP_NOT_OWNER, f"slot {slot} is held by worker "
                             f"{AIP_CTL_OWNER(ctl)}, not {expected_owner}")
        if not aip_cas_u64(&s.ctl, &ctl, AIP_CTL_MAKE(to_state, to_owner, AIP_CTL_GENERATION(ctl))):
            raise_for_status(AIP_NOT_OWNER, f"slot {slot} changed hands during the call")

    # ---- payloads and inspection ----------------------------------------

    def buffer(self, Py_ssize_t slot):
        """A writable memoryview of the slot's payload (zero-copy)."""
        self._check_slot(slot)
        cdef Py_ssize_t start = self._data_offset + slot * self._data_stride
        return memoryview(self._segment)[start:start + <Py_ssize_t>self.slot_bytes]

    def state(self, Py_ssize_t slot):
        """The slot's state: FREE, WRITING, READY or READING."""
        self._check_slot(slot)
        return AIP_CTL_STATE(aip_load_u64_acquire(&self._slots[slot].ctl))

    def frame_id(self, Py_ssize_t slot):
        """The frame id last published into the slot."""
        self._check_slot(slot)
        return aip_load_u64_relaxed(&self._slots[slot].frame_id)

    def slot_info(self, Py_ssize_t slot):
        """A snapshot of the slot's fields, as a dict (for tools and tests)."""
        self._check_slot(slot)
        cdef aip_slot *s = &self._slots[slot]
        cdef uint64_t ctl = aip_load_u64_acquire(&s.ctl)
        return {
            "state": STATE_NAMES[AIP_CTL_STATE(ctl)],
            "owner": None if AIP_CTL_OWNER(ctl) == AIP_NO_OWNER else AIP_CTL_OWNER(ctl),
            "generation": AIP_CTL_GENERATION(ctl),
            "frame_id": aip_load_u64_relaxed(&s.frame_id),
            "backend_hint": aip_load_u32_relaxed(&s.backend_hint),
            "t_publish_ns": <int64_t>aip_load_u64_relaxed(<uint64_t *>&s.t_publish_ns),
            "t_claim_ns": <int64_t>aip_load_u64_relaxed(<uint64_t *>&s.t_claim_ns),
            "t_release_ns": <int64_t>aip_load_u64_relaxed(<uint64_t *>&s.t_release_ns),
        }

    def counts(self):
        """How many slots are in each state: ``{"FREE": n, ...}``."""
        self._live_header()
        cdef uint32_t i
        cdef list tally = [0, 0, 0, 0]
        for i in range(self.n_slots):
            tally[AIP_CTL_STATE(aip_load_u64_acquire(&self._slots[i].ctl))] += 1
        return dict(zip(STATE_NAMES, tally))
