from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aip.pipeline.reorder import DuplicateFrameError, Gap, ReorderBuffer, ReorderOverflowError


def result(frame_id: int) -> str:
    return f"result-{frame_id}"


def test_in_order_results_are_released_at_once() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer()
    for frame_id in range(5):
        buffer.push(frame_id, result(frame_id))
        assert buffer.release_ready() == [result(frame_id)]
    assert buffer.pending == 0
    assert buffer.next_frame_id == 5


def test_out_of_order_results_wait_for_the_missing_frame() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer()
    buffer.push(2, result(2))
    buffer.push(1, result(1))
    assert buffer.release_ready() == []
    assert (buffer.pending, buffer.next_frame_id) == (2, 0)
    buffer.push(0, result(0))
    assert buffer.pending == 3
    assert buffer.release_ready() == [result(0), result(1), result(2)]
    assert (buffer.pending, buffer.next_frame_id) == (0, 3)
    assert buffer.release_ready() == []


def test_a_marked_gap_is_released_in_its_place_instead_of_stalling() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer()
    buffer.push(2, result(2))
    buffer.mark_gap(1, "dropped")
    buffer.push(0, result(0))
    assert buffer.release_ready() == [result(0), Gap(1, "dropped"), result(2)]


def test_numbering_can_start_anywhere() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer(first_frame_id=100)
    buffer.push(101, result(101))
    buffer.push(100, result(100))
    assert buffer.release_ready() == [result(100), result(101)]
    with pytest.raises(DuplicateFrameError, match="already released"):
        buffer.push(99, result(99))


def test_duplicates_are_rejected_counted_and_leave_the_first_result() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer()
    buffer.push(1, result(1))
    with pytest.raises(DuplicateFrameError, match="frame 1 was already pending"):
        buffer.push(1, "impostor")
    with pytest.raises(DuplicateFrameError):
        buffer.mark_gap(1, "dropped")
    buffer.push(0, result(0))
    with pytest.raises(DuplicateFrameError, match="frame 0 was already released"):
        buffer.push(0, "late copy")
    assert buffer.duplicates == 3
    assert buffer.release_ready() == [result(0), result(1)]


def test_overflow_raises_by_default_and_keeps_the_state() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer(capacity=3)
    for frame_id in (1, 2, 3):
        buffer.push(frame_id, result(frame_id))
    with pytest.raises(ReorderOverflowError, match="missing frame 0"):
        buffer.push(4, result(4))
    assert buffer.pending == 3
    buffer.push(0, result(0))  # the awaited frame always fits: it releases, not holds
    buffer.push(4, result(4))
    assert buffer.release_ready() == [result(i) for i in range(5)]


def test_overflow_in_gap_mode_gives_up_on_the_oldest_missing_frame() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer(capacity=3, on_overflow="gap")
    for frame_id in (1, 3, 4):  # frames 0 and 2 are missing
        buffer.push(frame_id, result(frame_id))
    buffer.push(5, result(5))
    assert buffer.release_ready() == [Gap(0, "overflow"), result(1)]
    assert buffer.overflow_gaps == 1
    assert (buffer.next_frame_id, buffer.pending) == (2, 3)
    with pytest.raises(DuplicateFrameError, match="already released"):
        buffer.push(0, "too late")
    buffer.push(2, result(2))
    assert buffer.release_ready() == [result(i) for i in range(2, 6)]


def test_overflow_in_gap_mode_skips_several_missing_frames_if_needed() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer(capacity=1, on_overflow="gap")
    buffer.push(3, result(3))
    buffer.push(5, result(5))
    assert buffer.release_ready() == [Gap(0, "overflow"), Gap(1, "overflow"), Gap(2, "overflow"), result(3)]
    assert buffer.overflow_gaps == 3
    assert (buffer.next_frame_id, buffer.pending) == (4, 1)


def test_flush_releases_everything_with_gaps_for_the_holes() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer()
    buffer.push(0, result(0))
    buffer.push(2, result(2))
    buffer.mark_gap(3, "dropped")
    buffer.push(6, result(6))
    assert buffer.flush() == [
        result(0),
        Gap(1, "lost"),
        result(2),
        Gap(3, "dropped"),
        Gap(4, "lost"),
        Gap(5, "lost"),
        result(6),
    ]
    assert (buffer.pending, buffer.next_frame_id) == (0, 7)
    assert buffer.flush() == []


@pytest.mark.parametrize("kwargs", [{"capacity": 0}, {"on_overflow": "drop"}])
def test_rejects_bad_configuration(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ReorderBuffer(**kwargs)  # type: ignore[arg-type]


@st.composite
def arrivals(draw: st.DrawFn) -> tuple[int, list[int], set[int], set[int]]:
    """A frame count, an arrival order, the frames marked as gaps, and where releases happen."""
    count = draw(st.integers(min_value=0, max_value=300))
    order = draw(st.permutations(range(count)))
    gapped = draw(st.sets(st.sampled_from(range(count)))) if count else set()
    release_points = draw(st.sets(st.integers(min_value=0, max_value=max(count - 1, 0))))
    return count, order, gapped, release_points


@given(arrivals())
def test_any_arrival_order_comes_out_exactly_once_in_order(
    case: tuple[int, list[int], set[int], set[int]],
) -> None:
    count, order, gapped, release_points = case
    buffer: ReorderBuffer[str] = ReorderBuffer(capacity=max(count, 1))
    released: list[str | Gap] = []
    for step, frame_id in enumerate(order):
        if frame_id in gapped:
            buffer.mark_gap(frame_id, "dropped")
        else:
            buffer.push(frame_id, result(frame_id))
        if step in release_points:
            released += buffer.release_ready()
        with pytest.raises(DuplicateFrameError):  # a replay is always refused
            buffer.push(frame_id, "replay")
    released += buffer.release_ready()

    expected = [Gap(i, "dropped") if i in gapped else result(i) for i in range(count)]
    assert released == expected
    assert buffer.pending == 0
    assert buffer.duplicates == count


@given(arrivals(), st.integers(min_value=1, max_value=20))
def test_lost_frames_never_grow_the_buffer_past_capacity(
    case: tuple[int, list[int], set[int], set[int]], capacity: int
) -> None:
    _, order, lost, _ = case  # "lost" frames never arrive and are never marked
    buffer: ReorderBuffer[str] = ReorderBuffer(capacity=capacity, on_overflow="gap")
    released: list[str | Gap] = []
    for frame_id in order:
        if frame_id in lost:
            continue
        try:
            buffer.push(frame_id, result(frame_id))
        except DuplicateFrameError:  # it arrived after the buffer gave up on it
            assert frame_id < buffer.next_frame_id
        released += buffer.release_ready()
        assert buffer.pending <= capacity
    released += buffer.flush()

    last_delivered = max((i for i in order if i not in lost), default=-1)
    released_ids = [
        item.frame_id if isinstance(item, Gap) else int(item.removeprefix("result-")) for item in released
    ]
    assert released_ids == list(range(last_delivered + 1))
    for item in released:
        if isinstance(item, Gap):
            assert item.reason in ("overflow", "lost")
        else:
            assert int(item.removeprefix("result-")) not in lost
