"""Admission of live frames: freshness first, fair shares, room in the slots.

The admission thread's choice (:meth:`Admission._pick`) and a live
stream's pending frames (:meth:`_LiveFeed._offer`) are tested here on fakes:
no process, no camera. Real cameras and workers: tests/stress.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from aip.backends import BackendSpec
from aip.pipeline import Pipeline
from aip.pipeline.admission import FRESH_SERVICE_TIMES, MAX_LAG, Admission
from aip.pipeline.streams import PENDING_LIMIT, ReaderPolicy, _LiveFeed, Stream, StreamOptions, default_policy, is_live
from aip.io.sources import GrabbedFrame, SyntheticSource

MS = 1_000_000


class FakeTable:
    """Slot counts the admission reads; nothing else."""

    def __init__(self, free: int = 8, ready: int = 0, reading: int = 0, writing: int = 0) -> None:
        self.state = {"FREE": free, "READY": ready, "READING": reading, "WRITING": writing}

    def counts(self) -> dict[str, int]:
        return dict(self.state)


class FakePool:
    def __init__(self, table: FakeTable) -> None:
        self.table = table


class FakeLive(SyntheticSource):
    """A live source for the pipeline's eyes: it has ``grab_frame``."""

    def grab_frame(self) -> GrabbedFrame | None:
        return GrabbedFrame(time.perf_counter_ns(), self, decoded=self._read()[0])


def make_stream(index: int, priority: float = 1.0, policy: str = "latest") -> Stream:
    return Stream(f"cam{index}", index, None, StreamOptions(policy=policy, priority=priority),
                  spec=None, opener=None, first=None,
                  reader=ReaderPolicy(max_reconnects=0, reconnect_backoff_s=0.0))


def grabbed(age_ms: float, source: Any = None) -> GrabbedFrame:
    source = source or SyntheticSource((8, 8, 3))
    return GrabbedFrame(time.perf_counter_ns() - int(age_ms * MS), source,
                        decoded=np.zeros((8, 8, 3), np.uint8))


def admission_with(streams: list[Stream], table: FakeTable | None = None, target: int = 4,
                   service_ms: float = 50.0) -> Admission:
    admission = Admission(FakePool(table or FakeTable()), targets=None, ids=iter(()),
                          in_flight_target=lambda: target)
    admission.service_s = service_ms / 1e3
    for stream in streams:
        admission.add(stream)
    return admission


def fresh_age_ms(service_ms: float = 50.0) -> float:
    return 0.2 * FRESH_SERVICE_TIMES * service_ms


def stale_age_ms(service_ms: float = 50.0) -> float:
    return 1.5 * FRESH_SERVICE_TIMES * service_ms  # within twice the horizon, past it


def test_the_least_served_stream_with_a_fresh_frame_goes_first() -> None:
    a, b = make_stream(0), make_stream(1)
    admission = admission_with([a, b])
    a.credit, b.credit = 3.0, 2.0
    a.pending.append((10, grabbed(fresh_age_ms())))
    b.pending.append((20, grabbed(fresh_age_ms())))
    stream, (frame_id, _) = admission._pick()  # type: ignore[misc]
    assert (stream, frame_id) == (b, 20)
    assert b.credit == 3.0 and not b.pending and a.pending


def test_a_fresh_frame_goes_before_a_less_served_streams_older_one() -> None:
    a, b = make_stream(0), make_stream(1)
    admission = admission_with([a, b])
    a.credit, b.credit = 2.0, 2.0 - (MAX_LAG - 1)  # behind, but less than MAX_LAG
    a.pending.append((1, grabbed(fresh_age_ms())))
    b.pending.append((2, grabbed(stale_age_ms())))
    stream, _ = admission._pick()  # type: ignore[misc]
    assert stream is a


def test_a_stream_fallen_max_lag_behind_goes_with_its_older_frame() -> None:
    a, b = make_stream(0), make_stream(1)
    admission = admission_with([a, b])
    a.credit, b.credit = 5.0, 5.0 - MAX_LAG
    a.pending.append((1, grabbed(fresh_age_ms())))
    b.pending.append((2, grabbed(stale_age_ms())))
    stream, _ = admission._pick()  # type: ignore[misc]
    assert stream is b


def test_nothing_fresh_waits_while_a_frame_waits_for_the_workers_else_goes() -> None:
    a = make_stream(0)
    table = FakeTable(free=6, ready=1, reading=1)
    admission = admission_with([a], table, target=4)
    a.pending.append((1, grabbed(10 * FRESH_SERVICE_TIMES * 50)))
    assert admission._pick() is None  # a worker still has a frame to take: a fresh one may come
    table.state["READY"] = 0
    stream, _ = admission._pick()  # type: ignore[misc]
    assert stream is a  # else a worker would idle: the old frame goes


def test_no_pick_past_the_in_flight_target_or_without_a_free_slot() -> None:
    a = make_stream(0)
    table = FakeTable(free=4, ready=1, reading=2, writing=1)
    admission = admission_with([a], table, target=4)
    a.pending.append((1, grabbed(fresh_age_ms())))
    assert admission._pick() is None
    table.state.update(READY=0)
    assert admission._pick() is not None
    a.pending.append((2, grabbed(fresh_age_ms())))
    table.state.update(FREE=0, READY=0, READING=0, WRITING=0)
    assert admission._pick() is None


def test_a_finished_streams_last_frame_counts_as_fresh() -> None:
    a, b = make_stream(0), make_stream(1)
    admission = admission_with([a, b], FakeTable(ready=1), target=8)
    a.credit, b.credit = 1.0, 1.5
    a.pending.append((1, grabbed(10 * FRESH_SERVICE_TIMES * 50)))
    a.finished = True
    b.pending.append((2, grabbed(fresh_age_ms())))
    stream, _ = admission._pick()  # type: ignore[misc]
    assert stream is a


@pytest.mark.parametrize("priorities", [(1.0, 1.0, 1.0), (1.0, 2.0, 4.0)])
def test_shares_follow_priorities_under_overload(priorities: tuple[float, ...]) -> None:
    """Every stream always has a fresh frame: picks split by priority."""
    streams = [make_stream(i, priority) for i, priority in enumerate(priorities)]
    admission = admission_with(streams)
    picks = dict.fromkeys(range(len(streams)), 0)
    for n in range(700):
        for stream in streams:
            if not stream.pending:
                stream.pending.append((n, grabbed(fresh_age_ms())))
        stream, _ = admission._pick()  # type: ignore[misc]
        picks[stream.index] += 1
    total = sum(priorities)
    for index, priority in enumerate(priorities):
        assert abs(picks[index] - 700 * priority / total) <= 2


def test_a_stream_that_joins_starts_level_with_the_least_served() -> None:
    a, b = make_stream(0), make_stream(1)
    admission = admission_with([a, b])
    a.credit, b.credit = 40.0, 37.0
    late = make_stream(2)
    admission.add(late)
    assert late.credit == 37.0


def test_service_time_follows_the_results() -> None:
    admission = admission_with([])
    admission.service_s = 0.05
    for _ in range(200):
        admission.observe_service(0.02)
    assert admission.service_s == pytest.approx(0.02, rel=1e-3)


# ---- a live stream's pending frames, by policy ---------------------------------------------

def offered(policy: str, count: int) -> Stream:
    stream = make_stream(0, policy=policy)
    admission = admission_with([stream])
    for _ in range(count):
        _LiveFeed(stream)._offer(admission, grabbed(0))
    return stream


def test_latest_keeps_only_the_newest_and_never_decodes_the_rest() -> None:
    stream = offered("latest", 5)
    assert [frame_id for frame_id, _ in stream.pending] == [4]
    assert list(stream.gaps) == [(i, "dropped") for i in range(4)]
    assert stream.metrics.decodes_skipped == 4 and stream.issued == 5


def test_drop_oldest_keeps_the_newest_few() -> None:
    stream = offered("drop-oldest", PENDING_LIMIT + 3)
    assert [i for i, _ in stream.pending] == list(range(3, PENDING_LIMIT + 3))
    assert [i for i, _ in stream.gaps] == [0, 1, 2]


def test_drop_newest_keeps_the_first_few() -> None:
    stream = offered("drop-newest", PENDING_LIMIT + 3)
    assert [i for i, _ in stream.pending] == list(range(PENDING_LIMIT))
    assert [i for i, _ in stream.gaps] == [PENDING_LIMIT, PENDING_LIMIT + 1, PENDING_LIMIT + 2]


def test_block_waits_for_room_and_loses_nothing() -> None:
    stream = make_stream(0, policy="block")
    admission = admission_with([stream])
    for _ in range(PENDING_LIMIT):
        _LiveFeed(stream)._offer(admission, grabbed(0))
    waiter = threading.Thread(target=_LiveFeed(stream)._offer, args=(admission, grabbed(0)), daemon=True)
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and len(stream.pending) == PENDING_LIMIT
    with admission.lock:
        stream.pending.popleft()
        admission.lock.notify_all()
    waiter.join(10)
    assert not waiter.is_alive()
    assert [i for i, _ in stream.pending] == list(range(1, PENDING_LIMIT + 1))
    assert not stream.gaps and stream.metrics.buffer_full_waits >= 1


# ---- which policy a stream gets -------------------------------------------------------------

def test_live_sources_default_to_latest_files_to_block() -> None:
    assert default_policy(True) == "latest" and default_policy(False) == "block"
    assert is_live(FakeLive((8, 8, 3))) and not is_live(SyntheticSource((8, 8, 3)))
    frames = [np.zeros((8, 8, 3), np.uint8)] * 3
    with Pipeline([BackendSpec("sim", {"latency_s": 0.001})]) as pipeline:
        pipeline.add_stream(FakeLive((8, 8, 3)), name="camera")
        pipeline.add_stream(frames, name="frames")
        pipeline.add_stream(FakeLive((8, 8, 3)), name="kept", policy="drop-oldest")
        assert pipeline.stream_policies() == {"camera": "latest", "frames": "block",
                                              "kept": "drop-oldest"}
    with Pipeline([BackendSpec("sim", {"latency_s": 0.001})], on_full="drop-newest") as pipeline:
        pipeline.add_stream(FakeLive((8, 8, 3)), name="camera")
        pipeline.add_stream(frames, name="frames", priority=2)
        assert set(pipeline.stream_policies().values()) == {"drop-newest"}


def test_priority_must_be_positive() -> None:
    with pytest.raises(ValueError, match="priority"):
        StreamOptions(priority=0)


def test_a_live_fps_cap_thins_the_frames_it_grabs() -> None:
    """A 30 FPS camera capped at 10: about every third frame is kept, none is
    waited for (a live camera is thinned, never slowed down)."""

    class Camera30(SyntheticSource):
        def __init__(self) -> None:
            super().__init__((8, 8, 3))
            self.t = 0

        def grab_frame(self) -> GrabbedFrame | None:
            if self.t >= 90:
                return None
            self.t += 1
            return GrabbedFrame(1_000_000_000 + self.t * 33_333_333, self, decoded=self._read()[0])

    stream = Stream("cam", 0, None, StreamOptions(policy="drop-oldest", fps=10.0), spec=None,
                    opener=None, first=None,
                    reader=ReaderPolicy(max_reconnects=0, reconnect_backoff_s=0.0))
    admission = admission_with([stream])
    stream._admission = admission
    _LiveFeed(stream).pump(Camera30(), stream._generation)
    kept = stream.issued
    assert stream.metrics.frames_read == 90 and 28 <= kept <= 31
