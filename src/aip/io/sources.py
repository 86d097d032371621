"""Where frames come from: video files, cameras and network streams, image folders, noise.

Every source is an iterator of ``(frame, capture_time_ns)``: ``frame`` a
C-contiguous ``(h, w, 3)`` uint8 BGR array (treat it as read-only), and
``capture_time_ns`` the ``time.perf_counter_ns()`` at which the source got
it (the clock every stage of the pipeline stamps with).
All frames of one source have one shape, :attr:`FrameSource.shape`, the
first frame's: a frame of another size either stops the run with a
:class:`FrameSizeChangedError` (``on_resize="error"``, the default) or is
scaled to the first size (``on_resize="resize"``).

Sources do not pace: they hand out frames as fast as they are asked and
report their native rate in :attr:`FrameSource.fps`; the manager paces.
OpenCV is imported when a source that needs it opens.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

from aip.io.credentials import redact

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "FrameSizeChangedError",
    "FrameSource",
    "GrabbedFrame",
    "ImageFolderSource",
    "StreamDeadError",
    "StreamSource",
    "SyntheticSource",
    "VideoFileSource",
    "open_source",
]

Frame = tuple[np.ndarray, int]
ResizePolicy = Literal["error", "resize"]

IMAGE_SUFFIXES = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


class FrameSizeChangedError(ValueError):
    """A frame's size differs from the first frame's and the source refuses to resize it."""


class StreamDeadError(ConnectionError):
    """A camera or network stream gave no frame despite every reconnect attempt."""


@runtime_checkable
class FrameSource(Protocol):
    """An iterator of ``(BGR frame, capture_time_ns)`` with its shape and native rate."""

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(h, w, 3)`` of every frame."""
        ...

    @property
    def fps(self) -> float | None:
        """The native frame rate (a file's or a camera's), or None when it has none."""
        ...

    def __iter__(self) -> Iterator[Frame]: ...

    def __next__(self) -> Frame: ...

    def close(self) -> None:
        """Release the file, device or connection; iteration then stops."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class _Source:
    """Iteration, the frame-size policy and context management shared by the sources.

    A subclass sets ``_shape`` (and ``_fps``) when it opens and implements
    ``_read()``: the next raw frame stamped when it was read, or None at the end.
    """

    def __init__(self, name: str, on_resize: ResizePolicy) -> None:
        if on_resize not in ("error", "resize"):
            raise ValueError(f"on_resize must be 'error' or 'resize', got {on_resize!r}")
        self.name = name
        self.on_resize = on_resize
        self.frames_read = 0
        self._shape: tuple[int, int, int] = (0, 0, 3)
        self._fps: float | None = None
        self._closed = False

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape

    @property
    def fps(self) -> float | None:
        return self._fps

    def _read(self) -> Frame | None:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        return self

    def __next__(self) -> Frame:
        read = None if self._closed else self._read()
        if read is None:
            raise StopIteration
        frame, captured_ns = read
        frame = self._conform(frame)
        self.frames_read += 1
        return frame, captured_ns

    def peek(self) -> np.ndarray | None:
        """The next frame without taking it (for calibration), when the source holds it."""
        first = getattr(self, "_first", None)
        return None if first is None else first[0]

    def read_into(self, out: np.ndarray) -> int | None:
        """Read the next frame into ``out`` (an array of :attr:`shape`, e.g. a
        frame slot in shared memory); return its capture time, or None at the end."""
        try:
            frame, captured_ns = next(self)
        except StopIteration:
            return None
        np.copyto(out, frame)
        return captured_ns

    def _conform(self, frame: np.ndarray) -> np.ndarray:
        if frame.shape != self._shape:
            if self.on_resize == "error":
                height, width = frame.shape[:2]
                raise FrameSizeChangedError(
                    f"{self.name}: frame {self.frames_read} is {width}x{height}, the first was "
                    f"{self._shape[1]}x{self._shape[0]}; pass on_resize='resize' to scale frames to the first size"
                )
            import cv2

            frame = cv2.resize(frame, (self._shape[1], self._shape[0]), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(frame)

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        height, width, _ = self._shape
        return f"{type(self).__name__}({self.name!r}, {width}x{height}, fps={self._fps})"


class _CaptureSource(_Source):
    """A source read through ``cv2.VideoCapture``; the first frame is read on open."""

    _capture: Any = None
    _first: Frame | None = None

    def _start(self, capture: Any, first: Frame) -> None:
        import cv2

        self._capture, self._first = capture, first
        self._shape = (int(first[0].shape[0]), int(first[0].shape[1]), 3)
        self._fps = float(capture.get(cv2.CAP_PROP_FPS)) or None

    def _read(self) -> Frame | None:
        if self._first is not None:
            return self._take_first()
        return self._read_capture()

    def _take_first(self) -> Frame:
        """The frame read when the source opened, stamped as it is handed
        out: a source opened before the workers loaded (and calibrated) must
        not count that wait as its first frame's latency."""
        assert self._first is not None
        frame, self._first = self._first[0], None
        return frame, time.perf_counter_ns()

    def _read_capture(self, out: np.ndarray | None = None) -> Frame | None:
        ok, frame = self._capture.read(out) if out is not None else self._capture.read()
        return (frame, time.perf_counter_ns()) if ok else None

    def read_into(self, out: np.ndarray) -> int | None:
        """Decode the next frame straight into ``out`` (FFmpeg writes into it
        when the size matches: each frame is written once); its capture time,
        or None at the end."""
        if self._closed:
            return None
        read = self._take_first() if self._first is not None else self._read_capture(out)
        if read is None:
            return None
        frame, captured_ns = read
        if frame is not out:  # the first frame, or a size change: conform and copy
            np.copyto(out, self._conform(frame))
        self.frames_read += 1
        return captured_ns

    def close(self) -> None:
        super().close()
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class VideoFileSource(_CaptureSource):
    """Frames of a video file, decoded by OpenCV (FFmpeg), until its end."""

    def __init__(self, path: str | Path, *, on_resize: ResizePolicy = "error",
                 decode_threads: int = 1) -> None:
        """Open ``path`` and decode its first frame.

        ``decode_threads``: FFmpeg's decoding threads. One keeps up with
        1080p at real-time rates, and the workers need the other cores: on
        2 cores, FFmpeg's default (one per core) cost 1.09 ms of CPU per
        640x480 frame against 0.76 ms with one.

        Raises:
            FileNotFoundError: there is no such file.
            ValueError: OpenCV cannot decode a frame from it.
        """
        path = Path(path).expanduser()
        super().__init__(str(path), on_resize)
        if not path.is_file():
            raise FileNotFoundError(f"video file {str(path)!r} not found")
        import cv2

        capture = cv2.VideoCapture(str(path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, decode_threads])
        ok, first = capture.read()  # False on a capture that did not open, too
        if not ok:
            capture.release()
            raise ValueError(f"{path} is not a readable video: OpenCV could not decode a frame from it")
        self._start(capture, (first, time.perf_counter_ns()))


class GrabbedFrame:
    """A live frame taken off its camera's connection and kept in the
    reader's own memory, not yet in a slot: the encoded JPEG of an MJPEG
    stream (decoded only if a worker will take it), else the decoded frame.

    ``capture_ns`` is when the reader drained it from the connection
    (``time.perf_counter_ns()``): the earliest moment the process had it.
    """

    __slots__ = ("capture_ns", "_encoded", "_decoded", "_source")

    def __init__(self, capture_ns: int, source: _Source, *, encoded: np.ndarray | None = None,
                 decoded: np.ndarray | None = None) -> None:
        self.capture_ns = capture_ns
        self._encoded = encoded
        self._decoded = decoded
        self._source = source

    @property
    def shape(self) -> tuple[int, int, int]:
        """The size it decodes to: its source's."""
        return self._source.shape

    @property
    def needs_decode(self) -> bool:
        return self._encoded is not None

    def write_into(self, out: np.ndarray) -> None:
        """Decode (or copy) the frame into ``out``, an array of the source's shape.

        Raises:
            ValueError: the bytes are not a decodable image (a corrupt frame).
            FrameSizeChangedError: its size differs and the source refuses to resize.
        """
        frame = self._decoded
        encoded = self._encoded
        if frame is None and encoded is not None:
            import cv2

            frame = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
            if frame is None:
                raise ValueError(f"{self._source.name}: a frame of {encoded.size} bytes is not "
                                 "a decodable JPEG")
        assert frame is not None
        np.copyto(out, self._source._conform(frame))


class StreamSource(_CaptureSource):
    """A camera (by index) or a network stream (RTSP, HTTP, ...), reconnected when it fails.

    When a read fails, the stream is reopened up to ``reconnect_attempts``
    times, waiting ``backoff_s``, then twice as long each time (at most
    ``max_backoff_s``); a frame resets the count. Past the last attempt,
    :class:`StreamDeadError`. A stream never ends on its own: stop it with
    :meth:`close`.
    """

    def __init__(
        self,
        source: str | int,
        *,
        reconnect_attempts: int = 5,
        read_timeout_s: float = 5.0,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        on_resize: ResizePolicy = "error",
    ) -> None:
        """Connect (with the same reconnect policy) and read the first frame.

        ``read_timeout_s`` bounds opening and each read of a network stream
        (OpenCV's FFmpeg timeouts); cameras block in their driver.
        """
        # The name is for messages: never the credentials (self.source keeps the URL to open).
        super().__init__(f"camera {source}" if isinstance(source, int) else redact(str(source)),
                         on_resize)
        if reconnect_attempts < 0 or read_timeout_s <= 0:
            raise ValueError("reconnect_attempts must be >= 0 and read_timeout_s > 0")
        self.source = source
        self.reconnect_attempts = reconnect_attempts
        self.read_timeout_s = read_timeout_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.reconnects = 0  # over the whole run, for reports
        self._last_frame_at = time.monotonic()
        self._open()
        self._start(self._capture, self._read_with_reconnect())

    def _open(self) -> None:
        import cv2

        if isinstance(self.source, int):
            capture = cv2.VideoCapture(self.source)
        else:
            timeout_ms = int(self.read_timeout_s * 1000)
            capture = cv2.VideoCapture(
                self.source,
                cv2.CAP_FFMPEG,
                [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms],
            )
        self._capture = capture

    def _read_with_reconnect(self, out: np.ndarray | None = None) -> Frame:
        for attempt in range(self.reconnect_attempts + 1):
            if attempt:
                time.sleep(min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s))
                self._capture.release()
                self._open()
                self.reconnects += 1
            if self._capture.isOpened():
                ok, frame = self._capture.read(out) if out is not None else self._capture.read()
                if ok:
                    self._last_frame_at = time.monotonic()
                    return frame, time.perf_counter_ns()
        self._capture.release()
        if not self.reconnect_attempts:
            raise StreamDeadError(f"stream {self.name} gave no frame (it did not open, or sent "
                                  f"nothing for {self.read_timeout_s:g} s)")
        raise StreamDeadError(
            f"stream {self.name} dead: no frame for {time.monotonic() - self._last_frame_at:.1f} s "
            f"after {self.reconnect_attempts} reconnects"
        )

    def _read_capture(self, out: np.ndarray | None = None) -> Frame | None:
        if self._raw:
            raise RuntimeError(f"{self.name}: read with grab_frame() only, once grab_frame() was used")
        return self._read_with_reconnect(out)

    # ---- grab now, decode on demand (the pipeline's live readers) -------------------

    _raw = False  # the capture hands out encoded packets (set by grab_frame)

    def grab_frame(self) -> GrabbedFrame | None:
        """The next frame off the connection, without decoding it where the
        codec allows (MJPEG: the JPEG's bytes; other codecs decode as they
        read, so the frame is converted to BGR here, into the reader's memory).

        No reconnecting: a failed read raises :class:`StreamDeadError` and
        the caller's reconnect policy decides. None once closed.
        """
        if self._closed or self._capture is None:
            return None
        if self._first is not None:
            frame, self._first = self._first[0], None
            self._enable_raw()  # the first frame was decoded at open (for its size)
            self.frames_read += 1
            return GrabbedFrame(time.perf_counter_ns(), self, decoded=frame)
        import cv2

        capture = self._capture
        if not capture.grab():
            raise StreamDeadError(f"stream {self.name}: no frame (read failed or timed out after "
                                  f"{self.read_timeout_s:g} s)")
        capture_ns = time.perf_counter_ns()  # drained from the connection
        ok, data = capture.retrieve()
        if not ok or data is None:
            raise StreamDeadError(f"stream {self.name}: a frame was read but could not be retrieved")
        self.frames_read += 1
        self._last_frame_at = time.monotonic()
        if self._raw:
            # retrieve()'s array may be reused by the next grab: the JPEG is small, keep a copy.
            return GrabbedFrame(capture_ns, self, encoded=np.array(data, dtype=np.uint8).reshape(-1))
        return GrabbedFrame(capture_ns, self, decoded=data if data.shape == self._shape else
                            self._conform(data))

    def _enable_raw(self) -> None:
        """Hand out MJPEG frames as JPEG bytes from now on (OpenCV's raw mode):
        a frame that no worker takes is then never decoded."""
        import cv2

        fourcc = int(self._capture.get(cv2.CAP_PROP_FOURCC)) if self._capture is not None else 0
        if fourcc.to_bytes(4, "little") in (b"MJPG", b"mjpg", b"jpeg", b"JPEG"):
            self._raw = bool(self._capture.set(cv2.CAP_PROP_FORMAT, -1))


def close_quietly(source: Any) -> None:
    """Close a source, if it can be closed; a broken one may fail to close too."""
    close = getattr(source, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # noqa: BLE001 - nothing to do about it but log it
            import logging

            logging.getLogger(__name__).debug("closing a source failed", exc_info=True)


def _natural_key(path: Path) -> list[Any]:
    """Sort key comparing digit runs as numbers: frame2 before frame10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


class ImageFolderSource(_Source):
    """The images of a folder, in name order (numbers compared as numbers: frame2 before frame10).

    Files that are not images (by suffix, or that OpenCV cannot decode) are
    skipped with a warning; hidden files are ignored.
    """

    def __init__(self, directory: str | Path, *, on_resize: ResizePolicy = "error") -> None:
        """List ``directory`` and decode its first image.

        Raises:
            FileNotFoundError: there is no such folder.
            ValueError: it holds no readable image.
        """
        directory = Path(directory).expanduser()
        super().__init__(str(directory), on_resize)
        if not directory.is_dir():
            raise FileNotFoundError(f"image folder {str(directory)!r} not found")
        files = sorted((p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")), key=_natural_key)
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        others = [p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
        if others:
            listed = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            warnings.warn(f"{directory}: skipping {len(others)} files that are not images: {listed}", stacklevel=2)
        self._paths = iter(images)
        self._first: Frame | None = None
        self._first = self._read()
        if self._first is None:
            raise ValueError(f"{directory} holds no readable images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        self._shape = (int(self._first[0].shape[0]), int(self._first[0].shape[1]), 3)

    def _read(self) -> Frame | None:
        if self._first is not None:
            frame, self._first = self._first[0], None
            return frame, time.perf_counter_ns()  # stamped when handed out, as a capture's first
        import cv2

        for path in self._paths:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                return image, time.perf_counter_ns()
            warnings.warn(f"skipping {path}: OpenCV cannot decode it as an image", stacklevel=3)
        return None


class SyntheticSource(_Source):
    """Random frames, the same ones for the same seed; for load tests and benchmarks.

    Every frame is a window into one random buffer of two frames' size, at an
    offset that moves by a prime stride: distinct frames at no cost per frame
    (generating 640x480 noise per frame would take ~0.5 ms of the manager's
    time). Frames are read-only views.
    """

    _STRIDE = 4099  # bytes the window moves per frame; prime, so offsets cycle through every residue

    def __init__(
        self,
        shape: tuple[int, int, int] | tuple[int, int] = (480, 640, 3),
        count: int | None = None,
        seed: int = 0,
    ) -> None:
        """``count`` frames of ``shape`` ((h, w) or (h, w, 3)); ``None``: endless."""
        height, width = int(shape[0]), int(shape[1])
        if height < 1 or width < 1 or (len(shape) == 3 and shape[2] != 3):
            raise ValueError(f"shape must be (h, w) or (h, w, 3) with h, w >= 1, got {shape}")
        if count is not None and count < 0:
            raise ValueError(f"count must be >= 0 or None, got {count}")
        super().__init__(f"synthetic:{width}x{height}", "error")
        self._shape = (height, width, 3)
        self.count = count
        self.seed = seed
        self._frame_bytes = height * width * 3
        self._noise = np.frombuffer(np.random.default_rng(seed).bytes(2 * self._frame_bytes), dtype=np.uint8)

    def _read(self) -> Frame | None:
        if self.count is not None and self.frames_read >= self.count:
            return None
        offset = (self.frames_read * self._STRIDE) % self._frame_bytes
        return self._noise[offset : offset + self._frame_bytes].reshape(self._shape), time.perf_counter_ns()


def open_source(spec: str | int | Path, **options: Any) -> FrameSource:
    """Open a source by what ``spec`` is.

    - ``"synthetic"`` or ``"synthetic:WxH"`` (e.g. ``"synthetic:640x480"``): :class:`SyntheticSource`;
    - ``"sample"`` or ``"sample:FRAMES"``: the sample video of :mod:`aip.io.samples`;
    - an int or a string of digits: that camera (:class:`StreamSource`);
    - ``rtsp://``, ``rtmp://``, ``http(s)://``, ... URLs: :class:`StreamSource`;
    - a directory: :class:`ImageFolderSource`;
    - a file: :class:`VideoFileSource`.

    ``options`` go to the chosen class (``on_resize``, ``count``, ``reconnect_attempts``, ...).

    Raises:
        FileNotFoundError: ``spec`` is none of these.
    """
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        return StreamSource(int(spec), **options)
    text = str(spec)
    if text == "synthetic" or text.startswith("synthetic:"):
        size = text.partition(":")[2] or "640x480"
        match = re.fullmatch(r"(\d+)x(\d+)", size)
        if match is None:
            raise ValueError(f"synthetic source size must be WxH, e.g. 'synthetic:640x480', got {text!r}")
        width, height = int(match[1]), int(match[2])
        return SyntheticSource((height, width, 3), **options)
    if text == "sample" or text.startswith("sample:"):
        from aip.io.samples import sample_video

        count = text.partition(":")[2] or "120"
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"sample source length must be a frame count, e.g. 'sample:120', got {text!r}")
        return VideoFileSource(sample_video(int(count)), **options)
    if text.lower().startswith(STREAM_SCHEMES):
        return StreamSource(text, **options)
    path = Path(text).expanduser()
    if path.is_dir():
        return ImageFolderSource(path, **options)
    if path.is_file():
        return VideoFileSource(path, **options)
    raise FileNotFoundError(
        f"source {redact(text)!r} not found: expected a video file, an image folder, a camera index, "
        "a stream URL (rtsp://, http(s)://, ...), 'sample[:FRAMES]' or 'synthetic[:WxH]'"
    )
