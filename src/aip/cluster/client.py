"""The client side of a cluster run: nodes, their calls in flight, order, loss.

One thread (the caller's) runs the loop. Every call to a node is an actor
call whose completion a small coroutine on the Dask client's event loop
puts in one queue, tagged with the node's generation; the loop waits on
that queue, so it sleeps while nothing happens and never polls futures.
A node's generation changes when it is lost: whatever its old actor still
answers is dropped, which is what makes "nothing duplicated" hold.
"""
from __future__ import annotations

import itertools
import logging
import queue
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aip.backends.base import BackendSpec
from aip.cluster.assign import assign_streams
from aip.cluster.node import NodeActor, NodeError, NodeInfo, StreamDone
from aip.cluster.wire import ENCODINGS, encode_frame
from aip.pipeline.metrics import Metrics, StreamMetrics
from aip.pipeline.reorder import DuplicateFrameError, Gap, ReorderBuffer
from aip.results import FrameResult
from aip.io.sources import close_quietly

log = logging.getLogger("aip.cluster")

MODES = ("streams", "frames")
# How often the loop asks the scheduler which workers are there: a lost node
# is noticed (and a returning one re-created) within about this long. Each
# look is one small round trip to the scheduler.
HEALTH_PERIOD_S = 0.5
# A node whose actor could not be (re)created is tried again after this.
RECREATE_BACKOFF_S = 2.0
# The long poll of a streams-mode node: a reply at least this often even
# when nothing happens, so a node's loss shows as an error soon enough.
TAKE_WAIT_S = 0.1
STARTED_NODE = "live"


class ClusterError(RuntimeError):
    """The cluster cannot go on: no scheduler, no node, or a node's failure."""


@dataclass
class _Call:
    node: str
    generation: int
    kind: str  # take, infer, begin
    key: Any
    run: int = 0  # the run that made the call: a reply that outlived its run is dropped
    value: Any = None
    error: BaseException | None = None


@dataclass
class _Node:
    name: str
    generation: int = 0
    state: str = "lost"  # starting, live, lost
    future: Any = None  # the actor's Dask future
    actor: Any = None
    info: NodeInfo | None = None
    calls: int = 0  # frames mode: infer calls in flight
    in_flight: dict[tuple[str, int], Any] = field(default_factory=dict)  # frames mode: their payloads
    taking: bool = False
    retry_at: float = 0.0
    metrics: Metrics | None = None


@dataclass
class _Stream:
    name: str
    source: Any
    max_frames: int | None
    reorder: ReorderBuffer[FrameResult]
    metrics: StreamMetrics = field(default_factory=StreamMetrics)
    node: str | None = None  # streams mode: where it runs
    done: bool = False  # streams mode: its node said so
    exhausted: bool = False  # frames mode: no frame left to send
    issued: int = 0  # frames mode: ids handed out
    iterator: Iterator[tuple[np.ndarray, int]] | None = None
    capture_ns: dict[int, int] = field(default_factory=dict)  # frames mode, in flight

    @property
    def complete(self) -> bool:
        if self.iterator is not None or self.exhausted:
            return self.exhausted and self.reorder.next_frame_id >= self.issued
        return self.done


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
        if not backends:
            raise ValueError("a Cluster needs at least one backend per node")
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")
        from distributed import Client

        self.address = address
        self.backends = list(backends)
        self.max_frame_shape = (int(max_frame_shape[0]), int(max_frame_shape[1]), 3)
        self.calibrate_s = calibrate_s
        if max_in_flight < 1 or frames_per_call < 1:
            raise ValueError("max_in_flight and frames_per_call must be >= 1")
        self.max_in_flight = max_in_flight
        self.frames_per_call = frames_per_call
        self.encoding = encoding
        self.start_timeout_s = start_timeout_s
        self.scheduler_timeout_s = scheduler_timeout_s
        self.node_wait_s = node_wait_s
        self.pipeline_options = dict(pipeline_options or {})
        self.metrics = Metrics()
        self.node_metrics: dict[str, Metrics] = {}
        self.events: list[str] = []  # node losses and returns, as lines
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._next_health = 0.0
        self._run = 0
        self._scheduler_lost_at: float | None = None
        try:
            self.client: Any = Client(  # type: ignore[no-untyped-call]
                address, timeout=connect_timeout_s, set_as_default=False)
        except (OSError, TimeoutError) as error:
            raise ClusterError(f"no Dask scheduler answers at {address} ({error}); start one with "
                               "`dask scheduler` (see the README, \"Scale-out\")") from error
        try:
            workers = self._workers()
            found = sorted({name for info in workers.values() for name in info.get("resources", {})
                            if name.startswith("node")})
            names = list(nodes) if nodes is not None else found
            if not names:
                raise ClusterError(f"the scheduler at {address} has no worker with a node resource: "
                                   "start each with `dask worker ... --nthreads 1 --resources node_a=1`")
            self.nodes = {name: _Node(name) for name in names}
            for node in self.nodes.values():
                self._create(node)
            deadline = time.monotonic() + start_timeout_s
            for node in self.nodes.values():
                self._wait_created(node, deadline)
        except BaseException:
            self.close()
            raise

    # ---- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def calibration(self) -> dict[str, float]:
        """Each live node's calibrated FPS (all its backends together)."""
        return {name: node.info.ideal_fps for name, node in self.nodes.items()
                if node.state == STARTED_NODE and node.info is not None}

    def close(self) -> None:
        """Close every node's pipeline and the connection. Idempotent."""
        client = getattr(self, "client", None)
        if client is None:
            return
        for node in getattr(self, "nodes", {}).values():
            if node.state == STARTED_NODE and node.actor is not None:
                try:
                    node.actor.close().result(timeout=15)
                except Exception:  # noqa: BLE001 - a node gone already has nothing to close
                    log.debug("closing node %s failed", node.name, exc_info=True)
            self._drop(node)
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
        while len(self._live()) < wanted:
            if time.monotonic() > deadline:
                raise ClusterError(f"{len(self._live())} of {wanted} nodes live after {timeout_s:g} s")
            self._health(lambda node: None)
            time.sleep(HEALTH_PERIOD_S / 5)
        return [node.name for node in self._live()]

    def _workers(self) -> dict[str, Any]:
        try:
            info = self.client.scheduler_info(n_workers=-1)
        except Exception as error:  # noqa: BLE001 - whatever the comm raised: the scheduler is gone
            raise ClusterError(f"lost the Dask scheduler at {self.address}: {error}") from error
        return dict(info.get("workers", {}))

    # ---- nodes: create, lose, re-create ---------------------------------------------------------

    def _create(self, node: _Node) -> None:
        """Submit the node's actor, pinned by its resource (it starts and calibrates there)."""
        node.generation += 1
        node.state = "starting"
        node.future = self.client.submit(
            NodeActor, node.name, self.backends, self.max_frame_shape, self.pipeline_options,
            self.calibrate_s, actor=True, resources={node.name: 1}, pure=False,
            key=f"aip-node-{node.name}-{node.generation}-{time.time_ns()}")

    def _wait_created(self, node: _Node, deadline: float) -> None:
        from distributed import TimeoutError as DaskTimeoutError

        try:
            node.future.result(timeout=max(deadline - time.monotonic(), 0.1))
        except (TimeoutError, DaskTimeoutError):
            pass
        except Exception:  # noqa: BLE001 - _created reports it
            pass
        if not node.future.done():
            raise ClusterError(f"node {node.name} did not start in {self.start_timeout_s:g} s: does a "
                               f"worker with `--resources {node.name}=1` run?")
        self._created(node)
        if node.state != STARTED_NODE:
            raise ClusterError(f"node {node.name} failed to start: {self.events[-1]}")

    def _created(self, node: _Node) -> None:
        try:
            with self.client.as_current():  # the proxy binds to this client, not a global one
                node.actor = node.future.result()
            node.info = node.actor.begin().result(timeout=self.start_timeout_s)
        except Exception as error:  # noqa: BLE001 - the node's failure, as text
            self._event(f"node {node.name} failed to start: {_describe(error)}", logging.WARNING)
            self._drop(node)
            node.retry_at = time.monotonic() + RECREATE_BACKOFF_S
            return
        node.calls = 0
        node.state = STARTED_NODE
        node.taking = False
        self._event(f"node {node.name} started on {node.info.address}: {', '.join(node.info.labels)}, "
                    f"calibrated {node.info.ideal_fps:.1f} FPS")

    def _drop(self, node: _Node) -> None:
        """Forget the node's actor: release it (the scheduler would recompute it otherwise)."""
        node.generation += 1
        node.state = "lost"
        node.actor = None
        node.taking = False
        if node.future is not None:
            try:
                node.future.release()
            except Exception:  # noqa: BLE001 - a client already closing
                pass
            node.future = None

    def _lose(self, node: _Node, why: str, on_lost: Callable[[_Node], None]) -> None:
        if node.state != STARTED_NODE:
            return
        self._event(f"node {node.name} lost ({why}); {len(node.in_flight)} frames in flight go to "
                    "the other nodes", logging.WARNING)
        self._drop(node)
        node.retry_at = time.monotonic() + RECREATE_BACKOFF_S
        on_lost(node)

    def _health(self, on_lost: Callable[[_Node], None]) -> None:
        now = time.monotonic()
        if now < self._next_health:
            return
        self._next_health = now + HEALTH_PERIOD_S
        if self.client.status != "running":
            self._scheduler_lost_at = self._scheduler_lost_at or now
            if now - self._scheduler_lost_at > self.scheduler_timeout_s:
                raise ClusterError(f"lost the Dask scheduler at {self.address}: no answer for "
                                   f"{self.scheduler_timeout_s:g} s (client {self.client.status})")
            return
        self._scheduler_lost_at = None
        workers = self._workers()
        addresses = set(workers)
        resources = {name for info in workers.values() for name in info.get("resources", {})}
        for node in self.nodes.values():
            if node.state == STARTED_NODE and node.info is not None and node.info.address not in addresses:
                self._lose(node, "its Dask worker left the scheduler", on_lost)
            elif node.state == "lost" and node.name in resources and now >= node.retry_at:
                self._event(f"node {node.name}: a worker with its resource is back; re-creating it")
                self._create(node)
            elif node.state == "starting" and node.future is not None and node.future.done():
                self._created(node)

    def _event(self, line: str, level: int = logging.INFO) -> None:
        log.log(level, "%s", line)
        self.events.append(line)

    def _live(self) -> list[_Node]:
        return [node for node in self.nodes.values() if node.state == STARTED_NODE]

    # ---- calls -------------------------------------------------------------------------------

    def _call(self, node: _Node, kind: str, key: Any, method: str, *args: Any, **kwargs: Any) -> bool:
        """Call ``method`` on the node's actor; its reply comes to the queue. False: the node is gone."""
        generation = node.generation
        try:
            future = getattr(node.actor, method)(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - "Worker holding Actor was lost" and the like
            self._calls.put(_Call(node.name, generation, kind, key, self._run, error=error))
            return False
        calls = self._calls
        run = self._run

        async def wait() -> None:
            try:
                calls.put(_Call(node.name, generation, kind, key, run, value=await future))
            except BaseException as error:  # noqa: BLE001 - every ending is a reply
                calls.put(_Call(node.name, generation, kind, key, run, error=error))

        self.client.loop.add_callback(wait)
        return True

    def _replies(self, on_lost: Callable[[_Node], None]) -> list[_Call]:
        """The replies of the current generations, waiting a little for the first."""
        self._health(on_lost)
        replies: list[_Call] = []
        try:
            replies.append(self._calls.get(timeout=HEALTH_PERIOD_S / 2))
            while True:
                replies.append(self._calls.get_nowait())
        except queue.Empty:
            pass
        current = []
        for reply in replies:
            node = self.nodes[reply.node]
            if reply.generation != node.generation or node.state != STARTED_NODE or reply.run != self._run:
                continue  # an old actor's (its work went elsewhere already), or an earlier run's
            if reply.error is not None and _is_node_failure(reply.error):
                self._lose(node, _describe(reply.error), on_lost)
                continue
            current.append(reply)
        return current

    def _wait_for_a_node(self, on_lost: Callable[[_Node], None]) -> None:
        deadline = time.monotonic() + self.node_wait_s
        while not self._live():
            if time.monotonic() > deadline:
                raise ClusterError(f"every node is lost and none came back in {self.node_wait_s:g} s")
            self._replies(on_lost)

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
        streams = {f"s{i}": _Stream(f"s{i}", source, max_frames, ReorderBuffer(
            capacity=1 << 16, on_overflow="raise", stream=f"s{i}")) for i, source in enumerate(items)}
        metrics = self.metrics = Metrics(ideal_fps=sum(self.calibration.values()) or None)
        metrics.streams = {name: stream.metrics for name, stream in streams.items()}
        cpu_start = time.process_time()
        self._run += 1
        for node in self._live():
            node.metrics = None
            node.taking = False
            node.calls = 0
            node.info = node.actor.begin().result(timeout=self.start_timeout_s)
        start_ns = time.perf_counter_ns()
        try:
            if mode == "streams":
                yield from self._run_streams(streams, metrics, start_ns, stream_options or {})
            else:
                yield from self._run_frames(streams, metrics, start_ns)
        finally:
            metrics.wall_time_s = (time.perf_counter_ns() - start_ns) / 1e9
            metrics.manager_cpu_s = time.process_time() - cpu_start
            for stream in streams.values():
                metrics.frames_generated += stream.metrics.frames_read
                metrics.frames_assigned += stream.metrics.frames_published
                if stream.iterator is not None:
                    close_quietly(stream.source)
            self.node_metrics = {}
            for node in self._live():
                try:
                    self.node_metrics[node.name] = node.actor.end().result(timeout=30)
                except Exception:  # noqa: BLE001 - a node lost at the very end
                    log.warning("node %s: no metrics at the end of the run", node.name, exc_info=True)
                node.in_flight.clear()

    def _deliver(self, stream: _Stream, item: FrameResult | Gap, node: str, metrics: Metrics,
                 start_ns: int) -> Iterator[FrameResult | Gap]:
        if item.frame_id < stream.reorder.next_frame_id:
            return  # delivered already (a node lost after sending it): never twice
        if isinstance(item, Gap):
            try:
                stream.reorder.mark_gap(item.frame_id, item.reason)
            except DuplicateFrameError:
                return
            if item.reason == "late":
                stream.metrics.frames_late += 1
                metrics.frames_late += 1
            else:
                stream.metrics.frames_dropped += 1
                metrics.frames_dropped += 1
        else:
            item = _on_node(item, node)
            try:
                stream.reorder.push(item.frame_id, item)
            except DuplicateFrameError:
                return
            metrics.record_processed(item.backend, (item.t_infer_end_ns - item.t_infer_start_ns) / 1e9)
        for ready in stream.reorder.release_ready():
            now = time.perf_counter_ns()
            if isinstance(ready, FrameResult):
                captured = stream.capture_ns.pop(ready.frame_id, None)
                if captured is not None:  # frames mode: the client's own clock, both ends
                    ready = _replace(ready, t_capture_ns=captured, t_done_ns=now)
                end_to_end = max(ready.t_done_ns - ready.t_capture_ns, 0) / 1e9
                metrics.record_ordered(ready.backend, end_to_end, (now - start_ns) / 1e9)
                stream.metrics.frames_ordered += 1
                stream.metrics.end_to_end.record(end_to_end)
                stream.metrics.first_ns = stream.metrics.first_ns or now
                stream.metrics.last_ns = now
            else:
                stream.capture_ns.pop(ready.frame_id, None)
            yield ready

    # ---- streams mode ---------------------------------------------------------------------------

    def _run_streams(self, streams: dict[str, _Stream], metrics: Metrics, start_ns: int,
                     options: dict[str, Any]) -> Iterator[FrameResult | Gap]:
        for stream in streams.values():
            if not isinstance(stream.source, (str, Path, int)):
                raise ValueError("streams mode runs sources the nodes open themselves (paths, URLs, "
                                 "camera indexes, synthetic:WxH); use mode='frames' for frames in hand")
            stream.source = str(stream.source)

        def place(names: list[str]) -> None:
            self._wait_for_a_node(on_lost)
            live = self._live()
            capacity = {node.name: node.info.ideal_fps if node.info else 1.0 for node in live}
            load = {node.name: sum(1 for s in streams.values() if s.node == node.name and not s.done)
                    for node in live}
            for name, where in assign_streams([streams[n].name for n in names], capacity, load).items():
                stream = streams[name]
                first = stream.reorder.next_frame_id
                live_source = _is_live(stream.source)
                left = None if stream.max_frames is None else stream.max_frames - first
                if left is not None and left <= 0:
                    stream.done = True
                    continue
                try:
                    self.nodes[where].actor.add_stream(
                        name, stream.source, first_id=first, skip=0 if live_source else first,
                        max_frames=left, options=options).result(timeout=self.start_timeout_s)
                except Exception as error:
                    if _is_node_failure(error):
                        self._lose(self.nodes[where], _describe(error), on_lost)
                        stream.node = None
                        continue
                    raise
                stream.node = where
                stream.metrics.state = "running"

        def on_lost(node: _Node) -> None:
            orphans = [s.name for s in streams.values() if s.node == node.name and not s.done]
            for name in orphans:
                streams[name].node = None
            if orphans:
                self._event(f"streams {', '.join(orphans)} of node {node.name} go to the other nodes")

        place(list(streams))
        while not all(stream.complete for stream in streams.values()):
            unplaced = [s.name for s in streams.values() if s.node is None and not s.done]
            if unplaced:
                place(unplaced)
            for node in self._live():
                if not node.taking:
                    node.taking = self._call(node, "take", None, "take", TAKE_WAIT_S)
            for reply in self._replies(on_lost):
                node = self.nodes[reply.node]
                node.taking = False
                if reply.error is not None:
                    raise ClusterError(f"node {node.name}: {_describe(reply.error)}") from reply.error
                for item in reply.value:
                    if isinstance(item, StreamDone):
                        stream = streams[item.stream]
                        stream.done = True
                        stream.metrics.state = item.state
                        if item.state == "evicted":
                            self._event(f"stream {item.stream} evicted on node {node.name}: {item.message}")
                        continue
                    stream = streams[item.stream]
                    if item.frame_id >= stream.reorder.next_frame_id:
                        stream.metrics.frames_read += 1
                        stream.metrics.frames_published += 1
                    yield from self._deliver(stream, item, node.name, metrics, start_ns)

    # ---- frames mode ----------------------------------------------------------------------------

    def _run_frames(self, streams: dict[str, _Stream], metrics: Metrics,
                    start_ns: int) -> Iterator[FrameResult | Gap]:
        from aip.io.sources import open_source

        for stream in streams.values():
            if isinstance(stream.source, (str, Path, int)):
                stream.source = open_source(stream.source)
            stream.iterator = _frames_of(stream.source)
        retry: deque[tuple[str, int, Any]] = deque()  # (stream, frame id, payload) of lost nodes
        order = itertools.cycle(list(streams.values()))

        def on_lost(node: _Node) -> None:
            retry.extendleft(sorted(((stream, frame_id, payload) for (stream, frame_id), payload
                                     in node.in_flight.items()), reverse=True))
            node.in_flight.clear()
            node.calls = 0

        def next_frame() -> tuple[str, int, Any] | None:
            if retry:
                return retry.popleft()
            for _ in range(len(streams)):
                stream = next(order)
                if stream.exhausted:
                    continue
                if stream.max_frames is not None and stream.issued >= stream.max_frames:
                    stream.exhausted = True
                if stream.exhausted:
                    stream.metrics.state = "ended"
                    continue
                assert stream.iterator is not None
                item = next(stream.iterator, None)
                if item is None:
                    stream.exhausted = True
                    stream.metrics.state = "ended"
                    continue
                frame, captured = item
                frame_id = stream.issued
                stream.issued += 1
                stream.metrics.frames_read += 1
                stream.capture_ns[frame_id] = captured
                return stream.name, frame_id, encode_frame(frame, self.encoding)
            return None

        while not all(stream.complete for stream in streams.values()):
            while True:  # fill every live node's calls, the one with fewest first
                free = sorted((n.calls, n.name) for n in self._live() if n.calls < self.max_in_flight)
                if not free:
                    break
                batch: list[tuple[str, int, Any]] = []
                while len(batch) < self.frames_per_call and (work := next_frame()) is not None:
                    batch.append(work)
                if not batch:
                    break
                node = self.nodes[free[0][1]]
                for stream_name, frame_id, payload in batch:
                    node.in_flight[(stream_name, frame_id)] = payload
                    streams[stream_name].metrics.frames_published += 1
                node.calls += 1
                if not self._call(node, "infer", [(s, i) for s, i, _ in batch], "infer", batch):
                    break
            if not self._live() and (retry or any(n.in_flight for n in self.nodes.values())
                                     or not all(s.exhausted for s in streams.values())):
                self._wait_for_a_node(on_lost)
            for reply in self._replies(on_lost):
                node = self.nodes[reply.node]
                node.calls -= 1
                if reply.error is not None:
                    log.warning("%d frames failed on node %s: %s", len(reply.key), node.name,
                                _describe(reply.error))
                answers = reply.value if reply.error is None else [
                    Gap(frame_id, "failed", stream) for stream, frame_id in reply.key]
                for key, item in zip(reply.key, answers):
                    if node.in_flight.pop(key, None) is None:
                        continue  # resent after a loss and answered already
                    yield from self._deliver(streams[key[0]], item, node.name, metrics, start_ns)


def _is_frames(sources: Any) -> bool:
    """One source of frames (an iterable of arrays), rather than a list of sources."""
    if isinstance(sources, np.ndarray):
        return True
    if isinstance(sources, (list, tuple)):
        return any(isinstance(item, np.ndarray) or (isinstance(item, tuple) and len(item) == 2
                                                    and isinstance(item[0], np.ndarray))
                   for item in sources)
    return hasattr(sources, "__next__") or hasattr(sources, "read_into")


def _frames_of(source: Any) -> Iterator[tuple[np.ndarray, int]]:
    for item in source:
        if isinstance(item, tuple):
            yield item[0], int(item[1]) or time.perf_counter_ns()
        else:
            yield item, time.perf_counter_ns()


def _is_live(spec: str) -> bool:
    from aip.io.sources import STREAM_SCHEMES

    return spec.isdigit() or spec.lower().startswith(STREAM_SCHEMES)


def _on_node(result: FrameResult, node: str) -> FrameResult:
    """The result, its backend named with its node (``node_a/onnx``)."""
    return _replace(result, backend=f"{node}/{result.backend}")


def _replace(result: FrameResult, **changes: Any) -> FrameResult:
    import dataclasses

    return dataclasses.replace(result, **changes)



def _is_node_failure(error: BaseException) -> bool:
    """The node is gone or broken (its frames go elsewhere), as against one frame's failure."""
    from asyncio import CancelledError

    from distributed.comm.core import CommClosedError

    if isinstance(error, (OSError, CommClosedError, NodeError, CancelledError, TimeoutError)):
        return True
    return isinstance(error, RuntimeError) and "Worker holding Actor was lost" in str(error)


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    if "Traceback (most recent call last)" in text:
        lines = [line for line in text.splitlines() if line.strip()]
        return f"{lines[0]} ... {lines[-1].strip()}"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


__all__ = ["MODES", "Cluster", "ClusterError"]
