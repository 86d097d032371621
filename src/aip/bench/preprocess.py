"""Numba letterbox against ultralytics' per-frame preprocessing, microseconds per frame.

    python -m aip.bench preprocess [--frames N] [--rounds R] [--json PATH]

Both paths turn the same 640x480 BGR uint8 frames (a pool of distinct random
frames, cycled, so neither reads a frame still hot in L1/L2) into a
(1, 3, H, W) torch tensor, RGB, in [0, 1]:

- ultralytics: ``LetterBox(auto=False)`` (cv2.resize + copyMakeBorder), then
  ``BasePredictor.preprocess``'s tensor ops (from_numpy, permute, contiguous,
  flip, float, div_), with torch's default threads (one per core; OpenCV
  runs on one, as ultralytics sets it on import);
- aip: ``Preprocessor.__call__`` into its preallocated buffer (one thread),
  then ``torch.from_numpy`` (zero copy).

The two run in alternating blocks so that machine noise hits both alike.
Needs ultralytics and torch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

FRAME_HW = (480, 640)
POOL_SIZE = 16  # 16 x 0.9 MB frames: more than the L2 caches, as a video would be


def ultralytics_path(dst_hw: tuple[int, int], half: bool) -> Callable[[np.ndarray], Any]:
    import torch
    from ultralytics.data.augment import LetterBox

    def preprocess(frame: np.ndarray) -> Any:
        image = LetterBox(dst_hw, auto=False, stride=32)(image=frame)
        tensor = torch.from_numpy(image).unsqueeze(0).permute(0, 3, 1, 2).contiguous().flip(1)
        return (tensor.half() if half else tensor.float()).div_(255)

    return preprocess


def aip_path(dst_hw: tuple[int, int], half: bool) -> Callable[[np.ndarray], Any]:
    import torch

    from aip.vision.preprocess import Preprocessor

    pre = Preprocessor((*FRAME_HW, 3), dst_hw, dtype=np.float16 if half else np.float32)

    def preprocess(frame: np.ndarray) -> Any:
        return torch.from_numpy(pre(frame))

    return preprocess


def time_block(run: Callable[[np.ndarray], Any], frames: list[np.ndarray], count: int, into: list[int]) -> None:
    for index in range(count):
        frame = frames[index % len(frames)]
        start = time.perf_counter_ns()
        run(frame)
        into.append(time.perf_counter_ns() - start)


def summarize(system: str, config: dict[str, Any], latencies_ns: list[int]) -> dict[str, Any]:
    latencies = np.asarray(latencies_ns, dtype=np.float64)
    p50, p99 = np.percentile(latencies, [50, 99])
    return {
        "system": system,
        "config": config,
        "fps": 1e9 / latencies.mean(),
        "p50_ms": p50 / 1e6,
        "p99_ms": p99 / 1e6,
        "mean_us": latencies.mean() / 1e3,
        "p50_us": p50 / 1e3,
    }


def compare(dst_hw: tuple[int, int], half: bool, frames: list[np.ndarray], per_round: int,
            rounds: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Both systems on one input size and dtype: their rows, and aip's speedup over ultralytics."""
    config = {
        "frame": f"{FRAME_HW[1]}x{FRAME_HW[0]}",
        "input_hw": list(dst_hw),
        "dtype": "float16" if half else "float32",
    }
    systems = {"ultralytics": ultralytics_path(dst_hw, half), "aip": aip_path(dst_hw, half)}
    np.testing.assert_allclose(  # same output before timing anything
        systems["aip"](frames[0]).float().numpy(),
        systems["ultralytics"](frames[0]).float().numpy(),
        atol=2 / 255,
    )
    latencies: dict[str, list[int]] = {name: [] for name in systems}
    for run in systems.values():  # warm up: Numba's cache load, allocator, thread pools
        time_block(run, frames, 50, [])
    for _ in range(rounds):
        for name, run in systems.items():
            time_block(run, frames, per_round, latencies[name])
    rows = {name: summarize(name, config, latencies[name]) for name in systems}
    speedup = {
        "config": config,
        "mean": rows["ultralytics"]["mean_us"] / rows["aip"]["mean_us"],
        "p50": rows["ultralytics"]["p50_us"] / rows["aip"]["p50_us"],
    }
    return list(rows.values()), speedup


def print_table(results: list[dict[str, Any]], speedups: list[dict[str, Any]]) -> None:
    print(f"{'frame':>7} {'input':>8} {'dtype':>8} {'system':>12} {'mean us':>9} {'p50 us':>9} {'p99 us':>9}")
    for row in results:
        cfg = row["config"]
        input_shape = "x".join(map(str, cfg["input_hw"]))
        print(
            f"{cfg['frame']:>7} {input_shape:>8} {cfg['dtype']:>8} {row['system']:>12} "
            f"{row['mean_us']:9.0f} {row['p50_us']:9.0f} {row['p99_ms'] * 1e3:9.0f}"
        )
    for speedup in speedups:
        cfg = speedup["config"]
        shape = "x".join(map(str, cfg["input_hw"]))
        print(f"speedup {shape} {cfg['dtype']}: mean {speedup['mean']:.2f}x, p50 {speedup['p50']:.2f}x")


def machine() -> dict[str, Any]:
    """What the figures were measured on, with the versions and threads of both paths."""
    import cv2
    import torch
    import ultralytics

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "ultralytics": ultralytics.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aip.bench preprocess", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=400, help="frames per system per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--json", type=Path, help="write results here")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (*FRAME_HW, 3), dtype=np.uint8) for _ in range(POOL_SIZE)]
    results: list[dict[str, Any]] = []
    speedups: list[dict[str, Any]] = []
    for dst_hw in ((640, 640), (480, 640)):
        for half in (False, True):
            rows, speedup = compare(dst_hw, half, frames, args.frames, args.rounds)
            results += rows
            speedups.append(speedup)
    print_table(results, speedups)
    if args.json:
        document = {"suite": "preprocess", "machine": machine(), "results": results, "speedup": speedups}
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
