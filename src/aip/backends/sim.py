"""``sim``: a backend that takes a set time per frame (the seed's study).

For scheduler tests and studies only: it never stands in for a real backend
in a claim. ``latency_s`` is the service time; ``jitter_s`` adds a uniform
random ±jitter; ``slowdown_after`` / ``slowdown_factor`` make it slow down
after that many frames (the drift scenario).
"""
from __future__ import annotations

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
        time.sleep(self.service_time())
        self._frames += 1
        return EMPTY_OUTPUT


BACKEND = SimBackend
