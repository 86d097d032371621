"""openvino workers in a pipeline: requests in flight finish out of order,
results still leave in order, with the detections of one request at a time."""
from __future__ import annotations

import multiprocessing as mp
import warnings

import numpy as np
import pytest

from aip.backends import BackendSpec
from aip.vision.models import RandomWeightsWarning
from aip.pipeline import Pipeline
from aip.results import FrameResult

pytest.importorskip("openvino")
pytest.importorskip("ultralytics")
pytest.importorskip("cv2")

from aip.io.samples import sample_video  # after the skips
from aip.io.sources import VideoFileSource
from detection_checks import similar_detections

pytestmark = pytest.mark.stress
HW = (480, 640)


def detections(specs: list[BackendSpec], frames: int) -> list[FrameResult]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        with VideoFileSource(sample_video(frames)) as source, \
                Pipeline(specs, mode="pull", conf=1e-4) as pipeline:
            out = list(pipeline.run(source))
    assert all(isinstance(r, FrameResult) for r in out)
    return [r for r in out if isinstance(r, FrameResult)]


def test_requests_in_flight_deliver_every_frame_in_order_with_the_same_detections() -> None:
    frames = 40
    many = detections([BackendSpec("openvino", {"imgsz": HW, "hint": "throughput",
                                                "requests": 3})], frames)
    one = detections([BackendSpec("openvino", {"imgsz": HW, "hint": "latency"})], frames)
    assert [r.frame_id for r in many] == list(range(frames))
    assert len({r.worker for r in many}) == 1
    for mine, reference in zip(many, one):
        share, why = similar_detections(mine.detections, reference.detections, min_iou=0.99,
                                        score_rtol=1e-3)
        assert share >= 0.98, (mine.frame_id, why)
    assert mp.active_children() == []


def test_openvino_beside_onnx_workers() -> None:
    out = detections([BackendSpec("openvino", {"imgsz": HW, "requests": 2}),
                      BackendSpec("onnx", {"imgsz": HW, "threads": 1, "spin": False})], 30)
    assert [r.frame_id for r in out] == list(range(30))
    assert {r.backend for r in out} == {"openvino", "onnx"}
    assert np.mean([len(r.detections) for r in out]) > 0
