"""``streams`` mode: whole streams per node; each node reads its own.

Streams go to the live nodes by their calibrated FPS (:func:`assign_streams`).
Each node's results come back through a long poll (``take``), one call in
flight per node. A lost node's streams are placed again on the others,
from the first frame the client has no result for: a file is read from
there (the frames before it skipped), a live source just goes on.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aip.cluster.assign import assign_streams
from aip.cluster.membership import LIVE, ClusterError, Membership, NodeHandle, Reply, describe, is_node_failure
from aip.cluster.node import StreamDone
from aip.cluster.ordering import ClientStream, OrderedDelivery
from aip.pipeline.reorder import Gap
from aip.results import FrameResult

# The long poll of a node: a reply at least this often even when nothing
# happens, so that a node's loss shows as an error soon enough.
TAKE_WAIT_S = 0.1


class StreamsMode:
    """One run of ``streams``: sources every node can open (paths, URLs,
    camera indexes, ``synthetic:WxH``), each added to its node with
    ``stream_options``."""

    def __init__(self, membership: Membership, streams: dict[str, ClientStream],
                 delivery: OrderedDelivery, stream_options: dict[str, Any]) -> None:
        for stream in streams.values():
            if not isinstance(stream.source, (str, Path, int)):
                raise ValueError("streams mode runs sources the nodes open themselves (paths, URLs, "
                                 "camera indexes, synthetic:WxH); use mode='frames' for frames in hand")
            stream.source = str(stream.source)
        self._membership = membership
        self._streams = streams
        self._delivery = delivery
        self._stream_options = stream_options
        self._taking: set[str] = set()  # nodes with a take call in flight

    def results(self) -> Iterator[FrameResult | Gap]:
        """Every stream's results, in order per stream, until each has ended."""
        membership = self._membership
        membership.on_lost = self._on_lost
        self._place(list(self._streams))
        while not all(stream.complete for stream in self._streams.values()):
            unplaced = [s.name for s in self._streams.values() if s.node is None and not s.done]
            if unplaced:
                self._place(unplaced)
            for node in membership.live():
                if node.name not in self._taking and membership.call(node, None, "take", TAKE_WAIT_S):
                    self._taking.add(node.name)
            for reply in membership.replies():
                self._taking.discard(reply.node)
                if reply.error is not None:
                    raise ClusterError(f"node {reply.node}: {describe(reply.error)}") from reply.error
                yield from self._taken(reply)

    def _taken(self, reply: Reply) -> Iterator[FrameResult | Gap]:
        for item in reply.value:
            stream = self._streams[item.stream]
            if isinstance(item, StreamDone):
                stream.done = True
                stream.metrics.state = item.state
                if item.state == "evicted":
                    self._membership.event(f"stream {item.stream} evicted on node {reply.node}: "
                                           f"{item.message}")
                continue
            if item.frame_id >= stream.reorder.next_frame_id:
                stream.metrics.frames_read += 1
                stream.metrics.frames_published += 1
            yield from self._delivery.deliver(stream, item, reply.node)

    def _place(self, names: list[str]) -> None:
        """The streams ``names`` to live nodes, weighted by capacity and current load."""
        self._membership.wait_for_a_node()
        live = self._membership.live()
        capacity = {node.name: node.info.ideal_fps if node.info else 1.0 for node in live}
        load = {node.name: sum(1 for s in self._streams.values() if s.node == node.name and not s.done)
                for node in live}
        for name, where in assign_streams(names, capacity, load).items():
            self._start_on(self._streams[name], self._membership.nodes[where])

    def _start_on(self, stream: ClientStream, node: NodeHandle) -> None:
        """Run the stream on ``node`` from its first frame without a result here."""
        first = stream.reorder.next_frame_id
        left = None if stream.max_frames is None else stream.max_frames - first
        if left is not None and left <= 0:
            stream.done = True
            return
        if node.state != LIVE:  # lost while the streams before it were added: placed again later
            stream.node = None
            return
        try:
            node.actor.add_stream(
                stream.name, stream.source, first_id=first, skip=0 if _is_live(stream.source) else first,
                max_frames=left, options=self._stream_options,
            ).result(timeout=self._membership.timeouts.start_s)
        except Exception as error:
            if not is_node_failure(error):
                raise
            self._membership.lose(node, describe(error))
            stream.node = None
            return
        stream.node = node.name
        stream.metrics.state = "running"

    def _on_lost(self, node: NodeHandle) -> None:
        self._taking.discard(node.name)
        orphans = [s.name for s in self._streams.values() if s.node == node.name and not s.done]
        for name in orphans:
            self._streams[name].node = None
        if orphans:
            self._membership.event(f"streams {', '.join(orphans)} of node {node.name} go to the other nodes")


def _is_live(spec: str) -> bool:
    """A camera or a network stream: it goes on by itself (a file would start over)."""
    from aip.io.sources import STREAM_SCHEMES

    return spec.isdigit() or spec.lower().startswith(STREAM_SCHEMES)


__all__ = ["StreamsMode"]
