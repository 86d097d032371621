"""``python -m aip.bench yolo --device cuda`` on any machine: its refusal without a GPU,
its GPU sampling, its bottleneck hints, its plan and its summary (the GPU figures
themselves come from benchmarks/gpu_check.sh on a GPU machine)."""
from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aip.bench import yolo, yolo_cuda
from aip.bench.yolo_cuda import GpuSampler, Plan, bottleneck_hint, parse_smi_line, ultralytics_hint


def test_without_a_gpu_device_cuda_exits_2_saying_why(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(yolo_cuda, "gpu_missing", lambda: "no NVIDIA GPU is visible to torch 9.9 (a CPU-only build)")
    assert yolo.main(["--device", "cuda", "--frames", "4"]) == 2
    err = capsys.readouterr().err
    assert "bench yolo --device cuda: no NVIDIA GPU is visible to torch 9.9" in err
    assert "add --dry-run to rehearse the plan on the CPU" in err


def test_cuda_only_flags_are_refused_on_the_cpu_plan() -> None:
    with pytest.raises(SystemExit):
        yolo.main(["--dry-run"])
    with pytest.raises(SystemExit):
        yolo.main(["--time-budget", "10"])


def test_the_dry_plan_stands_the_cpu_backend_in_for_cuda() -> None:
    dry = Plan(dry_run=True, frames=8, imgsz=(256, 320), seconds=0.1)
    spec = dry.cuda_spec("m.pt", {"half": 1, "graphs": 1, "pinned": 1})
    assert (spec.name, spec.display_name) == ("cpu", "cuda")
    assert spec.options == {"model": "m.pt", "imgsz": (256, 320), "threads": 1}
    real = Plan(dry_run=False, frames=600, imgsz=(480, 640), seconds=3, cores=16)
    spec = real.cuda_spec("m.pt", {"half": 1, "graphs": 1})
    assert spec.name == "cuda" and spec.options == {"model": "m.pt", "imgsz": (480, 640), "half": 1, "graphs": 1}
    assert real.onnx_workers() == (3, 4) and dry.onnx_workers() == (1, 1)
    assert Plan(dry_run=False, frames=1, imgsz=(480, 640), seconds=1, cores=2).onnx_workers() == (1, 1)
    for options in yolo_cuda.TUNINGS.values():  # every tuning the plan runs is one the backend takes
        from aip.backends.torch_backend import CudaTuning

        assert CudaTuning.from_options("cuda", options).half


# --- bottleneck hints ---------------------------------------------------------------------


STAGES = {"preprocess_ms": 0.4, "h2d_ms": 0.3, "kernels_ms": 2.5, "d2h_ms": 0.2, "postprocess_ms": 0.6}


@pytest.mark.parametrize(("row", "decode_fps", "expected"), [
    ({"fps": 300, "workers": 4, "worker_ms": 4.0, "manager_cpu_pct": 97}, None, "manager (97 % of a core)"),
    ({"fps": 480, "workers": 4, "worker_ms": 4.0, "manager_cpu_pct": 40}, 500.0, "decode (500 FPS alone)"),
    ({"fps": 300, "workers": 4, "worker_ms": 4.0}, 2000.0, "input side: workers idle 70 % (decode or manager)"),
    ({"fps": 240, "workers": 1, "worker_ms": 4.0, "gpu_util_pct": 95}, None, "kernels (GPU busy 95 %)"),
    ({"fps": 240, "workers": 1, "worker_ms": 4.0, "gpu_util_pct": 60}, None,
     "workers: kernels (62 % of a frame, GPU busy 60 %)"),
    ({"fps": 240, "workers": 1, "worker_ms": 4.0}, None, "workers: kernels (62 % of a frame)"),
    ({"fps": 240, "workers": 1}, None, "unknown"),
])
def test_bottleneck_hint_follows_the_pipeline_in_order(row: dict[str, Any], decode_fps: float | None,
                                                       expected: str) -> None:
    assert bottleneck_hint(row, STAGES, decode_fps) == expected


def test_a_mixed_row_is_judged_by_the_capacity_of_its_workers() -> None:
    """cuda at 4 ms beside onnx at 40 ms: 275 FPS is what they can do, not 2 x 1000 / median."""
    row = {"fps": 260, "workers": 2, "worker_ms": 22.0, "capacity_fps": 275.0, "gpu_util_pct": 50}
    assert bottleneck_hint(row, STAGES) == "workers: kernels (62 % of a frame, GPU busy 50 %)"
    assert bottleneck_hint({**row, "fps": 100}, STAGES).startswith("input side: workers idle 64 %")


def test_bottleneck_hint_names_a_copy_when_it_dominates() -> None:
    stages = {**STAGES, "h2d_ms": 5.0}
    assert bottleneck_hint({"fps": 100, "workers": 1, "worker_ms": 9.0}, stages) == \
        "workers: H2D copy (57 % of a frame)"
    assert bottleneck_hint({"fps": 100, "workers": 1, "worker_ms": 9.0}, None) == "workers"


def test_ultralytics_hint_names_its_largest_stage() -> None:
    assert ultralytics_hint({"preprocess": 1.0, "inference": 6.0, "postprocess": 1.0}) == \
        "inference (75 % of a frame)"
    assert ultralytics_hint({}) == "unknown"


def test_pipeline_stages_are_medians_of_the_timestamps() -> None:
    from aip.results import FrameResult

    results = [FrameResult(i, "cuda", 0, np.zeros((0, 6), np.float32), t_capture_ns=0, t_ingest_ns=1_000_000,
                           t_infer_start_ns=3_000_000, t_infer_end_ns=7_000_000 + i * 1_000_000,
                           t_done_ns=8_000_000 + i * 1_000_000) for i in range(3)]
    assert yolo_cuda._pipeline_stages(results) == {
        "ingest_wait_ms": 1.0, "queue_ms": 2.0, "worker_ms": 5.0, "release_ms": 1.0}


# --- sampling the GPU ---------------------------------------------------------------------


@pytest.mark.parametrize(("line", "expected"), [
    ("87, 1234\n", (87.0, 1234.0)), ("0, 0", (0.0, 0.0)), ("[N/A], 12", None), ("", None), ("1, 2, 3", None),
])
def test_nvidia_smi_lines(line: str, expected: tuple[float, float] | None) -> None:
    assert parse_smi_line(line) == expected


def test_without_nvml_or_nvidia_smi_the_sampler_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    monkeypatch.setattr(yolo_cuda.shutil, "which", lambda name: None)
    sampler = GpuSampler()
    with sampler:
        time.sleep(0.05)
    assert sampler.source == "none"
    assert sampler.summary() == {"gpu_util_pct": None, "gpu_util_max_pct": None, "gpu_memory_mb": None,
                                 "gpu_samples": 0, "gpu_sampler": "none"}
    sampler.close()


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script stands in for nvidia-smi")
def test_without_nvml_the_sampler_polls_nvidia_smi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nwhile true; do echo '40, 1000'; echo '60, 3000'; sleep 0.01; done\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setitem(sys.modules, "pynvml", None)
    sampler = GpuSampler(interval_s=0.01)
    assert sampler.source == "nvidia-smi"
    with sampler:
        deadline = time.monotonic() + 10
        while len(sampler.util) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
    summary = sampler.summary()
    assert summary["gpu_samples"] >= 4 and summary["gpu_sampler"] == "nvidia-smi"
    assert 40 <= summary["gpu_util_pct"] <= 60 and summary["gpu_util_max_pct"] == 60
    assert summary["gpu_memory_mb"] == 3000
    sampler.close()


# --- the summary --------------------------------------------------------------------------


def test_summary_states_the_two_targets_and_what_was_skipped() -> None:
    def row(system: str, config: str, fps: float, **extra: Any) -> dict[str, Any]:
        return {"system": system, "config": config, "fps": fps, "p50_ms": 1.0, "p99_ms": 2.0, **extra}

    document = {
        "dry_run": False, "gpu": {"name": "GPU X", "driver": "1.0", "torch": "2.x"}, "imgsz": [480, 640],
        "video": {"frames": 600},
        "results": [row("ultralytics", ".pt fp32", 100), row("ultralytics", ".pt fp16", 120),
                    row("aip", "1 cuda worker, fp32", 200), row("aip", "2 cuda workers, fp32", 300),
                    row("aip", "1 cuda worker, fp32 + 3 onnx x 4 threads, calibrated", 210,
                        weights={"cuda": 9, "onnx#0": 1})],
        "stages": [], "skipped": [{"row": "4 cuda workers, fp16+all", "why": "time budget of 130 s spent"}],
    }
    text = yolo_cuda.summarize(document)
    assert text.startswith("YOLO11n on GPU X (driver 1.0, torch 2.x), 480x640 input, 600 frames")
    assert "best aip (2 cuda workers, fp32): 2.50x the best ultralytics (.pt fp16); target >= 2x" in text
    assert ("1 cuda worker, fp32 + 3 onnx x 4 threads, calibrated: 1.05x the same cuda worker alone "
            "(target >= 1.0x)") in text
    assert "skipped: 4 cuda workers, fp16+all: time budget of 130 s spent" in text
    assert yolo_cuda.summarize({**document, "dry_run": True}).startswith("DRY RUN on the CPU")
