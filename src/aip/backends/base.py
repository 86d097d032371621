"""The backend interface: one runtime on one device, loaded inside its worker.

A :class:`BackendSpec` is a small picklable description made in the manager;
the worker process turns it into a :class:`Backend` with :func:`create`,
loads and warms it up there (models, sessions and devices never cross a
process boundary), then calls :meth:`Backend.infer` once per frame.
"""
from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aip.errors import EXIT_BACKEND, EXIT_USAGE, AipError, UsageError

# name -> module defining a Backend subclass called ``BACKEND``
REGISTRY = {
    "sim": "aip.backends.sim",
    "cpu": "aip.backends.torch_backend",
    "cuda": "aip.backends.torch_backend",
    "mps": "aip.backends.torch_backend",
    "onnx": "aip.backends.onnx_backend",
    "coreml": "aip.backends.coreml_backend",
    "openvino": "aip.backends.openvino_backend",
}

# The options each backend reads, checked before anything starts: a typo in
# ``-b onnx:thread=1`` is an error that lists these, not a setting silently
# ignored. A backend module reads no option that is not declared here
# (tests/unit/test_backend_options.py holds each module to its set).
# batch / max_wait_ms: the worker's micro-batching (aip.pipeline.worker), for every backend.
_COMMON_OPTIONS = frozenset({"model", "imgsz", "seed", "batch", "max_wait_ms"})
_TORCH_OPTIONS = _COMMON_OPTIONS | {
    "device", "threads",
    # CudaTuning (cuda only; cpu and mps reject them with their own message)
    "half", "pinned", "stream", "channels_last", "graphs", "cudnn_benchmark",
}
BACKEND_OPTIONS: dict[str, frozenset[str]] = {
    # model and imgsz are accepted and ignored: a sim worker stands in a spec list beside real ones
    "sim": _COMMON_OPTIONS | {"latency_s", "jitter_s", "slowdown_after", "slowdown_factor", "boxes",
                              "crash_on", "raise_on", "crash_after", "die_after_put_on", "busy"},
    "cpu": _TORCH_OPTIONS,
    "cuda": _TORCH_OPTIONS,
    "mps": _TORCH_OPTIONS,
    "onnx": _COMMON_OPTIONS | {"threads", "spin", "provider", "providers", "device", "half"},
    "coreml": _COMMON_OPTIONS | {"compute_units", "half"},
    "openvino": _COMMON_OPTIONS | {"device", "hint", "requests", "threads"},
}


class BackendUnavailable(AipError, RuntimeError):
    """This machine cannot run the backend; the message says why and what to do."""

    exit_code = EXIT_BACKEND


class UnknownBackendError(BackendUnavailable, ValueError):
    """No backend has this name (a usage error: the message lists the names)."""

    exit_code = EXIT_USAGE


class BackendOptionError(UsageError):
    """A backend spec names an option that backend does not have."""


@dataclass(frozen=True)
class BackendSpec:
    """What a worker needs to build its backend: picklable, no live objects.

    ``name`` is a key of REGISTRY; ``options`` are the backend's own settings
    (model path, device index, threads, fp16, the sim latency, ...).
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # shown in reports; defaults to the name

    @property
    def display_name(self) -> str:
        return self.label or self.name


class Backend(ABC):
    """One inference runtime on one device."""

    #: Does ``infer`` take a letterboxed (1, 3, H, W) tensor (True) or the raw
    #: BGR frame (False, e.g. the sim backend)?
    wants_tensor: bool = True

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    @abstractmethod
    def device(self) -> str:
        """Where it runs, for reports: "cpu", "cuda:0", "ANE", ..."""

    @property
    def input_hw(self) -> tuple[int, int]:
        """(height, width) of the tensor ``infer`` takes."""
        return (640, 640)

    @property
    def input_dtype(self) -> np.dtype[Any]:
        return np.dtype(np.float32)

    @classmethod
    def check_available(cls, spec: BackendSpec) -> None:
        """Raise BackendUnavailable if this machine cannot run ``spec``.

        Cheap: called in the manager before any worker starts.
        """

    @classmethod
    def prepare(cls, spec: BackendSpec) -> BackendSpec:
        """One-time work shared by every worker of ``spec``, done in the manager
        before they start (an export, say); returns the spec they load."""
        return spec

    @abstractmethod
    def load(self) -> None:
        """Load the model and warm it up (in the worker process)."""

    @abstractmethod
    def infer(self, batch: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Run the model on one input; return its raw output (1, 4+nc, N)."""

    def frame_detections(self, frame: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """A backend that takes raw frames (``wants_tensor = False``: sim) gives
        each frame's (K, 6) detections here; none by default."""
        return np.zeros((0, 6), np.float32)

    def after_result(self) -> None:
        """Called once a frame's result is out, before its slot is released
        (a hook: statistics; fault injection in ``sim``)."""

    def close(self) -> None:
        """Free the runtime's resources."""


class ExportedModelBackend(Backend):
    """A backend whose workers load a file made once from the model in the
    manager: an ONNX export, a Core ML package, an OpenVINO IR."""

    @classmethod
    def prepare(cls, spec: BackendSpec) -> BackendSpec:
        """Export once in the manager, so that every worker only loads the file."""
        return dataclasses.replace(spec, options={**spec.options, "model": str(cls(spec)._artifact())})

    @abstractmethod
    def _artifact(self) -> Path:
        """The exported file of this spec (made on first call, cached after)."""


def usable_cores() -> int:
    """Cores this process may use: its CPU affinity, and the cgroup's CPU
    quota where one is set (a container's ``--cpus``), not the machine's count."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max", encoding="ascii").read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # cgroup v1, or none: the affinity is the limit
    return max(1, cores)


def backend_class(name: str) -> type[Backend]:
    """The Backend subclass registered as ``name``."""
    if name not in REGISTRY:
        raise UnknownBackendError(
            f"unknown backend {name!r}; known backends: {', '.join(sorted(REGISTRY))} "
            "(aip backends says which run here)"
        )
    module = importlib.import_module(REGISTRY[name])
    cls: type[Backend] = module.BACKEND
    return cls


def create(spec: BackendSpec) -> Backend:
    """Build the backend of ``spec`` (not loaded yet)."""
    return backend_class(spec.name)(spec)


def prepare(spec: BackendSpec) -> BackendSpec:
    """Run the backend's one-time preparation; returns the spec workers load."""
    return backend_class(spec.name).prepare(spec)


def check_options(spec: BackendSpec) -> None:
    """Raise BackendOptionError if ``spec`` names an option its backend does not read."""
    known = BACKEND_OPTIONS.get(spec.name)
    if known is None:
        return
    for name, low, high in (("batch", 1, 256), ("max_wait_ms", 0, 10_000)):
        if name in spec.options:
            try:
                value = float(spec.options[name])
            except (TypeError, ValueError):
                value = math.nan
            if not low <= value <= high or (name == "batch" and value != int(value)):
                raise BackendOptionError(f"backend {spec.name}: {name} must be "
                                         f"{'an integer ' if name == 'batch' else ''}in {low}..{high}, "
                                         f"got {spec.options[name]!r}")
    unknown = sorted(set(spec.options) - known)
    if unknown:
        some = ", ".join(repr(name) for name in unknown)
        raise BackendOptionError(
            f"backend {spec.name} has no option{'s' if len(unknown) > 1 else ''} {some}; "
            f"its options: {', '.join(sorted(known))} (e.g. -b {spec.name}:"
            f"{'latency_s=0.02' if spec.name == 'sim' else 'threads=1'})")


def check_available(spec: BackendSpec) -> None:
    """Raise BackendUnavailable with the reason if ``spec`` cannot run here
    (UnknownBackendError, BackendOptionError: the spec itself is wrong)."""
    cls = backend_class(spec.name)
    check_options(spec)
    cls.check_available(spec)


def available_backends() -> dict[str, str | None]:
    """Every registered backend -> None if it runs here, else why not."""
    reasons: dict[str, str | None] = {}
    for name in REGISTRY:
        try:
            check_available(BackendSpec(name))
            reasons[name] = None
        except (BackendUnavailable, ImportError, ValueError) as error:
            reasons[name] = str(error)
    return reasons
