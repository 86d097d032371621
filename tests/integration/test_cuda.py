"""The ``cuda`` backend on a real NVIDIA GPU: it loads, runs, and finds what the ``cpu`` backend finds.

Skipped, with the reason, where torch sees no GPU; never skipped where it
does (see ``tests/cuda_checks.py``). Every tuning option of the backend
(``half``, ``pinned``, ``stream``, ``channels_last``, ``graphs``,
``cudnn_benchmark``) runs the same frames. The seeded yolo11n scores every
box below ~2e-4, so detections are compared at conf=1e-4, where there are
plenty; the GPU's TF32 convolutions and fp16 reorder near-ties, so the
comparison matches boxes by class and IoU instead of row by row.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aip.backends.base import Backend, BackendSpec, check_available, create
from aip.vision.models import ModelSource, RandomWeightsWarning, resolve_model
from cuda_checks import cuda_mark, require
from detection_checks import similar_detections

pytestmark = [cuda_mark()]

CONF = 1e-4
IOU = 0.7
RECT_HW = (480, 640)

# option set -> its id; the last one is everything at once
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "half": {"half": 1},
    "pinned-stream": {"pinned": 1, "stream": 1},
    "channels_last": {"channels_last": 1},
    "graphs": {"graphs": 1},
    "no-cudnn-benchmark": {"cudnn_benchmark": 0},
    "all": {"half": 1, "pinned": 1, "stream": 1, "channels_last": 1, "graphs": 1},
}

# (head box atol in pixels, head score atol as a fraction of the largest score,
#  detections: min matched fraction, min IoU, score rtol). fp32 on a GPU may
# use TF32 convolutions (10-bit mantissa, as PyTorch's default allows), so it
# is looser than CPU-to-CPU; fp16 looser still. Not yet seen on a GPU: the
# failure messages print the measured errors, to tighten these from.
FP32_TOLERANCE = (2.0, 0.05, 0.9, 0.95, 0.05)
FP16_TOLERANCE = (6.0, 0.10, 0.8, 0.9, 0.10)


def tolerance(options: dict[str, Any]) -> tuple[float, float, float, float, float]:
    return FP16_TOLERANCE if options.get("half") else FP32_TOLERANCE


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> ModelSource:
    require("torch", "ultralytics", "cv2")
    with pytest.warns(RandomWeightsWarning):
        return resolve_model("yolo11n.yaml", seed=0, cache_dir=tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    require("cv2")
    from aip.io.samples import VIDEO_FRAMES, make_video
    from aip.io.sources import VideoFileSource

    video = make_video(tmp_path_factory.mktemp("media") / "bus_zidane.mp4")
    with VideoFileSource(video) as source:
        decoded = [frame for frame, _ in source]
    assert len(decoded) == VIDEO_FRAMES
    return decoded


def loaded(spec: BackendSpec) -> Backend:
    check_available(spec)
    backend = create(spec)
    with pytest.warns(RandomWeightsWarning):
        backend.load()
    return backend


@pytest.fixture(scope="module")
def cpu_backend(seeded: ModelSource) -> Iterator[Backend]:
    backend = loaded(BackendSpec("cpu", {"model": str(seeded.path), "imgsz": RECT_HW}))
    yield backend
    backend.close()


@pytest.fixture(scope="module", params=list(VARIANTS), ids=list(VARIANTS))
def cuda_backend(request: pytest.FixtureRequest, seeded: ModelSource) -> Iterator[Backend]:
    backend = loaded(BackendSpec("cuda", {"model": str(seeded.path), "imgsz": RECT_HW,
                                          **VARIANTS[request.param]}))
    yield backend
    backend.close()


def tensor_of(backend: Backend, frame: np.ndarray) -> Any:
    from aip.vision.preprocess import Preprocessor

    return Preprocessor(frame.shape, backend.input_hw, backend.input_dtype)


def detect(backend: Backend, frame: np.ndarray) -> np.ndarray:
    from aip.vision.postprocess import postprocess

    pre = tensor_of(backend, frame)
    return postprocess(backend.infer(pre(frame)), frame.shape[:2], pre.params, CONF, IOU)


def head_errors(mine: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """Largest box error in pixels, largest score error as a fraction of the largest score."""
    box = float(np.abs(mine[0, :4] - expected[0, :4]).max())
    score = float(np.abs(mine[0, 4:] - expected[0, 4:]).max() / np.abs(expected[0, 4:]).max())
    return box, score


def test_cuda_backend_loads_and_runs_one_frame(cuda_backend: Backend, frames: list[np.ndarray]) -> None:
    import torch

    options = cuda_backend.spec.options
    assert cuda_backend.device == "cuda:0" and cuda_backend.input_hw == RECT_HW
    assert cuda_backend.input_dtype == (np.float16 if options.get("half") else np.float32)
    output = cuda_backend.infer(tensor_of(cuda_backend, frames[0])(frames[0]))
    assert output.shape == (1, 84, 6300) and output.dtype == np.float32
    assert np.isfinite(output).all()
    assert torch.cuda.memory_allocated(0) > 0  # the weights live on the GPU


def test_cuda_raw_output_equals_cpu(cuda_backend: Backend, cpu_backend: Backend,
                                    frames: list[np.ndarray]) -> None:
    box_atol, score_atol, *_ = tolerance(cuda_backend.spec.options)
    for frame in frames[:2]:
        expected = cpu_backend.infer(tensor_of(cpu_backend, frame)(frame))
        mine = cuda_backend.infer(tensor_of(cuda_backend, frame)(frame))
        box, score = head_errors(mine, expected)
        assert box <= box_atol and score <= score_atol, (
            f"box error {box:.4f} px (allowed {box_atol}), score error {score:.2%} of the largest "
            f"(allowed {score_atol:.0%})")


def test_cuda_detections_equal_cpu_on_every_frame(cuda_backend: Backend, cpu_backend: Backend,
                                                  frames: list[np.ndarray]) -> None:
    _, _, min_fraction, min_iou, score_rtol = tolerance(cuda_backend.spec.options)
    worst = (1.0, "")
    for frame in frames:
        expected, mine = detect(cpu_backend, frame), detect(cuda_backend, frame)
        assert len(expected) > 10  # the threshold keeps plenty to compare
        worst = min(worst, similar_detections(mine, expected, min_iou=min_iou, score_rtol=score_rtol))
    assert worst[0] >= min_fraction, f"worst frame: {worst[0]:.1%} matched < {min_fraction:.0%}: {worst[1]}"


def test_tuned_path_follows_new_inputs_and_keeps_outputs(seeded: ModelSource,
                                                         frames: list[np.ndarray]) -> None:
    """A replayed graph reads the static input buffer: each frame gives its own output,
    and an output already returned is not overwritten by the next frame."""
    plain = loaded(BackendSpec("cuda", {"model": str(seeded.path), "imgsz": RECT_HW}))
    tuned = loaded(BackendSpec("cuda", {"model": str(seeded.path), "imgsz": RECT_HW,
                                        "graphs": 1, "pinned": 1, "stream": 1}))
    first, second = (tensor_of(plain, f)(f).copy() for f in frames[:2])
    out_first = tuned.infer(first)
    kept = out_first.copy()
    out_second = tuned.infer(second)
    np.testing.assert_array_equal(out_first, kept)
    assert not np.array_equal(out_first, out_second)
    for tensor, output in ((first, out_first), (second, out_second)):
        box, score = head_errors(output, plain.infer(tensor))
        assert box <= 0.5 and score <= 0.01, (box, score)  # same device, same precision
    plain.close()
    tuned.close()


def test_tuned_backend_takes_another_shape_through_the_plain_path(seeded: ModelSource) -> None:
    tuned = loaded(BackendSpec("cuda", {"model": str(seeded.path), "imgsz": RECT_HW, "graphs": 1,
                                        "pinned": 1}))
    output = tuned.infer(np.full((1, 3, 320, 320), 0.5, np.float32))
    assert output.shape == (1, 84, 2100) and np.isfinite(output).all()
    tuned.close()


def test_a_missing_device_index_is_refused(seeded: ModelSource) -> None:
    from aip.backends.base import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="cuda device 99 does not exist"):
        check_available(BackendSpec("cuda", {"model": str(seeded.path), "device": 99}))


def test_cuda_worker_sees_its_device_in_a_child_process(seeded: ModelSource, tmp_path: Path) -> None:
    """Workers are spawned processes: CUDA initialised in the parent must not break them."""
    import subprocess
    import sys

    code = (
        "import warnings; warnings.simplefilter('ignore'); import numpy as np; "
        "from aip.backends.base import BackendSpec, create; "
        f"b = create(BackendSpec('cuda', {{'model': {str(seeded.path)!r}, 'imgsz': 320, 'half': 1}})); "
        "b.load(); print('shape', b.infer(np.zeros((1, 3, 320, 320), np.float16)).shape)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-4:] == ["shape", "(1,", "84,", "2100)"]
