"""Frame sources: video files, image folders, synthetic frames, dead streams, size changes."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from aip.io.sources import (
    FrameSizeChangedError,
    FrameSource,
    ImageFolderSource,
    StreamDeadError,
    StreamSource,
    SyntheticSource,
    VideoFileSource,
    open_source,
)

cv2 = pytest.importorskip("cv2")

from aip.io.samples import VIDEO_FPS, VIDEO_FRAMES, VIDEO_HW, make_video  # after the skip


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("media") / "bus_zidane.mp4")


def write_image(path: Path, hw: tuple[int, int], value: int) -> None:
    assert cv2.imwrite(str(path), np.full((*hw, 3), value, np.uint8))


# --- video files ------------------------------------------------------------------------


def test_video_file_yields_every_frame_with_its_shape_and_rate(video: Path) -> None:
    with VideoFileSource(video) as source:
        assert isinstance(source, FrameSource)
        assert source.shape == (*VIDEO_HW, 3)
        assert source.fps == pytest.approx(VIDEO_FPS)
        frames = list(source)
    assert len(frames) == VIDEO_FRAMES
    for frame, _ in frames:
        assert frame.shape == (*VIDEO_HW, 3) and frame.dtype == np.uint8 and frame.flags.c_contiguous
    times = [captured for _, captured in frames]
    assert times == sorted(times)
    assert not np.array_equal(frames[0][0], frames[2][0])  # each frame is shifted: all differ


def test_closed_source_stops(video: Path) -> None:
    source = VideoFileSource(video)
    next(source)
    source.close()
    assert list(source) == []


def test_missing_video_file() -> None:
    with pytest.raises(FileNotFoundError, match="no_such_video.mp4"):
        VideoFileSource("/nonexistent/no_such_video.mp4")


@pytest.mark.parametrize("content", [b"", b"not a video at all\n" * 100, np.random.default_rng(0).bytes(50_000)])
def test_corrupt_video_file_is_refused_clearly(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"broken\.mp4 is not a readable video"):
        VideoFileSource(path)


# --- image folders ----------------------------------------------------------------------


def test_image_folder_in_natural_order_skipping_non_images(tmp_path: Path) -> None:
    for index in (10, 2, 1):
        write_image(tmp_path / f"frame{index}.png", (48, 64), index)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").write_text("ignored without a word")
    with pytest.warns(UserWarning, match=r"skipping 1 files that are not images: notes\.txt"):
        source = ImageFolderSource(tmp_path)
    with source:
        assert source.shape == (48, 64, 3) and source.fps is None
        values = [int(frame[0, 0, 0]) for frame, _ in source]
    assert values == [1, 2, 10]


def test_image_that_cannot_be_decoded_is_skipped_with_a_warning(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", (32, 32), 7)
    (tmp_path / "b.jpg").write_bytes(b"garbage")
    write_image(tmp_path / "c.png", (32, 32), 9)
    with ImageFolderSource(tmp_path) as source, pytest.warns(UserWarning, match=r"b\.jpg: OpenCV cannot decode"):
        values = [int(frame[0, 0, 0]) for frame, _ in source]
    assert values == [7, 9]


def test_folder_without_images(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds no readable images"):
        ImageFolderSource(tmp_path)
    with pytest.raises(FileNotFoundError, match="image folder"):
        ImageFolderSource(tmp_path / "missing")


# --- frame size changes -----------------------------------------------------------------


@pytest.fixture
def mixed_sizes(tmp_path: Path) -> Path:
    write_image(tmp_path / "1.png", (48, 64), 1)
    write_image(tmp_path / "2.png", (60, 80), 2)
    return tmp_path


def test_size_change_is_an_error_by_default(mixed_sizes: Path) -> None:
    with ImageFolderSource(mixed_sizes) as source:
        next(source)
        with pytest.raises(FrameSizeChangedError, match=r"frame 1 is 80x60, the first was 64x48.*on_resize='resize'"):
            next(source)


def test_size_change_resizes_to_the_first_size(mixed_sizes: Path) -> None:
    with ImageFolderSource(mixed_sizes, on_resize="resize") as source:
        frames = [frame for frame, _ in source]
    assert [frame.shape for frame in frames] == [(48, 64, 3)] * 2
    assert int(frames[1][10, 10, 0]) == 2


def test_unknown_resize_policy() -> None:
    with pytest.raises(ValueError, match="on_resize"):
        ImageFolderSource(".", on_resize="stretch")  # type: ignore[arg-type]


# --- synthetic frames -------------------------------------------------------------------


def frames_of(source: SyntheticSource) -> list[np.ndarray]:
    return [frame.copy() for frame, _ in source]


def test_synthetic_frames_are_the_seeds() -> None:
    first = frames_of(SyntheticSource((48, 64, 3), count=5, seed=3))
    again = frames_of(SyntheticSource((48, 64, 3), count=5, seed=3))
    other = frames_of(SyntheticSource((48, 64, 3), count=5, seed=4))
    assert len(first) == 5
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not any(np.array_equal(a, b) for a, b in zip(first, other))
    assert len({frame.tobytes() for frame in first}) == 5  # every frame differs


def test_synthetic_frames_shape_and_read_only() -> None:
    source = SyntheticSource((480, 640), count=2)
    frame, _ = next(source)
    assert source.shape == (480, 640, 3) and frame.shape == (480, 640, 3) and frame.dtype == np.uint8
    assert frame.flags.c_contiguous and not frame.flags.writeable
    assert source.fps is None


def test_synthetic_endless_until_closed() -> None:
    source = SyntheticSource((8, 8, 3))
    assert sum(1 for _, (_frame, _t) in zip(range(1000), source)) == 1000
    source.close()
    assert list(source) == []


# --- open_source ------------------------------------------------------------------------


def test_open_source_by_kind(video: Path, tmp_path: Path) -> None:
    synthetic = open_source("synthetic:320x240", count=1)
    assert isinstance(synthetic, SyntheticSource) and synthetic.shape == (240, 320, 3)
    assert open_source("synthetic").shape == (480, 640, 3)
    with open_source(video) as source:
        assert isinstance(source, VideoFileSource)
    with open_source(str(video)) as source:
        assert isinstance(source, VideoFileSource)
    write_image(tmp_path / "only.png", (16, 16), 0)
    with open_source(tmp_path) as source:
        assert isinstance(source, ImageFolderSource)


def test_open_source_refuses_what_it_cannot_read() -> None:
    with pytest.raises(FileNotFoundError, match="stream URL"):
        open_source("/nonexistent/clip.mp4")
    with pytest.raises(ValueError, match="WxH"):
        open_source("synthetic:big")


# --- live streams -----------------------------------------------------------------------


@pytest.fixture
def local_server() -> Iterator[socket.socket]:
    """A listening TCP socket on 127.0.0.1; tests serve it from a thread."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server
    server.close()


def serve_mjpeg(server: socket.socket, frames_per_connection: int, connections: int) -> None:
    """Serve an MJPEG stream over HTTP that hangs up after a few frames, then stop listening."""
    for connection_index in range(connections):
        connection, _ = server.accept()
        with connection:
            connection.recv(4096)
            connection.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n")
            for i in range(frames_per_connection):
                image = np.full((48, 64, 3), 10 * (connection_index * frames_per_connection + i), np.uint8)
                jpeg = cv2.imencode(".jpg", image)[1].tobytes()
                header = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                connection.sendall(header + jpeg + b"\r\n")
    server.close()  # later reconnects are refused


def accept_and_stay_silent(server: socket.socket, held: list[socket.socket]) -> None:
    while True:
        try:
            held.append(server.accept()[0])
        except OSError:
            return


@pytest.mark.timeout(60)
def test_stream_reconnects_after_a_drop_then_gives_up(local_server: socket.socket) -> None:
    threading.Thread(target=serve_mjpeg, args=(local_server, 3, 2), daemon=True).start()
    port = local_server.getsockname()[1]
    source = StreamSource(
        f"http://127.0.0.1:{port}/stream.mjpg", reconnect_attempts=2, read_timeout_s=2.0, backoff_s=0.05
    )
    assert source.shape == (48, 64, 3)
    values = []
    with pytest.raises(StreamDeadError, match=r"dead: no frame for .* after 2 reconnects"):
        for frame, _ in source:
            values.append(int(frame[0, 0, 0]))
    assert values == [0, 10, 20, 30, 40, 50]  # every frame of both connections, none twice
    assert source.reconnects == 3  # one that worked, two that failed
    source.close()


@pytest.mark.timeout(60)
def test_silent_stream_times_out(local_server: socket.socket) -> None:
    held: list[socket.socket] = []
    threading.Thread(target=accept_and_stay_silent, args=(local_server, held), daemon=True).start()
    url = f"rtsp://127.0.0.1:{local_server.getsockname()[1]}/silent"
    with pytest.raises(StreamDeadError, match=rf"stream {url} dead: no frame for .* after 1 reconnects"):
        StreamSource(url, reconnect_attempts=1, read_timeout_s=0.5, backoff_s=0.05)
    deadline = time.monotonic() + 10  # the kernel completes connections before the thread accepts them
    while len(held) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(held) == 2  # connected, then reconnected once
    for connection in held:
        connection.close()


@pytest.mark.timeout(60)
def test_refused_stream_gives_up_with_a_clear_error() -> None:
    with pytest.raises(
        StreamDeadError, match=r"stream rtsp://127\.0\.0\.1:9/none dead: no frame for .* after 1 reconnects"
    ):
        StreamSource("rtsp://127.0.0.1:9/none", reconnect_attempts=1, read_timeout_s=1.0, backoff_s=0.05)


@pytest.mark.timeout(60)
def test_open_source_sends_urls_to_streams() -> None:
    with pytest.raises(StreamDeadError):
        open_source("rtsp://127.0.0.1:9/none", reconnect_attempts=0, read_timeout_s=1.0)


def test_the_frame_read_at_open_is_stamped_when_handed_out(video: Path) -> None:
    # A source opened before the workers loaded must not count that wait as
    # its first frame's latency: the first frame is stamped when it is taken.
    for take in ("iterate", "read_into"):
        with VideoFileSource(video) as source:
            opened = time.perf_counter_ns()
            out = np.empty(source.shape, np.uint8)
            captured = next(source)[1] if take == "iterate" else source.read_into(out)
            assert captured is not None and captured >= opened
