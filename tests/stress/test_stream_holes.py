"""Holes in the stream and worker paths, with real processes.

- a frame published for a worker that is already dead is redirected on every
  health check, not only at the moment of its death;
- ``drop-oldest`` without backpressure keeps its list of waiting frames bounded;
- capture times from another clock are clamped, not fatal;
- a second ``run()`` while one goes on fails clearly and adds nothing;
- many live cameras on few slots: fair, complete, and no reader ever holds a
  slot while it waits (fake live sources and real MJPEG cameras);
- the reconnect policy of a camera that goes away: eviction after exactly
  ``max_reconnects`` attempts, retrying forever with None, and never two
  connections to one camera at once.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aip.backends import BackendSpec
from aip.pipeline import Pipeline, StreamError
from aip.pipeline.reorder import Gap
from aip.results import FrameResult
from aip.io.sources import GrabbedFrame, SyntheticSource
from stream_checks import assert_in_order, by_stream

pytestmark = pytest.mark.stress

SMALL = (8, 8, 3)
# Guards only: no assertion is about how long anything took.
GUARD_S = 60.0


def sim(latency_s: float, label: str = "") -> BackendSpec:
    return BackendSpec("sim", {"latency_s": latency_s}, label)


def frames(count: int, shape: tuple[int, int, int] = SMALL) -> Iterator[np.ndarray]:
    for i in range(count):
        yield np.full(shape, i % 256, np.uint8)


def assert_no_children_left() -> None:
    assert mp.active_children() == []


class Sampler:
    """Calls ``probe`` over and over in a thread of its own until stopped."""

    def __init__(self, probe: Callable[[], None], every_s: float = 0.001) -> None:
        self._probe = probe
        self._every_s = every_s
        self._stop = threading.Event()
        self.samples = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="test-sampler", daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._probe()
                self.samples += 1
                self._stop.wait(self._every_s)
        except BaseException as error:  # noqa: BLE001 - reported by stop()
            self.error = error

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)
        if self.error is not None:
            raise self.error


# ---- 1. a frame for a dead worker ------------------------------------------------------------


def _publish_for(pipeline: Pipeline, worker: int, frame_id: int, stream_frame_id: int) -> int:
    """Publish a small frame targeted at ``worker``, the way a reader does; its slot."""
    pool = pipeline.pool
    assert pool.table is not None and pool.frames is not None
    slot = int(pool.table.acquire_free(timeout=1))
    image = pool.frames.image(slot, SMALL[0], SMALL[1])
    image[:] = 1
    header = pool.frames.headers[slot]
    header["stream"] = 7
    header["height"] = SMALL[0]
    header["width"] = SMALL[1]
    header["stream_frame_id"] = stream_frame_id
    header["t_capture_ns"] = time.perf_counter_ns()
    header["deadline_ns"] = 0
    header["attempts"] = 0
    pool.table.publish(slot, frame_id, worker)
    return slot


def _result_for(pipeline: Pipeline, stream_frame_id: int) -> dict[str, int]:
    deadline = time.monotonic() + GUARD_S
    while time.monotonic() < deadline:
        for record in pipeline.pool.receive(timeout=0.2):
            if int(record["stream"]) == 7 and int(record["stream_frame_id"]) == stream_frame_id:
                return {"worker": int(record["worker"]), "status": int(record["status"])}
    raise AssertionError(f"no result for frame {stream_frame_id} in {GUARD_S:.0f} s")


def test_a_frame_published_for_a_worker_already_dead_is_redirected_by_the_next_check() -> None:
    from aip.ring import ANY_WORKER

    with Pipeline([sim(0.002, "dies"), sim(0.002, "lives")], mode="static") as pipeline:
        pipeline.start(SMALL)
        pool = pipeline.pool
        victim = pool.workers[0]
        os.kill(victim.process.pid, signal.SIGKILL)
        victim.process.join(10)
        dead: list[int] = []
        pool.check(on_dead=dead.append)  # the pool notices: frames redirected, scheduler told
        assert dead == [0] and not victim.alive

        # The window: a reader asked the scheduler before it heard of the death.
        for round_ in range(3):  # every check redirects, not only the one that saw it die
            slot = _publish_for(pipeline, 0, frame_id=1000 + round_, stream_frame_id=round_)
            time.sleep(0.2)  # nobody takes a frame for a dead worker on its own
            info = pool.table.slot_info(slot)
            assert (info["state"], info["target"]) == ("READY", 0)
            pool.check(on_dead=dead.append)
            assert pool.table.slot_info(slot)["target"] == ANY_WORKER
            result = _result_for(pipeline, round_)
            assert result == {"worker": 1, "status": 0}  # the live worker did it
        assert dead == [0]  # told once
        assert pool.workers[1].alive
    assert_no_children_left()


@pytest.mark.parametrize("policy", ["block", "drop-oldest"])
def test_a_worker_killed_mid_run_without_restart_loses_nothing(policy: str) -> None:
    specs = [sim(0.002, "victim"), sim(0.002, "other")]
    with Pipeline(specs, mode="static", on_full=policy, target_fps=400 if policy != "block" else None) \
            as pipeline:
        out: list[Any] = []
        for result in pipeline.run(frames(600)):
            out.append(result)
            if len(out) == 100:
                os.kill(pipeline.pool.workers[0].process.pid, signal.SIGKILL)
        workers = [w.alive for w in pipeline.pool.workers]
    assert_in_order(out, 600)  # no hang: every id once, in order
    if policy == "block":
        assert all(isinstance(r, FrameResult) for r in out)
    assert all(r.backend == "other" for r in out[200:] if isinstance(r, FrameResult))
    assert workers == [False, True]
    assert_no_children_left()


# ---- 2. drop-oldest without backpressure -------------------------------------------------------


def test_drop_oldest_without_backpressure_keeps_its_waiting_list_bounded() -> None:
    count = 400
    with Pipeline([sim(0.001), sim(0.001)], mode="pull") as pipeline:
        pipeline.add_stream(frames(count), name="cam", policy="drop-oldest", fps=250)
        longest = 0

        def probe() -> None:
            nonlocal longest
            for stream in list(pipeline._streams.values()):
                longest = max(longest, len(getattr(getattr(stream, "_feed", None), "waiting", ())))

        out: list[Any] = []
        with Sampler(probe) as sampler:
            for result in pipeline.run():
                out.append(result)
                probe()
        stream = pipeline._streams[0]
        metrics = pipeline.metrics.streams["cam"]
        n_slots = pipeline.n_slots
    assert sampler.samples > 0
    assert stream.options.policy == "drop-oldest"
    assert_in_order(out, count)
    assert all(isinstance(r, FrameResult) for r in out)  # no slot ever ran out: nothing dropped
    assert metrics.frames_dropped == 0
    assert longest <= n_slots, f"_waiting grew to {longest} (slots: {n_slots})"
    assert len(getattr(stream._feed, "waiting", ())) <= n_slots
    assert_no_children_left()


# ---- 3. capture times from another clock ----------------------------------------------------


@pytest.mark.parametrize("clock", ["wall", "future"])
def test_capture_times_of_another_clock_are_clamped_not_fatal(clock: str) -> None:
    count = 120

    def stamped() -> Iterator[tuple[np.ndarray, int]]:
        for frame in frames(count):
            yield frame, (time.time_ns() if clock == "wall"
                          else time.perf_counter_ns() + 3600 * 10**9)

    with Pipeline([sim(0.001), sim(0.001)], mode="pull") as pipeline:
        out = list(pipeline.run(stamped()))
        metrics = pipeline.metrics
    assert_in_order(out, count)
    assert all(isinstance(r, FrameResult) for r in out)
    assert metrics.streams["s0"].clock_clamped == count
    assert metrics.streams["s0"].frames_ordered == count
    for result in out:
        assert isinstance(result, FrameResult) and 0 <= result.end_to_end_ms < 60_000, result
    assert 0 <= metrics.streams["s0"].end_to_end.to_dict()["max_ms"] < 60_000
    assert_no_children_left()


# ---- 4. a second run while one goes on ------------------------------------------------------


def test_a_second_run_while_one_goes_on_fails_and_adds_nothing() -> None:
    with Pipeline([sim(0.001)], mode="pull") as pipeline:
        pipeline.add_stream(frames(200), name="first", fps=200)
        first_run = pipeline.run()
        out = [next(first_run)]  # running now
        assert pipeline._running
        second = pipeline.run([frames(5), frames(5)])
        with pytest.raises(RuntimeError, match="add_stream"):
            next(second)
        assert [s.name for s in pipeline._streams.values()] == ["first"]
        assert pipeline._waiting_streams == []
        assert set(pipeline.metrics.streams) == {"first"}
        out.extend(first_run)  # the first run goes on, unharmed
        assert_in_order(out, 200)
        assert all(r.stream == "first" for r in out)
        # Nothing was made for the refused sources: the next stream is s1.
        again = list(pipeline.run(frames(3)))
    assert_in_order(again, 3)
    assert {r.stream for r in again} == {"s1"}
    assert_no_children_left()


def test_a_second_run_during_an_until_stopped_run_in_another_thread_fails() -> None:
    with Pipeline([sim(0.001)], mode="pull") as pipeline:
        collected: list[Any] = []
        errors: list[BaseException] = []

        def background() -> None:
            try:
                collected.extend(pipeline.run(until_stopped=True))
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        thread = threading.Thread(target=background, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + GUARD_S
            while pipeline._targets is None and time.monotonic() < deadline:  # started
                time.sleep(0.01)
            assert pipeline._running
            with pytest.raises(RuntimeError, match="add_stream"):
                next(pipeline.run(frames(5)))
            assert pipeline._streams == {}
            assert pipeline._waiting_streams == []
            assert pipeline.metrics.streams == {}
            name = pipeline.add_stream(frames(20))  # the supported way joins the run
            assert name == "s0"
            deadline = time.monotonic() + GUARD_S
            while len(collected) < 20 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            pipeline.stop()
            thread.join(GUARD_S)
        assert not thread.is_alive() and errors == []
    assert_in_order(collected, 20)
    assert_no_children_left()


# ---- 5. many live cameras, few slots ------------------------------------------------------------


class PacedLive(SyntheticSource):
    """A fake live camera: ``grab_frame`` paced at ``fps``, None after ``count`` frames."""

    def __init__(self, count: int, fps: float, shape: tuple[int, int, int] = (16, 16, 3),
                 seed: int = 0) -> None:
        super().__init__(shape, count=None, seed=seed)
        self.limit = count
        self.period_s = 1.0 / fps
        self._next_at: float | None = None

    def grab_frame(self) -> GrabbedFrame | None:
        if self._closed or self.frames_read >= self.limit:
            return None
        now = time.monotonic()
        if self._next_at is None:
            self._next_at = now
        elif self._next_at > now:
            time.sleep(self._next_at - now)
        self._next_at += self.period_s
        frame, _ = next(self)
        return GrabbedFrame(time.perf_counter_ns(), self, decoded=frame)


def _watch_slots(pipeline: Pipeline, seen: dict[str, int]) -> Callable[[], None]:
    def probe() -> None:
        table = pipeline.pool.table
        if table is None:
            return
        try:
            counts = table.counts()
        except Exception:  # noqa: BLE001 - the table closed under us, at the end
            return
        seen["writing"] = max(seen["writing"], counts["WRITING"])
        seen["samples"] += 1
        for stream in list(pipeline._streams.values()):
            seen["pending"] = max(seen["pending"], len(stream.pending))

    return probe


def test_more_live_cameras_than_slots_all_served_none_holding_a_slot() -> None:
    cameras, count = 24, 40
    with Pipeline([sim(0.01), sim(0.01)], mode="pull", n_slots=4) as pipeline:
        for i in range(cameras):
            pipeline.add_stream(PacedLive(count, fps=20, seed=i), name=f"cam{i}")
        seen = {"writing": 0, "pending": 0, "samples": 0}
        with Sampler(_watch_slots(pipeline, seen)):
            out = list(pipeline.run())
        streams = dict(pipeline._streams)
        metrics = pipeline.metrics
        assert pipeline.n_slots == 4
    assert seen["samples"] > 0
    assert seen["writing"] <= 1, "a slot was held by someone other than the admission thread"
    assert seen["pending"] <= 1  # latest: one frame waits per camera
    split = by_stream(out)
    served = {}
    for i in range(cameras):
        name = f"cam{i}"
        stream = next(s for s in streams.values() if s.name == name)
        assert stream.options.policy == "latest"  # a live source's default
        assert stream.live
        assert_in_order(split[name], count)  # every id issued: a result or a gap
        assert stream.issued == count
        results = [r for r in split[name] if isinstance(r, FrameResult)]
        gaps = [g for g in split[name] if isinstance(g, Gap)]
        assert all(g.reason == "dropped" for g in gaps)
        assert len(results) + len(gaps) == count
        served[name] = len(results)
        m = metrics.streams[name]
        assert m.state == "ended"
        assert m.frames_read == count
        assert m.decodes_skipped == len(gaps)  # every drop was a pending frame replaced
    assert min(served.values()) >= 1, served  # no camera starves
    assert min(served.values()) >= max(served.values()) / 4, served
    assert sum(served.values()) < cameras * count  # it was an overload: latest dropped some
    assert_no_children_left()


def test_more_mjpeg_cameras_than_slots_decode_only_what_workers_take() -> None:
    pytest.importorskip("cv2")
    from aip.bench.mjpeg import MjpegCameras

    count, max_frames = 20, 12
    # 20 cameras x 4 FPS = 80 frames/s offered; 2 workers of 50 ms do 40.
    with MjpegCameras(count, fps=4, frames=60, lifetime_s=120) as cameras, \
            Pipeline([sim(0.05), sim(0.05)], mode="pull", n_slots=4) as pipeline:
        for i, url in enumerate(cameras.urls):
            pipeline.add_stream(url, name=f"cam{i}", max_frames=max_frames)
        seen = {"writing": 0, "pending": 0, "samples": 0}
        with Sampler(_watch_slots(pipeline, seen)):
            out = list(pipeline.run())
        streams = {s.name: s for s in pipeline._streams.values()}
        metrics = pipeline.metrics
    assert seen["samples"] > 0 and seen["writing"] <= 1 and seen["pending"] <= 1
    split = by_stream(out)
    skipped = decoded = 0
    for i in range(count):
        name = f"cam{i}"
        m = metrics.streams[name]
        assert streams[name].options.policy == "latest"
        assert m.state == "ended", (name, m.to_dict())
        assert_in_order(split[name], max_frames)
        results = sum(isinstance(r, FrameResult) for r in split[name])
        gaps = [g for g in split[name] if isinstance(g, Gap)]
        assert results >= 1, (name, m.to_dict())  # every camera is served
        assert m.frames_read == max_frames
        # Every frame read was decoded for a worker or skipped undecoded; the
        # first was decoded when the camera opened (for its size): it is
        # neither when it was served.
        unaccounted = m.frames_read - (m.frames_decoded + m.decodes_skipped)
        assert unaccounted in (0, 1), (name, m.to_dict())
        assert results == m.frames_decoded + unaccounted, (name, m.to_dict())
        assert len(gaps) == m.decodes_skipped, (name, m.to_dict())
        skipped += m.decodes_skipped
        decoded += m.frames_decoded
    assert decoded > 0  # MJPEG frames stay encoded until a worker takes them
    assert skipped > 0  # overload: frames replaced before a worker was free were never decoded
    assert_no_children_left()


# ---- 6. reconnects -----------------------------------------------------------------------------


class OpenTracker:
    """Wraps ``aip.io.sources.open_source``: how many sources are open at once, at most."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, opener: Callable[..., Any] | None = None) -> None:
        import aip.io.sources

        self._opener = opener or aip.io.sources.open_source
        self._lock = threading.Lock()
        self.open = 0
        self.most = 0
        self.opened = 0
        self.intervals: list[list[float]] = []
        monkeypatch.setattr(aip.io.sources, "open_source", self)

    def __call__(self, spec: Any, **options: Any) -> Any:
        source = self._opener(spec, **options)
        with self._lock:
            self.open += 1
            self.opened += 1
            self.most = max(self.most, self.open)
            interval = [time.monotonic(), float("inf")]
            self.intervals.append(interval)
        close = source.close
        closed = False

        def tracked_close() -> None:
            nonlocal closed
            close()
            with self._lock:
                if not closed:
                    closed = True
                    self.open -= 1
                    interval[1] = time.monotonic()

        setattr(source, "close", tracked_close)  # noqa: B010 - an instance attribute
        return source


def established_to(port: int) -> int:
    """Client connections to ``port`` on this machine that are ESTABLISHED (Linux)."""
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote, state = fields[2], fields[3]
            if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
                total += 1
    return total


def kinds_of(pipeline: Pipeline, name: str, kind: str) -> list[str]:
    return [e.message for e in list(pipeline.events) if e.stream == name and e.kind == kind]


def test_a_camera_that_goes_away_is_evicted_after_max_reconnects(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("cv2")
    from aip.bench.mjpeg import MjpegCameras

    tracker = OpenTracker(monkeypatch)
    cameras = MjpegCameras(1, fps=20, frames=600, lifetime_s=120)
    closer: threading.Thread | None = None
    try:
        with Pipeline([sim(0.005)], mode="pull", max_reconnects=1, reconnect_backoff_s=0.05,
                      stream_timeout_s=2) as pipeline:
            pipeline.add_stream(cameras.urls[0], name="cam")
            out: list[Any] = []
            with pytest.raises(StreamError, match="cam") as raised:
                for result in pipeline.run():
                    out.append(result)
                    if sum(isinstance(r, FrameResult) for r in out) == 10 and closer is None:
                        # The camera goes away mid-run.
                        closer = threading.Thread(target=cameras.close, daemon=True)
                        closer.start()
            stream = pipeline._streams[0]
            metrics = pipeline.metrics.streams["cam"]
            reconnecting = kinds_of(pipeline, "cam", "reconnecting")
            evicted = kinds_of(pipeline, "cam", "evicted")
    finally:
        if closer is not None:
            closer.join(GUARD_S)
        cameras.close()
    assert len(reconnecting) == 1, reconnecting  # exactly max_reconnects reopen attempts
    assert "attempt 1 of 1" in reconnecting[0]
    assert len(evicted) == 1 and [e.stream for e in raised.value.events] == ["cam"]
    assert metrics.state == "evicted" and metrics.reconnects == 1
    assert_in_order(out, stream.issued)  # everything it gave was delivered before the error
    assert sum(isinstance(r, FrameResult) for r in out) >= 10
    assert tracker.most == 1  # never two connections to the camera
    assert_no_children_left()


def test_an_ended_camera_that_still_accepts_connections_is_evicted() -> None:
    """Each reopen gets the camera's last frame, then nothing: the frame read
    as a source opens is no recovery, so the failures still count."""
    pytest.importorskip("cv2")
    from aip.bench.mjpeg import MjpegCameras

    with MjpegCameras(1, fps=20, frames=10, lifetime_s=120) as cameras, \
            Pipeline([sim(0.002)], mode="pull", max_reconnects=1, reconnect_backoff_s=0.05,
                     stream_timeout_s=2) as pipeline:
        pipeline.add_stream(cameras.urls[0], name="cam")

        finished = threading.Event()

        def guard() -> None:  # stop it once it has clearly gone past max_reconnects
            deadline = time.monotonic() + 10
            while len(kinds_of(pipeline, "cam", "reconnecting")) < 8 and time.monotonic() < deadline:
                if finished.wait(0.02):
                    return
            pipeline.drain(1)

        stopper = threading.Thread(target=guard, daemon=True)
        stopper.start()
        evicted = True
        try:
            list(pipeline.run())
            evicted = False
        except StreamError:
            pass
        finally:
            finished.set()
            stopper.join(GUARD_S)
        reconnecting = kinds_of(pipeline, "cam", "reconnecting")
        repeats = pipeline.metrics.streams["cam"].frames_ordered
    assert evicted and len(reconnecting) == 1, (
        f"{len(reconnecting)} reconnects, {repeats} frames delivered, not evicted")
    assert_no_children_left()


@pytest.mark.parametrize("camera", ["gone", "ended"])
def test_a_camera_retried_forever_keeps_reconnecting_one_connection_at_a_time(
    camera: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``gone``: the camera's server is shut (every reopen fails); ``ended``:
    it sent its frames and ended, but still accepts connections (each reopen
    gets its last frame again, then the connection ends)."""
    pytest.importorskip("cv2")
    from aip.bench.mjpeg import MjpegCameras

    tracker = OpenTracker(monkeypatch)
    cameras = MjpegCameras(1, fps=20, frames=10, lifetime_s=120)
    port = cameras.ports[0]
    connections = {"most": 0, "samples": 0}

    def probe() -> None:
        connections["most"] = max(connections["most"], established_to(port))
        connections["samples"] += 1

    try:
        with Pipeline([sim(0.002)], mode="pull", max_reconnects=None, reconnect_backoff_s=0.05,
                      stream_timeout_s=2) as pipeline:
            pipeline.add_stream(cameras.urls[0], name="cam")
            if camera == "gone":
                cameras.close()

            def stop_after_reconnects() -> None:
                deadline = time.monotonic() + GUARD_S
                while len(kinds_of(pipeline, "cam", "reconnecting")) <= 3 \
                        and time.monotonic() < deadline:
                    time.sleep(0.02)
                pipeline.drain(1)

            stopper = threading.Thread(target=stop_after_reconnects, daemon=True)
            with Sampler(probe, every_s=0.005):
                stopper.start()
                out = list(pipeline.run())  # no StreamError: stopped, never evicted
                stopper.join(GUARD_S)
            stream = pipeline._streams[0]
            metrics = pipeline.metrics.streams["cam"]
            reconnecting = kinds_of(pipeline, "cam", "reconnecting")
            evicted = kinds_of(pipeline, "cam", "evicted")
            readers = [t for t in threading.enumerate() if t.name == "aip-stream-cam" and t.is_alive()]
    finally:
        cameras.close()
    assert len(reconnecting) > 3, reconnecting
    assert all("retrying forever" in message for message in reconnecting)
    assert evicted == [] and metrics.state != "evicted"
    assert metrics.reconnects >= len(reconnecting) - 1
    assert_in_order(out, stream.issued)
    assert tracker.most <= 1, tracker.intervals  # one connection to the camera at a time
    assert connections["samples"] > 0 and connections["most"] <= 1
    if camera == "ended":
        assert tracker.opened > 3  # it did reconnect, each time after closing the last one
    assert len(readers) <= 1
    assert_no_children_left()


def test_a_new_reader_waits_for_a_hung_reader_to_let_go_of_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()
    sources: list[Any] = []

    class HangsOnce(PacedLive):
        """The first one opened hangs in its 5th grab until released; later ones give 30 frames."""

        def __init__(self, first: bool) -> None:
            super().__init__(10**6 if first else 30, fps=100)
            self.first = first

        def grab_frame(self) -> GrabbedFrame | None:
            if self.first and self.frames_read == 5:
                release.wait(GUARD_S)
            return super().grab_frame()

    def open_fake(spec: Any, **options: Any) -> Any:
        source = HangsOnce(first=not sources)
        sources.append(source)
        return source

    tracker = OpenTracker(monkeypatch, open_fake)
    with Pipeline([sim(0.002)], mode="pull", max_reconnects=None, reconnect_backoff_s=0.05,
                  stream_timeout_s=0.5) as pipeline:
        pipeline.add_stream("rtsp://fake/cam", name="cam")

        def release_after_restart() -> None:
            deadline = time.monotonic() + GUARD_S
            while not any("no frame for" in m for m in kinds_of(pipeline, "cam", "reconnecting")) \
                    and time.monotonic() < deadline:
                time.sleep(0.02)
            # The new reader is waiting for the connection now: it must not open
            # a second one while the hung read holds the first.
            time.sleep(1.5)
            release.set()

        releaser = threading.Thread(target=release_after_restart, daemon=True)
        releaser.start()
        try:
            out = list(pipeline.run())
        finally:
            release.set()
            releaser.join(GUARD_S)
        stream = pipeline._streams[0]
        reconnecting = kinds_of(pipeline, "cam", "reconnecting")
        metrics = pipeline.metrics.streams["cam"]
    assert any("no frame for" in m for m in reconnecting), reconnecting
    assert len(sources) == 2, "a second connection was opened before the first was closed"
    assert tracker.most == 1, tracker.intervals
    first, second = tracker.intervals
    assert first[1] <= second[0]  # the hung reader closed before the new one opened
    assert metrics.state == "ended"
    assert_in_order(out, stream.issued)
    assert sum(isinstance(r, FrameResult) for r in out) >= 30
    assert_no_children_left()


def test_a_live_stream_builds_no_backlog_after_its_camera_stops() -> None:
    """Overloaded cameras under the default policy: once a camera has sent
    its last frame, at most the frames already pending or in a worker's
    hands are still to come (no queue of stale frames in a socket, a
    decoder or the slots); and the last result is its last frame."""
    pytest.importorskip("cv2")
    from aip.bench.mjpeg import MjpegCameras, read_stamp

    count, frames_sent = 6, 40
    # 6 cameras x 10 FPS = 60 frames/s offered; 2 workers of 50 ms do 40.
    with MjpegCameras(count, fps=10, frames=frames_sent, lifetime_s=120) as cameras, \
            Pipeline([sim(0.05), sim(0.05)], mode="pull", keep_frames=True, max_reconnects=0,
                     stream_timeout_s=2) as pipeline:
        names = [pipeline.add_stream(url, name=f"cam{i}") for i, url in enumerate(cameras.urls)]
        out: list[Any] = []
        with pytest.raises(StreamError):  # each camera ends: gone, and evicted at once
            for item in pipeline.run():
                out.append(item)
        for camera, name in enumerate(names):
            delivered = []
            for result in out:
                if isinstance(result, FrameResult) and result.stream == name:
                    stamp = read_stamp(result.frame)
                    assert stamp is not None
                    delivered.append((cameras.sent(camera, stamp, result.t_done_ns), result.t_done_ns))
            assert delivered, name
            (last_frame, _), _ = max(delivered)
            last_sent_ns = cameras.sent(camera, frames_sent - 1, time.perf_counter_ns())[1]
            after_last = sum(t_done > last_sent_ns for _, t_done in delivered)
            assert last_frame >= frames_sent - 2, (name, last_frame)
            assert after_last <= 3, (name, after_last)  # pending + in a worker's hands
    assert_no_children_left()
