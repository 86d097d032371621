"""``python -m aip.bench yolo --device cuda``: YOLO11 on one NVIDIA GPU, every row in one run.

On the sample video (640x480), the same model (seeded ``yolo11n.yaml``
unless ``--model`` names weights) and the same 480x640 input throughout:

- ``ultralytics``: ``YOLO(...).predict(source=video, stream=True)`` on the
  GPU, fp32 and fp16 (its rect letterbox of a 640x480 frame is 480x640);
- ``raw``: the network alone on a tensor already on the GPU (fp32, fp16,
  fp16 replayed as a CUDA graph): the ceiling of one process;
- ``stages``: one frame's path taken apart in one process (decode,
  preprocess, host-to-device copy pageable and pinned, kernels,
  device-to-host copy, postprocess), median milliseconds;
- ``aip``: 1, 2 and 4 ``cuda`` worker processes on the one GPU, plain and
  tuned (``half``, ``pinned``, ``stream``, ``channels_last``, ``graphs``,
  each alone and all together), and ``cuda`` beside ``onnx`` CPU workers,
  calibrated (the heterogeneous row, against the same ``cuda`` alone).

Each row: FPS, p50 / p99 latency, the GPU's utilisation sampled with NVML
(``nvidia-smi`` polling where NVML cannot be loaded), the manager's CPU, the
median of each stage of a frame's life in the pipeline (ingest wait, queue,
worker, release) and a bottleneck hint (decode, manager, H2D copy, kernels,
...) from what was measured. ``--time-budget`` skips the rows that would
start after it (listed as skipped); the JSON is rewritten after every row.

``--dry-run`` rehearses the same plan on a machine without a GPU: the
``cpu`` backend stands in for ``cuda`` (cuda-only options dropped, labels
kept), ultralytics runs on the CPU, few frames at a small input size. It
proves the code path and measures nothing.
"""
from __future__ import annotations

import datetime
import functools
import importlib
import os
import shutil
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aip.bench.report import format_table, latency_row, write_json

COLUMNS = ["system", "config", "fps", "p50_ms", "p99_ms", "gpu_util_pct", "cpu_pct", "bottleneck"]
STAGE_COLUMNS = ["precision", "decode_ms", "preprocess_ms", "h2d_pageable_ms", "h2d_pinned_ms",
                 "kernels_ms", "d2h_ms", "postprocess_ms"]
CONF = 1e-4  # a seeded model scores every box near 1.6e-4: keep them, as real weights would
IOU = 0.7
WARMUP_FRAMES = 10  # the first frames pay for cuDNN autotuning and lazy allocations
IMGSZ = (480, 640)  # the stride-32 input of a 640x480 frame: ultralytics' rect letterbox of it
DRY_IMGSZ = (256, 320)  # a dry run only proves the path: a small input keeps it short
DRY_FRAMES = 16
GPU_FRAMES = 400  # at a few hundred FPS: seconds per row, against the workers' start
GPU_SAMPLE_S = 0.05  # NVML refreshes its utilisation counter every 1/6 s or so; polling faster is free
STAGE_REPEATS = 50

# One tuning per option, then all together: what the benchmark compares.
TUNINGS: dict[str, dict[str, int]] = {
    "fp16": {"half": 1},
    "fp16+pinned+stream": {"half": 1, "pinned": 1, "stream": 1},
    "fp16+channels_last": {"half": 1, "channels_last": 1},
    "fp16+graphs": {"half": 1, "graphs": 1},
    "fp16+all": {"half": 1, "pinned": 1, "stream": 1, "channels_last": 1, "graphs": 1},
}
CUDA_ONLY_OPTIONS = ("half", "pinned", "stream", "channels_last", "graphs", "cudnn_benchmark")


class NoGpu(RuntimeError):
    """``--device cuda`` on a machine where torch sees no NVIDIA GPU."""


def gpu_missing() -> str | None:
    """None where torch sees a CUDA GPU, else why not (for the error message)."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        return f"no NVIDIA GPU is visible to torch {torch.__version__} ({build}) on this machine"
    return None


# --- the GPU's utilisation -----------------------------------------------------------


class GpuSampler:
    """Samples one GPU's utilisation and memory in a thread while a row runs.

    NVML (``pynvml``, from the ``nvidia-ml-py`` package that CUDA builds of
    torch bring) where it loads; else ``nvidia-smi`` polling; else nothing
    (``source`` says which). NVML's utilisation is the fraction of the last
    sample period in which any kernel ran: 100 % can still hide idle SMs, and
    a launch-bound process shows well under it.
    """

    def __init__(self, index: int = 0, interval_s: float = GPU_SAMPLE_S) -> None:
        self.index = index
        self.interval_s = interval_s
        self.util: list[float] = []
        self.memory_mb: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen[str] | None = None
        self._nvml: Any = None
        self._handle: Any = None
        self.source = self._open()

    def _open(self) -> str:
        try:
            nvml = importlib.import_module("pynvml")
            nvml.nvmlInit()
            self._handle = nvml.nvmlDeviceGetHandleByIndex(self.index)
            self._nvml = nvml
            return "nvml"
        except Exception:  # noqa: BLE001  # no library, no driver, no device: try the next way
            self._nvml = None
        if shutil.which("nvidia-smi"):
            return "nvidia-smi"
        return "none"

    def __enter__(self) -> GpuSampler:
        self.util.clear()
        self.memory_mb.clear()
        self._stop.clear()
        if self.source == "nvml":
            self._thread = threading.Thread(target=self._poll_nvml, name="gpu-sampler", daemon=True)
            self._thread.start()
        elif self.source == "nvidia-smi":
            self._process = subprocess.Popen(
                ["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu,memory.used",
                 "--format=csv,noheader,nounits", f"--loop-ms={max(int(self.interval_s * 1000), 50)}"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._thread = threading.Thread(target=self._read_smi, name="gpu-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._process is not None:
            if self._process.stdout is not None:
                self._process.stdout.close()
            self._process = None

    def _poll_nvml(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.util.append(float(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))
                self.memory_mb.append(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20)
            except Exception:  # noqa: BLE001  # a sample lost is not worth a failed row
                pass

    def _read_smi(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            parsed = parse_smi_line(line)
            if parsed is not None:
                self.util.append(parsed[0])
                self.memory_mb.append(parsed[1])

    def summary(self) -> dict[str, Any]:
        """Mean and max utilisation (%), peak memory (MiB), how many samples, and how taken."""
        if not self.util:
            return {"gpu_util_pct": None, "gpu_util_max_pct": None, "gpu_memory_mb": None,
                    "gpu_samples": 0, "gpu_sampler": self.source}
        return {"gpu_util_pct": float(np.mean(self.util)), "gpu_util_max_pct": float(np.max(self.util)),
                "gpu_memory_mb": float(np.max(self.memory_mb)), "gpu_samples": len(self.util),
                "gpu_sampler": self.source}

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass
            self._nvml = None


def parse_smi_line(line: str) -> tuple[float, float] | None:
    """``"87, 1234"`` (utilisation %, memory MiB) -> (87.0, 1234.0); None for anything else."""
    parts = [part.strip() for part in line.split(",")]
    if len(parts) != 2:
        return None
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        return None


def gpu_info(index: int = 0) -> dict[str, Any]:
    """The GPU's name, memory, driver and CUDA versions, and the date: what the figures ran on."""
    info: dict[str, Any] = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(index)
            info |= {"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1),
                     "multiprocessors": props.multi_processor_count,
                     "capability": f"{props.major}.{props.minor}",
                     "cudnn": torch.backends.cudnn.version()}
    except ImportError:
        pass
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", f"--id={index}", "--query-gpu=name,driver_version",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            name, _, driver = out.stdout.strip().partition(",")
            info["driver"] = driver.strip() or None
            info.setdefault("name", name.strip() or None)
        except (OSError, subprocess.SubprocessError):
            pass
    return info


# --- where the time goes ---------------------------------------------------------------


def bottleneck_hint(row: dict[str, Any], stages: dict[str, Any] | None = None,
                    decode_fps: float | None = None) -> str:
    """A one-phrase guess at what limits an aip row, from what was measured.

    ``row`` needs ``fps`` and either ``capacity_fps`` (what the workers
    could do if never starved) or ``workers`` (processes) and ``worker_ms``
    (median time a worker holds a frame: preprocess + infer + postprocess);
    optionally ``manager_cpu_pct`` and ``gpu_util_pct``. ``stages`` is the
    in-process breakdown of one frame (:func:`stage_times`); ``decode_fps``
    how fast the video decodes alone. The order of the checks is the order
    of the pipeline: a saturated manager or decoder starves everything after.
    """
    fps = float(row["fps"])
    manager_cpu = row.get("manager_cpu_pct")
    if manager_cpu is not None and manager_cpu >= 85:
        return f"manager ({manager_cpu:.0f} % of a core)"
    if decode_fps and fps >= 0.85 * decode_fps:
        return f"decode ({decode_fps:.0f} FPS alone)"
    workers, worker_ms = int(row.get("workers", 1)), row.get("worker_ms")
    capacity = row.get("capacity_fps") or (workers * 1000.0 / float(worker_ms) if worker_ms else None)
    if not capacity:
        return "unknown"
    if fps < 0.8 * capacity:
        return f"input side: workers idle {100 * (1 - fps / capacity):.0f} % (decode or manager)"
    util = row.get("gpu_util_pct")
    if util is not None and util >= 90:
        return f"kernels (GPU busy {util:.0f} %)"
    if stages:
        parts = {"preprocess": stages.get("preprocess_ms"), "H2D copy": stages.get("h2d_ms"),
                 "kernels": stages.get("kernels_ms"), "D2H copy": stages.get("d2h_ms"),
                 "postprocess": stages.get("postprocess_ms")}
        known = {name: float(ms) for name, ms in parts.items() if ms is not None}
        if known:
            name = max(known, key=lambda key: known[key])
            share = known[name] / sum(known.values())
            busy = f", GPU busy {util:.0f} %" if util is not None else ""
            return f"workers: {name} ({100 * share:.0f} % of a frame{busy})"
    return "workers"


def ultralytics_hint(speeds: dict[str, float]) -> str:
    """The largest of ultralytics' own per-frame stages (``result.speed``, ms)."""
    if not speeds:
        return "unknown"
    name = max(speeds, key=lambda key: speeds[key])
    return f"{name} ({100 * speeds[name] / sum(speeds.values()):.0f} % of a frame)"


def _median_ms(samples: Sequence[float]) -> float:
    return float(np.median(samples)) if len(samples) else float("nan")


def _pipeline_stages(results: Sequence[Any]) -> dict[str, float]:
    """Median of each part of a frame's life in the pipeline, from its timestamps (ms)."""
    def median(values: Iterator[int]) -> float:
        return float(np.median(np.fromiter(values, float))) / 1e6

    return {
        "ingest_wait_ms": median(r.t_ingest_ns - r.t_capture_ns for r in results),
        "queue_ms": median(r.t_infer_start_ns - r.t_ingest_ns for r in results),
        "worker_ms": median(r.t_infer_end_ns - r.t_infer_start_ns for r in results),
        "release_ms": median(r.t_done_ns - r.t_infer_end_ns for r in results),
    }


@dataclass
class Plan:
    """What one run measures, on what: the cuda plan, or its rehearsal on the CPU."""

    dry_run: bool
    frames: int
    imgsz: tuple[int, int]
    seconds: float
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)

    @property
    def calibration_s(self) -> float:
        """Seconds per calibration phase (each backend alone, then all together)."""
        return 0.5 if self.dry_run else 2.0

    @property
    def device(self) -> str:
        return "cpu" if self.dry_run else "cuda"

    def cuda_spec(self, model: str, options: dict[str, Any]) -> Any:
        """A ``cuda`` worker's spec; in a dry run the ``cpu`` backend on one thread, cuda-only
        options dropped."""
        from aip.backends import BackendSpec

        base = {"model": model, "imgsz": self.imgsz}
        if self.dry_run:
            kept = {k: v for k, v in options.items() if k not in CUDA_ONLY_OPTIONS}
            return BackendSpec("cpu", {**base, **kept, "threads": 1}, label="cuda")
        return BackendSpec("cuda", {**base, **options})

    def onnx_workers(self) -> tuple[int, int]:
        """How many onnx CPU workers beside the GPU, and threads each: the cores left after the
        manager and the cuda workers' own CPU work (about one core each)."""
        if self.dry_run:
            return 1, 1
        spare = max(self.cores - 3, 1)
        threads = 4 if spare >= 8 else max(spare // 2, 1)
        return max(spare // threads, 1), threads


# --- the measurements --------------------------------------------------------------------


def stage_times(model: Any, video: Path, plan: Plan, half: bool) -> dict[str, Any]:
    """One frame's path taken apart, in this process: median ms of each stage.

    Kernel time is measured with CUDA events around the network alone on a
    tensor already on the device; the copies each synchronise. On the CPU
    (a dry run) the copies are free and the events are wall clocks.
    """
    import torch

    from aip.io.sources import VideoFileSource
    from aip.vision.models import load_torch_model
    from aip.vision.postprocess import postprocess
    from aip.vision.preprocess import Preprocessor

    device = plan.device
    cuda = device == "cuda"
    row: dict[str, Any] = {"precision": _precision(half, plan)}
    half = half and cuda  # fp16 convolutions on a CPU are slow emulation: a dry run keeps fp32
    with VideoFileSource(video) as source:
        frames, decode = _decode_timed(source)
    row["decode_ms"] = _median_ms(decode[1:])
    dtype = np.dtype(np.float16 if half else np.float32)
    pre = Preprocessor(frames[0].shape, plan.imgsz, dtype)
    network = load_torch_model(model, device)
    network = network.half() if half else network
    timer = _StageTimer(cuda)
    frame = frames[len(frames) // 2]
    row["preprocess_ms"], tensor = timer.median_ms(lambda: pre(frame))
    row["h2d_pageable_ms"], on_device = timer.median_ms(lambda: torch.from_numpy(tensor).to(device))
    row["h2d_pinned_ms"] = _pinned_copy_ms(tensor, on_device, timer) if cuda else None
    with torch.inference_mode():
        row["kernels_ms"], output = _kernels_ms(network, on_device, timer)
        head = output[0] if isinstance(output, (tuple, list)) else output
        row["d2h_ms"], raw = timer.median_ms(lambda: head.float().cpu().numpy())
    row["postprocess_ms"], _ = timer.median_ms(lambda: postprocess(raw, frame.shape[:2], pre.params, CONF, IOU))
    row["h2d_ms"] = row["h2d_pinned_ms"] if row["h2d_pinned_ms"] is not None else row["h2d_pageable_ms"]
    row["decode_fps"] = 1e3 / row["decode_ms"] if row["decode_ms"] > 0 else None
    return row


def _decode_timed(source: Any) -> tuple[list[np.ndarray], list[float]]:
    """Every frame of ``source``, and how long each took to decode (ms)."""
    decode: list[float] = []
    frames: list[np.ndarray] = []
    iterator = iter(source)
    while True:
        start = time.perf_counter()
        item = next(iterator, None)
        if item is None:
            break
        decode.append((time.perf_counter() - start) * 1e3)
        frames.append(item[0])
    return frames, decode


class _StageTimer:
    """Times one stage: a few warm-up calls, then the median of many, the GPU synchronised after each."""

    def __init__(self, cuda: bool) -> None:
        import torch

        self.cuda = cuda
        self._synchronize = torch.cuda.synchronize

    def sync(self) -> None:
        if self.cuda:
            self._synchronize()

    def median_ms(self, step: Callable[[], Any], repeats: int = STAGE_REPEATS) -> tuple[float, Any]:
        """The median ms of ``step`` over ``repeats`` calls, and what its last call returned."""
        out: Any = None
        for _ in range(3):
            out = step()
        self.sync()
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = step()
            self.sync()
            samples.append((time.perf_counter() - start) * 1e3)
        return _median_ms(samples), out


def _pinned_copy_ms(tensor: np.ndarray, on_device: Any, timer: _StageTimer) -> float:
    """A host-to-device copy through pinned memory (the ``pinned`` tuning), median ms."""
    import torch

    pinned = torch.empty(tensor.shape, dtype=on_device.dtype, pin_memory=True)
    target = torch.empty_like(on_device)

    def pinned_copy() -> Any:
        pinned.numpy()[...] = tensor
        return target.copy_(pinned, non_blocking=True)

    return timer.median_ms(pinned_copy)[0]


def _kernels_ms(network: Any, on_device: Any, timer: _StageTimer) -> tuple[float, Any]:
    """The network's time on a tensor already on the device (CUDA events on a GPU), median ms,
    and one more output of it."""
    if not timer.cuda:
        return timer.median_ms(lambda: network(on_device), repeats=5)
    import torch

    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(3):
        network(on_device)
    samples = []
    for _ in range(STAGE_REPEATS):
        begin.record()
        network(on_device)
        end.record()
        end.synchronize()
        samples.append(begin.elapsed_time(end))
    return _median_ms(samples), network(on_device)


def _precision(half: bool, plan: Plan) -> str:
    return ("fp16 (dry run: fp32)" if plan.dry_run else "fp16") if half else "fp32"


def raw_network(model: Any, plan: Plan, half: bool, graph: bool) -> dict[str, Any]:
    """The network alone on a tensor already on the device, one frame at a time, synchronised."""
    import torch

    from aip.vision.models import load_torch_model

    device = plan.device
    cuda = device == "cuda"
    label = f"torch network only, {_precision(half, plan)}{' + CUDA graph' if graph else ''}"
    half = half and cuda  # as in stage_times
    network = load_torch_model(model, device)
    network = network.half() if half else network
    x = torch.rand((1, 3, *plan.imgsz), device=device, dtype=torch.float16 if half else torch.float32)
    run: Callable[[], Any]
    with torch.no_grad():
        for _ in range(WARMUP_FRAMES):
            network(x)
        if graph and cuda:
            torch.cuda.synchronize()
            captured = torch.cuda.CUDAGraph()
            with torch.cuda.graph(captured):
                network(x)
            run = captured.replay
        else:
            def run() -> Any:
                return network(x)
        latencies: list[float] = []
        start = time.perf_counter()
        while time.perf_counter() - start < plan.seconds or len(latencies) < 3:
            t0 = time.perf_counter()
            run()
            if cuda:
                torch.cuda.synchronize()
            latencies.append((time.perf_counter() - t0) * 1e3)
        span = time.perf_counter() - start
    return latency_row("raw", label, len(latencies) / span, np.array(latencies))


def ultralytics_gpu(model: Any, video: Path, plan: Plan, half: bool, sampler: GpuSampler) -> dict[str, Any]:
    """``predict(stream=True)`` on the GPU (a dry run: on the CPU, fp32)."""
    from ultralytics import YOLO


    yolo = YOLO(str(model), task="detect")
    extra: dict[str, Any] = {"device": 0, "half": half} if plan.device == "cuda" else {"device": "cpu"}
    times: list[int] = []
    latencies: list[float] = []
    speeds: dict[str, list[float]] = {}
    cpu_start = time.process_time()
    with sampler:
        for result in yolo.predict(source=str(video), stream=True, imgsz=max(plan.imgsz), conf=CONF,
                                   iou=IOU, verbose=False, **extra):
            times.append(time.perf_counter_ns())
            latencies.append(sum(result.speed.values()))
            for name, ms in result.speed.items():
                speeds.setdefault(name, []).append(ms)
    cpu_s = time.process_time() - cpu_start
    warm = min(WARMUP_FRAMES, len(times) - 2)
    span = (times[-1] - times[warm]) / 1e9
    median_speeds = {name: _median_ms(values[warm:]) for name, values in speeds.items()}
    label = f".pt {_precision(half, plan)} imgsz {max(plan.imgsz)} (rect {plan.imgsz[0]}x{plan.imgsz[1]})"
    return latency_row("ultralytics", label, (len(times) - 1 - warm) / span, np.array(latencies[warm:]),
                        cpu_pct=100 * cpu_s / ((times[-1] - times[0]) / 1e9),
                        bottleneck=ultralytics_hint(median_speeds),
                        **{f"{name}_ms": ms for name, ms in median_speeds.items()}, **sampler.summary())


def aip_row(specs: list[Any], video: Path, mode: str, label: str, sampler: GpuSampler,
            stages: dict[str, Any] | None, decode_fps: float | None,
            calibration_s: float | None) -> dict[str, Any]:
    """One pipeline over the video: its row with GPU samples, stage medians and a hint;
    calibrated first (``calibration_s`` per phase) unless that is None."""
    from aip.pipeline import Pipeline
    from aip.results import FrameResult
    from aip.io.sources import VideoFileSource

    with VideoFileSource(video) as source, Pipeline(specs, mode=mode, conf=CONF, iou=IOU) as pipeline:
        frames = iter(source)
        first, _ = next(frames)
        calibration = (pipeline.calibrate(first, refresh=True, seconds=calibration_s)
                       if calibration_s is not None else None)
        if calibration is None:
            pipeline.start(first.shape)  # workers load before the clock starts
        with sampler:
            results = [r for r in pipeline.run(frames) if isinstance(r, FrameResult)]
        metrics = pipeline.metrics
        weights = dict(zip(pipeline.labels, pipeline.weights))
    warm = min(WARMUP_FRAMES, len(results) - 2)
    steady = results[warm:]
    span = (steady[-1].t_done_ns - steady[0].t_done_ns) / 1e9
    row = latency_row("aip", label, (len(steady) - 1) / span, np.array([r.end_to_end_ms for r in steady]),
                       workers=len(specs), frames=metrics.frames_ordered,
                       cpu_pct=metrics.manager_cpu_pct, manager_cpu_pct=metrics.manager_cpu_pct,
                       **_pipeline_stages(steady), **sampler.summary())
    row["frames_by_backend"] = {name: sum(1 for r in results if r.backend == name) for name in pipeline.labels}
    # What the workers could do if never starved: each one's frames per second
    # at its own median service time (the backends of a mixed row differ).
    row["capacity_fps"] = sum(
        1e9 / float(np.median([r.t_infer_end_ns - r.t_infer_start_ns for r in steady if r.worker == worker]))
        for worker in {r.worker for r in steady})
    if calibration is not None:
        row["calibrated_fps"] = calibration.ideal_fps
        row["efficiency"] = row["fps"] / calibration.ideal_fps
        row["weights"] = weights
        row["alone_fps"] = dict(calibration.alone_fps)
        row["together_fps"] = dict(calibration.together_fps)
    row["bottleneck"] = bottleneck_hint(row, stages, decode_fps)
    return row


# --- the plan ----------------------------------------------------------------------------


def check_gpu(dry_run: bool) -> None:
    """Raise NoGpu, with what to do, unless a GPU is visible or this is a rehearsal."""
    reason = gpu_missing()
    if reason is not None and not dry_run:
        raise NoGpu(f"bench yolo --device cuda: {reason}. Run it on a machine with an NVIDIA GPU "
                    "(benchmarks/gpu_check.sh), or add --dry-run to rehearse the plan on the CPU.")


def run(frames: int | None = None, model: str | None = None, seconds: float = 3.0, dry_run: bool = False,
        time_budget_s: float | None = None, json_path: str | None = None) -> dict[str, Any]:
    """Every row of the cuda plan (see the module); the document ``--json`` writes."""
    check_gpu(dry_run)
    from aip.io.samples import sample_video
    from aip.vision.models import RandomWeightsWarning, resolve_model

    started = time.monotonic()
    plan = Plan(dry_run=dry_run, frames=frames or (DRY_FRAMES if dry_run else GPU_FRAMES),
                imgsz=DRY_IMGSZ if dry_run else IMGSZ, seconds=0.5 if dry_run else seconds)
    warnings.simplefilter("ignore", RandomWeightsWarning)  # said once below instead
    source = resolve_model(model)
    video = sample_video(plan.frames)
    sampler = GpuSampler()
    document: dict[str, Any] = {
        "device": "cuda", "dry_run": dry_run, "gpu": gpu_info(), "model": source.name,
        "random_weights": source.random_weights, "imgsz": list(plan.imgsz),
        "video": {"frames": plan.frames, "size": "640x480"}, "gpu_sampler": sampler.source,
        "batching": "rows '1 cuda worker, ... batch N': one inference call for up to N frames",
        "results": [], "stages": [], "skipped": [],
    }
    if dry_run:
        print("dry run: the cpu backend stands in for cuda; nothing here is a GPU figure", flush=True)
    if source.random_weights:
        print("model: yolo11n.yaml with seeded random weights: detections are meaningless, "
              "throughput is real", flush=True)
    rows = _RowRunner(document, started, time_budget_s, json_path)
    stages = {half: rows.step(f"stages {'fp16' if half else 'fp32'}",
                              functools.partial(stage_times, source, video, plan, half), "stages")
              for half in (False, True)}
    decode_fps = next((s["decode_fps"] for s in stages.values() if s), None)
    for half in (False, True):
        rows.step(f"ultralytics {'fp16' if half else 'fp32'}",
                  functools.partial(ultralytics_gpu, source.path, video, plan, half, sampler))
    for half, graph in ((False, False), (True, False), (True, True)):
        rows.step(f"raw {'fp16' if half else 'fp32'}{' graph' if graph else ''}",
                  functools.partial(raw_network, source, plan, half, graph))
    _aip_rows(rows, plan, source, video, sampler, stages, decode_fps)
    sampler.close()
    document["elapsed_s"] = time.monotonic() - started
    rows.save()
    return document


class _RowRunner:
    """Measures the plan's rows one at a time into the document, within the time budget.

    A row that fails, or would start after the budget, is listed as skipped
    instead: one failed row must not lose the others. The JSON is rewritten
    after every row.
    """

    def __init__(self, document: dict[str, Any], started: float, time_budget_s: float | None,
                 json_path: str | None) -> None:
        self.document = document
        self.started = started
        self.time_budget_s = time_budget_s
        self.json_path = json_path

    def save(self) -> None:
        if self.json_path:
            write_json(self.json_path, "yolo", **self.document)

    def step(self, name: str, measure: Callable[[], dict[str, Any]], into: str = "results") -> dict[str, Any] | None:
        """``measure()`` as the row ``name``, appended to the document's ``into``; None if skipped."""
        budget = self.time_budget_s
        if budget is not None and time.monotonic() - self.started > budget:
            self._skip(name, f"time budget of {budget:.0f} s spent", f"skipped (time budget): {name}")
            return None
        try:
            row = measure()
        except Exception as error:  # noqa: BLE001  # one failed row must not lose the others
            why = f"{type(error).__name__}: {error}"
            self._skip(name, why, f"failed: {name}: {why}")
            return None
        self.document[into].append(row)
        columns = STAGE_COLUMNS if into == "stages" else COLUMNS
        print(format_table([row], columns).splitlines()[-1], flush=True)
        self.save()
        return row

    def _skip(self, name: str, why: str, message: str) -> None:
        self.document["skipped"].append({"row": name, "why": why})
        print(message, flush=True)
        self.save()


def _aip_rows(rows: _RowRunner, plan: Plan, source: Any, video: Path, sampler: GpuSampler,
              stages: dict[bool, dict[str, Any] | None], decode_fps: float | None) -> None:
    """The aip rows, most wanted first: a time budget cuts the tail."""
    from aip.vision.models import export

    model_path = str(source.path)

    def cuda_row(options: dict[str, Any], workers: int, name: str) -> None:
        specs = [plan.cuda_spec(model_path, options) for _ in range(workers)]
        label = f"{workers} cuda worker{'s' if workers > 1 else ''}, {name}"
        rows.step(label, functools.partial(aip_row, specs, video, "pull", label, sampler,
                                           stages[bool(options.get("half"))], decode_fps, None))

    def heterogeneous_row(options: dict[str, Any], name: str) -> None:
        count, threads = plan.onnx_workers()
        onnx_model = str(export(source, "onnx", plan.imgsz))
        specs = [plan.cuda_spec(model_path, options)] + [
            _onnx_spec(onnx_model, threads) for _ in range(count)]
        label = f"1 cuda worker, {name} + {count} onnx x {threads} threads, calibrated"
        rows.step(label, functools.partial(aip_row, specs, video, "static", label, sampler,
                                           stages[bool(options.get("half"))], decode_fps, plan.calibration_s))

    for workers in (1, 2, 4):
        cuda_row({}, workers, "fp32")
    # Micro-batching: batch 1 is the first row; a small model at batch 1 is
    # launch-bound, so this is where a GPU's throughput should be.
    for batch in (8, 16, 32):  # the target: batch 16 >= 3x batch 1
        cuda_row({"batch": batch, "max_wait_ms": 20}, 1, f"fp32 batch {batch}")
    cuda_row(TUNINGS["fp16+all"], 1, "fp16+all")
    heterogeneous_row({}, "fp32")
    heterogeneous_row(TUNINGS["fp16+all"], "fp16+all")
    cuda_row({**TUNINGS["fp16+all"], "graphs": 0, "batch": 32, "max_wait_ms": 20}, 1,
             "fp16+all batch 32")
    for name, options in TUNINGS.items():
        if name != "fp16+all":
            cuda_row(options, 1, name)
    for workers in (2, 4):
        cuda_row(TUNINGS["fp16+all"], workers, "fp16+all")


def _onnx_spec(path: str, threads: int) -> Any:
    from aip.backends import BackendSpec

    # ORT's idle threads spin by default, which steals the cuda workers' cores
    return BackendSpec("onnx", {"model": path, "threads": threads, "spin": False})


def summarize(document: dict[str, Any]) -> str:
    """The table, the stage breakdown, and the issue's two ratios where both rows exist."""
    rows = document["results"]
    gpu = document.get("gpu", {})
    title = ("DRY RUN on the CPU (cpu backend in place of cuda): not GPU figures"
             if document.get("dry_run") else
             f"YOLO11n on {gpu.get('name')} (driver {gpu.get('driver')}, torch {gpu.get('torch')}), "
             f"{document['imgsz'][0]}x{document['imgsz'][1]} input, {document['video']['frames']} frames")
    out = [title, format_table(rows, COLUMNS)]
    if document.get("stages"):
        out += ["one frame's stages, in one process (median ms)", format_table(document["stages"], STAGE_COLUMNS)]
    by_config = {(r["system"], r["config"]): r for r in rows}
    best_ultralytics = max((r for r in rows if r["system"] == "ultralytics"), key=lambda r: r["fps"], default=None)
    cuda_only = [r for r in rows if r["system"] == "aip" and "onnx" not in r["config"]]
    best_aip = max(cuda_only, key=lambda r: r["fps"], default=None)
    if best_ultralytics and best_aip:
        out.append(f"best aip ({best_aip['config']}): {best_aip['fps'] / best_ultralytics['fps']:.2f}x the best "
                   f"ultralytics ({best_ultralytics['config']}); target >= 2x")
    for row in rows:
        if row["system"] == "aip" and "onnx" in row["config"]:
            name = row["config"].split(", ", 1)[1].split(" + ")[0]
            alone = by_config.get(("aip", f"1 cuda worker, {name}"))
            if alone:
                out.append(f"{row['config']}: {row['fps'] / alone['fps']:.2f}x the same cuda worker alone "
                           f"(target >= 1.0x), weights {row.get('weights')}")
    for skipped in document.get("skipped", []):
        out.append(f"skipped: {skipped['row']}: {skipped['why']}")
    return "\n".join(out)
