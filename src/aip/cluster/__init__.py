"""Scale-out: one aip pipeline per server, driven over Dask distributed.

    client (aip run --cluster / Cluster.run)
      |  connect: distributed.Client(scheduler)      calibrate per node
      |  one actor per node, pinned by its resource (dask worker --resources node_a=1)
      v
    +--------------------- node_a ---------------------+   +--- node_b ---+
    | Dask worker -- NodeActor -- local Pipeline        |   |     ...      |
    |                  |           shared memory,       |   +--------------+
    |                  |           worker processes     |
    +------------------|--------------------------------+
          streams mode: the node reads whole streams itself; small results come back
          frames mode:  the client decodes, sends frames (raw or JPEG), <= N calls
                        in flight per node; results re-ordered per stream here

Nodes are weighted by their calibrations: in ``streams`` mode a node of
twice the FPS gets twice the streams; in ``frames`` mode each node keeps
its own window of calls full, so a faster node simply takes more. A node
whose worker leaves the scheduler is lost: its streams (from the first
frame the client has no result for) or its frames in flight go to the other
nodes, and whatever its old actor still answers is dropped, so every frame
comes out once, in order. When a worker with its resource returns, its
actor is created again (and calibrated). A scheduler that is gone is a
:class:`ClusterError`, not a wait.

The parts: :mod:`~aip.cluster.client` (:class:`Cluster`, the API),
:mod:`~aip.cluster.membership` (the nodes' actors, calls, loss and return),
:mod:`~aip.cluster.streams_mode` and :mod:`~aip.cluster.frames_mode` (one
run of each mode), :mod:`~aip.cluster.ordering` (results back in order),
:mod:`~aip.cluster.options`, :mod:`~aip.cluster.assign`,
:mod:`~aip.cluster.wire` (client side) and :mod:`~aip.cluster.node` (the
actor, on each node); :mod:`~aip.cluster.local` starts a cluster on one
machine.

Needs the ``cluster`` extra (``pip install 'aip[cluster]'``).
"""
from __future__ import annotations

from aip.cluster.assign import assign_streams
from aip.cluster.client import MODES, Cluster, ClusterError
from aip.cluster.node import NodeError, NodeInfo, StreamDone
from aip.cluster.options import FramesOptions, NodeOptions, Timeouts
from aip.cluster.wire import ENCODINGS

__all__ = ["ENCODINGS", "MODES", "Cluster", "ClusterError", "FramesOptions", "NodeError", "NodeInfo",
           "NodeOptions", "StreamDone", "Timeouts", "assign_streams"]
