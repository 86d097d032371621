"""Result sinks: JSON Lines round trip, annotated video, callback; and FrameResult itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aip.io.samples import VIDEO_FRAMES, VIDEO_HW, video_frames

from aip.pipeline.reorder import Gap
from aip.results import FrameResult
from aip.io.sinks import AnnotatedVideoSink, CallbackSink, JsonLinesSink

NAMES = [f"class{i}" for i in range(80)]


def detections(seed: int, count: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    corners = rng.uniform(0, 300, (count, 2)).astype(np.float32)
    sizes = rng.uniform(20, 200, (count, 2)).astype(np.float32)
    scores = rng.random(count, dtype=np.float32)
    classes = rng.integers(0, 80, count).astype(np.float32)
    return np.column_stack([corners, corners + sizes, scores, classes]).astype(np.float32)


def result(frame_id: int, dets: np.ndarray, frame: np.ndarray | None = None) -> FrameResult:
    base = 1_000_000_000 * frame_id
    return FrameResult(
        frame_id=frame_id,
        backend="onnx",
        worker=1,
        detections=dets,
        t_capture_ns=base,
        t_ingest_ns=base + 1_000_000,
        t_infer_start_ns=base + 2_000_000,
        t_infer_end_ns=base + 14_500_000,
        t_done_ns=base + 20_250_000,
        frame=frame,
    )


def test_frame_result_latencies() -> None:
    item = result(3, detections(0))
    assert item.inference_ms == pytest.approx(12.5)
    assert item.end_to_end_ms == pytest.approx(20.25)


def test_json_lines_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    written = [
        result(0, detections(0)),
        Gap(1, "dropped"),
        result(2, np.zeros((0, 6), np.float32)),
        result(3, detections(3)),
    ]
    with JsonLinesSink(path, class_names=NAMES) as sink:
        for item in written:
            sink.write(item)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 4
    assert lines[1] == {"stream": "", "frame_id": 1, "dropped": "dropped"}
    for line, item in zip(lines[::2] + lines[3:], [written[0], written[2], written[3]]):
        assert isinstance(item, FrameResult)
        assert line["frame_id"] == item.frame_id and line["backend"] == "onnx" and line["worker"] == 1
        assert line["latency_ms"] == pytest.approx(item.end_to_end_ms)
        assert line["inference_ms"] == pytest.approx(item.inference_ms)
        # float32 values come back bit for bit; classes as ints, with their names
        np.testing.assert_array_equal(np.array(line["detections"], np.float32).reshape(-1, 6), item.detections)
        assert all(isinstance(row[5], int) for row in line["detections"])
        assert line["names"] == [NAMES[int(c)] for c in item.detections[:, 5]]


def test_json_lines_without_names(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with JsonLinesSink(path) as sink:
        sink.write(result(0, detections(1)))
    assert "names" not in json.loads(path.read_text())


def test_callback_sink_sees_everything_in_order() -> None:
    seen: list[FrameResult | Gap] = []
    items = [result(0, detections(0)), Gap(1, "lost"), result(2, detections(2))]
    with CallbackSink(seen.append) as sink:
        for item in items:
            sink.write(item)
    assert seen == items


# --- annotated video ----------------------------------------------------------------------


@pytest.fixture
def cv2() -> Any:
    return pytest.importorskip("cv2")


def count_frames(cv2: Any, path: Path) -> tuple[int, tuple[int, int]]:
    capture = cv2.VideoCapture(str(path))
    frames = 0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    while capture.read()[0]:
        frames += 1
    capture.release()
    return frames, size


def test_annotated_video_has_every_frame_with_a_result(cv2: Any, tmp_path: Path) -> None:
    path = tmp_path / "annotated.mp4"
    frames = video_frames()
    with AnnotatedVideoSink(path, fps=10, class_names=NAMES) as sink:
        for frame_id, frame in enumerate(frames):
            if frame_id in (4, 7):
                sink.write(Gap(frame_id, "dropped"))
            else:
                sink.write(result(frame_id, detections(frame_id), frame))
    assert (sink.written, sink.skipped) == (VIDEO_FRAMES - 2, 2)
    assert count_frames(cv2, path) == (VIDEO_FRAMES - 2, (VIDEO_HW[1], VIDEO_HW[0]))


def test_annotated_video_scales_to_the_size_asked(cv2: Any, tmp_path: Path) -> None:
    path = tmp_path / "small.mp4"
    with AnnotatedVideoSink(path, fps=10, size=(320, 240)) as sink:
        for frame_id, frame in enumerate(video_frames(3)):
            sink.write(result(frame_id, detections(frame_id), frame))
    assert count_frames(cv2, path) == (3, (320, 240))


@pytest.mark.usefixtures("cv2")
def test_annotate_draws_the_boxes_on_a_copy() -> None:
    frame = np.zeros((200, 300, 3), np.uint8)
    frame.flags.writeable = False  # like a view of the frame ring
    box = np.array([[50, 60, 150, 160, 0.9, 2]], np.float32)
    image = AnnotatedVideoSink("unused.mp4", fps=1, class_names=NAMES).annotate(frame, box)
    assert not frame.any()
    assert image[110, 50].any() and image[60, 100].any()  # left and top edges
    assert not image[110, 100].any()  # inside the box


@pytest.mark.usefixtures("cv2")
def test_annotated_video_needs_frames(tmp_path: Path) -> None:
    with AnnotatedVideoSink(tmp_path / "x.mp4", fps=10) as sink, pytest.raises(ValueError, match="needs frames kept"):
        sink.write(result(0, detections(0)))
    with pytest.raises(ValueError, match="fps"):
        AnnotatedVideoSink(tmp_path / "y.mp4", fps=0)
