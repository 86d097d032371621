"""``python -m aip.bench pipeline``: the seed's scenario under each scheduler.

Three ``sim`` workers at 0.02 / 0.05 / 0.1 s per frame (the seed paper's
Neural Engine, GPU and CPU: an ideal 80 FPS together), unpaced, run under
``static`` (calibrated weighted cycle), ``adaptive`` and ``pull``; then a
drift scenario where the fastest worker becomes 3x slower half-way through
the run. The sim backend sleeps: these figures are about scheduling, never
about inference speed.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from aip.backends import BackendSpec
from aip.bench.report import format_table, publish, suite_parser
from aip.manager import Pipeline
from aip.results import FrameResult

SEED_LATENCIES = {"ane": 0.02, "gpu": 0.05, "cpu": 0.1}
MODES = ("static", "adaptive", "pull")
COLUMNS = ["scenario", "mode", "frames", "ordered", "dropped", "fps", "ideal_fps", "efficiency",
           "p50_ms", "p99_ms", "manager_cpu_pct"]


def seed_specs(slowdown_after: int | None = None) -> list[BackendSpec]:
    specs = []
    for label, latency in SEED_LATENCIES.items():
        options: dict[str, Any] = {"latency_s": latency}
        if label == "ane" and slowdown_after is not None:
            options.update(slowdown_after=slowdown_after, slowdown_factor=3.0)
        specs.append(BackendSpec("sim", options, label=label))
    return specs


def frames(count: int) -> Any:
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    return (frame for _ in range(count))


def run_scenario(scenario: str, mode: str, weights: list[int], ideal_fps: float,
                 count: int) -> dict[str, Any]:
    slowdown_after = None
    if scenario == "drift":
        # half-way through the run: the ane worker has done its share of half the frames
        slowdown_after = int(count / 2 * weights[0] / sum(weights))
    with Pipeline(seed_specs(slowdown_after), mode=mode, weights=weights) as pipeline:
        results = [r for r in pipeline.run(frames(count)) if isinstance(r, FrameResult)]
        metrics = pipeline.metrics
    end_to_end = np.array([r.end_to_end_ms for r in results])
    fps = metrics.fps
    if scenario == "drift":
        # throughput after the change, against the new ideal
        after = [r for r in results if r.frame_id >= results[0].frame_id + count // 2]
        span_s = (after[-1].t_done_ns - after[0].t_done_ns) / 1e9
        fps = (len(after) - 1) / span_s
        end_to_end = np.array([r.end_to_end_ms for r in after])
    return {
        "scenario": scenario, "mode": mode, "frames": count, "ordered": metrics.frames_ordered,
        "dropped": metrics.frames_dropped, "fps": fps, "ideal_fps": ideal_fps,
        "efficiency": fps / ideal_fps, "p50_ms": float(np.percentile(end_to_end, 50)),
        "p99_ms": float(np.percentile(end_to_end, 99)),
        "manager_cpu_pct": metrics.manager_cpu_pct,
    }


def run(count: int = 800, drift_count: int = 1600, calibration_s: float = 2.0) -> dict[str, Any]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, Pipeline(seed_specs()) as pipeline:
        calibration = pipeline.calibrate(seconds=calibration_s, cache_path=Path(tmp) / "cal.json")
        weights = list(pipeline.weights)
    print(f"calibrated weights {dict(zip(SEED_LATENCIES, weights))}, ideal "
          f"{calibration.ideal_fps:.1f} FPS, rounding error {calibration.rounding_error:.4f}",
          flush=True)
    rates = {label: 1 / latency for label, latency in SEED_LATENCIES.items()}
    drifted_ideal = sum(rates.values()) - rates["ane"] + rates["ane"] / 3
    results = []
    for scenario, n, ideal in (("seed", count, calibration.ideal_fps),
                               ("drift", drift_count, drifted_ideal)):
        for mode in MODES:
            row = run_scenario(scenario, mode, weights, ideal, n)
            results.append(row)
            print(format_table([row], COLUMNS).splitlines()[-1], flush=True)
    return {
        "results": results,
        "calibration": calibration.to_dict(),
        "wall_s": time.perf_counter() - started,
    }


def summarize(document: dict[str, Any]) -> str:
    rows = document["results"]
    out = ["Pipeline, sim backends 0.02 / 0.05 / 0.1 s (ideal 80 FPS); drift: ane 3x slower "
           "half-way (fps and latency after the change, against the new ideal)",
           format_table(rows, COLUMNS)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = suite_parser("pipeline", __doc__)
    parser.add_argument("--frames", type=int, default=800, help="frames in the seed scenario")
    parser.add_argument("--drift-frames", type=int, default=1600, help="frames in the drift scenario")
    args = parser.parse_args(argv)
    document = run(args.frames, args.drift_frames)
    return publish("pipeline", document, summarize(document), args.json)
