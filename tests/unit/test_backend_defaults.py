"""Default runs survive a backend that fails to load; named backends fail loudly;
``onnx`` CPU workers stay on the CPU unless an accelerator provider is asked for."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aip.app import cli
from aip.backends.base import BackendSpec, BackendUnavailable, check_available, create
from aip.vision.models import ModelSource, RandomWeightsWarning, resolve_model

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


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> ModelSource:
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    with pytest.warns(RandomWeightsWarning):
        return resolve_model("yolo11n.yaml", seed=0, cache_dir=tmp_path_factory.mktemp("models"))


# A cpu worker whose load fails in the worker process (after every check the
# manager makes has passed): torch.set_num_threads(int("many")).
BROKEN_CPU = {"threads": "many"}


def test_default_run_leaves_out_a_backend_that_fails_to_load(
    seeded: ModelSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The default set here is a cpu worker that cannot load and a sim worker: the run goes on with sim."""
    asked: list[dict[str, str]] = []

    def defaults(options: dict[str, Any], cores: int, skip: dict[str, str] | None = None) -> list[BackendSpec]:
        asked.append(dict(skip or {}))
        specs = [BackendSpec("cpu", {**options, **BROKEN_CPU}), BackendSpec("sim", {"latency_s": 0.001})]
        return [spec for spec in specs if spec.name not in (skip or {})]

    monkeypatch.setattr(cli, "default_specs", defaults)
    jsonl = tmp_path / "out.jsonl"
    with caplog.at_level(logging.WARNING, logger="aip.app.cli"), pytest.warns(RandomWeightsWarning):
        rc = cli.main(["run", "synthetic:64x48", "--model", str(seeded.path), "--frames", "10",
                       "--mode", "pull", "--jsonl", str(jsonl)])
    assert rc == 0
    assert asked[0] == {} and list(asked[-1]) == ["cpu"]
    assert "invalid literal for int()" in asked[-1]["cpu"]
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "aip.app.cli"]
    assert "leaving out the cpu backend" in warning.getMessage()
    assert "ValueError: invalid literal for int() with base 10: 'many'" in warning.getMessage()
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [line["frame_id"] for line in lines] == list(range(10))
    assert {line["backend"] for line in lines} == {"sim"}
    assert mp.active_children() == []


def test_a_named_backend_that_fails_to_load_fails_the_run(
    seeded: ModelSource, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.warns(RandomWeightsWarning):
        rc = cli.main(["run", "synthetic:64x48", "--model", str(seeded.path), "--frames", "4",
                       "-b", "cpu:threads=many", "-b", "sim:0.001"])
    assert rc == 4  # a worker that fails to start: backend unavailable
    err = capsys.readouterr().err
    assert err.startswith("aip: error: worker cpu failed to start")
    assert "invalid literal for int() with base 10: 'many'" in err
    assert mp.active_children() == []


def test_a_default_run_with_nothing_that_loads_says_why_for_each(
    seeded: ModelSource, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def defaults(options: dict[str, Any], cores: int, skip: dict[str, str] | None = None) -> list[BackendSpec]:
        if skip:
            raise BackendUnavailable("no real backend runs on this machine:\n" +
                                     "\n".join(f"  {name}: {why}" for name, why in skip.items()))
        return [BackendSpec("cpu", {**options, **BROKEN_CPU})]

    monkeypatch.setattr(cli, "default_specs", defaults)
    with pytest.warns(RandomWeightsWarning):
        assert cli.main(["run", "synthetic:64x48", "--model", str(seeded.path), "--frames", "4"]) == 4  # backend unavailable
    err = capsys.readouterr().err
    assert "no real backend runs on this machine" in err and "cpu: failed to load: ValueError" in err
    assert mp.active_children() == []


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


def test_a_loaded_onnx_cpu_worker_runs_on_the_cpu_provider_alone(seeded: ModelSource) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from aip.vision.models import export

    backend = create(BackendSpec("onnx", {"model": str(export(seeded, "onnx", (320, 320))), "threads": 1}))
    backend.load()
    try:
        assert backend.device == "CPUExecutionProvider"
        assert backend._session.get_providers() == ["CPUExecutionProvider"]  # type: ignore[attr-defined]
        assert backend.infer(np.zeros((1, 3, 320, 320), np.float32)).shape == (1, 84, 2100)
    finally:
        backend.close()
