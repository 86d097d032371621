"""The :class:`Pipeline` facade: see :mod:`aip.pipeline` for the parts it
drives and how they fit.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aip.backends.base import BackendSpec, BackendUnavailable, check_available
from aip.pipeline.calibration_cache import CalibrationResult
from aip.io.credentials import redact
from aip.pipeline.metrics import Metrics
from aip.pipeline.admission import Admission
from aip.pipeline.calibration import CalibrationPlan, calibrate_pool, worker_names
from aip.pipeline.protocol import check_frame_shape
from aip.pipeline.loop import IDLE_WAIT_S, RunLoop
from aip.pipeline.status import snapshot
from aip.pipeline.targets import Targets
from aip.pipeline.tracking import DEFAULT_TRACKER, Tracking, tracker_config
from aip.pipeline.pool import PoolOptions, WorkerError, WorkerPool, batch_of, default_slots
from aip.pipeline.streams import (
    POLICIES,
    ReaderPolicy,
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
from aip.track.zones import Line, Zone
from aip.pipeline.scheduler import SCHEDULER_MODES, Scheduler, make_scheduler

log = logging.getLogger("aip.pipeline")

__all__ = [
    "POLICIES", "Pipeline", "StreamError", "StreamEvent", "WorkerError", "BackendUnavailable",
]

# A cached calibration is checked with a together phase this long (seconds)
# at start: long enough for a dozen frames per worker, short beside a run.
PROBE_S = 1.0


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


# Pipeline runs past 300 lines: it is the public API, and a third of it is the
# API's documentation; the work is in the parts it drives (module docstring).
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

    ``track`` (a tracker config: ``bytetrack.yaml``, ``botsort.yaml`` or a
    file; per stream in ``add_stream``) tracks every stream's objects, in
    frame order: results then carry ``track_ids``, and the events of the
    stream's ``zones`` and ``lines`` (``add_stream``; they imply tracking).
    ``class_names`` (the model's) name the classes in results and events.
    Trackers run in tracking processes (one per 8 tracked streams, at most
    one per core), off the manager's loop; ``track_in_processes=False`` runs
    them in this one.
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
        track: str | None = None,
        class_names: Sequence[str] | None = None,
        track_in_processes: bool = True,
    ) -> None:
        _check_arguments(backends, mode, weights, on_full, target_fps)
        if track is not None:
            keep_frames = keep_frames or tracker_config(track).reads_frames  # a bad config fails here
        self._on_full = on_full
        self.defaults = StreamOptions(fps=target_fps, policy=on_full or "block", max_age_ms=max_age_ms,
                                      latency_budget_ms=latency_budget_ms, track=track)
        self.class_names = tuple(class_names) if class_names is not None else None
        self.tracking: Tracking | None = None  # of the current or last run
        self.track_in_processes = track_in_processes
        for spec in backends:
            check_available(spec)  # BackendUnavailable, with the reason, before anything starts
        self.labels = _unique_labels(backends)
        self.mode = mode
        self.weights = list(weights) if weights is not None else [1] * len(backends)
        self.seed = seed
        self.max_frame_shape = check_frame_shape(max_frame_shape) if max_frame_shape else None
        self.reader = ReaderPolicy(keep_frames=keep_frames, max_reconnects=max_reconnects,
                                   reconnect_backoff_s=reconnect_backoff_s,
                                   stream_timeout_s=stream_timeout_s)
        self.on_event = on_event
        self.pool = WorkerPool(backends, self.labels, PoolOptions(
            n_slots=n_slots or default_slots(backends), max_detections=max_detections, conf=conf,
            iou=iou, start_timeout_s=start_timeout_s, stall_timeout_s=stall_timeout_s,
            max_attempts=max_attempts, restart_workers=restart_workers,
            max_restarts_per_minute=max_restarts_per_minute))
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
        track: str | None = None,
        zones: Sequence[Zone] = (),
        lines: Sequence[Line] = (),
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
        index: the default when ``source`` is one). ``track`` (default: the
        pipeline's) tracks its objects; ``zones`` and ``lines``
        (:class:`aip.track.Zone`, :class:`aip.track.Line`) count them and
        give their events, tracked with ``track`` or ByteTrack. Returns the
        stream's name (``s0``, ``s1``, ... unless given).
        """
        track = track if track is not None else self.defaults.track
        if track is not None or zones or lines:
            if tracker_config(track or DEFAULT_TRACKER).reads_frames and not self.reader.keep_frames:
                raise ValueError(f"tracker {track!r} reads the frames (motion compensation): make the "
                                 "Pipeline with keep_frames=True, or set gmc_method: none")
        options = StreamOptions(
            fps=fps if fps is not None else self.defaults.fps,
            policy=policy if policy is not None else (self._on_full or "block"),
            max_age_ms=max_age_ms if max_age_ms is not None else self.defaults.max_age_ms,
            max_frames=max_frames,
            priority=priority,
            latency_budget_ms=(latency_budget_ms if latency_budget_ms is not None
                               else self.defaults.latency_budget_ms),
            track=track, zones=tuple(zones), lines=tuple(lines),
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
                if self.tracking is not None:
                    self.tracking.forget(name)
                if stream in self._waiting_streams:
                    self._waiting_streams.remove(stream)
                self._emit(StreamEvent(name, "removed", "removed by the caller"))
                return
        raise KeyError(f"no stream named {name!r}")

    def stream_policies(self) -> dict[str, str]:
        """Each stream's on-full policy: of the run going on, or added for the next."""
        streams = list(self._streams.values()) if self._running else []
        return {s.name: s.options.policy for s in streams + self._waiting_streams}

    def stream_settings(self) -> dict[str, dict[str, Any]]:
        """Each stream's source (its spec, redacted; None for frames given in
        code) and options, of the run going on or added for the next: for
        the web page's ``GET /api/streams``."""
        streams = list(self._streams.values()) if self._running else []
        return {s.name: {"source": None if s.spec is None else redact(str(s.spec)),
                         "fps": s.options.fps, "policy": s.options.policy,
                         "max_age_ms": s.options.max_age_ms, "priority": s.options.priority,
                         "latency_budget_ms": s.options.latency_budget_ms}
                for s in streams + self._waiting_streams}

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
        live = list(self._streams.values()) if self._running else []  # an ended run's names are free
        taken = [s.name for s in live + self._waiting_streams]
        name = name if name is not None else f"s{self._stream_count}"  # never a URL's credentials
        if name in taken:
            raise ValueError(f"a stream named {redact(name)!r} exists already")
        stream = _new_stream(source, name, self._stream_count, options, reopen, by_source, self.reader)
        self._stream_count += 1
        return stream

    def status(self) -> dict[str, Any]:
        """A live snapshot for progress displays and health checks: see
        :func:`aip.pipeline.status.snapshot`. Safe to call from another thread."""
        return snapshot(self.pool, self.metrics, list(self._streams.values()), self._running)

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
        tracking: Tracking | None = None
        try:
            # Every stream's results, in order, through its tracker (a dict look-up for the rest).
            tracking = self.tracking = Tracking(self._options_of, self.class_names,
                                                processes=self.track_in_processes)
            tracking.prepare([stream.name for stream in streams])
            loop, admission = self._start_run(streams, metrics, until_stopped)
            loop.idle_wait = functools.partial(tracking.idle_wait_s, IDLE_WAIT_S)
            yield from tracking.apply(loop.results_and_ticks())
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
            if tracking is not None:
                tracking.close()  # its processes, if the run ended before its stage did
            _account(metrics, list(self._streams.values()), loop)
            metrics.manager_cpu_s = time.process_time() - cpu_start
        failures = [s.failure for s in self._streams.values() if s.failure is not None]
        if failures:
            raise StreamError(failures)

    def _start_run(self, streams: list[Stream], metrics: Metrics,
                   until_stopped: bool) -> tuple[RunLoop, Admission]:
        """Start the workers, the schedule, the admission thread and the streams."""
        self.start(_shape_for(streams, self.pool, self.max_frame_shape))
        scheduler = self.scheduler = make_scheduler(
            self.mode, self.weights, self.seed,
            runs={i: batch_of(spec) for i, spec in enumerate(self.specs)})
        targets = Targets(scheduler, self.pool, _calibrated_service(self.calibration, self.pool))
        for worker in self.pool.workers:
            if not worker.alive:
                targets.mark_dead(worker.index)
        metrics.ideal_fps = self.calibration.ideal_fps if self.calibration else None
        admission = Admission(self.pool, targets, self._ids,
                              functools.partial(_in_flight_target, self.pool, self.mode))
        admission.start()
        try:
            loop = RunLoop(self.pool, self._streams, targets, metrics,
                           stream_timeout_s=self.reader.stream_timeout_s, on_event=self._emit,
                           keep_running=lambda: until_stopped and not self._stop.is_set(),
                           stop_when=self._drain_expired, weight_of=self._weight_of,
                           admission=admission)
            with self._lock:
                self._targets = targets
                self._admission = admission
                for stream in list(self._streams.values()):
                    stream.start(self.pool, targets, self._ids, admission)
        except BaseException:
            admission.stop()  # run() never saw it: stop its thread here
            raise
        return loop, admission

    def _options_of(self, name: str) -> StreamOptions | None:
        """The options of the run's stream ``name`` (the tracking stage asks on its first result)."""
        for stream in list(self._streams.values()):
            if stream.name == name:
                return stream.options
        return None

    def _drain_expired(self) -> bool:
        return self._drain_deadline is not None and time.monotonic() > self._drain_deadline

    def _weight_of(self, worker: int) -> int:
        """A restarted worker's weight: its calibrated one (an adaptive
        schedule measures it again online), at least 1."""
        return max(self.weights[worker], 1) if worker < len(self.weights) else 1

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
        if frame is None:
            shape = self.pool.max_frame_shape or self.max_frame_shape or (480, 640, 3)
            frame = np.random.default_rng(self.seed).integers(0, 256, shape, dtype=np.uint8)
        self.start(frame.shape)
        result = calibrate_pool(
            self.pool, self.labels, self._ids, self.reader.stream_timeout_s, frame,
            CalibrationPlan(seconds=seconds, warmup_frames=warmup_frames, subset=subset,
                            probe_s=probe_s, refresh=refresh, model=model,
                            cache_path=Path(cache_path) if cache_path is not None else None))
        self.calibration = result
        self.weights = [max(int(result.weights.get(name, 0)), 0) for name in worker_names(self.pool)]
        return result


def _check_arguments(backends: Sequence[BackendSpec], mode: str, weights: Sequence[int] | None,
                     on_full: str | None, target_fps: float | None) -> None:
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


def _new_stream(source: Any, name: str, index: int, options: StreamOptions, reopen: str | int | Path | None,
                by_source: bool, reader: ReaderPolicy) -> Stream:
    """A stream of ``source``: a spec is opened now (a wrong path fails at
    once, before any run); an iterable's first frame is peeked for its size."""
    spec = source if _is_spec(source) else reopen
    first = None
    opener = functools.partial(_open_spec, stream_timeout_s=reader.stream_timeout_s)
    if _is_spec(source):
        source = opener(source)
    elif not hasattr(source, "read_into"):
        iterator = iter(source)
        item = next(iterator, None)
        if item is not None:  # stamped when the run takes it (0: not yet), unless it came stamped
            first = item if isinstance(item, tuple) else (item, 0)
        source = iterator
    if by_source:
        options = dataclasses.replace(options, policy=default_policy(is_live(source)))
    return Stream(name, index, source, options, spec=spec, opener=opener if spec is not None else None,
                  first=first, reader=reader)


def _open_spec(spec: str | int | Path, stream_timeout_s: float) -> Any:
    """Open a source by its spec. A camera or stream does not reconnect
    on its own: its stream's one policy (``max_reconnects``, back-off,
    ``stream_timeout_s``) does, for this open and every reopen."""
    from aip.io.sources import STREAM_SCHEMES, open_source

    text = str(spec)
    if isinstance(spec, int) or text.isdigit() or text.lower().startswith(STREAM_SCHEMES):
        return open_source(spec, reconnect_attempts=0, read_timeout_s=stream_timeout_s)
    return open_source(spec)


def _calibrated_service(calibration: CalibrationResult | None, pool: WorkerPool) -> dict[int, float]:
    """Each worker's per-frame time from the calibration (together), if any:
    what latency budgets go by until the run measures it."""
    if calibration is None:
        return {}
    service = {}
    for index, name in enumerate(worker_names(pool)):
        fps = calibration.together_fps.get(name, 0.0)
        if fps > 0:
            service[index] = 1.0 / fps  # frames/s together: each frame's share
    return service


def _in_flight_target(pool: WorkerPool, mode: str) -> int:
    """Frames live streams keep in the slots: a batch in every live
    worker's hands, and the next one waiting (under ``pull`` any worker
    takes it, so one batch waiting serves them all). More would only age
    in a slot; a frame waits in its camera's pending place instead, where
    a fresher one can still replace it."""
    batches = [batch_of(pool.specs[w.index]) for w in pool.workers if w.alive]
    if not batches:
        return 1
    waiting = max(batches) if mode == "pull" else sum(batches)
    return min(sum(batches) + waiting, pool.n_slots)


def _shape_for(streams: list[Stream], pool: WorkerPool,
               max_frame_shape: tuple[int, int, int] | None) -> tuple[int, int, int]:
    """Slots big enough for every stream's frames."""
    if pool.started:
        assert pool.max_frame_shape is not None
        return pool.max_frame_shape
    height, width = 1, 1
    for stream in streams:
        shape = stream.frame_shape()
        if shape is not None and len(shape) >= 2:
            height, width = max(height, shape[0]), max(width, shape[1])
    if max_frame_shape is None and height == width == 1:
        return (480, 640, 3)
    return (height, width, 3)


def _account(metrics: Metrics, streams: list[Stream], loop: RunLoop | None) -> None:
    """A run's totals, once its streams have stopped."""
    for stream in streams:
        stream.stop()
        metrics.streams[stream.name] = stream.metrics
        metrics.frames_generated += stream.metrics.frames_read
        metrics.frames_assigned += stream.metrics.frames_published
        metrics.buffer_full_waits += stream.metrics.buffer_full_waits
    if loop is not None:
        metrics.wall_time_s = (time.perf_counter_ns() - loop.start_ns) / 1e9
        loop.take_gaps()  # the last events
