"""``python -m aip.bench streams``: many live streams in one pipeline, one run.

Scenarios, side by side:

- ``sim``: 16 streams paced at 30 FPS each (480 FPS offered) of a 640x480
  frame, on two ``sim`` workers of 2.5 ms (a calibrated capacity near 800
  FPS), policy ``drop-oldest``. It measures the manager, not inference.
- ``real-under`` and ``real-over``: ``onnx`` workers (one thread each, one
  per core) on N live MJPEG-over-HTTP cameras (:mod:`aip.bench.mjpeg`: local
  servers in a process of their own, serving the sample video's frames
  live), offered about 60 % and 200 % of the pool's capacity, calibrated
  just before each (other load on the machine moves it); ``drop-oldest``
  under capacity, ``latest`` overloaded.
- ``ultralytics``: its own multi-stream mode on the same cameras (the same
  camera processes, right after aip), model and input size: a ``.streams``
  file through ``YOLO(...).predict(stream=True, stream_buffer=False)``
  (``LoadStreams``), in a process of its own (its import changes global
  settings). Cameras, not files: ``LoadStreams`` reads a video file to its
  end at once and keeps only the latest frame.

One definition of latency for every camera row, whatever the system: from
when the camera produced the frame (each frame carries its number in its
pixels; the camera process records when it produced each number) to when
the system handed its result to the caller. ultralytics exposes no capture
time, so this is the only figure both share; it includes the camera's HTTP
transport and the JPEG decode. aip's own capture -> result figure
(``pipeline_p99_ms``, from when OpenCV returned the frame) is in the JSON.
For ``sim`` the capture time is when the stream's source gave the frame.

Every figure comes from the results delivered in one window per scenario:
``--warmup`` seconds after the first result, for ``--seconds``.
``delivered_fps``: results per second; ``drop_pct`` / ``late_pct``: frames
the source produced in the window (per stream, the first to the last frame
number delivered) that got no result / were skipped as late (no
``max_age_ms`` is set here, so none is);
``fairness``: the slowest stream's delivered FPS over the fastest's;
``manager_cpu_pct``: aip's manager process (its run loop and the stream
readers, which decode the JPEGs) as % of one core over the run.

Targets (the summary says met / NOT met for each): sim: no drop, p99 <= 60
ms, manager CPU <= 25 % of a core; under capacity: no drop, p99 <= 3x the
calibrated service time (one worker's time per frame with every worker
busy); overloaded: p99 <= 3x that, fairness >= 0.8, delivered >= 95 % of
the calibrated capacity; against ultralytics on the same cameras: a lower
p99, and, overloaded (under capacity the cameras' rate caps both), at
least 2x its delivered FPS.

Many cameras on one box (not in the default list: the sweep takes minutes;
``--scenarios sweep`` runs all three of these, or name them one by one):

- ``cameras``: for each N of ``--camera-counts`` (default 20,50,100), a row
  ``cameras-N``: N identical MJPEG cameras (:class:`~aip.bench.mjpeg.MjpegCameras`)
  offering together ``SWEEP_LOAD`` (1.5x) the pool's capacity, calibrated
  just before each row; aip with ``onnx`` workers, policy ``latest``.
  Its window is long enough for fairness to mean something: ``max(--seconds,
  SWEEP_FRAMES_PER_CAMERA / (capacity / N))`` (about 20 results per camera at
  the rate each camera can be served, the capacity shared N ways), that
  scaling capped at ``--sweep-max-seconds`` (default 90); and it starts
  ``--warmup`` seconds after every camera has delivered a first result
  (the connections of N cameras take a while). aip's results are taken
  for ``SETTLE_TIMEOUT_S`` (30 s) at most waiting for that; if some camera
  never delivers, the window starts from the first result instead (and
  that camera's nothing makes the fairness 0).
- ``cameras-ultralytics``: ultralytics' ``LoadStreams`` on the same cameras
  as the smallest count (default 20), right after aip on them, the same
  window: the row ``ultralytics cameras-20``.
- ``capacity``: the most cameras at ``CAPACITY_CAMERA_FPS`` (2 FPS) each that
  aip serves with no drop and a p95 age <= ``CAPACITY_P95_MS`` (500 ms).
  It tries ``floor(capacity / 2 FPS)`` cameras first, then steps up (x1.25)
  while they are served, down (/1.25) while not, and bisects once it has
  both, ``--capacity-tries`` (default 4) tries of ``--capacity-seconds``
  (default 12) each (:func:`search_capacity`); the row is the largest N that
  met both conditions, with its figures (every try is in the JSON).

The sweep's rows have a table of their own: ``efficiency_pct``: delivered
FPS over the calibrated capacity; ``p50_ms`` / ``p99_ms``: age, camera ->
result as above; ``decode_cpu_pct``: CPU the manager spent decoding the
cameras' frames over the run's wall time, % of a core; ``decode_saved_pct``:
decodes skipped (a frame no slot would take) over decodes skipped plus
done; ``rss_per_stream_kb``: the manager process's resident memory
(``VmRSS``) at the end of the window minus before the streams were added,
per stream (``rss_mb``: the absolute figure); ``shm_per_stream_kb``: the size
of the pipeline's shared-memory segments (slot table and result ring, files
of ``/dev/shm``) per stream (``shm_mb``: in all). Figures the pipeline does
not expose print as ``-``. Targets: fairness >= 0.9, delivered >= 90 % of
the calibrated capacity, p99 age <= 3x the calibrated service time, and aip
delivers more FPS than ultralytics on the same cameras.
"""
from __future__ import annotations

import functools
import itertools
import math
import multiprocessing as mp
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from aip.bench.mjpeg import MjpegCameras
from aip.bench.report import format_table, publish, suite_parser

COLUMNS = ["system", "scenario", "streams", "offered_fps", "delivered_fps", "drop_pct",
           "late_pct", "p50_ms", "p99_ms", "fairness", "manager_cpu_pct"]
# The sweep's table: the camera rows' own figures.
CAMERA_COLUMNS = ["system", "scenario", "streams", "offered_fps", "delivered_fps", "efficiency_pct",
                  "fairness", "p50_ms", "p99_ms", "manager_cpu_pct", "decode_cpu_pct",
                  "rss_per_stream_kb", "shm_per_stream_kb"]
SCENARIOS = ("sim", "sim-tracked", "real-under", "real-over", "ultralytics")  # the default list
SWEEP_SCENARIOS = ("cameras", "cameras-ultralytics", "capacity")
SWEEP_ALIAS = "sweep"  # --scenarios sweep: every one of SWEEP_SCENARIOS
ALL_SCENARIOS = SCENARIOS + SWEEP_SCENARIOS
CAMERA_COUNTS = (20, 50, 100)
SWEEP_LOAD = 1.5  # the cameras offer together this times the calibrated capacity
SWEEP_POLICY = "latest"
SWEEP_FRAMES_PER_CAMERA = 20  # results per camera the window is sized for
SWEEP_MAX_S = 90.0
# How long after the first result the sweep waits for every camera's first
# result; past it, its window starts from the first result (see measure).
SETTLE_TIMEOUT_S = 30.0
CAPACITY_CAMERA_FPS = 2.0
CAPACITY_P95_MS = 500.0
CAPACITY_MAX_DROP_PCT = 0.0
CAPACITY_TRIES = 4
CAPACITY_SECONDS = 12.0
CAPACITY_STEP = 1.25  # the search's factor up or down until it has a pass and a fail
CONF = 1e-4  # as bench yolo: a seeded model's boxes score near 1.6e-4, keep them
IMGSZ = (480, 640)
SIM_STREAMS, SIM_FPS, SIM_LATENCY_S = 16, 30.0, 0.0025
UNDER_LOAD, OVER_LOAD = 0.6, 2.0
# A camera serves this long past the measured window (connecting, model
# loading, the warm-up, winding down); it stops by itself after that.
CAMERA_MARGIN_S = 60.0


@dataclass(frozen=True)
class Delivery:
    """One result as the caller got it."""

    stream: int
    number: int  # the frame's number at its source: a camera's frame, or the stream's frame id
    t_done_ns: int
    latency_ms: float
    pipeline_ms: float | None = None  # aip's own capture -> result
    inference_ms: float | None = None


@dataclass
class Run:
    """What one system delivered in one scenario."""

    deliveries: list[Delivery] = field(default_factory=list)
    late_ns: list[int] = field(default_factory=list)  # when each late gap came out
    unreadable: int = 0  # results whose frame carried no readable stamp
    manager_cpu_pct: float | None = None
    rss_end_bytes: int | None = None  # this process's VmRSS as the results stopped being taken
    errors: list[str] = field(default_factory=list)


def window_start_ns(run: Run, n_streams: int, from_all_streams: bool = False) -> int:
    """When the warm-up starts: the first result, or, ``from_all_streams``,
    when every one of the ``n_streams`` streams had delivered one (the first
    result if some stream never did). ``run`` has deliveries."""
    first = min(d.t_done_ns for d in run.deliveries)
    if not from_all_streams:
        return first
    firsts: dict[int, int] = {}
    for d in run.deliveries:
        if d.t_done_ns < firsts.get(d.stream, d.t_done_ns + 1):
            firsts[d.stream] = d.t_done_ns
    if all(s in firsts for s in range(n_streams)):
        return max(firsts[s] for s in range(n_streams))
    return first


def measure(run: Run, n_streams: int, warmup_s: float, seconds: float, *,
            from_all_streams: bool = False) -> dict[str, Any]:
    """The table's figures over the window ``warmup_s`` after the first result
    (``from_all_streams``: after every stream's first result, see
    :func:`window_start_ns`), ``seconds`` long."""
    if not run.deliveries:
        return {"delivered_fps": 0.0, "window_s": 0.0, "frames": 0, "errors": run.errors}
    last = max(d.t_done_ns for d in run.deliveries)
    start = window_start_ns(run, n_streams, from_all_streams) + int(warmup_s * 1e9)
    end = min(start + int(seconds * 1e9), last)
    window_s = max(end - start, 1) / 1e9
    inside = [d for d in run.deliveries if start <= d.t_done_ns <= end]
    per_stream: dict[int, list[Delivery]] = {s: [] for s in range(n_streams)}
    for d in inside:
        per_stream.setdefault(d.stream, []).append(d)
    expected = 0
    got = 0
    for items in per_stream.values():
        numbers = {d.number for d in items}
        if numbers:
            expected += max(numbers) - min(numbers) + 1
            got += len(numbers)
    late = sum(start <= t <= end for t in run.late_ns)
    missing = max(expected - got, 0)
    fps_per_stream = [len(items) / window_s for items in per_stream.values()]
    latencies = np.array([d.latency_ms for d in inside]) if inside else np.array([math.nan])
    row: dict[str, Any] = {
        "delivered_fps": len(inside) / window_s,
        "drop_pct": 100 * max(missing - late, 0) / expected if expected else None,
        "late_pct": 100 * late / expected if expected else None,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p95_ms": float(np.percentile(latencies, 95)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "fairness": min(fps_per_stream) / max(fps_per_stream) if max(fps_per_stream) > 0 else 0.0,
        "manager_cpu_pct": run.manager_cpu_pct,
        "window_s": window_s,
        "frames": len(inside),
        "stream_fps": fps_per_stream,
    }
    pipeline = [d.pipeline_ms for d in inside if d.pipeline_ms is not None]
    if pipeline:
        row["pipeline_p50_ms"] = float(np.percentile(pipeline, 50))
        row["pipeline_p99_ms"] = float(np.percentile(pipeline, 99))
    inference = [d.inference_ms for d in inside if d.inference_ms is not None]
    if inference:
        row["infer_p50_ms"] = float(np.percentile(inference, 50))
    if run.unreadable:
        row["unreadable_stamps"] = run.unreadable
    if run.errors:
        row["errors"] = run.errors
    return row


# ---- aip ----------------------------------------------------------------------------------

def consume(results: Iterator[Any], stream_index: dict[str, int], stop_after_s: float,
            *, sent: MjpegCameras | None = None, settle: bool = False,
            settle_timeout_s: float = SETTLE_TIMEOUT_S) -> Run:
    """Take a pipeline run's results for ``stop_after_s`` after the first one
    (or until it ends), then close it. With ``sent`` (a :class:`MjpegCameras`),
    frames are numbered by their stamps and timed from their camera. With
    ``settle``, ``stop_after_s`` counts from when every stream of
    ``stream_index`` has delivered a result, waiting ``settle_timeout_s`` at
    most after the first one for that."""
    from aip.bench.mjpeg import read_stamp
    from aip.pipeline import StreamError
    from aip.results import FrameResult

    run = Run()
    deadline: int | None = None
    waiting = set(stream_index.values()) if settle else set()
    try:
        for item in results:
            now = time.perf_counter_ns()
            if deadline is None:  # from the first result or gap: bounded even if none is readable
                deadline = now + int(((settle_timeout_s if waiting else 0.0) + stop_after_s) * 1e9)
            elif now >= deadline:
                break
            stream = stream_index.get(item.stream, -1)
            if isinstance(item, FrameResult):
                latency_ms = item.end_to_end_ms
                number = item.frame_id
                if sent is not None:
                    stamp = read_stamp(item.frame) if item.frame is not None else None
                    frame, sent_ns = (-1, 0) if stamp is None else sent.sent(stream, stamp,
                                                                             item.t_done_ns)
                    if not sent_ns:
                        run.unreadable += 1
                        continue
                    number, latency_ms = frame, (item.t_done_ns - sent_ns) / 1e6
                run.deliveries.append(Delivery(stream, number, item.t_done_ns, latency_ms,
                                               item.end_to_end_ms, item.inference_ms))
                if stream in waiting:
                    waiting.discard(stream)
                    if not waiting:  # every stream is in: the clock starts now
                        deadline = min(deadline, now + int(stop_after_s * 1e9))
            elif item.reason == "late":
                run.late_ns.append(now)
    except StreamError as error:
        run.errors.append(str(error))
    finally:
        run.rss_end_bytes = rss_bytes()  # before the streams stop
        close = getattr(results, "close", None)
        if close is not None:
            close()
    return run


def _paced(frame: np.ndarray, count: int) -> Iterable[np.ndarray]:
    return itertools.repeat(frame, count)


# sim-tracked: each frame's sim detections (a drifting grid), tracked by
# ByteTrack, with one zone and one line per stream: a busy doorway's worth.
TRACKED_BOXES = 8


def run_sim(seconds: float, warmup_s: float, *, streams: int = SIM_STREAMS, fps: float = SIM_FPS,
            workers: int = 2, latency_s: float = SIM_LATENCY_S, mode: str = "pull",
            calibration_s: float = 1.0, tracked: bool = False) -> dict[str, Any]:
    """``streams`` paced streams on ``sim`` workers; the row and its calibration.
    ``tracked``: every stream tracked (ByteTrack) with a zone and a line."""
    from aip.backends import BackendSpec
    from aip.pipeline import Pipeline
    from aip.track import Line, Zone

    frame = np.random.default_rng(0).integers(0, 256, (*IMGSZ, 3), dtype=np.uint8)
    specs = [BackendSpec("sim", {"latency_s": latency_s, "boxes": TRACKED_BOXES if tracked else 0})
             for _ in range(workers)]
    height, width = IMGSZ
    # The first column of sim boxes drifts across x = 31.5 and back every 16 frames.
    edge, bottom = 31.5, float(height)
    regions: dict[str, Any] = ({"track": "bytetrack.yaml", "lines": [Line("door", (edge, 0.0), (edge, bottom))],
                                "zones": [Zone("left", ((0.0, 0.0), (edge, 0.0), (edge, bottom), (0.0, bottom)))]}
                               if tracked else {})
    # Each stream's source ends a little after the window: the run ends by itself.
    count = int(fps * (warmup_s + seconds + 1.0))
    with tempfile.TemporaryDirectory() as tmp, Pipeline(specs, mode=mode, on_full="drop-oldest") as pipeline:
        calibration = pipeline.calibrate(frame, seconds=calibration_s, refresh=True,
                                         cache_path=Path(tmp) / "calibration.json")
        names = [pipeline.add_stream(_paced(frame, count), name=f"sim{i}", fps=fps, **regions)
                 for i in range(streams)]
        run = consume(pipeline.run(), {name: i for i, name in enumerate(names)},
                      warmup_s + seconds + 5.0)
        run.manager_cpu_pct = pipeline.metrics.manager_cpu_pct
        events = sum(sum(v for d in figures["lines"]["door"].values() for v in d.values())
                     for figures in pipeline.tracking.counts().values()) if tracked and pipeline.tracking else None
    row = {"system": "aip", "scenario": "sim-tracked" if tracked else "sim", "streams": streams,
           "offered_fps": streams * fps,
           **({"boxes_per_frame": TRACKED_BOXES, "line_crossings": events} if tracked else {}),
           **measure(run, streams, warmup_s, seconds), "capacity_fps": calibration.ideal_fps,
           "workers": f"{workers} x sim {latency_s * 1e3:g} ms", "policy": "drop-oldest",
           "mode": mode}
    return row


@dataclass
class RealSetup:
    """The ONNX model and the calibrated pool the camera scenarios share."""

    model: Path
    workers: int
    capacity_fps: float
    service_ms: float  # one worker's time per frame with every worker busy (calibrated)
    calibration: dict[str, Any]


def onnx_specs(model: Path, workers: int) -> list[Any]:
    from aip.backends import BackendSpec

    # One thread each, one worker per core; idle ORT threads must not spin
    # beside the other workers (see bench yolo).
    return [BackendSpec("onnx", {"model": str(model), "threads": 1, "spin": False})
            for _ in range(workers)]


def camera_frames(rate: float, seconds: float, warmup_s: float, runs: int) -> int:
    """How many frames a camera serves: ``runs`` runs, their warm-ups and a margin."""
    return int(math.ceil(rate * (runs * (warmup_s + seconds) + CAMERA_MARGIN_S)))


def run_real(pipeline: Any, setup: RealSetup, live: MjpegCameras, scenario: str, policy: str,
             seconds: float, warmup_s: float, *, settle: bool = False) -> dict[str, Any]:
    """aip on the ``live`` cameras (:class:`~aip.bench.mjpeg.MjpegCameras`); its row.

    ``settle``: the window starts ``warmup_s`` after every camera's first
    result (see :func:`consume` and :func:`measure`)."""
    rss_before = rss_bytes()
    cameras_cpu = _CameraCpu(live)
    names = [pipeline.add_stream(url, name=f"{scenario}-cam{i}", policy=policy)
             for i, url in enumerate(live.urls)]
    run = consume(pipeline.run(), {name: i for i, name in enumerate(names)},
                  warmup_s + seconds + 0.5, sent=live, settle=settle)
    run.manager_cpu_pct = pipeline.metrics.manager_cpu_pct
    pool = getattr(pipeline, "pool", None)
    shm = shm_bytes([getattr(getattr(pool, part, None), "name", None) for part in ("table", "ring")])
    return {"camera_cpu_pct": cameras_cpu.pct(), "system": "aip", "scenario": scenario, "streams": live.count,
            "offered_fps": live.fps * live.count,
            **measure(run, live.count, warmup_s, seconds, from_all_streams=settle),
            "capacity_fps": setup.capacity_fps, "service_ms": setup.service_ms,
            "camera_fps": live.fps, "workers": f"{setup.workers} x onnx, 1 thread",
            "policy": policy, "mode": pipeline.mode,
            **decode_figures(pipeline.metrics),
            **memory_figures(rss_before, run.rss_end_bytes, shm, live.count)}


# ---- the manager's costs: decoding, memory -------------------------------------------------

def rss_bytes(status: Path = Path("/proc/self/status")) -> int | None:
    """This process's resident memory (``VmRSS``), or None where there is no /proc."""
    try:
        text = status.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1]) * 1024  # kB
    return None


def shm_bytes(names: Iterable[str | None], directory: Path = Path("/dev/shm")) -> int | None:
    """The size of the POSIX shared-memory segments ``names`` (a leading '/'
    or not) together, or None when one is not there (no pool, no /dev/shm)."""
    total = 0
    for name in names:
        if not name:
            return None
        try:
            total += (directory / name.lstrip("/")).stat().st_size
        except OSError:
            return None
    return total


def _sum_of(items: Iterable[Any], attribute: str) -> int | None:
    """The sum of ``attribute`` over ``items``; None when one lacks it (or there are none)."""
    total = 0
    count = 0
    for item in items:
        value = getattr(item, attribute, None)
        if value is None:
            return None
        total += int(value)
        count += 1
    return total if count else None


def decode_figures(metrics: Any) -> dict[str, Any]:
    """What a run's decoding cost the manager, from its :class:`~aip.pipeline.metrics.Metrics`.

    ``decode_cpu_s`` (CPU seconds spent decoding live frames) and each
    stream's ``frames_decoded`` / ``decodes_skipped``: None where the
    pipeline does not count them."""
    wall_s = getattr(metrics, "wall_time_s", 0.0) or 0.0
    cpu_s = getattr(metrics, "decode_cpu_s", None)
    streams = list(getattr(metrics, "streams", {}).values())
    decoded = _sum_of(streams, "frames_decoded")
    skipped = _sum_of(streams, "decodes_skipped")
    tried = (decoded or 0) + (skipped or 0)
    return {
        "decode_cpu_s": cpu_s,
        "decode_cpu_pct": 100 * cpu_s / wall_s if cpu_s is not None and wall_s > 0 else None,
        "frames_decoded": decoded,
        "decodes_skipped": skipped,
        "decode_saved_pct": (100 * skipped / tried
                             if decoded is not None and skipped is not None and tried else None),
    }


def memory_figures(rss_before: int | None, rss_after: int | None, shm: int | None,
                   streams: int) -> dict[str, Any]:
    """The manager's resident memory and the pipeline's shared memory, in all and per stream."""
    per = max(streams, 1)
    delta = rss_after - rss_before if rss_after is not None and rss_before is not None else None
    return {
        "rss_before_mb": rss_before / 2**20 if rss_before is not None else None,
        "rss_mb": rss_after / 2**20 if rss_after is not None else None,
        "rss_per_stream_kb": delta / per / 1024 if delta is not None else None,
        "shm_mb": shm / 2**20 if shm is not None else None,
        "shm_per_stream_kb": shm / per / 1024 if shm is not None else None,
    }


# ---- many cameras: the sweep and the capacity search -------------------------------------

def sweep_window_s(seconds: float, capacity_fps: float, cameras: int, *,
                   frames_per_camera: float = SWEEP_FRAMES_PER_CAMERA,
                   max_s: float = SWEEP_MAX_S) -> float:
    """A sweep row's measured window: ``seconds`` at least, longer when
    ``frames_per_camera`` results per camera need it at the rate each camera
    can be served (the capacity shared ``cameras`` ways); that lengthening
    stops at ``max_s`` (``seconds`` itself is never cut)."""
    served = capacity_fps / cameras if cameras > 0 and capacity_fps > 0 else 0.0
    needed = frames_per_camera / served if served > 0 and math.isfinite(served) else max_s
    return max(seconds, min(needed, max_s))


Outcome = TypeVar("Outcome")


def search_capacity(start: int, try_n: Callable[[int], tuple[bool, Outcome]], *,
                    max_tries: int = CAPACITY_TRIES, step: float = CAPACITY_STEP,
                    ) -> tuple[int | None, Outcome | None, list[tuple[int, bool, Outcome]]]:
    """The largest ``n`` for which ``try_n(n)`` said ok, in ``max_tries`` tries at most.

    From ``start`` (at least 1): up by ``step`` (at least one more) while
    every try passed, down by it (at least one fewer, not below 1) while
    every one failed, then bisecting between the largest pass and the
    smallest fail until they are neighbours. Returns ``(n, its outcome,
    every try as (n, ok, outcome))``; ``(None, None, tries)`` when none passed.
    """
    tries: list[tuple[int, bool, Outcome]] = []
    best: int | None = None
    best_outcome: Outcome | None = None
    failed: int | None = None  # the smallest n that failed
    n = max(1, start)
    while len(tries) < max_tries:
        ok, outcome = try_n(n)
        tries.append((n, ok, outcome))
        if ok and (best is None or n > best):
            best, best_outcome = n, outcome
        if not ok and (failed is None or n < failed):
            failed = n
        if best is not None and failed is not None:
            if failed - best <= 1:
                break  # neighbours: that is the answer
            n = (best + failed) // 2
        elif best is not None:
            n = max(best + 1, math.ceil(best * step))
        else:
            assert failed is not None
            if failed <= 1:
                break  # not even one
            n = min(failed - 1, max(1, math.floor(failed / step)))
    return best, best_outcome, tries


class _CameraCpu:
    """The camera process's CPU from now on, % of one core (it shares the machine too)."""

    def __init__(self, live: MjpegCameras) -> None:
        self.live = live
        self.cpu_s = live.cpu_seconds()
        self.t_s = time.perf_counter()

    def pct(self) -> float | None:
        now = self.live.cpu_seconds()
        if now is None or self.cpu_s is None:
            return None
        return 100 * (now - self.cpu_s) / (time.perf_counter() - self.t_s)


def calibrate_real(pipeline: Any, model: Path, workers: int, calibration_s: float) -> RealSetup:
    from aip.io.samples import video_frames

    with tempfile.TemporaryDirectory() as tmp:
        calibration = pipeline.calibrate(video_frames(1)[0], seconds=calibration_s, refresh=True,
                                         cache_path=Path(tmp) / "calibration.json")
    together = [fps for fps in calibration.together_fps.values() if fps > 0]
    service_ms = float(np.mean([1e3 / fps for fps in together])) if together else math.nan
    return RealSetup(model, workers, calibration.ideal_fps, service_ms, calibration.to_dict())


# ---- ultralytics ---------------------------------------------------------------------------

def _ultralytics_child(model: str, urls: list[str], imgsz: tuple[int, int], stop_after_s: float,
                       out: Any) -> None:
    """In a process of its own: ultralytics' multi-stream predict on ``urls``.

    Puts ``{"rows": [(camera, stamp, t_done_ns, inference_ms), ...],
    "cpu_pct": ...}`` (its process's CPU from the first result on, % of one
    core), or an error text.
    """
    try:
        os.environ.setdefault("YOLO_VERBOSE", "False")  # this process only
        from ultralytics import YOLO

        from aip.bench.mjpeg import camera_of_url, read_stamp

        with tempfile.TemporaryDirectory() as tmp:
            streams = Path(tmp) / "cameras.streams"
            streams.write_text("\n".join(urls) + "\n")
            yolo = YOLO(model, task="detect")
            rows: list[tuple[int, int, int, float]] = []
            deadline: int | None = None
            cpu_start = 0.0
            predictions = yolo.predict(source=str(streams), stream=True, imgsz=list(imgsz),
                                       conf=CONF, verbose=False, stream_buffer=False)
            try:
                for result in predictions:
                    now = time.perf_counter_ns()
                    camera = camera_of_url(urls, str(result.path))
                    stamp = read_stamp(result.orig_img)
                    rows.append((-1 if camera is None else camera, -1 if stamp is None else stamp,
                                 now, float(result.speed.get("inference") or math.nan)))
                    if deadline is None:
                        deadline = now + int(stop_after_s * 1e9)
                        cpu_start = time.process_time()
                    elif now >= deadline:
                        break
            finally:
                cpu_s = time.process_time() - cpu_start
                span_s = (time.perf_counter_ns() - rows[0][2]) / 1e9 if rows else 0.0
                predictions.close()
                dataset = getattr(getattr(yolo, "predictor", None), "dataset", None)
                if dataset is not None and hasattr(dataset, "close"):
                    dataset.close()  # its reader threads and captures
        out.put({"rows": rows, "cpu_pct": 100 * cpu_s / span_s if span_s > 0 else None})
    except Exception as error:  # noqa: BLE001 - reported to the parent as text
        out.put(f"{type(error).__name__}: {error}")


def run_ultralytics(model: Path, live: MjpegCameras, scenario: str, seconds: float, warmup_s: float,
                    timeout_s: float = 300.0, *, settle: bool = False) -> dict[str, Any]:
    """ultralytics ``LoadStreams`` on the ``live`` cameras; its row.

    ``settle``: the window starts ``warmup_s`` after every camera's first
    result, as aip's with ``settle`` (``LoadStreams`` opens every stream
    before its first result, so that is about its first result)."""
    run = Run()
    cameras_cpu = _CameraCpu(live)
    context = mp.get_context("spawn")
    out = context.Queue()
    # Its first batch has a frame of every stream: a little slack is enough to settle.
    stop_after_s = warmup_s + seconds + (2.5 if settle else 0.5)
    timeout_s = max(timeout_s, stop_after_s + 240.0)  # its start (model, connections) and more
    child = context.Process(target=_ultralytics_child, name="aip-bench-ultralytics",
                            args=(str(model), live.urls, IMGSZ, stop_after_s, out))
    child.start()
    try:
        reply = out.get(timeout=timeout_s)
    except Exception:  # noqa: BLE001 - queue.Empty: it hung
        reply = f"no answer in {timeout_s:.0f} s"
    child.join(10.0)
    if child.is_alive():
        child.kill()
        child.join(5.0)
    cpu_pct = None
    if isinstance(reply, str):
        run.errors.append(reply)
    else:
        cpu_pct = reply["cpu_pct"]
        for camera, stamp, t_done_ns, inference_ms in reply["rows"]:
            frame, sent_ns = live.sent(camera, stamp, t_done_ns)
            if not sent_ns:
                run.unreadable += 1
                continue
            run.deliveries.append(Delivery(camera, frame, t_done_ns, (t_done_ns - sent_ns) / 1e6,
                                           inference_ms=inference_ms))
    return {"camera_cpu_pct": cameras_cpu.pct(), "system": "ultralytics", "scenario": scenario, "streams": live.count,
            "offered_fps": live.fps * live.count,
            **measure(run, live.count, warmup_s, seconds, from_all_streams=settle),
            "late_pct": None,  # it has no notion of a late frame
            "process_cpu_pct": cpu_pct,  # its whole process, inference included
            "camera_fps": live.fps, "workers": "LoadStreams, onnxruntime default threads",
            "policy": "stream_buffer=False"}


# ---- many cameras: running them ------------------------------------------------------------

def run_camera_sweep(pipeline: Any, onnx: Path, n_workers: int, counts: Sequence[int], *,
                     aip: bool, ultralytics: bool, seconds: float, warmup_s: float,
                     calibration_s: float, max_s: float, add: Callable[[dict[str, Any]], None],
                     calibrations: dict[str, Any]) -> None:
    """The ``cameras-N`` rows: aip (``aip``) on each count, ultralytics
    (``ultralytics``) on the smallest, right after aip on the same cameras."""
    ultralytics_count = min(counts)
    for count in counts:
        systems = [name for name, wanted in (("aip", aip),
                                             ("ultralytics", ultralytics and count == ultralytics_count))
                   if wanted]
        if not systems:
            continue
        scenario = f"cameras-{count}"
        setup = calibrate_real(pipeline, onnx, n_workers, calibration_s)
        calibrations[scenario] = setup.calibration
        rate = SWEEP_LOAD * setup.capacity_fps / count
        window = sweep_window_s(seconds, setup.capacity_fps, count, max_s=max_s)
        print(f"{scenario}: calibrated capacity {setup.capacity_fps:.1f} FPS; {count} cameras at "
              f"{rate:.2f} FPS ({SWEEP_LOAD:g}x it), a {window:.0f} s window", flush=True)
        frames = camera_frames(rate, window + SETTLE_TIMEOUT_S, warmup_s, len(systems))
        with MjpegCameras(count, fps=rate, frames=frames) as live:
            if "aip" in systems:
                row = run_real(pipeline, setup, live, scenario, SWEEP_POLICY, window, warmup_s,
                               settle=True)
                add({**row, "window_target_s": window, "load": SWEEP_LOAD})
            if "ultralytics" in systems:
                row = run_ultralytics(onnx, live, scenario, window, warmup_s, settle=True)
                add({**row, "capacity_fps": setup.capacity_fps, "service_ms": setup.service_ms,
                     "window_target_s": window, "load": SWEEP_LOAD})


def capacity_ok(row: dict[str, Any]) -> bool:
    """Whether a capacity try served its cameras: no drop, p95 age <= ``CAPACITY_P95_MS``."""
    drop, p95 = row.get("drop_pct"), row.get("p95_ms")
    return (not row.get("errors") and row.get("frames", 0) > 0
            and drop is not None and drop <= CAPACITY_MAX_DROP_PCT
            and p95 is not None and p95 <= CAPACITY_P95_MS)


def run_capacity(pipeline: Any, onnx: Path, n_workers: int, *, seconds: float, warmup_s: float,
                 calibration_s: float, tries: int, calibrations: dict[str, Any]) -> dict[str, Any]:
    """The ``capacity`` row: :func:`search_capacity` over cameras at ``CAPACITY_CAMERA_FPS``."""
    setup = calibrate_real(pipeline, onnx, n_workers, calibration_s)
    calibrations["capacity"] = setup.calibration
    start = max(1, math.floor(setup.capacity_fps / CAPACITY_CAMERA_FPS))
    print(f"capacity: calibrated {setup.capacity_fps:.1f} FPS; from {start} cameras at "
          f"{CAPACITY_CAMERA_FPS:g} FPS, {tries} tries of {seconds:g} s at most", flush=True)

    def try_n(n: int) -> tuple[bool, dict[str, Any]]:
        frames = camera_frames(CAPACITY_CAMERA_FPS, seconds + SETTLE_TIMEOUT_S, warmup_s, 1)
        with MjpegCameras(n, fps=CAPACITY_CAMERA_FPS, frames=frames) as live:
            row = run_real(pipeline, setup, live, f"capacity-{n}", SWEEP_POLICY, seconds, warmup_s,
                           settle=True)
        ok = capacity_ok(row)
        print(f"capacity: {n} cameras: {_fmt(row.get('drop_pct'), '.2f')} % dropped, p95 "
              f"{_fmt(row.get('p95_ms'))} ms: {'served' if ok else 'not served'}", flush=True)
        return ok, row

    best, row, trials = search_capacity(start, try_n, max_tries=tries)
    tried = [{"streams": n, "ok": ok, "drop_pct": r.get("drop_pct"), "p95_ms": r.get("p95_ms"),
              "delivered_fps": r.get("delivered_fps")} for n, ok, r in trials]
    common = {"system": "aip", "scenario": "capacity", "capacity_trials": tried,
              "capacity_start": start, "capacity_camera_fps": CAPACITY_CAMERA_FPS,
              "capacity_p95_limit_ms": CAPACITY_P95_MS}
    if row is None:  # not even the fewest cameras tried were served
        return {**common, "streams": 0, "offered_fps": 0.0, "delivered_fps": 0.0,
                "capacity_fps": setup.capacity_fps, "service_ms": setup.service_ms}
    return {**row, **common, "streams": best}


# ---- the suite ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    """What one run of the suite measures: its command line's options."""

    seconds: float = 8.0  # measured window per scenario
    warmup_s: float = 2.0
    cameras: int = 4  # in the real scenarios
    workers: int | None = None  # onnx workers; None: one per core
    calibration_s: float = 3.0
    mode: str = "pull"
    model: str | None = None  # None: seeded yolo11n.yaml
    scenarios: tuple[str, ...] = SCENARIOS
    camera_counts: tuple[int, ...] = CAMERA_COUNTS
    sweep_max_s: float = SWEEP_MAX_S
    capacity_s: float = CAPACITY_SECONDS
    capacity_tries: int = CAPACITY_TRIES

    def to_dict(self) -> dict[str, Any]:
        """The document's ``settings``: the sweep's own only where a sweep scenario runs."""
        settings: dict[str, Any] = {
            "seconds": self.seconds, "warmup_s": self.warmup_s, "cameras": self.cameras, "mode": self.mode,
            "calibration_s": self.calibration_s, "scenarios": list(self.scenarios)}
        if any(s in SWEEP_SCENARIOS for s in self.scenarios):
            settings.update({
                "camera_counts": list(self.camera_counts), "sweep_load": SWEEP_LOAD,
                "sweep_policy": SWEEP_POLICY, "sweep_frames_per_camera": SWEEP_FRAMES_PER_CAMERA,
                "sweep_max_s": self.sweep_max_s, "capacity_s": self.capacity_s,
                "capacity_tries": self.capacity_tries})
        return settings


def run(settings: Settings) -> dict[str, Any]:
    """Every scenario of ``settings``, in order; the document ``--json`` writes."""
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    document: dict[str, Any] = {"results": rows, "settings": settings.to_dict()}
    add = functools.partial(_add_row, rows)
    if "sim" in settings.scenarios:
        add(run_sim(settings.seconds, settings.warmup_s, mode=settings.mode))
    if "sim-tracked" in settings.scenarios:
        add(run_sim(settings.seconds, settings.warmup_s, mode=settings.mode, tracked=True))
    if any(not s.startswith("sim") for s in settings.scenarios):
        _run_onnx_scenarios(settings, document, add)
    document["wall_s"] = time.perf_counter() - started
    return document


def _add_row(rows: list[dict[str, Any]], row: dict[str, Any]) -> None:
    """Append ``row`` with the machine's load and its efficiency, and print its headline."""
    # Other jobs on the machine move every figure here: say how busy it was.
    row["loadavg_1m"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if row.get("capacity_fps") and "efficiency_pct" not in row:
        row["efficiency_pct"] = 100 * row["delivered_fps"] / row["capacity_fps"]
    rows.append(row)
    print(f"{row['system']} {row['scenario']}: {row['delivered_fps']:.1f} of "
          f"{row['offered_fps']:.1f} FPS offered, p99 {_fmt(row.get('p99_ms'))} ms", flush=True)


def _run_onnx_scenarios(settings: Settings, document: dict[str, Any],
                        add: Callable[[dict[str, Any]], None]) -> None:
    """Every scenario but ``sim``: one pool of onnx workers, calibrated before each."""
    from aip.pipeline import Pipeline
    from aip.vision.models import RandomWeightsWarning, export, resolve_model

    scenarios = settings.scenarios
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # said in the document instead
        source = resolve_model(settings.model)
        onnx = export(source, "onnx", IMGSZ)
    document["model"] = {"name": source.name, "random_weights": source.random_weights,
                         "input": f"{IMGSZ[0]}x{IMGSZ[1]} ONNX"}
    n_workers = settings.workers or os.cpu_count() or 1
    calibrations: dict[str, Any] = {}
    document["calibrations"] = calibrations
    with Pipeline(onnx_specs(onnx, n_workers), mode=settings.mode, conf=CONF,
                  keep_frames=True) as pipeline:
        for scenario, load, policy in (("real-under", UNDER_LOAD, "drop-oldest"),
                                       ("real-over", OVER_LOAD, "latest")):
            _run_real_scenario(pipeline, onnx, n_workers, settings, scenario, load, policy, add,
                               calibrations)
        if "cameras" in scenarios or "cameras-ultralytics" in scenarios:
            run_camera_sweep(pipeline, onnx, n_workers, settings.camera_counts,
                             aip="cameras" in scenarios,
                             ultralytics="cameras-ultralytics" in scenarios,
                             seconds=settings.seconds, warmup_s=settings.warmup_s,
                             calibration_s=settings.calibration_s, max_s=settings.sweep_max_s, add=add,
                             calibrations=calibrations)
        if "capacity" in scenarios:
            add(run_capacity(pipeline, onnx, n_workers, seconds=settings.capacity_s,
                             warmup_s=settings.warmup_s, calibration_s=settings.calibration_s,
                             tries=settings.capacity_tries, calibrations=calibrations))


def _run_real_scenario(pipeline: Any, onnx: Path, n_workers: int, settings: Settings, scenario: str,
                       load: float, policy: str, add: Callable[[dict[str, Any]], None],
                       calibrations: dict[str, Any]) -> None:
    """``real-under`` or ``real-over``: aip, then ultralytics, on the same cameras offering
    ``load`` times the capacity (each system only where its scenario was asked for)."""
    systems = [s for s in ("aip", "ultralytics")
               if (scenario if s == "aip" else s) in settings.scenarios]
    if not systems:
        return
    seconds, warmup_s, cameras = settings.seconds, settings.warmup_s, settings.cameras
    # Calibrated right before its cameras start: other load on
    # the machine moves the capacity, and the rate follows it.
    setup = calibrate_real(pipeline, onnx, n_workers, settings.calibration_s)
    calibrations[scenario] = setup.calibration
    rate = load * setup.capacity_fps / cameras
    print(f"{scenario}: calibrated capacity {setup.capacity_fps:.1f} FPS "
          f"({n_workers} onnx workers, {setup.service_ms:.1f} ms per frame each); "
          f"{cameras} cameras at {rate:.2f} FPS", flush=True)
    frames = camera_frames(rate, seconds, warmup_s, len(systems))
    with MjpegCameras(cameras, fps=rate, frames=frames) as live:
        if "aip" in systems:
            add(run_real(pipeline, setup, live, scenario, policy, seconds, warmup_s))
        if "ultralytics" in systems:
            row = run_ultralytics(onnx, live, scenario, seconds, warmup_s)
            row["capacity_fps"] = setup.capacity_fps
            add(row)


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _fmt(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


Target = tuple[str, str, bool]  # (target, figure, met)


def targets(document: dict[str, Any]) -> list[Target]:
    """Each target of the issue: ``(target, figure, met)``."""
    rows = document["results"]

    def find(system: str, scenario: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["system"] == system and r["scenario"] == scenario), None)

    checks: list[Target] = []
    for scenario, scenario_targets in (("sim", _sim_targets), ("sim-tracked", _tracked_targets),
                                       ("real-under", _under_capacity_targets),
                                       ("real-over", _overloaded_targets)):
        row = find("aip", scenario)
        if row is not None:
            checks += scenario_targets(row)
    for scenario in ("real-under", "real-over"):
        ours, theirs = find("aip", scenario), find("ultralytics", scenario)
        if ours is not None and theirs is not None:
            checks += _against_ultralytics_targets(scenario, ours, theirs)
    for row in rows:
        if row["system"] == "aip" and _is_camera_row(row) and row["scenario"] != "capacity":
            checks += _camera_targets(row, find("ultralytics", row["scenario"]))
    return checks


def _sim_targets(sim: dict[str, Any]) -> list[Target]:
    return [
        ("sim: zero drops", f"{_fmt(sim.get('drop_pct'), '.2f')} % dropped",
         sim.get("drop_pct") == 0),
        ("sim: p99 <= 60 ms", f"{_fmt(sim.get('p99_ms'))} ms", sim.get("p99_ms", math.inf) <= 60),
        ("sim: manager CPU <= 25 % of a core", f"{_fmt(sim.get('manager_cpu_pct'))} %",
         (sim.get("manager_cpu_pct") or math.inf) <= 25),
    ]


def _tracked_targets(row: dict[str, Any]) -> list[Target]:
    """16 paced sim streams, each tracked with a zone and a line: the manager still keeps up."""
    return [
        ("sim-tracked: zero drops", f"{_fmt(row.get('drop_pct'), '.2f')} % dropped", row.get("drop_pct") == 0),
        ("sim-tracked: manager CPU <= 25 % of a core", f"{_fmt(row.get('manager_cpu_pct'))} %",
         (row.get("manager_cpu_pct") or math.inf) <= 25),
    ]


def _under_capacity_targets(under: dict[str, Any]) -> list[Target]:
    limit = 3 * under["service_ms"]
    return [
        ("real under capacity: zero drops", f"{_fmt(under.get('drop_pct'), '.2f')} % dropped",
         under.get("drop_pct") == 0),
        (f"real under capacity: p99 <= 3x service time ({limit:.1f} ms)",
         f"{_fmt(under.get('p99_ms'))} ms", under.get("p99_ms", math.inf) <= limit),
    ]


def _overloaded_targets(over: dict[str, Any]) -> list[Target]:
    limit = 3 * over["service_ms"]
    return [
        (f"real overloaded, latest: p99 <= 3x service time ({limit:.1f} ms)",
         f"{_fmt(over.get('p99_ms'))} ms", over.get("p99_ms", math.inf) <= limit),
        ("real overloaded, latest: fairness >= 0.8", _fmt(over.get("fairness"), ".2f"),
         over.get("fairness", 0) >= 0.8),
        ("real overloaded, latest: delivered >= 95 % of calibrated capacity",
         f"{_fmt(over['delivered_fps'])} of {over['capacity_fps']:.1f} FPS = "
         f"{100 * over['delivered_fps'] / over['capacity_fps']:.0f} %",
         over["delivered_fps"] >= 0.95 * over["capacity_fps"]),
    ]


def _against_ultralytics_targets(scenario: str, ours: dict[str, Any], theirs: dict[str, Any]) -> list[Target]:
    checks: list[Target] = []
    ratio = ours["delivered_fps"] / theirs["delivered_fps"] if theirs["delivered_fps"] else math.inf
    if scenario == "real-over":
        # Under capacity the cameras' rate caps what either system can
        # deliver: the FPS target only means something when they are overloaded.
        checks.append((f"{scenario}: aip >= 2x ultralytics' delivered FPS",
                       f"{ours['delivered_fps']:.1f} vs {theirs['delivered_fps']:.1f} FPS = "
                       f"{ratio:.2f}x", ratio >= 2))
    checks.append((f"{scenario}: aip p99 < ultralytics' p99",
                   f"{_fmt(ours.get('p99_ms'))} vs {_fmt(theirs.get('p99_ms'))} ms",
                   ours.get("p99_ms", math.inf) < theirs.get("p99_ms", math.nan)))
    return checks


def _camera_targets(row: dict[str, Any], theirs: dict[str, Any] | None) -> list[Target]:
    """A ``cameras-N`` row's targets; against ultralytics' row on the same cameras where there is one."""
    scenario = row["scenario"]
    capacity = row.get("capacity_fps") or math.nan
    share = 100 * row["delivered_fps"] / capacity if capacity > 0 else math.nan
    limit = 3 * (row.get("service_ms") or math.nan)
    checks: list[Target] = [
        (f"{scenario}: fairness >= 0.9", _fmt(row.get("fairness"), ".2f"),
         (row.get("fairness") or 0.0) >= 0.9),
        (f"{scenario}: delivered >= 90 % of calibrated capacity",
         f"{_fmt(row['delivered_fps'])} of {_fmt(capacity)} FPS = {_fmt(share, '.0f')} %",
         share >= 90),
        (f"{scenario}: p99 age <= 3x service time ({_fmt(limit)} ms)",
         f"{_fmt(row.get('p99_ms'))} ms", (row.get("p99_ms") or math.inf) <= limit),
    ]
    if theirs is not None:
        ratio = (row["delivered_fps"] / theirs["delivered_fps"] if theirs["delivered_fps"]
                 else math.inf)
        checks.append((f"{scenario}: aip delivered FPS > ultralytics'",
                       f"{row['delivered_fps']:.1f} vs {theirs['delivered_fps']:.1f} FPS = "
                       f"{ratio:.2f}x", row["delivered_fps"] > theirs["delivered_fps"]))
    return checks


def _is_camera_row(row: dict[str, Any]) -> bool:
    """A row of the many-cameras sweep (``cameras-N``) or the capacity search."""
    scenario = str(row.get("scenario", ""))
    return scenario == "capacity" or scenario.startswith("cameras-")


def _mb(value: Any) -> str:
    return _fmt(value, ".1f")


def camera_lines(row: dict[str, Any]) -> list[str]:
    """The summary's lines on one sweep row: its window, decoding, memory, tries."""
    name = f"{row['system']} {row['scenario']}"
    out = []
    if row["scenario"] == "capacity":
        tries = ", ".join(f"{t['streams']} {'served' if t['ok'] else 'not'} "
                          f"({_fmt(t.get('drop_pct'), '.2f')} % dropped, p95 {_fmt(t.get('p95_ms'))} ms)"
                          for t in row.get("capacity_trials", []))
        out.append(f"{name}: {row['streams']} cameras at {_fmt(row.get('capacity_camera_fps'), 'g')} "
                   f"FPS served with no drop and p95 age <= {_fmt(row.get('capacity_p95_limit_ms'), 'g')}"
                   f" ms ({_fmt(row.get('drop_pct'), '.2f')} % dropped, p95 "
                   f"{_fmt(row.get('p95_ms'))} ms); tries: {tries or 'none'}")
    out.append(f"{name}: {_fmt(row.get('window_s'))} s window, "
               f"{_fmt(row.get('camera_fps'), '.2f')} FPS per camera, p95 age "
               f"{_fmt(row.get('p95_ms'))} ms, drop {_fmt(row.get('drop_pct'), '.1f')} %")
    if row["system"] == "aip":
        out.append(f"{name}: decode CPU {_fmt(row.get('decode_cpu_pct'))} % of a core, "
                   f"{_fmt(row.get('frames_decoded'), 'd')} frames decoded, "
                   f"{_fmt(row.get('decodes_skipped'), 'd')} decodes skipped "
                   f"({_fmt(row.get('decode_saved_pct'))} % saved); manager RSS "
                   f"{_mb(row.get('rss_mb'))} MB ({_fmt(row.get('rss_per_stream_kb'))} KB per "
                   f"stream more than before its streams), /dev/shm {_mb(row.get('shm_mb'))} MB "
                   f"({_fmt(row.get('shm_per_stream_kb'))} KB per stream)")
    return out


def summarize(document: dict[str, Any]) -> str:
    settings = document["settings"]
    main_rows = [row for row in document["results"] if not _is_camera_row(row)]
    camera_rows = [row for row in document["results"] if _is_camera_row(row)]
    out = []
    if main_rows or not camera_rows:
        out += [f"Many live streams: figures over {settings['seconds']:g} s after a "
                f"{settings['warmup_s']:g} s warm-up; latency camera -> result (sim: source -> result)",
                format_table(main_rows, COLUMNS)]
    if camera_rows:
        out += [f"Many cameras on one box: {SWEEP_LOAD:g}x the calibrated capacity offered, policy "
                f"{SWEEP_POLICY}; windows of about {SWEEP_FRAMES_PER_CAMERA} results per camera "
                f"(at least {settings['seconds']:g} s) after every camera's first result and a "
                f"{settings['warmup_s']:g} s warm-up; age camera -> result",
                format_table(camera_rows, CAMERA_COLUMNS)]
    for scenario, calibration in document.get("calibrations", {}).items():
        out.append(f"{scenario}: onnx pool calibrated just before at {calibration['ideal_fps']:.1f} "
                   f"FPS together ({', '.join(f'{v:.1f}' for v in calibration['together_fps'].values())}"
                   " per worker)")
    for row in document["results"]:
        if "pipeline_p99_ms" in row:
            infer = row.get("infer_p50_ms", math.nan)
            ratio = f" (p99 = {row['p99_ms'] / infer:.1f}x it)" if "service_ms" in row else ""
            out.append(f"{row['system']} {row['scenario']}: aip's own capture -> result p50 "
                       f"{row['pipeline_p50_ms']:.1f} ms, p99 {row['pipeline_p99_ms']:.1f} ms; "
                       f"inference p50 {infer:.1f} ms in the run{ratio}")
        elif row["system"] == "ultralytics" and "infer_p50_ms" in row:
            out.append(f"ultralytics {row['scenario']}: inference p50 {row['infer_p50_ms']:.1f} ms "
                       f"per image (one process, ONNX Runtime's own threads), process CPU "
                       f"{_fmt(row.get('process_cpu_pct'))} % of a core")
        if _is_camera_row(row):
            out += camera_lines(row)
        if row.get("errors"):
            out.append(f"{row['system']} {row['scenario']}: errors: {'; '.join(row['errors'])}")
    loads = [f"{row['system']} {row['scenario']} {row['loadavg_1m']:.1f}"
             for row in document["results"] if row.get("loadavg_1m") is not None]
    if loads:
        out.append("1-min load average after each row (2 = both cores busy): " + ", ".join(loads))
    for target, figure, ok in targets(document):
        out.append(f"{target}: {figure}: {_verdict(ok)}")
    return "\n".join(out)


def parse_scenarios(text: str) -> list[str]:
    """``--scenarios``: names in order, ``sweep`` standing for the sweep's, each once."""
    names: list[str] = []
    for name in (part.strip() for part in text.split(",")):
        for one in (SWEEP_SCENARIOS if name == SWEEP_ALIAS else (name,) if name else ()):
            if one not in names:
                names.append(one)
    return names


def parse_counts(text: str) -> list[int]:
    """``--camera-counts``: positive integers, in the order given, each once."""
    counts: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"{part!r} is not a count of cameras (an integer >= 1)")
        if int(part) not in counts:
            counts.append(int(part))
    if not counts:
        raise ValueError("no count given")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = suite_parser("streams", __doc__)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window per scenario")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds after the first result left out of the figures")
    parser.add_argument("--cameras", type=int, default=4, help="cameras in the real scenarios")
    parser.add_argument("--workers", type=int, help="onnx workers (default: one per core)")
    parser.add_argument("--calibration-seconds", type=float, default=3.0,
                        help="per calibration phase (each worker alone, then all together)")
    parser.add_argument("--mode", default="pull", choices=("static", "adaptive", "pull"),
                        help="aip's scheduler (default pull: identical workers, no weights to keep)")
    parser.add_argument("--model", help="yolo11n.pt or another .pt (default: seeded yolo11n.yaml)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, of {', '.join(ALL_SCENARIOS)}, or {SWEEP_ALIAS} "
                             f"(= {','.join(SWEEP_SCENARIOS)}); default {','.join(SCENARIOS)}")
    parser.add_argument("--camera-counts", default=",".join(map(str, CAMERA_COUNTS)),
                        help="cameras in each row of the cameras sweep, comma-separated "
                             "(ultralytics runs on the smallest)")
    parser.add_argument("--sweep-max-seconds", type=float, default=SWEEP_MAX_S,
                        help="the most a sweep row's window grows to give each camera "
                             f"{SWEEP_FRAMES_PER_CAMERA} results")
    parser.add_argument("--capacity-seconds", type=float, default=CAPACITY_SECONDS,
                        help="measured window of each try of the capacity search")
    parser.add_argument("--capacity-tries", type=int, default=CAPACITY_TRIES,
                        help="tries of the capacity search at most")
    args = parser.parse_args(argv)
    scenarios = parse_scenarios(args.scenarios)
    unknown = set(scenarios) - set(ALL_SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {', '.join(sorted(unknown))}; choose from "
                     f"{', '.join(ALL_SCENARIOS)} or {SWEEP_ALIAS}")
    try:
        counts = parse_counts(args.camera_counts)
    except ValueError as error:
        parser.error(f"--camera-counts: {error}")
    if args.capacity_tries < 1:
        parser.error("--capacity-tries must be >= 1")
    document = run(Settings(args.seconds, args.warmup, args.cameras, args.workers, args.calibration_seconds,
                            args.mode, args.model, tuple(scenarios), camera_counts=tuple(counts),
                            sweep_max_s=args.sweep_max_seconds, capacity_s=args.capacity_seconds,
                            capacity_tries=args.capacity_tries))
    return publish("streams", document, summarize(document), args.json)

