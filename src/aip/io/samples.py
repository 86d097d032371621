"""A sample video made on the spot: ultralytics' bundled photos, panned.

aip ships no media. ``bus.jpg`` and ``zidane.jpg`` ship inside the
ultralytics package; they are found without importing it (its import
changes global settings). Without ultralytics the frames are drawn shapes
instead. Used by ``aip run``'s default source, the benchmarks and the tests.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

import numpy as np

VIDEO_FRAMES = 12
VIDEO_HW = (480, 640)
VIDEO_FPS = 10.0


def ultralytics_asset(name: str) -> Path | None:
    """Path of one of ultralytics' bundled images, or None without ultralytics."""
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / name
    return path if path.is_file() else None


def letterboxed(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``image`` scaled to fit ``hw`` keeping its aspect ratio, centred on grey."""
    import cv2

    height, width = hw
    scale = min(height / image.shape[0], width / image.shape[1])
    new_w, new_h = round(image.shape[1] * scale), round(image.shape[0] * scale)
    canvas = np.full((height, width, 3), 114, np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return canvas


def base_frames(hw: tuple[int, int] = VIDEO_HW) -> list[np.ndarray]:
    """Two distinct 640x480 scenes: the bundled photos, or drawn shapes without ultralytics."""
    import cv2

    photos = [ultralytics_asset(name) for name in ("bus.jpg", "zidane.jpg")]
    images = [cv2.imread(str(path)) for path in photos if path is not None]
    if len(images) == len(photos) and all(image is not None for image in images):
        return [letterboxed(image, hw) for image in images if image is not None]
    drawn = []
    for colour in ((40, 160, 220), (200, 80, 30)):
        frame = np.full((*hw, 3), 90, np.uint8)
        cv2.rectangle(frame, (100, 80), (400, 360), colour, -1)
        cv2.circle(frame, (480, 240), 90, colour[::-1], -1)
        drawn.append(frame)
    return drawn


def video_frames(count: int = VIDEO_FRAMES, hw: tuple[int, int] = VIDEO_HW) -> list[np.ndarray]:
    """Alternating scenes, each shifted a little further right, so every frame differs."""
    scenes = base_frames(hw)
    return [np.roll(scenes[i % len(scenes)], 6 * i, axis=1) for i in range(count)]


def make_video(path: Path, count: int = VIDEO_FRAMES, hw: tuple[int, int] = VIDEO_HW, fps: float = VIDEO_FPS) -> Path:
    """Write ``video_frames`` as an mp4v video at ``path``."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (hw[1], hw[0]))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write a video at {path}")
    for frame in video_frames(count, hw):
        writer.write(frame)
    writer.release()
    return path


def sample_video(count: int = 120, cache_dir: Path | None = None) -> Path:
    """The cached sample video of ``count`` 640x480 frames, made on first use."""
    from aip.vision.models import default_cache_dir

    directory = cache_dir or default_cache_dir().parent / "samples"
    kind = "photos" if ultralytics_asset("bus.jpg") else "shapes"
    path = directory / f"sample-{kind}-{count}-{VIDEO_HW[1]}x{VIDEO_HW[0]}.mp4"
    if not path.exists():
        partial = path.with_suffix(f".{os.getpid()}-{threading.get_ident()}.mp4")  # per opener: two may race
        make_video(partial, count)
        os.replace(partial, path)  # never a half-written sample for another process
    return path
