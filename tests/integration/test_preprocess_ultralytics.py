"""Letterbox preprocessing against ultralytics' own per-frame path, on its
bundled photos (the numpy and OpenCV tests are in tests/unit/test_preprocess.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from aip.vision.preprocess import Preprocessor


def random_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def unit_rgb_chw(frame_bgr: np.ndarray) -> np.ndarray:
    """BGR HWC uint8 -> RGB CHW float32 in [0, 1], the plain numpy way."""
    return frame_bgr[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / np.float32(255)


@pytest.fixture(scope="module")
def ultralytics_frames() -> dict[str, np.ndarray]:
    """ultralytics' bundled photos, decoded as its loader does, and a 640x480 frame."""
    cv2 = pytest.importorskip("cv2")
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    from ultralytics.utils import ASSETS

    frames = {name: cv2.imread(str(ASSETS / f"{name}.jpg")) for name in ("bus", "zidane")}
    frames["frame_640x480"] = random_frame(480, 640, seed=9)
    for frame in frames.values():
        frame.flags.writeable = False  # as a view of the shared frame ring is
    return frames


def ultralytics_preprocess(frame: np.ndarray, dst_hw: tuple[int, int], half: bool) -> np.ndarray:
    """ultralytics' per-frame path: LetterBox, then ``BasePredictor.preprocess``'s tensor ops."""
    import torch
    from ultralytics.data.augment import LetterBox

    image = LetterBox(dst_hw, auto=False, stride=32)(image=frame)
    tensor = torch.from_numpy(image).unsqueeze(0).permute(0, 3, 1, 2).contiguous().flip(1)
    return (tensor.half() if half else tensor.float()).div_(255).numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("dst_hw", [(640, 640), (480, 640), (640, 480), (384, 640)])
@pytest.mark.parametrize("name", ["bus", "zidane", "frame_640x480"])
def test_matches_ultralytics_letterbox_path(
    ultralytics_frames: dict[str, np.ndarray], name: str, dst_hw: tuple[int, int], dtype: type[np.floating[Any]]
) -> None:
    frame = ultralytics_frames[name]
    expected = ultralytics_preprocess(frame, dst_hw, half=dtype is np.float16)
    out = Preprocessor(frame.shape, dst_hw, dtype=dtype)(frame)
    assert out.shape == expected.shape and out.dtype == expected.dtype
    assert np.abs(out.astype(np.float32) - expected.astype(np.float32)).max() <= 2 / 255
    # Not required, but true with OpenCV's fixed-point resize replayed: the same values.
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("name", ["bus", "zidane", "frame_640x480"])
def test_rect_shape_matches_ultralytics_auto_letterbox(ultralytics_frames: dict[str, np.ndarray], name: str) -> None:
    """The predictor's rect mode (``auto=True``) for ``.pt`` models, via its output shape."""
    from ultralytics.data.augment import LetterBox

    frame = ultralytics_frames[name]
    rect = LetterBox((640, 640), auto=True, stride=32)(image=frame)
    assert rect.shape[:2] == {"bus": (640, 480), "zidane": (384, 640), "frame_640x480": (480, 640)}[name]
    out = Preprocessor(frame.shape, rect.shape[:2])(frame)
    np.testing.assert_array_equal(out[0], unit_rgb_chw(rect))
