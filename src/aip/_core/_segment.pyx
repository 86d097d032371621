# cython: language_level=3
"""Named POSIX shared-memory segments: create, open, map, close, unlink.

Segments are created with O_EXCL and mode 0600 (owner only), under a random
unguessable name unless one is given. The creating process registers the
segment with multiprocessing's resource tracker, so that it is unlinked even
if the creator is killed; a clean unlink() unregisters it.
"""
from cpython.buffer cimport PyBuffer_FillInfo
from libc.errno cimport EEXIST, ENOENT, errno
from libc.stdint cimport uint32_t, uint64_t
from posix.fcntl cimport O_CREAT, O_EXCL, O_RDWR
from posix.mman cimport (
    MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, mmap, munmap, shm_open,
    shm_unlink,
)
from posix.stat cimport fstat, struct_stat
from posix.unistd cimport close as close_fd, ftruncate, getpid

from aip._core._layout cimport (
    AIP_LAYOUT_VERSION, aip_load_u32_acquire, aip_segment_header,
    aip_store_u32_release,
)

import os
import secrets
from multiprocessing import resource_tracker

# Every segment aip names itself starts with this: tests and tools find ours.
SEGMENT_PREFIX = "aip_"
# macOS caps shm names at 31 bytes (PSHMNAMLEN), the leading "/" included.
_MAX_NAME = 30


def random_segment_name():
    """A fresh name no other process can guess (64 random bits)."""
    return SEGMENT_PREFIX + secrets.token_hex(8)


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
        self.created = False

    def __dealloc__(self):
        self._unmap()

    cdef void _unmap(self) noexcept:
        if self.base != NULL:
            munmap(self.base, <size_t>self.size)
            self.base = NULL

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
            self.created = False

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


cdef Segment _map(str name, bytes posix_name, int fd, Py_ssize_t size, bint created):
    cdef void *addr = mmap(NULL, <size_t>size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
    if addr == MAP_FAILED:
        _raise_oserror(name)
    cdef Segment segment = Segment.__new__(Segment)
    segment.name = name
    segment.size = size
    segment.base = <char *>addr
    segment.created = created
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
        segment = _map(name, posix_name, fd, size, True)
    except BaseException:
        close_fd(fd)
        shm_unlink(posix_name)
        raise
    close_fd(fd)  # the mapping keeps the memory; the descriptor is not needed
    resource_tracker.register("/" + name, "shared_memory")
    return segment


cdef Segment open_segment(str name):
    """Map an existing segment, whatever its size (callers check the header)."""
    cdef bytes posix_name = _posix_name(name)
    cdef int fd = shm_open(posix_name, O_RDWR, 0)
    if fd < 0:
        if errno == ENOENT:
            raise FileNotFoundError(ENOENT, "no aip shared-memory segment of this name", name)
        _raise_oserror(name)
    cdef struct_stat st
    try:
        if fstat(fd, &st) != 0:
            _raise_oserror(name)
        if st.st_size < <Py_ssize_t>sizeof(aip_segment_header):
            raise ValueError(
                f"shared-memory segment {name!r} is {st.st_size} bytes, too small "
                "to be an aip segment")
        return _map(name, posix_name, fd, st.st_size, False)
    finally:
        close_fd(fd)


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
    return 0


cdef int publish_header(Segment segment, uint32_t magic) except -1:
    # Release: whoever reads this magic with acquire sees the whole
    # initialised layout written before it.
    aip_store_u32_release(&header_of(segment).magic, magic)
    return 0


cdef int check_header(Segment segment, uint32_t magic, str kind, Py_ssize_t min_size) except -1:
    cdef aip_segment_header *header = header_of(segment)
    cdef uint32_t found = aip_load_u32_acquire(&header.magic)
    if found != magic:
        raise ValueError(
            f"shared-memory segment {segment.name!r} is not an aip {kind} "
            f"(magic 0x{found:08x}, expected 0x{magic:08x})")
    if header.layout_version != AIP_LAYOUT_VERSION:
        raise ValueError(
            f"aip {kind} {segment.name!r} has layout version {header.layout_version}, "
            f"this build reads version {AIP_LAYOUT_VERSION}: use the same aip "
            "version in every process")
    if header.total_size != <uint64_t>segment.size or segment.size < min_size:
        raise ValueError(
            f"aip {kind} {segment.name!r} says it is {header.total_size} bytes but "
            f"{segment.size} are mapped: the segment is truncated or corrupt")
    return 0
