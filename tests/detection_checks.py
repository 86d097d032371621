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


def similar_detections(mine: np.ndarray, expected: np.ndarray, *, min_iou: float,
                       score_rtol: float) -> tuple[float, str]:
    """How many of two detection sets match, when their order may differ.

    Another device or precision (TF32 convolutions, fp16) changes scores in
    their last bits; with a seeded model whose scores are all alike, that
    reorders near-ties and moves boxes across the threshold, so row-by-row
    equality is too strict. Each expected detection is matched greedily to
    the unmatched one of ``mine`` of the same class with the largest IoU; it
    counts when that IoU is >= ``min_iou`` and the scores agree within
    ``score_rtol``. Returns the matched fraction of the larger set and a
    line that says what differed.
    """
    if len(mine) == 0 and len(expected) == 0:
        return 1.0, "both empty"
    used = np.zeros(len(mine), bool)
    matched, worst_iou, worst_score = 0, 1.0, 0.0
    for row in expected:
        candidates = np.flatnonzero(~used & (mine[:, 5] == row[5]))
        if len(candidates) == 0:
            continue
        ious = box_iou(mine[candidates, :4], np.repeat(row[None, :4], len(candidates), axis=0))
        best = int(np.argmax(ious))
        score_error = abs(float(mine[candidates[best], 4]) - float(row[4])) / max(float(row[4]), 1e-12)
        if ious[best] >= min_iou and score_error <= score_rtol:
            used[candidates[best]] = True
            matched += 1
            worst_iou = min(worst_iou, float(ious[best]))
            worst_score = max(worst_score, score_error)
    fraction = matched / max(len(mine), len(expected))
    return fraction, (f"{matched} of {len(expected)} expected matched among {len(mine)} "
                      f"(worst IoU {worst_iou:.4f}, worst score error {worst_score:.2%})")


def assert_similar_detections(mine: np.ndarray, expected: np.ndarray, *, min_fraction: float,
                              min_iou: float, score_rtol: float) -> None:
    """At least ``min_fraction`` of the detections match (see :func:`similar_detections`)."""
    assert mine.dtype == np.float32 and mine.ndim == 2 and mine.shape[1] == 6, (mine.dtype, mine.shape)
    fraction, how = similar_detections(mine, expected, min_iou=min_iou, score_rtol=score_rtol)
    assert fraction >= min_fraction, f"{fraction:.1%} matched < {min_fraction:.0%}: {how}"


def random_boxes(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Clustered boxes (so many overlap) with scores on a coarse grid (so many tie)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 640, (count // 10 + 1, 2))[rng.integers(0, count // 10 + 1, count)]
    centres += rng.normal(0, 15, (count, 2))
    sizes = rng.uniform(20, 200, (count, 2))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1).astype(np.float32)
    scores = (rng.integers(1, 20, count) / 20).astype(np.float32)
    return boxes, scores
