"""YOLO head decoding, NMS and box rescaling.

Head outputs built by hand; numpy only. The comparisons with torchvision and
ultralytics on a real network's output are in
tests/integration/test_postprocess_ultralytics.py.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import aip.vision.postprocess
from aip.vision.postprocess import nms, non_max_suppression, postprocess, scale_boxes_to_frame
from aip.vision.preprocess import letterbox_params
from detection_checks import random_boxes

NC = 80


def head(boxes_xyxy: Sequence[Sequence[float]], labels: Sequence[int], scores: Sequence[float]) -> np.ndarray:
    """A (1, 4 + NC, N) head output: one scored class per anchor, every other class 0."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    out = np.zeros((1, 4 + NC, len(boxes)), dtype=np.float32)
    out[0, 0] = (boxes[:, 0] + boxes[:, 2]) / 2
    out[0, 1] = (boxes[:, 1] + boxes[:, 3]) / 2
    out[0, 2] = boxes[:, 2] - boxes[:, 0]
    out[0, 3] = boxes[:, 3] - boxes[:, 1]
    out[0, 4 + np.asarray(labels), np.arange(len(boxes))] = scores
    return out


def kept_boxes(detections: np.ndarray) -> list[list[float]]:
    return detections[:, :4].tolist()


A = [0, 0, 100, 100]
A_SHIFTED = [10, 0, 110, 100]  # IoU with A = 90 / 110 = 0.82
FAR = [300, 300, 400, 400]


# --- decoding and NMS on hand-made heads -----------------------------------------------


def test_overlapping_boxes_of_one_class_keep_the_best() -> None:
    dets = non_max_suppression(head([A_SHIFTED, A], [3, 3], [0.6, 0.9]), 0.25, 0.7)
    assert dets.dtype == np.float32 and dets.shape == (1, 6)
    assert dets[0].tolist() == pytest.approx([*A, 0.9, 3])


def test_overlapping_boxes_of_different_classes_are_both_kept() -> None:
    dets = non_max_suppression(head([A, A_SHIFTED], [3, 5], [0.9, 0.6]), 0.25, 0.7)
    assert dets[:, 5].tolist() == [3, 5]


def test_agnostic_suppresses_across_classes() -> None:
    dets = non_max_suppression(head([A, A_SHIFTED, FAR], [3, 5, 7], [0.9, 0.6, 0.5]), 0.25, 0.7, agnostic=True)
    assert dets[:, 5].tolist() == [3, 7]


def test_iou_equal_to_the_threshold_does_not_suppress() -> None:
    half = [0, 0, 100, 50]  # IoU with A exactly 0.5
    assert len(non_max_suppression(head([A, half], [0, 0], [0.9, 0.8]), 0.25, 0.5)) == 2
    assert len(non_max_suppression(head([A, half], [0, 0], [0.9, 0.8]), 0.25, 0.49)) == 1


def test_score_equal_to_the_threshold_is_dropped() -> None:
    dets = non_max_suppression(head([A, FAR], [0, 0], [0.5, 0.25]), 0.25, 0.7)
    assert kept_boxes(dets) == [A]


def test_max_det_keeps_the_best() -> None:
    boxes = [[200 * i, 0, 200 * i + 100, 100] for i in range(6)]
    dets = non_max_suppression(head(boxes, [0] * 6, [0.3, 0.9, 0.5, 0.8, 0.4, 0.7]), 0.25, 0.7, max_det=3)
    assert dets[:, 4].tolist() == pytest.approx([0.9, 0.8, 0.7])


def test_max_nms_caps_the_candidates_before_nms() -> None:
    boxes = [[200 * i, 0, 200 * i + 100, 100] for i in range(5)]
    dets = non_max_suppression(head(boxes, [0] * 5, [0.3, 0.9, 0.5, 0.8, 0.4]), 0.25, 0.7, max_nms=2)
    assert dets[:, 4].tolist() == pytest.approx([0.9, 0.8])


def test_classes_filter() -> None:
    dets = non_max_suppression(head([A, FAR, A_SHIFTED], [1, 2, 3], [0.9, 0.8, 0.7]), 0.25, 0.7, classes=[2, 3])
    assert dets[:, 5].tolist() == [2, 3]


def test_equal_scores_keep_anchor_order() -> None:
    dets = non_max_suppression(head([A_SHIFTED, A, FAR], [0, 0, 0], [0.5, 0.5, 0.5]), 0.25, 0.7)
    assert kept_boxes(dets) == [A_SHIFTED, FAR]


def test_best_class_is_the_first_on_a_tie() -> None:
    out = head([A], [7], [0.6])
    out[0, 4 + 9, 0] = 0.6
    assert non_max_suppression(out, 0.25, 0.7)[0, 5] == 7


def test_nothing_above_the_threshold_gives_an_empty_float32_array() -> None:
    dets = postprocess(head([A], [0], [0.1]), (480, 640), letterbox_params(480, 640, 640, 640), 0.25, 0.7)
    assert dets.shape == (0, 6) and dets.dtype == np.float32


def test_accepts_unbatched_and_float16_heads() -> None:
    batched = head([A, FAR], [1, 2], [0.9, 0.8])
    expected = non_max_suppression(batched, 0.25, 0.7)
    np.testing.assert_array_equal(non_max_suppression(batched[0], 0.25, 0.7), expected)
    np.testing.assert_array_equal(non_max_suppression(batched.astype(np.float16), 0.25, 0.7)[:, :4], expected[:, :4])


def test_bad_heads_and_thresholds_are_refused() -> None:
    with pytest.raises(ValueError, match="batch of one"):
        non_max_suppression(np.zeros((2, 84, 10), np.float32))
    with pytest.raises(ValueError, match="head output"):
        non_max_suppression(np.zeros((84,), np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        non_max_suppression(head([A], [0], [0.9]), 1.5)


# --- nms itself -----------------------------------------------------------------------


def reference_nms(boxes: np.ndarray, scores: np.ndarray, iou_thres: float) -> list[int]:
    """Greedy NMS written the obvious way, in float64."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # sorted() is stable
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    for i in order:
        suppressed = False
        for k in keep:
            width = max(0.0, min(boxes[i, 2], boxes[k, 2]) - max(boxes[i, 0], boxes[k, 0]))
            height = max(0.0, min(boxes[i, 3], boxes[k, 3]) - max(boxes[i, 1], boxes[k, 1]))
            inter = width * height
            if inter / (areas[i] + areas[k] - inter) > iou_thres:
                suppressed = True
                break
        if not suppressed:
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("iou_thres", [0.3, 0.7])
def test_nms_equals_a_plain_greedy_reference(seed: int, iou_thres: float) -> None:
    boxes, scores = random_boxes(300, seed)
    assert nms(boxes, scores, iou_thres).tolist() == reference_nms(boxes.astype(np.float64), scores, iou_thres)


# --- back to frame coordinates ------------------------------------------------------------


def test_scale_boxes_removes_padding_and_clips() -> None:
    params = letterbox_params(480, 640, 640, 640)  # 80 rows of padding above and below
    dets = np.array([[10, 90, 100, 200, 0.9, 1], [-5, 70, 700, 600, 0.8, 2]], dtype=np.float32)
    out = scale_boxes_to_frame(dets, (480, 640), params)
    assert out is dets
    np.testing.assert_array_equal(out, np.array([[10, 10, 100, 120, 0.9, 1], [0, 0, 640, 480, 0.8, 2]], np.float32))


def test_scale_boxes_undoes_the_resize() -> None:
    params = letterbox_params(1080, 810, 640, 640)  # 480x640 content, 80 columns of padding left
    dets = np.array([[80, 0, 560, 640, 0.5, 0], [200, 320, 320, 480, 0.5, 0]], dtype=np.float32)
    out = scale_boxes_to_frame(dets, (1080, 810), params)
    np.testing.assert_allclose(out[:, :4], [[0, 0, 810, 1080], [202.5, 540, 405, 810]], rtol=1e-6)


def test_import_does_not_pull_in_torch() -> None:
    src_dir = Path(aip.vision.postprocess.__file__).resolve().parents[1]
    code = "import sys, aip.vision.postprocess; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=src_dir)
    assert result.stdout.strip() == "False"
