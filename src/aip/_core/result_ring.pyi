from typing import Any, TypeAlias

import numpy.typing as npt
from typing_extensions import Buffer

from aip._core._segment import SegmentHandle

# numpy declares the buffer protocol to type checkers only on Python >= 3.12.
BufferLike: TypeAlias = Buffer | npt.NDArray[Any]

MAX_LANES: int
MAX_RECORD_SIZE: int
MAX_CAPACITY: int
MAX_RING_BYTES: int

class ResultRing(SegmentHandle):
    capacity: int
    record_size: int
    max_producers: int
    @classmethod
    def create(
        cls,
        name: str | None = None,
        *,
        capacity: int = 1024,
        record_size: int = 64,
        max_producers: int = 8,
    ) -> ResultRing: ...
    @classmethod
    def attach(cls, name: str) -> ResultRing: ...
    def __len__(self) -> int: ...
    def put(self, record: BufferLike, timeout: float | None = None) -> None: ...
    def put_nowait(self, record: BufferLike) -> None: ...
    def get(self, timeout: float | None = None) -> bytes: ...
    def get_nowait(self) -> bytes: ...
    def get_many(self, out: BufferLike, timeout: float | None = None) -> int: ...
