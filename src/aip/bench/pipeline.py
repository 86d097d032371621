"""``python -m aip.bench pipeline``: the seed's scenario under each scheduler.

Three ``sim`` workers at 0.02 / 0.05 / 0.1 s per frame (the seed paper's
Neural Engine, GPU and CPU: an ideal 80 FPS together), unpaced, run under
``static`` (calibrated weighted cycle), ``adaptive`` and ``pull``; then a
drift scenario where the fastest worker becomes 3x slower half-way through
the run. The sim backend sleeps: these figures are about scheduling, never
about inference speed.

``budget``: latency budgets on heterogeneous workers, a 5 ms ``sim`` worker
and a 100 ms one, fed 1.5x what the fast one can do (``drop-oldest``), with
a budget of 50 ms capture -> result, side by side with the same workers
without a budget under ``static`` (calibrated weights) and ``pull``, and the
fast worker alone. Targets: delivered p99 <= the budget, and delivered FPS
>= 95 % of the fast worker alone's (what the workers that can meet the
budget deliver). ``--budget-real``: the same rows on an ``onnx`` + ``cpu``
(torch) pair at a budget that the onnx worker alone can meet.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from aip.backends import BackendSpec
from aip.bench.report import format_table, publish, suite_parser
from aip.pipeline import Pipeline
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


BUDGET_MS = 50.0
BUDGET_FAST_S, BUDGET_SLOW_S = 0.005, 0.1
BUDGET_LOAD = 1.5  # offered, against what the fast worker alone can do
BUDGET_COLUMNS = ["scenario", "setup", "offered_fps", "delivered_fps", "of_fast_alone_pct",
                  "late_pct", "dropped_pct", "p50_ms", "p99_ms", "slow_share_pct", "manager_cpu_pct"]


def budget_row(scenario: str, setup: str, specs: list[BackendSpec], *, mode: str,
               budget_ms: float | None, fps: float, seconds: float,
               frame_shape: tuple[int, int, int] = (48, 64, 3),
               cache: Path | None = None) -> dict[str, Any]:
    """One stream at ``fps`` for ``seconds`` (``drop-oldest``) on ``specs``,
    calibrated from ``cache`` (weights, and the service times budgets start
    from); its row."""
    frame = np.random.default_rng(0).integers(0, 256, frame_shape, dtype=np.uint8)
    count = int(fps * seconds)
    with Pipeline(specs, mode=mode, latency_budget_ms=budget_ms) as pipeline:
        if cache is not None:
            pipeline.calibrate(frame, seconds=1.0, cache_path=cache, subset=False)
        pipeline.add_stream((frame for _ in range(count)), name="s", fps=fps, policy="drop-oldest")
        out = list(pipeline.run())
        metrics = pipeline.metrics
    results = [r for r in out if isinstance(r, FrameResult)]
    late = sum(1 for r in out if not isinstance(r, FrameResult) and r.reason == "late")
    dropped = len(out) - len(results) - late
    span_s = (results[-1].t_done_ns - results[0].t_done_ns) / 1e9 if len(results) > 1 else 0.0
    latencies = np.array([r.end_to_end_ms for r in results]) if results else np.array([np.nan])
    slow = sum(1 for r in results if r.worker == len(specs) - 1) if len(specs) > 1 else 0
    return {
        "scenario": scenario, "setup": setup, "offered_fps": fps,
        "delivered_fps": (len(results) - 1) / span_s if span_s else 0.0,
        "late_pct": 100 * late / len(out), "dropped_pct": 100 * dropped / len(out),
        "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
        "slow_share_pct": 100 * slow / max(len(results), 1),
        "manager_cpu_pct": metrics.manager_cpu_pct, "budget_ms": budget_ms, "frames": len(out),
        "weights": list(pipeline.weights) if mode != "pull" else None,
    }


def run_budget(scenario: str, fast: BackendSpec, slow: BackendSpec, budget_ms: float, fps: float,
               seconds: float, calibration_s: float, frame_shape: tuple[int, int, int]) -> list[dict[str, Any]]:
    """The fast worker alone; both without a budget (static, pull); both with
    it. Every row of both is calibrated, once measured and then from the cache."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cal.json"
        frame = np.random.default_rng(0).integers(0, 256, frame_shape, dtype=np.uint8)
        with Pipeline([fast, slow]) as pipeline:
            pipeline.calibrate(frame, seconds=calibration_s, cache_path=cache, subset=False)
        for setup, specs, mode, budget in (
                ("fast alone", [fast], "pull", None),
                ("both, static", [fast, slow], "static", None),
                ("both, pull", [fast, slow], "pull", None),
                (f"both, static, budget {budget_ms:g} ms", [fast, slow], "static", budget_ms),
                (f"both, pull, budget {budget_ms:g} ms", [fast, slow], "pull", budget_ms)):
            row = budget_row(scenario, setup, specs, mode=mode, budget_ms=budget, fps=fps,
                             seconds=seconds, frame_shape=frame_shape,
                             cache=cache if len(specs) > 1 else None)
            rows.append(row)
        print(format_table([row], BUDGET_COLUMNS).splitlines()[-1], flush=True)
    alone = rows[0]["delivered_fps"]
    for row in rows:
        row["of_fast_alone_pct"] = 100 * row["delivered_fps"] / alone if alone else None
    return rows


def budget_targets(rows: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    checks = []
    for row in rows:
        if row.get("budget_ms") is None:
            continue
        name = f"{row['scenario']} {row['setup']}"
        checks.append((f"{name}: p99 <= {row['budget_ms']:g} ms", f"{row['p99_ms']:.1f} ms",
                       row["p99_ms"] <= row["budget_ms"]))
        checks.append((f"{name}: delivered >= 95 % of the fast worker alone",
                       f"{row['of_fast_alone_pct']:.1f} %", (row["of_fast_alone_pct"] or 0) >= 95))
    return checks


def run_budget_real(seconds: float, calibration_s: float) -> list[dict[str, Any]]:
    """``onnx`` (one thread) + ``cpu`` (torch, one thread) on 640x480 frames."""
    import warnings

    from aip.vision.models import RandomWeightsWarning, export, resolve_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        source = resolve_model(None)
        onnx = export(source, "onnx", (480, 640))
    fast = BackendSpec("onnx", {"model": str(onnx), "threads": 1, "spin": False})
    slow = BackendSpec("cpu", {"model": str(source.path), "threads": 1, "imgsz": (480, 640)})
    # What the onnx worker alone does sets the rate and the budget: measured here.
    probe = budget_row("real", "probe", [fast], mode="pull", budget_ms=None,
                       fps=1000.0, seconds=4.0, frame_shape=(480, 640, 3))
    fps = BUDGET_LOAD * probe["delivered_fps"]
    budget_ms = round(2.5 * probe["p50_ms"])
    print(f"real: onnx alone {probe['delivered_fps']:.1f} FPS, p50 {probe['p50_ms']:.0f} ms: "
          f"offering {fps:.1f} FPS, budget {budget_ms} ms", flush=True)
    return run_budget("real", fast, slow, budget_ms, fps, seconds, calibration_s, (480, 640, 3))


def run(count: int = 800, drift_count: int = 1600, calibration_s: float = 2.0,
        budget_s: float = 6.0, budget_real: bool = False) -> dict[str, Any]:
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
    budget_rows = run_budget("sim", BackendSpec("sim", {"latency_s": BUDGET_FAST_S}, label="fast"),
                             BackendSpec("sim", {"latency_s": BUDGET_SLOW_S}, label="slow"),
                             BUDGET_MS, BUDGET_LOAD / BUDGET_FAST_S, budget_s, calibration_s,
                             (48, 64, 3))
    if budget_real:
        budget_rows += run_budget_real(budget_s, calibration_s)
    return {
        "results": results,
        "budget": budget_rows,
        "calibration": calibration.to_dict(),
        "wall_s": time.perf_counter() - started,
    }


def summarize(document: dict[str, Any]) -> str:
    rows = document["results"]
    out = ["Pipeline, sim backends 0.02 / 0.05 / 0.1 s (ideal 80 FPS); drift: ane 3x slower "
           "half-way (fps and latency after the change, against the new ideal)",
           format_table(rows, COLUMNS)]
    budget = document.get("budget")
    if budget:
        out += ["", "Latency budgets: one stream, drop-oldest, offered 1.5x the fast worker alone; "
                "latency capture -> result", format_table(budget, BUDGET_COLUMNS)]
        out += [f"{target}: {figure}: {'met' if ok else 'NOT met'}"
                for target, figure, ok in budget_targets(budget)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = suite_parser("pipeline", __doc__)
    parser.add_argument("--frames", type=int, default=800, help="frames in the seed scenario")
    parser.add_argument("--drift-frames", type=int, default=1600, help="frames in the drift scenario")
    parser.add_argument("--budget-seconds", type=float, default=6.0,
                        help="seconds of each latency-budget row")
    parser.add_argument("--budget-real", action="store_true",
                        help="also the latency-budget rows on an onnx + cpu (torch) pair")
    args = parser.parse_args(argv)
    document = run(args.frames, args.drift_frames, budget_s=args.budget_seconds,
                   budget_real=args.budget_real)
    return publish("pipeline", document, summarize(document), args.json)
