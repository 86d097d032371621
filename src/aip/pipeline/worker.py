"""The worker process: claim a frame, run the backend, publish the result.

One process per backend instance, started with ``spawn``. It attaches to the
manager's SlotTable and ResultRing by name, builds and loads its backend
(models never cross a process boundary), then loops:

    claim(target=me) -> read the frame header -> past its deadline? report it
    late -> else preprocess (zero-copy read of the slot) -> infer ->
    postprocess -> put result record -> release(slot)

The result is put before the slot is released, so a frame is never
reported free before its result exists. Frames may differ in size (many
streams): each says its own in the header in front of its pixels
(:mod:`aip.pipeline.protocol`), and the worker keeps one preprocessor per size. A worker that finds its manager
gone exits instead of lingering; any exception is sent to the manager as
traceback text before the process exits non-zero.
"""
from __future__ import annotations

import os
import signal
import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from aip.backends.base import BackendSpec, create
from aip.pipeline.protocol import RESULT_FAILED, RESULT_LATE, RESULT_OK, result_dtype

# How long a blocked claim or put waits before checking that the manager
# still exists: the bound on how long an orphaned worker can linger.
PARENT_CHECK_S = 0.5


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker process needs; picklable."""

    worker_id: int
    spec: BackendSpec
    table_name: str
    ring_name: str
    max_frame_shape: tuple[int, int, int]
    max_detections: int = 100
    conf: float = 0.25
    iou: float = 0.7
    max_attempts: int = 2  # workers a frame may fail in before it is given up


def worker_main(config: WorkerConfig, events: Any) -> None:
    """Process entry point: run, and report any failure as text."""
    from aip.vision.models import RandomWeightsWarning

    # The manager said it once when it prepared the model; not once per worker.
    warnings.filterwarnings("ignore", category=RandomWeightsWarning)
    # Ctrl-C and a service manager's SIGTERM reach the whole process group:
    # the manager handles them, drains, and shuts the workers down through
    # the SlotTable, so they finish the frames in flight first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        run_worker(config, events)
    except BaseException:
        events.put(("error", config.worker_id, traceback.format_exc()))
        raise SystemExit(1) from None


def run_worker(config: WorkerConfig, events: Any) -> None:
    from aip.pipeline.protocol import SlotFrames
    from aip.ring import Closed, ResultRing, SlotTable

    table = SlotTable.attach(config.table_name)
    ring = ResultRing.attach(config.ring_name)
    backend = create(config.spec)
    backend.load()
    frames = SlotFrames(table, config.max_frame_shape)
    infer = _Inference(backend, config)
    # One frame (and one full batch) through the whole path before reporting
    # ready: the first call compiles (or loads from cache) the Numba kernels,
    # up to a second or so that must not land on a real frame's latency.
    infer([np.zeros(config.max_frame_shape, np.uint8)] * infer.batch)
    served = _Served(config, events, table, ring, backend)
    events.put(("ready", config.worker_id, backend.device))
    try:
        if getattr(backend, "requests_in_flight", 1) > 1 and infer.batch == 1 and backend.wants_tensor:
            _serve_in_flight(backend, infer, table, frames, served)
        else:
            _serve_batches(infer, table, frames, served, BatchWait(config.spec.options.get("max_wait_ms")))
    except Closed:
        return
    finally:
        frames.release()
        backend.close()
        ring.close()
        table.close()


class _Served:
    """How a worker answers for each frame it claimed: a result record, or
    another attempt by another worker."""

    def __init__(self, config: WorkerConfig, events: Any, table: Any, ring: Any, backend: Any) -> None:
        self.config = config
        self.events = events
        self.table = table
        self.ring = ring
        self.backend = backend
        self.me = config.worker_id
        self.parent = os.getppid()
        self.record = np.zeros((), result_dtype(config.max_detections))
        self.record["worker"] = config.worker_id

    def manager_gone(self) -> bool:
        return os.getppid() != self.parent

    def report(self, slot: int, header: Any, status: int, detections: Any, start: int,
               end: int = 0, size: int = 1) -> None:
        """Put the frame's result record, then free its slot (never the other way round)."""
        from aip.ring import SlotStateError

        record, table = self.record, self.table
        n = 0 if detections is None else min(len(detections), self.config.max_detections)
        if n:
            record["detections"][:n] = detections[:n]
        info = table.slot_info(slot)
        record["status"] = status
        record["frame_id"] = info["frame_id"]
        record["stream"] = header["stream"][0]
        record["stream_frame_id"] = header["stream_frame_id"][0]
        record["t_capture_ns"] = header["t_capture_ns"][0]
        record["t_publish_ns"] = info["t_publish_ns"]
        record["t_claim_ns"] = info["t_claim_ns"]
        record["t_infer_start_ns"] = start
        record["t_infer_end_ns"] = end or time.perf_counter_ns()
        record["batch_size"] = size
        record["n_detections"] = n
        _put(self.ring, record.tobytes(), self.parent)
        self.backend.after_result()
        try:
            table.release(slot, self.me)
        except SlotStateError:
            pass  # reclaimed meanwhile: the manager drops the duplicate

    def failed(self, slot: int, header: Any, start: int) -> None:
        """A frame raised: another worker tries it, unless it has had
        ``max_attempts``; then it is reported failed."""
        from aip.ring import ANY_WORKER

        header["attempts"] += 1
        given_up = int(header["attempts"][0]) >= self.config.max_attempts
        self.events.put(("frame_error", self.me, (int(header["stream"][0]), int(header["stream_frame_id"][0]),
                                                  given_up, traceback.format_exc())))
        if given_up:
            self.report(slot, header, RESULT_FAILED, None, start)
        elif self.table.take_from(slot, self.me):
            # Back to READY, for any worker: only this slot, not the rest of a batch.
            self.table.publish(slot, self.table.frame_id(slot), ANY_WORKER)


def _serve_batches(infer: _Inference, table: Any, frames: Any, served: _Served, waiter: BatchWait) -> None:
    """Claim a frame (and, batching, up to a batch more), run them, report each."""
    from aip.ring import Closed

    me = served.me
    while True:
        try:
            slots = [table.claim(me, me, timeout=PARENT_CHECK_S)]
        except TimeoutError:
            if served.manager_gone():
                return
            continue
        except Closed:
            return
        if infer.batch > 1:
            waiter.arrived(table.slot_info(slots[0])["t_publish_ns"])
            more = _fill_batch(table, me, infer.batch - 1, waiter.wait_s())
            for slot in more:
                waiter.arrived(table.slot_info(slot)["t_publish_ns"])
            slots += more
        start = time.perf_counter_ns()
        todo = []
        for slot in slots:
            header, image = frames.frame(slot)
            deadline = int(header["deadline_ns"][0])
            if deadline and start > deadline:
                served.report(slot, header, RESULT_LATE, None, start)
            else:
                todo.append((slot, header, image))
        if todo:
            _run_batch(infer, todo, served, start)
            waiter.observe((time.perf_counter_ns() - start) / 1e9)


def _run_batch(infer: _Inference, todo: list[tuple[int, Any, np.ndarray]], served: _Served, start: int) -> None:
    """One inference call for the batch; when it raises, each frame alone
    (which one failed?), so that one bad frame costs only itself."""
    try:
        results = infer([image for _, _, image in todo])
    except Exception:  # noqa: BLE001 - which frame? try them one by one
        for slot, header, image in todo:
            try:
                [detections] = infer([image])
            except Exception:  # noqa: BLE001 - one frame's failure, not the worker's
                served.failed(slot, header, start)
                continue
            served.report(slot, header, RESULT_OK, detections, start)
        return
    end = time.perf_counter_ns()
    for (slot, header, _), detections in zip(todo, results):
        served.report(slot, header, RESULT_OK, detections, start, end, len(todo))


# With requests in flight and a free one, how long the worker waits for one
# to finish before it looks for another frame to claim (a poll, not a spin).
HARVEST_POLL_S = 0.002


def _serve_in_flight(backend: Any, infer: _Inference, table: Any, frames: Any, served: _Served) -> None:
    """Keep ``backend.requests_in_flight`` requests busy: claim a frame
    whenever a request is free, report each as soon as its request finishes
    (out of order: the manager puts every stream back in order)."""
    me, report = served.me, served.report
    count = int(backend.requests_in_flight)
    # One input tensor per request: each stays untouched until its request is done.
    tensors = [np.empty((1, 3, *backend.input_hw), backend.input_dtype) for _ in range(count)]
    free = list(range(count))
    flying: dict[int, tuple[int, Any, Any, int]] = {}  # request -> slot, header, params, start
    while True:
        while free:
            try:
                slot = table.claim(me, me, timeout=0 if flying else PARENT_CHECK_S)
            except TimeoutError:
                if not flying and served.manager_gone():
                    return
                break
            start = time.perf_counter_ns()
            header, image = frames.frame(slot)
            deadline = int(header["deadline_ns"][0])
            if deadline and start > deadline:
                report(slot, header, RESULT_LATE, None, start)
                continue
            request = free.pop()
            try:
                params = infer.prepare(image, tensors[request][0])
                backend.submit(tensors[request], request)
            except Exception:  # noqa: BLE001 - this frame's failure, not the worker's
                free.append(request)
                served.failed(slot, header, start)
                continue
            flying[request] = (slot, header, params, start)
        if not flying:
            continue
        for request, output in backend.finished(HARVEST_POLL_S if free else PARENT_CHECK_S):
            slot, header, params, start = flying.pop(request)
            free.append(request)
            if isinstance(output, BaseException):
                try:
                    raise output
                except BaseException:  # noqa: BLE001 - re-raised to record its traceback
                    served.failed(slot, header, start)
                continue
            report(slot, header, RESULT_OK, infer.detections(output, params), start)


def _fill_batch(table: Any, me: int, more: int, wait_s: float) -> list[int]:
    """Claim up to ``more`` frames meant for this worker, waiting at most
    ``wait_s`` after the first one for them to come."""
    got: list[int] = []
    deadline = time.perf_counter() + wait_s
    while len(got) < more:
        try:
            got.append(int(table.claim(me, me, timeout=max(0.0, deadline - time.perf_counter()))))
        except TimeoutError:
            break
    return got


class BatchWait:
    """How long a batching worker waits for its batch to fill after the first frame.

    ``max_wait_ms`` given: that. Else it adapts, as DeepStream's push timeout
    and Roboflow's adaptive window do: at most half the measured service time
    of a batch (waiting longer costs more latency than the batch saves), at
    most AUTO_MAX_WAIT_S, and nothing while frames come further apart than
    that (measured from their publish times: the batch would not fill, and
    waiting would only add latency).
    """

    AUTO_MAX_WAIT_S = 0.05
    ALPHA = 0.2  # EWMA weight of the newest measurement

    def __init__(self, max_wait_ms: Any = None) -> None:
        self.fixed_s = None if max_wait_ms is None else max(float(max_wait_ms), 0.0) / 1e3
        self.service_s: float | None = None  # one batch's, smoothed
        self.gap_s: float | None = None  # between frames meant for this worker, smoothed
        self._last_publish_ns = 0

    def arrived(self, publish_ns: int) -> None:
        """A frame meant for this worker was published at ``publish_ns``."""
        if self._last_publish_ns and publish_ns > self._last_publish_ns:
            gap = (publish_ns - self._last_publish_ns) / 1e9
            self.gap_s = gap if self.gap_s is None else self.gap_s + self.ALPHA * (gap - self.gap_s)
        self._last_publish_ns = max(self._last_publish_ns, publish_ns)

    def wait_s(self) -> float:
        if self.fixed_s is not None:
            return self.fixed_s
        if self.service_s is None:
            return 0.0
        budget = min(0.5 * self.service_s, self.AUTO_MAX_WAIT_S)
        return 0.0 if self.gap_s is not None and self.gap_s > budget else budget

    def observe(self, service_s: float) -> None:
        """One batch took ``service_s`` from its first claim to its last result."""
        self.service_s = (service_s if self.service_s is None
                          else self.service_s + self.ALPHA * (service_s - self.service_s))


def _put(ring: Any, record: bytes, parent: int) -> None:
    from aip.ring import Full

    while True:
        try:
            ring.put(record, timeout=PARENT_CHECK_S)
            return
        except Full:
            if os.getppid() != parent:
                raise SystemExit(0) from None


class _Inference:
    """frames -> one (K, 6) detections array per frame, in frame coordinates,
    through one inference call for the whole batch."""

    def __init__(self, backend: Any, config: WorkerConfig) -> None:
        from aip.vision.postprocess import postprocess
        from aip.vision.preprocess import Preprocessor

        self.backend = backend
        self.config = config
        self._postprocess = postprocess
        self._preprocessor_class = Preprocessor
        self.batch = max(1, int(config.spec.options.get("batch", 1)))
        self._preprocessors: dict[tuple[int, int], Any] = {}  # one per frame size seen
        # The input tensor, allocated once for the largest batch; n frames use its first n.
        self._tensor = (np.empty((self.batch, 3, *backend.input_hw), backend.input_dtype)
                        if backend.wants_tensor else None)

    def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
        if self._tensor is None:
            # A backend that takes raw frames (sim) is called once per batch,
            # with its first frame: one service time for the whole batch.
            self.backend.infer(images[0])
            return [self.backend.frame_detections(image) for image in images]
        tensor = self._tensor[: len(images)]
        params = [self.prepare(image, tensor[i]) for i, image in enumerate(images)]
        raw = self.backend.infer(tensor)
        return [self.detections(raw[i : i + 1], param) for i, param in enumerate(params)]

    def prepare(self, image: np.ndarray, out: np.ndarray) -> Any:
        """Letterbox ``image`` straight into ``out`` (one frame of an input tensor)."""
        frame_hw = (int(image.shape[0]), int(image.shape[1]))
        preprocessor = self._preprocessors.get(frame_hw)
        if preprocessor is None:
            preprocessor = self._preprocessors[frame_hw] = self._preprocessor_class(
                (*frame_hw, 3), self.backend.input_hw, self.backend.input_dtype)
        preprocessor.into(image, out)  # no copy
        return frame_hw, preprocessor.params

    def detections(self, raw: np.ndarray, param: Any) -> np.ndarray:
        """One frame's raw head output -> its (K, 6) detections in frame coordinates."""
        frame_hw, letterbox = param
        config = self.config
        return self._postprocess(raw, frame_hw, letterbox, config.conf, config.iou,
                                 max_det=config.max_detections)
