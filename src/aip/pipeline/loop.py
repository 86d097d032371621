"""The run loop: collect results, put each stream back in order, watch health.

One thread, the caller's (``Pipeline.run`` is a generator). Each pass:

    gaps      drain each stream's gaps (dropped frames) into its reorder buffer
    collect   take the workers' records from the ResultRing (sleeping on it
              when there is nothing: a record wakes the loop at once)
    release   hand on, per stream, whatever is now in order
    health    every HEALTH_CHECK_S: dead or stalled workers (the pool), hung
              or finished streams

Ingest is not here: each stream's reader thread publishes its own frames
(:mod:`aip.pipeline.streams`), so nothing a source does can stall this
loop, and this loop never blocks on anything but the ResultRing. The
workers put a result before they free its slot, so a reader waiting for a
slot waits on the workers, which this loop keeps draining: no deadlock.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aip.pipeline.admission import Admission

from aip.pipeline.metrics import Metrics, StreamMetrics
from aip.pipeline.streams import Stream, StreamEvent
from aip.pipeline.targets import Targets
from aip.pipeline.reorder import DuplicateFrameError, Gap
from aip.results import FrameResult
from aip.pipeline.pool import FailedFrame, WorkerPool
from aip.pipeline.protocol import RESULT_FAILED, RESULT_LATE

# Longest the loop sleeps waiting for results before it looks at the
# workers, the streams and the clock again. Short enough to notice a dead
# worker or a finished stream quickly, long enough that idling costs nothing.
IDLE_WAIT_S = 0.05
HEALTH_CHECK_S = 0.1
# How long a finished stream may wait for frames that no slot holds before
# they count as lost: longer than a result takes from the ring to the loop.
LOST_AFTER_S = 1.0
# After an early stop, how long to wait for reader threads to let go of the
# slots they write (a read from a camera may block for its whole timeout).
READER_PATIENCE_S = 2.0


class RunLoop:
    """Drives one run over the streams registered in ``streams`` (the list
    may grow while it runs: ``Pipeline.add_stream``)."""

    def __init__(
        self,
        pool: WorkerPool,
        streams: dict[int, Stream],
        targets: Targets,
        metrics: Metrics,
        *,
        stream_timeout_s: float,
        on_event: Callable[[StreamEvent], None],
        keep_running: Callable[[], bool] = lambda: False,
        stop_when: Callable[[], bool] = lambda: False,
        weight_of: Callable[[int], int] = lambda worker: 1,
        admission: Admission | None = None,
    ) -> None:
        self.pool = pool
        self.streams = streams
        self.targets = targets
        self.metrics = metrics
        self.stream_timeout_s = stream_timeout_s
        self.on_event = on_event
        self.keep_running = keep_running  # True: do not end when every stream is complete
        self.stop_when = stop_when  # True: end now, complete or not (a deadline)
        self.weight_of = weight_of  # a restarted worker's weight in the schedule
        self.admission = admission  # live streams' frames wait there for room in the slots
        self.start_ns = time.perf_counter_ns()
        self._next_health = 0.0
        # How long an idle pass waits for results: a stage after the loop that
        # awaits replies of its own (tracking) shortens it while they are due.
        self.idle_wait: Callable[[], float] = lambda: IDLE_WAIT_S

    # ---- one pass ------------------------------------------------------------------

    def results(self) -> Iterator[FrameResult | Gap]:
        """Ordered results of every stream until each stream is complete."""
        return (item for item in self.results_and_ticks() if item is not None)

    def results_and_ticks(self) -> Iterator[FrameResult | Gap | None]:
        """:meth:`results`, and ``None`` after each pass that waited for results
        and released none: a stage after this loop (tracking) then takes what
        it was waiting for, without a loop of its own."""
        while True:
            self.take_gaps()
            self.collect(0)
            yield from self.release()
            if time.monotonic() >= self._next_health:
                self.check_health()
                self._next_health = time.monotonic() + HEALTH_CHECK_S
            if self.done():
                self.take_gaps()
                yield from self.release()
                if self.done():
                    return
            self.collect(self.idle_wait())
            self.take_gaps()
            released = False
            for item in self.release():
                released = True
                yield item
            if not released:
                yield None

    def done(self) -> bool:
        if self.stop_when():
            return True
        return not self.keep_running() and all(s.complete for s in self.streams.values())

    def take_gaps(self) -> None:
        """Gaps first: a stream queues a gap before it publishes the frame after it."""
        for stream in list(self.streams.values()):
            while stream.gaps:
                frame_id, reason = stream.gaps.popleft()
                self._push(stream, frame_id, None, reason)
            while stream.events:
                self.on_event(stream.events.popleft())

    def collect(self, timeout: float) -> int:
        """Take the workers' records into the streams' reorder buffers."""
        records = self.pool.receive(timeout)
        for record in records:
            stream = self.streams.get(int(record["stream"]))
            if stream is None:
                continue  # a removed stream's last frames
            worker = int(record["worker"])
            frame_id = int(record["stream_frame_id"])
            label = self.pool.labels[worker]
            status = int(record["status"])
            if status == RESULT_LATE:
                self._push(stream, frame_id, None, "late")
                continue
            if status == RESULT_FAILED:
                self._push(stream, frame_id, None, "failed")
                continue
            inference_s = (int(record["t_infer_end_ns"]) - int(record["t_infer_start_ns"])) / 1e9
            self.metrics.record_processed(label, inference_s)
            # A batch of n took inference_s: each of its frames cost 1/n of it.
            per_frame_s = inference_s / max(int(record["batch_size"]), 1)
            self.targets.observe(worker, per_frame_s)
            if self.admission is not None:
                self.admission.observe_service(per_frame_s)
            n = int(record["n_detections"])
            self._push(stream, frame_id, FrameResult(
                frame_id=frame_id, backend=label, worker=worker,
                detections=record["detections"][:n].copy(),
                t_capture_ns=int(record["t_capture_ns"]), t_ingest_ns=int(record["t_publish_ns"]),
                t_infer_start_ns=int(record["t_infer_start_ns"]),
                t_infer_end_ns=int(record["t_infer_end_ns"]), t_done_ns=0,
                frame=stream.kept.pop(frame_id, None), stream=stream.name,
            ), "")
        if len(records) and self.admission is not None:
            self.admission.nudge()  # their slots are free, or about to be: room for live frames
        return len(records)

    def _push(self, stream: Stream, frame_id: int, result: FrameResult | None, reason: str) -> None:
        try:
            if result is None:
                stream.reorder.mark_gap(frame_id, reason)
                stream.kept.pop(frame_id, None)
                if reason == "late":
                    stream.metrics.frames_late += 1
                    self.metrics.frames_late += 1
                else:  # dropped, failed or lost
                    stream.metrics.frames_dropped += 1
                    self.metrics.frames_dropped += 1
            else:
                stream.reorder.push(frame_id, result)
        except DuplicateFrameError:
            pass  # a reclaimed frame done twice: the first result counts

    def release(self) -> Iterator[FrameResult | Gap]:
        now = time.perf_counter_ns()
        elapsed_s = (now - self.start_ns) / 1e9
        for stream in list(self.streams.values()):
            for item in stream.reorder.release_ready():
                if isinstance(item, FrameResult):
                    done = dataclasses.replace(item, t_done_ns=now)
                    # End to end is capture -> ordered result, here and everywhere.
                    latency_s = (now - done.t_capture_ns) / 1e9
                    self.metrics.record_ordered(done.backend, latency_s, elapsed_s)
                    _record_stream(stream.metrics, latency_s, now)
                    yield done
                else:
                    yield item

    def check_health(self) -> None:
        self.pool.check(self.targets.mark_dead, self._failed, self._back)
        now = time.monotonic()
        held = None
        for stream in list(self.streams.values()):
            waited = stream.stalled_for(now)
            if waited > self.stream_timeout_s:
                stream.restart_stalled(waited)
            if stream.finished and not stream.complete:
                held = self._streams_in_slots() if held is None else held
                # Frames still pending (a live stream's last ones) are on their way too.
                self._give_up_on_missing(stream, stream.index in held or bool(stream.pending), now)

    def _failed(self, frame: FailedFrame) -> None:
        stream = self.streams.get(frame.stream)
        if stream is not None:
            self._push(stream, frame.stream_frame_id, None, "failed")

    def _back(self, worker: int) -> None:
        self.targets.revive(worker, self.weight_of(worker))

    def _streams_in_slots(self) -> set[int]:
        """Streams with a frame in a slot: published, in a worker's hands, or being written."""
        table, frames = self.pool.table, self.pool.frames
        assert frames is not None  # a started pool's
        return {int(frames.headers[slot]["stream"][0]) for slot in range(table.n_slots)
                if table.state(slot) != 0}

    def _give_up_on_missing(self, stream: Stream, in_slots: bool, now: float) -> None:
        """A finished stream still waits for frames no slot holds: if that lasts
        (a result may be on its way through the ring), they are lost."""
        if in_slots:
            stream.missing_since = None
            return
        if stream.missing_since is None:
            stream.missing_since = now
        elif now - stream.missing_since > LOST_AFTER_S:
            for frame_id in range(stream.reorder.next_frame_id, stream.issued):
                self._push(stream, frame_id, None, "lost")

    # ---- the end ---------------------------------------------------------------------

    def finish(self, timeout_s: float = 30.0) -> None:
        """After an early stop: let the frames in flight finish, so that the
        next run starts with every slot free."""
        for stream in self.streams.values():
            stream.stop()
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            self.take_gaps()
            self.collect(IDLE_WAIT_S)
            for stream in self.streams.values():
                stream.reorder.release_ready()
            counts = self.pool.table.counts()
            # A reader blocked in a camera's read (with a slot it is writing)
            # is not waited for long: it stops on its own when the read returns.
            readers_done = all(s.join(0) for s in self.streams.values())
            patience_over = time.monotonic() - start > READER_PATIENCE_S
            if counts["READY"] + counts["READING"] == 0 and (
                    readers_done and counts["WRITING"] == 0 or patience_over):
                return
            self.pool.check(self.targets.mark_dead, self._failed, self._back)


def _record_stream(metrics: StreamMetrics, latency_s: float, now_ns: int) -> None:
    metrics.frames_ordered += 1
    metrics.end_to_end.record(latency_s)
    if not metrics.first_ns:
        metrics.first_ns = now_ns
    metrics.last_ns = now_ns
