"""What watching costs: delivered FPS with 0 viewers of the page against N viewers.

    python benchmarks/web_viewers.py [--streams 4] [--viewers 4] [--workers N]
                                     [--rounds 3] [--phase-seconds 10] [--warmup 5]
                                     [--backend onnx|sim] [--json PATH]

One pipeline, one run (``keep_frames=True``, its results into a LiveView, as
``aip run --serve`` does), served by a WebServer on loopback. ``--streams``
streams of the sample video's frames (640x480), each read as fast as the
workers take them (policy ``block``): the workers are saturated, so any CPU
a viewer takes from them shows as fewer frames delivered. The worst case on
a small machine: the viewers, the page's server and the workers share its
cores.

The run alternates phases of ``--phase-seconds``, after ``--warmup``
seconds: no viewer, then ``--viewers`` viewers and none again, ``--rounds``
times (ABABA...: drift and other load hit both alike). A viewer is a thread of a process
of its own that does what the page does: every stream's snapshot.jpg at
the page's 5 FPS (with If-None-Match), /api/status and /api/streams once a
second, /api/events every 2 s, over one keep-alive connection.

Figures per phase: ``delivered_fps`` (results whose t_done falls in the
phase, its first second left out); ``manager_cpu_pct`` (this process: the
run loop, the stream readers, the web server; % of one core);
``tiles_per_s`` (JPEGs the LiveView made); ``requests_per_s`` and
``viewer_cpu_pct`` (the viewers' process). The summary: the mean delivered
FPS of each phase with viewers over the mean of the two phases without
around it (``ratio``), and the median of those (target >= 0.95).

The default backend is ``onnx`` with ultralytics' yolo11n.yaml, seeded
random weights (no weights are downloaded), exported at 480x640, one
thread per worker, one worker per core: what the other benchmarks use.
``--backend sim`` runs without a model (a quick check of the script).
"""
from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from aip.bench.report import format_table, publish

COLUMNS = ["phase", "viewers", "delivered_fps", "ratio", "manager_cpu_pct", "tiles_per_s",
           "requests_per_s", "viewer_cpu_pct"]
TARGET_RATIO = 0.95
TILE_FPS = 5.0  # what the page asks (static/app.js); the server caps at LiveView's TILE_FPS
POLL_S, EVENTS_S = 1.0, 2.0
SETTLE_S = 1.0  # each phase's first second is left out: viewers connecting, or going
CONF = 1e-4  # as bench yolo: a seeded model's boxes score near 1.6e-4; keep them, so tiles have boxes


# ---- the viewers: a process of their own --------------------------------------------------

def _viewer(host: str, port: int, streams: list[str], seconds: float, counts: dict[str, int],
            lock: threading.Lock) -> None:
    """One page's worth of requests for ``seconds``."""
    connection = http.client.HTTPConnection(host, port, timeout=30)
    etags: dict[str, str] = {}
    end = time.monotonic() + seconds
    next_poll = next_events = next_tiles = time.monotonic()
    while time.monotonic() < end:
        now = time.monotonic()
        paths: list[tuple[str, str | None]] = []
        if now >= next_tiles:
            paths += [(f"/api/streams/{quote(name, safe='')}/snapshot.jpg", name) for name in streams]
            next_tiles += 1.0 / TILE_FPS
        if now >= next_poll:
            paths += [("/api/status", None), ("/api/streams", None)]
            next_poll += POLL_S
        if now >= next_events:
            paths.append(("/api/events?limit=50", None))
            next_events += EVENTS_S
        for path, stream in paths:
            headers = {"If-None-Match": etags[stream]} if stream in etags else {}
            connection.request("GET", path, headers=headers)
            answer = connection.getresponse()
            body = answer.read()
            if stream is not None and answer.status == 200:
                etags[stream] = answer.headers.get("ETag", "")
            with lock:
                counts["requests"] += 1
                counts["bytes"] += len(body)
                counts[f"status_{answer.status}"] = counts.get(f"status_{answer.status}", 0) + 1
        time.sleep(max(0.0, min(next_tiles, next_poll, next_events) - time.monotonic()))
    connection.close()


def viewers_main(host: str, port: int, streams: list[str], viewers: int, seconds: float) -> None:
    """The viewers' process: ``viewers`` threads; prints its counts as JSON."""
    counts = {"requests": 0, "bytes": 0}
    lock = threading.Lock()
    cpu = time.process_time()
    threads = [threading.Thread(target=_viewer, args=(host, port, streams, seconds, counts, lock))
               for _ in range(viewers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts["cpu_s"] = time.process_time() - cpu  # type: ignore[assignment]
    print(json.dumps(counts), flush=True)


# ---- the run ------------------------------------------------------------------------------

def _specs(args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    from aip.backends import BackendSpec

    workers = args.workers or os.cpu_count() or 1
    if args.backend == "sim":
        return [BackendSpec("sim", {"latency_s": args.sim_ms / 1e3}) for _ in range(workers)], {
            "backend": f"{workers} x sim {args.sim_ms} ms"}
    from aip.bench.streams import IMGSZ, onnx_specs
    from aip.vision.models import RandomWeightsWarning, export, resolve_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # said in the document instead
        source = resolve_model("yolo11n.yaml")
        onnx = export(source, "onnx", IMGSZ)
    return onnx_specs(onnx, workers), {"backend": f"{workers} x onnx, 1 thread", "model": source.name,
                                       "random_weights": source.random_weights,
                                       "input": f"{IMGSZ[0]}x{IMGSZ[1]} ONNX"}


def _endless(frames: list[Any]) -> Iterator[Any]:
    return itertools.cycle(frames)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from aip.app.web import LiveView, WebServer
    from aip.io.samples import video_frames
    from aip.pipeline import Pipeline
    from aip.results import FrameResult

    specs, setup = _specs(args)
    frames = video_frames()
    live = LiveView()
    done_ns: list[int] = []
    boxes: list[int] = []
    phases: list[dict[str, Any]] = []
    with WebServer("127.0.0.1", 0, None, live) as server, \
            Pipeline(specs, mode="pull", keep_frames=True, conf=CONF) as pipeline:
        server.watch(pipeline)
        names = [pipeline.add_stream(_endless(frames), name=f"cam{i}") for i in range(args.streams)]

        def control() -> None:
            try:
                time.sleep(args.warmup)
                for viewers in [0] + [args.viewers, 0] * args.rounds:
                    phases.append(_phase(server, names, viewers, args.phase_seconds, live))
            finally:
                for name in names:
                    pipeline.remove_stream(name)
                pipeline.stop()

        controller = threading.Thread(target=control, name="phases")
        controller.start()
        for result in pipeline.run(until_stopped=True):
            live.write(result)
            if isinstance(result, FrameResult):
                done_ns.append(time.perf_counter_ns())
                if len(boxes) < 1000:
                    boxes.append(len(result.detections))
        controller.join()
        calibrated = pipeline.metrics.ideal_fps
    rows = []
    for phase in phases:
        start, end = phase["start_ns"] + int(SETTLE_S * 1e9), phase["end_ns"]
        inside = sum(start <= t <= end for t in done_ns)
        seconds = (phase["end_ns"] - phase["start_ns"]) / 1e9
        rows.append({"phase": len(rows), "viewers": phase["viewers"],
                     "delivered_fps": inside / ((end - start) / 1e9),
                     "manager_cpu_pct": 100 * phase["cpu_s"] / seconds,
                     "tiles_per_s": phase["tiles"] / seconds,
                     "requests_per_s": phase["viewer"].get("requests", 0) / seconds if phase["viewer"] else None,
                     "viewer_cpu_pct": (100 * phase["viewer"]["cpu_s"] / seconds) if phase["viewer"] else None,
                     "viewer": phase["viewer"]})
    without = [row["delivered_fps"] for row in rows if row["viewers"] == 0]
    with_viewers = [row["delivered_fps"] for row in rows if row["viewers"]]
    # Each phase with viewers against the two without around it: drift cancels.
    for before, row, after in zip(rows, rows[1:], rows[2:]):
        if row["viewers"]:
            around = (before["delivered_fps"] + after["delivered_fps"]) / 2
            row["ratio"] = row["delivered_fps"] / around if around else None
    ratios = [row["ratio"] for row in rows if row.get("ratio") is not None]
    ratio = statistics.median(ratios) if ratios else None
    return {"setup": {**setup, "streams": args.streams, "viewers": args.viewers, "rounds": args.rounds,
                      "phase_seconds": args.phase_seconds, "frame": "640x480 (the sample video)",
                      "cpus": os.cpu_count(), "boxes_per_frame": statistics.mean(boxes) if boxes else 0,
                      "calibrated_fps": calibrated},
            "rows": rows, "fps_without": statistics.mean(without) if without else None,
            "fps_with": statistics.mean(with_viewers) if with_viewers else None, "ratio": ratio,
            "ratios": ratios, "target_ratio": TARGET_RATIO}


def _phase(server: Any, names: list[str], viewers: int, seconds: float, live: Any) -> dict[str, Any]:
    """One phase: ``viewers`` viewers (a process) for ``seconds``; what it cost."""
    child = None
    if viewers:
        child = subprocess.Popen([sys.executable, __file__, "--viewer-child", f"{server.host}:{server.port}",
                                  ",".join(names), str(viewers), str(seconds)],
                                 stdout=subprocess.PIPE, text=True)
    cpu, tiles, start = time.process_time(), live.encoded, time.perf_counter_ns()
    time.sleep(seconds)
    phase = {"viewers": viewers, "start_ns": start, "end_ns": time.perf_counter_ns(),
             "cpu_s": time.process_time() - cpu, "tiles": live.encoded - tiles, "viewer": None}
    if child is not None:
        out, _ = child.communicate(timeout=60)
        phase["viewer"] = json.loads(out.strip().splitlines()[-1])
    return phase


def summarize(document: dict[str, Any]) -> str:
    setup = document["setup"]
    lines = [f"web viewers: {setup['streams']} streams of {setup['frame']}, {setup['backend']}, "
             f"{setup['cpus']} CPUs, {setup['boxes_per_frame']:.0f} boxes a frame",
             format_table(document["rows"], COLUMNS)]
    ratio = document["ratio"]
    if ratio is not None:
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        lines.append(f"delivered FPS with {setup['viewers']} viewers / without (the phases around each): "
                     f"median {ratio:.3f} of {len(document['ratios'])} (target >= {TARGET_RATIO}: {verdict}); "
                     f"means {document['fps_with']:.1f} / {document['fps_without']:.1f} FPS")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--viewer-child"]:
        host, _, port = argv[1].rpartition(":")
        viewers_main(host, int(port), argv[2].split(","), int(argv[3]), float(argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--viewers", type=int, default=4)
    parser.add_argument("--workers", type=int, default=0, help="default: one per core")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--phase-seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--backend", choices=("onnx", "sim"), default="onnx")
    parser.add_argument("--sim-ms", type=float, default=5.0, help="--backend sim: ms per frame")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    document = run(args)
    return publish("web-viewers", document, summarize(document), args.json)


if __name__ == "__main__":
    sys.exit(main())
