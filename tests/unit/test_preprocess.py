"""Letterbox preprocessing: geometry and exact pixels.

The first tests need only numpy; those that compare against OpenCV skip
without it. The comparisons with ultralytics' own path are in
tests/integration/test_preprocess_ultralytics.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import aip.vision.preprocess
from aip.vision.preprocess import Preprocessor, letterbox_into, letterbox_params

ONE_LEVEL = 1 / 255  # one step of an 8-bit pixel after scaling to [0, 1]
PAD = np.float32(114) / np.float32(255)


def random_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def unit_rgb_chw(frame_bgr: np.ndarray) -> np.ndarray:
    """BGR HWC uint8 -> RGB CHW float32 in [0, 1], the plain numpy way."""
    return frame_bgr[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / np.float32(255)


def float_bilinear(frame: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
    """Textbook half-pixel-centre bilinear resize in float64, edges clamped (HWC)."""

    def taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
        lo = np.floor(pos).astype(int)
        return lo, np.minimum(lo + 1, src - 1), pos - lo

    y0, y1, fy = taps(frame.shape[0], new_h)
    x0, x1, fx = taps(frame.shape[1], new_w)
    img = frame.astype(np.float64)
    rows = img[y0] * (1 - fy)[:, None, None] + img[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


# --- geometry -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst", "expected"),
    [
        ((480, 640), (640, 640), (1.0, 480, 640, 80, 0)),
        ((480, 640), (480, 640), (1.0, 480, 640, 0, 0)),
        ((1080, 810), (640, 640), (640 / 1080, 640, 480, 0, 80)),  # bus.jpg
        ((720, 1280), (640, 640), (0.5, 360, 640, 140, 0)),  # zidane.jpg
        ((720, 1280), (384, 640), (0.5, 360, 640, 12, 0)),  # zidane.jpg, rect shape
        ((240, 320), (640, 640), (2.0, 480, 640, 80, 0)),  # scale up
        ((100, 200), (100, 255), (1.0, 100, 200, 0, 27)),  # odd padding: 27 left, 28 right
        ((4, 5), (2, 10), (0.5, 2, 2, 0, 4)),  # 2.5 rounds half to even, as Python's round
        ((1, 3000), (640, 640), (640 / 3000, 1, 640, 319, 0)),  # a side never drops below 1; 319 top, 320 bottom
    ],
)
def test_letterbox_params_known_shapes(
    src: tuple[int, int], dst: tuple[int, int], expected: tuple[float, int, int, int, int]
) -> None:
    scale, *rest = letterbox_params(*src, *dst)
    assert scale == pytest.approx(expected[0])
    assert tuple(rest) == expected[1:]


@pytest.mark.parametrize("bad", [(0, 640, 640, 640), (480, -1, 640, 640), (480, 640, 640, 0.5)])
def test_letterbox_params_rejects_non_positive_sizes(bad: tuple[Any, ...]) -> None:
    with pytest.raises(ValueError):
        letterbox_params(*bad)


# --- pixels, numpy only ---------------------------------------------------------


def test_same_size_is_a_pure_channel_swap_and_scale() -> None:
    frame = random_frame(480, 640)
    out = Preprocessor(frame.shape, (480, 640))(frame)
    assert out.shape == (1, 3, 480, 640) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], unit_rgb_chw(frame))


def test_padding_is_114_around_the_unscaled_frame() -> None:
    frame = random_frame(480, 640)
    out = Preprocessor(frame.shape, (640, 640))(frame)[0]
    np.testing.assert_array_equal(out[:, 80:560], unit_rgb_chw(frame))
    assert (out[:, :80] == PAD).all() and (out[:, 560:] == PAD).all()


def test_left_right_padding_of_a_portrait_frame() -> None:
    frame = random_frame(640, 400, seed=1)
    out = Preprocessor(frame.shape, (640, 640))(frame)[0]
    np.testing.assert_array_equal(out[:, :, 120:520], unit_rgb_chw(frame))
    assert (out[:, :, :120] == PAD).all() and (out[:, :, 520:] == PAD).all()


@pytest.mark.parametrize(
    ("src", "dst"),
    [((1080, 810), (640, 640)), ((720, 1280), (384, 640)), ((123, 77), (640, 640)), ((240, 320), (480, 640))],
)
def test_resize_is_bilinear_within_one_level(src: tuple[int, int], dst: tuple[int, int]) -> None:
    """Down and up: within one 8-bit step of an exact float bilinear resize."""
    frame = random_frame(*src, seed=2)
    pre = Preprocessor(frame.shape, dst)
    _, new_h, new_w, top, left = pre.params
    content = pre(frame)[0, :, top : top + new_h, left : left + new_w]
    expected = float_bilinear(frame, new_h, new_w)[:, :, ::-1].transpose(2, 0, 1) / 255
    # OpenCV rounds its fixed-point weights and result to bytes: at most one level off.
    assert np.abs(content - expected).max() <= ONE_LEVEL + 1e-6


def test_read_only_frame_is_read_in_place() -> None:
    frame = random_frame(480, 640)
    frame.flags.writeable = False
    out = Preprocessor(frame.shape, (640, 640))(frame)
    np.testing.assert_array_equal(out[0, :, 80:560], unit_rgb_chw(frame))


def test_strided_frame_gives_the_same_result_as_its_copy() -> None:
    big = random_frame(600, 800, seed=3)
    crop = big[50:530, 100:740]  # a (480, 640) view with a row stride of 800 pixels
    pre = Preprocessor(crop.shape, (640, 640))
    np.testing.assert_array_equal(pre(crop), pre(np.ascontiguousarray(crop)).copy())


def test_output_buffer_is_owned_and_reused() -> None:
    pre = Preprocessor((480, 640, 3), (640, 640))
    first = pre(random_frame(480, 640, seed=4))
    second = pre(random_frame(480, 640, seed=5))
    assert first is second is pre.output


def test_float16_is_float32_rounded_to_half() -> None:
    frame = random_frame(720, 1280, seed=6)
    as_float32 = Preprocessor(frame.shape, (640, 640))(frame)
    as_float16 = Preprocessor(frame.shape, (640, 640), dtype=np.float16)(frame)
    assert as_float16.dtype == np.float16
    np.testing.assert_array_equal(as_float16, as_float32.astype(np.float16))


def test_letterbox_into_matches_preprocessor_for_3d_and_4d_outputs() -> None:
    frame = random_frame(720, 1280, seed=7)
    expected = Preprocessor(frame.shape, (384, 640))(frame)
    params = letterbox_params(720, 1280, 384, 640)
    planes = np.empty((3, 384, 640), dtype=np.float32)
    batch = np.empty((1, 3, 384, 640), dtype=np.float32)
    letterbox_into(frame, planes, params)
    letterbox_into(frame, batch, params)
    np.testing.assert_array_equal(planes, expected[0])
    np.testing.assert_array_equal(batch, expected)


def test_bad_inputs_are_refused_clearly() -> None:
    pre = Preprocessor((480, 640), (640, 640))
    with pytest.raises(ValueError, match="made for"):
        pre(random_frame(480, 600))
    with pytest.raises(ValueError, match="uint8"):
        pre(random_frame(480, 640).astype(np.float32))
    with pytest.raises(ValueError, match="3 channels"):
        Preprocessor((480, 640, 4), (640, 640))
    with pytest.raises(ValueError, match="float32 or float16"):
        Preprocessor((480, 640), (640, 640), dtype=np.float64)
    frame = random_frame(480, 640)
    with pytest.raises(ValueError, match="do not fit"):
        letterbox_into(frame, np.empty((3, 320, 320), np.float32), letterbox_params(480, 640, 640, 640))
    with pytest.raises(ValueError, match="writeable C-contiguous"):
        letterbox_into(frame, np.empty((640, 640, 3), np.float32), letterbox_params(480, 640, 640, 640))


def test_import_pulls_in_neither_torch_nor_cv2() -> None:
    src_dir = Path(aip.vision.preprocess.__file__).resolve().parents[1]
    code = "import sys, aip.vision.preprocess; print(sorted({'torch', 'cv2'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=src_dir)
    assert result.stdout.strip() == "[]"


# --- OpenCV: the resize is OpenCV's, byte for byte ---------------------------------


@pytest.mark.parametrize(
    ("src", "new_hw"),
    [
        ((1080, 810), (640, 480)),  # bus.jpg into 640x640
        ((720, 1280), (360, 640)),  # exactly 2x: OpenCV switches to INTER_AREA, same result
        ((480, 640), (384, 512)),
        ((123, 77), (640, 401)),  # upscale: rows past the edge keep their weights
        ((100, 100), (150, 150)),
        ((480, 640), (500, 667)),  # odd widths exercise OpenCV's vector tails
        ((1081, 1919), (359, 641)),
    ],
)
def test_resize_matches_cv2_resize_exactly(src: tuple[int, int], new_hw: tuple[int, int]) -> None:
    cv2 = pytest.importorskip("cv2")
    frame = random_frame(*src, seed=8)
    resized = cv2.resize(frame, new_hw[::-1], interpolation=cv2.INTER_LINEAR)
    out = np.empty((3, *new_hw), dtype=np.float32)
    letterbox_into(frame, out, (0.0, *new_hw, 0, 0))  # any size: the kernel ignores the scale
    np.testing.assert_array_equal(out, unit_rgb_chw(resized))
