"""The client side of a cluster run: the API that ties its parts together.

    Cluster (this module): options, connect, run
      |-- Membership (membership.py): the nodes' actors, calls and replies, loss and return
      |-- StreamsMode (streams_mode.py) / FramesMode (frames_mode.py): one run of each mode
      '-- OrderedDelivery (ordering.py): each stream's results in order, counted, once

One thread (the caller's) runs everything; see :mod:`aip.cluster.membership`
for how it waits on the nodes without polling.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aip.backends.base import BackendSpec
from aip.cluster.frames_mode import FramesMode
from aip.cluster.membership import ClusterError, Membership, NodeHandle
from aip.cluster.options import FramesOptions, NodeOptions, Timeouts
from aip.cluster.ordering import ClientStream, OrderedDelivery
from aip.cluster.streams_mode import StreamsMode
from aip.io.sources import close_quietly
from aip.pipeline.metrics import Metrics
from aip.pipeline.reorder import Gap
from aip.results import FrameResult

log = logging.getLogger("aip.cluster")

MODES = ("streams", "frames")
# wait_for_nodes: how often it looks again while nodes are still missing.
NODES_POLL_S = 0.1


class Cluster:
    """Detections across the nodes of a Dask cluster (see :mod:`aip.cluster`).

    >>> with Cluster("tcp://10.0.0.1:8786", [BackendSpec("onnx", {"threads": 1})] * 4) as cluster:
    ...     for result in cluster.run(["rtsp://cam/1", "rtsp://cam/2"], mode="streams"):
    ...         print(result.stream, result.frame_id, result.detections)

    Connects to the scheduler at ``address`` (a :class:`ClusterError` after
    ``connect_timeout_s``), and starts one actor per node: ``nodes`` names
    the nodes' resources (default: every worker resource named ``node*``).
    Each actor runs a local Pipeline of ``backends`` (with
    ``pipeline_options``) for frames up to ``max_frame_shape``, calibrated
    for ``calibrate_s`` per phase. In ``frames`` mode each node has at most
    ``max_in_flight`` calls in flight, of up to ``frames_per_call`` frames
    each, sent as ``encoding`` (``raw`` or ``jpeg``): more frames in flight
    ride out the network's hiccups, at that much more latency and client
    memory; more frames per call pay Dask's per-call cost less often, but a
    call returns only when its last frame is done. A scheduler that stays
    unreachable for ``scheduler_timeout_s`` during a run is an error; with
    every node lost, a run waits ``node_wait_s`` for one to return.

    The options, grouped, are ``node_options`` (:class:`NodeOptions`),
    ``frames_options`` (:class:`FramesOptions`) and ``timeouts``
    (:class:`Timeouts`).
    """

    def __init__(
        self,
        address: str,
        backends: Sequence[BackendSpec],
        *,
        nodes: Sequence[str] | None = None,
        max_frame_shape: tuple[int, int, int] = (480, 640, 3),
        calibrate_s: float = 1.0,
        max_in_flight: int = 3,
        frames_per_call: int = 4,
        encoding: str = "raw",
        connect_timeout_s: float = 10.0,
        start_timeout_s: float = 300.0,
        scheduler_timeout_s: float = 10.0,
        node_wait_s: float = 60.0,
        pipeline_options: dict[str, Any] | None = None,
    ) -> None:
        self.address = address
        self.node_options = NodeOptions(tuple(backends), max_frame_shape, calibrate_s,
                                        dict(pipeline_options or {}))
        self.frames_options = FramesOptions(max_in_flight, frames_per_call, encoding)
        self.timeouts = Timeouts(connect_timeout_s, start_timeout_s, scheduler_timeout_s, node_wait_s)
        self.metrics = Metrics()
        self.node_metrics: dict[str, Metrics] = {}
        self.client: Any = _connect(address, connect_timeout_s)
        try:
            self.membership = Membership(self.client, address, nodes, self.node_options, self.timeouts)
            self.membership.start()
        except BaseException:
            self.close()
            raise

    # ---- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def nodes(self) -> dict[str, NodeHandle]:
        """Every node, live or not, by name."""
        return self.membership.nodes

    @property
    def events(self) -> list[str]:
        """Node starts, losses and returns, as lines."""
        return self.membership.events

    @property
    def calibration(self) -> dict[str, float]:
        """Each live node's calibrated FPS (all its backends together)."""
        return {node.name: node.info.ideal_fps for node in self.membership.live() if node.info is not None}

    def close(self) -> None:
        """Close every node's pipeline and the connection. Idempotent."""
        client = getattr(self, "client", None)
        if client is None:
            return
        membership = getattr(self, "membership", None)
        if membership is not None:
            membership.close()
        try:
            client.close(timeout=5)
        except Exception:  # noqa: BLE001 - a dead scheduler: nothing left to close
            log.debug("closing the Dask client failed", exc_info=True)
        self.client = None

    def wait_for_nodes(self, count: int | None = None, timeout_s: float = 60.0) -> list[str]:
        """Until ``count`` nodes (default: all) are live, lost ones re-created
        where a worker with their resource has returned; the live nodes."""
        wanted = len(self.nodes) if count is None else count
        deadline = time.monotonic() + timeout_s
        while len(self.membership.live()) < wanted:
            if time.monotonic() > deadline:
                raise ClusterError(f"{len(self.membership.live())} of {wanted} nodes live "
                                   f"after {timeout_s:g} s")
            self.membership.check()
            time.sleep(NODES_POLL_S)
        return [node.name for node in self.membership.live()]

    # ---- the run -------------------------------------------------------------------------------

    def run(
        self,
        sources: Any,
        *,
        mode: str = "streams",
        max_frames: int | None = None,
        stream_options: dict[str, Any] | None = None,
    ) -> Iterator[FrameResult | Gap]:
        """Detections of every source, in order per stream, across the nodes.

        ``streams`` mode: each source is a spec the nodes open themselves (a
        path they can all read, a URL, a camera index, ``synthetic:WxH``);
        whole streams go to nodes by their calibrated capacity. ``frames``
        mode: the client reads each source (a spec or an iterable of frames)
        and spreads its frames over the nodes, at most ``max_in_flight`` calls
        in flight per node. Results carry the client's stream names (``s0``,
        ...) and frame ids. A lost node's streams or frames go to the others.
        """
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        items = [sources] if isinstance(sources, (str, Path, int)) or _is_frames(sources) else list(sources)
        streams = {f"s{i}": ClientStream(f"s{i}", source, max_frames) for i, source in enumerate(items)}
        metrics = self.metrics = Metrics(ideal_fps=sum(self.calibration.values()) or None)
        metrics.streams = {name: stream.metrics for name, stream in streams.items()}
        cpu_start = time.process_time()
        self.membership.begin_run()
        start_ns = time.perf_counter_ns()
        delivery = OrderedDelivery(metrics, start_ns)
        try:
            if mode == "streams":
                yield from StreamsMode(self.membership, streams, delivery, stream_options or {}).results()
            else:
                yield from FramesMode(self.membership, streams, delivery, self.frames_options).results()
        finally:
            metrics.wall_time_s = (time.perf_counter_ns() - start_ns) / 1e9
            metrics.manager_cpu_s = time.process_time() - cpu_start
            for stream in streams.values():
                metrics.frames_generated += stream.metrics.frames_read
                metrics.frames_assigned += stream.metrics.frames_published
                if stream.iterator is not None:
                    close_quietly(stream.source)
            self.node_metrics = self.membership.end_run()


def _connect(address: str, timeout_s: float) -> Any:
    """A Dask client of the scheduler at ``address``, or a :class:`ClusterError` that says what to start."""
    from distributed import Client

    try:
        return Client(address, timeout=timeout_s, set_as_default=False)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError) as error:
        raise ClusterError(f"no Dask scheduler answers at {address} ({error}); start one with "
                           "`dask scheduler` (see the docs, \"Cluster\")") from error


def _is_frames(sources: Any) -> bool:
    """One source of frames (an iterable of arrays), rather than a list of sources."""
    if isinstance(sources, np.ndarray):
        return True
    if isinstance(sources, (list, tuple)):
        return any(isinstance(item, np.ndarray) or (isinstance(item, tuple) and len(item) == 2
                                                    and isinstance(item[0], np.ndarray))
                   for item in sources)
    return hasattr(sources, "__next__") or hasattr(sources, "read_into")


__all__ = ["MODES", "Cluster", "ClusterError"]
