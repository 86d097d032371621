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

Needs the ``cluster`` extra (``pip install 'aip[cluster]'``).
"""
from __future__ import annotations

from aip.cluster.assign import assign_streams
from aip.cluster.client import MODES, Cluster, ClusterError
from aip.cluster.node import NodeError, NodeInfo, StreamDone
from aip.cluster.wire import ENCODINGS

__all__ = ["ENCODINGS", "MODES", "Cluster", "ClusterError", "NodeError", "NodeInfo", "StreamDone",
           "assign_streams"]
