from libc.stdint cimport uint32_t, uint64_t

from aip._core._layout cimport aip_lane, aip_ring_header
from aip._core._segment cimport SegmentHandle


cdef class ResultRing(SegmentHandle):
    cdef aip_ring_header *_header     # start of the segment
    cdef aip_lane *_lanes             # the producer lanes
    cdef char *_cells                 # cells of lane 0; lane i follows at i * lane_bytes
    cdef readonly uint32_t capacity   # records per producer lane
    cdef readonly uint32_t record_size  # bytes per record
    cdef readonly uint32_t max_producers  # lanes: producers at once
    cdef uint64_t _lane_bytes         # capacity * record_size
    cdef uint64_t _token              # this handle's identity
    cdef int _lane                    # lane this handle produces into, -1 none
    cdef uint64_t _tail               # producer: our copy of lane.tail
    cdef uint64_t _head_seen          # producer: last lane.head read (stale ok)
    cdef bint _consumer               # this handle holds the consumer role
    cdef uint32_t _next_lane          # consumer: lane to look at first (fairness)
    cdef uint32_t _fork_generation    # _fork_generation when the roles were taken

    cdef aip_ring_header *_live_header(self) except NULL
    cdef int _take_lane(self) except -1
    cdef int _take_consumer_role(self) except -1
    cdef void _forget_inherited_roles(self) noexcept
    cdef int _get_into(self, char *out, Py_ssize_t max_records, object timeout,
                       Py_ssize_t *count) except -1
