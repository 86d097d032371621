from libc.stdint cimport uint32_t, uint64_t

from aip._core._layout cimport aip_slot, aip_slot_table_header, aip_wake_line
from aip._core._segment cimport SegmentHandle


cdef class SlotTable(SegmentHandle):
    cdef aip_slot_table_header *_header    # start of the segment
    cdef aip_wake_line *_wake              # claimers' wake lines: n_wake + 1
    cdef aip_slot *_slots                  # the slot array
    cdef readonly uint32_t n_slots         # number of slots
    cdef readonly uint64_t slot_bytes      # payload bytes per slot
    cdef readonly uint32_t wake_words      # wake lines of targeted claims
    cdef uint64_t _data_offset             # payload 0, from segment start
    cdef uint64_t _data_stride             # bytes between payloads
    cdef uint32_t _free_cursor             # where acquire_free starts looking
    cdef uint32_t _wake_cursor             # round robin of "wake one claimer"

    cdef int _check_slot(self, Py_ssize_t slot) except -1
    cdef aip_slot_table_header *_live_header(self) except NULL
    cdef uint64_t _load_ctl(self, Py_ssize_t slot) except? 0xFFFFFFFFFFFFFFFF
    cdef void _wake_claimers(self, uint32_t target) noexcept nogil
    cdef _transition(self, Py_ssize_t slot, uint32_t from_state, uint32_t to_state,
                     uint32_t to_owner, uint32_t expected_owner)
