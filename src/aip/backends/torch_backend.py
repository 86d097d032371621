"""``cpu``, ``cuda``, ``mps``: the YOLO network in PyTorch, as ultralytics' predictor runs it.

Options (all optional):

- ``model``: a ``.pt`` or ``.yaml`` (see :func:`aip.models.resolve_model`);
  default ``yolo11n.yaml`` with seeded random weights. ``seed``: its seed.
- ``device``: CUDA device index (``cuda`` only), default 0.
- ``threads``: torch intra-op threads of this worker (``torch.set_num_threads``,
  set in ``load``, so only in the worker process); default torch's own.
- ``half``: float16 weights and inputs (``cuda`` only).
- ``imgsz``: network input ``(height, width)`` or one int; default 640.
"""

from __future__ import annotations

import dataclasses

import importlib.util
import sys
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from aip.backends.base import Backend, BackendSpec, BackendUnavailable
from aip.models import DEFAULT_MODEL, load_torch_model, parse_imgsz, resolve_model

if TYPE_CHECKING:
    import torch

WARMUP_RUNS = 3  # first calls pay for allocator growth, cuDNN autotuning, MPS graph compilation


class TorchBackend(Backend):
    """YOLO on PyTorch: one class for the ``cpu``, ``cuda`` and ``mps`` backends."""

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        options = spec.options
        self._imgsz = parse_imgsz(options.get("imgsz"))
        self._half = bool(options.get("half", False))
        self._device = {"cuda": f"cuda:{int(options.get('device', 0))}"}.get(spec.name, spec.name)
        self._model: torch.nn.Module | None = None

    @property
    def device(self) -> str:
        return self._device

    @property
    def input_hw(self) -> tuple[int, int]:
        return self._imgsz

    @property
    def input_dtype(self) -> np.dtype[Any]:
        return np.dtype(np.float16 if self._half else np.float32)

    @classmethod
    def check_available(cls, spec: BackendSpec) -> None:
        if spec.name not in ("cpu", "cuda", "mps"):
            raise ValueError(f"TorchBackend runs cpu, cuda or mps, not {spec.name!r}")
        if spec.options.get("half") and spec.name != "cuda":
            raise ValueError(f"half (fp16) runs on the cuda backend only, not on {spec.name}")
        parse_imgsz(spec.options.get("imgsz"))
        for module, extra in (("torch", "torch"), ("ultralytics", "ultralytics")):
            if importlib.util.find_spec(module) is None:
                raise BackendUnavailable(f"the {spec.name} backend needs {module}: pip install 'aip[{extra}]'")
        if spec.name == "cuda":
            _check_cuda(int(spec.options.get("device", 0)))
        elif spec.name == "mps":
            _check_mps()

    @classmethod
    def prepare(cls, spec: BackendSpec) -> BackendSpec:
        """Resolve (and for a .yaml, build and save) the model once, in the manager."""
        source = resolve_model(spec.options.get("model", DEFAULT_MODEL), seed=int(spec.options.get("seed", 0)))
        return dataclasses.replace(spec, options={**spec.options, "model": str(source.path)})

    def load(self) -> None:
        import torch

        options = self.spec.options
        if options.get("threads"):
            torch.set_num_threads(int(options["threads"]))
        if self._device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True  # fixed input shape: autotuned kernels pay off
        source = resolve_model(options.get("model", DEFAULT_MODEL), seed=int(options.get("seed", 0)))
        model = load_torch_model(source, self._device)
        self._model = model.half() if self._half else model
        zeros = np.zeros((1, 3, *self._imgsz), self.input_dtype)
        for _ in range(WARMUP_RUNS):
            self.infer(zeros)

    def infer(self, batch: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """(1, 3, H, W) array of ``input_dtype`` -> raw head output (1, 4 + nc, N) float32."""
        import torch

        if self._model is None:
            raise RuntimeError("call load() before infer()")
        # Shares the array's memory on the CPU; one copy to an accelerator.
        tensor = torch.from_numpy(batch).to(self._device)
        with torch.inference_mode():
            output = self._model(tensor)
        if isinstance(output, (tuple, list)):  # (head output, feature maps)
            output = output[0]
        result: npt.NDArray[Any] = output.float().cpu().numpy()
        return result

    def close(self) -> None:
        self._model = None


def _check_cuda(index: int) -> None:
    import torch

    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise BackendUnavailable(
            "the cuda backend needs an NVIDIA GPU with a CUDA build of torch; this machine has "
            f"torch {torch.__version__} ({build}) and no usable NVIDIA GPU. Use the cpu or onnx backend here."
        )
    count = torch.cuda.device_count()
    if not 0 <= index < count:
        raise BackendUnavailable(f"cuda device {index} does not exist: this machine has {count} (0..{count - 1})")


def _check_mps() -> None:
    if sys.platform != "darwin":
        raise BackendUnavailable(
            f"the mps backend (Apple GPU) needs macOS; this machine runs {sys.platform}. Use cpu, onnx or cuda here."
        )
    import torch

    if not torch.backends.mps.is_available():
        reason = "this torch build has no MPS" if not torch.backends.mps.is_built() else "macOS 12.3+ is needed"
        raise BackendUnavailable(f"the mps backend is not available here: {reason}")


BACKEND = TorchBackend
