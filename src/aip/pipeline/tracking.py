"""The run's last stage: each stream's tracker, zones and lines, on results in order.

    RunLoop.results(ticks)  ordered results per stream, gaps in place
        │
        ├─ untracked stream ──────────────────────────────────────────┐
        ├─ tracker reads pixels (BoT-SORT's GMC): here, in this process ┤
        └─ the rest: a tracking process (one per TRACKED_PER_PROCESS    │
           streams), over a pipe: detections out, ids and events back   │
                                                                        v
            each stream's FIFO: a result leaves once its ids are back, in order

Why processes: ultralytics' ByteTrack costs about a millisecond a frame in
Python (a Kalman update and a linear solve per track), so 16 tracked
cameras at 30 FPS would take half of the manager's core, which also has to
collect, reorder and admit every frame. A message each way costs tens of
microseconds. A stream always goes to the same process, whose pipe keeps
its order; a frame of a stream never overtakes another of that stream.
Tracking processes exit with the run (or with the manager: their pipe
closes); one that dies fails the run with a :class:`TrackingError`.
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from aip.errors import AipError
from aip.results import FrameResult, Gap
from aip.pipeline.streams import StreamOptions
from aip.track.service import TrackedStream, serve
from aip.track.tracker import TrackerConfig, load_tracker_config

__all__ = ["DEFAULT_TRACKER", "Tracking", "TrackingError", "tracker_config", "wants_tracking"]

# Zones and lines need track ids: a stream that has them and names no tracker gets this one.
DEFAULT_TRACKER = "bytetrack.yaml"
# Tracked streams per tracking process: 8 cameras at 30 FPS of ~1 ms updates
# keep a process about a quarter busy; fewer processes would queue, more
# would only add processes on a machine whose cores run the inference too.
# Past one process per usable core, streams share the processes there are.
TRACKED_PER_PROCESS = 8
# While replies are due, an idle pass of the run loop waits this long for
# results before it looks for them: about what tracking adds to a result's
# latency when nothing else arrives; the passes cost ~1 % of a core meanwhile.
REPLY_WAIT_S = 0.002
# A tracking process that gives no reply in this long has failed (it imports
# ultralytics first: seconds on a loaded machine).
START_TIMEOUT_S = 120.0

_CONFIGS: dict[str, TrackerConfig] = {}  # a config is read once per process, not once per stream
_CONFIGS_LOCK = threading.Lock()


class TrackingError(AipError, RuntimeError):
    """A tracking process died; the run cannot give the ids of its streams."""


def tracker_config(spec: str) -> TrackerConfig:
    """The tracker config ``spec`` names, read once (errors: see load_tracker_config)."""
    with _CONFIGS_LOCK:
        if spec not in _CONFIGS:
            _CONFIGS[spec] = load_tracker_config(spec)
        return _CONFIGS[spec]


def wants_tracking(options: StreamOptions) -> bool:
    return options.track is not None or bool(options.zones) or bool(options.lines)


class _Remote:
    """A tracking process and the entries whose replies it owes, in order."""

    def __init__(self, index: int) -> None:
        context = mp.get_context("spawn")
        conn, child = context.Pipe()
        self.conn: Connection = conn
        self.process = context.Process(target=serve, args=(child,), name=f"aip-tracking-{index}",
                                       daemon=True)
        self.process.start()
        child.close()
        self.owed: deque[tuple[str, list[Any]]] = deque()
        self.streams = 0

    def send(self, message: tuple[Any, ...]) -> None:
        try:
            self.conn.send(message)
        except OSError:  # BrokenPipeError: the process is gone
            self.process.join(timeout=1.0)
            raise TrackingError(
                f"a tracking process died (exit code {self.process.exitcode}); the ids of its "
                "streams are lost: run again, or track in the manager (track_in_processes=False)") from None

    def close(self) -> None:
        self.conn.close()  # the process's recv ends: it exits
        self.process.join(timeout=2.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=2.0)


class Tracking:
    """Every tracked stream's state, made on its first result.

    ``options_of(name)`` gives a stream's options (None: not a stream of
    this run); a name that comes back after :meth:`forget` starts afresh.
    ``processes=False`` keeps every tracker in this process.
    """

    def __init__(self, options_of: Callable[[str], StreamOptions | None],
                 class_names: Sequence[str] | None = None, *, processes: bool = True) -> None:
        self.options_of = options_of
        self.class_names = tuple(class_names) if class_names is not None else None
        self.use_processes = processes
        # name -> None (untracked), a TrackedStream (here) or a _Remote (a process)
        self._routes: dict[str, TrackedStream | _Remote | None] = {}
        self._queues: dict[str, deque[list[Any]]] = {}  # entries [item, ready]
        self._dirty: set[str] = set()  # streams whose queue head may be ready
        self._remotes: list[_Remote] = []
        self._owed = 0
        self._counts: dict[str, dict[str, Any]] = {}
        self._forgotten: list[str] = []  # removed streams, for the run loop's thread to drop
        self._lock = threading.Lock()  # counts() and forget() come from other threads
        # perf_counter_ns -> UNIX time for events: one offset (both clocks tick alike over a run).
        self._unix_offset_s = time.time() - time.perf_counter_ns() / 1e9

    # ---- the stage ----------------------------------------------------------------------

    def apply(self, items: Iterator[FrameResult | Gap | None]) -> Iterator[FrameResult | Gap]:
        """``items`` (``None``: an idle pass of the run loop), tracked where
        their stream tracks, in order per stream; class names on every result."""
        try:
            for item in items:
                if self._forgotten:
                    self._forget_now()
                if item is None:
                    if self._owed:
                        self._receive(0.0)
                else:
                    self._submit(item)
                    if self._owed:
                        self._receive(0.0)
                yield from self._ready()
            waited_since = time.monotonic()
            while self._owed:  # the run is over: the replies still owed
                owed = self._owed
                self._receive(1.0)
                yield from self._ready()
                if self._owed < owed:
                    waited_since = time.monotonic()
                elif time.monotonic() - waited_since > START_TIMEOUT_S:
                    raise TrackingError(f"no tracking reply in {START_TIMEOUT_S:g} s: a tracking "
                                        "process is stuck")
        finally:
            self.close()

    def prepare(self, names: Sequence[str]) -> None:
        """Make the trackers of the run's first streams now, before frames
        flow: a tracking process starts in seconds (it imports ultralytics),
        which would otherwise fall on the first frames."""
        for name in names:
            self._route(name)
        deadline = time.monotonic() + START_TIMEOUT_S
        for remote in self._remotes:
            remote.send(("ping", None))
            while not remote.conn.poll(0.1):
                if not remote.process.is_alive():
                    raise TrackingError(f"a tracking process exited at start (exit code "
                                        f"{remote.process.exitcode})")
                if time.monotonic() > deadline:
                    raise TrackingError(f"a tracking process did not start in {START_TIMEOUT_S:g} s")
            try:
                remote.conn.recv()
            except (EOFError, OSError):
                remote.process.join(timeout=1.0)
                raise TrackingError(f"a tracking process exited at start (exit code "
                                    f"{remote.process.exitcode})") from None

    def idle_wait_s(self, otherwise: float) -> float:
        """How long the run loop's idle pass may wait: short while replies are due."""
        return REPLY_WAIT_S if self._owed else otherwise

    def forget(self, name: str) -> None:
        """A stream removed (from any thread): its tracks go. Its frames still
        in flight come out untracked; the run loop's thread tells its process."""
        with self._lock:
            self._forgotten.append(name)
            self._counts.pop(name, None)

    def _forget_now(self) -> None:
        """In the run loop's thread, which alone uses the pipes and the routes."""
        with self._lock:
            names, self._forgotten = self._forgotten, []
        for name in names:
            route = self._routes.get(name)
            self._routes[name] = None
            if isinstance(route, _Remote):
                route.send(("forget", name))

    def counts(self) -> dict[str, dict[str, Any]]:
        """Each stream's zone and line counts (:meth:`aip.track.RegionCounter.counts`)."""
        with self._lock:
            found = dict(self._counts)
        for name, route in list(self._routes.items()):
            if isinstance(route, TrackedStream) and route.regions is not None:
                found[name] = route.regions.counts()
        return found

    def close(self) -> None:
        for remote in self._remotes:
            remote.close()
        self._remotes = []

    # ---- inside ------------------------------------------------------------------------

    def _submit(self, item: FrameResult | Gap) -> None:
        name = item.stream
        route = self._route(name)
        entry: list[Any] = [item, True]
        if isinstance(item, FrameResult) and self.class_names is not None:
            entry[0] = item = dataclasses.replace(item, class_names=self.class_names)
        if isinstance(route, TrackedStream):
            if isinstance(item, Gap):
                route.skip(item.frame_id)
            else:
                entry[0] = route.update(item, self._unix_offset_s + item.t_capture_ns / 1e9)
        elif isinstance(route, _Remote):
            if isinstance(item, Gap):
                route.send(("gap", name, item.frame_id))
            else:
                route.send(("frame", name, item.frame_id, item.t_capture_ns,
                                 self._unix_offset_s + item.t_capture_ns / 1e9, item.detections))
                entry[1] = False
                route.owed.append((name, entry))
                self._owed += 1
        self._queues.setdefault(name, deque()).append(entry)
        self._dirty.add(name)

    def _route(self, name: str) -> TrackedStream | _Remote | None:
        if name in self._routes:
            return self._routes[name]
        options = self.options_of(name)
        route: TrackedStream | _Remote | None = None
        if options is not None and wants_tracking(options):
            config = tracker_config(options.track or DEFAULT_TRACKER)
            if config.reads_frames or not self.use_processes:  # pixels stay here
                route = TrackedStream(name, config, options.zones, options.lines, self.class_names)
            else:
                route = self._remote_for_new_stream()
                route.send(("open", name, config, options.zones, options.lines, self.class_names))
        self._routes[name] = route
        return route

    def _remote_for_new_stream(self) -> _Remote:
        from aip.backends.base import usable_cores

        fewest = min(self._remotes, key=lambda r: r.streams, default=None)
        # A process per TRACKED_PER_PROCESS streams, no more than there are cores:
        # each holds ultralytics in memory (hundreds of MB), and 100 cameras at
        # 2 FPS need a fraction of one core.
        room = len(self._remotes) < max(1, usable_cores())
        if fewest is None or (fewest.streams >= TRACKED_PER_PROCESS and room):
            fewest = _Remote(len(self._remotes))
            self._remotes.append(fewest)
        fewest.streams += 1
        return fewest

    def _receive(self, timeout: float) -> None:
        """Take the replies that are there (waiting up to ``timeout`` for the first)."""
        waiting = [remote for remote in self._remotes if remote.owed]
        by_conn = {remote.conn: remote for remote in waiting}
        for ready in wait(list(by_conn), timeout):
            remote = by_conn[ready]  # type: ignore[index]  # wait() gives back what it was given
            try:
                while remote.owed and remote.conn.poll():
                    self._take_reply(remote, remote.conn.recv())
            except (EOFError, OSError):
                raise TrackingError(
                    f"a tracking process died (exit code {remote.process.exitcode}); the ids of "
                    f"its streams are lost: run again, or track in the manager") from None
        for remote in waiting:  # a process that died with replies owed, and no EOF seen yet
            if remote.owed and not remote.process.is_alive() and not remote.conn.poll():
                raise TrackingError(f"a tracking process died (exit code {remote.process.exitcode})")

    def _take_reply(self, remote: _Remote, reply: tuple[Any, ...]) -> None:
        name, entry = remote.owed.popleft()
        _, detections, track_ids, events, counts = reply
        entry[0] = dataclasses.replace(entry[0], detections=detections, track_ids=track_ids, events=events)
        entry[1] = True
        self._owed -= 1
        self._dirty.add(name)
        if counts is not None:
            with self._lock:
                self._counts[name] = counts

    def _ready(self) -> Iterator[FrameResult | Gap]:
        """Every stream's results that are ready, up to its first that is not."""
        while self._dirty:
            name = self._dirty.pop()
            queue = self._queues.get(name)
            while queue and queue[0][1]:
                yield queue.popleft()[0]

