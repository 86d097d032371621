"""YOLO detect-head decoding, NMS and mapping boxes back to the frame.

Input is the raw output of a YOLO11 (v8-style) detect head, ``(1, 4 + nc, N)``:
per anchor a box ``(cx, cy, w, h)`` in network-input pixels and ``nc``
class scores, already sigmoided. Output is a compact ``(K, 6)`` float32
array ``[x1, y1, x2, y2, score, class]`` in frame pixels, best first.

Every step mirrors ultralytics 8.4 (``ultralytics.utils.nms.non_max_suppression``
with ``torchvision.ops.nms``, then ``ultralytics.utils.ops.scale_boxes``)
operation for operation in float32, so the detections are the same ones, in
the same order, with the same tie-breaking: boxes are scored by their best
class (first index on a tie), kept when that score is strictly above the
threshold, offset by ``class * max_wh`` so NMS never compares boxes of
different classes, and suppressed greedily in descending score order (a
stable sort: equal scores keep anchor order, as torchvision's CPU kernel
does) when their IoU with a kept box is strictly above ``iou_thres``.

numpy and Numba only: importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

from .preprocess import LetterboxParams

__all__ = ["nms", "non_max_suppression", "postprocess", "scale_boxes_to_frame"]

# Defaults of ultralytics' predictor (cfg/default.yaml: conf 0.25, iou 0.7,
# max_det 300) and of its non_max_suppression (max_nms, max_wh).
DEFAULT_CONF = 0.25
DEFAULT_IOU = 0.7
DEFAULT_MAX_DET = 300
DEFAULT_MAX_NMS = 30_000  # candidates kept for NMS, best first: bounds its O(n^2) worst case
DEFAULT_MAX_WH = 7680  # per-class box offset in pixels; must exceed any input side

_EMPTY = np.zeros((0, 6), dtype=np.float32)


@njit(cache=True, nogil=True)
def _best_class(class_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per anchor (column), the highest class score and its class, first one on a tie.

    One pass over the (nc, N) scores, row by row so the loads are contiguous
    and the compare-select vectorises: about as fast as numpy's ``max(axis=0)``
    alone, and it also yields the argmax without gathering candidate columns.
    """
    best = class_scores[0].copy()
    labels = np.zeros(best.shape[0], dtype=np.int32)
    for label in range(1, class_scores.shape[0]):
        row = class_scores[label]
        for anchor in range(best.shape[0]):
            if row[anchor] > best[anchor]:  # strict: the first maximum wins, as torch's max(1)
                best[anchor] = row[anchor]
                labels[anchor] = label
    return best, labels


@njit(cache=True, nogil=True)
def _greedy_nms(boxes: np.ndarray, order: np.ndarray, iou_thres: float) -> np.ndarray:
    """torchvision's CPU NMS loop (``nms_kernel_impl``), same float32 arithmetic."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    count = order.shape[0]
    suppressed = np.zeros(count, dtype=np.bool_)
    keep = np.empty(count, dtype=np.int64)
    kept = 0
    zero = np.float32(0)
    for rank in range(count):
        i = order[rank]
        if suppressed[i]:
            continue
        keep[kept] = i
        kept += 1
        for later in range(rank + 1, count):
            j = order[later]
            if suppressed[j]:
                continue
            width = max(zero, min(x2[i], x2[j]) - max(x1[i], x1[j]))
            height = max(zero, min(y2[i], y2[j]) - max(y1[i], y1[j]))
            inter = width * height
            if inter / (areas[i] + areas[j] - inter) > iou_thres:
                suppressed[j] = True
    return keep[:kept]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thres: float) -> np.ndarray:
    """Greedy non-maximum suppression, a drop-in for ``torchvision.ops.nms`` on the CPU.

    Args:
        boxes: (n, 4) ``x1, y1, x2, y2``; computed in float32.
        scores: (n,) scores.
        iou_thres: a box is dropped when its IoU with a higher-scored kept box
            is strictly greater than this.

    Returns:
        Indices of the kept boxes (int64), in descending score order; equal
        scores keep their input order.
    """
    boxes = np.ascontiguousarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != (boxes.shape[0],):
        raise ValueError(f"boxes must be (n, 4) and scores (n,), got {boxes.shape} and {scores.shape}")
    keep: np.ndarray = _greedy_nms(boxes, np.argsort(-scores, kind="stable"), float(iou_thres))
    return keep


def non_max_suppression(
    prediction: np.ndarray,
    conf_thres: float = DEFAULT_CONF,
    iou_thres: float = DEFAULT_IOU,
    *,
    classes: Sequence[int] | None = None,
    agnostic: bool = False,
    max_det: int = DEFAULT_MAX_DET,
    max_nms: int = DEFAULT_MAX_NMS,
    max_wh: int = DEFAULT_MAX_WH,
) -> np.ndarray:
    """Decode a YOLO detect head and keep the best non-overlapping boxes.

    Args:
        prediction: ``(1, 4 + nc, N)`` or ``(4 + nc, N)`` head output (any float
            dtype; a CPU torch tensor works too): ``cx, cy, w, h`` in network
            input pixels, then ``nc`` class scores in [0, 1].
        conf_thres: keep boxes whose best class score is strictly above this.
        iou_thres: NMS IoU threshold (strictly above suppresses).
        classes: keep only these class indices (None: all).
        agnostic: suppress across classes instead of within each class.
        max_det: at most this many detections.
        max_nms: at most this many candidates, best first, enter NMS.
        max_wh: per-class coordinate offset that separates classes in NMS.

    Returns:
        ``(K, 6)`` float32 ``[x1, y1, x2, y2, score, class]`` in network input
        pixels, descending score.
    """
    if not (0.0 <= conf_thres <= 1.0 and 0.0 <= iou_thres <= 1.0):
        raise ValueError(f"conf_thres and iou_thres must lie in [0, 1], got {conf_thres} and {iou_thres}")
    candidates = _ranked_candidates(_head_output(prediction), conf_thres, classes, max_nms)
    if candidates is None:
        return _EMPTY.copy()
    xywh, scores, labels, order = candidates
    detections = _xyxy_detections(xywh, scores, labels)
    offsets = detections[:, 5:6] * np.float32(0 if agnostic else max_wh)
    keep: np.ndarray = _greedy_nms(detections[:, :4] + offsets, order, float(iou_thres))
    return np.take(detections, keep[:max_det], axis=0)


def _head_output(prediction: np.ndarray) -> np.ndarray:
    """The head output as a float32 ``(4 + nc, N)`` array; a batch of more than one is refused."""
    head = np.asarray(prediction, dtype=np.float32)
    if head.ndim == 3:
        if head.shape[0] != 1:
            raise ValueError(f"expected a batch of one, got {head.shape[0]} (run this per image)")
        head = head[0]
    if head.ndim != 2 or head.shape[0] < 5:
        raise ValueError(f"expected a (1, 4 + nc, N) head output, got {np.shape(prediction)}")
    return head


def _ranked_candidates(
    head: np.ndarray, conf_thres: float, classes: Sequence[int] | None, max_nms: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The anchors whose best class clears ``conf_thres`` (and is wanted), at most ``max_nms``.

    Returns ``(xywh, scores, labels, order)``, ``order`` ranking them by
    descending score (stable), or None when no anchor clears the threshold.
    """
    best_scores, best_labels = _best_class(np.ascontiguousarray(head[4:]))
    candidates = np.flatnonzero(best_scores > conf_thres)
    if candidates.size == 0:
        return None
    scores, labels = best_scores[candidates], best_labels[candidates]
    xywh = head[:4, candidates].T
    if classes is not None:
        wanted = np.isin(labels, np.asarray(classes))
        xywh, scores, labels = xywh[wanted], scores[wanted], labels[wanted]

    order = np.argsort(-scores, kind="stable")
    if order.size > max_nms:
        # ultralytics re-sorts here with torch's unstable argsort; the two can
        # differ only among exactly equal scores at the max_nms cut.
        order = order[:max_nms]
        xywh, scores, labels = xywh[order], scores[order], labels[order]
        order = np.arange(order.size)
    return xywh, scores, labels, order


def _xyxy_detections(xywh: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(K, 6)`` float32 rows ``[x1, y1, x2, y2, score, class]`` from centre boxes."""
    detections = np.empty((scores.size, 6), dtype=np.float32)
    half_wh = xywh[:, 2:] / np.float32(2)
    detections[:, :2] = xywh[:, :2] - half_wh
    detections[:, 2:4] = xywh[:, :2] + half_wh
    detections[:, 4] = scores
    detections[:, 5] = labels
    return detections


def scale_boxes_to_frame(
    detections: np.ndarray,
    frame_hw: tuple[int, int],
    params: LetterboxParams,
) -> np.ndarray:
    """Map ``[x1, y1, x2, y2, ...]`` rows from the letterboxed input back to the frame, in place.

    ``params`` is ``aip.vision.preprocess.letterbox_params(h, w, H, W)`` for the
    frame's ``(h, w)``. Like ultralytics' ``scale_boxes``: subtract the
    padding, divide by the per-axis gain (``new_w / w``, ``new_h / h``, which
    differ slightly after rounding), clip to the frame. Returns
    ``detections``.
    """
    frame_h, frame_w = frame_hw
    _, new_h, new_w, pad_top, pad_left = params
    boxes = detections[:, :4]
    boxes[:, 0::2] -= pad_left
    boxes[:, 1::2] -= pad_top
    boxes[:, 0::2] /= new_w / frame_w
    boxes[:, 1::2] /= new_h / frame_h
    np.clip(boxes[:, 0::2], 0, frame_w, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, frame_h, out=boxes[:, 1::2])
    return detections


def postprocess(
    prediction: np.ndarray,
    frame_hw: tuple[int, int],
    params: LetterboxParams,
    conf_thres: float = DEFAULT_CONF,
    iou_thres: float = DEFAULT_IOU,
    *,
    classes: Sequence[int] | None = None,
    agnostic: bool = False,
    max_det: int = DEFAULT_MAX_DET,
    max_nms: int = DEFAULT_MAX_NMS,
    max_wh: int = DEFAULT_MAX_WH,
) -> np.ndarray:
    """Head output -> ``(K, 6)`` float32 detections in frame pixels.

    ``non_max_suppression`` (same arguments) followed by
    ``scale_boxes_to_frame`` for a frame of ``frame_hw`` letterboxed with
    ``params``.
    """
    detections = non_max_suppression(
        prediction,
        conf_thres,
        iou_thres,
        classes=classes,
        agnostic=agnostic,
        max_det=max_det,
        max_nms=max_nms,
        max_wh=max_wh,
    )
    return scale_boxes_to_frame(detections, frame_hw, params)
