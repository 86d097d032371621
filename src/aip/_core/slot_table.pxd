from libc.stdint cimport uint32_t, uint64_t

from aip._core._layout cimport aip_slot, aip_slot_table_header
from aip._core._segment cimport Segment


cdef class SlotTable:
    cdef Segment _segment                  # the mapping (keeps it alive)
    cdef aip_slot_table_header *_header    # start of the segment
    cdef aip_slot *_slots                  # the slot array
    cdef readonly uint32_t n_slots         # number of slots
    cdef readonly uint64_t slot_bytes      # payload bytes per slot
    cdef uint64_t _data_offset             # payload 0, from segment start
    cdef uint64_t _data_stride             # bytes between payloads
    cdef uint32_t _free_cursor             # where acquire_free starts looking

    cdef int _check_slot(self, Py_ssize_t slot) except -1
    cdef aip_slot_table_header *_live_header(self) except NULL
    cdef _transition(self, Py_ssize_t slot, uint32_t from_state, uint32_t to_state,
                     uint32_t to_owner, uint32_t expected_owner)
