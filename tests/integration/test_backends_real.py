"""The real backends against ultralytics' own predictor, on a video the tests make.

Seeded yolo11n (no weights can be downloaded) scores every box below ~2e-4,
so detections are compared at conf=1e-4, where there are plenty.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aip.backends.base import Backend, BackendSpec, BackendUnavailable, check_available, create
from aip.vision.models import ModelSource, RandomWeightsWarning, export
from aip.vision.postprocess import postprocess
from aip.vision.preprocess import Preprocessor

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")  # ultralytics' predictor NMS, which the comparison relies on
pytest.importorskip("ultralytics")
pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")

from detection_checks import assert_same_detections

CONF = 1e-4
IOU = 0.7
RECT_HW = (480, 640)  # ultralytics letterboxes a 640x480 frame for a .pt at imgsz 640 to this
SQUARE_HW = (640, 640)


def loaded(spec: BackendSpec, random_weights: bool = True) -> Backend:
    check_available(spec)
    backend = create(spec)
    if random_weights:
        with pytest.warns(RandomWeightsWarning):
            backend.load()
    else:
        backend.load()
    return backend


@pytest.fixture(scope="module")
def cpu_backend(seeded: ModelSource) -> Any:
    backend = loaded(BackendSpec("cpu", {"model": str(seeded.path), "imgsz": RECT_HW}))
    yield backend
    backend.close()


@pytest.fixture(scope="module", params=[RECT_HW, SQUARE_HW], ids=lambda hw: f"{hw[0]}x{hw[1]}")
def onnx_backend(request: pytest.FixtureRequest, seeded: ModelSource) -> Any:
    """480x640 exported from the .pt inside load(); 640x640 loaded from an exported .onnx."""
    hw = request.param
    if hw == RECT_HW:
        backend = loaded(BackendSpec("onnx", {"model": str(seeded.path), "imgsz": hw}))
    else:
        backend = loaded(BackendSpec("onnx", {"model": str(export(seeded, "onnx", hw))}), random_weights=False)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def ultralytics_pt(seeded: ModelSource) -> Any:
    from ultralytics import YOLO

    return YOLO(str(seeded.path))


@pytest.fixture(scope="module")
def ultralytics_network(ultralytics_pt: Any, frames: list[np.ndarray]) -> Any:
    """The network ultralytics' predictor runs for the .pt (set up by a first predict)."""
    ultralytics_pt.predict(frames[0], imgsz=640, verbose=False)
    return ultralytics_pt.predictor.model


def ultralytics_head(network: Any, tensor: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return head(network(torch.from_numpy(tensor.copy())))


def head(output: Any) -> np.ndarray:
    output = output[0] if isinstance(output, (list, tuple)) else output
    return np.asarray(output.numpy() if hasattr(output, "numpy") else output, dtype=np.float32)


def assert_same_head(mine: np.ndarray, expected: np.ndarray, rtol: float) -> None:
    """Boxes within ``rtol`` of the input size, class scores within ``rtol`` of the largest score."""
    assert mine.shape == expected.shape and mine.dtype == np.float32
    box_scale = 640.0
    score_scale = float(np.abs(expected[0, 4:]).max())
    np.testing.assert_allclose(mine[0, :4], expected[0, :4], rtol=rtol, atol=rtol * box_scale)
    np.testing.assert_allclose(mine[0, 4:], expected[0, 4:], rtol=rtol, atol=rtol * score_scale)


def detect(backend: Backend, frame: np.ndarray) -> np.ndarray:
    pre = Preprocessor(frame.shape, backend.input_hw, backend.input_dtype)
    return postprocess(backend.infer(pre(frame)), frame.shape[:2], pre.params, CONF, IOU)


def ultralytics_detections(model: Any, frame: np.ndarray, imgsz: Any) -> np.ndarray:
    boxes: np.ndarray = model.predict(frame, conf=CONF, iou=IOU, imgsz=imgsz, verbose=False)[0].boxes.data.numpy()
    return boxes


# --- raw outputs ------------------------------------------------------------------------


def test_cpu_raw_output_equals_ultralytics(
    cpu_backend: Backend, ultralytics_network: Any, frames: list[np.ndarray]
) -> None:
    tensor = Preprocessor(frames[0].shape, RECT_HW)(frames[0])
    mine = cpu_backend.infer(tensor)
    assert mine.shape == (1, 84, 6300)
    assert_same_head(mine, ultralytics_head(ultralytics_network, tensor), rtol=1e-5)


def test_onnx_raw_output_equals_ultralytics(
    onnx_backend: Backend, seeded: ModelSource, ultralytics_network: Any, frames: list[np.ndarray]
) -> None:
    """Against the .pt network (another runtime: 1e-3) and ultralytics running the same .onnx (1e-5)."""
    from ultralytics import YOLO

    hw = onnx_backend.input_hw
    tensor = Preprocessor(frames[1].shape, hw)(frames[1])
    mine = onnx_backend.infer(tensor)
    assert_same_head(mine, ultralytics_head(ultralytics_network, tensor), rtol=1e-3)
    onnx_model = YOLO(str(export(seeded, "onnx", hw)), task="detect")
    onnx_model.predict(frames[0], imgsz=hw, verbose=False)
    assert_same_head(mine, ultralytics_head(onnx_model.predictor.model, tensor), rtol=1e-5)


# --- detections on every frame of the video -------------------------------------------


def test_cpu_detections_equal_ultralytics_predict(
    cpu_backend: Backend, ultralytics_pt: Any, frames: list[np.ndarray]
) -> None:
    for frame in frames:
        assert_same_detections(detect(cpu_backend, frame), ultralytics_detections(ultralytics_pt, frame, 640))


def test_onnx_detections_equal_ultralytics_predict(
    onnx_backend: Backend, seeded: ModelSource, frames: list[np.ndarray]
) -> None:
    from ultralytics import YOLO

    hw = onnx_backend.input_hw
    reference = YOLO(str(export(seeded, "onnx", hw)), task="detect")
    for frame in frames:
        assert_same_detections(detect(onnx_backend, frame), ultralytics_detections(reference, frame, hw))


# --- what each backend says about itself ------------------------------------------------


def test_backend_descriptions(cpu_backend: Backend, onnx_backend: Backend) -> None:
    assert (cpu_backend.device, cpu_backend.input_hw, cpu_backend.input_dtype) == ("cpu", RECT_HW, np.float32)
    assert onnx_backend.device == "CPUExecutionProvider" and onnx_backend.input_dtype == np.float32


def test_onnx_backend_adopts_the_files_input_size_and_refuses_another(seeded: ModelSource) -> None:
    path = str(export(seeded, "onnx", RECT_HW))
    assert loaded(BackendSpec("onnx", {"model": path}), random_weights=False).input_hw == RECT_HW
    with pytest.raises(ValueError, match=r"takes 480x640 inputs, not the imgsz \(640, 640\)"):
        create(BackendSpec("onnx", {"model": path, "imgsz": 640})).load()


def test_onnx_session_options_keep_the_output(seeded: ModelSource, frames: list[np.ndarray]) -> None:
    path = str(export(seeded, "onnx", RECT_HW))
    default = loaded(BackendSpec("onnx", {"model": path}), random_weights=False)
    tuned = loaded(BackendSpec("onnx", {"model": path, "threads": 1, "spin": False}), random_weights=False)
    tensor = Preprocessor(frames[0].shape, RECT_HW)(frames[0])
    assert_same_head(tuned.infer(tensor), default.infer(tensor), rtol=1e-5)


def test_infer_before_load_is_refused(seeded: ModelSource) -> None:
    for name in ("cpu", "onnx"):
        with pytest.raises(RuntimeError, match="load"):
            create(BackendSpec(name, {"model": str(seeded.path)})).infer(np.zeros((1, 3, 640, 640), np.float32))


@pytest.mark.skipif(sys.platform == "darwin", reason="the Apple backends may run on a Mac")
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("mps", r"mps backend \(Apple GPU\) needs macOS"),
        ("coreml", r"coreml \(Apple Neural Engine\) needs macOS with coremltools; .* On Linux use onnx or cpu"),
    ],
)
def test_apple_backends_say_they_need_macos(name: str, message: str) -> None:
    with pytest.raises(BackendUnavailable, match=message):
        check_available(BackendSpec(name))


def test_cuda_backend_is_available_exactly_where_torch_sees_a_gpu() -> None:
    """Runs everywhere: where torch sees a GPU the backend is available (tests/integration/test_cuda.py
    then runs it); elsewhere it says what it needs."""
    if torch.cuda.is_available():
        check_available(BackendSpec("cuda"))
        with pytest.raises(BackendUnavailable, match=r"cuda device 99 does not exist: this machine has \d"):
            check_available(BackendSpec("cuda", {"device": 99}))
    else:
        with pytest.raises(
            BackendUnavailable, match="cuda backend needs an NVIDIA GPU with a CUDA build of torch; this machine has"
        ):
            check_available(BackendSpec("cuda"))


def test_misconfigurations_are_refused_before_any_worker_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="half .* cuda backend only"):
        check_available(BackendSpec("cpu", {"half": True}))
    with pytest.raises(ValueError, match="graphs runs on the cuda backend only, not on cpu"):
        check_available(BackendSpec("cpu", {"graphs": 1}))
    with pytest.raises(ValueError, match=r"option pinned='maybe': write 1 or 0"):
        check_available(BackendSpec("cuda", {"pinned": "maybe"}))
    with pytest.raises(ValueError, match="multiples of 32"):
        check_available(BackendSpec("cpu", {"imgsz": 500}))
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        check_available(BackendSpec("onnx", {"model": str(tmp_path / "missing.onnx")}))
    with pytest.raises(ValueError, match="provider must be one of cpu, cuda, coreml"):
        check_available(BackendSpec("onnx", {"provider": "tpu"}))
    with pytest.raises(ValueError, match="use provider=cpu|cuda|coreml"):
        check_available(BackendSpec("onnx", {"providers": ["CPUExecutionProvider"]}))


def test_threads_option_applies_in_the_worker_process_only(seeded: ModelSource) -> None:
    """Run in a child: setting torch's thread count is process-wide."""
    code = (
        "import warnings, torch; from aip.backends.base import BackendSpec, create; "
        "warnings.simplefilter('ignore'); "
        f"backend = create(BackendSpec('cpu', {{'model': {str(seeded.path)!r}, 'threads': 1, 'imgsz': 320}})); "
        "backend.load(); print('threads', torch.get_num_threads())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split()[-2:] == ["threads", "1"]
