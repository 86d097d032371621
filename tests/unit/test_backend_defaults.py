"""Which backends a default run takes, and leaves out when one fails;
``onnx`` CPU workers stay on the CPU unless an accelerator provider is asked for.
(Runs with a worker that really fails to load: tests/integration/test_backend_defaults_real.py.)"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from aip.app import cli
from aip.backends.base import BackendSpec, BackendUnavailable, check_available

# --- which backends a default run takes -------------------------------------------------

EVERYTHING_RUNS = {"sim": None, "cpu": None, "cuda": "no GPU", "mps": None, "onnx": None, "coreml": None,
                   "openvino": "not installed"}


def test_with_openvino_the_default_cpu_worker_is_one_throughput_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli, "available_backends", lambda: {**EVERYTHING_RUNS, "openvino": None,
                                                           "mps": "not a Mac", "coreml": "not a Mac"})
    from aip.backends import openvino_backend

    monkeypatch.setattr(openvino_backend, "available_devices", lambda: ["CPU"])
    specs = cli.default_specs({"imgsz": (480, 640)}, cores=4)
    assert [(s.name, s.options) for s in specs] == [
        ("openvino", {"imgsz": (480, 640), "hint": "throughput"})]
    # Intel's GPUs and NPUs: one worker each, and the CPU worker for the cores left.
    monkeypatch.setattr(openvino_backend, "available_devices", lambda: ["CPU", "GPU.0", "NPU"])
    specs = cli.default_specs({}, cores=4)
    assert [(s.name, s.options.get("device")) for s in specs] == [
        ("openvino", "GPU.0"), ("openvino", "NPU"), ("openvino", None)]


def test_default_specs_leave_out_what_failed_and_give_its_core_to_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli, "available_backends", lambda: dict(EVERYTHING_RUNS))
    names = [spec.name for spec in cli.default_specs({}, cores=4)]
    assert names == ["mps", "coreml", "onnx", "onnx"]
    onnx = cli.default_specs({"imgsz": (480, 640)}, cores=4)[-1]
    # a CPU worker: one thread, no spinning, and no provider option, which means CPUExecutionProvider
    assert onnx.options == {"imgsz": (480, 640), "threads": 1, "spin": False}

    skipped = {"coreml": "failed to load: RuntimeError: no ANE"}
    assert [s.name for s in cli.default_specs({}, 4, skipped)] == ["mps", "onnx", "onnx", "onnx"]
    skipped["onnx"] = "failed to load: ImportError: broken onnxruntime"
    assert [s.name for s in cli.default_specs({}, 4, skipped)] == ["mps", "cpu", "cpu", "cpu"]
    skipped |= {"mps": "failed to load: x", "cpu": "failed to load: y"}
    with pytest.raises(BackendUnavailable, match="coreml: failed to load: RuntimeError: no ANE"):
        cli.default_specs({}, 4, skipped)


def test_every_visible_gpu_is_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    from aip.backends import torch_backend

    monkeypatch.setattr(cli, "available_backends", lambda: {**EVERYTHING_RUNS, "cuda": None,
                                                           "mps": "not a Mac", "coreml": "not a Mac"})
    monkeypatch.setattr(torch_backend, "cuda_device_count", lambda: 3)
    specs = cli.default_specs({}, cores=4)
    assert [(s.name, s.options.get("device")) for s in specs] == [
        ("cuda", 0), ("cuda", 1), ("cuda", 2), ("onnx", None)]


def test_usable_cores_follow_the_affinity() -> None:
    import os

    from aip.backends.base import usable_cores

    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert 1 <= usable_cores() <= (allowed or 1)


def test_a_default_backend_whose_export_fails_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Failures in the manager's preparation (an export, a missing file) are left out the same way."""
    missing = tmp_path / "missing.onnx"

    def defaults(options: dict[str, Any], cores: int, skip: dict[str, str] | None = None) -> list[BackendSpec]:
        specs = [BackendSpec("onnx", {"model": str(missing)}), BackendSpec("sim", {"latency_s": 0.001})]
        return [spec for spec in specs if spec.name not in (skip or {})]

    monkeypatch.setattr(cli, "default_specs", defaults)
    with caplog.at_level(logging.WARNING, logger="aip.app.cli"):
        assert cli.main(["run", "synthetic:64x48", "--frames", "5", "--mode", "pull"]) == 0
    assert any("leaving out the onnx backend" in r.getMessage() and "missing.onnx" in r.getMessage()
               for r in caplog.records)


# --- onnx: the CPU unless asked -------------------------------------------------------------


class FakeOnnxRuntime:
    """Only what OnnxBackend._providers reads: an ONNX Runtime with every provider."""

    @staticmethod
    def get_available_providers() -> list[str]:
        return ["CUDAExecutionProvider", "CoreMLExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, ["CPUExecutionProvider"]),
        ({"provider": "cpu"}, ["CPUExecutionProvider"]),
        ({"provider": "cuda", "device": 1}, [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]),
        ({"provider": "CoreML"}, [("CoreMLExecutionProvider", {"ModelFormat": "MLProgram",
                                                               "MLComputeUnits": "CPUAndNeuralEngine"}),
                                  "CPUExecutionProvider"]),
    ],
)
def test_onnx_providers_pin_the_cpu_unless_asked(options: dict[str, Any], expected: list[Any]) -> None:
    """Even where ONNX Runtime has CUDA and CoreML providers, a plain onnx worker gets the CPU's alone."""
    from aip.backends.onnx_backend import OnnxBackend

    assert OnnxBackend(BackendSpec("onnx", options))._providers(FakeOnnxRuntime()) == expected


def test_onnx_accelerator_providers_that_are_missing_are_refused() -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    for name, provider in (("cuda", "CUDAExecutionProvider"), ("coreml", "CoreMLExecutionProvider")):
        if provider in onnxruntime.get_available_providers():
            continue
        with pytest.raises(BackendUnavailable, match=f"onnx:provider={name} needs ONNX Runtime's {provider}"):
            check_available(BackendSpec("onnx", {"provider": name}))


