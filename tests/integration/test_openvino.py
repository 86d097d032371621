"""The openvino backend on the CPU: options, the IR cache, requests in flight,
and detections against ultralytics' own OpenVINO path."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aip.backends.base import BackendOptionError, BackendSpec, BackendUnavailable, check_available, create, prepare
from aip.vision.models import ModelSource, RandomWeightsWarning, export

pytest.importorskip("openvino")
pytest.importorskip("ultralytics")
pytest.importorskip("cv2")

from aip.backends.openvino_backend import available_devices, convert, ir_path  # after the skips
from aip.vision.postprocess import postprocess
from aip.vision.preprocess import Preprocessor
from detection_checks import similar_detections

CONF = 1e-4
IOU = 0.7
HW = (480, 640)


def loaded(options: dict[str, Any]) -> Any:
    spec = BackendSpec("openvino", options)
    check_available(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # said once, by the fixture
        backend = create(prepare(spec))
        backend.load()
    return backend


def detect(backend: Any, frame: np.ndarray) -> np.ndarray:
    pre = Preprocessor(frame.shape, backend.input_hw)
    tensor = np.empty((1, 3, *backend.input_hw), np.float32)
    pre.into(frame, tensor[0])
    return postprocess(backend.infer(tensor), frame.shape[:2], pre.params, CONF, IOU)


def test_the_cpu_is_listed_and_a_missing_device_is_refused() -> None:
    assert "CPU" in available_devices()
    with pytest.raises(BackendUnavailable, match="no device NPU"):
        check_available(BackendSpec("openvino", {"device": "NPU"}))


@pytest.mark.parametrize("options, message", [
    ({"hint": "fastest"}, "latency or throughput"),
    ({"requests": 0}, "requests must be >= 1"),
    ({"threads": 0}, "threads must be >= 1"),
])
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_available(BackendSpec("openvino", options))


def test_an_unknown_option_is_refused() -> None:
    with pytest.raises(BackendOptionError, match="openvino"):
        check_available(BackendSpec("openvino", {"stream": 2}))


def test_the_ir_is_converted_once_and_cached_beside_the_onnx(seeded: ModelSource) -> None:
    onnx = export(seeded, "onnx", HW)
    xml = convert(onnx)
    assert xml == ir_path(onnx) and xml.exists() and xml.with_suffix(".bin").exists()
    stamp = xml.stat().st_mtime_ns
    assert convert(onnx) == xml and xml.stat().st_mtime_ns == stamp  # from the cache
    spec = prepare(BackendSpec("openvino", {"model": str(onnx), "imgsz": HW}))  # an .onnx: no export
    assert spec.options["model"] == str(xml)


def test_detections_match_ultralytics_openvino_export(seeded: ModelSource, frames: list[np.ndarray],
                                                      tmp_path: Path) -> None:
    from ultralytics import YOLO

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = YOLO(str(seeded.path), task="detect").export(format="openvino", imgsz=list(HW),
                                                                 verbose=False)
    reference = YOLO(exported, task="detect")
    backend = loaded({"model": str(seeded.path), "imgsz": HW})
    try:
        for frame in frames[::6]:
            expected = reference.predict(frame, imgsz=list(HW), conf=CONF, iou=IOU, verbose=False)[0]
            theirs = np.concatenate([expected.boxes.xyxy.numpy(), expected.boxes.conf.numpy()[:, None],
                                     expected.boxes.cls.numpy()[:, None]], axis=1).astype(np.float32)
            share, why = similar_detections(detect(backend, frame), theirs, min_iou=0.99,
                                            score_rtol=1e-3)
            assert share >= 0.98, why
    finally:
        backend.close()


def test_requests_in_flight_give_the_same_outputs(seeded: ModelSource, frames: list[np.ndarray]) -> None:
    """Throughput hint: several requests at once, finished out of order, each
    output the one of its own input."""
    single = loaded({"model": str(seeded.path), "imgsz": HW})
    many = loaded({"model": str(seeded.path), "imgsz": HW, "hint": "throughput", "requests": 3})
    try:
        assert many.requests_in_flight == 3
        tensors = []
        for frame in frames[:6]:
            pre = Preprocessor(frame.shape, HW)
            tensor = np.empty((1, 3, *HW), np.float32)
            pre.into(frame, tensor[0])
            tensors.append(tensor)
        done: dict[int, np.ndarray] = {}
        for start in range(0, 6, 3):
            for i in range(start, start + 3):
                many.submit(tensors[i], i)
            while len(done) < start + 3:
                for tag, output in many.finished(10.0):
                    assert not isinstance(output, BaseException)
                    done[tag] = output
        for i, tensor in enumerate(tensors):
            np.testing.assert_allclose(done[i], single.infer(tensor), rtol=1e-4, atol=1e-4)
    finally:
        single.close()
        many.close()
