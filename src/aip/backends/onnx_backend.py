"""``onnx``: the YOLO network on ONNX Runtime.

Options (all optional):

- ``model``: an ``.onnx`` file (used as is), or a ``.pt`` / ``.yaml`` that
  :func:`aip.vision.models.export` turns into one (cached); default ``yolo11n.yaml``
  with seeded random weights. ``seed``: its seed.
- ``imgsz``: network input ``(height, width)`` or one int. For an ``.onnx``
  it defaults to the file's own fixed shape and must match it; else 640.
- ``half``: export with float16 weights (inputs and outputs stay float32).
- ``provider``: ``cpu`` (the default), ``cuda`` or ``coreml``. An ``onnx``
  worker is a CPU worker unless told otherwise: it pins ONNX Runtime's
  ``CPUExecutionProvider``, even where the CUDA or CoreML provider is
  present, because ``aip run`` gives the accelerators workers of their own
  (``cuda``, ``coreml``) and a CPU worker that quietly took the GPU or the
  Neural Engine would compete with them. ``cuda`` and ``coreml`` (on a
  Mac, the second road to the Neural Engine besides the ``coreml`` backend)
  put the model there, with the CPU for the operators they lack; if ONNX
  Runtime cannot start the provider asked for, loading fails, never falls
  back to the CPU silently.
- ``device``: CUDA device index for the CUDA provider, default 0.
- ``threads``: intra-op threads of this session; default ONNX Runtime's (every core).
- ``spin``: let idle intra-op threads spin-wait for work (ONNX Runtime's
  default, True). Turn it off when other workers share the cores: yolo11n
  480x640 with 2 threads on a 2-vCPU EPYC, beside a 1-thread torch worker,
  went from 25-26 to 36-38 FPS without spinning (torch's 12-14 FPS unhurt);
  alone it costs 13-15 % (58-60 -> 49-52 FPS).
"""

from __future__ import annotations


import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aip.backends.base import BackendSpec, BackendUnavailable, ExportedModelBackend
from aip.vision.models import DEFAULT_MODEL, artifact_path, parse_imgsz

WARMUP_RUNS = 3  # the first runs allocate the arena and pick kernels

#: ``provider`` option -> ONNX Runtime execution provider
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}

_INPUT_DTYPES: dict[str, np.dtype[Any]] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
}


class OnnxBackend(ExportedModelBackend):
    """YOLO on ONNX Runtime, one session per worker."""

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        options = spec.options
        self._requested_hw = None if options.get("imgsz") is None else parse_imgsz(options["imgsz"])
        self._input_hw = self._requested_hw or (640, 640)
        # A worker that batches needs a model with a free batch dimension.
        self._dynamic_batch = int(options.get("batch", 1)) > 1
        self._input_dtype: np.dtype[Any] = np.dtype(np.float32)
        self._session: Any = None
        self._input_name = ""
        self._provider = "not loaded"

    @property
    def device(self) -> str:
        return self._provider

    @property
    def input_hw(self) -> tuple[int, int]:
        return self._input_hw

    @property
    def input_dtype(self) -> np.dtype[Any]:
        return self._input_dtype

    @classmethod
    def check_available(cls, spec: BackendSpec) -> None:
        if importlib.util.find_spec("onnxruntime") is None:
            raise BackendUnavailable("the onnx backend needs onnxruntime: pip install 'aip[onnx]'")
        options = spec.options
        parse_imgsz(options.get("imgsz"))
        model = Path(str(options.get("model", DEFAULT_MODEL))).expanduser()
        if model.suffix.lower() == ".onnx":
            if not model.is_file():
                raise FileNotFoundError(f"onnx model {str(model)!r} not found")
        else:
            for module, extra in (("ultralytics", "ultralytics"), ("onnx", "onnx")):
                if importlib.util.find_spec(module) is None:
                    raise BackendUnavailable(
                        f"the onnx backend was given {model.name}, and exporting it to .onnx needs {module}: "
                        f"pip install 'aip[{extra}]', or pass an exported .onnx"
                    )
        provider = _provider_name(options)
        if provider != "CPUExecutionProvider":
            import onnxruntime

            available = onnxruntime.get_available_providers()
            if provider not in available:
                raise BackendUnavailable(
                    f"onnx:provider={options['provider']} needs ONNX Runtime's {provider}, which this "
                    f"onnxruntime lacks (it has {', '.join(available)})"
                )

    def _artifact(self) -> Path:
        options = self.spec.options
        return artifact_path(
            options.get("model", DEFAULT_MODEL),
            "onnx",
            self._input_hw,
            half=bool(options.get("half", False)),
            seed=int(options.get("seed", 0)),
            dynamic_batch=self._dynamic_batch,
        )

    def load(self) -> None:
        import onnxruntime

        options = self.spec.options
        path = self._artifact()
        session_options = onnxruntime.SessionOptions()
        session_options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # One frame at a time through a chain of layers: parallelism lives
        # inside each operator (intra-op), none between operators.
        session_options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        session_options.inter_op_num_threads = 1
        if options.get("threads"):
            session_options.intra_op_num_threads = int(options["threads"])
        if not options.get("spin", True):
            session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(
            str(path), sess_options=session_options, providers=self._providers(onnxruntime)
        )
        self._provider = self._session.get_providers()[0]
        asked = _provider_name(options)
        if self._provider != asked:  # ONNX Runtime falls back to the CPU with only a log line
            raise RuntimeError(f"ONNX Runtime could not start {asked} (it ran on {self._provider}); "
                               "check its log above for why")
        model_input = self._session.get_inputs()[0]
        shape = tuple(model_input.shape[2:])
        if not all(isinstance(side, int) for side in shape):
            if self._requested_hw is None:
                raise ValueError(f"{path} has a dynamic input shape {model_input.shape}; pass imgsz, "
                                 "or export it with a fixed imgsz")
            shape = self._requested_hw  # a dynamic export (batching): fed at imgsz
        batch_dim = model_input.shape[0]
        if self._dynamic_batch and isinstance(batch_dim, int) and batch_dim != int(options["batch"]):
            raise ValueError(f"{path} takes batches of {batch_dim}, not {options['batch']}: export it "
                             "with a dynamic batch (let aip export it) or use batch=1")
        if self._requested_hw is not None and shape != self._requested_hw:
            raise ValueError(f"{path} takes {shape[0]}x{shape[1]} inputs, not the imgsz {self._requested_hw} asked for")
        self._input_hw = (int(shape[0]), int(shape[1]))
        self._input_dtype = _INPUT_DTYPES[model_input.type]
        self._input_name = model_input.name
        zeros = np.zeros((1, 3, *self._input_hw), self._input_dtype)
        for _ in range(WARMUP_RUNS):
            self.infer(zeros)

    def _providers(self, onnxruntime: Any) -> list[Any]:
        """The provider asked for, with its options, then the CPU for what it lacks."""
        name = _provider_name(self.spec.options)
        if name == "CPUExecutionProvider":
            return [name]
        provider_options = {
            "CUDAExecutionProvider": {"device_id": int(self.spec.options.get("device", 0))},
            # ML Program models run on the Neural Engine; the older NeuralNetwork format often falls back to the CPU.
            "CoreMLExecutionProvider": {"ModelFormat": "MLProgram", "MLComputeUnits": "CPUAndNeuralEngine"},
        }
        return [(name, provider_options[name]), "CPUExecutionProvider"]

    def infer(self, batch: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """(n, 3, H, W) array of ``input_dtype`` -> raw head output (n, 4 + nc, N) float32."""
        if self._session is None:
            raise RuntimeError("call load() before infer()")
        output: npt.NDArray[Any] = self._session.run(None, {self._input_name: batch})[0]
        return output.astype(np.float32, copy=False)

    def close(self) -> None:
        self._session = None


def _provider_name(options: dict[str, Any]) -> str:
    """The ONNX Runtime provider of the ``provider`` option; ValueError for an unknown one."""
    if "providers" in options:
        raise ValueError("the onnx option 'providers' is gone: use provider=cpu|cuda|coreml")
    provider = str(options.get("provider", "cpu")).lower()
    if provider not in PROVIDERS:
        raise ValueError(f"onnx provider must be one of {', '.join(PROVIDERS)}, got {options['provider']!r}")
    return PROVIDERS[provider]


BACKEND = OnnxBackend
