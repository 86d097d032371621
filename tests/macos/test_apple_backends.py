"""mps and coreml on a Mac: they load, run, agree with the cpu backend, and share a pipeline.

Tolerances (not yet measured on a Mac): ``mps`` computes in float32 like
``cpu``, so its raw head must agree within 1e-3 (as ONNX Runtime does on
Linux) and its detections must be the same. ``coreml`` runs a float16
program on the Neural Engine: its raw head must agree within 1e-2 of the
input size (boxes, 6.4 px) and of the top score; on Linux, torch's own
float16 on the CPU differs from float32 by 3e-5 px and 3.5e-4 of the top
score on the same frames, so 1e-2 leaves room for the ANE's arithmetic and
still catches a wrong channel order, scale or layout.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aip.backends.base import Backend, BackendSpec, create
from aip.vision.models import COREML_INPUT, COREML_OUTPUT, ModelSource, RandomWeightsWarning, export, resolve_model
from aip.vision.postprocess import postprocess
from aip.vision.preprocess import Preprocessor
from apple_checks import require

CONF = 1e-4  # a seeded model scores every box below ~2e-4
IOU = 0.7
RECT_HW = (480, 640)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> ModelSource:
    with pytest.warns(RandomWeightsWarning):
        return resolve_model("yolo11n.yaml", seed=0, cache_dir=tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    from aip.io.samples import make_video
    from aip.io.sources import VideoFileSource

    video = make_video(tmp_path_factory.mktemp("media") / "bus_zidane.mp4")
    with VideoFileSource(video) as source:
        return [frame for frame, _ in source]


def loaded(spec: BackendSpec) -> Backend:
    require(spec)
    backend = create(spec)
    backend.load()
    return backend


@pytest.fixture(scope="module")
def cpu(seeded: ModelSource) -> Any:
    backend = loaded(BackendSpec("cpu", {"model": str(seeded.path), "imgsz": RECT_HW}))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def mps(seeded: ModelSource) -> Any:
    backend = loaded(BackendSpec("mps", {"model": str(seeded.path), "imgsz": RECT_HW}))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def coreml_package(seeded: ModelSource) -> Path:
    return export(seeded, "coreml", RECT_HW, half=True)


@pytest.fixture(scope="module")
def coreml(coreml_package: Path) -> Any:
    backend = loaded(BackendSpec("coreml", {"model": str(coreml_package)}))
    yield backend
    backend.close()


def assert_same_head(mine: np.ndarray, expected: np.ndarray, rtol: float) -> None:
    """Boxes within ``rtol`` of the input size, class scores within ``rtol`` of the largest score."""
    assert mine.shape == expected.shape and mine.dtype == np.float32
    score_scale = float(np.abs(expected[0, 4:]).max())
    np.testing.assert_allclose(mine[0, :4], expected[0, :4], rtol=rtol, atol=rtol * 640)
    np.testing.assert_allclose(mine[0, 4:], expected[0, 4:], rtol=rtol, atol=rtol * score_scale)


def tensor_of(frame: np.ndarray, backend: Backend) -> np.ndarray:
    return Preprocessor(frame.shape, backend.input_hw, backend.input_dtype)(frame)


def test_platform_is_what_the_set_assumes() -> None:
    assert sys.platform == "darwin"
    import platform

    assert platform.mac_ver()[0], "no macOS version"


def test_mps_loads_runs_and_matches_cpu(mps: Backend, cpu: Backend, frames: list[np.ndarray]) -> None:
    assert mps.device == "mps" and mps.input_hw == RECT_HW
    for frame in frames[::3]:
        tensor = tensor_of(frame, cpu)
        assert_same_head(mps.infer(tensor), cpu.infer(tensor), rtol=1e-3)
        params = Preprocessor(frame.shape, RECT_HW).params
        from detection_checks import assert_same_detections

        assert_same_detections(postprocess(mps.infer(tensor), frame.shape[:2], params, CONF, IOU),
                               postprocess(cpu.infer(tensor), frame.shape[:2], params, CONF, IOU))


def test_coreml_loads_runs_and_matches_cpu(coreml: Backend, cpu: Backend, frames: list[np.ndarray]) -> None:
    assert coreml.device == "ANE" and coreml.input_hw == RECT_HW and coreml.input_dtype == np.float32
    io = coreml._io  # type: ignore[attr-defined]
    assert (io.input_name, io.output_name, io.input_type) == (COREML_INPUT, COREML_OUTPUT, "FLOAT32")
    for frame in frames[::3]:
        tensor = tensor_of(frame, cpu)
        out = coreml.infer(tensor)
        assert out.shape == (1, 84, 6300)
        assert_same_head(out, cpu.infer(tensor), rtol=1e-2)


def test_coreml_runs_on_every_compute_unit_setting(coreml_package: Path, cpu: Backend,
                                                   frames: list[np.ndarray]) -> None:
    tensor = tensor_of(frames[0], cpu)
    expected = cpu.infer(tensor)
    for units in ("CPU_ONLY", "CPU_AND_GPU", "ALL"):
        backend = loaded(BackendSpec("coreml", {"model": str(coreml_package), "compute_units": units}))
        try:
            assert_same_head(backend.infer(tensor), expected, rtol=1e-2)
        finally:
            backend.close()


def test_coreml_converts_from_the_pt_in_prepare(seeded: ModelSource, cpu: Backend,
                                               frames: list[np.ndarray]) -> None:
    """The path a default run takes: a .pt, converted once by the manager, loaded by the worker."""
    from aip.backends.base import prepare

    spec = prepare(BackendSpec("coreml", {"model": str(seeded.path), "imgsz": RECT_HW}))
    assert spec.options["model"].endswith("-480x640-fp16.mlpackage")
    backend = loaded(spec)
    try:
        tensor = tensor_of(frames[1], cpu)
        assert_same_head(backend.infer(tensor), cpu.infer(tensor), rtol=1e-2)
    finally:
        backend.close()


def test_pipeline_on_coreml_mps_and_cpu(seeded: ModelSource, coreml_package: Path,
                                        frames: list[np.ndarray]) -> None:
    from aip.pipeline import Pipeline
    from aip.pipeline.reorder import Gap
    from aip.results import FrameResult

    specs = [
        BackendSpec("coreml", {"model": str(coreml_package)}),
        BackendSpec("mps", {"model": str(seeded.path), "imgsz": RECT_HW}),
        BackendSpec("cpu", {"model": str(seeded.path), "imgsz": RECT_HW, "threads": 2}),
    ]
    for spec in specs:
        require(spec)
    stream = [frames[i % len(frames)] for i in range(90)]
    with Pipeline(specs, mode="static", conf=CONF) as pipeline:
        calibration = pipeline.calibrate(stream[0], refresh=True, seconds=1.0)
        results = list(pipeline.run(stream))
        metrics = pipeline.metrics
    assert all(isinstance(r, FrameResult) for r in results), [r for r in results if isinstance(r, Gap)]
    assert [r.frame_id for r in results] == list(range(len(stream)))
    assert set(calibration.weights) and all(w >= 1 for w in calibration.weights.values())
    by_backend = {r.backend for r in results}
    assert by_backend == {"coreml", "mps", "cpu"}, (by_backend, calibration.weights)
    assert metrics.frames_ordered == len(stream) and metrics.frames_dropped == 0
    assert all(len(r.detections) > 0 for r in results)  # conf 1e-4 keeps seeded boxes
    assert mp.active_children() == []


def test_default_run_on_a_mac_runs_on_what_loads(tmp_path: Path) -> None:
    """`aip run` without -b: every backend this Mac has, calibrated; it finishes whatever fails to load."""
    from aip.app.cli import main

    metrics = tmp_path / "metrics.json"
    with pytest.warns(RandomWeightsWarning):
        assert main(["run", "sample:30", "--frames", "30", "--metrics-json", str(metrics)]) == 0
    report = json.loads(metrics.read_text())
    assert report["frames_ordered"] == 30
    assert mp.active_children() == []
