"""Letterbox preprocessing for YOLO in one fused Numba pass.

A camera frame (BGR, HWC, uint8; typically a read-only numpy view of a slot
in the shared frame ring) becomes the network input tensor (1, 3, H, W),
RGB, scaled to [0, 1], float32 or float16, written into a buffer that is
allocated once. Resize, padding, channel swap, transpose and scaling happen
in one pass over the output rows, so no intermediate image is ever made.

The result is bit-identical to ultralytics' own path (``LetterBox`` with
``cv2.resize(..., INTER_LINEAR)`` and ``cv2.copyMakeBorder(value=114)``, then
the predictor's BGR->RGB, HWC->CHW and ``/ 255``) on every shape the tests
try, upscaling and downscaling: the resize replays OpenCV's 8-bit
fixed-point bilinear arithmetic instead of interpolating in float, so every
byte equals the one ``cv2.resize`` makes, and the byte is scaled the way
torch scales it.

Speed, one thread on a 2-vCPU EPYC (benchmarks/preprocess.py): a 640x480
frame into 640x640 takes about 85 us against ultralytics' 340-440 us
(3.9-5.2x; its fresh 5 MB tensors per frame cost page faults, so it
varies), into 480x640 about 70 us against 230-240 us (3.3x). Frames that need a resize
are slower than ultralytics' (1080x810 bus.jpg about 1000 us against 680;
1280x720 about 870 us against 350-460): cv2.resize runs hand-vectorised
code (on one thread: ultralytics turns OpenCV's threads off on import),
while the horizontal pass here is a scalar gather per source row. Blending
rows first would gather once per output row instead, but would no longer
reproduce OpenCV's rounding byte for byte.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit, types
from numba.extending import overload

__all__ = ["LetterboxParams", "Preprocessor", "letterbox_into", "letterbox_params"]

#: ``(scale, new_h, new_w, pad_top, pad_left)``: the frame is resized by
#: ``scale`` to ``new_h x new_w`` and placed at row ``pad_top``, column
#: ``pad_left`` of the network input; everything around it is padding.
LetterboxParams = tuple[float, int, int, int, int]

PAD_VALUE = 114  # ultralytics' letterbox grey, before scaling to [0, 1]

# OpenCV's INTER_LINEAR on 8-bit images weighs pixels with integer
# coefficients scaled by 2**11 (INTER_RESIZE_COEF_BITS in imgproc/resize.cpp).
_COEF_SCALE = 1 << 11

_OUTPUT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


def letterbox_params(src_h: int, src_w: int, dst_h: int, dst_w: int) -> LetterboxParams:
    """Compute how a ``src_h x src_w`` frame is letterboxed into ``dst_h x dst_w``.

    Mirrors ultralytics ``LetterBox(auto=False, scale_fill=False, scaleup=True,
    center=True)`` rounding exactly (Python's round-half-to-even, each side at
    least one pixel, padding split with ``round(d / 2 - 0.1)`` on the top/left).

    ultralytics' predictor letterboxes ``.pt`` models in "rect" mode
    (``auto=True``) to the smallest stride multiple that holds the frame
    resized for imgsz; as (h, w) at imgsz 640: (480, 640) -> (480, 640),
    (720, 1280) and (1080, 1920) -> (384, 640), (1080, 810) -> (640, 480).
    Passing that shape as ``dst_h, dst_w`` reproduces it unless the short
    side rounded down onto a stride multiple: then the scale computed from
    the smaller shape is a hair lower and the long side loses a pixel
    ((1201, 1600) resizes to (480, 639) here, to (480, 640) in rect mode).

    Returns:
        ``(scale, new_h, new_w, pad_top, pad_left)``.
    """
    for name, value in (("src_h", src_h), ("src_w", src_w), ("dst_h", dst_h), ("dst_w", dst_w)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    scale = min(dst_h / src_h, dst_w / src_w)
    new_w = max(round(src_w * scale), 1)
    new_h = max(round(src_h * scale), 1)
    pad_top = round((dst_h - new_h) / 2 - 0.1)
    pad_left = round((dst_w - new_w) / 2 - 0.1)
    return scale, new_h, new_w, pad_top, pad_left


def _resize_taps(
    src_len: int, dst_len: int, *, clamp_weights: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and fixed-point weights of a bilinear resize along one axis.

    Same arithmetic as OpenCV's ``resize`` for INTER_LINEAR: half-pixel
    centres (``src = (dst + 0.5) * src_len / dst_len - 0.5`` computed in
    double, stored as float), each weight rounded to nearest-even on its own
    (so a pair need not sum to 2**11). Out-of-range taps are clamped to the
    border pixel; OpenCV also zeroes the fraction there along x
    (``clamp_weights=True``) but keeps it along y, where both taps then read
    the same border row with the unclamped weights.
    """
    position = ((np.arange(dst_len, dtype=np.float64) + 0.5) * (src_len / dst_len) - 0.5).astype(np.float32)
    floor = np.floor(position)
    frac = position - floor
    index0 = floor.astype(np.intp)
    if clamp_weights:
        frac[(index0 < 0) | (index0 >= src_len - 1)] = 0
    index1 = np.clip(index0 + 1, 0, src_len - 1)
    index0 = np.clip(index0, 0, src_len - 1)
    weight0 = np.rint((np.float32(1) - frac) * np.float32(_COEF_SCALE)).astype(np.int32)
    weight1 = np.rint(frac * np.float32(_COEF_SCALE)).astype(np.int32)
    return index0, index1, weight0, weight1


def _scale_table(dtype: np.dtype) -> np.ndarray:
    """The 256 possible output values ``byte / 255`` as ultralytics computes them.

    The float16 kernel looks its values up here, as raw ``uint16`` bits
    written into a ``uint16`` view of the output, because Numba cannot store
    float16 on the CPU; the float32 kernel divides and uses only the padding.
    """
    levels = np.arange(256, dtype=np.float32)
    if dtype == np.float16:  # torch: uint8 -> half, then half division
        return (levels.astype(np.float16) / np.float16(255)).view(np.uint16)
    return levels / np.float32(255)


def _store_level(plane: Any, x: Any, level: Any, table: Any) -> None:
    """Write ``level / 255`` (``level`` a byte) to ``plane[x]`` in the plane's format.

    Only ever called from Numba, which picks an implementation by dtype below.
    """
    raise NotImplementedError("compiled through its numba overload only")


# Numba requires an overload's implementations to repeat its signature,
# annotations included, hence ``Any`` throughout.
@overload(_store_level, inline="always")
def _store_level_typed(plane: Any, x: Any, level: Any, table: Any) -> Any:
    # float32: divide, as torch does: vectorised, about a quarter of the cost
    # of a table look-up, which LLVM does not vectorise (it would need gathers).
    # float16 (raw uint16 bits): the table, since Numba has no float16.
    if plane.dtype == types.float32:

        def divide(plane: Any, x: Any, level: Any, table: Any) -> None:
            plane[x] = np.float32(level) / np.float32(255)

        return divide

    def look_up(plane: Any, x: Any, level: Any, table: Any) -> None:
        plane[x] = table[level]

    return look_up


# Serial on purpose. A prange version (two chunks of rows, one per core)
# measured, 2-vCPU EPYC, 640x480 -> 640x640 / 1080x810 bus.jpg -> 640x640:
#   one process alone:          serial 87 / 1064 us, prange 56 / 552 us;
#   two processes at once (the pipeline's case, one worker per core):
#                               serial 84 / 1048 us, prange 119-216 / 1859-2292 us.
# Workers already keep every core busy, so threads here only contend with
# the other worker; Numba's default workqueue threading layer also aborts
# when two threads launch parallel kernels at once, which nogil callers may.
# One function on purpose: split into per-row njit helpers, a 640x480 float32 frame took a third longer.
@njit(cache=True, nogil=True)
def _letterbox_kernel(
    frame: np.ndarray,
    out: np.ndarray,
    table: np.ndarray,
    rows0: np.ndarray,
    rows1: np.ndarray,
    row_w0: np.ndarray,
    row_w1: np.ndarray,
    cols0: np.ndarray,
    cols1: np.ndarray,
    col_w0: np.ndarray,
    col_w1: np.ndarray,
    pad_top: int,
    pad_left: int,
) -> None:
    """Fill ``out`` (3, H, W) from ``frame`` (h, w, 3), one output row at a time.

    The resize is separable, as in OpenCV: each source row is interpolated
    horizontally once into ``resized_rows`` (kept while consecutive output
    rows still need it), then two such rows are blended vertically with
    OpenCV's fixed-point rounding (``VResizeLinearVec_32s8u``: each term
    shifted right by 4, a high 16-bit multiply, then a rounding shift by 2),
    so every byte equals ``cv2.resize``'s.
    """
    out_h = out.shape[1]
    new_h, new_w = rows0.shape[0], cols0.shape[0]
    same_size = new_h == frame.shape[0] and new_w == frame.shape[1]
    pad = table[PAD_VALUE]
    # Source row r lives in slot r & 1: the two rows one output row blends are
    # adjacent (or the same row at a border), so they never evict each other.
    resized_rows = np.empty((2, 3, new_w), dtype=np.int32)
    held = np.full(2, -1, dtype=np.intp)
    for y in range(out_h):
        src_y = y - pad_top
        if src_y < 0 or src_y >= new_h:
            out[:, y, :] = pad
            continue
        out[:, y, :pad_left] = pad
        out[:, y, pad_left + new_w :] = pad
        # Slices that start at the padding, indexed from 0 by range(): with
        # indices LLVM can prove non-negative, Numba drops its wraparound
        # check and the loops vectorise (10x faster than ``pad_left + x``).
        red = out[0, y, pad_left : pad_left + new_w]
        green = out[1, y, pad_left : pad_left + new_w]
        blue = out[2, y, pad_left : pad_left + new_w]
        if same_size:  # ultralytics skips cv2.resize here; so do we
            src = frame[src_y].reshape(-1)
            for x in range(new_w):
                _store_level(blue, x, src[3 * x], table)
                _store_level(green, x, src[3 * x + 1], table)
                _store_level(red, x, src[3 * x + 2], table)
            continue
        for src_row in (rows0[src_y], rows1[src_y]):
            slot = src_row & 1
            if held[slot] != src_row:
                src = frame[src_row].reshape(-1)
                blue_h, green_h, red_h = resized_rows[slot, 0], resized_rows[slot, 1], resized_rows[slot, 2]
                for x in range(new_w):
                    left, right, w_left, w_right = 3 * cols0[x], 3 * cols1[x], col_w0[x], col_w1[x]
                    blue_h[x] = src[left] * w_left + src[right] * w_right
                    green_h[x] = src[left + 1] * w_left + src[right + 1] * w_right
                    red_h[x] = src[left + 2] * w_left + src[right + 2] * w_right
                held[slot] = src_row
        upper, lower = resized_rows[rows0[src_y] & 1], resized_rows[rows1[src_y] & 1]
        w_upper, w_lower = row_w0[src_y], row_w1[src_y]
        for channel, plane in enumerate((blue, green, red)):
            top, bottom = upper[channel], lower[channel]
            for x in range(new_w):
                # Numba widens int32 arithmetic to int64, which AVX2 cannot
                # multiply in vectors; the products fit in 27 bits, so casting
                # each back to int32 is exact and lets LLVM use 32-bit lanes
                # (2.4x faster vertical pass).
                upper_part = np.int32(w_upper * (top[x] >> 4)) >> 16
                lower_part = np.int32(w_lower * (bottom[x] >> 4)) >> 16
                # <= 255 for any weights OpenCV's rounding can produce (each
                # pair sums to at most 2**11 + 1), so the table index is safe.
                level = np.int32(upper_part + lower_part + 2) >> 2
                _store_level(plane, x, level, table)


def _check_frame(frame: Any) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be an (h, w, 3) uint8 BGR array, got {frame.dtype} {frame.shape}")
    # The kernel reads whole rows as flat byte runs. A contiguous frame (a
    # ring slot) passes through untouched, read-only or not; only a strided
    # view (a crop, a flipped image) is copied.
    return np.ascontiguousarray(frame)


def _planes(out: np.ndarray) -> np.ndarray:
    """The (3, H, W) view the kernel writes: float32 as is, float16 as raw bits."""
    if out.dtype not in _OUTPUT_DTYPES:
        raise ValueError(f"output must be float32 or float16, got {out.dtype}")
    planes = out[0] if out.ndim == 4 and out.shape[0] == 1 else out
    if planes.ndim != 3 or planes.shape[0] != 3 or not planes.flags.c_contiguous or not planes.flags.writeable:
        raise ValueError(f"output must be a writeable C-contiguous (3, H, W) or (1, 3, H, W) array, got {out.shape}")
    return planes.view(np.uint16) if planes.dtype == np.float16 else planes


class _Plan:
    """Everything about one (frame shape, output shape, dtype) that does not change per frame."""

    def __init__(self, src_h: int, src_w: int, out_h: int, out_w: int, params: LetterboxParams, dtype: np.dtype):
        _, new_h, new_w, pad_top, pad_left = params
        if not (0 <= pad_top and pad_top + new_h <= out_h and 0 <= pad_left and pad_left + new_w <= out_w):
            raise ValueError(f"letterbox params {params} do not fit an output of {out_h}x{out_w}")
        self.table = _scale_table(dtype)
        self.rows = _resize_taps(src_h, new_h, clamp_weights=False)
        self.cols = _resize_taps(src_w, new_w, clamp_weights=True)
        self.pad_top, self.pad_left = pad_top, pad_left

    def run(self, frame: np.ndarray, planes: np.ndarray) -> None:
        _letterbox_kernel(frame, planes, self.table, *self.rows, *self.cols, self.pad_top, self.pad_left)


def letterbox_into(frame_bgr: np.ndarray, out_chw: np.ndarray, params: LetterboxParams) -> None:
    """Letterbox one BGR frame into ``out_chw`` as RGB in [0, 1].

    Args:
        frame_bgr: (h, w, 3) uint8 BGR image; read-only views (shared memory) are fine.
        out_chw: preallocated (3, H, W) or (1, 3, H, W) float32 or float16 array,
            C-contiguous; fully overwritten.
        params: from ``letterbox_params(h, w, H, W)``.

    For a stream of frames of one shape use ``Preprocessor``, which prepares
    the resize tables once instead of on every call.
    """
    frame = _check_frame(frame_bgr)
    planes = _planes(out_chw)
    plan = _Plan(frame.shape[0], frame.shape[1], planes.shape[1], planes.shape[2], params, out_chw.dtype)
    plan.run(frame, planes)


class Preprocessor:
    """Letterboxes frames of one shape into a network input buffer it owns.

    ``output`` is a (1, 3, H, W) array allocated once; every call overwrites
    it and returns it, so copy it (or run inference) before the next call.

    Example:
        >>> pre = Preprocessor((480, 640), (640, 640))
        >>> tensor = pre(frame)            # (1, 3, 640, 640) float32, RGB, [0, 1]
        >>> scale, new_h, new_w, pad_top, pad_left = pre.params
    """

    def __init__(
        self,
        src_shape: tuple[int, ...],
        dst_hw: tuple[int, int],
        dtype: type[np.floating[Any]] | np.dtype = np.float32,
    ) -> None:
        """Prepare for ``src_shape`` frames ((h, w) or (h, w, 3)) into ``dst_hw`` (H, W)."""
        self.dtype = np.dtype(dtype)
        if self.dtype not in _OUTPUT_DTYPES:
            raise ValueError(f"dtype must be float32 or float16, got {self.dtype}")
        if len(src_shape) == 3 and src_shape[2] != 3:
            raise ValueError(f"frames must have 3 channels (BGR), got shape {src_shape}")
        self.src_hw: tuple[int, int] = (int(src_shape[0]), int(src_shape[1]))
        self.dst_hw: tuple[int, int] = (int(dst_hw[0]), int(dst_hw[1]))
        self.params: LetterboxParams = letterbox_params(*self.src_hw, *self.dst_hw)
        self.output: np.ndarray = np.empty((1, 3, *self.dst_hw), dtype=self.dtype)
        self._planes = _planes(self.output)
        self._plan = _Plan(*self.src_hw, *self.dst_hw, self.params, self.dtype)

    def __call__(self, frame_bgr: np.ndarray) -> np.ndarray:
        """Letterbox ``frame_bgr`` ((h, w, 3) uint8 BGR) into ``output`` and return ``output``."""
        return self.into(frame_bgr, self.output, self._planes)

    def into(self, frame_bgr: np.ndarray, out: np.ndarray, planes: np.ndarray | None = None) -> np.ndarray:
        """Letterbox ``frame_bgr`` into ``out``, a (3, H, W) or (1, 3, H, W)
        array of this preprocessor's dtype: e.g. one frame's place in a
        batch tensor (written in place, no copy). Returns ``out``."""
        frame = _check_frame(frame_bgr)
        if frame.shape[:2] != self.src_hw:
            raise ValueError(f"frame is {frame.shape[:2]}, this Preprocessor was made for {self.src_hw}")
        if out.dtype != self.dtype or out.shape[-2:] != self.dst_hw:
            raise ValueError(f"out is {out.shape} {out.dtype}, this Preprocessor writes "
                             f"(3, {self.dst_hw[0]}, {self.dst_hw[1]}) {self.dtype}")
        self._plan.run(frame, _planes(out) if planes is None else planes)
        return out
