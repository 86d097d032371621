"""Tracking: aip's track ids equal ultralytics' ``model.track(persist=True)``
frame for frame, with one worker and with several (order is what makes it
hold); gaps move the tracker's clock; configs that cannot work say why.

The seeded model scores every box about 1.6e-4 or 3.9e-5, so the tracker's
thresholds are set below that, and score fusion is off (it multiplies IoU by
the score, and no match would pass).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aip.backends.base import BackendSpec, prepare
from aip.results import FrameResult, Gap

CONF = 1e-4
HW = (480, 640)  # what ultralytics' letterbox makes of a 640x480 frame at imgsz=640
LOW_THRESHOLDS = """\
tracker_type: bytetrack
track_high_thresh: 0.0001
track_low_thresh: 0.00005
new_track_thresh: 0.0001
track_buffer: 30
match_thresh: 0.8
fuse_score: False
"""


@pytest.fixture(scope="module")
def tracker_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trackers") / "low.yaml"
    path.write_text(LOW_THRESHOLDS)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One scene panning right, a cut to the other for a while, and back.

    The seeded model's boxes hardly depend on the picture, so its tracks run
    steadily through the cuts: what this video holds is order and identity
    over many frames and workers. Tracks that end and start again are held
    by the tests on synthetic boxes below."""
    import cv2

    from aip.io.samples import base_frames

    bus, zidane = base_frames()
    frames = ([np.roll(bus, 3 * i, axis=1) for i in range(16)] + [np.roll(zidane, 3 * i, axis=1) for i in range(8)]
              + [np.roll(bus, 3 * (16 + i), axis=1) for i in range(12)])
    path = tmp_path_factory.mktemp("media") / "pan.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30, (HW[1], HW[0]))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def ultralytics_ids(seeded: Any, video: Path, tracker_yaml: Path) -> list[list[int]]:
    """Track ids per frame from ``model.track(stream=True, persist=True)``; [] where it gives none."""
    from ultralytics import YOLO

    model = YOLO(str(seeded.path))
    ids = []
    for result in model.track(str(video), stream=True, persist=True, conf=CONF, imgsz=640,
                              tracker=str(tracker_yaml), verbose=False):
        found = result.boxes.id
        ids.append([] if found is None else found.numpy().astype(int).tolist())
    return ids


def aip_ids(seeded: Any, video: Path, tracker_yaml: Path, workers: int, mode: str) -> list[FrameResult]:
    from aip.pipeline import Pipeline

    spec = prepare(BackendSpec("cpu", {"threads": 1, "imgsz": HW, "model": str(seeded.path)}))
    with Pipeline([spec] * workers, mode=mode, conf=CONF, track=str(tracker_yaml)) as pipeline:
        results = list(pipeline.run(str(video)))
    assert all(isinstance(r, FrameResult) for r in results)
    return [r for r in results if isinstance(r, FrameResult)]


@pytest.mark.filterwarnings("ignore::aip.vision.models.RandomWeightsWarning")  # seeded: same on both sides
@pytest.mark.parametrize(("workers", "mode"), [(1, "static"), (2, "pull")])
def test_track_ids_equal_ultralytics_frame_for_frame(seeded: Any, video: Path, tracker_yaml: Path,
                                                     ultralytics_ids: list[list[int]], workers: int,
                                                     mode: str) -> None:
    results = aip_ids(seeded, video, tracker_yaml, workers, mode)
    assert len(results) == len(ultralytics_ids) == 36
    assert sum(len(ids) for ids in ultralytics_ids) > 0, "the reference tracked nothing: a vacuous comparison"
    if workers > 1:
        assert len({r.worker for r in results}) == workers  # every worker had frames, out of order
    for frame_id, (result, expected) in enumerate(zip(results, ultralytics_ids)):
        assert result.frame_id == frame_id
        assert result.track_ids is not None and result.track_ids.dtype == np.int64
        assert result.track_ids.tolist() == expected, f"frame {frame_id}"
        assert len(result.detections) == len(result.track_ids)


def _result(frame_id: int, boxes: list[list[float]]) -> FrameResult:
    detections = np.array([[*box, 0.9, 0] for box in boxes], np.float32).reshape(-1, 6)
    return FrameResult(frame_id, "test", 0, detections, 0, 0, 0, 0, 0, stream="s")


def test_a_gap_is_time_passing_for_the_tracker() -> None:
    """A track unseen for more than track_buffer frames (gaps included) ends;
    one seen again within it keeps its id."""
    from aip.track.tracker import StreamTracker, load_tracker_config

    config = load_tracker_config("bytetrack.yaml")
    box = [100.0, 100.0, 200.0, 300.0]
    tracker = StreamTracker(config)
    first = tracker.update(_result(0, [box]))
    second = tracker.update(_result(1, [box]))
    assert first.track_ids.tolist() == second.track_ids.tolist() == [1]
    for _ in range(5):
        tracker.skip()
    assert tracker.update(_result(7, [box])).track_ids.tolist() == [1]  # found again, same id
    buffer = dict(config.settings)["track_buffer"]
    for _ in range(buffer + 2):
        tracker.skip()
    again = tracker.update(_result(8 + buffer + 2, [box]))
    assert again.track_ids.tolist() in ([], [2])  # the old track is gone: a new one (confirmed on its next frame)
    assert tracker.update(_result(9 + buffer + 2, [box])).track_ids.tolist() == [2]


def test_gaps_in_a_run_reach_the_tracker(seeded: Any) -> None:
    """A stream whose frames are dropped (drop-newest under a slow worker)
    still gets tracks: the gaps come out in place, the results carry ids."""
    from aip.pipeline import Pipeline

    spec = BackendSpec("sim", {"latency_s": 0.02})
    frames = [np.zeros((64, 64, 3), np.uint8)] * 40
    with Pipeline([spec], on_full="drop-newest", n_slots=2, track="bytetrack.yaml") as pipeline:
        out = list(pipeline.run(iter(frames)))
    assert [r.frame_id for r in out] == list(range(40))
    assert any(isinstance(r, Gap) for r in out)
    assert all(r.track_ids is not None for r in out if isinstance(r, FrameResult))


@pytest.mark.parametrize(("spec", "error", "message"), [
    ("nosuch.yaml", FileNotFoundError, "bytetrack.yaml"),
    ("tracker.txt", ValueError, "not a YAML file"),
    ("https://example.com/t.yaml", ValueError, "downloads nothing"),
])
def test_a_tracker_config_that_cannot_load_says_why(spec: str, error: type[Exception], message: str) -> None:
    from aip.track.tracker import load_tracker_config

    with pytest.raises(error, match=message):
        load_tracker_config(spec)


def test_reid_and_a_config_of_the_wrong_kind_are_refused(tmp_path: Path) -> None:
    from aip.track.tracker import load_tracker_config

    reid = tmp_path / "reid.yaml"
    reid.write_text("tracker_type: botsort\nwith_reid: True\n")
    with pytest.raises(ValueError, match="with_reid"):
        load_tracker_config(reid)
    other = tmp_path / "data.yaml"
    other.write_text("path: coco\nnames: [a]\n")
    with pytest.raises(ValueError, match="tracker_type"):
        load_tracker_config(other)


def test_botsort_motion_compensation_needs_the_frames() -> None:
    from aip.pipeline import Pipeline

    with Pipeline([BackendSpec("sim", {"latency_s": 0.0})]) as pipeline:
        with pytest.raises(ValueError, match="keep_frames"):
            pipeline.add_stream(iter([np.zeros((8, 8, 3), np.uint8)]), track="botsort.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Pipeline([BackendSpec("sim", {"latency_s": 0.0})], track="botsort.yaml") as pipeline:
            assert pipeline.reader.keep_frames  # asked for by the tracker
            out = list(pipeline.run(iter([np.full((64, 64, 3), i, np.uint8) for i in range(5)])))
    assert [r.frame_id for r in out] == list(range(5))


def test_a_line_in_a_run_gives_crossings_and_counts() -> None:
    """sim boxes drift right one pixel a frame and jump back every 16: the
    first box's anchor crosses a line at x=31.5 going right, then back."""
    from aip.pipeline import Pipeline
    from aip.track import Line, Zone

    line = Line("door", (31.5, 0.0), (31.5, 480.0))
    zone = Zone("left", ((0.0, 0.0), (31.5, 0.0), (31.5, 480.0), (0.0, 480.0)))
    frames = [np.zeros((128, 128, 3), np.uint8)] * 40
    with Pipeline([BackendSpec("sim", {"latency_s": 0.0, "boxes": 4})], class_names=["person", "car", "dog"]) as pipeline:
        pipeline.add_stream(iter(frames), name="cam", lines=[line], zones=[zone])
        results = [r for r in pipeline.run() if isinstance(r, FrameResult)]
        counts = pipeline.tracking.counts()
        exposition = _scrape(pipeline)
    events = [e for r in results for e in r.events]
    crossings = [e for e in events if e.kind == "cross"]
    assert crossings and all(e.region == "door" and e.stream == "cam" for e in crossings)
    assert {e.class_name for e in crossings} == {"person", "dog"}  # boxes 0 and 2: the first column
    directions = [e.direction for e in crossings if e.track_id == crossings[0].track_id]
    assert directions[:2] in (["in", "out"], ["out", "in"])
    assert counts["cam"]["lines"]["door"]["in"] or counts["cam"]["lines"]["door"]["out"]
    assert {e.kind for e in events} >= {"enter", "exit", "cross"}
    assert all(r.class_names == ("person", "car", "dog") for r in results)
    crossed = sum(counts["cam"]["lines"]["door"][d].get("person", 0) for d in ("in", "out"))
    assert f'aip_line_crossings_total{{class="person",direction="in",line="door",stream="cam"}}' in exposition
    assert crossed == sum(1 for e in crossings if e.class_name == "person")
    assert 'aip_zone_entries_total{class="person",stream="cam",zone="left"}' in exposition


def _scrape(pipeline: Any) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    from aip.app.observe import PipelineCollector

    registry = CollectorRegistry()
    registry.register(PipelineCollector(pipeline))
    return generate_latest(registry).decode()


def _line_run(track_in_processes: bool, count: int = 60) -> list[FrameResult]:
    from aip.pipeline import Pipeline
    from aip.track import Line

    frames = [np.zeros((128, 128, 3), np.uint8)] * count
    with Pipeline([BackendSpec("sim", {"latency_s": 0.0, "boxes": 4})],
                  track_in_processes=track_in_processes) as pipeline:
        # One stream: the sim's drift follows its own frame count, the same in both runs.
        pipeline.add_stream(iter(frames), name="a", lines=[Line("door", (31.5, 0.0), (31.5, 480.0))])
        return [r for r in pipeline.run() if isinstance(r, FrameResult)]


def test_tracking_processes_give_what_the_manager_would() -> None:
    """Off the manager's loop (the default) or on it: the same ids and events, in order."""
    remote, local = _line_run(True), _line_run(False)
    key = lambda r: (r.stream, r.frame_id)  # noqa: E731
    assert [key(r) for r in remote] == [("a", i) for i in range(60)]
    assert sum(len(r.events) for r in remote) > 0
    for mine, theirs in zip(sorted(remote, key=key), sorted(local, key=key)):
        assert key(mine) == key(theirs)
        assert mine.track_ids.tolist() == theirs.track_ids.tolist()
        np.testing.assert_array_equal(mine.detections, theirs.detections)
        assert [e.to_dict() | {"timestamp": 0} for e in mine.events] == \
            [e.to_dict() | {"timestamp": 0} for e in theirs.events]


def test_a_dead_tracking_process_is_a_clear_error() -> None:
    import os
    import signal

    from aip.pipeline import Pipeline
    from aip.pipeline.tracking import TrackingError

    def endless() -> Any:
        while True:
            yield np.zeros((64, 64, 3), np.uint8)

    with Pipeline([BackendSpec("sim", {"latency_s": 0.005, "boxes": 2})], track="bytetrack.yaml") as pipeline:
        pipeline.add_stream(endless(), name="cam")
        with pytest.raises(TrackingError, match="tracking process died"):
            for index, _ in enumerate(pipeline.run()):
                if index == 20:
                    assert pipeline.tracking is not None
                    for remote in pipeline.tracking._remotes:
                        os.kill(remote.process.pid, signal.SIGKILL)


def test_a_stream_removed_mid_run_leaves_the_others_tracked() -> None:
    """remove_stream from another thread (as the REST API does): its tracks go,
    its frames in flight still come out, the other stream keeps its ids."""
    import threading

    from aip.pipeline import Pipeline

    def endless() -> Any:
        while True:
            yield np.zeros((64, 64, 3), np.uint8)

    frames = [np.zeros((64, 64, 3), np.uint8)] * 80
    with Pipeline([BackendSpec("sim", {"latency_s": 0.002, "boxes": 2})], track="bytetrack.yaml") as pipeline:
        pipeline.add_stream(iter(frames), name="stays")
        pipeline.add_stream(endless(), name="goes")
        seen: dict[str, list[int]] = {"stays": [], "goes": []}
        for result in pipeline.run():
            seen[result.stream].append(result.frame_id)
            if result.stream == "goes" and result.frame_id == 10:
                threading.Thread(target=pipeline.remove_stream, args=("goes",)).start()
            if isinstance(result, FrameResult) and result.stream == "stays":
                assert result.track_ids is not None
    assert seen["stays"] == list(range(80))
    assert seen["goes"] == list(range(len(seen["goes"]))) and len(seen["goes"]) > 10
