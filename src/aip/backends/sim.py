"""``sim``: a backend that takes a set time per frame (the seed's study).

For scheduler tests and studies only: it never stands in for a real backend
in a claim. With ``batch=N`` a worker hands it one frame per batch: it
takes one service time per call, an ideal batching device. ``latency_s`` is the service time; ``jitter_s`` adds a uniform
random ±jitter; ``slowdown_after`` / ``slowdown_factor`` make it slow down
after that many frames (the drift scenario); ``busy`` spends the service
time computing (CPU time, so a busy worker slows down when it shares a core,
as a CPU backend does) instead of sleeping. Fault injection, for the
failure-path tests: a frame whose first byte equals ``crash_on`` kills the
worker process (as a segfault in a driver would), one whose first byte
equals ``raise_on`` makes ``infer`` raise, ``crash_after`` kills it after
that many frames, and ``die_after_put_on`` kills it once the result of such
a frame is out but before its slot is released. ``boxes=N`` gives every
frame N detections on a grid that drifts right a pixel a frame (what a
tracker and zones have to work on, for their cost in scheduler studies).
"""
from __future__ import annotations

import os
import signal
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from aip.backends.base import Backend, BackendSpec

EMPTY_OUTPUT = np.zeros((1, 84, 0), np.float32)


class SimBackend(Backend):
    wants_tensor = False

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        options = spec.options
        self.latency_s = float(options.get("latency_s", 0.05))
        self.jitter_s = float(options.get("jitter_s", 0.0))
        self.slowdown_after = options.get("slowdown_after")
        self.slowdown_factor = float(options.get("slowdown_factor", 1.0))
        self._rng = np.random.default_rng(options.get("seed"))
        self._frames = 0
        self.crash_on = None if options.get("crash_on") is None else int(options["crash_on"])
        self.raise_on = None if options.get("raise_on") is None else int(options["raise_on"])
        self.crash_after = None if options.get("crash_after") is None else int(options["crash_after"])
        self.die_after_put_on = (None if options.get("die_after_put_on") is None
                                 else int(options["die_after_put_on"]))
        self._last_first: int | None = None
        self.busy = str(options.get("busy", False)).lower() in ("1", "true", "yes")
        self.boxes = int(options.get("boxes", 0))

    @property
    def device(self) -> str:
        return f"sim({self.latency_s * 1e3:g} ms)"

    @classmethod
    def check_available(cls, spec: BackendSpec) -> None:
        if float(spec.options.get("latency_s", 0.05)) < 0:
            raise ValueError("sim latency_s must be >= 0")

    def load(self) -> None:
        pass

    def service_time(self) -> float:
        latency = self.latency_s
        if self.slowdown_after is not None and self._frames >= int(self.slowdown_after):
            latency *= self.slowdown_factor
        if self.jitter_s:
            latency += self._rng.uniform(-self.jitter_s, self.jitter_s)
        return max(latency, 0.0)

    def infer(self, batch: npt.NDArray[Any]) -> npt.NDArray[Any]:
        first = int(batch.flat[0]) if batch.size else None
        self._last_first = first
        if self.crash_after is not None and self._frames >= self.crash_after:
            os.kill(os.getpid(), signal.SIGKILL)
        if first is not None and first == self.crash_on:
            os.kill(os.getpid(), signal.SIGKILL)
        if first is not None and first == self.raise_on:
            raise RuntimeError(f"sim: frame starting with {first} (raise_on)")
        if self.busy:
            spend = self.service_time()
            started = time.thread_time()
            while time.thread_time() - started < spend:
                pass
        else:
            time.sleep(self.service_time())
        self._frames += 1
        return EMPTY_OUTPUT

    def frame_detections(self, frame: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """``boxes`` detections of ``frame``: a grid of 48-pixel boxes, drifting."""
        if not self.boxes:
            return np.zeros((0, 6), np.float32)
        height, width = int(frame.shape[0]), int(frame.shape[1])
        columns = max(1, width // 64)
        index = np.arange(self.boxes)
        x1 = (index % columns) * 64.0 + (self._frames % 16)
        y1 = (index // columns % max(1, height // 64)) * 64.0
        out = np.empty((self.boxes, 6), np.float32)
        out[:, 0], out[:, 1], out[:, 2], out[:, 3] = x1, y1, x1 + 48, y1 + 48
        out[:, 4], out[:, 5] = 0.9, index % 3
        return out

    def after_result(self) -> None:
        if self.die_after_put_on is not None and self._last_first == self.die_after_put_on:
            os.kill(os.getpid(), signal.SIGKILL)


BACKEND = SimBackend
