"""The run's last stage: each stream's tracker, zones and lines, on results in order.

    ordered results (per stream, gaps in place)
        -> StreamTracker.update / .skip      track ids (aip.track.tracker)
        -> RegionCounter.update / .skip      counts, enter/exit/cross events
        -> the result, with track_ids and events, to the caller and the sinks

It runs on the manager's loop, in the caller's thread: the results are in
order there already, and a stream's tracker needs exactly that order. Its
cost per frame is measured by ``python -m aip.bench streams`` (the tracking
row): a ByteTrack update of a few dozen boxes is tens of microseconds.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from aip.results import FrameResult, Gap
from aip.pipeline.streams import StreamOptions
from aip.track.tracker import StreamTracker, TrackerConfig, load_tracker_config
from aip.track.zones import RegionCounter

__all__ = ["DEFAULT_TRACKER", "Tracking", "tracker_config"]

# Zones and lines need track ids: a stream that has them and names no tracker gets this one.
DEFAULT_TRACKER = "bytetrack.yaml"

_CONFIGS: dict[str, TrackerConfig] = {}  # a config is read once per process, not once per stream
_CONFIGS_LOCK = threading.Lock()


def tracker_config(spec: str) -> TrackerConfig:
    """The tracker config ``spec`` names, read once (errors: see load_tracker_config)."""
    with _CONFIGS_LOCK:
        if spec not in _CONFIGS:
            _CONFIGS[spec] = load_tracker_config(spec)
        return _CONFIGS[spec]


def wants_tracking(options: StreamOptions) -> bool:
    return options.track is not None or bool(options.zones) or bool(options.lines)


class _StreamState:
    def __init__(self, name: str, options: StreamOptions) -> None:
        self.tracker = StreamTracker(tracker_config(options.track or DEFAULT_TRACKER))
        self.regions = (RegionCounter(name, options.zones, options.lines)
                        if options.zones or options.lines else None)
        self.pending: list[Any] = []  # events of gaps, handed out with the next result


class Tracking:
    """Every tracked stream's state, made on its first result.

    ``options_of(name)`` gives a stream's options (None: not a stream of
    this run); a name that comes back after :meth:`forget` starts afresh.
    """

    def __init__(self, options_of: Callable[[str], StreamOptions | None],
                 class_names: Sequence[str] | None = None) -> None:
        self.options_of = options_of
        self.class_names = tuple(class_names) if class_names is not None else None
        self._streams: dict[str, _StreamState | None] = {}  # None: the stream does not track
        self._lock = threading.Lock()  # counts() is read from the metrics and web threads
        # perf_counter_ns -> UNIX time for events: one offset (both clocks tick alike over a run).
        self._unix_offset_s = time.time() - time.perf_counter_ns() / 1e9

    def apply(self, results: Iterator[FrameResult | Gap]) -> Iterator[FrameResult | Gap]:
        """``results``, tracked where their stream tracks; class names on every result."""
        for item in results:
            yield self.step(item)

    def step(self, item: FrameResult | Gap) -> FrameResult | Gap:
        state = self._state(item.stream)
        if isinstance(item, Gap):
            if state is not None:
                state.tracker.skip()
                if state.regions is not None:
                    with self._lock:
                        state.pending += state.regions.skip(item.frame_id)
            return item
        if state is None:
            return dataclasses.replace(item, class_names=self.class_names) if self.class_names else item
        tracked = state.tracker.update(dataclasses.replace(item, class_names=self.class_names))
        if state.regions is None:
            return tracked
        assert tracked.track_ids is not None
        with self._lock:
            events = state.pending + state.regions.update(
                tracked.frame_id, tracked.t_capture_ns, self._unix_offset_s + tracked.t_capture_ns / 1e9,
                tracked.detections[:, :4], tracked.track_ids, tracked.detections[:, 5].astype(int),
                self.class_names)
            state.pending = []
        return dataclasses.replace(tracked, events=tuple(events)) if events else tracked

    def forget(self, name: str) -> None:
        """A stream removed: a new stream of that name starts with new tracks."""
        with self._lock:
            self._streams.pop(name, None)

    def counts(self) -> dict[str, dict[str, Any]]:
        """Each stream's zone and line counts (:meth:`RegionCounter.counts`)."""
        with self._lock:
            return {name: state.regions.counts() for name, state in list(self._streams.items())
                    if state is not None and state.regions is not None}

    def _state(self, name: str) -> _StreamState | None:
        if name in self._streams:
            return self._streams[name]
        options = self.options_of(name)
        state = _StreamState(name, options) if options is not None and wants_tracking(options) else None
        with self._lock:
            self._streams[name] = state
        return state

