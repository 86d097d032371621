# cython: language_level=3
"""Named POSIX shared-memory segments, and the lifecycle every handle shares.

Segments are created with O_EXCL and mode 0600 (owner only), under a random
unguessable name unless one is given. The creating process registers the
segment with multiprocessing's resource tracker, so that it is unlinked even
if the creator is killed; a clean unlink() unregisters it.

A segment is input from another process. Attaching reads its header into
private memory with pread(), checks every field there, and maps exactly the
size that the checked layout needs: a header changed later by anyone can
no longer move what this process reads or writes.
"""
from cpython.buffer cimport PyBuffer_FillInfo
from libc.errno cimport EEXIST, EINTR, ENOENT, errno
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memset
from posix.fcntl cimport O_CREAT, O_EXCL, O_RDWR
from posix.mman cimport (
    MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, mmap, munmap, shm_open,
    shm_unlink,
)
from posix.stat cimport fstat, struct_stat
from posix.types cimport off_t
from posix.unistd cimport close as close_fd, ftruncate, getpid

from aip._core._layout cimport (
    AIP_LAYOUT_VERSION, AIP_PROC_FOUND, AIP_PROC_GONE, aip_load_u32_acquire,
    aip_pid_namespace, aip_process_start, aip_segment_header, aip_store_u32_release,
)
from aip._core._status import CorruptSegmentError
from aip._core._sync cimport (
    SPIN_START_NS, attempt_fn, deadline_after, pass_wake_fn, wait_spec, wait_until,
)
from aip._core._layout cimport AIP_AGAIN
from cpython.exc cimport PyErr_CheckSignals

import os
import secrets
import warnings
from multiprocessing import resource_tracker

cdef extern from "<unistd.h>" nogil:
    ssize_t pread(int fd, void *buf, size_t count, off_t offset)

# Every segment aip names itself starts with this: tests and tools find ours.
SEGMENT_PREFIX = "aip_"
# macOS caps shm names at 31 bytes (PSHMNAMLEN), the leading "/" included.
_MAX_NAME = 30


def random_segment_name():
    """A fresh name no other process can guess (64 random bits)."""
    return SEGMENT_PREFIX + secrets.token_hex(8)


def process_alive(int pid, unsigned long long start):
    """Is ``pid`` the process that started at ``start`` (aip_process_start's
    units), and still running? ``start == 0``: only whether ``pid`` runs."""
    cdef uint64_t found_start = 0
    cdef int found = aip_process_start(pid, &found_start)
    if found == AIP_PROC_GONE:
        return False
    if found != AIP_PROC_FOUND or start == 0:
        return True
    return found_start == start


def process_start(int pid):
    """The start time of ``pid`` (aip_process_start's units), or None."""
    cdef uint64_t start = 0
    if aip_process_start(pid, &start) == AIP_PROC_FOUND:
        return start
    return None


cdef bytes _posix_name(str name):
    if not name or "/" in name or len(name) > _MAX_NAME:
        raise ValueError(
            f"shared-memory name {name!r} must be 1-{_MAX_NAME} characters without '/'")
    return ("/" + name).encode()


cdef _raise_oserror(str name):
    cdef int err = errno
    raise OSError(err, os.strerror(err), name)


cdef class Segment:

    def __cinit__(self):
        self.base = NULL
        self.size = 0
        self._exports = 0
        self._close_requested = False
        self._created = False
        self._creator_pid = 0

    def __dealloc__(self):
        self._unmap()

    cdef void _unmap(self) noexcept:
        if self.base != NULL:
            munmap(self.base, <size_t>self.size)
            self.base = NULL

    @property
    def created(self):
        """This handle created the segment, in this process.

        False in a child forked from the creator: the child's copy of the
        handle never unlinks the parent's segment when it leaves a ``with``.
        """
        return self._created and self._creator_pid == getpid()

    @property
    def closed(self):
        return self.base == NULL or self._close_requested

    cpdef close(self):
        """Unmap now, or when the last view into the segment is released."""
        if self._exports:
            self._close_requested = True
        else:
            self._unmap()

    cpdef unlink(self):
        """Remove the name; the memory lives until every process unmaps it."""
        cdef bytes posix_name = _posix_name(self.name)
        if shm_unlink(posix_name) != 0 and errno != ENOENT:
            _raise_oserror(self.name)
        if self.created:
            resource_tracker.unregister("/" + self.name, "shared_memory")
            self._created = False

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        if self.base == NULL or self._close_requested:
            raise ValueError(f"segment {self.name!r} is closed")
        PyBuffer_FillInfo(buffer, self, self.base, self.size, 0, flags)
        self._exports += 1

    def __releasebuffer__(self, Py_buffer *buffer):
        self._exports -= 1
        if self._exports == 0 and self._close_requested:
            self._unmap()

    def __repr__(self):
        state = "closed" if self.closed else f"{self.size} bytes"
        return f"<Segment {self.name!r} {state}>"


cdef class SegmentHandle:

    def __cinit__(self):
        self._seg = NULL
        self._closing = 0
        self._blocked = 0
        self._wakeups = 0
        self._spin_ns = SPIN_START_NS

    def __del__(self):
        # tp_finalize: runs before deallocation, with the object still whole.
        if self._seg != NULL and not self._closing:
            warnings.warn(f"unclosed {self!r}: call close() or use a with block",
                          ResourceWarning, source=self)
            self.close()

    @property
    def name(self):
        """The segment's name: pass it to ``attach`` in another process."""
        return self._segment.name

    @property
    def closed(self):
        """True once this handle is closed (or closing)."""
        return self._seg == NULL or self._closing != 0

    @property
    def is_shutdown(self):
        """True once ``shutdown`` was called by any process."""
        return aip_load_u32_acquire(&self._live_segment().closed) != 0

    @property
    def wakeups(self):
        """How many times a blocked call of this handle was woken from sleep
        by another process or thread (timeouts not counted): for tests and
        tuning of who wakes whom."""
        return self._wakeups

    @property
    def blocked_calls(self):
        """Calls on this handle, from other threads of this process, that
        are waiting right now (a close() waits for them to return)."""
        return self._blocked

    cdef aip_segment_header *_live_segment(self) except NULL:
        if self._seg == NULL or self._closing:
            raise ValueError(f"{type(self).__name__} {self._segment.name!r} is closed")
        return self._seg

    cdef int _wait(self, attempt_fn attempt, void *ctx, uint32_t *seq, uint32_t *sleepers,
                   object timeout, pass_wake_fn pass_wake=NULL, void *pass_ctx=NULL) except -1:
        """Retry ``attempt`` until it is done, sleeping on ``seq`` between tries
        (wait_until in _sync.pxd), with the GIL released; signals are handled
        between sleeps. Returns the final status. The caller brackets it with
        _begin_blocking / _end_blocking, so that a close() waits for it."""
        cdef wait_spec w
        cdef int status
        w.seq = seq
        w.sleepers = sleepers
        w.closed = &self._seg.closed
        w.closing = &self._closing
        w.deadline = deadline_after(timeout)
        w.spin_ns = &self._spin_ns
        w.pass_wake = pass_wake
        w.pass_ctx = pass_ctx
        w.wakeups = 0
        try:
            while True:
                with nogil:
                    status = wait_until(attempt, ctx, &w)
                if status != AIP_AGAIN:
                    return status
                PyErr_CheckSignals()
        finally:
            self._wakeups += w.wakeups

    cdef int _begin_blocking(self) except -1:
        """Before a call releases the GIL to wait: the mapping stays until it ends."""
        self._blocked += 1
        return 0

    cdef void _end_blocking(self) noexcept:
        """After the wait, GIL held again: the last blocked call finishes a close."""
        self._blocked -= 1
        if self._blocked == 0 and self._closing and self._seg != NULL:
            self._unmap_now()

    cdef void _unmap_now(self) noexcept:
        self._seg = NULL
        self._segment.close()

    cdef void _wake_all_sleepers(self) noexcept:
        pass  # each kind wakes the words its calls sleep on

    cdef void _release_roles(self) noexcept:
        pass  # a ResultRing gives back its lane and consumer role

    def close(self):
        """Unmap this handle (the segment lives on for other processes).

        If another thread is blocked in a call on this handle, that call
        wakes and raises ``Closed``, and the unmap happens when it returns.
        """
        if self._seg == NULL or self._closing:
            return
        self._release_roles()
        if self._blocked:
            # Release: a waiter that loads 1 here also sees the roles given back.
            aip_store_u32_release(&self._closing, 1)
            self._wake_all_sleepers()
        else:
            self._unmap_now()

    def unlink(self):
        """Remove the segment's name; call once, from the creator."""
        self._segment.unlink()

    def shutdown(self):
        """Tell every process the segment is done: every blocked call wakes."""
        aip_store_u32_release(&self._live_segment().closed, 1)
        self._wake_all_sleepers()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        """Close; the creating handle (in the creating process) also unlinks."""
        created = self._segment.created
        self.close()
        if created:
            self.unlink()


cdef Segment _map(str name, int fd, Py_ssize_t size, bint created):
    cdef void *addr = mmap(NULL, <size_t>size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
    if addr == MAP_FAILED:
        _raise_oserror(name)
    cdef Segment segment = Segment.__new__(Segment)
    segment.name = name
    segment.size = size
    segment.base = <char *>addr
    segment._created = created
    segment._creator_pid = getpid() if created else 0
    return segment


cdef Segment create_segment(object name, Py_ssize_t size):
    """Create and map a new zero-filled segment of ``size`` bytes."""
    if name is None:
        name = random_segment_name()
    cdef bytes posix_name = _posix_name(name)
    cdef int fd = shm_open(posix_name, O_CREAT | O_EXCL | O_RDWR, 0o600)
    if fd < 0:
        if errno == EEXIST:
            raise FileExistsError(EEXIST, "a shared-memory segment of this name exists", name)
        _raise_oserror(name)
    cdef Segment segment
    try:
        if ftruncate(fd, size) != 0:
            _raise_oserror(name)
        segment = _map(name, fd, size, True)
    except BaseException:
        close_fd(fd)
        shm_unlink(posix_name)
        raise
    close_fd(fd)  # the mapping keeps the memory; the descriptor is not needed
    resource_tracker.register("/" + name, "shared_memory")
    return segment


cdef int read_segment_header(str name, void *out, Py_ssize_t n, int *fd,
                             Py_ssize_t *file_size) except -1:
    """Open ``name`` and read its first ``n`` bytes into ``out`` (zero past
    the end of a shorter file). Leaves the descriptor in ``fd[0]`` for
    map_segment; the caller closes it with close_descriptor."""
    cdef bytes posix_name = _posix_name(name)
    fd[0] = shm_open(posix_name, O_RDWR, 0)
    if fd[0] < 0:
        if errno == ENOENT:
            raise FileNotFoundError(ENOENT, "no aip shared-memory segment of this name", name)
        _raise_oserror(name)
    cdef struct_stat st
    if fstat(fd[0], &st) != 0:
        _raise_oserror(name)
    file_size[0] = st.st_size
    if st.st_size < <Py_ssize_t>sizeof(aip_segment_header):
        raise ValueError(
            f"shared-memory segment {name!r} is {st.st_size} bytes, too small "
            "to be an aip segment")
    memset(out, 0, n)
    cdef Py_ssize_t done = 0
    cdef Py_ssize_t want = n if n < st.st_size else st.st_size
    cdef ssize_t got
    while done < want:
        got = pread(fd[0], <char *>out + done, want - done, done)
        if got < 0 and errno == EINTR:
            continue
        if got <= 0:
            _raise_oserror(name)
        done += got
    return 0


cdef Segment map_segment(str name, int fd, Py_ssize_t size):
    """Map the first ``size`` bytes of an open segment (size checked by the caller)."""
    return _map(name, fd, size, False)


cdef int close_descriptor(int fd) noexcept:
    if fd >= 0:
        close_fd(fd)
    return 0


cdef aip_segment_header *header_of(Segment segment) except NULL:
    if segment.base == NULL:
        raise ValueError(f"segment {segment.name!r} is closed")
    return <aip_segment_header *>segment.base


cdef int init_header(Segment segment, uint32_t header_size) except -1:
    cdef aip_segment_header *header = header_of(segment)
    header.layout_version = AIP_LAYOUT_VERSION
    header.total_size = <uint64_t>segment.size
    header.generation = int.from_bytes(os.urandom(8), "little")
    header.creator_pid = <uint32_t>getpid()
    header.header_size = header_size
    header.pid_namespace = aip_pid_namespace()
    cdef uint64_t start = 0
    if aip_process_start(<int>getpid(), &start) == AIP_PROC_FOUND:
        header.creator_start = start
    return 0


cdef int publish_header(Segment segment, uint32_t magic) except -1:
    # Release: whoever reads this magic with acquire sees the whole
    # initialised layout written before it.
    aip_store_u32_release(&header_of(segment).magic, magic)
    return 0


cdef int check_identity(const aip_segment_header *header, str name, uint32_t magic,
                        str kind, uint32_t header_size) except -1:
    """Check a private copy of a segment's common header: its kind and version."""
    if header.magic != magic:
        raise ValueError(
            f"shared-memory segment {name!r} is not an aip {kind} "
            f"(magic 0x{header.magic:08x}, expected 0x{magic:08x})")
    if header.layout_version != AIP_LAYOUT_VERSION:
        raise ValueError(
            f"aip {kind} {name!r} has layout version {header.layout_version}, "
            f"this build reads version {AIP_LAYOUT_VERSION}: use the same aip "
            "version in every process")
    if header.header_size != header_size:
        raise CorruptSegmentError(
            f"aip {kind} {name!r} has a {header.header_size}-byte header, this "
            f"layout's is {header_size}: the segment is corrupt")
    return 0


cdef int check_size(const aip_segment_header *header, str name, str kind,
                    uint64_t layout_size, Py_ssize_t file_size) except -1:
    """The header's size must be the one its checked layout gives, and the
    file at least that large."""
    # The file may be larger than the layout: macOS rounds a shm segment up
    # to its page size (16 KiB on Apple silicon). Only the layout is mapped.
    if header.total_size != layout_size or <uint64_t>file_size < layout_size:
        raise CorruptSegmentError(
            f"aip {kind} {name!r} says it is {header.total_size} bytes, its layout "
            f"needs {layout_size} and the file has {file_size}: the segment is "
            "truncated or corrupt")
    return 0
