"""``cpu``, ``cuda``, ``mps``: the YOLO network in PyTorch, as ultralytics' predictor runs it.

Options (all optional):

- ``model``: a ``.pt`` or ``.yaml`` (see :func:`aip.vision.models.resolve_model`);
  default ``yolo11n.yaml`` with seeded random weights. ``seed``: its seed.
- ``device``: CUDA device index (``cuda`` only), default 0.
- ``threads``: torch intra-op threads of this worker (``torch.set_num_threads``,
  set in ``load``, so only in the worker process); default torch's own.
- ``imgsz``: network input ``(height, width)`` or one int; default 640.

Options of the ``cuda`` backend only (see :class:`CudaTuning`), each off by
default except ``cudnn_benchmark``, and each written so that
``python -m aip.bench yolo --device cuda`` can compare it with the plain
path (``cuda:half=1,pinned=1,stream=1,channels_last=1,graphs=1``):

- ``half``: float16 weights and inputs (half the bytes over PCIe, tensor cores);
- ``pinned``: page-locked host buffers and non-blocking copies both ways;
- ``stream``: the worker runs on a CUDA stream of its own;
- ``channels_last``: NHWC weights and input, the layout cuDNN's fp16 kernels prefer;
- ``graphs``: the forward pass captured once as a CUDA graph for the fixed
  input shape and replayed per frame (one launch instead of hundreds);
- ``cudnn_benchmark``: cuDNN autotuning for the fixed shape (default on).

None of these has been measured on a GPU yet: the benchmark decides which stay.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from aip.backends.base import Backend, BackendSpec, BackendUnavailable
from aip.vision.models import DEFAULT_MODEL, load_torch_model, parse_imgsz, resolve_model

if TYPE_CHECKING:
    import torch

WARMUP_RUNS = 3  # first calls pay for allocator growth, cuDNN autotuning, MPS graph compilation

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _flag(name: str, value: Any) -> bool:
    """An on/off option as ``aip run`` and specs write it: 1/0, true/false, yes/no, on/off."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"option {name}={value!r}: write 1 or 0 (true/false, yes/no, on/off)")


@dataclasses.dataclass(frozen=True)
class CudaTuning:
    """How the ``cuda`` backend moves a frame and runs the network; see the module's options.

    Each field is one option of the spec, so a benchmark can switch it alone.
    The defaults are the plain path (what ``cuda`` did before these existed);
    on ``cpu`` and ``mps`` every field keeps its default and changes nothing.
    """

    half: bool = False
    pinned: bool = False
    stream: bool = False
    channels_last: bool = False
    graphs: bool = False
    # The input shape never changes within a worker, so autotuning once pays
    # for itself within a few frames; off gives cuDNN's heuristic choice.
    cudnn_benchmark: bool = True

    @classmethod
    def from_options(cls, backend: str, options: Mapping[str, Any]) -> CudaTuning:
        """The tuning ``options`` ask for; ValueError for a malformed value, or
        for a cuda-only option switched on for another backend."""
        values = {field.name: _flag(field.name, options[field.name])
                  for field in dataclasses.fields(cls) if field.name in options}
        tuning = cls(**values)
        if backend != "cuda":
            for field in dataclasses.fields(cls):
                if getattr(tuning, field.name) and not field.default:
                    what = "half (fp16)" if field.name == "half" else field.name
                    raise ValueError(f"{what} runs on the cuda backend only, not on {backend}")
        return tuning

    @property
    def staged(self) -> bool:
        """Does the tuned path (static device buffers, :class:`_CudaRunner`) run?"""
        return self.pinned or self.stream or self.channels_last or self.graphs

    def label(self) -> str:
        """The options that differ from the defaults, as a spec writes them (``half=1,graphs=1``)."""
        return ",".join(f"{field.name}={int(getattr(self, field.name))}"
                        for field in dataclasses.fields(self)
                        if getattr(self, field.name) != field.default)


class TorchBackend(Backend):
    """YOLO on PyTorch: one class for the ``cpu``, ``cuda`` and ``mps`` backends."""

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        options = spec.options
        self._imgsz = parse_imgsz(options.get("imgsz"))
        self._tuning = CudaTuning.from_options(spec.name, options)
        self._half = self._tuning.half
        self._device = {"cuda": f"cuda:{int(options.get('device', 0))}"}.get(spec.name, spec.name)
        self._model: torch.nn.Module | None = None
        self._runner: _CudaRunner | None = None

    @property
    def device(self) -> str:
        return self._device

    @property
    def tuning(self) -> CudaTuning:
        return self._tuning

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
        CudaTuning.from_options(spec.name, spec.options)
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
        cuda = self._device.startswith("cuda")
        if cuda:
            torch.backends.cudnn.benchmark = self._tuning.cudnn_benchmark
            torch.cuda.set_device(self._device)
        source = resolve_model(options.get("model", DEFAULT_MODEL), seed=int(options.get("seed", 0)))
        model = load_torch_model(source, self._device)
        if self._half:
            model = model.half()
        if self._tuning.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self._model = model
        if cuda and self._tuning.staged:
            self._runner = _CudaRunner(model, self._device, (1, 3, *self._imgsz), self._half, self._tuning)
        zeros = np.zeros((1, 3, *self._imgsz), self.input_dtype)
        for _ in range(WARMUP_RUNS):
            self.infer(zeros)
        if self._runner is not None and self._tuning.graphs:
            self._runner.capture()  # after the warm-up: cuDNN has chosen its kernels

    def infer(self, batch: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """(1, 3, H, W) array of ``input_dtype`` -> raw head output (1, 4 + nc, N) float32."""
        if self._model is None:
            raise RuntimeError("call load() before infer()")
        if self._runner is not None and self._runner.fits(batch):
            return self._runner.infer(batch)
        return self._infer_plain(batch)

    def _infer_plain(self, batch: npt.NDArray[Any]) -> npt.NDArray[Any]:
        import torch

        model = self._model
        if model is None:
            raise RuntimeError("call load() before infer()")
        # Shares the array's memory on the CPU; one copy to an accelerator.
        tensor = torch.from_numpy(batch).to(self._device)
        if self._tuning.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            output = model(tensor)
        result: npt.NDArray[Any] = _head(output).float().cpu().numpy()
        return result

    def close(self) -> None:
        self._runner = None
        self._model = None


def _head(output: Any) -> Any:
    """The head's (1, 4 + nc, N) tensor of what the network returned."""
    return output[0] if isinstance(output, (tuple, list)) else output


class _CudaRunner:
    """The tuned CUDA path of one worker: buffers allocated once, its own stream, a CUDA graph.

    Per frame: one host copy of the preprocessed tensor into a (page-locked)
    staging buffer, one host-to-device copy into a static device buffer, the
    network (replayed as a graph when captured), one device-to-host copy of
    the head output, one synchronisation of the stream. The copies are
    non-blocking from page-locked memory; the stream is synchronised before
    ``infer`` returns, so the staging buffers are free again for the next
    frame. The output is copied out of the staging buffer (about 2 MB for
    480x640): a caller may keep it past the next call.

    A separate stream matters little with one process per worker (each
    process has its own CUDA context; contexts time-slice the GPU unless
    NVIDIA MPS runs); it is here so that the benchmark can show it.
    """

    def __init__(self, model: Any, device: str, shape: tuple[int, ...], half: bool,
                 tuning: CudaTuning) -> None:
        import torch

        self._torch = torch
        self._model = model
        self._tuning = tuning
        self._shape = shape
        self._dtype = np.dtype(np.float16 if half else np.float32)
        torch_dtype = torch.float16 if half else torch.float32
        self._stream = torch.cuda.Stream(device) if tuning.stream else torch.cuda.current_stream(device)
        self._host_in = torch.empty(shape, dtype=torch_dtype, pin_memory=tuning.pinned)
        self._host_in_array: npt.NDArray[Any] = self._host_in.numpy()
        self._device_in = torch.empty(shape, dtype=torch_dtype, device=device)
        # channels_last: the layout change runs on the GPU (inside the graph
        # when captured), not as a strided host-to-device copy.
        self._device_nhwc = (torch.empty(shape, dtype=torch_dtype, device=device)
                             .contiguous(memory_format=torch.channels_last)
                             if tuning.channels_last else None)
        self._graph: Any = None
        self._device_out: Any = None  # the graph's output tensor, once captured
        self._host_out: Any = None  # allocated at the first frame: the head's shape is known then

    def fits(self, batch: npt.NDArray[Any]) -> bool:
        """The static buffers' shape and dtype: anything else takes the plain path."""
        return tuple(batch.shape) == self._shape and batch.dtype == self._dtype

    def _forward(self) -> Any:
        network_input = self._device_in
        if self._device_nhwc is not None:
            self._device_nhwc.copy_(self._device_in)
            network_input = self._device_nhwc
        return _head(self._model(network_input)).float()

    def capture(self) -> None:
        """Record the forward pass as a CUDA graph on the static buffers.

        Called after the warm-up, so cuDNN's autotuning and the allocator's
        growth happened outside the capture (the documented requirement).
        """
        torch = self._torch
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph, stream=self._side_stream()):
            self._device_out = self._forward()
        torch.cuda.synchronize()
        self._graph = graph

    def _side_stream(self) -> Any:
        # Capture must not run on the legacy default stream.
        return self._stream if self._tuning.stream else self._torch.cuda.Stream(self._stream.device)

    def infer(self, batch: npt.NDArray[Any]) -> npt.NDArray[Any]:
        torch = self._torch
        np.copyto(self._host_in_array, batch)
        with torch.cuda.stream(self._stream), torch.no_grad():
            self._device_in.copy_(self._host_in, non_blocking=self._tuning.pinned)
            if self._graph is not None:
                self._graph.replay()
                output = self._device_out
            else:
                output = self._forward()
            if self._host_out is None:
                self._host_out = torch.empty(output.shape, dtype=torch.float32,
                                             pin_memory=self._tuning.pinned)
            self._host_out.copy_(output, non_blocking=self._tuning.pinned)
        self._stream.synchronize()
        result: npt.NDArray[Any] = self._host_out.numpy().copy()
        return result


def cuda_device_count() -> int:
    """NVIDIA GPUs torch sees here (CUDA_VISIBLE_DEVICES applies); 0 without a CUDA torch."""
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


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
