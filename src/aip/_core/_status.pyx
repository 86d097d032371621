# cython: language_level=3
"""Exceptions of the compiled core and the mapping from status codes."""
import queue

from aip._core._layout cimport (
    AIP_AGAIN, AIP_BAD_INDEX, AIP_CLOSED, AIP_CORRUPT, AIP_EMPTY, AIP_FULL, AIP_NO_LANE,
    AIP_NOT_OWNER, AIP_OK, AIP_TIMEOUT, AIP_WRONG_STATE,
)


class RingError(Exception):
    """Base class of the errors raised by aip's shared-memory structures."""


class Empty(RingError, queue.Empty):
    """Nothing to get (non-blocking call, or the timeout passed)."""


class Full(RingError, queue.Full):
    """No room to put (non-blocking call, or the timeout passed)."""


class Closed(RingError):
    """The segment was shut down by its owner; nothing more will come."""


class SlotStateError(RingError):
    """A slot is not in the state the call needs, or is not the caller's."""


class NoLaneError(RingError):
    """Every producer lane of a ResultRing is held by a live producer."""


class CorruptSegmentError(RingError, ValueError):
    """A value read from a shared-memory segment is out of range.

    Another process wrote where it should not (or the segment is not what
    its header says). The core never reads or writes outside the mapping
    because of such a value: it raises this instead. The message names the
    segment.
    """


cdef int raise_for_status(int status, str what) except -1:
    if status == AIP_OK:
        return 0
    if status == AIP_EMPTY:
        raise Empty(what)
    if status == AIP_FULL:
        raise Full(what)
    if status == AIP_TIMEOUT:
        raise TimeoutError(what)
    if status == AIP_CLOSED:
        raise Closed(what)
    if status == AIP_WRONG_STATE or status == AIP_NOT_OWNER:
        raise SlotStateError(what)
    if status == AIP_NO_LANE:
        raise NoLaneError(what)
    if status == AIP_BAD_INDEX:
        raise IndexError(what)
    if status == AIP_CORRUPT:
        raise CorruptSegmentError(what)
    raise RuntimeError(f"{what}: unexpected status {status}")
