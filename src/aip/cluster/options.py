"""The options of a cluster, grouped by who reads them.

:class:`NodeOptions` travels to every node (its actor builds its local
pipeline from it); :class:`FramesOptions` shapes how ``frames`` mode sends
frames; :class:`Timeouts` bounds every wait of the client. Each checks its
values once, where it is made.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aip.backends.base import BackendSpec
from aip.cluster.wire import ENCODINGS


@dataclass(frozen=True)
class NodeOptions:
    """What each node's actor runs: a local Pipeline of ``backends`` (with
    ``pipeline_options``) for frames up to ``max_frame_shape``, calibrated
    for ``calibrate_s`` per phase. Picklable: it is sent to each node."""

    backends: tuple[BackendSpec, ...]
    max_frame_shape: tuple[int, int, int] = (480, 640, 3)
    calibrate_s: float = 1.0
    pipeline_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.backends:
            raise ValueError("a Cluster needs at least one backend per node")
        shape = self.max_frame_shape
        object.__setattr__(self, "max_frame_shape", (int(shape[0]), int(shape[1]), 3))


@dataclass(frozen=True)
class FramesOptions:
    """``frames`` mode: at most ``max_in_flight`` calls in flight per node, of
    up to ``frames_per_call`` frames each, sent as ``encoding``."""

    max_in_flight: int = 3
    frames_per_call: int = 4
    encoding: str = "raw"

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {self.encoding!r}; choose one of {', '.join(ENCODINGS)}")
        if self.max_in_flight < 1 or self.frames_per_call < 1:
            raise ValueError("max_in_flight and frames_per_call must be >= 1")


@dataclass(frozen=True)
class Timeouts:
    """How long the client waits: for the scheduler to answer at first
    (``connect_s``), for a node's actor to start and calibrate
    (``start_s``), for a scheduler that stops answering mid-run
    (``scheduler_s``), and for a node to return when every one is lost
    (``node_wait_s``)."""

    connect_s: float = 10.0
    start_s: float = 300.0
    scheduler_s: float = 10.0
    node_wait_s: float = 60.0


__all__ = ["FramesOptions", "NodeOptions", "Timeouts"]
