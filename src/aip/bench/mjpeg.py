"""Live MJPEG-over-HTTP cameras for the benchmarks, in a process of their own.

    camera process (spawned)                          benchmark process
    ------------------------                          -----------------
    pacer thread, camera i: every 1/R s ---------.
      frame k := JPEG k (stamped k), sent_ns[i,k] |--> shared sent_ns array
    HTTP server 127.0.0.1:PORT_i, thread per      |
      client: write the newest frame, skip any    |
      it missed (a live camera never queues)  ----'--> cv2.VideoCapture("http://...")

Each camera serves ``multipart/x-mixed-replace`` JPEG parts (with
``Content-Length``, so that FFmpeg's ``mpjpeg`` demuxer returns a part as
soon as its bytes are in, without waiting for the next boundary) of the
sample video's frames, looped, at ``fps``. Frame ``k`` carries
``k mod distinct`` in its pixels (:func:`stamp`, read back with
:func:`read_stamp`), and the process records in shared memory when each
camera produced each frame: any consumer's latency is then measured from
the camera, whatever the client reports (ultralytics exposes no capture
time). :meth:`MjpegCameras.sent` maps a stamp back to the latest frame
that carried it before the result: unambiguous while a result comes less
than ``distinct / fps`` seconds (``STAMP_HORIZON_S``) after its frame.

The ``distinct`` JPEGs are encoded once before the cameras start (a real
camera encodes on its own chip: here encoding would steal the CPU the
systems under test need), and the cameras run in their own process so that
their threads take nothing from the benchmark's GIL. Every loop is bounded:
a camera stops after ``frames`` frames, and the process after
``lifetime_s`` at most.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

BOUNDARY = b"aipframe"
PATH = "/stream.mjpg"
# The stamp: 16 bits of the frame number and their complement (a check that
# what was read is a stamp), one 16x16 block per bit along the top-left edge.
# 16x16 is a JPEG macroblock with 4:2:0 chroma: a flat black or white block
# survives any quality a camera would use.
STAMP_BITS = 16
STAMP_BLOCK = 16
STAMP_MAX = 1 << STAMP_BITS
# JPEG quality of the frames: a typical IP camera's (about 40 KB per 640x480 frame).
JPEG_QUALITY = 80
# A stamp names one frame among those of the last STAMP_HORIZON_S seconds:
# far longer than any latency measured, so a stamp is never ambiguous.
STAMP_HORIZON_S = 20.0
# How long a client's thread waits for the next frame before it looks at the
# stop flag again.
CLIENT_WAIT_S = 0.25


def stamp(frame: np.ndarray, value: int) -> np.ndarray:
    """``frame`` (BGR, at least 512 pixels wide) with ``value`` drawn in its top-left edge."""
    if not 0 <= value < STAMP_MAX:
        raise ValueError(f"stamp value {value} out of range [0, {STAMP_MAX})")
    if frame.shape[1] < 2 * STAMP_BITS * STAMP_BLOCK or frame.shape[0] < STAMP_BLOCK:
        raise ValueError(f"a {frame.shape[1]}x{frame.shape[0]} frame is too small for a stamp")
    out = frame.copy()
    bits = [(value >> i) & 1 for i in range(STAMP_BITS)]
    for i, bit in enumerate(bits + [1 - b for b in bits]):
        out[:STAMP_BLOCK, i * STAMP_BLOCK:(i + 1) * STAMP_BLOCK] = 255 * bit
    return out


def read_stamp(frame: np.ndarray) -> int | None:
    """The value :func:`stamp` drew in ``frame``, or None when there is none."""
    if frame.shape[1] < 2 * STAMP_BITS * STAMP_BLOCK or frame.shape[0] < STAMP_BLOCK:
        return None
    edge = STAMP_BLOCK // 4  # the blocks' centres: JPEG rings at their borders
    strip = frame[edge:STAMP_BLOCK - edge, :2 * STAMP_BITS * STAMP_BLOCK]
    means = strip.reshape(strip.shape[0], 2 * STAMP_BITS, STAMP_BLOCK, -1)[:, :, edge:-edge].mean(
        axis=(0, 2, 3))
    bits = means > 127.5
    if not np.all(bits[:STAMP_BITS] != bits[STAMP_BITS:]):
        return None
    return int(sum(1 << i for i in range(STAMP_BITS) if bits[i]))


def encode_frames(count: int, hw: tuple[int, int] = (480, 640),
                  quality: int = JPEG_QUALITY) -> list[bytes]:
    """``count`` JPEGs of the sample video's frames, looped, frame ``k`` stamped ``k``."""
    import cv2

    from aip.io.samples import video_frames

    if not 0 < count <= STAMP_MAX:
        raise ValueError(f"a camera serves 1..{STAMP_MAX} distinct frames, not {count}")
    scenes = video_frames(min(count, 60), hw)
    jpegs = []
    for k in range(count):
        ok, data = cv2.imencode(".jpg", stamp(scenes[k % len(scenes)], k),
                                [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError("OpenCV could not encode a JPEG")
        jpegs.append(data.tobytes())
    return jpegs


class _Camera:
    """One camera: a pacer thread that makes frame k current every 1/fps
    seconds, from its first client's connection on, and records when.

    Its frames come at ``epoch_ns + (m + phase) * period`` for whole m, one
    clock for every camera of the process: the phases stay what they were
    made, whenever each client connects (clients that connect one after the
    other would otherwise set them)."""

    def __init__(self, index: int, jpegs: list[bytes], frames: int, fps: float, phase: float,
                 sent_ns: Any, stop: threading.Event, epoch_ns: int = 0) -> None:
        self.index = index
        self.phase = phase  # of a frame period, after the shared epoch
        self.epoch_ns = epoch_ns
        self.jpegs = jpegs  # frame k shows jpegs[k % len(jpegs)]
        self.frames = frames
        self.period_ns = int(1e9 / fps)
        self.sent_ns = sent_ns  # shared int64 array, camera-major
        self.stop = stop
        self.current = -1  # the newest frame; -1 before the first
        self.ended = False
        self.changed = threading.Condition()
        self._pacer: threading.Thread | None = None

    def start_once(self) -> None:
        with self.changed:
            if self._pacer is None:
                self._pacer = threading.Thread(target=self._pace, daemon=True,
                                               name=f"camera-{self.index}")
                self._pacer.start()

    def _pace(self) -> None:
        base = self.index * self.frames
        now = time.perf_counter_ns()
        started = self.epoch_ns + int(self.phase * self.period_ns)
        if started < now:  # the first frame: its camera's next due time from now on
            started += -(-(now - started) // self.period_ns) * self.period_ns
        try:
            for k in range(self.frames):
                due = started + k * self.period_ns - time.perf_counter_ns()
                if due > 0 and self.stop.wait(due / 1e9):
                    return
                self.sent_ns[base + k] = time.perf_counter_ns()
                with self.changed:
                    self.current = k
                    self.changed.notify_all()
        finally:
            with self.changed:
                self.ended = True
                self.changed.notify_all()

    def next_frame(self, after: int) -> int | None:
        """The newest frame past ``after`` (waiting for it), or None when the camera is done."""
        with self.changed:
            while not self.stop.is_set():
                if self.current > after:
                    return self.current
                if self.ended:
                    return None
                self.changed.wait(CLIENT_WAIT_S)
        return None


def _handler(camera: _Camera) -> type[BaseHTTPRequestHandler]:
    class MjpegHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path != PATH:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type",
                             f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            camera.start_once()
            shown = -1
            try:
                while (k := camera.next_frame(shown)) is not None:
                    jpeg = camera.jpegs[k % len(camera.jpegs)]
                    self.wfile.write(b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\n"
                                     + f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                                     + jpeg + b"\r\n")
                    self.wfile.flush()
                    shown = k
            except (BrokenPipeError, ConnectionResetError):
                return  # the client went away

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            pass

    return MjpegHandler


def _serve(count: int, fps: float, frames: int, distinct: int, hw: tuple[int, int], sent_ns: Any,
           ready: Any, stop: Any, lifetime_s: float) -> None:
    """The camera process: encode, serve until ``stop`` or ``lifetime_s``, exit."""
    jpegs = encode_frames(distinct, hw)
    stopping = threading.Event()
    # Independent cameras' frames do not come at the same instant: camera i
    # is i/count of a period behind camera 0 (the mean of random phases).
    # Started together they would all send at once, every period: a worst
    # case for latency that no set of independent cameras keeps up.
    epoch_ns = time.perf_counter_ns()
    cameras = [_Camera(i, jpegs, frames, fps, i / count, sent_ns, stopping, epoch_ns)
               for i in range(count)]
    servers = []
    for camera in cameras:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(camera))
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()
    ready.send([int(server.server_address[1]) for server in servers])
    ready.close()
    try:
        stop.wait(lifetime_s)
    finally:
        stopping.set()
        for server in servers:
            server.shutdown()
            server.server_close()


class MjpegCameras:
    """``count`` live MJPEG cameras at ``fps`` each, served by a child process.

    >>> with MjpegCameras(2, fps=15, frames=300) as cameras:
    ...     capture = cv2.VideoCapture(cameras.urls[0])

    ``frames`` is how many frames each camera sends before it ends (a
    camera starts on its first client's connection), so ``frames / fps``
    bounds how long it serves; they show ``distinct`` different stamped
    JPEGs in turn (default: ``STAMP_HORIZON_S`` worth). ``sent(camera,
    stamp, before_ns)`` is which frame that was and when the camera
    produced it (``time.perf_counter_ns()``, a clock every process of the
    machine shares).
    """

    def __init__(self, count: int, *, fps: float, frames: int, distinct: int | None = None,
                 hw: tuple[int, int] = (480, 640), lifetime_s: float | None = None,
                 start_timeout_s: float = 120.0) -> None:
        if count < 1 or fps <= 0 or frames < 1:
            raise ValueError("cameras need count >= 1, fps > 0 and frames >= 1")
        if distinct is None:
            distinct = max(64, math.ceil(fps * STAMP_HORIZON_S))
        distinct = min(distinct, frames)
        if not 0 < distinct <= STAMP_MAX:
            raise ValueError(f"distinct must be in 1..{STAMP_MAX}")
        self.count, self.fps, self.frames, self.distinct = count, fps, frames, distinct
        context = mp.get_context("spawn")
        self._sent = context.RawArray("q", count * frames)
        receiver, sender = context.Pipe(duplex=False)
        self._stop = context.Event()
        lifetime = lifetime_s if lifetime_s is not None else frames / fps + 60.0
        self._process = context.Process(
            target=_serve, args=(count, fps, frames, distinct, hw, self._sent, sender, self._stop, lifetime),
            name="aip-bench-cameras", daemon=True)
        self._process.start()
        sender.close()
        try:
            if not receiver.poll(start_timeout_s):
                raise RuntimeError(f"the camera process did not start in {start_timeout_s:.0f} s")
            self.ports: list[int] = receiver.recv()
        except EOFError:
            self.close()
            raise RuntimeError(f"the camera process exited with status {self._process.exitcode} "
                               "before its cameras were up") from None
        except BaseException:
            self.close()
            raise
        finally:
            receiver.close()
        self.urls = [f"http://127.0.0.1:{port}{PATH}" for port in self.ports]
        self._sent_view = np.frombuffer(self._sent, dtype=np.int64).reshape(count, frames)

    def sent(self, camera: int, stamp: int, before_ns: int) -> tuple[int, int]:
        """The latest frame ``camera`` produced stamped ``stamp`` before
        ``before_ns``: ``(frame number, when it was produced)``, or ``(-1, 0)``
        when there is none (or the arguments name no camera or stamp)."""
        if not (0 <= camera < self.count and 0 <= stamp < self.distinct):
            return -1, 0
        times = self._sent_view[camera, stamp::self.distinct]
        produced = np.flatnonzero((times > 0) & (times <= before_ns))
        if not len(produced):
            return -1, 0
        last = int(produced[-1])
        return stamp + last * self.distinct, int(times[last])

    def cpu_seconds(self) -> float | None:
        """CPU time the camera process has used so far (None where /proc is not there)."""
        try:
            fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def close(self) -> None:
        """Stop the cameras and wait for their process (killed if it lingers)."""
        self._stop.set()
        self._process.join(5.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5.0)

    def __enter__(self) -> MjpegCameras:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def camera_of_url(urls: Sequence[str], name: str) -> int | None:
    """Which camera a source name (a URL, or ultralytics' cleaned form of one) is."""
    for index, url in enumerate(urls):
        port = url.split(":")[-1].split("/")[0]
        if f":{port}/" in name or f"_{port}_" in name or name.endswith(f"_{port}"):
            return index
    return None
