from libc.stdint cimport uint32_t

from aip._core._layout cimport aip_segment_header


cdef class Segment:
    """A named POSIX shared-memory mapping (shm_open + mmap), owner-only."""
    cdef readonly str name        # without the leading "/"
    cdef readonly Py_ssize_t size  # bytes mapped
    cdef readonly bint created    # this handle created (and tracks) it
    cdef char *base               # start of the mapping, NULL once unmapped
    cdef Py_ssize_t _exports      # live buffer exports (memoryviews, arrays)
    cdef bint _close_requested    # close() called while views were alive

    cdef void _unmap(self) noexcept
    cpdef close(self)
    cpdef unlink(self)


cdef Segment create_segment(object name, Py_ssize_t size)
cdef Segment open_segment(str name)
cdef aip_segment_header *header_of(Segment segment) except NULL
cdef int init_header(Segment segment, uint32_t header_size) except -1
cdef int publish_header(Segment segment, uint32_t magic) except -1
cdef int check_header(Segment segment, uint32_t magic, str kind, Py_ssize_t min_size) except -1
