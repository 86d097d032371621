"""Multi-object tracking per stream: ultralytics' own trackers and YAML configs.

The pipeline hands a stream's results to its :class:`StreamTracker` strictly
in frame order, after the reorder, with a call for every frame it had no
result for (a dropped or late gap): the tracker's clock is the stream's
frame count, as it is in ``model.track(source, stream=True, persist=True)``,
whatever worker ran each frame. That order is what makes the track ids equal
ultralytics' frame for frame.

ultralytics is imported when a tracker is made, never at ``import aip``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from aip.results import FrameResult

__all__ = ["StreamTracker", "TrackerConfig", "load_tracker_config"]

# Trackers whose motion compensation reads the frame itself (BoT-SORT's GMC).
_READS_FRAMES = frozenset({"botsort", "tracktrack"})
# Columns of a tracker's output rows: [x1, y1, x2, y2, track_id, score, cls, idx].
_BOX, _TRACK_ID, _SCORE_CLASS = slice(0, 4), 4, slice(5, 7)


@dataclasses.dataclass(frozen=True)
class TrackerConfig:
    """One tracker YAML, read: ``path`` is where it came from (a name such as
    ``bytetrack.yaml`` is one of ultralytics' bundled configs)."""

    path: str
    settings: tuple[tuple[str, Any], ...]

    @property
    def tracker_type(self) -> str:
        return str(dict(self.settings)["tracker_type"])

    @property
    def reads_frames(self) -> bool:
        """The tracker needs each frame's pixels (the run must keep frames)."""
        method = str(dict(self.settings).get("gmc_method", "none")).lower()
        return self.tracker_type in _READS_FRAMES and method not in ("none", "")


def load_tracker_config(spec: str | Path) -> TrackerConfig:
    """Read a tracker YAML: a path, or the name of one of ultralytics' bundled
    configs (``bytetrack.yaml``, ``botsort.yaml``, ...).

    Raises:
        FileNotFoundError: no such file, here or among ultralytics' configs.
        ValueError: not a tracker config, an unknown ``tracker_type``, or a
            ReID setting that needs ultralytics' own predictor.
    """
    from ultralytics.trackers.track import TRACKER_MAP
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    text = str(spec)
    if "://" in text:
        raise ValueError(f"tracker config {text!r}: give a file path or a bundled name; aip downloads nothing")
    if not text.lower().endswith((".yaml", ".yml")):
        raise ValueError(f"tracker config {text!r} is not a YAML file (bytetrack.yaml, botsort.yaml, or yours)")
    try:
        path = check_yaml(text, hard=True)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"tracker config {text!r} not found: give a YAML file, or one of ultralytics' own: "
            f"{', '.join(sorted(f'{name}.yaml' for name in TRACKER_MAP))}") from error
    settings = YAML.load(path)
    if not isinstance(settings, dict) or "tracker_type" not in settings:
        raise ValueError(f"{text!r} is not a tracker config: it has no 'tracker_type' key "
                         "(see ultralytics' bytetrack.yaml)")
    kind = settings["tracker_type"]
    if kind not in TRACKER_MAP:
        raise ValueError(f"{text!r}: unknown tracker_type {kind!r}; choose one of {', '.join(sorted(TRACKER_MAP))}")
    if settings.get("with_reid"):
        # ReID embeddings come from the detector's features inside ultralytics'
        # predictor, or from a second model: neither travels through aip's results.
        raise ValueError(f"{text!r}: with_reid is not supported by aip's trackers; set with_reid: False")
    return TrackerConfig(str(path), tuple(sorted(settings.items())))


class StreamTracker:
    """The tracker of one stream.

    >>> tracker = StreamTracker(load_tracker_config("bytetrack.yaml"))
    >>> tracked = tracker.update(result)    # every result, in frame order
    >>> tracker.skip()                      # every gap: time passed

    ``update`` returns the result with only the tracked objects in
    ``detections`` (their boxes as the tracker holds them) and their
    ``track_ids``: what ultralytics' ``model.track`` returns. One difference:
    on a frame with no confirmed track ultralytics returns the untracked
    detections, without ids; aip returns no detections, so that every
    detection of a tracked stream has an id.
    """

    def __init__(self, config: TrackerConfig) -> None:
        from ultralytics.trackers.track import TRACKER_MAP
        from ultralytics.utils import IterableSimpleNamespace

        self.config = config
        self._tracker = TRACKER_MAP[config.tracker_type](args=IterableSimpleNamespace(**dict(config.settings)))
        self._last_frame: np.ndarray | None = None  # motion compensation across a gap: no motion
        self._no_detections = np.zeros((0, 6), np.float32)

    def update(self, result: FrameResult) -> FrameResult:
        """Track ``result``'s detections; the result with ids (see the class)."""
        frame = result.frame
        if self.config.reads_frames:
            if frame is None:
                raise ValueError(f"{self.config.tracker_type} reads the frames: keep frames in the run")
            self._last_frame = frame
        tracks = self._step(result.detections, frame)
        return dataclasses.replace(
            result,
            detections=np.ascontiguousarray(
                np.concatenate([tracks[:, _BOX], tracks[:, _SCORE_CLASS]], axis=1), dtype=np.float32),
            track_ids=tracks[:, _TRACK_ID].astype(np.int64))

    def skip(self) -> None:
        """A frame with no result went by: the tracks' motion moves on one frame
        and a track unseen too long is dropped, as on a frame with nothing in it."""
        self._step(self._no_detections, self._last_frame)

    def _step(self, detections: np.ndarray, frame: np.ndarray | None) -> np.ndarray:
        from ultralytics.engine.results import Boxes

        shape = frame.shape[:2] if frame is not None else (1, 1)  # Boxes only keeps it for normalising
        tracks = self._tracker.update(Boxes(np.asarray(detections, np.float32), shape), frame)
        if len(tracks) == 0:
            return np.zeros((0, 8), np.float32)
        return np.asarray(tracks, dtype=np.float64)
