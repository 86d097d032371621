"""Many streams in one pipeline, on sim workers: per-stream order, a dead
stream isolated, reconnects, policies, max age, live add/remove, sizes."""
from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from aip.backends import BackendSpec
from aip.pipeline import Pipeline, StreamError
from aip.pipeline.reorder import Gap
from aip.results import FrameResult
from stream_checks import assert_in_order, by_stream

pytestmark = pytest.mark.stress


def sim(latency_s: float) -> BackendSpec:
    return BackendSpec("sim", {"latency_s": latency_s})


def frames(count: int, shape: tuple[int, int, int] = (8, 8, 3), fail_at: int | None = None,
           pause_at: int | None = None) -> Iterator[np.ndarray]:
    for i in range(count):
        if i == fail_at:
            raise OSError("camera unplugged")
        if i == pause_at:
            time.sleep(3600)  # a read that never returns
        yield np.full(shape, i % 256, np.uint8)


def test_three_streams_each_in_order_with_their_names() -> None:
    with Pipeline([sim(0.001), sim(0.002)], mode="pull") as pipeline:
        out = list(pipeline.run([frames(200), frames(150, (12, 16, 3)), frames(100, (6, 4, 3))]))
        metrics = pipeline.metrics
    streams = by_stream(out)
    assert sorted(streams) == ["s0", "s1", "s2"]
    for name, count in (("s0", 200), ("s1", 150), ("s2", 100)):
        assert_in_order(streams[name], count)
        assert all(isinstance(r, FrameResult) for r in streams[name])
        assert metrics.streams[name].frames_ordered == count
        assert metrics.streams[name].state == "ended"
    assert metrics.frames_ordered == 450
    assert mp.active_children() == []


def test_a_dead_stream_is_evicted_and_the_others_deliver_everything() -> None:
    with Pipeline([sim(0.001), sim(0.001)], mode="pull") as pipeline:
        out: list[Any] = []
        with pytest.raises(StreamError, match="s1.*camera unplugged"):
            for result in pipeline.run([frames(300), frames(300, fail_at=40), frames(300)]):
                out.append(result)
        events = [(e.stream, e.kind) for e in pipeline.events]
    streams = by_stream(out)
    assert_in_order(streams["s0"], 300)
    assert_in_order(streams["s2"], 300)
    assert_in_order(streams["s1"], 40)  # what it gave before it died, delivered first
    assert ("s1", "evicted") in events
    assert mp.active_children() == []


def test_a_failed_stream_is_reopened_from_its_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    import aip.io.sources

    opened: list[int] = []

    class Flaky:
        """Fails after 30 frames the first time it is opened."""

        shape = (8, 8, 3)

        def __init__(self, spec: str) -> None:
            opened.append(1)
            self._frames = frames(10**6, fail_at=30) if len(opened) == 1 else frames(30)

        def __iter__(self) -> Iterator[np.ndarray]:
            return self._frames

        def close(self) -> None:
            pass

    monkeypatch.setattr(aip.io.sources, "open_source", Flaky)
    with Pipeline([sim(0.001)], mode="pull", reconnect_backoff_s=0.01) as pipeline:
        out = list(pipeline.run("camera://flaky"))
        kinds = [e.kind for e in pipeline.events]
        metrics = pipeline.metrics.streams["s0"]
    assert len(opened) == 2
    assert_in_order(out, 60)  # ids go on across the reconnect
    assert kinds.count("reconnecting") == 1 and kinds[-1] == "ended"
    assert metrics.reconnects == 1


def test_a_hung_stream_is_evicted_after_its_timeout_and_the_other_goes_on() -> None:
    with Pipeline([sim(0.001)], mode="pull", stream_timeout_s=0.5) as pipeline:
        out: list[Any] = []
        with pytest.raises(StreamError, match="s0: no frame for"):
            for result in pipeline.run([frames(50, pause_at=10), frames(100)]):
                out.append(result)
    streams = by_stream(out)
    assert_in_order(streams["s0"], 10)
    assert_in_order(streams["s1"], 100)


def test_latest_keeps_only_the_freshest_frame_and_is_fair() -> None:
    # Two streams offered far faster than one slow worker serves them.
    with Pipeline([sim(0.02)], mode="pull", on_full="latest", target_fps=200) as pipeline:
        out = list(pipeline.run([frames(200), frames(200)]))
        metrics = pipeline.metrics
    streams = by_stream(out)
    for name in ("s0", "s1"):
        assert_in_order(streams[name], 200)  # every id once: a result or a gap
        gaps = [g for g in streams[name] if isinstance(g, Gap)]
        assert gaps and all(g.reason == "dropped" for g in gaps)
    served = Counter(r.stream for r in out if isinstance(r, FrameResult))
    assert min(served.values()) >= 0.6 * max(served.values()), served
    assert metrics.frames_dropped == sum(isinstance(r, Gap) for r in out)


def test_frames_past_max_age_are_late_not_processed() -> None:
    with Pipeline([sim(0.02)], mode="pull", max_age_ms=30) as pipeline:
        out = list(pipeline.run(frames(40)))
        metrics = pipeline.metrics
    assert_in_order(out, 40)
    late = [g for g in out if isinstance(g, Gap) and g.reason == "late"]
    assert late and len(late) == metrics.frames_late == metrics.streams["s0"].frames_late
    assert metrics.frames_processed == 40 - len(late)


def test_streams_added_and_removed_while_running() -> None:
    with Pipeline([sim(0.001)], mode="pull") as pipeline:
        pipeline.add_stream(frames(10**6), name="endless", fps=500)
        out: list[Any] = []
        added = removed = False
        for result in pipeline.run(until_stopped=True):
            out.append(result)
            if not added and len(out) == 20:
                pipeline.add_stream(frames(50), name="late-joiner")
                added = True
            streams = by_stream(out)
            if added and not removed and len(streams["late-joiner"]) == 50:
                pipeline.remove_stream("endless")
                pipeline.stop()
                removed = True
        metrics = pipeline.metrics
    streams = by_stream(out)
    assert_in_order(streams["late-joiner"], 50)
    endless = streams["endless"]
    assert_in_order(endless, len(endless))
    assert metrics.streams["endless"].state == "removed"
    assert [e.kind for e in pipeline.events if e.stream == "endless"][-1] == "removed"


def test_add_stream_from_another_thread() -> None:
    with Pipeline([sim(0.001)], mode="pull") as pipeline:
        adder = threading.Timer(0.3, lambda: (pipeline.add_stream(frames(30), name="x"),
                                              pipeline.stop()))
        adder.start()
        out = list(pipeline.run(until_stopped=True))
        adder.join()
    assert_in_order(out, 30)
    assert {r.stream for r in out} == {"x"}


def test_a_stream_name_is_free_again_after_its_run() -> None:
    with Pipeline([sim(0.001)], mode="pull") as pipeline:
        pipeline.add_stream(frames(5), name="cam")
        assert len(list(pipeline.run())) == 5
        pipeline.add_stream(frames(7), name="cam")
        assert [r.frame_id for r in pipeline.run()] == list(range(7))
