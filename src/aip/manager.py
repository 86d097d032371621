"""The manager: ingestion, assignment, pacing, backpressure, ordering, metrics.

  Source --frame--> Pipeline.run --copy--> SlotTable slot: FREE -> WRITING -> READY[hint]
    |                  |  hint = scheduler.next_hint(frame_id)       |
    |                  |  ring full: block / drop-oldest / drop-newest|  Worker[i]: claim(hint=i)
    |                  |                                               v  preprocess -> infer -> postprocess
    |                  |                                       ResultRing.put(record); release -> FREE
    |  ordered   <-- ReorderBuffer <-- get_many <---------------------'
    |  results       (gaps for dropped / lost frames)
    '-- pacing to a target FPS; dead workers: reclaim their slots, re-hint, re-weight

One thread does it all: it sleeps on the ResultRing (or on the SlotTable
when every slot is busy) whenever it has nothing to do, so it costs little
CPU, and it never blocks on one side for long without draining the other
(a worker blocked on a full ResultRing while the manager waits for a free
slot would deadlock them both).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing as mp
import queue
import time
from pathlib import Path
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aip.backends.base import BackendSpec, BackendUnavailable, check_available, prepare
from aip.calibrate import CalibrationKey, CalibrationResult, calibrate
from aip.metrics import Metrics
from aip.reorder import Gap, ReorderBuffer
from aip.results import FrameResult
from aip.scheduler import SCHEDULER_MODES, Scheduler, make_scheduler
from aip.worker import WorkerConfig, result_dtype, worker_main

log = logging.getLogger(__name__)

DROP_POLICIES = ("block", "drop-oldest", "drop-newest")

# Longest the manager sleeps waiting for results before it looks at the
# workers' health and the clock again. Short enough to notice a dead worker
# quickly, long enough that idling costs nothing.
IDLE_WAIT_S = 0.05
# Longest single wait for a free slot under the "block" policy before
# results are drained again; a release wakes it at once.
FREE_WAIT_S = 0.01
HEALTH_CHECK_S = 0.1


class WorkerError(RuntimeError):
    """A worker failed; the message carries its traceback.

    ``worker`` is the index (into the pipeline's backends) of the worker that
    failed to start, when the error is about one; else None.
    """

    def __init__(self, message: str, *, worker: int | None = None) -> None:
        super().__init__(message)
        self.worker = worker


@dataclass
class _Worker:
    index: int
    label: str
    spec: BackendSpec
    process: Any
    device: str = "?"
    alive: bool = True


@dataclass
class _Outstanding:
    t_capture_ns: int
    t_ingest_ns: int
    frame: np.ndarray | None


def _unique_labels(specs: Sequence[BackendSpec]) -> list[str]:
    names = [spec.display_name for spec in specs]
    return [
        f"{name}#{names[:i].count(name)}" if names.count(name) > 1 else name
        for i, name in enumerate(names)
    ]


def _default_slots(n_workers: int) -> int:
    # Every worker needs one frame in hand and one waiting so that it never
    # idles between frames; a static cycle needs room for its burstiness.
    return max(16, 4 * n_workers)


class Pipeline:
    """Frames in, ordered detections out, across one worker per backend.

    >>> specs = [BackendSpec("sim", {"latency_s": 0.02}), BackendSpec("sim", {"latency_s": 0.1})]
    >>> with Pipeline(specs, mode="static") as pipeline:
    ...     pipeline.calibrate()
    ...     for result in pipeline.run(frames):
    ...         ...

    ``mode`` is ``static`` (calibrated weighted cycle), ``adaptive`` (the
    cycle re-weighted from measured service times) or ``pull`` (any idle
    worker takes the next frame). ``on_full`` is what happens to a new frame
    when every slot is busy: ``block`` (wait: nothing is lost), ``drop-oldest``
    (replace the oldest frame no worker took yet) or ``drop-newest``.
    Dropped frames come out as :class:`~aip.reorder.Gap` in their place.

    A worker that dies has its frames reclaimed and done by the others, and
    leaves the schedule; one that holds a frame longer than
    ``stall_timeout_s`` is killed and treated the same. Workers exit on
    their own when the manager process disappears.
    """

    def __init__(
        self,
        backends: Sequence[BackendSpec],
        *,
        mode: str = "static",
        weights: Sequence[int] | None = None,
        target_fps: float | None = None,
        on_full: str = "block",
        n_slots: int | None = None,
        max_detections: int = 100,
        conf: float = 0.25,
        iou: float = 0.7,
        seed: int = 0,
        keep_frames: bool = False,
        start_timeout_s: float = 600.0,
        stall_timeout_s: float = 60.0,
    ) -> None:
        if not backends:
            raise ValueError("a Pipeline needs at least one backend")
        if mode not in SCHEDULER_MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(SCHEDULER_MODES)}")
        if on_full not in DROP_POLICIES:
            raise ValueError(f"unknown on_full {on_full!r}; choose one of {', '.join(DROP_POLICIES)}")
        if weights is not None and len(weights) != len(backends):
            raise ValueError(f"{len(weights)} weights for {len(backends)} backends")
        if target_fps is not None and target_fps <= 0:
            raise ValueError("target_fps must be > 0")
        for spec in backends:
            check_available(spec)  # BackendUnavailable, with the reason, before anything starts
        self.specs = list(backends)
        self.labels = _unique_labels(self.specs)
        self.mode = mode
        self.weights = list(weights) if weights is not None else [1] * len(backends)
        self.target_fps = target_fps
        self.on_full = on_full
        self.n_slots = n_slots or _default_slots(len(backends))
        self.max_detections = max_detections
        self.conf = conf
        self.iou = iou
        self.seed = seed
        self.keep_frames = keep_frames
        self.start_timeout_s = start_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.calibration: CalibrationResult | None = None
        self.metrics = Metrics()
        self.scheduler: Scheduler | None = None  # of the current or last run
        self._table: Any = None
        self._ring: Any = None
        self._frames: list[np.ndarray] = []
        self._workers: list[_Worker] = []
        self._events: Any = None
        self._frame_shape: tuple[int, int, int] | None = None
        self._next_frame_id = 0
        self._errors: dict[int, str] = {}
        self._record: np.ndarray | None = None

    # ---- lifecycle ---------------------------------------------------------

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def started(self) -> bool:
        return self._table is not None

    def start(self, frame_shape: tuple[int, int, int]) -> None:
        """Create the shared memory and start (and load) every worker."""
        if self.started:
            if tuple(frame_shape) != self._frame_shape:
                raise ValueError(f"frames are {frame_shape}, the pipeline was started for "
                                 f"{self._frame_shape}")
            return
        from aip.ring import ResultRing, SlotTable, slot_arrays

        if len(frame_shape) != 3 or frame_shape[2] != 3:
            raise ValueError(f"frames must be HxWx3 (BGR), got shape {frame_shape}")
        self._frame_shape = (int(frame_shape[0]), int(frame_shape[1]), 3)
        dtype = result_dtype(self.max_detections)
        self._record = np.zeros(4 * self.n_slots, dtype)
        try:
            self._table = SlotTable.create(n_slots=self.n_slots, slot_bytes=int(np.prod(frame_shape)))
            self._ring = ResultRing.create(
                capacity=1 << max(4, math.ceil(math.log2(2 * self.n_slots))),
                record_size=dtype.itemsize,
                max_producers=len(self.specs),
            )
            self._frames = slot_arrays(self._table, self._frame_shape)
            # one export for all workers of a spec, before they start
            self.specs = [prepare(spec) for spec in self.specs]
            context = mp.get_context("spawn")
            self._events = context.Queue()
            for index, (spec, label) in enumerate(zip(self.specs, self.labels)):
                config = WorkerConfig(
                    worker_id=index, spec=spec, table_name=self._table.name,
                    ring_name=self._ring.name, frame_shape=self._frame_shape,
                    max_detections=self.max_detections, conf=self.conf, iou=self.iou,
                )
                process = context.Process(target=worker_main, args=(config, self._events),
                                          name=f"aip-worker-{label}", daemon=True)
                process.start()
                self._workers.append(_Worker(index, label, spec, process))
            self._wait_until_ready()
        except BaseException:
            self.close()
            raise

    def _wait_until_ready(self) -> None:
        waiting = {w.index for w in self._workers}
        deadline = time.monotonic() + self.start_timeout_s
        while waiting:
            try:
                kind, index, payload = self._events.get(timeout=0.2)
            except queue.Empty:
                for worker in self._workers:
                    if worker.index in waiting and not worker.process.is_alive():
                        raise WorkerError(f"worker {worker.label} died while starting "
                                          f"(exit code {worker.process.exitcode})",
                                          worker=worker.index) from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"workers {sorted(waiting)} not ready after "
                                       f"{self.start_timeout_s:.0f} s") from None
                continue
            if kind == "error":
                raise WorkerError(f"worker {self.labels[index]} failed to start:\n{payload}", worker=index)
            self._workers[index].device = payload
            waiting.discard(index)

    def close(self) -> None:
        """Stop the workers and remove the shared memory. Idempotent."""
        if self._table is not None:
            self._table.shutdown()
        if self._ring is not None:
            self._ring.shutdown()
        for worker in self._workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
        self._workers = []
        self._frames = []
        if self._events is not None:
            self._events.close()
            self._events.join_thread()
            self._events = None
        for segment in (self._table, self._ring):
            if segment is not None:
                segment.close()
                segment.unlink()
        self._table = self._ring = None

    # ---- workers' health -----------------------------------------------------

    def _drain_events(self) -> None:
        while True:
            try:
                kind, index, payload = self._events.get_nowait()
            except (queue.Empty, OSError, ValueError):
                return
            if kind == "error":
                self._errors[index] = payload

    def _check_workers(self, scheduler: Scheduler | None) -> None:
        from aip.ring import HINT_ANY

        self._kill_stalled()
        for worker in self._workers:
            if not worker.alive or worker.process.is_alive():
                continue
            worker.alive = False
            self._drain_events()
            reason = self._errors.get(worker.index, f"exit code {worker.process.exitcode}")
            log.warning("worker %s died (%s); its frames go to the others", worker.label,
                        reason.strip().splitlines()[-1])
            self._table.reclaim(worker.index, HINT_ANY)
            self._table.retarget(worker.index, HINT_ANY)
            if scheduler is not None:
                scheduler.mark_dead(worker.index)
        if not any(w.alive for w in self._workers):
            self._drain_events()
            details = "\n".join(f"--- {self.labels[i]}:\n{text}" for i, text in self._errors.items())
            raise WorkerError("every worker died" + (f":\n{details}" if details else ""))

    def _kill_stalled(self) -> None:
        """A worker that holds one frame past ``stall_timeout_s`` is hung
        (a driver, a deadlock): kill it, so that its frames go to the others."""
        now = time.perf_counter_ns()  # the SlotTable stamps with the same clock
        limit_ns = self.stall_timeout_s * 1e9
        for slot in range(self.n_slots):
            info = self._table.slot_info(slot)
            owner = info["owner"]
            if info["state"] != "READING" or owner is None or now - info["t_claim_ns"] < limit_ns:
                continue
            worker = self._workers[owner]
            if worker.alive and worker.process.is_alive():
                log.warning("worker %s has held frame %d for over %.0f s: killing it", worker.label,
                            info["frame_id"], self.stall_timeout_s)
                worker.process.kill()
                worker.process.join(timeout=5)

    # ---- results ---------------------------------------------------------------

    def _receive(self, timeout: float) -> np.ndarray:
        assert self._record is not None
        n = self._ring.get_many(self._record, timeout=timeout)
        return self._record[:n]

    # ---- the run -----------------------------------------------------------------

    def run(
        self, source: Iterable[Any], *, max_frames: int | None = None
    ) -> Iterator[FrameResult | Gap]:
        """Feed ``source`` through the workers; yield results in frame order.

        ``source`` yields BGR uint8 frames (H, W, 3), or ``(frame,
        capture_time_ns)`` pairs. Dropped frames come out as ``Gap``.
        The pipeline starts on the first frame's shape if not started yet.
        """
        frames = iter(source)
        first = next(frames, None)
        if first is None:
            return
        frame, _ = _split(first)
        self.start(frame.shape)
        scheduler = self.scheduler = make_scheduler(self.mode, self.weights, self.seed)
        metrics = self.metrics = Metrics(ideal_fps=self.calibration.ideal_fps if self.calibration else None)
        for worker in self._workers:
            if not worker.alive:
                scheduler.mark_dead(worker.index)
        # Slots carry ids unique over the pipeline's life (calibration and
        # earlier runs used some); results carry ids counted from this run's
        # first frame.
        base = self._next_frame_id
        reorder: ReorderBuffer[FrameResult] = ReorderBuffer(first_frame_id=0, capacity=1 << 16)
        outstanding: dict[int, _Outstanding] = {}
        pending: Any = first
        period_ns = int(1e9 / self.target_fps) if self.target_fps else 0
        start_ns = time.perf_counter_ns()
        cpu_start = time.process_time()
        next_health = 0.0
        ingested = 0
        waiting_for = -1

        def release() -> Iterator[FrameResult | Gap]:
            now = time.perf_counter_ns()
            for item in reorder.release_ready():
                if isinstance(item, FrameResult):
                    done = dataclasses.replace(item, t_done_ns=now)
                    metrics.record_ordered(done.backend, (now - done.t_ingest_ns) / 1e9,
                                           (now - start_ns) / 1e9)
                    yield done
                else:
                    yield item

        def collect(timeout: float) -> None:
            for record in self._receive(timeout):
                frame_id = int(record["frame_id"])
                info = outstanding.pop(frame_id, None)
                if info is None:
                    continue  # a reclaimed frame done twice: the first result counts
                worker = int(record["worker"])
                inference_s = (int(record["t_infer_end_ns"]) - int(record["t_infer_start_ns"])) / 1e9
                metrics.record_processed(self.labels[worker], inference_s)
                scheduler.observe(worker, inference_s)
                n = int(record["n_detections"])
                reorder.push(frame_id - base, FrameResult(
                    frame_id=frame_id - base, backend=self.labels[worker], worker=worker,
                    detections=record["detections"][:n].copy(),
                    t_capture_ns=info.t_capture_ns, t_ingest_ns=info.t_ingest_ns,
                    t_infer_start_ns=int(record["t_infer_start_ns"]),
                    t_infer_end_ns=int(record["t_infer_end_ns"]), t_done_ns=0, frame=info.frame,
                ))

        def drop(frame_id: int) -> None:
            metrics.frames_dropped += 1
            reorder.mark_gap(frame_id - base, "dropped")

        try:
            while True:
                collect(0)
                yield from release()
                if time.monotonic() >= next_health:
                    self._check_workers(scheduler)
                    next_health = time.monotonic() + HEALTH_CHECK_S

                if pending is None and (max_frames is None or ingested < max_frames):
                    pending = next(frames, None)
                if pending is None or (max_frames is not None and ingested >= max_frames):
                    if not outstanding:
                        break
                    collect(IDLE_WAIT_S)
                    continue

                if period_ns:  # pacing: not before the frame's due time
                    wait_ns = start_ns + ingested * period_ns - time.perf_counter_ns()
                    if wait_ns > 0:
                        collect(min(wait_ns / 1e9, IDLE_WAIT_S))
                        continue

                frame, capture_ns = _split(pending)
                if frame.shape != self._frame_shape:
                    raise ValueError(f"frame {self._next_frame_id - base} is {frame.shape}, the stream "
                                     f"started at {self._frame_shape}: resize it in the source")
                frame_id = self._next_frame_id
                slot = self._free_slot()
                if slot is None and self.on_full == "block":
                    if waiting_for != frame_id:  # one wait counted per frame that had to wait
                        metrics.buffer_full_waits += 1
                        waiting_for = frame_id
                    slot = self._wait_free_slot()
                    if slot is None:
                        continue  # results to drain first, or none freed yet
                if slot is None:
                    dropped = self._table.drop_oldest() if self.on_full == "drop-oldest" else None
                    if dropped is None:  # drop-newest, or nothing unclaimed to drop
                        metrics.frames_generated += 1
                        ingested += 1
                        self._next_frame_id += 1
                        pending = None
                        drop(frame_id)
                        continue
                    slot, old_frame_id = dropped
                    try:
                        del outstanding[old_frame_id]
                        drop(old_frame_id)
                    except BaseException:
                        self._abort_slot(slot)
                        raise

                # The slot is WRITING and ours until publish: anything that
                # interrupts (Ctrl-C included) must hand it back, or it is
                # lost to the ring for the rest of the run.
                try:
                    t_ingest = time.perf_counter_ns()
                    np.copyto(self._frames[slot], frame)
                    hint = scheduler.next_hint(frame_id)
                    outstanding[frame_id] = _Outstanding(
                        capture_ns or t_ingest, t_ingest, frame.copy() if self.keep_frames else None)
                    self._table.publish(slot, frame_id, hint)
                except BaseException:
                    outstanding.pop(frame_id, None)
                    self._abort_slot(slot)
                    raise
                metrics.frames_generated += 1
                metrics.frames_assigned += 1
                ingested += 1
                self._next_frame_id += 1
                pending = None
            yield from release()
        finally:
            if outstanding:  # the caller stopped early: let the workers finish
                self._discard(outstanding)
            metrics.wall_time_s = (time.perf_counter_ns() - start_ns) / 1e9
            metrics.manager_cpu_s = time.process_time() - cpu_start

    def _abort_slot(self, slot: int) -> None:
        """Hand back a slot taken for writing and not published."""
        from aip.ring import RingError

        try:
            self._table.abort(slot)
        except RingError:
            pass  # published after all, or the table is gone: nothing to hand back

    def _free_slot(self) -> int | None:
        try:
            return int(self._table.acquire_free(timeout=0))
        except TimeoutError:
            return None

    def _wait_free_slot(self) -> int | None:
        """Sleep until a slot frees up, unless results are waiting to be drained.

        Workers put their result before they release the slot, so a worker
        blocked on a full ResultRing frees nothing: drain first.
        """
        if len(self._ring):
            return None
        try:
            return int(self._table.acquire_free(timeout=FREE_WAIT_S))
        except TimeoutError:
            return None

    def _discard(self, outstanding: dict[int, _Outstanding]) -> None:
        deadline = time.monotonic() + 30
        while outstanding and time.monotonic() < deadline:
            for record in self._receive(IDLE_WAIT_S):
                outstanding.pop(int(record["frame_id"]), None)
            self._check_workers(None)

    # ---- calibration -------------------------------------------------------------

    def calibrate(
        self,
        frame: np.ndarray | None = None,
        *,
        seconds: float = 2.0,
        warmup_frames: int = 2,
        refresh: bool = False,
        cache_path: Any = None,
        model: str | None = None,
    ) -> CalibrationResult:
        """Measure each backend alone and all together; set integer weights.

        Throughput is measured on ``frame`` (default: a random 640x480 frame,
        or the started shape), ``warmup_frames`` per worker first, then for
        ``seconds`` per phase. Weights come from the together figures (the
        backends share memory bandwidth and power in production too). The
        result is cached by model, backends, input size and machine; pass
        ``refresh=True`` to measure again.
        """
        if frame is None:
            shape = self._frame_shape or (480, 640, 3)
            frame = np.random.default_rng(self.seed).integers(0, 256, shape, dtype=np.uint8)
        self.start(frame.shape)
        key = CalibrationKey(
            model=model or _model_name(self.specs),
            backends=frozenset(f"{label}={spec.options}" for label, spec in zip(self.labels, self.specs)),
            input_size=(int(frame.shape[0]), int(frame.shape[1])),
        )
        by_label = {f"{label}={spec.options}": i for i, (label, spec) in enumerate(zip(self.labels, self.specs))}

        def alone(name: str) -> float:
            return self._throughput(frame, [by_label[name]], seconds, warmup_frames)[by_label[name]]

        def together() -> dict[str, float]:
            rates = self._throughput(frame, list(range(len(self.specs))), seconds, warmup_frames)
            return {name: rates[i] for name, i in by_label.items()}

        path = Path(cache_path) if cache_path is not None else None
        result = calibrate(key, alone, together, path=path, refresh=refresh)
        self.calibration = result
        self.weights = [max(int(result.weights.get(name, 0)), 0) for name in by_label]
        return result

    def _throughput(self, frame: np.ndarray, workers: list[int], seconds: float,
                    warmup_frames: int) -> dict[int, float]:
        """Frames/s of each of ``workers`` kept busy together (pull among them)."""
        hint = workers[0] if len(workers) == 1 else None
        from aip.ring import HINT_ANY

        counts = dict.fromkeys(workers, 0)
        warm = dict.fromkeys(workers, 0)
        in_flight = 0
        started_ns = 0
        frame_id = self._next_frame_id
        while True:
            if started_ns and time.perf_counter_ns() - started_ns >= seconds * 1e9:
                break
            slot = self._free_slot() if in_flight < 2 * len(workers) else None
            if slot is not None:
                try:
                    np.copyto(self._frames[slot], frame)
                    self._table.publish(slot, frame_id, hint if hint is not None else HINT_ANY)
                except BaseException:
                    self._abort_slot(slot)
                    raise
                frame_id += 1
                in_flight += 1
                continue
            for record in self._receive(IDLE_WAIT_S):
                in_flight -= 1
                worker = int(record["worker"])
                if warm[worker] < warmup_frames:
                    warm[worker] += 1
                    if not started_ns and min(warm.values()) >= warmup_frames:
                        started_ns = time.perf_counter_ns()
                elif started_ns:
                    counts[worker] += 1
            self._check_workers(None)
        elapsed = (time.perf_counter_ns() - started_ns) / 1e9
        while in_flight > 0:  # let the frames still out finish before the next phase
            in_flight -= len(self._receive(IDLE_WAIT_S))
            self._check_workers(None)
        self._next_frame_id = frame_id
        return {worker: count / elapsed for worker, count in counts.items()}


def _split(item: Any) -> tuple[np.ndarray, int]:
    if isinstance(item, tuple):
        frame, capture_ns = item
        return frame, int(capture_ns)
    return item, 0


def _model_name(specs: Sequence[BackendSpec]) -> str:
    models = {str(spec.options.get("model", spec.name)) for spec in specs}
    return ",".join(sorted(models))


__all__ = ["DROP_POLICIES", "Pipeline", "WorkerError", "BackendUnavailable"]
