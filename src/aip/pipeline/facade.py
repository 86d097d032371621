"""The :class:`Pipeline` facade: see :mod:`aip.pipeline` for the parts it
drives and how they fit.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aip.backends.base import BackendSpec, BackendUnavailable, check_available
from aip.pipeline.calibration_cache import CalibrationKey, CalibrationResult, calibrate, load_cached
from aip.io.credentials import redact
from aip.pipeline.metrics import Metrics
from aip.pipeline.admission import Admission
from aip.pipeline.calibration import Calibrator, Measured
from aip.pipeline.protocol import check_frame_shape
from aip.pipeline.loop import RunLoop
from aip.pipeline.targets import Targets
from aip.pipeline.pool import WorkerError, WorkerPool, batch_of, default_slots
from aip.pipeline.streams import (
    POLICIES,
    Stream,
    StreamError,
    StreamEvent,
    StreamOptions,
    default_policy,
    is_live,
    new_frame_ids,
)
from aip.pipeline.reorder import Gap
from aip.results import FrameResult
from aip.pipeline.scheduler import SCHEDULER_MODES, Scheduler, make_scheduler

log = logging.getLogger("aip.pipeline")

__all__ = [
    "POLICIES", "Pipeline", "StreamError", "StreamEvent", "WorkerError", "BackendUnavailable",
]

# A cached calibration is checked with a together phase this long (seconds)
# at start: long enough for a dozen frames per worker, short beside a run.
PROBE_S = 1.0
# status(): frames wait in slots and no result came for this long: stalled.
# Longer than any one inference on a loaded machine; shorter than a person waits.
STALLED_AFTER_S = 5.0


def _unique_labels(specs: Sequence[BackendSpec]) -> list[str]:
    names = [spec.display_name for spec in specs]
    return [
        f"{name}#{names[:i].count(name)}" if names.count(name) > 1 else name
        for i, name in enumerate(names)
    ]


def _is_spec(item: Any) -> bool:
    return isinstance(item, (str, Path, int)) and not isinstance(item, bool)


def _is_one_source(sources: Any) -> bool:
    """A source of frames, rather than a list of sources."""
    if not isinstance(sources, (list, tuple)):
        return True
    return any(isinstance(item, np.ndarray) or (isinstance(item, tuple) and len(item) == 2
                                                and isinstance(item[0], np.ndarray))
               for item in sources)


class Pipeline:
    """Frames of one or many streams in; detections out, in order per stream.

    >>> specs = [BackendSpec("onnx", {"threads": 1}), BackendSpec("cpu", {"threads": 1})]
    >>> with Pipeline(specs, mode="static") as pipeline:
    ...     pipeline.calibrate()
    ...     for result in pipeline.run(["cam1.mp4", "rtsp://camera/2"]):
    ...         print(result.stream, result.frame_id, result.detections)

    A source is a video file, folder, camera index or stream URL (then the
    pipeline can reopen it when it fails), an open :class:`~aip.io.sources.FrameSource`,
    or any iterable of BGR uint8 frames (or ``(frame, capture_ns)`` pairs).
    ``run(source)`` takes one; ``run([a, b, ...])`` many; ``add_stream`` and
    ``remove_stream`` change them while a run goes on.

    ``mode`` is ``static`` (calibrated weighted cycle), ``adaptive`` (the
    cycle re-weighted from measured service times) or ``pull`` (any idle
    worker takes the next frame). ``on_full`` (the policy of every stream;
    default: by source, ``latest`` for a camera or network stream, ``block``
    for a file or folder) is what happens to a new frame when the workers
    are busy: ``block``, ``drop-oldest``, ``drop-newest`` or ``latest``;
    ``target_fps`` and ``max_age_ms`` are the default FPS cap and age limit
    of a stream. Live streams share the workers fairly under overload (each
    stream's ``priority`` weighs its share) and serve their freshest frames.
    Dropped and late frames come out as :class:`~aip.pipeline.reorder.Gap` in their
    place. A stream that fails is reopened with back-off when it can be, and
    evicted after ``max_reconnects`` failures in a row (None: never); the others go on,
    and :class:`StreamError` is raised once everything else was delivered.

    A worker that dies has its frames reclaimed and done by the others; one
    that holds a frame longer than ``stall_timeout_s`` is killed and treated
    the same. Workers exit on their own when the manager process disappears.
    """

    def __init__(
        self,
        backends: Sequence[BackendSpec],
        *,
        mode: str = "adaptive",
        weights: Sequence[int] | None = None,
        target_fps: float | None = None,
        on_full: str | None = None,
        max_age_ms: float | None = None,
        latency_budget_ms: float | None = None,
        n_slots: int | None = None,
        max_frame_shape: tuple[int, int, int] | None = None,
        max_detections: int = 100,
        conf: float = 0.25,
        iou: float = 0.7,
        seed: int = 0,
        keep_frames: bool = False,
        start_timeout_s: float = 600.0,
        stall_timeout_s: float = 60.0,
        stream_timeout_s: float = 10.0,
        max_reconnects: int | None = 3,
        reconnect_backoff_s: float = 0.5,
        max_attempts: int = 2,
        restart_workers: bool = False,
        max_restarts_per_minute: int = 3,
        on_event: Callable[[StreamEvent], None] | None = None,
    ) -> None:
        if not backends:
            raise ValueError("a Pipeline needs at least one backend")
        if mode not in SCHEDULER_MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(SCHEDULER_MODES)}")
        if weights is not None and len(weights) != len(backends):
            raise ValueError(f"{len(weights)} weights for {len(backends)} backends")
        if on_full is not None and on_full not in POLICIES:
            raise ValueError(f"unknown on_full {on_full!r}; choose one of {', '.join(POLICIES)}")
        if target_fps is not None and target_fps <= 0:
            raise ValueError("target_fps must be > 0")
        if max_reconnects is not None and max_reconnects < 0:
            raise ValueError("max_reconnects must be >= 0, or None to retry forever")
        self._on_full = on_full
        self.defaults = StreamOptions(fps=target_fps, policy=on_full or "block", max_age_ms=max_age_ms,
                                      latency_budget_ms=latency_budget_ms)
        for spec in backends:
            check_available(spec)  # BackendUnavailable, with the reason, before anything starts
        self.labels = _unique_labels(backends)
        self.mode = mode
        self.weights = list(weights) if weights is not None else [1] * len(backends)
        self.seed = seed
        self.keep_frames = keep_frames
        self.max_frame_shape = check_frame_shape(max_frame_shape) if max_frame_shape else None
        self.stream_timeout_s = stream_timeout_s
        self.max_reconnects = max_reconnects
        self.reconnect_backoff_s = reconnect_backoff_s
        self.on_event = on_event
        self.pool = WorkerPool(
            backends, self.labels, n_slots=n_slots or default_slots(backends),
            max_detections=max_detections, conf=conf, iou=iou,
            start_timeout_s=start_timeout_s, stall_timeout_s=stall_timeout_s,
            max_attempts=max_attempts, restart_workers=restart_workers,
            max_restarts_per_minute=max_restarts_per_minute)
        self.calibration: CalibrationResult | None = None
        self.metrics = Metrics()
        self.events: list[StreamEvent] = []
        self.scheduler: Scheduler | None = None  # of the current or last run
        self._ids = new_frame_ids(0)
        self._stream_count = 0
        self._streams: dict[int, Stream] = {}  # of the current run
        self._waiting_streams: list[Stream] = []  # added before a run
        self._targets: Targets | None = None
        self._admission: Admission | None = None
        self._running = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._drain_deadline: float | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    @property
    def specs(self) -> list[BackendSpec]:
        return self.pool.specs

    @property
    def on_full(self) -> str | None:
        """Every stream's policy, or None: each stream's source decides (:func:`default_policy`)."""
        return self._on_full

    @property
    def target_fps(self) -> float | None:
        return self.defaults.fps

    @property
    def n_slots(self) -> int:
        return self.pool.n_slots

    @property
    def started(self) -> bool:
        return self.pool.started

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self, max_frame_shape: tuple[int, int, int]) -> None:
        """Create the shared memory for frames up to ``max_frame_shape`` and
        start (and load) every worker. ``run`` does it on its own."""
        shape = check_frame_shape(tuple(max_frame_shape))
        if self.pool.started:
            assert self.pool.max_frame_shape is not None
            if shape[0] > self.pool.max_frame_shape[0] or shape[1] > self.pool.max_frame_shape[1]:
                raise ValueError(f"frames are {shape}, the pipeline was started for frames up to "
                                 f"{self.pool.max_frame_shape}: pass max_frame_shape")
            return
        if self.max_frame_shape is not None:
            shape = (max(shape[0], self.max_frame_shape[0]), max(shape[1], self.max_frame_shape[1]), 3)
        self.pool.start(shape)

    def close(self) -> None:
        """Stop the streams and the workers, remove the shared memory. Idempotent."""
        for stream in list(self._streams.values()) + self._waiting_streams:
            stream.stop()
        self.pool.close()

    # ---- streams --------------------------------------------------------------------------

    def add_stream(
        self,
        source: Any,
        name: str | None = None,
        *,
        fps: float | None = None,
        policy: str | None = None,
        max_age_ms: float | None = None,
        max_frames: int | None = None,
        reopen: str | int | Path | None = None,
        priority: float = 1.0,
        latency_budget_ms: float | None = None,
    ) -> str:
        """Add a stream, to the run going on (it starts at once) or to the next.

        Options default to the pipeline's (``target_fps``, ``on_full``,
        ``max_age_ms``); without either, ``policy`` follows the source:
        ``latest`` for a camera or network stream, ``block`` for the rest.
        ``priority`` weighs a live stream's share of the workers under
        overload (2: twice the frames of a stream of priority 1).
        ``latency_budget_ms`` (default: the pipeline's): a frame goes only to
        a worker predicted to finish it within that time of its capture;
        when none can, it is a ``late`` gap before any inference. ``reopen``
        is how to open the source again when it fails (a path, URL or camera
        index: the default when ``source`` is one). Returns the stream's
        name (``s0``, ``s1``, ... unless given).
        """
        options = StreamOptions(
            fps=fps if fps is not None else self.defaults.fps,
            policy=policy if policy is not None else (self._on_full or "block"),
            max_age_ms=max_age_ms if max_age_ms is not None else self.defaults.max_age_ms,
            max_frames=max_frames,
            priority=priority,
            latency_budget_ms=(latency_budget_ms if latency_budget_ms is not None
                               else self.defaults.latency_budget_ms),
        )
        stream = self._make_stream(source, name, options, reopen,
                                   by_source=policy is None and self._on_full is None)
        with self._lock:  # a run may be starting in another thread
            if self._running:
                self._streams[stream.index] = stream
                self.metrics.streams[stream.name] = stream.metrics
                if self._targets is not None:  # the run's streams have started: join them
                    stream.start(self.pool, self._targets, self._ids, self._admission)
            else:
                self._waiting_streams.append(stream)
        return stream.name

    def remove_stream(self, name: str) -> None:
        """Stop reading a stream; its frames in flight are still delivered."""
        for stream in list(self._streams.values()) + self._waiting_streams:
            if stream.name == name:
                stream.stop()
                stream.metrics.state = "removed"
                if stream in self._waiting_streams:
                    self._waiting_streams.remove(stream)
                self._emit(StreamEvent(name, "removed", "removed by the caller"))
                return
        raise KeyError(f"no stream named {name!r}")

    def stream_policies(self) -> dict[str, str]:
        """Each stream's on-full policy: of the run going on, or added for the next."""
        streams = list(self._streams.values()) if self._running else []
        return {s.name: s.options.policy for s in streams + self._waiting_streams}

    def stop(self) -> None:
        """End a run started with ``until_stopped=True`` once its streams are done."""
        self._stop.set()

    def drain(self, timeout_s: float | None = None) -> None:
        """Stop taking frames in, and end the run once the frames in flight
        are delivered (or after ``timeout_s``). For SIGTERM and Ctrl-C;
        safe to call from a signal handler or another thread."""
        if timeout_s is not None:
            self._drain_deadline = time.monotonic() + timeout_s
        for stream in list(self._streams.values()):
            stream.stop()
        self._stop.set()

    def _make_stream(self, source: Any, name: str | None, options: StreamOptions,
                     reopen: str | int | Path | None, *, by_source: bool = False) -> Stream:
        import dataclasses

        index = self._stream_count
        live = list(self._streams.values()) if self._running else []  # an ended run's names are free
        taken = [s.name for s in live + self._waiting_streams]
        name = name if name is not None else f"s{index}"  # never a URL's credentials
        if name in taken:
            raise ValueError(f"a stream named {redact(name)!r} exists already")
        spec = source if _is_spec(source) else reopen
        first = None
        if _is_spec(source):
            source = self._open(source)  # FileNotFoundError & co. at once, before the run
        elif not hasattr(source, "read_into"):
            iterator = iter(source)
            item = next(iterator, None)
            if item is not None:  # stamped when the run takes it (0: not yet), unless it came stamped
                first = item if isinstance(item, tuple) else (item, 0)
            source = iterator
        if by_source:
            options = dataclasses.replace(options, policy=default_policy(is_live(source)))
        self._stream_count += 1
        return Stream(
            name, index, source, options, spec=spec, opener=self._open if spec is not None else None,
            first=first, keep_frames=self.keep_frames, max_reconnects=self.max_reconnects,
            reconnect_backoff_s=self.reconnect_backoff_s, stream_timeout_s=self.stream_timeout_s,
        )

    def _open(self, spec: str | int | Path) -> Any:
        """Open a source by its spec. A camera or stream does not reconnect
        on its own: its stream's one policy (``max_reconnects``, back-off,
        ``stream_timeout_s``) does, for this open and every reopen."""
        from aip.io.sources import STREAM_SCHEMES, open_source

        text = str(spec)
        if isinstance(spec, int) or text.isdigit() or text.lower().startswith(STREAM_SCHEMES):
            return open_source(spec, reconnect_attempts=0, read_timeout_s=self.stream_timeout_s)
        return open_source(spec)

    def status(self) -> dict[str, Any]:
        """A live snapshot for progress displays and health checks.

        ``state`` is ``idle`` (no run), ``ready`` (frames flow),
        ``starved`` (workers wait for input: no frame in a slot, the streams
        give none), ``backpressure`` (input waits for the workers: no free
        slot) or ``stalled`` (frames wait in slots, no result for
        ``STALLED_AFTER_S``). Safe to call from another thread.
        """
        streams = {s.name: s for s in list(self._streams.values())}
        snapshot: dict[str, Any] = {
            "state": "idle",
            "fps": self.metrics.fps_now(),
            "frames_ordered": self.metrics.frames_ordered,
            "frames_dropped": self.metrics.frames_dropped,
            "frames_late": self.metrics.frames_late,
            "slots": None,
            "workers": [
                {"label": w.label, "device": w.device, "alive": w.alive,
                 "frames": self.metrics.backends[w.label].frames if w.label in self.metrics.backends else 0}
                for w in self.pool.workers
            ],
            "streams": {name: s.metrics.to_dict() for name, s in streams.items()},
        }
        table = self.pool.table
        if not self._running or table is None:
            return snapshot
        counts = table.counts()
        snapshot["slots"] = counts
        busy = counts["READY"] + counts["READING"]
        since_result = self.metrics.seconds_since_last_result()
        if busy and since_result is not None and since_result > STALLED_AFTER_S:
            snapshot["state"] = "stalled"
        elif counts["FREE"] == 0:
            snapshot["state"] = "backpressure"
        elif busy == 0:
            snapshot["state"] = "starved"
        else:
            snapshot["state"] = "ready"
        return snapshot

    def _emit(self, event: StreamEvent) -> None:
        self.events.append(event)
        log.info("stream %s %s: %s", redact(event.stream), event.kind, redact(event.message))
        if self.on_event is not None:
            self.on_event(event)

    # ---- the run ----------------------------------------------------------------------------

    def run(
        self,
        sources: Any = None,
        *,
        max_frames: int | None = None,
        until_stopped: bool = False,
    ) -> Iterator[FrameResult | Gap]:
        """Read every stream; yield results (and gaps) in order per stream.

        ``sources`` is one source or a list of them (see the class); streams
        added with :meth:`add_stream` join in. ``max_frames`` caps each
        stream. The run ends when every stream has ended and its frames are
        delivered, or, with ``until_stopped``, once :meth:`stop` was called.
        Raises :class:`StreamError` at the end if a stream was evicted.
        """
        if self._running:  # before adding anything: a second run adds nothing to the first
            raise RuntimeError("a run is going on already: add streams to it with add_stream")
        if sources is not None:
            for source in ([sources] if _is_one_source(sources) else list(sources)):
                self.add_stream(source, max_frames=max_frames)
        with self._lock:
            if self._running:
                raise RuntimeError("a run is going on already: add streams to it with add_stream")
            streams, self._waiting_streams = self._waiting_streams, []
            self._streams = {stream.index: stream for stream in streams}
            self._running = bool(streams) or until_stopped
        if not self._running:
            return
        metrics = self.metrics = Metrics(
            ideal_fps=self.calibration.ideal_fps if self.calibration else None)
        for stream in streams:
            metrics.streams[stream.name] = stream.metrics
        loop: RunLoop | None = None
        admission: Admission | None = None
        cpu_start = time.process_time()
        complete = False
        try:
            self.start(self._shape_for(streams))
            scheduler = self.scheduler = make_scheduler(
                self.mode, self.weights, self.seed,
                runs={i: batch_of(spec) for i, spec in enumerate(self.specs)})
            targets = Targets(scheduler, self.pool, self._calibrated_service())
            for worker in self.pool.workers:
                if not worker.alive:
                    targets.mark_dead(worker.index)
            metrics.ideal_fps = self.calibration.ideal_fps if self.calibration else None
            admission = Admission(self.pool, targets, self._ids, self._in_flight_target)
            admission.start()
            loop = RunLoop(self.pool, self._streams, targets, metrics,
                           stream_timeout_s=self.stream_timeout_s, on_event=self._emit,
                           keep_running=lambda: until_stopped and not self._stop.is_set(),
                           stop_when=self._drain_expired, weight_of=self._weight_of,
                           admission=admission)
            with self._lock:
                self._targets = targets
                self._admission = admission
                for stream in list(self._streams.values()):
                    stream.start(self.pool, targets, self._ids, admission)
            yield from loop.results()
            complete = True
        finally:
            with self._lock:
                self._running = False
                self._targets = None
                self._admission = None
            self._stop.clear()
            self._drain_deadline = None
            if loop is not None and not complete:
                loop.finish()
            if admission is not None:
                admission.stop()
                metrics.decode_cpu_s = admission.decode_cpu_s
            for stream in self._streams.values():
                stream.stop()
                metrics.streams[stream.name] = stream.metrics
                metrics.frames_generated += stream.metrics.frames_read
                metrics.frames_assigned += stream.metrics.frames_published
                metrics.buffer_full_waits += stream.metrics.buffer_full_waits
            if loop is not None:
                metrics.wall_time_s = (time.perf_counter_ns() - loop.start_ns) / 1e9
                loop.take_gaps()  # the last events
            metrics.manager_cpu_s = time.process_time() - cpu_start
        failures = [s.failure for s in self._streams.values() if s.failure is not None]
        if failures:
            raise StreamError(failures)

    def _drain_expired(self) -> bool:
        return self._drain_deadline is not None and time.monotonic() > self._drain_deadline

    def _calibrated_service(self) -> dict[int, float]:
        """Each worker's per-frame time from the calibration (together), if any:
        what latency budgets go by until the run measures it."""
        if self.calibration is None:
            return {}
        service = {}
        for index, (label, spec) in enumerate(zip(self.labels, self.specs)):
            fps = self.calibration.together_fps.get(f"{label}={spec.options}", 0.0)
            if fps > 0:
                service[index] = 1.0 / fps  # frames/s together: each frame's share
        return service

    def _in_flight_target(self) -> int:
        """Frames live streams keep in the slots: a batch in every live
        worker's hands, and the next one waiting (under ``pull`` any worker
        takes it, so one batch waiting serves them all). More would only age
        in a slot; a frame waits in its camera's pending place instead, where
        a fresher one can still replace it."""
        batches = [batch_of(self.specs[w.index]) for w in self.pool.workers if w.alive]
        if not batches:
            return 1
        waiting = max(batches) if self.mode == "pull" else sum(batches)
        return min(sum(batches) + waiting, self.pool.n_slots)

    def _weight_of(self, worker: int) -> int:
        """A restarted worker's weight: its calibrated one (an adaptive
        schedule measures it again online), at least 1."""
        return max(self.weights[worker], 1) if worker < len(self.weights) else 1

    def _shape_for(self, streams: list[Stream]) -> tuple[int, int, int]:
        """Slots big enough for every stream's frames."""
        height, width = 1, 1
        for stream in streams:
            shape = stream.frame_shape()
            if shape is not None and len(shape) >= 2:
                height, width = max(height, shape[0]), max(width, shape[1])
        if self.pool.started:
            assert self.pool.max_frame_shape is not None
            return self.pool.max_frame_shape
        if self.max_frame_shape is None and height == width == 1:
            return (480, 640, 3)
        return (height, width, 3)

    # ---- calibration -------------------------------------------------------------------------

    def calibrate(
        self,
        frame: np.ndarray | None = None,
        *,
        seconds: float = 2.0,
        warmup_frames: int = 2,
        refresh: bool = False,
        cache_path: Any = None,
        model: str | None = None,
        probe_s: float | None = PROBE_S,
        subset: bool = True,
    ) -> CalibrationResult:
        """Measure each backend alone and all together; set integer weights.

        Throughput is measured on ``frame`` (default: a random 640x480 frame,
        or the slots' shape), ``warmup_frames`` per worker first, then for
        ``seconds`` per phase, through the same run loop as a real run.
        Identical workers (one backend, one set of options) are measured
        alone once. Weights come from the together figures (the backends
        share memory bandwidth and power in production too); with
        ``subset``, a worker whose presence lowers the total is left out of
        the run (its process stops) and reported in ``left_out``.

        The result is cached by model, backends, frame size and machine,
        unless a worker died, restarted or measured far below its identical
        peers (``problems``: then it serves this run only). A cached result
        is checked with a probe of ``probe_s`` seconds (None: not checked)
        and measured again when it is off by more than 25 %; ``refresh=True``
        measures again regardless.
        """
        from aip.pipeline.calibration_cache import Together

        if frame is None:
            shape = self.pool.max_frame_shape or self.max_frame_shape or (480, 640, 3)
            frame = np.random.default_rng(self.seed).integers(0, 256, shape, dtype=np.uint8)
        self.start(frame.shape)
        names = [f"{label}={spec.options}" for label, spec in zip(self.labels, self.specs)]
        key = CalibrationKey(model=model or _model_name(self.specs), backends=frozenset(names),
                             input_size=(int(frame.shape[0]), int(frame.shape[1])))
        path = Path(cache_path) if cache_path is not None else None
        calibrator = Calibrator(self.pool, self.labels, self._ids, self.stream_timeout_s)
        measured: list[Measured] = []  # measured once, on the first call that needs it

        def measure() -> Measured:
            if not measured:
                measured.append(calibrator.measure(frame, seconds, warmup_frames, subset=subset))
            return measured[0]

        def together() -> Together:
            found = measure()
            return Together({names[w]: fps for w, fps in found.together.items()},
                            {names[w]: why for w, why in found.left_out.items()}, found.problems)

        def probe() -> dict[str, float]:
            cached = load_cached(key, path)
            skip = set(cached.left_out) if cached is not None else set()
            workers = [i for i, name in enumerate(names)
                       if name not in skip and self.pool.workers[i].alive]
            rates = calibrator.probe(frame, probe_s or 0.0, warmup_frames, workers)
            return {names[w]: fps for w, fps in rates.items()}

        result = calibrate(key, lambda name: measure().alone[names.index(name)], together,
                           path=path, refresh=refresh, probe=probe if probe_s else None)
        self.calibration = result
        self.weights = [max(int(result.weights.get(name, 0)), 0) for name in names]
        for index, name in enumerate(names):
            if name in result.left_out:
                self.pool.retire(index, result.left_out[name])
        return result


def _model_name(specs: Sequence[BackendSpec]) -> str:
    models = {str(spec.options.get("model", spec.name)) for spec in specs}
    return ",".join(sorted(models))

