"""NMS and the whole postprocess chain against torchvision and ultralytics on
the seeded yolo11n's real head outputs (the numpy-only tests are in
tests/unit/test_postprocess.py). Each skips where its reference is missing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from aip.vision.postprocess import nms, postprocess
from aip.vision.preprocess import Preprocessor
from detection_checks import assert_same_detections, random_boxes

NC = 80


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("iou_thres", [0.3, 0.7])
def test_nms_equals_torchvision(seed: int, iou_thres: float) -> None:
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    boxes, scores = random_boxes(2000, seed)
    expected = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou_thres).numpy()
    np.testing.assert_array_equal(nms(boxes, scores, iou_thres), expected)


@pytest.fixture(scope="module")
def ultralytics_nms() -> Any:
    pytest.importorskip("torch")
    # ultralytics calls torchvision.ops.nms only when torchvision is already
    # imported (its predictor imports it); otherwise its own TorchNMS, whose
    # unstable argsort orders equal scores differently. The seeded model
    # scores every candidate equally, so that order decides everything.
    pytest.importorskip("torchvision")
    pytest.importorskip("ultralytics")
    try:
        from ultralytics.utils.nms import non_max_suppression as reference
    except ImportError:  # ultralytics < 8.3.150
        from ultralytics.utils.ops import non_max_suppression as reference
    return reference


def seeded_yolo11n() -> Any:
    """yolo11n built from its yaml with torch seeded to 0: no weights to download."""
    import torch
    from ultralytics import YOLO

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return YOLO("yolo11n.yaml")


@pytest.fixture(scope="module")
def frames(ultralytics_nms: Any) -> dict[str, np.ndarray]:
    import cv2
    from ultralytics.utils import ASSETS

    frames = {name: cv2.imread(str(ASSETS / f"{name}.jpg")) for name in ("bus", "zidane")}
    frames["frame_640x480"] = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    return frames


@pytest.fixture(scope="module")
def raw_outputs(frames: dict[str, np.ndarray]) -> dict[tuple[str, tuple[int, int]], tuple[np.ndarray, Preprocessor]]:
    """The seeded network's real head output per (frame, input shape), and its Preprocessor."""
    import torch

    network = seeded_yolo11n().model.eval()
    outputs = {}
    for name, frame in frames.items():
        for dst_hw in ((640, 640), (480, 640)):
            pre = Preprocessor(frame.shape, dst_hw)
            with torch.inference_mode():
                prediction = network(torch.from_numpy(pre(frame)))
            prediction = prediction[0] if isinstance(prediction, (list, tuple)) else prediction
            outputs[name, dst_hw] = prediction.numpy().copy(), pre
    return outputs


def ultralytics_detections(
    reference_nms: Any, raw: np.ndarray, pre: Preprocessor, conf: float, iou: float, **options: Any
) -> np.ndarray:
    """ultralytics' non_max_suppression, then scale_boxes as its DetectionPredictor calls it."""
    import torch
    from ultralytics.utils.ops import scale_boxes

    dets = reference_nms(torch.from_numpy(raw.copy()), conf, iou, **options)[0]
    dets[:, :4] = scale_boxes(pre.dst_hw, dets[:, :4], pre.src_hw)
    return dets.numpy()


OPTIONS = [
    {},
    {"agnostic": True},
    {"classes": [0, 2]},
    {"classes": [1, 2]},
    {"max_det": 10},
    {"iou_thres": 0.45},
    {"conf_thres": 5e-5},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("dst_hw", [(640, 640), (480, 640)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", ["bus", "zidane", "frame_640x480"])
def test_same_detections_as_ultralytics_on_seeded_yolo11n(
    ultralytics_nms: Any,
    raw_outputs: dict[tuple[str, tuple[int, int]], tuple[np.ndarray, Preprocessor]],
    name: str,
    dst_hw: tuple[int, int],
    options: dict[str, Any],
) -> None:
    raw, pre = raw_outputs[name, dst_hw]
    options = dict(options)  # shared between parametrized cases
    conf = options.pop("conf_thres", 1e-4)  # the seeded model scores everything below 2e-4
    iou = options.pop("iou_thres", 0.7)
    expected = ultralytics_detections(ultralytics_nms, raw, pre, conf, iou, **options)
    mine = postprocess(raw, pre.src_hw, pre.params, conf, iou, **options)
    if options.get("classes") != [1, 2]:  # the seeded model's best class is always 0
        assert len(expected) > 0
    # The seeded model's scores are all about 1.6e-4, so 1e-4 alone says little:
    # ask for float32 agreement too.
    assert_same_detections(mine, expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("options", "distinct"),
    [
        ({}, False),
        ({"agnostic": True}, False),
        ({"classes": [3, 14, 15]}, False),
        ({"max_det": 25}, False),
        ({"max_nms": 300}, True),
    ],
)
def test_same_detections_as_ultralytics_with_varied_scores(
    ultralytics_nms: Any,
    raw_outputs: dict[tuple[str, tuple[int, int]], tuple[np.ndarray, Preprocessor]],
    options: dict[str, Any],
    distinct: bool,
) -> None:
    """The network's real boxes with seeded random class scores: many classes, many ties.

    Scores sit on a grid of 50 levels so that equal scores are common, except
    with ``distinct``: for ``max_nms``, where ultralytics cuts with torch's
    unstable argsort, each anchor's best score is made unique, since the
    order among equal scores there is the sort's accident.
    """
    raw, pre = raw_outputs["bus", (640, 640)]
    raw = raw.copy()
    rng = np.random.default_rng(1)
    class_scores = raw[0, 4:]
    anchors = np.arange(class_scores.shape[1])
    if distinct:
        class_scores[:] = rng.random(class_scores.shape, dtype=np.float32) * 0.5
        best = 0.5 + 0.5 * rng.permutation(anchors.size) / anchors.size
        class_scores[rng.integers(0, NC, anchors.size), anchors] = best
    else:
        class_scores[:] = np.round(rng.random(class_scores.shape, dtype=np.float32) ** 8 * 50) / 50
    expected = ultralytics_detections(ultralytics_nms, raw, pre, 0.05, 0.6, **options)
    mine = postprocess(raw, pre.src_hw, pre.params, 0.05, 0.6, **options)
    assert len(np.unique(expected[:, 5])) >= 3
    # The seeded model's scores are all about 1.6e-4, so 1e-4 alone says little:
    # ask for float32 agreement too.
    assert_same_detections(mine, expected, rtol=1e-6)


@pytest.mark.parametrize("name", ["bus", "zidane", "frame_640x480"])
def test_whole_chain_equals_ultralytics_predict(frames: dict[str, np.ndarray], name: str) -> None:
    """aip's preprocess -> the predictor's own network -> aip's postprocess equals ``YOLO.predict``.

    The predictor letterboxes ``.pt`` models to a stride-multiple "rect"
    shape; the same shape is given to the Preprocessor.
    """
    import torch
    from ultralytics.data.augment import LetterBox

    frame = frames[name]
    model = seeded_yolo11n()
    expected = model.predict(frame, conf=1e-4, verbose=False)[0].boxes.data.numpy()
    rect_hw = LetterBox((640, 640), auto=True, stride=32)(image=frame).shape[:2]
    pre = Preprocessor(frame.shape, rect_hw)
    with torch.inference_mode():
        prediction = model.predictor.model(torch.from_numpy(pre(frame)))
    prediction = prediction[0] if isinstance(prediction, (list, tuple)) else prediction
    mine = postprocess(prediction.numpy(), pre.src_hw, pre.params, 1e-4, 0.7)
    assert len(expected) > 0
    # The seeded model's scores are all about 1.6e-4, so 1e-4 alone says little:
    # ask for float32 agreement too.
    assert_same_detections(mine, expected, rtol=1e-6)
