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
(:mod:`aip.pipeline.frames`), and the worker keeps one preprocessor per size. A worker that finds its manager
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

RESULT_OK = 0
RESULT_LATE = 1  # claimed after its deadline: skipped, not run
RESULT_FAILED = 2  # raised in every worker that tried it (max_attempts): given up

# How long a blocked claim or put waits before checking that the manager
# still exists: the bound on how long an orphaned worker can linger.
PARENT_CHECK_S = 0.5


def result_dtype(max_detections: int) -> np.dtype[Any]:
    """The fixed-size record a worker sends for each frame."""
    return np.dtype(
        [
            ("frame_id", "<u8"),  # the slot's frame id: unique over the pipeline's life
            ("worker", "<u4"),
            ("status", "<u4"),  # RESULT_OK, RESULT_LATE or RESULT_FAILED
            ("n_detections", "<u4"),
            ("stream", "<u4"),  # from the frame's header
            ("stream_frame_id", "<u8"),
            ("t_capture_ns", "<i8"),
            ("t_publish_ns", "<i8"),  # the frame was published into its slot (ingest)
            ("t_claim_ns", "<i8"),  # this worker claimed it
            ("t_infer_start_ns", "<i8"),  # preprocessing starts
            ("t_infer_end_ns", "<i8"),  # postprocessing done
            ("detections", "<f4", (max_detections, 6)),  # x1 y1 x2 y2 score class
        ]
    )


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
    from aip.models import RandomWeightsWarning

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
    from aip.pipeline.frames import SlotFrames
    from aip.ring import ANY_WORKER, Closed, ResultRing, SlotStateError, SlotTable

    parent = os.getppid()
    table = SlotTable.attach(config.table_name)
    ring = ResultRing.attach(config.ring_name)
    backend = create(config.spec)
    backend.load()
    frames = SlotFrames(table, config.max_frame_shape)
    infer_frame = _inference(backend, config)
    # One frame through the whole path before reporting ready: the first call
    # compiles (or loads from cache) the Numba kernels, up to a second or so
    # that must not land on a real frame's latency.
    infer_frame(np.zeros(config.max_frame_shape, np.uint8))
    record = np.zeros((), result_dtype(config.max_detections))
    record["worker"] = config.worker_id
    events.put(("ready", config.worker_id, backend.device))
    try:
        while True:
            try:
                slot = table.claim(config.worker_id, config.worker_id, timeout=PARENT_CHECK_S)
            except TimeoutError:
                if os.getppid() != parent:
                    return  # the manager is gone
                continue
            except Closed:
                return
            start = time.perf_counter_ns()
            header, image = frames.frame(slot)
            deadline = int(header["deadline_ns"][0])
            n = 0
            if deadline and start > deadline:
                record["status"] = RESULT_LATE
            else:
                try:
                    detections = infer_frame(image)
                except Exception:  # noqa: BLE001 - one frame's failure, not the worker's
                    header["attempts"] += 1
                    failed = int(header["attempts"][0]) >= config.max_attempts
                    events.put(("frame_error", config.worker_id,
                                (int(header["stream"][0]), int(header["stream_frame_id"][0]),
                                 failed, traceback.format_exc())))
                    if not failed:
                        # Another worker tries it: back to READY, for anyone.
                        table.reclaim(config.worker_id, ANY_WORKER)
                        continue
                    record["status"] = RESULT_FAILED
                else:
                    record["status"] = RESULT_OK
                    n = min(len(detections), config.max_detections)
                    record["detections"][:n] = detections[:n]
            info = table.slot_info(slot)
            record["frame_id"] = info["frame_id"]
            record["stream"] = header["stream"][0]
            record["stream_frame_id"] = header["stream_frame_id"][0]
            record["t_capture_ns"] = header["t_capture_ns"][0]
            record["t_publish_ns"] = info["t_publish_ns"]
            record["t_claim_ns"] = info["t_claim_ns"]
            record["t_infer_start_ns"] = start
            record["t_infer_end_ns"] = time.perf_counter_ns()
            record["n_detections"] = n
            _put(ring, record.tobytes(), parent)
            backend.after_result()
            try:
                table.release(slot, config.worker_id)
            except SlotStateError:
                pass  # reclaimed meanwhile: the manager drops the duplicate
    except Closed:
        return
    finally:
        frames.release()
        backend.close()
        ring.close()
        table.close()


def _put(ring: Any, record: bytes, parent: int) -> None:
    from aip.ring import Full

    while True:
        try:
            ring.put(record, timeout=PARENT_CHECK_S)
            return
        except Full:
            if os.getppid() != parent:
                raise SystemExit(0) from None


def _inference(backend: Any, config: WorkerConfig) -> Any:
    """frame -> (K, 6) detections in frame coordinates."""
    if not backend.wants_tensor:
        empty = np.zeros((0, 6), np.float32)

        def run_raw(frame: np.ndarray) -> np.ndarray:
            backend.infer(frame)
            return empty

        return run_raw

    from aip.postprocess import postprocess
    from aip.preprocess import Preprocessor

    preprocessors: dict[tuple[int, int], Preprocessor] = {}  # one per frame size seen

    def run_model(frame: np.ndarray) -> np.ndarray:
        frame_hw = (int(frame.shape[0]), int(frame.shape[1]))
        preprocessor = preprocessors.get(frame_hw)
        if preprocessor is None:
            preprocessor = preprocessors[frame_hw] = Preprocessor(
                (*frame_hw, 3), backend.input_hw, backend.input_dtype)
        tensor = preprocessor(frame)
        raw = backend.infer(tensor)
        return postprocess(
            raw, frame_hw, preprocessor.params, config.conf, config.iou,
            max_det=config.max_detections,
        )

    return run_model
