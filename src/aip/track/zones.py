"""Zones (polygons) and lines of one stream, and the events tracked objects give there.

A :class:`RegionCounter` takes one stream's tracked boxes frame by frame, in
frame order (after the reorder), and turns them into
:class:`~aip.results.TrackEvent` s and running counts::

    update(frame): boxes (K, 4), track ids (K,), class ids (K,)
        |
        |  id -> slot (a row of the state tables); an id unseen too long is a new track
        v
    anchor point per box ------------------------------------------------.
        |                                                                 |
        v  all zones, all tracks at once                                  v  all lines, all tracks at once
    inside the polygon? vs. the last frame --> exit / enter    side of the line, confirmed (off it by
        |                                                       more than a pixel)? vs. the last
        |                                                       confirmed side, path across the
        |                                                       segment? --> cross "in" / "out"
        v
    tracks unseen forget_after_frames frames (update or skip) --> exit of every zone they were in

The rules, which is what counting people at a door depends on:

- **Anchor.** A box stands for one point: the middle of its bottom edge
  (``"bottom_center"``, the feet of a person seen from above or the side) or
  its centre (``"center"``).
- **Zone membership.** Even-odd (ray casting) test, so concave and even
  self-crossing polygons work. A point exactly on the border (within
  floating-point noise) counts as **inside**.
- **First seen.** A track first seen already inside a zone gives ``enter``
  (it is now inside): every ``exit`` has its ``enter`` and ``inside`` is
  always ``entered - exited``. A track's first observation gives no line
  crossing (there is no path yet).
- **Exit.** From inside to outside; or the track is forgotten, unseen for
  ``forget_after_frames`` frames counted by frame id (so frames that passed
  without an observation, :meth:`RegionCounter.skip`, count). ``dwell_s``
  runs from the capture time of the frame that showed it enter to that of the
  frame that showed it outside or, for a forgotten track, to the last frame
  that showed it inside. A forgotten track's ``exit`` carries that last
  frame's ``frame_id``, ``capture_ns`` and ``timestamp`` (when it was last
  known inside), so it comes out later than the frame it names.
- **Line crossing.** A ``cross`` when the anchor's path between two
  confirmed positions of a track (positions more than ``line_tolerance_px``
  off the line) changes side *and* meets the line's segment, not the
  infinite line through it. Positions on the line (within the tolerance) are
  passed over, so jitter on the line gives nothing: A, on, A gives no
  crossing; A, on, B gives one.
- **Direction.** Walk the line from ``start`` to ``end`` on the image as
  shown (x to the right, y *down*): ``"in"`` is crossing from your left hand
  to your right hand, ``"out"`` the other way. A horizontal line drawn left
  to right, ``start=(0, y)``, ``end=(W, y)``: ``"in"`` is moving down the
  image. A vertical line drawn top to bottom, ``start=(x, 0)``,
  ``end=(x, H)``: ``"in"`` is moving from right to left (from larger x to
  smaller x). Swap ``start`` and ``end`` to swap the directions.
- **Classes.** A region with ``classes`` sees only objects of those classes,
  named by id or by the model's class name (resolved through the
  ``class_names`` given to :meth:`RegionCounter.update`; until names are
  known, a name matches nothing). The class a track has in a frame decides:
  a track whose class stops matching a zone's filter exits it. An ``exit``
  carries the class the track entered with, so per-class counts balance.
- **Track ids** are per stream; an id that comes back after its track was
  forgotten is a new track.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from aip.errors import ConfigError
from aip.results import TrackEvent

__all__ = ["ANCHORS", "Line", "RegionCounter", "Zone"]

ANCHORS = ("bottom_center", "center")

# A point this close to a zone's border counts as on it, hence inside. Only
# float noise: a deliberate margin would make small zones larger.
_ON_BORDER_PX = 1e-6
# A step through an end of a line's segment meets it: the ends belong to the
# segment, with this much slack (a fraction of its length) for rounding.
_ALONG_SLACK = 1e-9
# First size of the per-track state tables; they double when full. Small:
# a stream rarely holds more tracks, and growing is rare and cheap.
_FIRST_CAPACITY = 64

Classes = tuple[int | str, ...]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


# -- the regions --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Zone:
    """A polygon in frame pixels; objects whose anchor is inside are in it.

    Attributes:
        name: the zone's name (``region`` of its events, key of its counts).
        points: the polygon's corners, at least 3, in order (either way
            round); the last joins the first.
        classes: count only these classes, ids or model class names; ``None``
            counts every class.
    """

    name: str
    points: tuple[tuple[float, float], ...]
    classes: Classes | None = None

    def __post_init__(self) -> None:
        what = f"zone {_checked_name(self.name, 'zone')!r}"
        object.__setattr__(self, "points", _polygon(self.points, what))
        object.__setattr__(self, "classes", _class_filter(self.classes, what))

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]) -> Zone:
        """A zone from a config table: ``{"name", "points": [[x, y], ...], "classes"?}``.

        Raises:
            ConfigError: (a ``ValueError``) naming what is wrong: a missing
                name or points, fewer than 3 points, a point that is not two
                numbers, a bad class, an unknown key.
        """
        _check_table(table, "zone", required=("name", "points"), optional=("classes",))
        return cls(name=table["name"], points=table["points"], classes=table.get("classes"))


@dataclass(frozen=True, slots=True)
class Line:
    """A line segment in frame pixels; objects whose anchor crosses it are counted.

    Walk it from ``start`` to ``end`` on the image as shown (y points down):
    ``"in"`` is crossing from your left to your right, ``"out"`` the other
    way. So for ``start=(0, y)``, ``end=(W, y)`` (left to right) ``"in"`` is
    moving down the image; for ``start=(x, 0)``, ``end=(x, H)`` (top to
    bottom) ``"in"`` is moving from right to left. Swap the ends to swap them.

    Attributes:
        name: the line's name (``region`` of its events, key of its counts).
        start, end: its two ends, distinct.
        classes: count only these classes, ids or model class names; ``None``
            counts every class.
    """

    name: str
    start: tuple[float, float]
    end: tuple[float, float]
    classes: Classes | None = None

    def __post_init__(self) -> None:
        what = f"line {_checked_name(self.name, 'line')!r}"
        start = _point(self.start, f"{what}: start")
        end = _point(self.end, f"{what}: end")
        if start == end:
            raise ConfigError(f"{what}: start and end are the same point {list(start)}")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        object.__setattr__(self, "classes", _class_filter(self.classes, what))

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]) -> Line:
        """A line from a config table: ``{"name", "start": [x, y], "end": [x, y], "classes"?}``.

        Raises:
            ConfigError: (a ``ValueError``) naming what is wrong: a missing
                key, an end that is not two numbers, equal ends, a bad class,
                an unknown key.
        """
        _check_table(table, "line", required=("name", "start", "end"), optional=("classes",))
        return cls(name=table["name"], start=table["start"], end=table["end"],
                   classes=table.get("classes"))


def _check_table(table: Mapping[str, Any], kind: str, *, required: tuple[str, ...],
                 optional: tuple[str, ...]) -> None:
    if not isinstance(table, Mapping):
        raise ConfigError(f"a {kind} must be a table with keys {', '.join(required)}, got {table!r}")
    name = table.get("name")
    what = f"{kind} {name!r}" if isinstance(name, str) and name else kind
    known = required + optional
    unknown = sorted(str(key) for key in table if key not in known)
    if unknown:
        raise ConfigError(f"{what}: unknown key {', '.join(map(repr, unknown))} "
                          f"(known: {', '.join(known)})")
    missing = [key for key in required if key not in table]
    if missing:
        raise ConfigError(f"{what}: missing {', '.join(map(repr, missing))}")


def _checked_name(name: Any, kind: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"a {kind}'s name must be a non-empty string, got {name!r}")
    return name


def _number(value: Any, what: str) -> float:
    # numbers.Real takes numpy scalars too; bool is an int but never a coordinate.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{what} must be finite, got {value!r}")
    return number


def _point(value: Any, what: str) -> tuple[float, float]:
    if isinstance(value, (str, bytes, Mapping)):
        raise ConfigError(f"{what} must be two numbers [x, y], got {value!r}")
    try:
        x, y = value
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be two numbers [x, y], got {value!r}") from None
    return (_number(x, f"{what} x"), _number(y, f"{what} y"))


def _polygon(points: Any, what: str) -> tuple[tuple[float, float], ...]:
    if isinstance(points, (str, bytes, Mapping)) or not hasattr(points, "__iter__"):
        raise ConfigError(f"{what}: points must be a list of [x, y], got {points!r}")
    corners = tuple(_point(point, f"{what}: point {index}") for index, point in enumerate(points))
    if len(corners) < 3:
        raise ConfigError(f"{what}: needs at least 3 points, got {len(corners)}")
    # Shoelace area: a polygon whose points all lie on one line holds nothing.
    area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]))
    if area == 0.0:
        raise ConfigError(f"{what}: its points enclose no area (they lie on one line)")
    return corners


def _class_filter(classes: Any, what: str) -> Classes | None:
    if classes is None:
        return None
    if isinstance(classes, (str, numbers.Integral)) and not isinstance(classes, bool):
        classes = (classes,)  # one class, written without the list
    if isinstance(classes, (bytes, Mapping)) or not hasattr(classes, "__iter__"):
        raise ConfigError(f"{what}: classes must be a list of class ids or names, got {classes!r}")
    chosen: list[int | str] = []
    for index, item in enumerate(classes):
        if isinstance(item, numbers.Integral) and not isinstance(item, bool) and int(item) >= 0:
            chosen.append(int(item))
        elif isinstance(item, str) and item:
            chosen.append(item)
        else:
            raise ConfigError(f"{what}: classes[{index}] must be a class id (0 or more) "
                              f"or a class name, got {item!r}")
    if not chosen:
        raise ConfigError(f"{what}: classes is empty (leave it out to count every class)")
    return tuple(chosen)


# -- geometry, vectorised over the tracks of a frame and the regions ----------


class _ZoneGeometry:
    """Every zone's edges in one set of arrays: one pass tests all points against all zones.

    Zone ``z`` owns the edges ``starts[z]`` up to ``starts[z + 1]``; edge ``e``
    runs from ``(ax, ay)`` by ``(ex, ey)`` to ``(ax + ex, by)``.
    """

    __slots__ = ("ax", "ay", "by", "ex", "ey", "slope", "inv_length2", "starts")

    def __init__(self, zones: Sequence[Zone]) -> None:
        corners = [np.asarray(zone.points, dtype=np.float64) for zone in zones]
        first = np.concatenate(corners)
        second = np.concatenate([np.roll(points, -1, axis=0) for points in corners])
        self.starts: IntArray = np.cumsum([0, *(len(points) for points in corners[:-1])], dtype=np.int64)
        self.ax, self.ay = first[:, 0].copy(), first[:, 1].copy()
        self.by = second[:, 1].copy()
        self.ex, self.ey = second[:, 0] - self.ax, self.by - self.ay
        # Horizontal edges never straddle a ray's y, so their slope is never read.
        self.slope = np.divide(self.ex, self.ey, out=np.zeros_like(self.ex), where=self.ey != 0.0)
        length2 = self.ex * self.ex + self.ey * self.ey
        self.inv_length2 = np.divide(1.0, length2, out=np.zeros_like(length2), where=length2 > 0)

    def contains(self, x: FloatArray, y: FloatArray) -> BoolArray:
        """``(K, Z)``: which of the points ``(x, y)`` are inside each zone or on its border."""
        px, py = x[:, None], y[:, None]
        # Even-odd: count the edges of each zone that a ray from the point towards +x crosses.
        crosses = ((self.ay > py) != (self.by > py)) & (px < self.ax + (py - self.ay) * self.slope)
        inside = np.add.reduceat(crosses, self.starts, axis=1, dtype=np.int64) & 1
        # On the border: the nearest point of some edge is (all but) the point itself.
        t = np.clip(((px - self.ax) * self.ex + (py - self.ay) * self.ey) * self.inv_length2, 0.0, 1.0)
        dx, dy = px - (self.ax + t * self.ex), py - (self.ay + t * self.ey)
        near = dx * dx + dy * dy <= _ON_BORDER_PX * _ON_BORDER_PX
        on_border = np.logical_or.reduceat(near, self.starts, axis=1)
        result: BoolArray = (inside != 0) | on_border
        return result


class _LineGeometry:
    """Every line's start and direction, for the side and crossing tests of all at once."""

    __slots__ = ("sx", "sy", "dx", "dy", "inv_length", "inv_length2")

    def __init__(self, lines: Sequence[Line]) -> None:
        ends = np.asarray([(*line.start, *line.end) for line in lines], dtype=np.float64).reshape(-1, 4)
        self.sx, self.sy = ends[:, 0].copy(), ends[:, 1].copy()
        self.dx, self.dy = ends[:, 2] - self.sx, ends[:, 3] - self.sy
        self.inv_length2 = 1.0 / (self.dx * self.dx + self.dy * self.dy)  # the ends differ
        self.inv_length = np.sqrt(self.inv_length2)

    def offsets(self, x: FloatArray, y: FloatArray) -> FloatArray:
        """``(K, L)``: signed distances in pixels from each line, > 0 on its right (image as shown)."""
        px, py = x[:, None], y[:, None]
        offsets: FloatArray = (self.dx * (py - self.sy) - self.dy * (px - self.sx)) * self.inv_length
        return offsets

    def meet_segments(self, lines: IntArray, from_xy: FloatArray, to_x: FloatArray, to_y: FloatArray,
                      to_offset: FloatArray) -> BoolArray:
        """Whether each step ``from_xy -> (to_x, to_y)``, known to change side of line
        ``lines[i]``, meets that line's segment."""
        sx, sy, dx, dy = self.sx[lines], self.sy[lines], self.dx[lines], self.dy[lines]
        fx, fy = from_xy[:, 0], from_xy[:, 1]
        from_offset = (dx * (fy - sy) - dy * (fx - sx)) * self.inv_length[lines]
        # Where the step meets the infinite line (the sides differ, so no division by 0) ...
        t = from_offset / (from_offset - to_offset)
        mx, my = fx + t * (to_x - fx), fy + t * (to_y - fy)
        # ... and how far along the segment that is, 0 at start, 1 at end.
        along = ((mx - sx) * dx + (my - sy) * dy) * self.inv_length2[lines]
        meets: BoolArray = (along >= -_ALONG_SLACK) & (along <= 1.0 + _ALONG_SLACK)
        return meets


# -- the counter ---------------------------------------------------------------


class RegionCounter:
    """Counts and events of one stream's zones and lines.

    Feed it every frame of the stream in order: :meth:`update` for a frame
    with tracked objects (or none), :meth:`skip` for a frame with no result
    (a gap), so that time passes for the tracks it did not see. The rules
    (anchor, border, first seen, direction, forgetting) are in this module's
    docstring.

    Args:
        stream: the stream's name, the ``stream`` of every event.
        zones, lines: its regions; their names must differ.
        anchor: ``"bottom_center"`` or ``"center"``: the point of a box that
            must be inside a zone or cross a line.
        forget_after_frames: a track unseen this many frames has left: it
            exits the zones it was in and is forgotten; its id, seen again,
            is a new track. At least 1.
        line_tolerance_px: a position this close to a line (or closer) is on
            it and does not confirm a side; jitter within it counts nothing.
    """

    def __init__(self, stream: str, zones: Sequence[Zone] = (), lines: Sequence[Line] = (), *,
                 anchor: str = "bottom_center", forget_after_frames: int = 30,
                 line_tolerance_px: float = 1.0) -> None:
        if anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {', '.join(ANCHORS)}, got {anchor!r}")
        if isinstance(forget_after_frames, bool) or not isinstance(forget_after_frames, int) \
                or forget_after_frames < 1:
            raise ValueError("forget_after_frames must be an integer of 1 or more, "
                             f"got {forget_after_frames!r}")
        if not (line_tolerance_px >= 0.0 and math.isfinite(line_tolerance_px)):
            raise ValueError(f"line_tolerance_px must be 0 or more, got {line_tolerance_px!r}")
        regions: list[Zone | Line] = [*zones, *lines]
        names = [region.name for region in regions]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"stream {stream!r}: zone and line names must differ: "
                             f"{', '.join(map(repr, repeated))} used more than once")
        self.stream = stream
        self.zones: tuple[Zone, ...] = tuple(zones)
        self.lines: tuple[Line, ...] = tuple(lines)
        self.anchor = anchor
        self.forget_after_frames = forget_after_frames
        self.line_tolerance_px = float(line_tolerance_px)
        self._zone_geometry = _ZoneGeometry(self.zones) if self.zones else None
        self._line_geometry = _LineGeometry(self.lines) if self.lines else None
        self._any_region = bool(self.zones or self.lines)
        self._last_frame_id: int | None = None

        # Class filters, zones first then lines: the allowed ids, None for all.
        self._class_names: tuple[str, ...] | None = None
        self._class_names_given: object = None  # the object last given, to skip re-resolving it
        self._allowed: list[IntArray | None] = self._resolved_filters(None)

        # Per-track state: one row (slot) per live track; rows are reused.
        self._slot_of: dict[int, int] = {}
        self._free: list[int] = []
        self._capacity = 0
        zone_count, line_count = len(self.zones), len(self.lines)
        self._track_id: IntArray = np.zeros(0, np.int64)
        self._seen_frame: IntArray = np.zeros(0, np.int64)  # last seen; -1: the row is free
        self._seen_ns: IntArray = np.zeros(0, np.int64)
        self._seen_time: FloatArray = np.zeros(0, np.float64)
        self._inside = np.zeros((0, zone_count), np.bool_)
        self._enter_ns: IntArray = np.zeros((0, zone_count), np.int64)
        self._enter_class: IntArray = np.zeros((0, zone_count), np.int64)
        self._side = np.zeros((0, line_count), np.int8)  # last confirmed side: -1, +1; 0 none yet
        self._confirmed_xy: FloatArray = np.zeros((0, line_count, 2), np.float64)
        self._grow()

        # Counts, by class id: labels may change when the names become known.
        self._zone_inside: list[dict[int, int]] = [{} for _ in self.zones]
        self._zone_entered: list[dict[int, int]] = [{} for _ in self.zones]
        self._zone_exited: list[dict[int, int]] = [{} for _ in self.zones]
        self._line_in: list[dict[int, int]] = [{} for _ in self.lines]
        self._line_out: list[dict[int, int]] = [{} for _ in self.lines]

    # -- the public surface --

    def update(self, frame_id: int, capture_ns: int, timestamp: float, boxes: npt.ArrayLike,
               track_ids: npt.ArrayLike, class_ids: npt.ArrayLike,
               class_names: Sequence[str] | None = None) -> list[TrackEvent]:
        """The events of one frame's tracked objects.

        Args:
            frame_id: the frame's position in the stream; larger than the last one given.
            capture_ns: its capture time (``time.perf_counter_ns()``), for dwell times.
            timestamp: the same instant as UNIX time, stamped on the events.
            boxes: ``(K, 4)`` ``x1, y1, x2, y2`` in frame pixels.
            track_ids: ``(K,)`` the tracker's ids, one per box (an id given twice: its first box counts).
            class_ids: ``(K,)`` their classes (floats are taken as whole numbers).
            class_names: the model's class names (index = class id), when known.

        Returns:
            Exits of tracks forgotten now, then this frame's zone exits, zone
            entries and line crossings.

        Raises:
            ValueError: frames out of order, or arrays of different lengths.
            ConfigError: a class filter names a class that ``class_names`` lacks.
        """
        if not self._any_region:
            return []
        self._advance(frame_id)
        if class_names is not None and class_names is not self._class_names_given:
            self.resolve_classes(class_names)
        ids = np.asarray(track_ids).astype(np.int64, copy=False).reshape(-1)
        classes = np.asarray(class_ids).astype(np.int64, copy=False).reshape(-1)
        xyxy = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if not len(ids) == len(classes) == len(xyxy):
            raise ValueError(f"stream {self.stream!r} frame {frame_id}: {len(xyxy)} boxes, "
                             f"{len(ids)} track ids and {len(classes)} class ids: one of each per object")
        if len(ids) > 1 and len(set(ids.tolist())) != len(ids):
            # A tracker gives each id once a frame; if one does not, the first box of an id counts.
            _, first = np.unique(ids, return_index=True)
            first.sort()
            ids, classes, xyxy = ids[first], classes[first], xyxy[first]
        events: list[TrackEvent] = []
        slots = self._claim_slots(ids, frame_id, events)
        self._seen_frame[slots] = frame_id
        self._seen_ns[slots] = capture_ns
        self._seen_time[slots] = timestamp
        self._forget_unseen(frame_id, events)
        if len(slots) == 0:
            return events
        x = (xyxy[:, 0] + xyxy[:, 2]) * 0.5
        y = xyxy[:, 3] if self.anchor == "bottom_center" else (xyxy[:, 1] + xyxy[:, 3]) * 0.5
        stamp = (frame_id, capture_ns, timestamp)
        if self._zone_geometry is not None:
            self._update_zones(self._zone_geometry, slots, ids, classes, x, y, stamp, events)
        if self._line_geometry is not None:
            self._update_lines(self._line_geometry, slots, ids, classes, x, y, stamp, events)
        return events

    def skip(self, frame_id: int) -> list[TrackEvent]:
        """A frame with no result: time passes, nothing is seen.

        Returns the exits of tracks that this makes unseen for
        ``forget_after_frames`` frames.
        """
        if not self._any_region:
            return []
        self._advance(frame_id)
        events: list[TrackEvent] = []
        self._forget_unseen(frame_id, events)
        return events

    def counts(self) -> dict[str, Any]:
        """The counts so far, JSON-ready, classes by name when known, else by id as text.

        ``{"zones": {name: {"inside": {cls: n}, "entered": {cls: n}, "exited": {cls: n}}},
        "lines": {name: {"in": {cls: n}, "out": {cls: n}}}}``. ``inside`` is
        the number inside now (classes with none inside left out); the others
        count since the start.
        """
        labelled = self._labelled
        return {
            "zones": {zone.name: {"inside": labelled(self._zone_inside[index]),
                                  "entered": labelled(self._zone_entered[index]),
                                  "exited": labelled(self._zone_exited[index])}
                      for index, zone in enumerate(self.zones)},
            "lines": {line.name: {"in": labelled(self._line_in[index]),
                                  "out": labelled(self._line_out[index])}
                      for index, line in enumerate(self.lines)},
        }

    def resolve_classes(self, class_names: Sequence[str]) -> None:
        """Take the model's class names, for class filters by name and for labels.

        :meth:`update` calls it when given new names; call it before the
        first frame to find a misspelt class name at once.

        Raises:
            ConfigError: a filter names a class that is not in ``class_names``.
        """
        names = tuple(class_names)
        if names != self._class_names:
            self._allowed = self._resolved_filters(names)
            self._class_names = names
        self._class_names_given = class_names

    @property
    def tracks(self) -> int:
        """How many tracks it holds (seen within the last ``forget_after_frames`` frames)."""
        return len(self._slot_of)

    # -- the steps --

    def _advance(self, frame_id: int) -> None:
        last = self._last_frame_id
        if last is not None and frame_id <= last:
            raise ValueError(f"stream {self.stream!r}: frame {frame_id} after frame {last}: "
                             "frames must come in order, each once")
        self._last_frame_id = frame_id

    def _claim_slots(self, ids: IntArray, frame_id: int, events: list[TrackEvent]) -> IntArray:
        """The state row of each track id, new rows for new tracks."""
        id_list = ids.tolist()
        slot_of = self._slot_of
        slots = np.array([slot_of.get(track_id, -1) for track_id in id_list], dtype=np.int64)
        # Unseen for more than forget_after_frames frames, with no call in between
        # (frame ids jumped): the old track has left, and this is a new one.
        # (A new id's -1 reads the last row; the mask drops it.)
        stale = (slots >= 0) & (frame_id - self._seen_frame[slots] > self.forget_after_frames)
        for index in np.flatnonzero(stale).tolist():
            self._forget(int(slots[index]), events)
            slots[index] = -1
        for index in np.flatnonzero(slots < 0).tolist():
            if not self._free:
                self._grow()
            slot = self._free.pop()
            slot_of[id_list[index]] = slot
            self._track_id[slot] = id_list[index]
            slots[index] = slot
        return slots

    def _forget_unseen(self, frame_id: int, events: list[TrackEvent]) -> None:
        seen = self._seen_frame
        stale = np.flatnonzero((seen >= 0) & (frame_id - seen >= self.forget_after_frames))
        for slot in stale.tolist():
            self._forget(slot, events)

    def _forget(self, slot: int, events: list[TrackEvent]) -> None:
        """The track of ``slot`` has left: it exits its zones, its row is freed."""
        track_id = int(self._track_id[slot])
        # Still marked inside: it was inside when last seen (the marks follow every sighting).
        last_ns = int(self._seen_ns[slot])
        stamp = (int(self._seen_frame[slot]), last_ns, float(self._seen_time[slot]))
        for zone_index in np.flatnonzero(self._inside[slot]).tolist():
            dwell_s = (last_ns - int(self._enter_ns[slot, zone_index])) / 1e9
            events.append(self._exit(zone_index, track_id, int(self._enter_class[slot, zone_index]),
                                     stamp, dwell_s))
        self._inside[slot] = False
        self._side[slot] = 0
        self._seen_frame[slot] = -1
        del self._slot_of[track_id]
        self._free.append(slot)

    def _update_zones(self, geometry: _ZoneGeometry, slots: IntArray, ids: IntArray,
                      classes: IntArray, x: FloatArray, y: FloatArray, stamp: tuple[int, int, float],
                      events: list[TrackEvent]) -> None:
        now = geometry.contains(x, y)  # (K, Z)
        for zone_index, allowed in enumerate(self._allowed[:len(self.zones)]):
            if allowed is not None:
                now[:, zone_index] &= np.isin(classes, allowed)
        was = self._inside[slots]
        left = was & ~now
        if left.any():
            for index, zone_index in zip(*(axis.tolist() for axis in np.nonzero(left))):
                slot = int(slots[index])
                dwell_s = (stamp[1] - int(self._enter_ns[slot, zone_index])) / 1e9
                events.append(self._exit(zone_index, int(ids[index]),
                                         int(self._enter_class[slot, zone_index]), stamp, dwell_s))
        came = now & ~was
        if came.any():
            came_rows, came_zones = np.nonzero(came)
            for index, zone_index in zip(came_rows.tolist(), came_zones.tolist()):
                class_id = int(classes[index])
                self._bump(self._zone_inside[zone_index], class_id, 1)
                self._bump(self._zone_entered[zone_index], class_id, 1)
                events.append(self._event("enter", self.zones[zone_index].name, int(ids[index]),
                                          class_id, stamp))
            self._enter_ns[slots[came_rows], came_zones] = stamp[1]
            self._enter_class[slots[came_rows], came_zones] = classes[came_rows]
        self._inside[slots] = now

    def _update_lines(self, geometry: _LineGeometry, slots: IntArray, ids: IntArray,
                      classes: IntArray, x: FloatArray, y: FloatArray, stamp: tuple[int, int, float],
                      events: list[TrackEvent]) -> None:
        tolerance = self.line_tolerance_px
        offsets = geometry.offsets(x, y)  # (K, L)
        side = (offsets > tolerance).astype(np.int8) - (offsets < -tolerance).astype(np.int8)
        before = self._side[slots]
        changed = (side != 0) & (before != 0) & (side != before)
        if changed.any():
            rows, line_indexes = np.nonzero(changed)
            meets = geometry.meet_segments(
                line_indexes, self._confirmed_xy[slots[rows], line_indexes], x[rows], y[rows],
                offsets[rows, line_indexes])
            zone_count = len(self.zones)
            for index, line_index, crossed in zip(rows.tolist(), line_indexes.tolist(), meets.tolist()):
                allowed = self._allowed[zone_count + line_index]
                class_id = int(classes[index])
                if not crossed or (allowed is not None and class_id not in allowed):
                    continue
                direction = "in" if side[index, line_index] > 0 else "out"
                counts = self._line_in if direction == "in" else self._line_out
                self._bump(counts[line_index], class_id, 1)
                events.append(self._event("cross", self.lines[line_index].name, int(ids[index]),
                                          class_id, stamp, direction=direction))
        # Positions on a line (side 0) keep the last confirmed side and position.
        confirmed = side != 0
        self._side[slots] = np.where(confirmed, side, before)
        xy = np.stack((x, y), axis=1)[:, None, :]
        self._confirmed_xy[slots] = np.where(confirmed[:, :, None], xy, self._confirmed_xy[slots])

    # -- helpers --

    def _exit(self, zone_index: int, track_id: int, class_id: int, stamp: tuple[int, int, float],
              dwell_s: float) -> TrackEvent:
        self._bump(self._zone_inside[zone_index], class_id, -1)
        self._bump(self._zone_exited[zone_index], class_id, 1)
        return self._event("exit", self.zones[zone_index].name, track_id, class_id, stamp, dwell_s=dwell_s)

    def _event(self, kind: str, region: str, track_id: int, class_id: int,
               stamp: tuple[int, int, float], *, direction: str | None = None,
               dwell_s: float | None = None) -> TrackEvent:
        frame_id, capture_ns, timestamp = stamp
        return TrackEvent(kind=kind, stream=self.stream, region=region, track_id=track_id,
                          class_id=class_id, class_name=self._class_name(class_id), frame_id=frame_id,
                          capture_ns=capture_ns, timestamp=timestamp, direction=direction, dwell_s=dwell_s)

    def _class_name(self, class_id: int) -> str | None:
        names = self._class_names
        return names[class_id] if names is not None and 0 <= class_id < len(names) else None

    @staticmethod
    def _bump(counts: dict[int, int], class_id: int, by: int) -> None:
        total = counts.get(class_id, 0) + by
        if total:
            counts[class_id] = total
        else:
            del counts[class_id]  # only "inside" goes down, and none inside is left out

    def _labelled(self, counts: dict[int, int]) -> dict[str, int]:
        labelled: dict[str, int] = {}
        for class_id, count in sorted(counts.items()):
            name = self._class_name(class_id)
            label = str(class_id) if name is None else name
            labelled[label] = labelled.get(label, 0) + count
        return labelled

    def _resolved_filters(self, names: tuple[str, ...] | None) -> list[IntArray | None]:
        allowed: list[IntArray | None] = []
        regions: tuple[Zone | Line, ...] = (*self.zones, *self.lines)
        for region in regions:
            if region.classes is None:
                allowed.append(None)
                continue
            kind = "zone" if isinstance(region, Zone) else "line"
            chosen: set[int] = set()
            for item in region.classes:
                if isinstance(item, int):
                    chosen.add(item)
                elif names is not None:
                    matches = [index for index, name in enumerate(names) if name == item]
                    if not matches:
                        raise ConfigError(f"{kind} {region.name!r}: class {item!r} is not one of "
                                          f"the model's classes ({', '.join(names[:10])}"
                                          f"{', ...' if len(names) > 10 else ''})")
                    chosen.update(matches)
            allowed.append(np.array(sorted(chosen), dtype=np.int64))
        return allowed

    def _grow(self) -> None:
        old = self._capacity
        new = max(_FIRST_CAPACITY, old * 2)

        def grown(array: npt.NDArray[Any], fill: int = 0) -> npt.NDArray[Any]:
            bigger = np.full((new, *array.shape[1:]), fill, dtype=array.dtype)
            bigger[:old] = array
            return bigger

        self._track_id = grown(self._track_id)
        self._seen_frame = grown(self._seen_frame, -1)
        self._inside = grown(self._inside)
        self._enter_ns = grown(self._enter_ns)
        self._enter_class = grown(self._enter_class)
        self._seen_ns = grown(self._seen_ns)
        self._seen_time = grown(self._seen_time)
        self._side = grown(self._side)
        self._confirmed_xy = grown(self._confirmed_xy)
        self._capacity = new
        # Popped from the end: the lowest free row first.
        self._free.extend(range(new - 1, old - 1, -1))
