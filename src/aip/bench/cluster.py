"""``python -m aip.bench cluster``: scale-out over Dask on local nodes, on ``sim``.

A scheduler and three Dask workers on this machine, each one node
(``--nthreads 1``, its own resource) whose actor runs a local Pipeline of
``sim`` workers (they sleep: these figures are about the distribution, not
inference). For 1, 2 and 3 nodes, in ``streams`` mode (whole streams per
node: two per node) and ``frames`` mode (one stream's frames spread over the
nodes; raw pixels, and JPEG at 3 nodes), FPS against the sum of the nodes'
calibrations. The last row drives the same 3 nodes' pipelines with plain
``multiprocessing`` (one process per node, two streams each) and no Dask:
what Dask costs.
"""
from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from aip.backends import BackendSpec
from aip.bench.report import format_table, publish, suite_parser

COLUMNS = ["nodes", "mode", "driver", "encoding", "frames", "seconds", "fps", "calibrated_fps",
           "efficiency", "client_cpu_pct"]
STREAMS_PER_NODE = 2


def node_backends(latency_s: float, workers: int) -> list[BackendSpec]:
    return [BackendSpec("sim", {"latency_s": latency_s})] * workers


def smooth_frames(shape: tuple[int, int, int], count: int) -> Iterator[np.ndarray]:
    """Frames like a camera's (smooth gradients that move), not noise: JPEG
    compresses them the way it does real video."""
    height, width, _ = shape
    y, x = np.mgrid[0:height, 0:width]
    for i in range(count):
        frame = np.empty(shape, np.uint8)
        frame[..., 0] = (x + 3 * i) % 256
        frame[..., 1] = (y + 2 * i) % 256
        frame[..., 2] = ((x + y) // 2 + i) % 256
        yield frame


def run_cluster(address: str, nodes: list[str], mode: str, encoding: str, args: Any) -> dict[str, Any]:
    from aip.cluster import Cluster

    shape = (args.height, args.width, 3)
    with Cluster(address, node_backends(args.latency, args.workers), nodes=nodes, max_frame_shape=shape,
                 calibrate_s=args.calibrate, encoding=encoding) as cluster:
        calibrated = sum(cluster.calibration.values())
        if mode == "streams":
            streams = STREAMS_PER_NODE * len(nodes)
            per_stream = int(calibrated * args.seconds / streams)
            sources: Any = [f"synthetic:{args.width}x{args.height}"] * streams
            count = per_stream
        else:
            count = int(calibrated * args.seconds)
            sources = smooth_frames(shape, count)
        ordered = sum(1 for _ in cluster.run(sources, mode=mode, max_frames=count))
        metrics = cluster.metrics
    return {"nodes": len(nodes), "mode": mode, "driver": "dask", "encoding": encoding if mode == "frames" else "-",
            "frames": ordered, "seconds": metrics.wall_time_s, "fps": metrics.fps,
            "calibrated_fps": calibrated, "efficiency": metrics.fps / calibrated,
            "client_cpu_pct": metrics.manager_cpu_pct}


def _mp_node(latency_s: float, workers: int, shape: tuple[int, int, int], calibrate_s: float,
             seconds: float, ready: Any, go: Any, out: Any) -> None:
    """One node without Dask: calibrate, wait for the others, run two streams."""
    import tempfile
    from pathlib import Path

    from aip.pipeline import Pipeline
    from aip.io.sources import SyntheticSource

    with tempfile.TemporaryDirectory() as folder, \
            Pipeline(node_backends(latency_s, workers)) as pipeline:
        pipeline.start(shape)
        frame = np.zeros(shape, np.uint8)
        ideal = pipeline.calibrate(frame, seconds=calibrate_s, refresh=True,
                                   cache_path=Path(folder) / "c.json").ideal_fps
        per_stream = int(ideal * seconds / STREAMS_PER_NODE)
        ready.put(ideal)
        go.wait()
        sources = [SyntheticSource(shape, count=per_stream, seed=i) for i in range(STREAMS_PER_NODE)]
        ordered = sum(1 for _ in pipeline.run(sources))
        out.put((ordered, time.perf_counter()))


def run_multiprocessing(nodes: int, args: Any) -> dict[str, Any]:
    context = mp.get_context("spawn")
    ready, out, go = context.Queue(), context.Queue(), context.Event()
    shape = (args.height, args.width, 3)
    processes = [context.Process(target=_mp_node, args=(args.latency, args.workers, shape, args.calibrate,
                                                        args.seconds, ready, go, out))
                 for _ in range(nodes)]
    for process in processes:
        process.start()
    try:
        calibrated = sum(ready.get(timeout=300) for _ in processes)
        started = time.perf_counter()
        go.set()
        finished = [out.get(timeout=300) for _ in processes]
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
    ordered = sum(count for count, _ in finished)
    seconds = max(end for _, end in finished) - started
    return {"nodes": nodes, "mode": "streams", "driver": "multiprocessing", "encoding": "-",
            "frames": ordered, "seconds": seconds, "fps": ordered / seconds,
            "calibrated_fps": calibrated, "efficiency": ordered / seconds / calibrated}


def main(argv: list[str] | None = None) -> int:
    parser = suite_parser("cluster", __doc__)
    parser.add_argument("--nodes", type=int, default=3, help="up to this many local nodes (default 3)")
    parser.add_argument("--latency", type=float, default=0.02, help="sim seconds per frame (default 0.02)")
    parser.add_argument("--workers", type=int, default=2, help="sim workers per node (default 2)")
    parser.add_argument("--seconds", type=float, default=5.0, help="about how long each run lasts")
    parser.add_argument("--calibrate", type=float, default=1.0, help="seconds per calibration phase")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    args = parser.parse_args(argv)
    from aip.cluster.local import LocalDaskCluster

    rows = []
    with LocalDaskCluster(args.nodes) as local:
        for count in range(1, args.nodes + 1):
            names = [f"node_{i}" for i in range(count)]
            for mode in ("streams", "frames"):
                rows.append(run_cluster(local.address, names, mode, "raw", args))
                print(format_table(rows[-1:], COLUMNS).splitlines()[-1], flush=True)
        names = [f"node_{i}" for i in range(args.nodes)]
        rows.append(run_cluster(local.address, names, "frames", "jpeg", args))
    rows.append(run_multiprocessing(args.nodes, args))
    summary = (f"sim {args.latency * 1e3:g} ms x {args.workers} workers per node, "
               f"{args.width}x{args.height} frames\n" + format_table(rows, COLUMNS))
    settings = {key: getattr(args, key) for key in ("nodes", "latency", "workers", "seconds", "calibrate",
                                                     "width", "height")}
    return publish("cluster", {"settings": settings, "rows": rows}, summary, args.json)
