"""``coreml``: the YOLO network on Core ML, scheduled on the Apple Neural Engine.

macOS only. Runs an ``.mlpackage`` with coremltools
``MLModel(path, compute_units=ComputeUnit.CPU_AND_NE)``: Core ML puts every
layer the Neural Engine supports there and the rest on the CPU.

Options (all optional):

- ``model``: an ``.mlpackage`` (used as is), or a ``.pt`` / ``.yaml`` that
  :func:`aip.vision.models.export` converts once, in the manager (cached); default
  ``yolo11n.yaml`` with seeded random weights. ``seed``: its seed.
- ``imgsz``: network input ``(height, width)`` or one int. For an
  ``.mlpackage`` it defaults to the package's own fixed shape and must match
  it; else 640.
- ``half``: float16 compute precision, default True: the Neural Engine
  computes in float16 only, so a float32 program runs on the CPU instead.
- ``compute_units``: a ``coremltools.ComputeUnit`` name, default
  ``CPU_AND_NE``; ``ALL`` lets Core ML use the GPU too (which the ``mps``
  worker already uses), ``CPU_ONLY`` is for comparisons.

The input is aip's own preprocessed tensor. aip's conversion gives the
package a float32 multi-array input (:data:`aip.vision.models.COREML_INPUT`), so
the letterboxed (1, 3, H, W) float32 tensor the worker already wrote goes
to Core ML as it is: no PIL image, no copy. Packages made elsewhere with an
RGB ``ImageType`` input (ultralytics' exporter makes those) still work,
through a PIL image per frame, the slow path.

The second road to the Neural Engine is the ``onnx`` backend with
``provider=coreml`` (ONNX Runtime's CoreML execution provider), which needs
no conversion by coremltools.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aip.backends.base import BackendSpec, BackendUnavailable, ExportedModelBackend
from aip.vision.models import COREML_PRECISION_KEY, DEFAULT_MODEL, artifact_path, parse_imgsz

log = logging.getLogger(__name__)

WARMUP_RUNS = 3  # the first predictions compile and load the model onto the Neural Engine

#: coremltools.ComputeUnit names (checked here without importing coremltools).
COMPUTE_UNITS = ("CPU_AND_NE", "ALL", "CPU_AND_GPU", "CPU_ONLY")

# Core ML multi-array element types aip can feed: both take the float32
# tensor as it is (Core ML casts it for a float16 input; coremltools'
# predict would cast a float16 numpy array to float32 first anyway).
_FLOAT_ARRAY_TYPES = ("FLOAT32", "FLOAT16")


@dataclass(frozen=True)
class ModelIO:
    """What the backend needs from a package's spec: the names, the input's shape and kind.

    Read with :meth:`from_spec` from ``MLModel.get_spec()`` or
    ``coremltools.utils.load_spec(path)`` (which works on Linux too).
    """

    input_name: str
    output_name: str
    input_shape: tuple[int, int, int, int]  # (1, 3, H, W)
    input_type: str  # "FLOAT32" / "FLOAT16" (multi-array) or "IMAGE" (RGB ImageType, scaled by Core ML)

    @property
    def input_hw(self) -> tuple[int, int]:
        return (self.input_shape[2], self.input_shape[3])

    @property
    def image_input(self) -> bool:
        return self.input_type == "IMAGE"

    @classmethod
    def from_spec(cls, spec: Any) -> ModelIO:
        """Raises ValueError for a package that is not one YOLO input and one output of fixed shape."""
        description = spec.description
        if len(description.input) != 1 or not description.output:
            raise ValueError(
                f"expected a YOLO package with one input and an output, got inputs "
                f"{[i.name for i in description.input]} and outputs {[o.name for o in description.output]}"
            )
        model_input = description.input[0]
        kind = model_input.type.WhichOneof("Type")
        if kind == "imageType":
            image = model_input.type.imageType
            if image.colorSpace != type(image).RGB:
                raise ValueError(f"input {model_input.name!r} is an image, but not RGB")
            shape = (1, 3, int(image.height), int(image.width))
            input_type = "IMAGE"
        elif kind == "multiArrayType":
            array = model_input.type.multiArrayType
            input_type = type(array).ArrayDataType.Name(array.dataType)
            shape = tuple(int(side) for side in array.shape)  # type: ignore[assignment]
            if input_type not in _FLOAT_ARRAY_TYPES:
                raise ValueError(f"input {model_input.name!r} is a {input_type} array; aip feeds float32")
        else:
            raise ValueError(f"input {model_input.name!r} is a {kind}, not an image or a multi-array")
        if len(shape) != 4 or shape[:2] != (1, 3) or min(shape[2:]) < 1:
            raise ValueError(
                f"input {model_input.name!r} has shape {shape}; aip needs a fixed (1, 3, H, W): "
                "export with a fixed imgsz"
            )
        return cls(model_input.name, description.output[0].name, shape, input_type)

    def feed(self, batch: npt.NDArray[Any]) -> dict[str, Any]:
        """The ``predict`` input for one preprocessed (1, 3, H, W) RGB tensor in [0, 1].

        A multi-array input gets ``batch`` itself when it is float32 and
        C-contiguous (what aip's preprocessing writes): no copy.
        """
        if batch.shape != self.input_shape:
            raise ValueError(f"the model takes {self.input_shape}, got {batch.shape}")
        if not self.image_input:
            return {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}
        from PIL import Image

        # The preprocessed values are exactly byte / 255, so this recovers
        # the letterboxed bytes without loss; Core ML rescales them itself.
        rgb = np.rint(batch[0].transpose(1, 2, 0) * 255).astype(np.uint8)
        return {self.input_name: Image.fromarray(rgb)}


class CoreMLBackend(ExportedModelBackend):
    """YOLO on Core ML (Neural Engine + CPU)."""

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        options = spec.options
        self._requested_hw = None if options.get("imgsz") is None else parse_imgsz(options["imgsz"])
        self._compute_units = str(options.get("compute_units", "CPU_AND_NE"))
        self._model: Any = None
        self._io: ModelIO | None = None

    @property
    def device(self) -> str:
        return "ANE" if self._compute_units == "CPU_AND_NE" else f"coreml:{self._compute_units}"

    @property
    def input_hw(self) -> tuple[int, int]:
        if self._io is not None:
            return self._io.input_hw
        return self._requested_hw or (640, 640)

    @classmethod
    def check_available(cls, spec: BackendSpec) -> None:
        options = spec.options
        parse_imgsz(options.get("imgsz"))
        if str(options.get("compute_units", "CPU_AND_NE")) not in COMPUTE_UNITS:
            raise ValueError(f"coreml compute_units must be one of {', '.join(COMPUTE_UNITS)}, "
                             f"got {options['compute_units']!r}")
        if sys.platform != "darwin":
            raise BackendUnavailable(
                f"coreml (Apple Neural Engine) needs macOS with coremltools; this machine runs {sys.platform}. "
                "On Linux use onnx or cpu."
            )
        if importlib.util.find_spec("coremltools") is None:
            raise BackendUnavailable("coreml (Apple Neural Engine) needs coremltools: pip install 'aip[coreml]'")
        model = Path(str(options.get("model", DEFAULT_MODEL))).expanduser()
        if model.suffix.lower() == ".mlpackage" and not model.exists():
            raise FileNotFoundError(f"coreml model {str(model)!r} not found")
        if model.suffix.lower() != ".mlpackage" and importlib.util.find_spec("ultralytics") is None:
            raise BackendUnavailable(
                f"the coreml backend was given {model.name}, and converting it needs ultralytics: "
                "pip install 'aip[ultralytics]', or pass an exported .mlpackage"
            )

    def _artifact(self) -> Path:
        options = self.spec.options
        return artifact_path(
            options.get("model", DEFAULT_MODEL),
            "coreml",
            self._requested_hw or (640, 640),
            half=bool(options.get("half", True)),
            seed=int(options.get("seed", 0)),
        )

    def load(self) -> None:
        import coremltools

        path = self._artifact()
        compute_units = coremltools.ComputeUnit[self._compute_units]
        self._model = coremltools.models.MLModel(str(path), compute_units=compute_units)
        spec = self._model.get_spec()
        io = ModelIO.from_spec(spec)
        if self._requested_hw is not None and io.input_hw != self._requested_hw:
            raise ValueError(f"{path} takes {io.input_hw[0]}x{io.input_hw[1]} inputs, "
                             f"not the imgsz {self._requested_hw} asked for")
        self._io = io
        if io.image_input:
            log.warning("%s takes an image input: every frame goes through a PIL image. "
                        "A package from `aip export --format coreml` takes aip's tensor directly", path.name)
        precision = spec.description.metadata.userDefined.get(COREML_PRECISION_KEY)
        if precision == "float32" and self._compute_units == "CPU_AND_NE":
            log.warning("%s computes in float32, which the Neural Engine does not run: Core ML will "
                        "use the CPU. Convert with half=True (float16) for the Neural Engine", path.name)
        zeros = np.zeros(io.input_shape, np.float32)
        for _ in range(WARMUP_RUNS):
            self.infer(zeros)

    def infer(self, batch: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """(1, 3, H, W) float32 RGB in [0, 1] -> raw head output (1, 4 + nc, N) float32."""
        if self._model is None or self._io is None:
            raise RuntimeError("call load() before infer()")
        output = self._model.predict(self._io.feed(batch))[self._io.output_name]
        return np.asarray(output, dtype=np.float32)

    def close(self) -> None:
        self._model = None
        self._io = None


BACKEND = CoreMLBackend
