"""The worker pool: the shared memory, one process per backend, their health.

Knows workers and slots, nothing of streams. The run loop asks it for
results (:meth:`WorkerPool.receive`) and to look after the workers
(:meth:`WorkerPool.check`):

- a worker that died has its frames reclaimed and re-targeted to any live
  worker; one that holds a frame past ``stall_timeout_s`` is killed and
  treated the same;
- a frame that killed ``max_attempts`` workers (a poison frame) is taken out
  instead and reported as failed, so that it cannot kill them all;
- with ``restart_workers``, a dead worker is started again after a back-off,
  at most ``max_restarts_per_minute`` times a minute; it rejoins the
  schedule when it reports ready.
"""
from __future__ import annotations

import logging
import math
import multiprocessing as mp
import queue
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aip.backends.base import BackendSpec, prepare
from aip.errors import EXIT_BACKEND, EXIT_RUNTIME, AipError
from aip.pipeline.protocol import SlotFrames, check_frame_shape, result_dtype, slot_bytes_for
from aip.pipeline.worker import WorkerConfig, worker_main

log = logging.getLogger("aip.pipeline")


class WorkerError(AipError, RuntimeError):
    """A worker failed; the message carries its traceback.

    ``worker`` is the index (into the pipeline's backends) of the worker that
    failed to start, when the error is about one; else None. A worker that
    cannot start could not load its backend (runtime, device or model): that
    ends ``aip`` with the backend code.
    """

    def __init__(self, message: str, *, worker: int | None = None) -> None:
        super().__init__(message)
        self.worker = worker
        self.exit_code = EXIT_RUNTIME if worker is None else EXIT_BACKEND


@dataclass
class Worker:
    index: int  # also its target number in the SlotTable and its worker id
    label: str
    spec: BackendSpec
    process: Any
    device: str = "?"
    alive: bool = True
    restarts: deque[float] = field(default_factory=deque)  # monotonic times, last minute
    restart_at: float | None = None  # a restart is due then
    starting: bool = False  # restarted, not ready yet
    retired: bool = False  # left out by the calibration: stopped, never restarted


@dataclass(frozen=True)
class FailedFrame:
    """A frame given up on: it failed (or killed) ``attempts`` workers."""

    stream: int
    stream_frame_id: int
    message: str


# Back-off before restarting a dead worker: doubles with each restart in
# the last minute (a worker that keeps dying is not restarted in a loop).
RESTART_BACKOFF_S = 0.5


def _sweep_stale_segments() -> None:
    """Remove this user's aip segments whose creator is gone (a manager and
    its resource tracker both killed): they would fill /dev/shm run by run."""
    from aip.segments import clean_stale

    try:
        removed = clean_stale()
    except OSError as error:  # a sweep that fails costs nothing but the space
        log.debug("sweeping stale segments failed: %s", error)
        return
    for segment in removed:
        log.info("removed stale segment %s of dead process %d", segment.name, segment.creator_pid)


def batch_of(spec: BackendSpec) -> int:
    """Frames the worker of ``spec`` runs in one inference call."""
    return max(1, int(spec.options.get("batch", 1)))


def default_slots(specs: Sequence[BackendSpec]) -> int:
    # Every worker needs a batch in hand and one waiting so that it never
    # idles between batches; a static cycle needs room for its burstiness.
    return max(16, sum(2 * batch_of(spec) + 2 for spec in specs))


@dataclass(frozen=True)
class PoolOptions:
    """How the workers run: what a :class:`~aip.pipeline.Pipeline` hands its pool."""

    n_slots: int = 16
    max_detections: int = 100
    conf: float = 0.25
    iou: float = 0.7
    start_timeout_s: float = 600.0  # a first export or compile can take minutes
    stall_timeout_s: float = 60.0  # a worker holding one frame this long is killed
    max_attempts: int = 2  # workers a frame may fail (or kill) before it is given up
    restart_workers: bool = False
    max_restarts_per_minute: int = 3

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.n_slots < 1:
            raise ValueError("n_slots must be >= 1")


class WorkerPool:
    """Slots, a result ring and one worker process per backend spec."""

    def __init__(self, specs: Sequence[BackendSpec], labels: Sequence[str], options: PoolOptions) -> None:
        self.options = options
        self.specs = list(specs)
        self.labels = list(labels)
        self.table: Any = None
        self.ring: Any = None
        self.frames: SlotFrames | None = None
        self.max_frame_shape: tuple[int, int, int] | None = None
        self.workers: list[Worker] = []
        self.errors: dict[int, str] = {}
        self._events: Any = None
        self._records: np.ndarray | None = None

    @property
    def started(self) -> bool:
        return self.table is not None

    @property
    def n_slots(self) -> int:
        return self.options.n_slots

    def alive(self) -> list[int]:
        return [w.index for w in self.workers if w.alive]

    def retire(self, index: int, reason: str) -> None:
        """Stop a worker for good (the calibration found that the others do
        more without it): it takes no frame, its cores go to the rest."""
        from aip.ring import ANY_WORKER

        worker = self.workers[index]
        if worker.retired:
            return
        worker.retired, worker.alive, worker.restart_at = True, False, None
        log.warning("worker %s left out: %s", worker.label, reason)
        worker.process.kill()
        worker.process.join(timeout=5)
        self.table.reclaim(index, ANY_WORKER)  # a frame it held goes to the others
        self.table.retarget(index, ANY_WORKER)

    def start(self, max_frame_shape: tuple[int, int, int]) -> None:
        """Create the shared memory for frames up to ``max_frame_shape`` and
        start (and load) every worker."""
        from aip.ring import ResultRing, SlotTable

        self.max_frame_shape = check_frame_shape(tuple(max_frame_shape))
        _sweep_stale_segments()
        dtype = result_dtype(self.options.max_detections)
        self._records = np.zeros(4 * self.options.n_slots, dtype)
        try:
            self.table = SlotTable.create(
                n_slots=self.options.n_slots, slot_bytes=slot_bytes_for(self.max_frame_shape),
                wake_words=max(64, len(self.specs)))
            self.ring = ResultRing.create(
                capacity=1 << max(4, math.ceil(math.log2(2 * self.options.n_slots))),
                record_size=dtype.itemsize,
                max_producers=len(self.specs),
            )
            self.frames = SlotFrames(self.table, self.max_frame_shape)
            # one export for all workers of a spec, before they start
            self.specs = [prepare(spec) for spec in self.specs]
            self._events = mp.get_context("spawn").Queue()
            for index, (spec, label) in enumerate(zip(self.specs, self.labels)):
                self.workers.append(Worker(index, label, spec, self._spawn(index)))
            self._wait_until_ready()
        except BaseException:
            self.close()
            raise

    def _spawn(self, index: int) -> Any:
        assert self.max_frame_shape is not None
        config = WorkerConfig(
            worker_id=index, spec=self.specs[index], table_name=self.table.name,
            ring_name=self.ring.name, max_frame_shape=self.max_frame_shape,
            max_detections=self.options.max_detections, conf=self.options.conf, iou=self.options.iou,
            max_attempts=self.options.max_attempts,
        )
        process = mp.get_context("spawn").Process(
            target=worker_main, args=(config, self._events),
            name=f"aip-worker-{self.labels[index]}", daemon=True)
        process.start()
        return process

    def _wait_until_ready(self) -> None:
        waiting = {w.index for w in self.workers}
        deadline = time.monotonic() + self.options.start_timeout_s
        while waiting:
            try:
                kind, index, payload = self._events.get(timeout=0.2)
            except queue.Empty:
                for worker in self.workers:
                    if worker.index in waiting and not worker.process.is_alive():
                        raise WorkerError(f"worker {worker.label} died while starting "
                                          f"(exit code {worker.process.exitcode})",
                                          worker=worker.index) from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"workers {sorted(waiting)} not ready after "
                                       f"{self.options.start_timeout_s:.0f} s") from None
                continue
            if kind == "error":
                raise WorkerError(f"worker {self.labels[index]} failed to start:\n{payload}",
                                  worker=index)
            self.workers[index].device = payload
            waiting.discard(index)

    def close(self) -> None:
        """Stop the workers and remove the shared memory. Idempotent."""
        if self.table is not None:
            self.table.shutdown()
        if self.ring is not None:
            self.ring.shutdown()
        for worker in self.workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
        self.workers = []
        if self.frames is not None:
            self.frames.release()
            self.frames = None
        if self._events is not None:
            self._events.close()
            self._events.join_thread()
            self._events = None
        for segment in (self.table, self.ring):
            if segment is not None:
                segment.close()
                segment.unlink()
        self.table = self.ring = None

    # ---- results -------------------------------------------------------------

    def receive(self, timeout: float) -> np.ndarray:
        """The records the workers put, waiting up to ``timeout`` for the first.

        The array is reused by the next call: take what you need first.
        """
        assert self._records is not None
        n = self.ring.get_many(self._records, timeout=timeout)
        return self._records[:n]

    # ---- health --------------------------------------------------------------

    def check(
        self,
        on_dead: Callable[[int], None] | None = None,
        on_failed: Callable[[FailedFrame], None] | None = None,
        on_back: Callable[[int], None] | None = None,
    ) -> None:
        """Kill stalled workers; hand a dead worker's frames to the others
        (or give up on a frame that killed ``max_attempts`` of them); restart
        dead workers when asked to. ``on_dead(index)``, ``on_failed(frame)``
        and ``on_back(index)`` tell the caller.

        Raises :class:`WorkerError` when no worker is left and none will come back.
        """
        from aip.ring import ANY_WORKER

        self._kill_stalled()
        self._drain_events(on_failed, on_back)
        now = time.monotonic()
        for worker in self.workers:
            if worker.retired or worker.process.is_alive():
                continue
            if worker.alive or worker.starting:
                was_alive, worker.alive, worker.starting = worker.alive, False, False
                self._drain_events(on_failed, on_back)
                reason = self.errors.get(worker.index, f"exit code {worker.process.exitcode}")
                last_line = reason.strip().splitlines()[-1] if reason.strip() else reason
                log.warning("worker %s died (%s); its frames go to the others", worker.label, last_line)
                self._give_up_poison(worker, last_line, on_failed)
                self.table.reclaim(worker.index, ANY_WORKER)
                self.table.retarget(worker.index, ANY_WORKER)
                if was_alive and on_dead is not None:
                    on_dead(worker.index)
                if self.options.restart_workers:
                    self._schedule_restart(worker, now)
            elif not worker.alive:
                # A frame published for it in the window between the redirect
                # above and the scheduler hearing of its death would wait for
                # it forever: redirect again on every check while it is down.
                self.table.retarget(worker.index, ANY_WORKER)
            if worker.restart_at is not None and now >= worker.restart_at:
                self._restart(worker, now)
        if not any(w.alive or w.starting or w.restart_at is not None for w in self.workers):
            self._drain_events(on_failed, on_back)
            details = "\n".join(f"--- {self.labels[i]}:\n{text}" for i, text in self.errors.items())
            raise WorkerError("every worker died" + (f":\n{details}" if details else ""))

    def _give_up_poison(self, worker: Worker, reason: str,
                        on_failed: Callable[[FailedFrame], None] | None) -> None:
        """Count one more attempt on each frame the dead worker held; take out
        those that have had ``max_attempts`` (they would kill the next one too)."""
        assert self.frames is not None
        for slot in range(self.options.n_slots):
            info = self.table.slot_info(slot)
            if info["state"] != "READING" or info["owner"] != worker.index:
                continue
            header = self.frames.headers[slot]  # nobody else touches a dead worker's slot
            header["attempts"] += 1
            if int(header["attempts"][0]) < self.options.max_attempts:
                continue
            if self.table.take_from(slot, worker.index):
                failed = FailedFrame(int(header["stream"][0]), int(header["stream_frame_id"][0]),
                                     f"it killed {int(header['attempts'][0])} workers, the last "
                                     f"{worker.label} ({reason})")
                self.table.abort(slot)
                log.warning("frame %d of stream %d given up: %s", failed.stream_frame_id,
                            failed.stream, failed.message)
                if on_failed is not None:
                    on_failed(failed)

    def _schedule_restart(self, worker: Worker, now: float) -> None:
        while worker.restarts and now - worker.restarts[0] > 60:
            worker.restarts.popleft()
        if len(worker.restarts) >= self.options.max_restarts_per_minute:
            log.warning("worker %s died %d times in a minute: not restarting it", worker.label,
                        len(worker.restarts))
            return
        worker.restart_at = now + RESTART_BACKOFF_S * 2 ** len(worker.restarts)

    def _restart(self, worker: Worker, now: float) -> None:
        worker.restart_at = None
        worker.restarts.append(now)
        worker.process.join(timeout=1)
        self.errors.pop(worker.index, None)
        log.warning("restarting worker %s (restart %d in the last minute)", worker.label,
                    len(worker.restarts))
        worker.process = self._spawn(worker.index)
        worker.starting = True

    def _drain_events(self, on_failed: Callable[[FailedFrame], None] | None = None,
                      on_back: Callable[[int], None] | None = None) -> None:
        while True:
            try:
                kind, index, payload = self._events.get_nowait()
            except (queue.Empty, OSError, ValueError):
                return
            if kind == "error":
                self.errors[index] = payload
            elif kind == "ready" and self.workers[index].starting:
                worker = self.workers[index]
                worker.starting, worker.alive, worker.device = False, True, payload
                log.warning("worker %s is back", worker.label)
                if on_back is not None:
                    on_back(index)
            elif kind == "frame_error":
                stream, stream_frame_id, failed, text = payload
                if failed:
                    message = (f"it failed in {self.options.max_attempts} workers, the last "
                               f"{self.labels[index]}: {text.strip().splitlines()[-1]}")
                    log.warning("frame %d of stream %d given up: %s\n%s", stream_frame_id, stream,
                                message, text)
                else:
                    log.warning("frame %d of stream %d failed in worker %s; another one tries "
                                "it:\n%s", stream_frame_id, stream, self.labels[index], text)

    def _kill_stalled(self) -> None:
        """A worker that holds one frame past ``stall_timeout_s`` is hung
        (a driver, a deadlock): kill it, so that its frames go to the others."""
        now = time.perf_counter_ns()  # the SlotTable stamps with the same clock
        limit_ns = self.options.stall_timeout_s * 1e9
        for slot in range(self.options.n_slots):
            info = self.table.slot_info(slot)
            owner = info["owner"]
            if info["state"] != "READING" or owner is None or now - info["t_claim_ns"] < limit_ns:
                continue
            worker = self.workers[owner]
            if worker.alive and worker.process.is_alive():
                log.warning("worker %s has held frame %d for over %.0f s: killing it", worker.label,
                            info["frame_id"], self.options.stall_timeout_s)
                worker.process.kill()
                worker.process.join(timeout=5)
