"""What "the same detections as ultralytics" means, for the tests that compare with it."""
from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of two (K, 4) xyxy arrays; identical boxes count as 1 even when empty."""
    width = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    height = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = width * height
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return np.where((a == b).all(axis=1), 1.0, iou)


def assert_same_detections(mine: np.ndarray, expected: np.ndarray, *, rtol: float = 0.0) -> None:
    """Same count, and row by row (same order): IoU >= 0.99, same class, score within 1e-4."""
    assert mine.dtype == np.float32 and mine.shape == expected.shape, (mine.shape, expected.shape)
    assert (box_iou(mine[:, :4], expected[:, :4]) >= 0.99).all()
    np.testing.assert_array_equal(mine[:, 5], expected[:, 5])
    np.testing.assert_allclose(mine[:, 4], expected[:, 4], atol=1e-4, rtol=rtol)
