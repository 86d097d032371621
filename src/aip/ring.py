"""Shared-memory rings for other projects: the public face of ``aip._core``.

Two structures, each one POSIX shared-memory segment (mode 0600, a random
unguessable name unless you give one), created by one process and attached
by name from any other:

``ResultRing``
    Fixed-size records from many producer processes to one consumer,
    lock-free (one single-producer lane per producer, so a producer killed
    mid-write never blocks the consumer). Blocking calls sleep on a futex
    word: an idle consumer costs nothing.

``SlotTable``
    Slots of payload (frames) handed between a writer and workers by one
    compare-and-swap per state change: FREE -> WRITING -> READY -> READING ->
    FREE, with ``reclaim`` for the slots of a dead worker.

Example::

    import numpy as np
    from aip.ring import ResultRing

    record = np.dtype([("frame_id", "<u8"), ("t_ns", "<i8"), ("score", "<f4")], align=True)
    with ResultRing.create(capacity=1024, record_size=record.itemsize) as ring:
        # in a producer process: ResultRing.attach(ring.name).put(...)
        ring.put(np.array((7, 0, 0.5), dtype=record).tobytes())
        out = np.empty(64, dtype=record)
        n = ring.get_many(out, timeout=1.0)   # straight into the array
        print(out[:n])

Leaving a ``with`` block closes the handle, and the creating handle also
unlinks the segment. A creator that dies without unlinking is covered by
``multiprocessing``'s resource tracker, which unlinks what it created.
"""
from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt

from aip._core import (
    ANY_WORKER,
    MAX_WORKER,
    Closed,
    CorruptSegmentError,
    Empty,
    Full,
    NoLaneError,
    ResultRing,
    RingError,
    SlotStateError,
    SlotTable,
)
from aip._core._segment import SEGMENT_PREFIX


def __getattr__(name: str) -> int:
    # HINT_ANY: ANY_WORKER's older name, still importable.
    if name == "HINT_ANY":
        warnings.warn("aip.ring.HINT_ANY is ANY_WORKER's older name: use ANY_WORKER",
                      DeprecationWarning, stacklevel=2)
        return int(ANY_WORKER)
    raise AttributeError(f"module 'aip.ring' has no attribute {name!r}")


def slot_arrays(
    table: SlotTable, shape: tuple[int, ...], dtype: npt.DTypeLike = np.uint8
) -> list[npt.NDArray[np.generic]]:
    """One numpy array per slot of ``table``, viewing its payload zero-copy.

    ``shape`` and ``dtype`` must fit in the table's ``slot_bytes``. The arrays
    keep the mapping alive; drop them before expecting the memory to go.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if nbytes > table.slot_bytes:
        raise ValueError(
            f"a {shape} {dtype} array is {nbytes} bytes; the table's slots hold "
            f"{table.slot_bytes}"
        )
    return [
        np.frombuffer(table.buffer(slot), dtype=dtype, count=nbytes // dtype.itemsize).reshape(
            shape
        )
        for slot in range(table.n_slots)
    ]


__all__ = [
    "ANY_WORKER",
    "MAX_WORKER",
    "SEGMENT_PREFIX",
    "Closed",
    "CorruptSegmentError",
    "Empty",
    "Full",
    "NoLaneError",
    "ResultRing",
    "RingError",
    "SlotStateError",
    "SlotTable",
    "slot_arrays",
]
