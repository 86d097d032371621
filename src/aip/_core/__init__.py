"""aip's compiled core: shared-memory slot tables and result rings.

Knows bytes and slots, nothing of frames or models. Other projects import it
through :mod:`aip.ring`.
"""
from aip._core._status import (
    Closed, CorruptSegmentError, Empty, Full, NoLaneError, RingError, SlotStateError,
)
from aip._core.result_ring import ResultRing
from aip._core.slot_table import ANY_WORKER, MAX_WORKER, SlotTable

__all__ = [
    "ANY_WORKER", "MAX_WORKER", "Closed", "CorruptSegmentError", "Empty", "Full", "NoLaneError",
    "ResultRing", "RingError", "SlotStateError", "SlotTable",
]
