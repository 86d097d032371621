"""The client's view of the nodes: their actors, calls and replies, loss and return.

One thread (the caller's) drives it. Every call to a node is an actor call
whose completion a small coroutine on the Dask client's event loop puts in
one queue, tagged with the node's generation and the run that made it;
:meth:`Membership.replies` waits on that queue, so the caller sleeps while
nothing happens and never polls futures. A node's generation changes when it
is lost: whatever its old actor still answers is dropped, which is what
makes "nothing duplicated" hold.

Each look at the scheduler (at most every ``HEALTH_PERIOD_S``) notices a
node whose worker left (lost: the run's :attr:`Membership.on_lost` gives its
work to the others) and a worker with a lost node's resource that came back
(its actor is created again, and calibrated).
"""
from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aip.cluster.node import NodeActor, NodeError, NodeInfo
from aip.cluster.options import NodeOptions, Timeouts
from aip.pipeline.metrics import Metrics

log = logging.getLogger("aip.cluster")

# How often the client asks the scheduler which workers are there: a lost
# node is noticed (and a returning one re-created) within about this long.
# Each look is one small round trip to the scheduler.
HEALTH_PERIOD_S = 0.5
# A node whose actor could not be (re)created is tried again after this.
RECREATE_BACKOFF_S = 2.0
# A node's states: its actor is being created, answers, or is gone.
STARTING, LIVE, LOST = "starting", "live", "lost"


class ClusterError(RuntimeError):
    """The cluster cannot go on: no scheduler, no node, or a node's failure."""


@dataclass
class NodeHandle:
    """One node as the client sees it; ``generation`` changes with each actor."""

    name: str
    generation: int = 0
    state: str = LOST
    future: Any = None  # the actor's Dask future
    actor: Any = None
    info: NodeInfo | None = None
    retry_at: float = 0.0


@dataclass
class Reply:
    """The end of one actor call: its ``value``, or the ``error`` it raised."""

    node: str
    generation: int
    key: Any  # what the caller tagged the call with
    run: int  # the run that made the call: a reply that outlived its run is dropped
    value: Any = None
    error: BaseException | None = None


def _ignore_loss(node: NodeHandle) -> None:
    """Outside a run, a lost node has no work to hand over."""


class Membership:
    """The nodes named ``names`` (default: every worker resource named
    ``node*``) of the scheduler ``client`` is connected to."""

    def __init__(self, client: Any, address: str, names: Sequence[str] | None,
                 node_options: NodeOptions, timeouts: Timeouts) -> None:
        self.client = client
        self.address = address
        self.node_options = node_options
        self.timeouts = timeouts
        self.events: list[str] = []  # node losses and returns, as lines
        # The current run hands a lost node's work to the others with this.
        self.on_lost: Callable[[NodeHandle], None] = _ignore_loss
        self._replies: queue.SimpleQueue[Reply] = queue.SimpleQueue()
        self._next_health = 0.0
        self._run = 0
        self._scheduler_lost_at: float | None = None
        if names is None:
            names = sorted({name for info in self.workers().values()
                            for name in info.get("resources", {}) if name.startswith("node")})
        if not names:
            raise ClusterError(f"the scheduler at {address} has no worker with a node resource: "
                               "start each with `dask worker ... --nthreads 1 --resources node_a=1`")
        self.nodes = {name: NodeHandle(name) for name in names}

    def start(self) -> None:
        """Create every node's actor and wait until each has started (or raise)."""
        for node in self.nodes.values():
            self._create(node)
        deadline = time.monotonic() + self.timeouts.start_s
        for node in self.nodes.values():
            self._wait_created(node, deadline)

    def close(self) -> None:
        """Close every live node's pipeline and release every actor."""
        for node in self.nodes.values():
            if node.state == LIVE and node.actor is not None:
                try:
                    node.actor.close().result(timeout=15)
                except Exception:  # noqa: BLE001 - a node gone already has nothing to close
                    log.debug("closing node %s failed", node.name, exc_info=True)
            self._drop(node)

    def live(self) -> list[NodeHandle]:
        return [node for node in self.nodes.values() if node.state == LIVE]

    def workers(self) -> dict[str, Any]:
        """The scheduler's workers, by address."""
        try:
            info = self.client.scheduler_info(n_workers=-1)
        except Exception as error:  # noqa: BLE001 - whatever the comm raised: the scheduler is gone
            raise ClusterError(f"lost the Dask scheduler at {self.address}: {error}") from error
        return dict(info.get("workers", {}))

    # ---- runs -----------------------------------------------------------------------------------

    def begin_run(self) -> None:
        """A new run: replies to calls of earlier runs are dropped from now on."""
        self._run += 1
        for node in self.live():
            node.info = node.actor.begin().result(timeout=self.timeouts.start_s)

    def end_run(self) -> dict[str, Metrics]:
        """End the run on every live node; each one's own metrics."""
        self.on_lost = _ignore_loss
        metrics = {}
        for node in self.live():
            try:
                metrics[node.name] = node.actor.end().result(timeout=30)
            except Exception:  # noqa: BLE001 - a node lost at the very end
                log.warning("node %s: no metrics at the end of the run", node.name, exc_info=True)
        return metrics

    # ---- calls ----------------------------------------------------------------------------------

    def call(self, node: NodeHandle, key: Any, method: str, *args: Any) -> bool:
        """Call ``method`` on the node's actor; its reply, tagged ``key``, comes
        to :meth:`replies`. False: the node is gone (that reply says why)."""
        generation, run = node.generation, self._run
        try:
            future = getattr(node.actor, method)(*args)
        except Exception as error:  # noqa: BLE001 - "Worker holding Actor was lost" and the like
            self._replies.put(Reply(node.name, generation, key, run, error=error))
            return False
        replies = self._replies

        async def wait() -> None:
            try:
                replies.put(Reply(node.name, generation, key, run, value=await future))
            except BaseException as error:  # noqa: BLE001 - every ending is a reply
                replies.put(Reply(node.name, generation, key, run, error=error))

        self.client.loop.add_callback(wait)
        return True

    def replies(self) -> list[Reply]:
        """The replies of live nodes' current actors in this run, waiting a
        little for the first; a reply that says its node is gone loses it."""
        self.check()
        replies: list[Reply] = []
        try:
            replies.append(self._replies.get(timeout=HEALTH_PERIOD_S / 2))
            while True:
                replies.append(self._replies.get_nowait())
        except queue.Empty:
            pass
        current = []
        for reply in replies:
            node = self.nodes[reply.node]
            if reply.generation != node.generation or node.state != LIVE or reply.run != self._run:
                continue  # an old actor's (its work went elsewhere already), or an earlier run's
            if reply.error is not None and is_node_failure(reply.error):
                self.lose(node, describe(reply.error))
                continue
            current.append(reply)
        return current

    def wait_for_a_node(self) -> None:
        """Until a node is live; a :class:`ClusterError` after ``node_wait_s``."""
        deadline = time.monotonic() + self.timeouts.node_wait_s
        while not self.live():
            if time.monotonic() > deadline:
                raise ClusterError(f"every node is lost and none came back in "
                                   f"{self.timeouts.node_wait_s:g} s")
            self.replies()  # none to drop: every one is of a node not live

    # ---- nodes: create, lose, re-create -----------------------------------------------------------

    def lose(self, node: NodeHandle, why: str) -> None:
        """The node is gone: forget its actor and hand its work to the others."""
        if node.state != LIVE:
            return
        self.event(f"node {node.name} lost ({why})", logging.WARNING)
        self._drop(node)
        node.retry_at = time.monotonic() + RECREATE_BACKOFF_S
        self.on_lost(node)

    def event(self, line: str, level: int = logging.INFO) -> None:
        log.log(level, "%s", line)
        self.events.append(line)

    def _create(self, node: NodeHandle) -> None:
        """Submit the node's actor, pinned by its resource (it starts and calibrates there)."""
        node.generation += 1
        node.state = STARTING
        node.future = self.client.submit(
            NodeActor, node.name, self.node_options, actor=True, resources={node.name: 1}, pure=False,
            key=f"aip-node-{node.name}-{node.generation}-{time.time_ns()}")

    def _wait_created(self, node: NodeHandle, deadline: float) -> None:
        from distributed import TimeoutError as DaskTimeoutError

        try:
            node.future.result(timeout=max(deadline - time.monotonic(), 0.1))
        except (TimeoutError, DaskTimeoutError):
            pass
        except Exception:  # noqa: BLE001 - _created reports it
            pass
        if not node.future.done():
            raise ClusterError(f"node {node.name} did not start in {self.timeouts.start_s:g} s: does a "
                               f"worker with `--resources {node.name}=1` run?")
        self._created(node)
        if node.state != LIVE:
            raise ClusterError(self.events[-1])

    def _created(self, node: NodeHandle) -> None:
        try:
            with self.client.as_current():  # the proxy binds to this client, not a global one
                node.actor = node.future.result()
            node.info = node.actor.begin().result(timeout=self.timeouts.start_s)
        except Exception as error:  # noqa: BLE001 - the node's failure, as text
            self.event(f"node {node.name} failed to start: {describe(error)}", logging.WARNING)
            self._drop(node)
            node.retry_at = time.monotonic() + RECREATE_BACKOFF_S
            return
        node.state = LIVE
        self.event(f"node {node.name} started on {node.info.address}: {', '.join(node.info.labels)}, "
                   f"calibrated {node.info.ideal_fps:.1f} FPS")

    def _drop(self, node: NodeHandle) -> None:
        """Forget the node's actor: release it (the scheduler would recompute it otherwise)."""
        node.generation += 1
        node.state = LOST
        node.actor = None
        if node.future is not None:
            try:
                node.future.release()
            except Exception:  # noqa: BLE001 - a client already closing
                pass
            node.future = None

    def check(self) -> None:
        """Look at the scheduler (when due): lose nodes that left, re-create returned ones."""
        now = time.monotonic()
        if now < self._next_health:
            return
        self._next_health = now + HEALTH_PERIOD_S
        if self.client.status != "running":
            self._scheduler_lost_at = self._scheduler_lost_at or now
            if now - self._scheduler_lost_at > self.timeouts.scheduler_s:
                raise ClusterError(f"lost the Dask scheduler at {self.address}: no answer for "
                                   f"{self.timeouts.scheduler_s:g} s (client {self.client.status})")
            return
        self._scheduler_lost_at = None
        workers = self.workers()
        resources = {name for info in workers.values() for name in info.get("resources", {})}
        for node in self.nodes.values():
            if node.state == LIVE and node.info is not None and node.info.address not in workers:
                self.lose(node, "its Dask worker left the scheduler")
            elif node.state == LOST and node.name in resources and now >= node.retry_at:
                self.event(f"node {node.name}: a worker with its resource is back; re-creating it")
                self._create(node)
            elif node.state == STARTING and node.future is not None and node.future.done():
                self._created(node)


def is_node_failure(error: BaseException) -> bool:
    """The node is gone or broken (its work goes elsewhere), as against one frame's failure."""
    from asyncio import CancelledError

    from distributed.comm.core import CommClosedError

    if isinstance(error, (OSError, CommClosedError, NodeError, CancelledError, TimeoutError)):
        return True
    return isinstance(error, RuntimeError) and "Worker holding Actor was lost" in str(error)


def describe(error: BaseException) -> str:
    """An error on one line: a remote traceback shortened to its first and last lines."""
    text = str(error).strip()
    if "Traceback (most recent call last)" in text:
        lines = [line for line in text.splitlines() if line.strip()]
        return f"{lines[0]} ... {lines[-1].strip()}"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


__all__ = ["ClusterError", "Membership", "NodeHandle", "Reply", "describe", "is_node_failure"]
