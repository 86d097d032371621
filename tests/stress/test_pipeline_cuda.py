"""The pipeline with ``cuda`` workers, and with ``cuda`` beside ``onnx`` CPU workers.

Skipped, with the reason, where torch sees no GPU; never skipped where it
does (see ``tests/cuda_checks.py``). Frames come from the test video; each
result is compared with the ``cpu`` backend's detections of the same frame
(the GPU reorders near-ties: matched by class and IoU), an ``onnx`` result
with ultralytics-equal precision (row by row).
"""
from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aip.backends import BackendSpec
from cuda_checks import cuda_mark, require
from detection_checks import assert_same_detections, assert_similar_detections

pytestmark = [
    pytest.mark.stress,
    pytest.mark.filterwarnings("ignore::aip.vision.models.RandomWeightsWarning"),
    cuda_mark(),
]

CONF = 1e-4  # a seeded model scores every box near 1.6e-4
IMGSZ = (480, 640)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("torch", "ultralytics", "onnxruntime", "cv2")
    from aip.io.samples import make_video

    return make_video(tmp_path_factory.mktemp("media") / "bus_zidane.mp4")


@pytest.fixture(scope="module")
def reference(video: Path) -> list[np.ndarray]:
    """The cpu backend's detections of every frame, in this process."""
    from aip.backends.base import create
    from aip.vision.postprocess import postprocess
    from aip.vision.preprocess import Preprocessor
    from aip.io.sources import VideoFileSource

    backend = create(BackendSpec("cpu", {"imgsz": IMGSZ}))
    backend.load()
    out = []
    with VideoFileSource(video) as source:
        for frame, _ in source:
            pre = Preprocessor(frame.shape, IMGSZ)
            out.append(postprocess(backend.infer(pre(frame)), frame.shape[:2], pre.params, CONF, 0.7))
    backend.close()
    return out


def spec(name: str, **options: Any) -> BackendSpec:
    return BackendSpec(name, {"imgsz": IMGSZ, "threads": 1, **options})


def check(results: list[Any], reference: list[np.ndarray]) -> None:
    from aip.results import FrameResult
    from aip.io.samples import VIDEO_FRAMES

    assert [r.frame_id for r in results] == list(range(VIDEO_FRAMES))
    for result, expected in zip(results, reference):
        assert isinstance(result, FrameResult)
        if result.backend.startswith("onnx"):
            assert_same_detections(result.detections, expected)
        else:
            assert result.backend.startswith("cuda")
            assert_similar_detections(result.detections, expected, min_fraction=0.8, min_iou=0.9,
                                      score_rtol=0.1)


def run(specs: list[BackendSpec], video: Path, **pipeline: Any) -> tuple[list[Any], Any]:
    from aip.pipeline import Pipeline
    from aip.io.sources import VideoFileSource

    with VideoFileSource(video) as source, Pipeline(specs, conf=CONF, **pipeline) as running:
        results = list(running.run(source))
    assert mp.active_children() == []
    return results, running


@pytest.mark.parametrize("options", [{}, {"half": 1, "pinned": 1, "graphs": 1}], ids=["plain", "tuned"])
def test_two_cuda_workers_share_the_gpu(options: dict[str, Any], video: Path,
                                        reference: list[np.ndarray]) -> None:
    results, _ = run([spec("cuda", **options), spec("cuda", **options)], video, mode="pull")
    check(results, reference)


def test_cuda_and_onnx_workers_each_take_their_share(video: Path, reference: list[np.ndarray]) -> None:
    """Static 1:1 weights: the cycle hints every other frame to each backend."""
    results, _ = run([spec("cuda"), spec("onnx")], video, mode="static", weights=[1, 1])
    check(results, reference)
    assert {r.backend for r in results} == {"cuda", "onnx"}


def test_cuda_and_onnx_calibrated_run_takes_every_frame_once_in_order(
    video: Path, reference: list[np.ndarray], tmp_path: Path
) -> None:
    import itertools

    from aip.pipeline import Pipeline
    from aip.io.sources import VideoFileSource

    with VideoFileSource(video) as source, Pipeline([spec("cuda", half=1), spec("onnx")], mode="static",
                                                    conf=CONF) as pipeline:
        frames = iter(source)
        first, _ = next(frames)
        calibration = pipeline.calibrate(first, seconds=1.0, cache_path=tmp_path / "cal.json")
        assert set(calibration.together_fps) == set(calibration.alone_fps)
        assert pipeline.weights[0] >= 1  # the GPU always takes frames
        results = list(pipeline.run(itertools.chain([first], frames)))
    check(results, reference)
    assert mp.active_children() == []
