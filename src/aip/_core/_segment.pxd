from libc.stdint cimport int64_t, uint32_t, uint64_t

from aip._core._layout cimport aip_segment_header
from aip._core._sync cimport attempt_fn, pass_wake_fn


cdef class Segment:
    """A named POSIX shared-memory mapping (shm_open + mmap), owner-only."""
    cdef readonly str name        # without the leading "/"
    cdef readonly Py_ssize_t size  # bytes mapped
    cdef bint _created            # this handle created (and tracks) it
    cdef int _creator_pid         # the process that created it through this handle
    cdef char *base               # start of the mapping, NULL once unmapped
    cdef Py_ssize_t _exports      # live buffer exports (memoryviews, arrays)
    cdef bint _close_requested    # close() called while views were alive

    cdef void _unmap(self) noexcept
    cpdef close(self)
    cpdef unlink(self)


cdef class SegmentHandle:
    """What SlotTable and ResultRing share: a segment's lifecycle.

    Closing is safe while another thread of this process is blocked in a call
    on the handle: the call wakes with ``Closed`` and the unmap waits for it.
    """
    cdef Segment _segment
    cdef aip_segment_header *_seg  # start of the mapping; NULL once closed
    cdef uint32_t _closing         # atomic: close() ran while calls were blocked
    cdef int _blocked              # calls of this handle waiting without the GIL
    cdef uint64_t _wakeups         # sleeps of this handle's calls ended by a wake
    cdef int64_t _spin_ns          # adaptive spin budget of this handle's waits (_sync.pxd)

    cdef aip_segment_header *_live_segment(self) except NULL
    cdef int _wait(self, attempt_fn attempt, void *ctx, uint32_t *seq, uint32_t *sleepers,
                   object timeout, pass_wake_fn pass_wake=*, void *pass_ctx=*) except -1
    cdef int _begin_blocking(self) except -1
    cdef void _end_blocking(self) noexcept
    cdef void _unmap_now(self) noexcept
    cdef void _wake_all_sleepers(self) noexcept
    cdef void _release_roles(self) noexcept


cdef Segment create_segment(object name, Py_ssize_t size)
cdef int read_segment_header(str name, void *out, Py_ssize_t n, int *fd,
                             Py_ssize_t *file_size) except -1
cdef Segment map_segment(str name, int fd, Py_ssize_t size)
cdef int close_descriptor(int fd) noexcept
cdef aip_segment_header *header_of(Segment segment) except NULL
cdef int init_header(Segment segment, uint32_t header_size) except -1
cdef int publish_header(Segment segment, uint32_t magic) except -1
cdef int check_identity(const aip_segment_header *header, str name, uint32_t magic,
                        str kind, uint32_t header_size) except -1
cdef int check_size(const aip_segment_header *header, str name, str kind,
                    uint64_t layout_size, Py_ssize_t file_size) except -1
