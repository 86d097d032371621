"""Put results back into frame order.

Workers finish frames out of order; :class:`ReorderBuffer` hands them on
strictly by frame id. A frame known to be dropped or lost is marked as a gap
and comes out as a :class:`Gap` in its place, so one missing frame never
stalls the stream, and a bounded number of held results means a frame that
silently vanished cannot make the buffer grow without limit.
"""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from aip.results import Gap

__all__ = ["DuplicateFrameError", "Gap", "ReorderBuffer", "ReorderOverflowError"]

T = TypeVar("T")


class DuplicateFrameError(ValueError):
    """A frame id was pushed or marked twice, or after it was released."""


class ReorderOverflowError(RuntimeError):
    """Holding one more out-of-order result would exceed the buffer's capacity."""


class ReorderBuffer(Generic[T]):
    """Release results strictly in frame-id order, with gaps for missing frames.

    Results (:meth:`push`) and gaps (:meth:`mark_gap`) may arrive in any
    order. As soon as the lowest outstanding frame id arrives, it and every
    held frame after it without a hole move to the ready list, which
    :meth:`release_ready` hands over. Each frame id is accepted once; a second
    push or mark of the same id, or one for an id already released, raises
    :class:`DuplicateFrameError` and is counted in :attr:`duplicates`.

    ``capacity`` bounds the results *held out of order* (waiting behind a
    missing earlier frame), the only part that grows when a frame goes
    missing. Going past it either raises :class:`ReorderOverflowError`
    (``on_overflow="raise"``, the default: the caller should have marked the
    frame) or declares the oldest missing frame lost and releases it as
    ``Gap(frame_id, "overflow")`` (``on_overflow="gap"``, for live streams).
    Ready results wait only until the next :meth:`release_ready`.

    Every operation is O(1) amortised per frame: a dict of held results and
    a cursor on the next frame id.
    """

    def __init__(
        self,
        first_frame_id: int = 0,
        capacity: int = 4096,
        on_overflow: Literal["raise", "gap"] = "raise",
        stream: str = "",
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if on_overflow not in ("raise", "gap"):
            raise ValueError(f"on_overflow must be 'raise' or 'gap', got {on_overflow!r}")
        self.capacity = capacity
        self.on_overflow = on_overflow
        self.stream = stream
        self.duplicates = 0  # rejected pushes/marks of an id already seen
        self.overflow_gaps = 0  # frames given up on because the buffer was full
        self._next = first_frame_id
        self._held: dict[int, T | Gap] = {}  # frame id -> result, all ids > self._next
        self._ready: list[T | Gap] = []

    @property
    def next_frame_id(self) -> int:
        """The lowest frame id not yet moved to the ready list (the frame waited for)."""
        return self._next

    @property
    def pending(self) -> int:
        """Results and gaps accepted but not yet returned by :meth:`release_ready`."""
        return len(self._held) + len(self._ready)

    def push(self, frame_id: int, result: T) -> None:
        """Accept the result of ``frame_id``."""
        self._accept(frame_id, result)

    def mark_gap(self, frame_id: int, reason: str) -> None:
        """Record that ``frame_id`` will have no result (dropped or lost) and why."""
        self._accept(frame_id, Gap(frame_id, reason, self.stream))

    def release_ready(self) -> list[T | Gap]:
        """Return, and forget, everything releasable, in frame-id order."""
        ready, self._ready = self._ready, []
        return ready

    def flush(self) -> list[T | Gap]:
        """Release everything left, with ``Gap(frame_id, "lost")`` for every hole."""
        while self._held:
            if self._next not in self._held:
                self._ready.append(Gap(self._next, "lost", self.stream))
                self._next += 1
            self._move_ready_run()
        return self.release_ready()

    def _accept(self, frame_id: int, item: T | Gap) -> None:
        if frame_id < self._next or frame_id in self._held:
            self.duplicates += 1
            state = "already released" if frame_id < self._next else "already pending"
            raise DuplicateFrameError(f"frame {frame_id} was {state} (next expected: {self._next})")
        if frame_id == self._next:
            self._ready.append(item)
            self._next += 1
            self._move_ready_run()
            return
        if len(self._held) >= self.capacity and self.on_overflow == "raise":
            raise ReorderOverflowError(
                f"cannot hold frame {frame_id}: {len(self._held)} results already wait "
                f"behind missing frame {self._next} (capacity {self.capacity}); "
                "mark the missing frame with mark_gap() or use on_overflow='gap'"
            )
        self._held[frame_id] = item
        while len(self._held) > self.capacity:
            # The cursor always sits on a hole here (else the run would have moved).
            self._ready.append(Gap(self._next, "overflow", self.stream))
            self.overflow_gaps += 1
            self._next += 1
            self._move_ready_run()

    def _move_ready_run(self) -> None:
        while self._next in self._held:
            self._ready.append(self._held.pop(self._next))
            self._next += 1
