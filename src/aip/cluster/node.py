"""The Dask actor of one node: that node's local :class:`~aip.pipeline.Pipeline`.

The actor lives in a Dask worker process of the node, pinned there by the
node's resource. Its pipeline's shared memory and worker processes stay on
the node; only small things cross the network: results, metrics and, in
``frames`` mode, the frames themselves. One local run (``until_stopped``)
goes on from :meth:`NodeActor.begin` to :meth:`NodeActor.end`, consumed by
a thread of the actor that routes each result:

- ``streams`` mode: a stream the node reads itself; results queue in the
  outbox, which the client empties with :meth:`NodeActor.take` (a long poll),
  in order, with a :class:`StreamDone` after a stream's last one;
- ``frames`` mode: a frame the client sent with :meth:`NodeActor.infer`;
  the call's reply is the frame's own result.

Blocking calls (start, calibration, opening a source) are plain methods: Dask
runs them in the worker's actor thread. ``take`` and ``infer`` are
coroutines: Dask runs them on the worker's event loop, so that many of them
wait at once without holding a thread each.
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import multiprocessing
import queue
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aip.cluster.options import NodeOptions
from aip.cluster.wire import decode_frame
from aip.pipeline.metrics import Metrics
from aip.pipeline.reorder import Gap
from aip.results import FrameResult

log = logging.getLogger("aip.cluster")

# A frames-mode feed (the local stream the client's frames go through) that
# gets no frame for this long ends; the next frame starts a new one. Well
# under the pipeline's stream timeout, which would evict a stream whose
# reader waits longer; short enough that an idle node holds no reader.
FEED_IDLE_S = 1.0
# take(): how often the long poll looks at the outbox. Shorter costs the
# worker's event loop wake-ups; longer adds that much to a result's latency.
TAKE_POLL_S = 0.005
# take() hands over at most this many items per call: a bounded reply.
TAKE_MAX_ITEMS = 512


@dataclass(frozen=True)
class StreamDone:
    """A node's stream has ended and every one of its results was taken before this."""

    stream: str
    state: str  # ended, evicted or removed
    message: str = ""


@dataclass(frozen=True)
class NodeInfo:
    node: str
    address: str  # the Dask worker's
    labels: list[str]
    ideal_fps: float  # calibrated, all its backends together
    max_frame_shape: tuple[int, int, int]


class NodeError(RuntimeError):
    """The node's local pipeline failed; the message carries its traceback."""


def allow_child_processes(node: str) -> None:
    """Let this Dask worker process start the local pipeline's worker processes.

    Under a nanny, a Dask worker is a daemonic multiprocessing process unless
    started with ``DASK_DISTRIBUTED__WORKER__DAEMON=False``, and
    multiprocessing refuses children to a daemon: its parent terminates it
    rather than joining it, which would orphan them. Here nothing is
    orphaned: the Dask worker exits when its nanny goes, the pipeline's
    workers are daemonic children that end with it, and each one exits by
    itself once its parent is gone (it watches its parent's pid). So the
    flag is cleared, through multiprocessing's own setter, for the rest of
    the process's life: the pipeline starts its workers now and may restart
    them mid-run (``restart_workers``). The nanny's view of the process does
    not change. Where the setter refuses, a :class:`NodeError` names the fix.
    """
    process = multiprocessing.current_process()
    if not process.daemon:
        return
    try:
        process.daemon = False
    except AssertionError as error:  # the setter refuses ("process has already started")
        raise NodeError(
            f"node {node}: its Dask worker is a daemonic process, which may not start the local "
            "pipeline's worker processes; start the worker with DASK_DISTRIBUTED__WORKER__DAEMON=False "
            "or `dask worker --no-nanny`") from error
    log.info("node %s: this Dask worker was a daemonic process; it now may start the local "
             "pipeline's workers (DASK_DISTRIBUTED__WORKER__DAEMON=False does the same)", node)


class _Feed:
    """The iterator a frames-mode local stream reads: frames the client sent,
    in the order they came. It ends when idle for ``FEED_IDLE_S``; a frame put
    in an open feed is always read (the feed only closes when empty, under
    the same lock as ``put``)."""

    def __init__(self, name: str, lock: threading.Lock) -> None:
        self.name = name
        self.closed = False
        self.count = 0
        self._lock = lock
        self._frames: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()

    def put(self, frame: np.ndarray) -> int:
        """Queue a frame (the caller holds the lock); its id in the local stream."""
        self._frames.put(frame)
        self.count += 1
        return self.count - 1

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        while True:
            try:
                return self._frames.get(timeout=FEED_IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._frames.empty():
                        self.closed = True
                        raise StopIteration from None


@dataclass
class _Streamed:
    """A streams-mode stream: its ids in the client's numbering start at ``offset``."""

    client_name: str
    offset: int
    delivered: int = 0
    expected: int | None = None  # frames its reader issued, once it has ended
    state: str = "running"
    message: str = ""


class NodeActor:
    """One node's local pipeline, driven by the client (see the module)."""

    def __init__(self, node: str, options: NodeOptions) -> None:
        from aip.pipeline import Pipeline

        self.node = node
        allow_child_processes(node)
        self._calibration_dir = tempfile.TemporaryDirectory(prefix=f"aip-{node}-")
        self._pipeline = Pipeline(options.backends, on_event=self._on_event, **options.pipeline_options)
        shape = options.max_frame_shape
        try:
            self._pipeline.start(shape)
            frame = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
            # Measured afresh: a node's worth is what it does now, under its load.
            calibration = self._pipeline.calibrate(
                frame, seconds=options.calibrate_s, warmup_frames=2, refresh=True,
                cache_path=Path(self._calibration_dir.name) / "calibration.json")
        except BaseException:
            self._pipeline.close()
            self._calibration_dir.cleanup()
            raise
        from distributed import get_worker

        self.info = NodeInfo(node, get_worker().address, list(self._pipeline.labels),
                             float(calibration.ideal_fps), shape)
        self._lock = threading.Lock()
        self._outbox: deque[FrameResult | Gap | StreamDone] = deque()
        self._streamed: dict[str, _Streamed] = {}
        self._feeds: dict[str, _Feed] = {}  # client stream -> its open feed
        self._feed_numbers = itertools.count()
        # (feed name, local id) -> (client stream, client frame id, the call's future)
        self._waiters: dict[tuple[str, int], tuple[str, int, asyncio.Future[Any]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._failure: str | None = None

    # ---- the local run ----------------------------------------------------------------------

    def begin(self) -> NodeInfo:
        """Start the local run that the cluster's run feeds (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._failure = None
            self._outbox.clear()  # what the last run's streams left: not this run's
            self._thread = threading.Thread(target=self._consume, name=f"aip-node-{self.node}", daemon=True)
            self._thread.start()
        return self.info

    def end(self, timeout_s: float = 30.0) -> Metrics:
        """End the local run (streams still running are stopped) and return its metrics."""
        for name, streamed in list(self._streamed.items()):
            if streamed.state == "running":
                try:
                    self._pipeline.remove_stream(name)
                except KeyError:
                    pass
        self._pipeline.stop()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._streamed.clear()
        return self._pipeline.metrics

    def close(self) -> None:
        """Stop everything and remove the node's shared memory."""
        self._pipeline.drain(1.0)
        if self._thread is not None:
            self._thread.join(5.0)
        self._pipeline.close()
        self._calibration_dir.cleanup()

    def _consume(self) -> None:
        from aip.pipeline import StreamError

        try:
            for item in self._pipeline.run(until_stopped=True):
                self._route(item)
        except StreamError:
            pass  # evicted streams: each one's StreamDone says so
        except BaseException:  # noqa: BLE001 - the client gets it, as text
            self._failure = traceback.format_exc()
            log.exception("node %s: the local pipeline failed", self.node)
        finally:
            self._fail_waiters()

    def _route(self, item: FrameResult | Gap) -> None:
        streamed = self._streamed.get(item.stream)
        if streamed is not None:
            self._outbox.append(dataclasses.replace(
                item, frame_id=item.frame_id + streamed.offset, stream=streamed.client_name))
            streamed.delivered += 1
            self._check_done(item.stream, streamed)
            return
        entry = self._waiters.pop((item.stream, item.frame_id), None)
        if entry is None:
            return
        stream, frame_id, future = entry
        answer = dataclasses.replace(item, frame_id=frame_id, stream=stream)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(_resolve, future, answer)

    def _on_event(self, event: Any) -> None:
        """The local pipeline's stream events (from the run's thread, or the caller's for removals)."""
        streamed = self._streamed.get(event.stream)
        if streamed is None or event.kind not in ("ended", "evicted", "removed"):
            return
        stream_metrics = self._pipeline.metrics.streams.get(event.stream)
        # Every id the reader issued (read frames: published or dropped) comes
        # out as a result or a gap: that many make the stream complete.
        streamed.expected = stream_metrics.frames_read if stream_metrics is not None else streamed.delivered
        streamed.state = event.kind
        streamed.message = event.message
        self._check_done(event.stream, streamed)

    def _check_done(self, name: str, streamed: _Streamed) -> None:
        if streamed.expected is not None and streamed.delivered >= streamed.expected:
            if self._streamed.pop(name, None) is not None:
                self._outbox.append(StreamDone(streamed.client_name, streamed.state, streamed.message))

    def _fail_waiters(self) -> None:
        error = NodeError(f"node {self.node}: its local pipeline stopped"
                          + (f":\n{self._failure}" if self._failure else ""))
        waiters, self._waiters = self._waiters, {}
        if self._loop is not None:
            for _, _, future in waiters.values():
                self._loop.call_soon_threadsafe(_fail, future, error)

    def _check_running(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            raise NodeError(f"node {self.node} is not running"
                            + (f": its local pipeline failed:\n{self._failure}" if self._failure else
                               " (begin() first)"))

    # ---- streams mode ---------------------------------------------------------------------------

    def add_stream(self, name: str, spec: str, *, first_id: int = 0, skip: int = 0,
                   max_frames: int | None = None, options: dict[str, Any] | None = None) -> None:
        """Read ``spec`` here, as the client's stream ``name``; its ids count from ``first_id``.

        ``skip`` frames are read and dropped first: a file stream taken over
        from a lost node starts where the client's results stopped (a live
        one just goes on).
        """
        from aip.io.sources import open_source

        self._check_running()
        source = open_source(spec)
        try:
            for _ in itertools.islice(source, skip):
                pass
        except BaseException:
            source.close()
            raise
        local = f"{name}@{next(self._feed_numbers)}"
        self._streamed[local] = _Streamed(name, first_id)
        try:
            self._pipeline.add_stream(source, local, max_frames=max_frames, reopen=spec, **(options or {}))
        except BaseException:
            del self._streamed[local]
            source.close()
            raise

    async def take(self, wait_s: float = 0.1) -> list[FrameResult | Gap | StreamDone]:
        """The results in the outbox, in order; waits up to ``wait_s`` for the first."""
        deadline = time.monotonic() + wait_s
        while not self._outbox and time.monotonic() < deadline:
            if self._failure is not None:
                raise NodeError(f"node {self.node}: its local pipeline failed:\n{self._failure}")
            await asyncio.sleep(TAKE_POLL_S)
        items: list[FrameResult | Gap | StreamDone] = []
        while self._outbox and len(items) < TAKE_MAX_ITEMS:
            items.append(self._outbox.popleft())
        return items

    # ---- frames mode ----------------------------------------------------------------------------

    async def infer(self, frames: list[tuple[str, int, Any]]) -> list[FrameResult | Gap]:
        """Run frames the client sent, ``(stream, frame id, payload)`` each (see
        :mod:`aip.cluster.wire`); their results, in the same order. Several
        frames a call: the per-call cost of the network and of Dask is paid
        once for all of them."""
        self._check_running()
        decoded = [(stream, frame_id, decode_frame(payload)) for stream, frame_id, payload in frames]
        loop = self._loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[FrameResult | Gap]] = []
        new_feeds = []
        with self._lock:
            for stream, frame_id, frame in decoded:
                feed = self._feeds.get(stream)
                if feed is None or feed.closed:
                    feed = self._feeds[stream] = _Feed(f"{stream}#{next(self._feed_numbers)}", self._lock)
                    new_feeds.append(feed)
                future: asyncio.Future[FrameResult | Gap] = loop.create_future()
                self._waiters[(feed.name, feed.put(frame))] = (stream, frame_id, future)
                futures.append(future)
        for feed in new_feeds:
            # Its first frame is queued: add_stream's peek at it returns at once.
            self._pipeline.add_stream(feed, feed.name, policy="block")
        return list(await asyncio.gather(*futures))


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
