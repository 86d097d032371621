"""Zones and lines: enter, exit and cross events, and counts, from tracks walked along known paths."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aip.errors import ConfigError
from aip.results import TrackEvent
from aip.track import Line, RegionCounter, Zone

FRAME_NS = 40_000_000  # 25 frames a second
START_NS = 5_000_000_000
START_TIME = 1_700_000_000.0
NAMES = ("person", "bicycle", "car")

Point = tuple[float, float]


def capture_ns(frame_id: int) -> int:
    return START_NS + frame_id * FRAME_NS


def box(point: Point) -> list[float]:
    """A box whose bottom centre (the default anchor) is ``point``; its centre lies 15 px above."""
    x, y = point
    return [x - 10.0, y - 30.0, x + 10.0, y]


def walk(counter: RegionCounter, paths: Mapping[int, Sequence[Point | None]], *,
         classes: Mapping[int, int] | None = None, class_names: Sequence[str] | None = NAMES,
         first_frame: int = 0) -> list[list[TrackEvent]]:
    """Walk each track along its path, one position a frame (None: not seen that frame).

    Returns the events of each frame.
    """
    frames = max(len(path) for path in paths.values())
    per_frame = []
    for step in range(frames):
        frame_id = first_frame + step
        seen = [(track, path[step]) for track, path in paths.items()
                if step < len(path) and path[step] is not None]
        boxes = np.array([box(point) for _, point in seen if point is not None], np.float64).reshape(-1, 4)
        ids = np.array([track for track, _ in seen], np.int64)
        cls = np.array([(classes or {}).get(track, 0) for track, _ in seen], np.float32)
        per_frame.append(counter.update(frame_id, capture_ns(frame_id), START_TIME + frame_id / 25,
                                        boxes, ids, cls, class_names))
    return per_frame


def flat(per_frame: list[list[TrackEvent]]) -> list[TrackEvent]:
    return [event for events in per_frame for event in events]


def vertical_path(x: float, ys: Sequence[float]) -> list[Point | None]:
    return [(x, y) for y in ys]


def horizontal_path(y: float, xs: Sequence[float]) -> list[Point | None]:
    return [(x, y) for x in xs]


# A line across the frame, drawn left to right: "in" is moving down the image.
DOOR = Line("door", start=(0.0, 100.0), end=(640.0, 100.0))
SQUARE = Zone("square", points=((100.0, 100.0), (300.0, 100.0), (300.0, 300.0), (100.0, 300.0)))


# -- lines ---------------------------------------------------------------------------------------


def test_a_track_that_crosses_a_line_once_gives_one_cross_going_in() -> None:
    counter = RegionCounter("cam", lines=[DOOR])
    per_frame = walk(counter, {7: vertical_path(200, range(50, 160, 10))}, classes={7: 2})
    events = flat(per_frame)
    assert len(events) == 1
    (event,) = events
    assert per_frame[6] == [event]  # y = 110, the first position past the line
    assert (event.kind, event.direction, event.region, event.stream) == ("cross", "in", "door", "cam")
    assert (event.track_id, event.class_id, event.class_name) == (7, 2, "car")
    assert (event.frame_id, event.capture_ns, event.timestamp) == (6, capture_ns(6), START_TIME + 6 / 25)
    assert event.dwell_s is None
    assert counter.counts()["lines"] == {"door": {"in": {"car": 1}, "out": {}}}


def test_over_and_back_gives_in_then_out() -> None:
    counter = RegionCounter("cam", lines=[DOOR])
    ys = [*range(50, 160, 10), *range(150, 40, -10)]
    events = flat(walk(counter, {1: vertical_path(200, ys)}))
    assert [(event.direction, event.frame_id) for event in events] == [("in", 6), ("out", 17)]
    assert counter.counts()["lines"]["door"] == {"in": {"person": 1}, "out": {"person": 1}}


def test_walking_up_gives_out() -> None:
    counter = RegionCounter("cam", lines=[DOOR])
    events = flat(walk(counter, {1: vertical_path(200, range(150, 40, -10))}))
    assert [event.direction for event in events] == ["out"]


def test_on_a_vertical_line_drawn_down_in_is_right_to_left() -> None:
    line = Line("gate", start=(320.0, 0.0), end=(320.0, 480.0))
    counter = RegionCounter("cam", lines=[line])
    leftwards = flat(walk(counter, {1: horizontal_path(240, range(400, 200, -20))}))
    rightwards = flat(walk(counter, {2: horizontal_path(240, range(200, 400, 20))}, first_frame=100))
    assert [event.direction for event in leftwards] == ["in"]
    assert [event.direction for event in rightwards] == ["out"]


def test_swapping_the_ends_swaps_the_directions() -> None:
    flipped = Line("door", start=DOOR.end, end=DOOR.start)
    counter = RegionCounter("cam", lines=[flipped])
    events = flat(walk(counter, {1: vertical_path(200, range(50, 160, 10))}))
    assert [event.direction for event in events] == ["out"]


def test_crossing_the_infinite_line_beside_the_segment_gives_nothing() -> None:
    short = Line("short", start=(100.0, 100.0), end=(200.0, 100.0))
    counter = RegionCounter("cam", lines=[short])
    beside = flat(walk(counter, {1: vertical_path(300, range(50, 160, 10)),
                                 2: vertical_path(50, range(150, 40, -10))}))
    assert beside == []
    # Around the end and back through the segment: only the pass through it counts.
    around = [(250.0, 50.0), (250.0, 150.0), (150.0, 150.0), (150.0, 50.0)]
    events = flat(walk(counter, {3: around}, first_frame=100))
    assert [(event.direction, event.frame_id) for event in events] == [("out", 103)]


def test_a_step_through_an_end_of_the_segment_counts() -> None:
    short = Line("short", start=(100.0, 100.0), end=(200.0, 100.0))
    counter = RegionCounter("cam", lines=[short])
    events = flat(walk(counter, {1: [(200.0, 90.0), (200.0, 110.0)]}))
    assert [event.direction for event in events] == ["in"]


def test_a_diagonal_step_is_judged_where_it_meets_the_line() -> None:
    short = Line("short", start=(100.0, 100.0), end=(200.0, 100.0))
    counter = RegionCounter("cam", lines=[short])
    # Both ends lie beside the segment (x < 100 and x > 200) but the step meets it at x = 150.
    through = flat(walk(counter, {1: [(50.0, 50.0), (250.0, 150.0)]}))
    # Both ends lie over the segment's span in x, but the step meets the line at x = 250.
    past = flat(walk(counter, {2: [(190.0, 40.0), (190.0, 40.0), (290.0, 140.0)]}, first_frame=10))
    assert [event.direction for event in through] == ["in"]
    assert past == []


def test_jitter_on_the_line_gives_no_crossing_when_it_goes_back() -> None:
    counter = RegionCounter("cam", lines=[DOOR])
    ys = [90, 100, 100.5, 99.5, 100, 100.9, 99.1, 90, 99.5, 100.2, 95]
    assert flat(walk(counter, {1: vertical_path(200, ys)})) == []


def test_jitter_on_the_line_then_across_gives_one_crossing() -> None:
    counter = RegionCounter("cam", lines=[DOOR])
    ys = [90, 100, 100.6, 99.4, 100, 100.8, 110, 100.3, 99.7, 100.9, 110, 120]
    events = flat(walk(counter, {1: vertical_path(200, ys)}))
    assert [(event.direction, event.frame_id) for event in events] == [("in", 6)]


def test_with_no_tolerance_every_position_off_the_line_confirms_a_side() -> None:
    counter = RegionCounter("cam", lines=[DOOR], line_tolerance_px=0.0)
    events = flat(walk(counter, {1: vertical_path(200, [99.5, 100, 100.5, 100, 99.5])}))
    assert [event.direction for event in events] == ["in", "out"]


def test_a_track_first_seen_gives_no_crossing() -> None:
    counter = RegionCounter("cam", lines=[DOOR])
    assert flat(walk(counter, {1: vertical_path(200, [150, 160])})) == []


def test_the_center_anchor_crosses_later_than_the_bottom_center() -> None:
    ys = range(80, 150, 5)  # the box's bottom; its centre is 15 px higher
    bottom = flat(walk(RegionCounter("cam", lines=[DOOR]), {1: vertical_path(200, ys)}))
    center = flat(walk(RegionCounter("cam", lines=[DOOR], anchor="center"), {1: vertical_path(200, ys)}))
    assert [event.frame_id for event in bottom] == [5]  # y = 105
    assert [event.frame_id for event in center] == [8]  # y = 120, centre at 105


# -- zones ---------------------------------------------------------------------------------------


def test_outside_inside_outside_gives_enter_then_exit_with_the_dwell() -> None:
    counter = RegionCounter("cam", zones=[SQUARE])
    xs = range(0, 420, 20)  # inside for x = 100 .. 300 (the border counts as inside)
    per_frame = walk(counter, {4: horizontal_path(200, xs)}, classes={4: 1})
    events = flat(per_frame)
    assert [(event.kind, event.frame_id) for event in events] == [("enter", 5), ("exit", 16)]
    enter, leave = events
    assert (enter.region, enter.track_id, enter.class_id, enter.class_name) == ("square", 4, 1, "bicycle")
    assert enter.dwell_s is None and enter.direction is None
    assert enter.capture_ns == capture_ns(5)
    assert leave.capture_ns == capture_ns(16)
    assert leave.dwell_s == pytest.approx(11 * FRAME_NS / 1e9)
    assert counter.counts()["zones"]["square"] == {"inside": {}, "entered": {"bicycle": 1},
                                                   "exited": {"bicycle": 1}}


def test_counts_inside_follow_the_path() -> None:
    counter = RegionCounter("cam", zones=[SQUARE])
    xs = [0, 150, 200, 250, 350]
    inside = []
    for step, x in enumerate(xs):
        walk(counter, {1: [(x, 200.0)], 2: [(x + 60, 200.0)]}, first_frame=step)
        inside.append(counter.counts()["zones"]["square"]["inside"].get("person", 0))
    assert inside == [0, 2, 2, 1, 0]


def test_a_track_first_seen_inside_enters_at_once() -> None:
    counter = RegionCounter("cam", zones=[SQUARE])
    per_frame = walk(counter, {1: [(200.0, 200.0), (210.0, 200.0)]})
    assert [[event.kind for event in events] for events in per_frame] == [["enter"], []]
    assert counter.counts()["zones"]["square"]["inside"] == {"person": 1}


def test_a_point_on_the_border_is_inside() -> None:
    counter = RegionCounter("cam", zones=[SQUARE])
    on_edges = {1: [(100.0, 200.0)], 2: [(200.0, 300.0)], 3: [(300.0, 100.0)], 4: [(300.0, 250.0)]}
    events = flat(walk(counter, on_edges))
    assert sorted(event.track_id for event in events if event.kind == "enter") == [1, 2, 3, 4]
    just_off = flat(walk(counter, {5: [(300.001, 250.0)], 6: [(99.999, 200.0)]}, first_frame=1))
    assert [event.track_id for event in just_off if event.kind == "enter"] == []


def test_a_track_that_vanishes_exits_after_forget_after_frames() -> None:
    counter = RegionCounter("cam", zones=[SQUARE], forget_after_frames=5)
    path: list[Point | None] = [(50.0, 200.0), (150.0, 200.0), (160.0, 200.0), (170.0, 200.0), (180.0, 200.0)]
    other: list[Point | None] = [(400.0, 400.0)] * 12  # keeps frames coming
    per_frame = walk(counter, {1: path, 2: other})
    assert [event.kind for event in per_frame[1]] == ["enter"]
    assert all(events == [] for events in per_frame[2:9])
    (leave,) = per_frame[9]  # last seen at 4; unseen 5, 6, 7, 8, 9
    assert (leave.kind, leave.track_id, leave.region) == ("exit", 1, "square")
    # Stamped with the last frame that showed it inside; dwell up to that frame.
    assert (leave.frame_id, leave.capture_ns) == (4, capture_ns(4))
    assert leave.dwell_s == pytest.approx(3 * FRAME_NS / 1e9)
    assert counter.counts()["zones"]["square"]["inside"] == {}
    assert counter.tracks == 1  # only the other one


def test_gaps_count_toward_forgetting() -> None:
    counter = RegionCounter("cam", zones=[SQUARE], forget_after_frames=4)
    walk(counter, {1: [(200.0, 200.0)] * 3})
    assert counter.skip(3) == [] and counter.skip(4) == [] and counter.skip(5) == []
    (leave,) = counter.skip(6)
    assert (leave.kind, leave.frame_id, leave.dwell_s) == ("exit", 2, pytest.approx(2 * FRAME_NS / 1e9))
    assert counter.tracks == 0


def test_a_track_seen_again_in_time_is_the_same_track() -> None:
    counter = RegionCounter("cam", zones=[SQUARE], forget_after_frames=3)
    path: list[Point | None] = [(200.0, 200.0), None, None, (210.0, 200.0), None, None, (220.0, 200.0)]
    events = flat(walk(counter, {1: path}))
    assert [event.kind for event in events] == ["enter"]


def test_an_id_back_after_it_was_forgotten_is_a_new_track() -> None:
    counter = RegionCounter("cam", zones=[SQUARE], lines=[DOOR], forget_after_frames=2)
    path: list[Point | None] = [(200.0, 90.0), (200.0, 150.0), None, None, (200.0, 50.0), (200.0, 150.0)]
    events = flat(walk(counter, {1: path}))
    kinds = [(event.kind, event.direction, event.frame_id) for event in events]
    # The crossing back up (150 -> 50) spans the forgetting: it is a new track's first position.
    assert kinds == [("enter", None, 1), ("cross", "in", 1), ("exit", None, 1), ("enter", None, 5),
                     ("cross", "in", 5)]


def test_a_jump_in_frame_ids_counts_as_time_passing() -> None:
    counter = RegionCounter("cam", zones=[SQUARE], forget_after_frames=10)
    walk(counter, {1: [(200.0, 200.0)]})
    events = counter.update(50, capture_ns(50), START_TIME + 2, np.array([box((200.0, 200.0))]),
                            np.array([1]), np.array([0]), NAMES)
    assert [(event.kind, event.frame_id) for event in events] == [("exit", 0), ("enter", 50)]


def test_moving_from_one_zone_to_another_exits_first() -> None:
    left = Zone("left", points=((0.0, 0.0), (100.0, 0.0), (100.0, 100.0), (0.0, 100.0)))
    right = Zone("right", points=((101.0, 0.0), (200.0, 0.0), (200.0, 100.0), (101.0, 100.0)))
    counter = RegionCounter("cam", zones=[right, left])
    events = flat(walk(counter, {1: [(50.0, 50.0), (150.0, 50.0), (50.0, 50.0)]}))
    assert [(event.kind, event.region, event.frame_id) for event in events] == [
        ("enter", "left", 0), ("exit", "left", 1), ("enter", "right", 1),
        ("exit", "right", 2), ("enter", "left", 2)]


def test_a_concave_zone_leaves_its_notch_out() -> None:
    # A "U" (y points down): the notch, x 100..200, y 100..300, opens at the bottom.
    u_shape = Zone("u", points=((0.0, 0.0), (300.0, 0.0), (300.0, 300.0), (200.0, 300.0),
                                (200.0, 100.0), (100.0, 100.0), (100.0, 300.0), (0.0, 300.0)))
    counter = RegionCounter("cam", zones=[u_shape])
    events = flat(walk(counter, {1: horizontal_path(200, range(-50, 400, 20))}))
    assert [(event.kind, event.frame_id) for event in events] == [
        ("enter", 3), ("exit", 8), ("enter", 13), ("exit", 18)]
    over_the_notch = flat(walk(counter, {2: horizontal_path(50, range(-50, 400, 20))}, first_frame=100))
    assert [event.kind for event in over_the_notch] == ["enter", "exit"]


def test_several_tracks_at_once() -> None:
    counter = RegionCounter("cam", zones=[SQUARE], lines=[DOOR])
    down = vertical_path(150, range(50, 160, 10))   # crosses in at 110 (frame 6), enters at 100 (frame 5)
    up = vertical_path(250, range(160, 50, -10))     # crosses out at 90 (frame 7); inside until 100 (frame 6)
    passing = vertical_path(500, range(50, 160, 10))  # crosses in (frame 6), never in the zone
    per_frame = walk(counter, {1: down, 2: up, 3: passing}, classes={1: 0, 2: 0, 3: 2})
    seen = sorted((event.frame_id, event.kind, event.track_id, event.direction) for event in flat(per_frame))
    assert seen == [(0, "enter", 2, None), (5, "enter", 1, None), (6, "cross", 1, "in"),
                    (6, "cross", 3, "in"), (7, "cross", 2, "out"), (7, "exit", 2, None)]
    counts = counter.counts()
    assert counts["lines"]["door"] == {"in": {"person": 1, "car": 1}, "out": {"person": 1}}
    assert counts["zones"]["square"] == {"inside": {"person": 1}, "entered": {"person": 2},
                                         "exited": {"person": 1}}


# -- classes ---------------------------------------------------------------------------------------


def crossing_tracks() -> dict[int, list[Point | None]]:
    return {track: vertical_path(100 + 50 * track, range(50, 160, 10)) for track in range(3)}


def test_a_class_filter_by_id() -> None:
    line = Line("door", start=DOOR.start, end=DOOR.end, classes=(2, 1))
    counter = RegionCounter("cam", lines=[line])
    events = flat(walk(counter, crossing_tracks(), classes={0: 0, 1: 1, 2: 2}))
    assert sorted(event.track_id for event in events) == [1, 2]


def test_a_class_filter_by_name() -> None:
    zone = Zone("square", points=SQUARE.points, classes=("car",))
    counter = RegionCounter("cam", zones=[zone])
    paths: dict[int, list[Point | None]] = {track: [(200.0, 200.0)] for track in range(3)}
    events = flat(walk(counter, paths, classes={0: 0, 1: 1, 2: 2}))
    assert [(event.track_id, event.class_name) for event in events] == [(2, "car")]
    assert counter.counts()["zones"]["square"]["inside"] == {"car": 1}


def test_a_class_name_matches_nothing_until_the_names_are_known() -> None:
    zone = Zone("square", points=SQUARE.points, classes=("car", 0))
    counter = RegionCounter("cam", zones=[zone])
    paths: dict[int, list[Point | None]] = {track: [(200.0, 200.0)] * 2 for track in range(3)}
    unnamed = walk(counter, {track: path[:1] for track, path in paths.items()},
                   classes={0: 0, 1: 1, 2: 2}, class_names=None)
    assert [(event.track_id, event.class_name) for event in flat(unnamed)] == [(0, None)]
    assert counter.counts()["zones"]["square"]["inside"] == {"0": 1}
    named = walk(counter, {track: path[1:] for track, path in paths.items()}, classes={0: 0, 1: 1, 2: 2},
                 first_frame=1)
    assert [(event.track_id, event.class_name) for event in flat(named)] == [(2, "car")]


def test_a_misspelt_class_name_is_an_error_that_names_it() -> None:
    zone = Zone("square", points=SQUARE.points, classes=("preson",))
    counter = RegionCounter("cam", zones=[zone])
    with pytest.raises(ConfigError, match=r"zone 'square': class 'preson' is not one of the model's classes"):
        counter.resolve_classes(NAMES)
    with pytest.raises(ConfigError, match="preson"):
        walk(counter, {1: [(200.0, 200.0)]})


def test_a_class_change_inside_a_filtered_zone_is_an_exit_of_the_class_that_entered() -> None:
    zone = Zone("square", points=SQUARE.points, classes=("person",))
    counter = RegionCounter("cam", zones=[zone])
    walk(counter, {1: [(200.0, 200.0)]}, classes={1: 0})
    events = flat(walk(counter, {1: [(200.0, 200.0)]}, classes={1: 2}, first_frame=1))
    assert [(event.kind, event.class_name) for event in events] == [("exit", "person")]
    assert counter.counts()["zones"]["square"]["inside"] == {}


# -- the counter itself ----------------------------------------------------------------------------


def test_with_no_regions_update_returns_at_once() -> None:
    counter = RegionCounter("cam")
    assert counter.update(0, 0, 0.0, np.zeros((3, 4)), np.arange(3), np.zeros(3)) == []
    assert counter.update(0, 0, 0.0, np.zeros((3, 4)), np.arange(3), np.zeros(3)) == []  # no checks at all
    assert counter.skip(1) == []
    assert counter.counts() == {"zones": {}, "lines": {}}


def test_an_empty_frame_and_many_tracks() -> None:
    counter = RegionCounter("cam", zones=[SQUARE], forget_after_frames=1)
    assert counter.update(0, capture_ns(0), START_TIME, np.zeros((0, 4)), np.zeros(0), np.zeros(0)) == []
    many = {track: [(150.0 + track % 100, 200.0)] for track in range(300)}  # more than the first tables hold
    assert len(flat(walk(counter, many, first_frame=1))) == 300
    assert counter.counts()["zones"]["square"]["inside"] == {"person": 300}
    leaving = counter.update(2, capture_ns(2), START_TIME, np.zeros((0, 4)), np.zeros(0), np.zeros(0))
    assert len(leaving) == 300 and {event.kind for event in leaving} == {"exit"}
    assert counter.tracks == 0


def test_frames_out_of_order_are_an_error() -> None:
    counter = RegionCounter("cam", lines=[DOOR])
    walk(counter, {1: [(0.0, 0.0)] * 3})
    with pytest.raises(ValueError, match="frame 2 after frame 2"):
        counter.update(2, 0, 0.0, np.zeros((0, 4)), np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="frame 1 after frame 2"):
        counter.skip(1)


def test_arrays_of_different_lengths_are_an_error() -> None:
    counter = RegionCounter("cam", lines=[DOOR])
    with pytest.raises(ValueError, match="2 boxes, 1 track ids and 2 class ids"):
        counter.update(0, 0, 0.0, np.zeros((2, 4)), np.zeros(1), np.zeros(2))


@pytest.mark.parametrize(("arguments", "message"), [
    ({"zones": [SQUARE, Zone("square", SQUARE.points)]}, "'square' used more than once"),
    ({"zones": [SQUARE], "lines": [Line("square", (0, 0), (1, 1))]}, "'square' used more than once"),
    ({"anchor": "top"}, "anchor must be one of bottom_center, center"),
    ({"forget_after_frames": 0}, "forget_after_frames must be an integer of 1 or more"),
    ({"line_tolerance_px": -1.0}, "line_tolerance_px must be 0 or more"),
])
def test_bad_counter_settings_are_errors(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RegionCounter("cam", **arguments)  # type: ignore[arg-type]


# -- from_dict ---------------------------------------------------------------------------------------


def test_from_dict_reads_zones_and_lines() -> None:
    zone = Zone.from_dict({"name": "door", "points": [[0, 0], [10, 0], [10.5, 10]], "classes": ["person", 2]})
    assert zone == Zone("door", ((0.0, 0.0), (10.0, 0.0), (10.5, 10.0)), ("person", 2))
    line = Line.from_dict({"name": "gate", "start": [0, 5], "end": (100, 5)})
    assert line == Line("gate", (0.0, 5.0), (100.0, 5.0), None)
    assert Zone.from_dict({"name": "z", "points": SQUARE.points, "classes": "car"}).classes == ("car",)


@pytest.mark.parametrize(("table", "message"), [
    ({"points": [[0, 0], [1, 0], [1, 1]]}, r"^zone: missing 'name'$"),
    ({"name": "", "points": [[0, 0], [1, 0], [1, 1]]}, "a zone's name must be a non-empty string"),
    ({"name": "door"}, r"^zone 'door': missing 'points'$"),
    ({"name": "door", "points": [[0, 0], [1, 0]]}, "zone 'door': needs at least 3 points, got 2"),
    ({"name": "door", "points": "0,0 1,0 1,1"}, "zone 'door': points must be a list of"),
    ({"name": "door", "points": [[0, 0], ["a", 0], [1, 1]]},
     r"zone 'door': point 1 x must be a number, got 'a'"),
    ({"name": "door", "points": [[0, 0], [1, 0, 2], [1, 1]]}, r"zone 'door': point 1 must be two numbers"),
    ({"name": "door", "points": [[0, 0], [1, 0], 7]}, r"zone 'door': point 2 must be two numbers"),
    ({"name": "door", "points": [[0, 0], [1, float("nan")], [1, 1]]},
     "zone 'door': point 1 y must be finite"),
    ({"name": "door", "points": [[0, 0], [1, 1], [2, 2]]}, "zone 'door': its points enclose no area"),
    ({"name": "door", "points": [[0, 0], [1, 0], [1, 1]], "colour": "red"},
     r"zone 'door': unknown key 'colour' \(known: name, points, classes\)"),
    ({"name": "door", "points": [[0, 0], [1, 0], [1, 1]], "classes": []}, "zone 'door': classes is empty"),
    ({"name": "door", "points": [[0, 0], [1, 0], [1, 1]], "classes": [0, 1.5]},
     r"zone 'door': classes\[1\] must be a class id \(0 or more\) or a class name, got 1.5"),
    ({"name": "door", "points": [[0, 0], [1, 0], [1, 1]], "classes": [-1]}, r"zone 'door': classes\[0\]"),
    ({"name": "door", "points": [[0, 0], [1, 0], [1, 1]], "classes": [True]}, r"zone 'door': classes\[0\]"),
])
def test_zone_from_dict_says_what_is_wrong(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Zone.from_dict(table)


@pytest.mark.parametrize(("table", "message"), [
    (["door"], "a line must be a table with keys name, start, end"),
    ({"name": "gate", "start": [0, 0]}, r"^line 'gate': missing 'end'$"),
    ({"name": "gate"}, r"^line 'gate': missing 'start', 'end'$"),
    ({"name": 3, "start": [0, 0], "end": [1, 1]}, "a line's name must be a non-empty string, got 3"),
    ({"name": "gate", "start": [0, 0], "end": [0, 0]},
     r"line 'gate': start and end are the same point \[0.0, 0.0\]"),
    ({"name": "gate", "start": [0, True], "end": [1, 1]}, "line 'gate': start y must be a number, got True"),
    ({"name": "gate", "start": [0, 0], "end": "1,1"}, "line 'gate': end must be two numbers"),
    ({"name": "gate", "start": [0, 0], "end": [1, 1], "points": []}, "line 'gate': unknown key 'points'"),
])
def test_line_from_dict_says_what_is_wrong(table: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Line.from_dict(table)  # type: ignore[arg-type]


def test_config_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        Zone("z", ((0.0, 0.0),))


# -- properties ---------------------------------------------------------------------------------------

# A diagonal line; positions are drawn within the band its segment spans, so that a step from
# one side to the other always meets the segment, never only the infinite line.
DIAGONAL = Line("diagonal", start=(20.0, 10.0), end=(420.0, 310.0))


def on_diagonal(along: float, offset: float) -> Point:
    """The point ``along`` (0..1) the segment and ``offset`` px off it, > 0 on its right ("in" side)."""
    (sx, sy), (ex, ey) = DIAGONAL.start, DIAGONAL.end
    dx, dy = ex - sx, ey - sy
    length = float(np.hypot(dx, dy))
    # The right of the walker, on the image as shown (y down), is (-dy, dx) / length.
    return (sx + along * dx - offset * dy / length, sy + along * dy + offset * dx / length)


offsets_off_the_line = st.one_of(st.floats(1.5, 150.0), st.floats(-150.0, -1.5))
positions_off = st.tuples(st.floats(0.0, 1.0), offsets_off_the_line)
positions_any = st.tuples(st.floats(0.0, 1.0), st.one_of(offsets_off_the_line, st.floats(-0.9, 0.9)))


def crossings(path: Sequence[tuple[float, float]]) -> tuple[int, int]:
    counter = RegionCounter("cam", lines=[DIAGONAL])
    events = flat(walk(counter, {1: [on_diagonal(along, offset) for along, offset in path]}))
    directions = [event.direction for event in events]
    return directions.count("in"), directions.count("out")


@settings(deadline=None, max_examples=200)
@given(st.lists(positions_off, min_size=1, max_size=40))
def test_in_minus_out_is_where_the_path_ended(path: list[tuple[float, float]]) -> None:
    went_in, went_out = crossings(path)
    start, end = path[0][1] > 0, path[-1][1] > 0
    assert went_in - went_out == (0 if start == end else 1 if end else -1)


@settings(deadline=None, max_examples=200)
@given(positions_off, st.lists(positions_any, max_size=40), positions_off)
def test_positions_on_the_line_never_add_crossings(first: tuple[float, float],
                                                   middle: list[tuple[float, float]],
                                                   last: tuple[float, float]) -> None:
    went_in, went_out = crossings([first, *middle, last])
    start, end = first[1] > 0, last[1] > 0
    assert went_in - went_out == (0 if start == end else 1 if end else -1)
    confirmed_sides = [offset > 0 for _, offset in [first, *middle, last] if abs(offset) > 1.0]
    changes = sum(a != b for a, b in zip(confirmed_sides, confirmed_sides[1:]))
    assert went_in + went_out == changes


@settings(deadline=None, max_examples=100)
@given(st.lists(st.lists(st.one_of(st.none(), st.tuples(st.sampled_from([50.0, 150.0, 250.0, 350.0]),
                                                        st.sampled_from([50.0, 150.0, 250.0, 350.0]))),
                         min_size=1, max_size=15), min_size=1, max_size=5))
def test_inside_counts_match_the_positions(paths: list[list[Point | None]]) -> None:
    counter = RegionCounter("cam", zones=[SQUARE], forget_after_frames=100)
    frames = max(len(path) for path in paths)
    for step in range(frames):
        walk(counter, {track: path[step:step + 1] or [None] for track, path in enumerate(paths)},
             first_frame=step)
        # Inside now: every track last seen inside (none is forgotten within 100 frames).
        last_seen = [next((point for point in reversed(path[:step + 1]) if point is not None), None)
                     for path in paths]
        expected = sum(1 for point in last_seen if point is not None and 100 < point[0] < 300
                       and 100 < point[1] < 300)
        zone = counter.counts()["zones"]["square"]
        assert zone["inside"].get("person", 0) == expected
        assert zone["entered"].get("person", 0) - zone["exited"].get("person", 0) == expected


def test_an_id_given_twice_in_a_frame_counts_its_first_box() -> None:
    counter = RegionCounter("cam", zones=[SQUARE], forget_after_frames=1)
    boxes = np.array([box((200.0, 200.0)), box((500.0, 500.0)), box((150.0, 150.0))])
    events = counter.update(0, capture_ns(0), START_TIME, boxes, np.array([1, 1, 2]), np.zeros(3), NAMES)
    assert [(event.kind, event.track_id) for event in events] == [("enter", 1), ("enter", 2)]
    assert counter.tracks == 2
    leaving = counter.update(1, capture_ns(1), START_TIME, np.zeros((0, 4)), np.zeros(0), np.zeros(0))
    assert sorted(event.track_id for event in leaving) == [1, 2] and counter.tracks == 0
