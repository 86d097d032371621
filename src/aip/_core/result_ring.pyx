# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""ResultRing: a bounded lock-free ring of fixed-size records in shared memory.

Many producer processes, one consumer. Each producer handle owns a lane, a
single-producer/single-consumer ring of its own (head and tail counters on
separate cache lines, cells packed); the consumer drains the lanes in turn.

Why lanes rather than one multi-producer ring with per-cell sequence
numbers (Vyukov): in a shared ring a producer that dies between taking a
position and completing its record leaves a hole the consumer must wait on,
or skip after a guess about liveness. With a lane per producer a record
becomes visible only when its own producer publishes the lane's tail, after
the bytes; a producer killed mid-write leaves a half record nobody will ever
read, and every other lane flows on. A put is a copy and one release store:
no read-modify-write on a line shared with other producers. The cost is a
fixed number of producers (``max_producers``) and per-producer, not global,
FIFO order, which is what results keyed by frame id need.

Who holds a lane or the consumer role is a token (pid and handle number)
beside the start time of the holder's process, so that a recycled pid never
passes for a dead holder. Every process sharing a ring must see the same
pids: attach refuses a ring made in another PID namespace (a container with
its own PID namespace sharing /dev/shm with the host cannot share a ring).
"""
from cpython.buffer cimport (
    PyBUF_C_CONTIGUOUS, PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy
from posix.unistd cimport getpid

from aip._core._layout cimport (
    AIP_AGAIN, AIP_CLOSED, AIP_CORRUPT, AIP_EMPTY, AIP_FULL,
    AIP_MAGIC_RESULT_RING, AIP_NO_LANE, AIP_OK, AIP_PROC_FOUND, AIP_PROC_GONE,
    AIP_TIMEOUT, AIP_TOKEN_PENDING, aip_cas_u64, aip_lane, aip_load_u32_acquire,
    aip_load_u64_acquire, aip_load_u64_relaxed, aip_pid_namespace,
    aip_process_start, aip_ring_header, aip_store_u64_relaxed,
    aip_store_u64_release,
)
from aip._core._segment cimport (
    Segment, SegmentHandle, check_identity, check_size, close_descriptor,
    create_segment, header_of, init_header, map_segment, publish_header,
    read_segment_header,
)
from aip._core._status cimport raise_for_status
from aip._core._status import CorruptSegmentError, RingError
from aip._core._sync cimport bump_and_wake_all, wake_sleepers

import os

# Limits of a ring, the same for create() and attach(): a header read from
# another process cannot make the layout arithmetic overflow.
MAX_LANES = 1024
MAX_RECORD_SIZE = 1 << 24
MAX_CAPACITY = 1 << 30
MAX_RING_BYTES = 1 << 40

cdef enum:
    LINE = 64

# Handles made by this process; with the pid it makes a token no other live
# handle has (a forked child gets its own pid, hence its own tokens).
cdef uint32_t _handles_made = 0

# Bumped in a forked child. A handle inherited through fork() must not go on
# writing its parent's lane or reading as its parent's consumer (two writers
# on one single-producer lane corrupt it): it notices the new generation on
# its next call and takes roles of its own. One integer compare per call,
# where getpid() would be a syscall.
cdef uint32_t _fork_generation = 0

# This process's start time (aip_process_start), read once per process.
cdef uint64_t _my_start = 0
cdef bint _my_start_known = False


def _after_fork_in_child():
    global _fork_generation, _my_start_known
    _fork_generation += 1
    _my_start_known = False


os.register_at_fork(after_in_child=_after_fork_in_child)


cdef inline uint64_t _round_up(uint64_t n, uint64_t to) noexcept nogil:
    return (n + to - 1) // to * to


def _layout(capacity, record_size, n_lanes, error=ValueError, str what="ResultRing"):
    """Offsets of a ring's parts, from its three parameters (checked;
    ``error(what + ": ...")`` when one is out of range)."""
    if capacity < 2 or capacity > MAX_CAPACITY or capacity & (capacity - 1):
        raise error(f"{what}: capacity must be a power of two in 2..{MAX_CAPACITY}, got {capacity}")
    if not 1 <= record_size <= MAX_RECORD_SIZE:
        raise error(f"{what}: record_size must be in 1..{MAX_RECORD_SIZE}, got {record_size}")
    if not 1 <= n_lanes <= MAX_LANES:
        raise error(f"{what}: max_producers must be in 1..{MAX_LANES}, got {n_lanes}")
    lanes_offset = sizeof(aip_ring_header)
    cells_offset = _round_up(lanes_offset + n_lanes * sizeof(aip_lane), LINE)
    total = cells_offset + capacity * record_size * n_lanes
    if total > MAX_RING_BYTES:
        raise error(f"{what}: a ring of {n_lanes} x {capacity} x {record_size}-byte records "
                    f"is {total} bytes, more than {MAX_RING_BYTES}")
    return lanes_offset, cells_offset, total


cdef uint64_t _new_token() noexcept:
    global _handles_made
    _handles_made += 1
    return (<uint64_t>getpid() << 32) | _handles_made


cdef uint64_t _process_start() noexcept:
    global _my_start, _my_start_known
    if not _my_start_known:
        if aip_process_start(getpid(), &_my_start) != AIP_PROC_FOUND:
            _my_start = 0
        _my_start_known = True
    return _my_start


cdef bint _role_alive(uint64_t token, uint64_t *start_word) noexcept:
    """Is the handle that holds ``token`` (read from a role's word) alive?"""
    cdef int pid = <int>((token & ~AIP_TOKEN_PENDING) >> 32)
    cdef uint64_t start = 0
    cdef int found = aip_process_start(pid, &start)
    if found == AIP_PROC_GONE:
        return False
    if found != AIP_PROC_FOUND or token & AIP_TOKEN_PENDING:
        return True  # unknown start time, or being written: assume alive
    # Acquire pairs with the taker's release of the token: the start time
    # written before it is visible.
    return start == aip_load_u64_acquire(start_word)


cdef bint _try_take_role(uint64_t *token_word, uint64_t *start_word, uint64_t holder,
                         uint64_t token) noexcept:
    """Take a free role, or the role of a dead holder, if nobody races us."""
    if not aip_cas_u64(token_word, &holder, token | AIP_TOKEN_PENDING):
        return False
    aip_store_u64_relaxed(start_word, _process_start())
    # Release: whoever reads the token without the pending bit sees our start.
    aip_store_u64_release(token_word, token)
    return True


# ---- attempts: one try each, no waiting; AIP_EMPTY / AIP_FULL = not yet ----

ctypedef struct put_attempt:
    aip_lane *lane
    char *cells          # this lane's cells
    uint64_t mask        # capacity - 1
    uint32_t record_size
    const char *record
    uint64_t tail        # in/out: the producer's tail
    uint64_t head_seen   # in/out: the producer's cached head


cdef int try_put(void *p) noexcept nogil:
    cdef put_attempt *a = <put_attempt *>p
    if a.tail - a.head_seen > a.mask:
        # Looks full by our stale copy: read the real head. Acquire: the
        # consumer had finished reading those cells before it moved head.
        a.head_seen = aip_load_u64_acquire(&a.lane.head)
        if a.head_seen > a.tail:
            return AIP_CORRUPT  # the consumer cannot have read what was never put
        if a.tail - a.head_seen > a.mask:
            return AIP_FULL
    # Cells are addressed by our own tail, masked: always inside the lane.
    memcpy(a.cells + (a.tail & a.mask) * a.record_size, a.record, a.record_size)
    a.tail += 1
    # Release: the record bytes are visible to whoever reads this tail.
    aip_store_u64_release(&a.lane.tail, a.tail)
    return AIP_OK


ctypedef struct get_attempt:
    aip_lane *lanes
    char *cells          # lane 0's cells
    uint64_t lane_bytes
    uint64_t mask
    uint32_t n_lanes
    uint32_t record_size
    uint32_t next_lane   # in/out: where to look first (round-robin fairness)
    char *out
    Py_ssize_t max_records
    Py_ssize_t count     # out
    uint32_t bad_lane    # out: the corrupt lane, on AIP_CORRUPT


cdef int try_get(void *p) noexcept nogil:
    cdef get_attempt *a = <get_attempt *>p
    cdef uint32_t k, i
    cdef uint64_t head, tail, n, first, start
    cdef aip_lane *lane
    cdef char *cells
    cdef Py_ssize_t got = 0
    cdef uint32_t first_lane = a.next_lane
    for k in range(a.n_lanes):
        if got == a.max_records:
            break
        i = (first_lane + k) % a.n_lanes
        lane = &a.lanes[i]
        head = aip_load_u64_relaxed(&lane.head)  # only the consumer writes it
        tail = aip_load_u64_acquire(&lane.tail)  # acquire: pairs with try_put's release
        # Both counters are another process's words: a producer never runs
        # more than a lap ahead, nor the consumer ahead of it. Anything else
        # would copy from outside the lane.
        if tail < head or tail - head > a.mask + 1:
            if got:
                break  # deliver what was read; the next call reports it
            a.bad_lane = i
            return AIP_CORRUPT
        n = tail - head
        if n == 0:
            continue
        if n > <uint64_t>(a.max_records - got):
            n = a.max_records - got
        cells = a.cells + i * a.lane_bytes
        start = head & a.mask
        first = a.mask + 1 - start  # records before the wrap
        if first > n:
            first = n
        memcpy(a.out + got * a.record_size, cells + start * a.record_size,
               first * a.record_size)
        if n > first:
            memcpy(a.out + (got + first) * a.record_size, cells, (n - first) * a.record_size)
        # Release: our reads of those cells finish before the producer,
        # seeing the new head, may overwrite them.
        aip_store_u64_release(&lane.head, head + n)
        wake_sleepers(&lane.space_seq, &lane.space_sleeping)
        got += n
        a.next_lane = (i + 1) % a.n_lanes
    a.count = got
    if got == 0:
        return AIP_EMPTY
    return AIP_OK


cdef class ResultRing(SegmentHandle):
    """Fixed-size records from many processes to one, through shared memory.

    Create with :meth:`create`, open elsewhere with :meth:`attach`. Any handle
    may put (it takes a producer lane on its first put) and one handle at a
    time may get (it takes the consumer role on its first get). Records are
    bytes-like objects of exactly ``record_size`` bytes, e.g. the bytes of a
    numpy structured scalar; :meth:`get_many` fills a numpy array directly.
    A value read from the segment that is out of range (another process
    wrote garbage) raises ``CorruptSegmentError``.
    """

    def __cinit__(self):
        self._header = NULL
        self._lane = -1
        self._consumer = False

    def __dealloc__(self):
        if self._seg != NULL:
            self._release_roles()

    @classmethod
    def create(cls, name=None, *, capacity=1024, record_size=64, max_producers=8):
        """Create a ring: ``capacity`` records (a power of two) per producer,
        ``record_size`` bytes each, up to ``max_producers`` producers at once.

        ``name`` defaults to a random, unguessable ``aip_...`` name.
        """
        lanes_offset, cells_offset, total = _layout(capacity, record_size, max_producers)
        cdef Segment segment = create_segment(name, total)
        cdef aip_ring_header *header = <aip_ring_header *>header_of(segment)
        init_header(segment, sizeof(aip_ring_header))
        header.capacity = capacity
        header.record_size = record_size
        header.n_lanes = max_producers
        header.lanes_offset = lanes_offset
        header.cells_offset = cells_offset
        publish_header(segment, AIP_MAGIC_RESULT_RING)
        return cls._bind(segment, capacity, record_size, max_producers)

    @classmethod
    def attach(cls, str name):
        """Open an existing ring: ValueError if ``name`` is not one of ours,
        ``CorruptSegmentError`` if its header does not hold together."""
        cdef aip_ring_header h
        cdef int fd = -1
        cdef Py_ssize_t file_size = 0
        try:
            read_segment_header(name, &h, sizeof(h), &fd, &file_size)
            check_identity(&h.seg, name, AIP_MAGIC_RESULT_RING, "ResultRing",
                           sizeof(aip_ring_header))
            lanes_offset, cells_offset, total = _layout(
                h.capacity, h.record_size, h.n_lanes, CorruptSegmentError,
                f"ResultRing {name!r} has a corrupt header")
            if h.lanes_offset != lanes_offset or h.cells_offset != cells_offset:
                raise CorruptSegmentError(
                    f"ResultRing {name!r} has offsets that do not match its sizes: "
                    "the segment is corrupt")
            check_size(&h.seg, name, "ResultRing", total, file_size)
            mine = aip_pid_namespace()
            if h.seg.pid_namespace and mine and h.seg.pid_namespace != mine:
                raise RingError(
                    f"ResultRing {name!r} was made in another PID namespace: aip tells "
                    "live producers from dead ones by pid, so every process sharing a "
                    "ring must share one PID namespace (run them in one container, or "
                    "give the containers the host's PID namespace)")
            return cls._bind(map_segment(name, fd, total), h.capacity, h.record_size, h.n_lanes)
        finally:
            close_descriptor(fd)

    @classmethod
    def _bind(cls, Segment segment, uint32_t capacity, uint32_t record_size, uint32_t n_lanes):
        # Everything comes from checked values, nothing from the mapping.
        lanes_offset, cells_offset, _ = _layout(capacity, record_size, n_lanes)
        cdef ResultRing ring = cls.__new__(cls)
        ring._segment = segment
        ring._seg = header_of(segment)
        ring._header = <aip_ring_header *>ring._seg
        ring._lanes = <aip_lane *>(segment.base + <uint64_t>lanes_offset)
        ring._cells = segment.base + <uint64_t>cells_offset
        ring.capacity = capacity
        ring.record_size = record_size
        ring.max_producers = n_lanes
        ring._lane_bytes = <uint64_t>capacity * record_size
        ring._token = _new_token()
        ring._fork_generation = _fork_generation
        ring._next_lane = 0
        return ring

    # ---- lifecycle -------------------------------------------------------

    cdef aip_ring_header *_live_header(self) except NULL:
        self._live_segment()
        return self._header

    cdef void _release_roles(self) noexcept:
        cdef uint64_t expected
        if self._fork_generation != _fork_generation:
            self._forget_inherited_roles()  # the roles are the parent's: not ours to give back
        if self._lane >= 0:
            expected = self._token
            aip_cas_u64(&self._lanes[self._lane].owner_token, &expected, 0)
            self._lane = -1
        if self._consumer:
            expected = self._token
            aip_cas_u64(&self._header.consumer_token, &expected, 0)
            self._consumer = False

    cdef void _wake_all_sleepers(self) noexcept:
        cdef uint32_t i
        bump_and_wake_all(&self._header.data_seq)
        for i in range(self.max_producers):
            bump_and_wake_all(&self._lanes[i].space_seq)

    def __len__(self):
        """Records published and not yet consumed, over all lanes."""
        self._live_header()
        cdef uint32_t i
        cdef uint64_t pending = 0, head, tail
        for i in range(self.max_producers):
            tail = aip_load_u64_acquire(&self._lanes[i].tail)
            head = aip_load_u64_acquire(&self._lanes[i].head)
            if tail < head or tail - head > self.capacity:
                self._raise_corrupt_lane(i)
            pending += tail - head
        return pending

    def __repr__(self):
        if self.closed:
            return f"<ResultRing {self._segment.name!r} closed>"
        return (f"<ResultRing {self._segment.name!r} capacity={self.capacity} "
                f"record_size={self.record_size} max_producers={self.max_producers}>")

    def _raise_corrupt_lane(self, uint32_t lane):
        raise_for_status(AIP_CORRUPT, f"ResultRing {self._segment.name!r}: lane {lane}'s "
                         "head and tail are out of range: another process wrote into "
                         "the segment")

    # ---- roles -----------------------------------------------------------

    cdef void _forget_inherited_roles(self) noexcept:
        """In a forked child: the parent keeps its lane and role; this handle starts afresh."""
        self._lane = -1
        self._consumer = False
        self._token = _new_token()
        self._fork_generation = _fork_generation

    cdef int _take_lane(self) except -1:
        cdef uint32_t i
        cdef uint64_t owner, tail, head
        cdef aip_lane *lane
        for i in range(self.max_producers):
            lane = &self._lanes[i]
            owner = aip_load_u64_acquire(&lane.owner_token)
            # A lane whose producer died is taken over: the records it
            # published stay readable, its half-written one is overwritten.
            if owner != 0 and _role_alive(owner, &lane.owner_start):
                continue
            if _try_take_role(&lane.owner_token, &lane.owner_start, owner, self._token):
                tail = aip_load_u64_acquire(&lane.tail)
                head = aip_load_u64_acquire(&lane.head)
                if tail < head or tail - head > self.capacity:
                    owner = self._token
                    aip_cas_u64(&lane.owner_token, &owner, 0)
                    self._raise_corrupt_lane(i)
                self._lane = i
                self._tail = tail
                self._head_seen = head
                return 0
        raise_for_status(AIP_NO_LANE, f"all {self.max_producers} producer lanes of ring "
                         f"{self.name!r} are held by live producers: create it with a "
                         "larger max_producers")

    cdef int _take_consumer_role(self) except -1:
        cdef uint64_t holder
        while True:
            holder = aip_load_u64_acquire(&self._header.consumer_token)
            if holder != 0 and _role_alive(holder, &self._header.consumer_start):
                raise RingError(
                    f"ResultRing {self.name!r} already has a consumer (process "
                    f"{(holder & ~AIP_TOKEN_PENDING) >> 32}); one handle at a time may get")
            if _try_take_role(&self._header.consumer_token, &self._header.consumer_start,
                              holder, self._token):
                self._consumer = True
                return 0

    # ---- producer side ---------------------------------------------------

    def put(self, record, timeout=None):
        """Append one record (bytes-like, exactly ``record_size`` bytes).

        Waits up to ``timeout`` seconds for room (None: forever; 0: don't
        wait) and raises ``Full`` if none comes, ``Closed`` after shutdown
        or when another thread closes this handle meanwhile.
        """
        cdef aip_ring_header *h = self._live_header()
        if aip_load_u32_acquire(&h.seg.closed):
            raise_for_status(AIP_CLOSED, f"ResultRing {self.name!r} was shut down")
        if self._fork_generation != _fork_generation:
            self._forget_inherited_roles()
        if self._lane < 0:
            self._take_lane()
        cdef Py_buffer view
        PyObject_GetBuffer(record, &view, PyBUF_SIMPLE)
        cdef put_attempt a
        cdef int status
        cdef aip_lane *lane = &self._lanes[self._lane]
        cdef uint32_t lane_index = self._lane
        self._begin_blocking()
        try:
            if view.len != self.record_size:
                raise ValueError(f"record is {view.len} bytes, the ring's records "
                                 f"are {self.record_size}")
            a.lane = lane
            a.cells = self._cells + self._lane * self._lane_bytes
            a.mask = self.capacity - 1
            a.record_size = self.record_size
            a.record = <const char *>view.buf
            a.tail = self._tail
            a.head_seen = self._head_seen
            status = try_put(&a)
            if status == AIP_FULL and timeout != 0:
                status = self._wait(try_put, &a, &lane.space_seq, &lane.space_sleeping, timeout)
            self._tail = a.tail
            self._head_seen = a.head_seen
            if status == AIP_OK:
                wake_sleepers(&h.data_seq, &h.consumer_sleeping)
        finally:
            PyBuffer_Release(&view)
            self._end_blocking()  # may unmap, if another thread closed us meanwhile
        if status == AIP_OK:
            return
        if status == AIP_TIMEOUT:
            status = AIP_FULL
        if status == AIP_CLOSED:
            raise_for_status(status, f"ResultRing {self.name!r} was shut down or closed")
        if status == AIP_CORRUPT:
            self._raise_corrupt_lane(lane_index)
        raise_for_status(status, f"ResultRing {self.name!r} lane {lane_index} is full")

    def put_nowait(self, record):
        """Append one record or raise ``Full`` at once."""
        self.put(record, 0)

    # ---- consumer side ---------------------------------------------------

    cdef int _get_into(self, char *out, Py_ssize_t max_records, object timeout,
                       Py_ssize_t *count) except -1:
        cdef aip_ring_header *h = self._live_header()
        if self._fork_generation != _fork_generation:
            self._forget_inherited_roles()
        if not self._consumer:
            self._take_consumer_role()
        cdef get_attempt a
        a.lanes = self._lanes
        a.cells = self._cells
        a.lane_bytes = self._lane_bytes
        a.mask = self.capacity - 1
        a.n_lanes = self.max_producers
        a.record_size = self.record_size
        a.next_lane = self._next_lane
        a.out = out
        a.max_records = max_records
        a.count = 0
        a.bad_lane = 0
        cdef int status
        status = try_get(&a)
        if status == AIP_EMPTY and timeout != 0:
            self._begin_blocking()
            try:
                status = self._wait(try_get, &a, &h.data_seq, &h.consumer_sleeping, timeout)
            finally:
                self._end_blocking()
        elif status == AIP_EMPTY and aip_load_u32_acquire(&h.seg.closed):
            status = AIP_CLOSED
        self._next_lane = a.next_lane
        count[0] = a.count
        if status == AIP_CORRUPT:
            self._raise_corrupt_lane(a.bad_lane)
        return status

    def get(self, timeout=None):
        """Take one record, as bytes.

        Waits up to ``timeout`` seconds (None: forever; 0: don't wait) and
        raises ``Empty`` if nothing comes, ``Closed`` once the ring is shut
        down and drained, or when another thread closes this handle.
        """
        cdef bytes record = PyBytes_FromStringAndSize(NULL, self.record_size)
        cdef Py_ssize_t count
        cdef int status = self._get_into(PyBytes_AS_STRING(record), 1, timeout, &count)
        if status == AIP_OK:
            return record
        if status == AIP_TIMEOUT:
            status = AIP_EMPTY
        raise_for_status(status, self._empty_message(status))

    def _empty_message(self, int status):
        if status == AIP_CLOSED:
            return f"ResultRing {self.name!r} was shut down and is drained, or was closed"
        return f"ResultRing {self.name!r} is empty"

    def get_nowait(self):
        """Take one record or raise ``Empty`` at once."""
        return self.get(0)

    def get_many(self, out, timeout=None):
        """Fill ``out`` with as many records as are ready; return how many.

        ``out`` is a writable C-contiguous buffer of whole records, typically
        a numpy structured array whose itemsize is ``record_size`` (or a
        ``(n, record_size)`` uint8 array): records are copied straight into
        it, no Python object per record. Waits up to ``timeout`` seconds for
        the first record (None: forever; 0: don't wait) and returns 0 if none
        came; raises ``Closed`` once the ring is shut down and drained.
        """
        cdef Py_buffer view
        cdef Py_ssize_t count = 0
        cdef int status
        PyObject_GetBuffer(out, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
        try:
            if view.len % self.record_size:
                raise ValueError(f"out is {view.len} bytes, not a whole number of "
                                 f"{self.record_size}-byte records")
            if view.len == 0:
                return 0
            status = self._get_into(<char *>view.buf, view.len // self.record_size,
                                    timeout, &count)
        finally:
            PyBuffer_Release(&view)
        if status == AIP_OK:
            return count
        if status == AIP_TIMEOUT or status == AIP_EMPTY:
            return 0
        raise_for_status(status, self._empty_message(status))
