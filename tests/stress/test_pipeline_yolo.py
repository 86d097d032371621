"""Real YOLO11 through the whole pipeline: the detections equal ultralytics' own."""
from __future__ import annotations

import itertools
import multiprocessing as mp
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("ultralytics")
cv2 = pytest.importorskip("cv2")

from aip.backends import BackendSpec  # noqa: E402
from aip.pipeline import Pipeline  # noqa: E402
from aip.vision.models import resolve_model  # noqa: E402
from aip.results import FrameResult  # noqa: E402
from aip.io.samples import VIDEO_FRAMES, make_video  # noqa: E402
from aip.io.sources import VideoFileSource  # noqa: E402
from detection_checks import assert_same_detections  # noqa: E402

pytestmark = [
    pytest.mark.stress,
    pytest.mark.filterwarnings("ignore::aip.vision.models.RandomWeightsWarning"),
]

CONF = 1e-4  # a seeded model scores every box near 1.6e-4
IMGSZ = (480, 640)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("media") / "bus_zidane.mp4")


@pytest.fixture(scope="module")
def reference(video: Path) -> list[np.ndarray]:
    """ultralytics' own predictor, same weights, same frames, same threshold."""
    from ultralytics import YOLO

    model = YOLO(str(resolve_model(None).path), task="detect")
    with VideoFileSource(video) as source:
        frames = [frame for frame, _ in source]
    out = []
    for frame in frames:
        boxes = model.predict(frame, imgsz=list(IMGSZ), conf=CONF, verbose=False)[0].boxes
        out.append(np.column_stack([boxes.xyxy.numpy(), boxes.conf.numpy(), boxes.cls.numpy()]))
    return out


def spec(name: str) -> BackendSpec:
    return BackendSpec(name, {"imgsz": IMGSZ, "threads": 1})


@pytest.mark.parametrize("backend", ["cpu", "onnx"])
def test_pipeline_detections_equal_ultralytics(backend: str, video: Path,
                                               reference: list[np.ndarray]) -> None:
    with VideoFileSource(video) as source, Pipeline([spec(backend)], mode="pull", conf=CONF) as pipeline:
        results = list(pipeline.run(source))
    assert [r.frame_id for r in results] == list(range(VIDEO_FRAMES))
    for result, expected in zip(results, reference):
        assert isinstance(result, FrameResult) and result.backend == backend
        assert_same_detections(result.detections, expected)
    assert mp.active_children() == []


@pytest.mark.parametrize("backend", ["cpu", "onnx"])
def test_batched_detections_equal_ultralytics_frame_by_frame(
    backend: str, video: Path, reference: list[np.ndarray],
) -> None:
    # Batches of 4 (an ONNX model with a free batch dimension), one inference
    # call per batch: each frame's detections are still ultralytics' own.
    batched = BackendSpec(backend, {"imgsz": IMGSZ, "threads": 1, "batch": 4, "max_wait_ms": 100})
    with VideoFileSource(video) as source, Pipeline([batched], mode="pull", conf=CONF) as pipeline:
        results = list(pipeline.run(source))
    assert [r.frame_id for r in results] == list(range(VIDEO_FRAMES))
    starts = {r.t_infer_start_ns for r in results}
    assert len(starts) < VIDEO_FRAMES  # frames did share inference calls
    for result, expected in zip(results, reference):
        assert isinstance(result, FrameResult)
        assert_same_detections(result.detections, expected)
    assert mp.active_children() == []


def test_heterogeneous_calibrated_run_takes_every_frame_once_in_order(
    video: Path, reference: list[np.ndarray], tmp_path: Path
) -> None:
    with VideoFileSource(video) as source, Pipeline([spec("onnx"), spec("cpu")], mode="static",
                                                    conf=CONF) as pipeline:
        frames = iter(source)
        first, _ = next(frames)
        calibration = pipeline.calibrate(first, seconds=1.0, cache_path=tmp_path / "cal.json")
        assert set(calibration.together_fps) == set(calibration.alone_fps)
        assert all(weight >= 1 for weight in pipeline.weights)
        results: list[Any] = list(pipeline.run(itertools.chain([first], frames)))
    assert [r.frame_id for r in results] == list(range(VIDEO_FRAMES))
    assert {r.backend for r in results} == {"onnx", "cpu"}
    for result, expected in zip(results, reference):
        assert_same_detections(result.detections, expected)
    assert mp.active_children() == []


def test_worker_that_fails_to_load_raises_with_its_traceback() -> None:
    from aip.pipeline import WorkerError

    broken = BackendSpec("cpu", {"imgsz": IMGSZ, "threads": "many"})  # int("many") fails in load()
    with pytest.raises(WorkerError, match=r"(?s)failed to start.*ValueError.*many"):
        with Pipeline([broken]) as pipeline:
            pipeline.start((48, 64, 3))
    assert mp.active_children() == []
