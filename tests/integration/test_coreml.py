"""Core ML on Linux: conversion, the package's spec, and what the coreml backend feeds it.

Core ML cannot predict on Linux, but coremltools converts and reads packages
here: these tests convert the seeded YOLO11n for real and inspect the
result. Running it is tests/macos' job.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aip.backends.base import BackendSpec, BackendUnavailable, check_available
from aip.vision.models import (
    COREML_INPUT,
    COREML_OUTPUT,
    COREML_PRECISION_KEY,
    ModelSource,
    RandomWeightsWarning,
    export,
    load_torch_model,
    resolve_model,
)

torch = pytest.importorskip("torch")
pytest.importorskip("ultralytics")
coremltools = pytest.importorskip(
    "coremltools", reason="the test extra installs coremltools wherever it has wheels (macOS, x86-64 Linux)"
)

from aip.backends.coreml_backend import COMPUTE_UNITS, CoreMLBackend, ModelIO  # after the skips
from aip.vision.preprocess import Preprocessor

RECT_HW = (480, 640)
ANCHORS = 6300  # 60x80 + 30x40 + 15x20 cells at 480x640


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> ModelSource:
    with pytest.warns(RandomWeightsWarning):
        return resolve_model("yolo11n.yaml", seed=0, cache_dir=tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module", params=[True, False], ids=["float16", "float32"])
def package(request: pytest.FixtureRequest, seeded: ModelSource) -> tuple[Path, bool]:
    """A fresh conversion (the cache directory is new), beside the checkpoint."""
    half: bool = request.param
    return export(seeded, "coreml", RECT_HW, half=half), half


def program_ops(spec: Any) -> list[tuple[str, str]]:
    """(op type, output data type name) of every op in the ML Program's main function."""
    from coremltools.proto import MIL_pb2

    main = spec.mlProgram.functions["main"]
    block = main.block_specializations[main.opset]
    return [(op.type, MIL_pb2.DataType.Name(out.type.tensorType.dataType))
            for op in block.operations for out in op.outputs]


# --- the package -------------------------------------------------------------------------


def test_package_spec(package: tuple[Path, bool]) -> None:
    """Input and output names, shapes and types; the program and its precision."""
    path, half = package
    assert path.suffix == ".mlpackage" and path.is_dir() and ("-fp16" in path.name) == half
    spec = coremltools.utils.load_spec(str(path))
    assert spec.WhichOneof("Type") == "mlProgram"
    assert spec.specificationVersion >= 7  # macOS 13 / iOS 16 or newer

    (model_input,) = spec.description.input
    assert model_input.name == COREML_INPUT == "images"
    assert model_input.type.WhichOneof("Type") == "multiArrayType"  # TensorType, not ImageType
    array = model_input.type.multiArrayType
    assert list(array.shape) == [1, 3, *RECT_HW]
    assert type(array).ArrayDataType.Name(array.dataType) == "FLOAT32"

    (output,) = spec.description.output
    assert output.name == COREML_OUTPUT == "raw_head"
    out_array = output.type.multiArrayType
    assert list(out_array.shape) == [1, 84, ANCHORS]
    assert type(out_array).ArrayDataType.Name(out_array.dataType) == "FLOAT32"

    metadata = dict(spec.description.metadata.userDefined)
    precision = "float16" if half else "float32"
    assert metadata[COREML_PRECISION_KEY] == precision
    assert json.loads(metadata["aip.imgsz"]) == list(RECT_HW)
    assert len(json.loads(metadata["aip.names"])) == 80

    # The precision is the program's, not only a label: every convolution
    # computes in it (the Neural Engine runs float16 only).
    ops = program_ops(spec)
    convolutions = {dtype for op, dtype in ops if op == "conv"}
    assert convolutions == {"FLOAT16" if half else "FLOAT32"}
    assert sum(op == "conv" for op, _ in ops) > 50
    if half:  # the float32 input is cast once, as the program's first step
        assert ("cast", "FLOAT16") in ops


def test_package_loads_with_the_backends_compute_units(package: tuple[Path, bool]) -> None:
    """MLModel takes the package and the compute units the backend asks for (no prediction here)."""
    path, _ = package
    assert set(COMPUTE_UNITS) <= set(coremltools.ComputeUnit.__members__)
    default = CoreMLBackend(BackendSpec("coreml"))._compute_units
    assert default == "CPU_AND_NE"
    model = coremltools.models.MLModel(str(path), skip_model_load=True,
                                       compute_units=coremltools.ComputeUnit[default])
    assert model.compute_unit == coremltools.ComputeUnit.CPU_AND_NE
    assert ModelIO.from_spec(model.get_spec()).input_hw == RECT_HW


def test_the_converted_graph_computes_what_the_cpu_backend_does(seeded: ModelSource) -> None:
    """The graph that goes to coremltools (Core ML attention, export-mode head) against aip's torch model."""
    from aip.vision.models import _coreml_network

    tensor = torch.from_numpy(np.random.default_rng(0).random((1, 3, *RECT_HW), dtype=np.float32))
    with torch.inference_mode():
        mine = _coreml_network(seeded.path)(tensor)
        reference = load_torch_model(seeded)(tensor)[0]
    assert isinstance(mine, torch.Tensor) and tuple(mine.shape) == (1, 84, ANCHORS)
    np.testing.assert_allclose(mine.numpy(), reference.numpy(), rtol=1e-4, atol=1e-3)


def test_cli_export_converts_to_coreml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`aip export --format coreml` on the default model, into an empty cache: a real conversion."""
    from aip.app.cli import main

    monkeypatch.setenv("AIP_CACHE_DIR", str(tmp_path))  # an empty cache: nothing cached yet
    with pytest.warns(RandomWeightsWarning):
        assert main(["export", "--format", "coreml", "--imgsz", "480x640", "--half"]) == 0
    path = Path(capsys.readouterr().out.split("coreml: ", 1)[1].strip())
    assert path.is_relative_to(tmp_path) and path.name.endswith("-480x640-fp16.mlpackage")
    io = ModelIO.from_spec(coremltools.utils.load_spec(str(path)))
    assert io == ModelIO(COREML_INPUT, COREML_OUTPUT, (1, 3, *RECT_HW), "FLOAT32")


def test_export_without_coremltools_says_what_to_install(seeded: ModelSource,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "coremltools" else find_spec(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'aip\[coreml\]'"):
        export(seeded, "coreml", (320, 320))


# --- what the backend feeds Core ML ------------------------------------------------------


def test_backend_feeds_aips_tensor_as_it_is(package: tuple[Path, bool]) -> None:
    """The input dict: the preprocessed float32 tensor itself (no copy, no PIL), matching the spec."""
    path, _ = package
    io = ModelIO.from_spec(coremltools.utils.load_spec(str(path)))
    frame = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    preprocessor = Preprocessor(frame.shape, io.input_hw, np.dtype(np.float32))
    tensor = preprocessor(frame)
    feed = io.feed(tensor)
    assert list(feed) == [COREML_INPUT]
    assert feed[COREML_INPUT] is tensor
    assert tensor.dtype == np.float32 and tensor.flags.c_contiguous and tensor.shape == io.input_shape
    # a float16 tensor (a worker set up for another backend) becomes float32, not an error
    assert feed_dtype(io, tensor.astype(np.float16)) == np.float32
    with pytest.raises(ValueError, match=r"takes \(1, 3, 480, 640\), got \(1, 3, 640, 640\)"):
        io.feed(np.zeros((1, 3, 640, 640), np.float32))


def feed_dtype(io: ModelIO, tensor: np.ndarray) -> np.dtype[Any]:
    value: np.ndarray = io.feed(tensor)[io.input_name]
    return value.dtype


def test_ultralytics_coreml_export_installs_nothing_and_feeds_through_pil(
    seeded: ModelSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ultralytics' own Core ML export (the baseline of benchmarks/mac_check.sh) wants numpy<=2.3.5
    and would pip-install it; under aip.vision.models.no_auto_install nothing is installed. Its ImageType
    package still runs on the coreml backend, through a PIL image."""
    import shutil
    import subprocess

    from ultralytics import YOLO
    from ultralytics.utils import checks

    from aip.vision.models import no_auto_install

    def no_pip(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"an export tried to install packages: {args}")

    monkeypatch.setattr(checks.subprocess, "check_output", no_pip)
    monkeypatch.setattr(subprocess, "check_output", no_pip)
    weights = tmp_path / "yolo11n.pt"
    shutil.copyfile(seeded.path, weights)
    before = checks.AUTOINSTALL
    with no_auto_install(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's tracing deprecations, coremltools' temporary files
        assert checks.AUTOINSTALL is False
        produced = Path(YOLO(str(weights)).export(format="coreml", nms=False, imgsz=list(RECT_HW),
                                                  device="cpu", verbose=False))
    assert checks.AUTOINSTALL == before

    io = ModelIO.from_spec(coremltools.utils.load_spec(str(produced)))
    assert io.image_input and io.input_hw == RECT_HW
    tensor = Preprocessor((480, 640, 3), RECT_HW, np.dtype(np.float32))(
        np.full((480, 640, 3), 7, np.uint8))
    image = io.feed(tensor)[io.input_name]
    assert image.mode == "RGB" and image.size == (640, 480)
    assert np.array_equal(np.asarray(image), np.full((480, 640, 3), 7, np.uint8))


# --- the backend's contract on a machine without Core ML ------------------------------


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML runs on a Mac: tests/macos covers it")
def test_coreml_backend_on_linux_says_why_and_prepares(seeded: ModelSource) -> None:
    spec = BackendSpec("coreml", {"model": str(seeded.path), "imgsz": RECT_HW})
    with pytest.raises(BackendUnavailable, match=r"needs macOS .* On Linux use onnx or cpu"):
        check_available(spec)
    # the conversion a Mac's manager runs before its workers start works here too
    with pytest.warns(RandomWeightsWarning):
        prepared = CoreMLBackend.prepare(spec)
    model = Path(prepared.options["model"])
    assert model.suffix == ".mlpackage" and model.name.endswith("-480x640-fp16.mlpackage")


def test_coreml_options_are_checked_before_anything_starts() -> None:
    with pytest.raises(ValueError, match="compute_units must be one of CPU_AND_NE, ALL"):
        check_available(BackendSpec("coreml", {"compute_units": "GPU"}))
    with pytest.raises(ValueError, match="multiples of 32"):
        check_available(BackendSpec("coreml", {"imgsz": 500}))
    assert CoreMLBackend(BackendSpec("coreml")).device == "ANE"
    assert CoreMLBackend(BackendSpec("coreml", {"compute_units": "ALL"})).device == "coreml:ALL"
    with pytest.raises(RuntimeError, match="load"):
        CoreMLBackend(BackendSpec("coreml")).infer(np.zeros((1, 3, 640, 640), np.float32))
