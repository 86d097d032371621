"""``coreml``: the YOLO network on Core ML, scheduled on the Apple Neural Engine.

macOS only. Runs an ``.mlpackage`` made by ultralytics' exporter with
coremltools ``MLModel(path, compute_units=ComputeUnit.CPU_AND_NE)``: Core ML
puts every layer the Neural Engine supports there and the rest on the CPU.

Options (all optional):

- ``model``: an ``.mlpackage`` (used as is), or a ``.pt`` / ``.yaml`` that
  :func:`aip.models.export` converts (cached); default ``yolo11n.yaml`` with
  seeded random weights. ``seed``: its seed.
- ``imgsz``: network input ``(height, width)`` or one int; default 640. Must
  match a given ``.mlpackage``.
- ``half``: export with float16 weights (the Neural Engine computes in
  float16 either way).
- ``compute_units``: a ``coremltools.ComputeUnit`` name, default ``CPU_AND_NE``.

Conversion is the fragile part: coremltools 9.0 failed to convert YOLO11
traced by torch 2.14 ("converting 'int' op"); export on a Mac with a torch
version coremltools supports. The second road to the Neural Engine is the
``onnx`` backend, whose ONNX Runtime CoreML execution provider needs no
conversion by coremltools.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aip.backends.base import Backend, BackendSpec, BackendUnavailable
from aip.models import DEFAULT_MODEL, artifact_path, parse_imgsz

WARMUP_RUNS = 3  # the first predictions compile and load the model onto the Neural Engine


class CoreMLBackend(Backend):
    """YOLO on Core ML (Neural Engine + CPU)."""

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        self._imgsz = parse_imgsz(spec.options.get("imgsz"))
        self._compute_units = str(spec.options.get("compute_units", "CPU_AND_NE"))
        self._model: Any = None
        self._input_name = ""
        self._output_name = ""
        self._image_input = True

    @property
    def device(self) -> str:
        return "ANE" if self._compute_units == "CPU_AND_NE" else f"coreml:{self._compute_units}"

    @property
    def input_hw(self) -> tuple[int, int]:
        return self._imgsz

    @classmethod
    def check_available(cls, spec: BackendSpec) -> None:
        if sys.platform != "darwin":
            raise BackendUnavailable(
                f"coreml (Apple Neural Engine) needs macOS with coremltools; this machine runs {sys.platform}. "
                "On Linux use onnx or cpu."
            )
        if importlib.util.find_spec("coremltools") is None:
            raise BackendUnavailable("coreml (Apple Neural Engine) needs coremltools: pip install 'aip[coreml]'")
        parse_imgsz(spec.options.get("imgsz"))
        model = Path(str(spec.options.get("model", DEFAULT_MODEL))).expanduser()
        if model.suffix.lower() == ".mlpackage" and not model.exists():
            raise FileNotFoundError(f"coreml model {str(model)!r} not found")
        if model.suffix.lower() != ".mlpackage" and importlib.util.find_spec("ultralytics") is None:
            raise BackendUnavailable(
                f"the coreml backend was given {model.name}, and converting it needs ultralytics: "
                "pip install 'aip[ultralytics]', or pass an exported .mlpackage"
            )

    def load(self) -> None:
        import coremltools

        options = self.spec.options
        path = artifact_path(
            options.get("model", DEFAULT_MODEL),
            "coreml",
            self._imgsz,
            half=bool(options.get("half", False)),
            seed=int(options.get("seed", 0)),
        )
        compute_units = coremltools.ComputeUnit[self._compute_units]
        self._model = coremltools.models.MLModel(str(path), compute_units=compute_units)
        description = self._model.get_spec().description
        model_input = description.input[0]
        self._input_name = model_input.name
        self._output_name = description.output[0].name
        # ultralytics exports fixed-size models with an RGB image input that
        # scales by 1/255 itself; dynamic ones take a float array.
        self._image_input = model_input.type.HasField("imageType")
        if self._image_input:
            shape = (model_input.type.imageType.height, model_input.type.imageType.width)
            if shape != self._imgsz:
                raise ValueError(f"{path} takes {shape[0]}x{shape[1]} images, not the imgsz {self._imgsz} asked for")
        zeros = np.zeros((1, 3, *self._imgsz), np.float32)
        for _ in range(WARMUP_RUNS):
            self.infer(zeros)

    def infer(self, batch: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """(1, 3, H, W) float32 RGB in [0, 1] -> raw head output (1, 4 + nc, N) float32."""
        if self._model is None:
            raise RuntimeError("call load() before infer()")
        if self._image_input:
            from PIL import Image

            # The preprocessed values are exactly byte / 255, so this recovers
            # the letterboxed bytes without loss; Core ML rescales them itself.
            rgb = np.rint(batch[0].transpose(1, 2, 0) * 255).astype(np.uint8)
            feed: Any = Image.fromarray(rgb)
        else:
            feed = batch
        output = self._model.predict({self._input_name: feed})[self._output_name]
        return np.asarray(output, dtype=np.float32)

    def close(self) -> None:
        self._model = None


BACKEND = CoreMLBackend
