# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""SlotTable: who holds which frame slot, in shared memory.

Each slot carries a frame (``slot_bytes`` of payload, e.g. one 640x480x3
image) and a control word changed only by compare-and-swap, so that a
manager and any number of workers in other processes hand frames over
without a lock:

    manager: acquire_free -> write payload -> publish(frame_id, target)
    worker:  claim(target)  -> read payload  -> (publish result) -> release
    manager: reclaim(dead_worker) puts a dead worker's frames back as READY

Blocking calls spin briefly, then sleep on a futex word; every wait has a
timeout and wakes on shutdown().

Who is woken. Each target has a wake word of its own (target % wake_words), so
a frame published for worker 3 wakes worker 3 and nobody else, and a frame
any worker may take (ANY_WORKER) wakes exactly one sleeping claimer. Per-target
words rather than futex bitsets: bitsets exist only on Linux, while a word
per target works with macOS's __ulock / os_sync calls and the portable
fallback alike, at one cache line per word.
"""
from libc.stdint cimport UINT64_MAX, int64_t, uint32_t, uint64_t

from aip._core._layout cimport (
    AIP_AGAIN, AIP_BAD_INDEX, AIP_CLOSED, AIP_CORRUPT, AIP_CTL_GENERATION,
    AIP_CTL_MAKE, AIP_CTL_OWNER, AIP_CTL_STATE, AIP_EMPTY, AIP_FULL,
    AIP_ANY_WORKER, AIP_MAGIC_SLOT_TABLE, AIP_MAX_WORKER, AIP_NO_OWNER,
    AIP_NOT_OWNER, AIP_OK, AIP_SLOT_FREE, AIP_SLOT_READING, AIP_SLOT_READY,
    AIP_SLOT_WRITING, AIP_TIMEOUT, AIP_WRONG_STATE, AIP_ASSERT, AIP_DEBUG,
    aip_cas_u64, aip_fence_seq_cst, aip_load_u32_acquire, aip_load_u32_relaxed, aip_load_u64_acquire,
    aip_load_u64_relaxed, aip_now_ns, aip_slot, aip_slot_table_header,
    aip_store_u32_relaxed, aip_store_u64_relaxed, aip_wake_line,
)
from aip._core._segment cimport (
    Segment, SegmentHandle, check_identity, check_size, close_descriptor,
    create_segment, header_of, init_header, map_segment, publish_header,
    read_segment_header,
)
from aip._core._status cimport raise_for_status
from aip._core._sync cimport bump_and_wake_all, wake_line, wake_one_of, wake_sleepers
from aip._core._status import CorruptSegmentError


DEBUG_BUILD = bool(AIP_DEBUG)  # invariant checks compiled in (AIP_DEBUG=ON)
FREE = AIP_SLOT_FREE
WRITING = AIP_SLOT_WRITING
READY = AIP_SLOT_READY
READING = AIP_SLOT_READING
ANY_WORKER = AIP_ANY_WORKER
NO_OWNER = AIP_NO_OWNER
MAX_WORKER = AIP_MAX_WORKER
STATE_NAMES = ("FREE", "WRITING", "READY", "READING")

# Limits of a table, the same for create() and attach(): they keep every
# offset far inside 64 bits, so that a header read from another process
# cannot make the layout arithmetic overflow.
MAX_SLOTS = 1 << 20
MAX_SLOT_BYTES = 1 << 32      # 4 GiB: an 8K RGB frame is 100 MB
MAX_WAKE_WORDS = 4096
# Wake words by default: one per worker for up to 64 workers; beyond, two
# workers share a word (correct, with a useless wake-up now and then).
DEFAULT_WAKE_WORDS = 64

# Payloads start on a page so a frame never straddles more pages than it
# must, and each payload on a cache line so that SIMD copies are aligned.
cdef enum:
    PAGE = 4096
    LINE = 64


cdef inline uint64_t _round_up(uint64_t n, uint64_t to) noexcept nogil:
    return (n + to - 1) // to * to


def _layout(n_slots, slot_bytes, wake_words, error=ValueError, str what="SlotTable"):
    """Offsets of a table's parts, from its three parameters (checked;
    ``error(what + ": ...")`` when one is out of range)."""
    if not 1 <= n_slots <= MAX_SLOTS:
        raise error(f"{what}: n_slots must be in 1..{MAX_SLOTS}, got {n_slots}")
    if not 0 <= slot_bytes <= MAX_SLOT_BYTES:
        raise error(f"{what}: slot_bytes must be in 0..{MAX_SLOT_BYTES}, got {slot_bytes}")
    if not 1 <= wake_words <= MAX_WAKE_WORDS:
        raise error(f"{what}: wake_words must be in 1..{MAX_WAKE_WORDS}, got {wake_words}")
    wake_offset = sizeof(aip_slot_table_header)
    slots_offset = wake_offset + (wake_words + 1) * sizeof(aip_wake_line)
    data_offset = _round_up(slots_offset + n_slots * sizeof(aip_slot), PAGE)
    stride = _round_up(slot_bytes, LINE)
    return wake_offset, slots_offset, data_offset, stride, data_offset + stride * n_slots


cdef inline bint _state_ok(uint64_t ctl) noexcept nogil:
    return AIP_CTL_STATE(ctl) <= AIP_SLOT_READING


# ---- attempts: one try each, no waiting; AIP_EMPTY / AIP_FULL = not yet ----

ctypedef struct claim_attempt:
    aip_slot *slots
    uint32_t n_slots
    uint32_t target      # the claimer's backend, or AIP_ANY_WORKER for any frame
    uint32_t worker
    Py_ssize_t slot    # out (the corrupt slot, on AIP_CORRUPT)
    uint64_t bad_ctl   # out: its control word, on AIP_CORRUPT
    aip_wake_line *wake  # to pass a wake on: the claimers' lines
    uint32_t n_lines
    uint32_t *cursor


cdef int try_claim(void *p) noexcept nogil:
    """READY -> READING on the oldest READY frame meant for this target."""
    cdef claim_attempt *a = <claim_attempt *>p
    cdef uint32_t i, slot_target
    cdef uint64_t ctl, best_ctl = 0, frame_id, best_frame
    cdef Py_ssize_t best
    while True:
        best = -1
        best_frame = UINT64_MAX
        for i in range(a.n_slots):
            ctl = aip_load_u64_acquire(&a.slots[i].ctl)
            if AIP_CTL_STATE(ctl) != AIP_SLOT_READY:
                if not _state_ok(ctl):
                    a.slot, a.bad_ctl = i, ctl
                    return AIP_CORRUPT
                continue
            # Relaxed is enough: if the slot changed since the acquire
            # above, its generation changed too and the CAS below fails.
            slot_target = aip_load_u32_relaxed(&a.slots[i].target)
            if a.target != AIP_ANY_WORKER and slot_target != a.target and slot_target != AIP_ANY_WORKER:
                continue
            frame_id = aip_load_u64_relaxed(&a.slots[i].frame_id)
            if frame_id < best_frame:
                best, best_frame, best_ctl = i, frame_id, ctl
        if best < 0:
            return AIP_EMPTY
        if aip_cas_u64(&a.slots[best].ctl, &best_ctl,
                       AIP_CTL_MAKE(AIP_SLOT_READING, a.worker, AIP_CTL_GENERATION(best_ctl))):
            aip_store_u64_relaxed(<uint64_t *>&a.slots[best].t_claim_ns, <uint64_t>aip_now_ns())
            a.slot = best
            return AIP_OK
        # Another worker won this slot (or the manager dropped it): rescan.


cdef void pass_claim_wake(void *p) noexcept nogil:
    """A wake reached this claimer before it slept, and it took a frame
    without it: the wake may have been for an ANY_WORKER frame it did not
    take, so it goes on to one other sleeping claimer."""
    cdef claim_attempt *a = <claim_attempt *>p
    aip_fence_seq_cst()
    wake_one_of(a.wake, a.n_lines, a.cursor)


ctypedef struct free_attempt:
    aip_slot *slots
    uint32_t n_slots
    uint32_t start
    Py_ssize_t slot    # out (the corrupt slot, on AIP_CORRUPT)
    uint64_t bad_ctl   # out: its control word, on AIP_CORRUPT


cdef int try_acquire_free(void *p) noexcept nogil:
    """FREE -> WRITING, bumping the generation (a new frame, a new identity)."""
    cdef free_attempt *a = <free_attempt *>p
    cdef uint32_t k, i
    cdef uint64_t ctl
    for k in range(a.n_slots):
        i = (a.start + k) % a.n_slots
        ctl = aip_load_u64_acquire(&a.slots[i].ctl)
        if AIP_CTL_STATE(ctl) != AIP_SLOT_FREE:
            if not _state_ok(ctl):
                a.slot, a.bad_ctl = i, ctl
                return AIP_CORRUPT
            continue
        if aip_cas_u64(&a.slots[i].ctl, &ctl,
                       AIP_CTL_MAKE(AIP_SLOT_WRITING, AIP_NO_OWNER, AIP_CTL_GENERATION(ctl) + 1)):
            a.slot = i
            return AIP_OK
    return AIP_FULL


cdef class SlotTable(SegmentHandle):
    """Frame slots in shared memory, handed over by compare-and-swap.

    Create one in the manager with :meth:`create`, open it in workers with
    :meth:`attach`. ``target`` is the worker a frame is meant for (or ``ANY_WORKER``); a
    ``worker`` id is a number in ``0..MAX_WORKER`` unique among live workers.
    A value read from the segment that is out of range (another process
    wrote garbage) raises ``CorruptSegmentError``.
    """

    def __cinit__(self):
        self._header = NULL

    @classmethod
    def create(cls, name=None, *, n_slots, slot_bytes=0, wake_words=DEFAULT_WAKE_WORDS):
        """Create a table of ``n_slots`` slots of ``slot_bytes`` payload each.

        ``name`` defaults to a random, unguessable ``aip_...`` name. Claims
        with targets ``h`` and ``h + wake_words`` share a wake word: give at
        least as many as there are workers.
        """
        wake_offset, slots_offset, data_offset, stride, total = _layout(
            n_slots, slot_bytes, wake_words)
        cdef Segment segment = create_segment(name, total)
        cdef aip_slot_table_header *header = <aip_slot_table_header *>header_of(segment)
        cdef aip_slot *slots = <aip_slot *>(segment.base + <uint64_t>slots_offset)
        init_header(segment, sizeof(aip_slot_table_header))
        header.n_slots = n_slots
        header.n_wake = wake_words
        header.slot_bytes = slot_bytes
        header.wake_offset = wake_offset
        header.slots_offset = slots_offset
        header.data_offset = data_offset
        header.data_stride = stride
        for i in range(n_slots):
            slots[i].ctl = AIP_CTL_MAKE(AIP_SLOT_FREE, AIP_NO_OWNER, 0)
            slots[i].target = AIP_ANY_WORKER
        publish_header(segment, AIP_MAGIC_SLOT_TABLE)
        return cls._bind(segment, n_slots, slot_bytes, wake_words)

    @classmethod
    def attach(cls, str name):
        """Open an existing table: ValueError if ``name`` is not one of ours,
        ``CorruptSegmentError`` if its header does not hold together."""
        cdef aip_slot_table_header h
        cdef int fd = -1
        cdef Py_ssize_t file_size = 0
        try:
            read_segment_header(name, &h, sizeof(h), &fd, &file_size)
            check_identity(&h.seg, name, AIP_MAGIC_SLOT_TABLE, "SlotTable",
                           sizeof(aip_slot_table_header))
            layout = _layout(h.n_slots, h.slot_bytes, h.n_wake, CorruptSegmentError,
                             f"SlotTable {name!r} has a corrupt header")
            if (h.wake_offset, h.slots_offset, h.data_offset, h.data_stride) != layout[:4]:
                raise CorruptSegmentError(
                    f"SlotTable {name!r} has offsets that do not match its sizes: "
                    "the segment is corrupt")
            check_size(&h.seg, name, "SlotTable", layout[4], file_size)
            return cls._bind(map_segment(name, fd, layout[4]), h.n_slots, h.slot_bytes, h.n_wake)
        finally:
            close_descriptor(fd)

    @classmethod
    def _bind(cls, Segment segment, uint32_t n_slots, uint64_t slot_bytes, uint32_t wake_words):
        # Everything comes from checked values, nothing from the mapping.
        wake_offset, slots_offset, data_offset, stride, _ = _layout(
            n_slots, slot_bytes, wake_words)
        cdef SlotTable table = cls.__new__(cls)
        table._segment = segment
        table._seg = header_of(segment)
        table._header = <aip_slot_table_header *>table._seg
        table._wake = <aip_wake_line *>(segment.base + <uint64_t>wake_offset)
        table._slots = <aip_slot *>(segment.base + <uint64_t>slots_offset)
        table.n_slots = n_slots
        table.slot_bytes = slot_bytes
        table.wake_words = wake_words
        table._data_offset = data_offset
        table._data_stride = stride
        table._free_cursor = 0
        table._wake_cursor = 0
        return table

    # ---- lifecycle -------------------------------------------------------

    cdef void _wake_all_sleepers(self) noexcept:
        cdef uint32_t i
        for i in range(self.wake_words + 1):
            bump_and_wake_all(&self._wake[i].seq)
        bump_and_wake_all(&self._header.free_wake.seq)

    def __repr__(self):
        if self.closed:
            return f"<SlotTable {self._segment.name!r} closed>"
        return (f"<SlotTable {self._segment.name!r} n_slots={self.n_slots} "
                f"slot_bytes={self.slot_bytes}>")

    cdef aip_slot_table_header *_live_header(self) except NULL:
        self._live_segment()
        return self._header

    cdef int _check_slot(self, Py_ssize_t slot) except -1:
        self._live_header()
        if slot < 0 or slot >= self.n_slots:
            raise_for_status(AIP_BAD_INDEX, f"slot {slot} not in 0..{self.n_slots - 1}")
        return 0

    cdef uint64_t _load_ctl(self, Py_ssize_t slot) except? 0xFFFFFFFFFFFFFFFF:
        """The slot's control word, its state checked (acquire)."""
        cdef uint64_t ctl = aip_load_u64_acquire(&self._slots[slot].ctl)
        if not _state_ok(ctl):
            self._raise_corrupt(slot, ctl)
        return ctl

    def _raise_corrupt(self, Py_ssize_t slot, uint64_t ctl):
        raise_for_status(AIP_CORRUPT, f"SlotTable {self._segment.name!r}: slot {slot} "
                         f"has state {AIP_CTL_STATE(ctl)}, which no slot can have: "
                         "another process wrote into the segment")

    cdef void _wake_claimers(self, uint32_t target) noexcept nogil:
        """Wake the claimer a frame targeted ``target`` is meant for: the
        sleepers of that target's word and of the any-target word, or, for
        ANY_WORKER, one sleeping claimer. Call after the frame is READY."""
        aip_fence_seq_cst()  # orders the READY store before the sleeper loads
        if target == AIP_ANY_WORKER:
            wake_one_of(self._wake, self.wake_words + 1, &self._wake_cursor)
        else:
            wake_line(&self._wake[target % self.wake_words])
            wake_line(&self._wake[self.wake_words])

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
        if status == AIP_FULL:
            if aip_load_u32_acquire(&h.seg.closed):
                raise_for_status(AIP_CLOSED, f"SlotTable {self.name!r} was shut down")
            self._begin_blocking()
            try:
                status = self._wait(try_acquire_free, &a, &h.free_wake.seq,
                                    &h.free_wake.sleepers, timeout)
            finally:
                self._end_blocking()
        if status == AIP_FULL:
            status = AIP_TIMEOUT
        if status == AIP_CORRUPT:
            self._raise_corrupt(a.slot, a.bad_ctl)
        raise_for_status(status, f"SlotTable {self.name!r}: no free slot")
        self._free_cursor = <uint32_t>((a.slot + 1) % self.n_slots)
        return a.slot

    def publish(self, Py_ssize_t slot, uint64_t frame_id, uint32_t target=AIP_ANY_WORKER):
        """WRITING -> READY: the frame in ``slot`` is complete; ``target`` names
        the worker that should take it (``ANY_WORKER``: whoever is free).

        Returns the slot's generation, which ``take_back`` can check: a
        frame that was claimed and then reclaimed (its worker died) has a
        newer one."""
        self._check_slot(slot)
        cdef aip_slot *s = &self._slots[slot]
        cdef uint64_t ctl = self._load_ctl(slot)
        if AIP_CTL_STATE(ctl) != AIP_SLOT_WRITING:
            raise_for_status(AIP_WRONG_STATE, f"SlotTable {self.name!r}: publish: slot "
                             f"{slot} is {STATE_NAMES[AIP_CTL_STATE(ctl)]}, not WRITING")
        aip_store_u64_relaxed(&s.frame_id, frame_id)
        aip_store_u32_relaxed(&s.target, target)
        aip_store_u64_relaxed(<uint64_t *>&s.t_publish_ns, <uint64_t>aip_now_ns())
        # The CAS is the release: the payload and the fields above are
        # visible to whoever sees READY.
        if not aip_cas_u64(&s.ctl, &ctl, AIP_CTL_MAKE(AIP_SLOT_READY, AIP_NO_OWNER,
                                                      AIP_CTL_GENERATION(ctl))):
            raise_for_status(AIP_WRONG_STATE, f"SlotTable {self.name!r}: publish: slot "
                             f"{slot} changed under the writer")
        self._wake_claimers(target)
        return AIP_CTL_GENERATION(ctl)

    def abort(self, Py_ssize_t slot):
        """WRITING -> FREE: give up a slot without publishing it."""
        self._transition(slot, AIP_SLOT_WRITING, AIP_SLOT_FREE, AIP_NO_OWNER, 0)
        wake_sleepers(&self._header.free_wake.seq, &self._header.free_wake.sleepers)

    def drop_oldest(self, uint32_t target=AIP_ANY_WORKER):
        """READY -> WRITING on the oldest READY frame that no worker took yet.

        For the drop-oldest policy of live streams: the caller overwrites the
        slot with a newer frame. ``target`` limits the choice to frames meant
        for one backend. Returns ``(slot, dropped_frame_id)`` or None.
        """
        self._live_header()
        cdef uint32_t i
        cdef uint64_t ctl, best_ctl = 0, frame_id, best_frame
        cdef Py_ssize_t best
        cdef uint32_t slot_target
        while True:
            best = -1
            best_frame = UINT64_MAX
            for i in range(self.n_slots):
                ctl = self._load_ctl(i)
                if AIP_CTL_STATE(ctl) != AIP_SLOT_READY:
                    continue
                slot_target = aip_load_u32_relaxed(&self._slots[i].target)
                if target != AIP_ANY_WORKER and slot_target != target:
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

    def take_back(self, Py_ssize_t slot, uint64_t frame_id, generation=None):
        """READY -> WRITING on ``slot`` if it still holds ``frame_id`` (and,
        if given, the ``generation`` publish returned) and no worker took it
        yet: for a writer that replaces one of its own frames (a live stream
        keeping only its freshest frame). Returns whether the slot is now the
        caller's to overwrite (then publish or abort it)."""
        self._check_slot(slot)
        cdef aip_slot *s = &self._slots[slot]
        cdef uint64_t ctl = self._load_ctl(slot)
        if AIP_CTL_STATE(ctl) != AIP_SLOT_READY or aip_load_u64_relaxed(&s.frame_id) != frame_id:
            return False
        if generation is not None and AIP_CTL_GENERATION(ctl) != generation:
            return False  # claimed and reclaimed since: it may have a result already
        # A slot claimed, freed and refilled since the load above has a new
        # generation: the CAS fails instead of taking someone else's frame.
        return aip_cas_u64(&s.ctl, &ctl, AIP_CTL_MAKE(AIP_SLOT_WRITING, AIP_NO_OWNER,
                                                      AIP_CTL_GENERATION(ctl) + 1))

    def take_from(self, Py_ssize_t slot, uint32_t owner):
        """READING -> WRITING on ``slot`` if ``owner`` (a dead worker) holds
        it: the manager takes the frame out instead of handing it to another
        worker (a frame that killed every worker that took it). Returns
        whether the slot is now the caller's (abort or publish it)."""
        self._check_slot(slot)
        cdef aip_slot *s = &self._slots[slot]
        cdef uint64_t ctl = self._load_ctl(slot)
        if AIP_CTL_STATE(ctl) != AIP_SLOT_READING or AIP_CTL_OWNER(ctl) != owner:
            return False
        return aip_cas_u64(&s.ctl, &ctl, AIP_CTL_MAKE(AIP_SLOT_WRITING, AIP_NO_OWNER,
                                                      AIP_CTL_GENERATION(ctl) + 1))

    def reclaim(self, uint32_t owner, uint32_t target=AIP_ANY_WORKER):
        """READING -> READY for every slot held by ``owner`` (a dead worker).

        The frames are re-targeted to ``target`` (default: any worker) so that a
        live worker takes them, and get a new generation: a late release by
        the old owner cannot free them. Returns the list of ``(slot, frame_id)``.
        """
        self._live_header()
        cdef uint32_t i
        cdef uint64_t ctl
        reclaimed = []
        for i in range(self.n_slots):
            ctl = self._load_ctl(i)
            if AIP_CTL_STATE(ctl) != AIP_SLOT_READING or AIP_CTL_OWNER(ctl) != owner:
                continue
            # Nobody else writes a READING slot's fields: the owner is dead.
            aip_store_u32_relaxed(&self._slots[i].target, target)
            if aip_cas_u64(&self._slots[i].ctl, &ctl,
                           AIP_CTL_MAKE(AIP_SLOT_READY, AIP_NO_OWNER, AIP_CTL_GENERATION(ctl) + 1)):
                reclaimed.append((i, aip_load_u64_relaxed(&self._slots[i].frame_id)))
                self._wake_claimers(target)
        return reclaimed

    def retarget(self, uint32_t from_target, uint32_t to_target=AIP_ANY_WORKER):
        """Re-target every READY frame targeted ``from_target`` (a backend that died
        or stalled) to ``to_target``. Returns how many frames moved.

        Each frame goes READY -> WRITING -> READY, so a worker never claims
        it half re-targeted. Its publish time is kept.
        """
        self._live_header()
        cdef uint32_t i
        cdef uint64_t ctl
        cdef uint32_t generation
        cdef int moved = 0
        for i in range(self.n_slots):
            ctl = self._load_ctl(i)
            if (AIP_CTL_STATE(ctl) != AIP_SLOT_READY
                    or aip_load_u32_relaxed(&self._slots[i].target) != from_target):
                continue
            generation = AIP_CTL_GENERATION(ctl) + 1
            if not aip_cas_u64(&self._slots[i].ctl, &ctl,
                               AIP_CTL_MAKE(AIP_SLOT_WRITING, AIP_NO_OWNER, generation)):
                continue  # claimed meanwhile: it is being served
            aip_store_u32_relaxed(&self._slots[i].target, to_target)
            ctl = AIP_CTL_MAKE(AIP_SLOT_WRITING, AIP_NO_OWNER, generation)
            aip_cas_u64(&self._slots[i].ctl, &ctl,
                        AIP_CTL_MAKE(AIP_SLOT_READY, AIP_NO_OWNER, generation))
            self._wake_claimers(to_target)
            moved += 1
        return moved

    # ---- worker side -----------------------------------------------------

    def claim(self, uint32_t target, uint32_t worker, timeout=None):
        """READY -> READING: take the oldest READY frame targeted ``target`` (or
        targeted ``ANY_WORKER``; ``target=ANY_WORKER`` takes any frame).

        Returns the slot. Waits up to ``timeout`` seconds (None: forever;
        0: don't wait); raises ``TimeoutError``, or ``Closed`` after
        shutdown once no frame for this worker is left, or at once when
        another thread closes this handle.
        """
        cdef aip_slot_table_header *h = self._live_header()
        if worker > AIP_MAX_WORKER:
            raise ValueError(f"worker must be in 0..{AIP_MAX_WORKER}, got {worker}")
        cdef claim_attempt a
        a.slots = self._slots
        a.n_slots = self.n_slots
        a.target = target
        a.worker = worker
        a.wake = self._wake
        a.n_lines = self.wake_words + 1
        a.cursor = &self._wake_cursor
        cdef int status = try_claim(&a)
        cdef aip_wake_line *line
        if status == AIP_EMPTY:
            line = &self._wake[self.wake_words if target == AIP_ANY_WORKER else target % self.wake_words]
            self._begin_blocking()
            try:
                status = self._wait(try_claim, &a, &line.seq, &line.sleepers, timeout,
                                    pass_claim_wake, &a)
            finally:
                self._end_blocking()
        if status == AIP_EMPTY:
            status = AIP_TIMEOUT
        if status == AIP_CORRUPT:
            self._raise_corrupt(a.slot, a.bad_ctl)
        if status == AIP_CLOSED and self.closed:
            raise_for_status(status, f"SlotTable {self._segment.name!r} was closed "
                             "by another thread of this process")
        raise_for_status(status, f"SlotTable {self._segment.name!r}: no READY frame "
                         f"for target {target}")
        return a.slot

    def release(self, Py_ssize_t slot, uint32_t worker):
        """READING -> FREE, only by the worker that holds the slot.

        Raises ``SlotStateError`` if the slot was reclaimed meanwhile (the
        frame was handed to another worker: drop this worker's result).
        """
        cdef int64_t now = aip_now_ns()
        self._transition(slot, AIP_SLOT_READING, AIP_SLOT_FREE, AIP_NO_OWNER, worker)
        # Stamped only once the CAS made the release ours: a failed release
        # must not touch a slot that another worker now holds.
        aip_store_u64_relaxed(<uint64_t *>&self._slots[slot].t_release_ns, <uint64_t>now)
        wake_sleepers(&self._header.free_wake.seq, &self._header.free_wake.sleepers)

    cdef _transition(self, Py_ssize_t slot, uint32_t from_state, uint32_t to_state,
                     uint32_t to_owner, uint32_t expected_owner):
        self._check_slot(slot)
        cdef aip_slot *s = &self._slots[slot]
        cdef uint64_t ctl = self._load_ctl(slot)
        cdef uint32_t state = AIP_CTL_STATE(ctl)
        if state != from_state:
            raise_for_status(AIP_WRONG_STATE, f"SlotTable {self.name!r}: slot {slot} is "
                             f"{STATE_NAMES[state]}, not {STATE_NAMES[from_state]}")
        if from_state == AIP_SLOT_READING and AIP_CTL_OWNER(ctl) != expected_owner:
            raise_for_status(AIP_NOT_OWNER, f"SlotTable {self.name!r}: slot {slot} is held "
                             f"by worker {AIP_CTL_OWNER(ctl)}, not {expected_owner}")
        if not aip_cas_u64(&s.ctl, &ctl, AIP_CTL_MAKE(to_state, to_owner, AIP_CTL_GENERATION(ctl))):
            raise_for_status(AIP_NOT_OWNER, f"SlotTable {self.name!r}: slot {slot} changed "
                             "hands during the call")

    # ---- payloads and inspection ----------------------------------------

    def buffer(self, Py_ssize_t slot):
        """A writable memoryview of the slot's payload (zero-copy)."""
        self._check_slot(slot)
        cdef Py_ssize_t start = self._data_offset + slot * self._data_stride
        return memoryview(self._segment)[start:start + <Py_ssize_t>self.slot_bytes]

    def state(self, Py_ssize_t slot):
        """The slot's state: FREE, WRITING, READY or READING."""
        self._check_slot(slot)
        return AIP_CTL_STATE(self._load_ctl(slot))

    def frame_id(self, Py_ssize_t slot):
        """The frame id last published into the slot."""
        self._check_slot(slot)
        return aip_load_u64_relaxed(&self._slots[slot].frame_id)

    def slot_info(self, Py_ssize_t slot):
        """A snapshot of the slot's fields, as a dict (for tools and tests)."""
        self._check_slot(slot)
        cdef aip_slot *s = &self._slots[slot]
        cdef uint64_t ctl = self._load_ctl(slot)
        return {
            "state": STATE_NAMES[AIP_CTL_STATE(ctl)],
            "owner": None if AIP_CTL_OWNER(ctl) == AIP_NO_OWNER else AIP_CTL_OWNER(ctl),
            "generation": AIP_CTL_GENERATION(ctl),
            "frame_id": aip_load_u64_relaxed(&s.frame_id),
            "target": aip_load_u32_relaxed(&s.target),
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
            tally[AIP_CTL_STATE(self._load_ctl(i))] += 1
        return dict(zip(STATE_NAMES, tally))
