"""Model resolution (seeded architectures, real checkpoints, wrong files) and export."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aip.vision.models import (
    ModelSource,
    RandomWeightsWarning,
    artifact_path,
    export,
    load_torch_model,
    parse_imgsz,
    resolve_model,
)

torch = pytest.importorskip("torch")
pytest.importorskip("ultralytics")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model_cache")


@pytest.fixture(scope="module")
def seeded(cache: Path) -> ModelSource:
    with pytest.warns(RandomWeightsWarning, match="MEANINGLESS"):
        return resolve_model(None, cache_dir=cache)


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint saved by ultralytics itself, as a trained one would be (no aip marker)."""
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("weights") / "my_yolo.pt"
    with torch.random.fork_rng():
        torch.manual_seed(1)
        YOLO("yolo11n.yaml").save(path)
    return path


# --- resolve_model -----------------------------------------------------------------------


def test_seeded_model_is_saved_once_and_marked(seeded: ModelSource, cache: Path) -> None:
    assert seeded.random_weights and seeded.seed == 0
    assert seeded.path.parent == cache and seeded.path.suffix == ".pt"
    assert len(seeded.class_names) == 80
    modified = seeded.path.stat().st_mtime_ns
    with pytest.warns(RandomWeightsWarning):
        again = resolve_model("yolo11n.yaml", cache_dir=cache)
    assert again == seeded and seeded.path.stat().st_mtime_ns == modified


def test_seeded_weights_are_the_seeds(seeded: ModelSource, cache: Path) -> None:
    """The saved weights are yolo11n.yaml built under torch.manual_seed(0), as ultralytics saves them (fp16)."""
    from ultralytics import YOLO

    with torch.random.fork_rng():
        torch.manual_seed(0)
        expected = YOLO("yolo11n.yaml").model.state_dict()
    saved = load_torch_model_unfused(seeded.path).state_dict()
    for name, tensor in expected.items():
        reference = tensor.half().float() if tensor.is_floating_point() else tensor
        torch.testing.assert_close(saved[name], reference, rtol=0, atol=0, msg=name)
    with pytest.warns(RandomWeightsWarning):
        other = resolve_model("yolo11n.yaml", seed=1, cache_dir=cache)
    assert other.digest != seeded.digest and other.seed == 1


def load_torch_model_unfused(path: Path) -> Any:
    from ultralytics.nn.tasks import load_checkpoint

    return load_checkpoint(str(path))[0]


def test_resolving_leaves_the_callers_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with pytest.warns(RandomWeightsWarning):
        resolve_model("yolo11n.yaml", seed=5, cache_dir=tmp_path)
    assert torch.equal(torch.rand(3), expected)


def test_trained_checkpoint_loads_without_warning(trained_checkpoint: Path) -> None:
    source = resolve_model(trained_checkpoint)  # filterwarnings=error: any warning fails here
    assert not source.random_weights and source.seed is None
    assert source.path == trained_checkpoint.resolve() and source.name == "my_yolo"
    assert len(source.digest) == 64


def test_missing_files_say_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="never downloads"):
        resolve_model(tmp_path / "yolo11n.pt")
    with pytest.raises(FileNotFoundError, match="architecture 'no_such_model.yaml' not found"):
        resolve_model("no_such_model.yaml", cache_dir=tmp_path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.txt", b"hello", r"expected a YOLO \.pt checkpoint or a \.yaml"),
        ("random.pt", np.random.default_rng(0).bytes(4096), r"not a PyTorch checkpoint"),
        ("empty.pt", b"", r"not a PyTorch checkpoint"),
        ("model.onnx", b"x", r"exported model"),
    ],
)
def test_wrong_kinds_of_file_say_what_was_expected(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        resolve_model(path)


def test_a_zip_that_is_no_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fake.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data.txt", "not a model")
    with pytest.raises(ValueError, match=r"fake\.pt is not a loadable YOLO \.pt checkpoint"):
        resolve_model(path)


def test_a_torch_file_that_is_no_yolo_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match=r"weights\.pt is not a loadable YOLO \.pt checkpoint"):
        resolve_model(path)


def test_parse_imgsz() -> None:
    assert parse_imgsz(None) == (640, 640)
    assert parse_imgsz(320) == (320, 320)
    assert parse_imgsz([480, 640]) == (480, 640)
    for bad in (100, (480, 0), (481, 640)):
        with pytest.raises(ValueError, match="multiples of 32"):
            parse_imgsz(bad)  # type: ignore[arg-type]


# --- export -------------------------------------------------------------------------------


def test_onnx_export_is_cached_by_model_size_and_precision(seeded: ModelSource, cache: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    path = export(seeded, "onnx", (480, 640))
    assert path.parent == cache  # beside the checkpoint
    assert path.name == f"{seeded.name}-{seeded.digest[:12]}-480x640.onnx"
    modified = path.stat().st_mtime_ns
    assert export(seeded, "onnx", (480, 640)) == path and path.stat().st_mtime_ns == modified
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 480, 640]
    assert session.get_outputs()[0].shape == [1, 84, 6300]

    half = export(seeded, "onnx", (480, 640), half=True)
    assert half.name.endswith("-480x640-fp16.onnx") and half.stat().st_size < 0.6 * path.stat().st_size
    session = onnxruntime.InferenceSession(str(half), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float)"  # fp16 inside, float32 at the edges
    assert not list(cache.glob(".aip-export-*"))  # no scratch left behind


@pytest.mark.filterwarnings("ignore:.*deprecated:FutureWarning")  # torch.jit itself is deprecated
def test_export_to_another_cache_dir(seeded: ModelSource, tmp_path: Path) -> None:
    path = export(seeded, "torchscript", (320, 320), cache_dir=tmp_path)
    assert path.parent == tmp_path and path.suffix == ".torchscript"
    output = torch.jit.load(str(path))(torch.zeros(1, 3, 320, 320))
    assert tuple((output[0] if isinstance(output, (tuple, list)) else output).shape) == (1, 84, 2100)


def test_artifact_path_uses_an_existing_artifact_as_is(seeded: ModelSource, tmp_path: Path) -> None:
    onnx_file = export(seeded, "onnx", (480, 640))
    assert artifact_path(onnx_file, "onnx", (640, 640)) == onnx_file
    with pytest.raises(FileNotFoundError, match="onnx model"):
        artifact_path(tmp_path / "missing.onnx", "onnx")


def test_export_refuses_bad_requests(seeded: ModelSource) -> None:
    with pytest.raises(ValueError, match="unknown export format"):
        export(seeded, "tflite", (640, 640))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multiples of 32"):
        export(seeded, "onnx", (500, 640))


# --- load_torch_model ---------------------------------------------------------------------


def test_torch_model_is_fused_eval_and_gradient_free(seeded: ModelSource) -> None:
    model = load_torch_model(seeded)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with torch.inference_mode():
        output = model(torch.zeros(1, 3, 480, 640))
    head = output[0] if isinstance(output, (tuple, list)) else output
    assert tuple(head.shape) == (1, 84, 6300) and head.dtype == torch.float32


def test_importing_models_does_not_import_torch() -> None:
    code = "import sys, aip.vision.models, aip.io.sources, aip.io.sinks, aip.backends.torch_backend, aip.backends.onnx_backend, aip.backends.coreml_backend; print(sorted(m for m in ('torch', 'ultralytics', 'cv2', 'onnxruntime') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
