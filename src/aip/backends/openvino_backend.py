"""``openvino``: the YOLO network on OpenVINO (CPU; Intel GPU and NPU where present).

Options (all optional):

- ``model``: an OpenVINO IR ``.xml`` (used as is), an ``.onnx`` (converted
  by OpenVINO), or a ``.pt`` / ``.yaml`` that :func:`aip.vision.models.export`
  turns into ONNX first; the IR is cached next to the ONNX it came from.
  Default ``yolo11n.yaml`` with seeded random weights; ``seed``: its seed.
- ``imgsz``: network input ``(height, width)`` or one int (default 640).
- ``device``: ``CPU`` (the default), ``GPU``, ``GPU.1``, ``NPU``: any device
  OpenVINO lists here (``aip backends`` and ``aip doctor`` show them).
- ``hint``: ``throughput`` (the default: OpenVINO splits the device into
  streams and keeps several requests in flight; the worker claims that many
  frames at once and finishes them out of order, and results still leave in
  order) or ``latency`` (one request at a time, every core on it). One
  throughput worker beat two single-thread latency workers here (see the
  README's yolo bench), so it is the default, and the default CPU worker.
- ``requests``: infer requests in flight (default: OpenVINO's optimal
  number under ``throughput``, 1 under ``latency``).
- ``threads``: inference threads (``INFERENCE_NUM_THREADS``; default all).
- ``batch``: frames per request (the model is reshaped to a free batch).
"""
from __future__ import annotations

import importlib.util
import queue
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aip.backends.base import BackendSpec, BackendUnavailable, ExportedModelBackend
from aip.vision.models import DEFAULT_MODEL, artifact_path, parse_imgsz

WARMUP_RUNS = 3  # the first runs allocate and pick kernels
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}


def available_devices() -> list[str]:
    """OpenVINO's devices on this machine (``CPU``, ``GPU.0``, ``NPU``...); [] without OpenVINO."""
    if importlib.util.find_spec("openvino") is None:
        return []
    import openvino

    return list(openvino.Core().available_devices)


def ir_path(onnx: Path) -> Path:
    """Where the IR converted from ``onnx`` is cached: beside it."""
    return onnx.with_suffix(".xml")


def convert(onnx: Path) -> Path:
    """The OpenVINO IR of ``onnx``, converted once (cached beside it)."""
    import openvino

    xml = ir_path(onnx)
    if not xml.exists() or xml.stat().st_mtime < onnx.stat().st_mtime:
        model = openvino.convert_model(str(onnx))
        temporary = xml.with_name(xml.stem + ".partial.xml")
        openvino.save_model(model, str(temporary), compress_to_fp16=False)
        temporary.with_suffix(".bin").replace(xml.with_suffix(".bin"))
        temporary.replace(xml)  # the .xml last: a reader never sees it without its .bin
    return xml


class OpenVinoBackend(ExportedModelBackend):
    """YOLO on OpenVINO, one compiled model per worker."""

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        options = spec.options
        self._input_hw = parse_imgsz(options.get("imgsz")) if options.get("imgsz") else (640, 640)
        self._batch = max(1, int(options.get("batch", 1)))
        self._device = str(options.get("device", "CPU")).upper()
        self._hint = _hint(options)
        self._requests_asked = _requests(options)
        self._compiled: Any = None
        self._request: Any = None
        self._queue: Any = None  # AsyncInferQueue, with requests in flight
        self._done: queue.SimpleQueue[tuple[Any, npt.NDArray[Any] | BaseException]] = queue.SimpleQueue()
        self.requests_in_flight = 1

    @property
    def device(self) -> str:
        return f"openvino:{self._device}"

    @property
    def input_hw(self) -> tuple[int, int]:
        return self._input_hw

    @classmethod
    def check_available(cls, spec: BackendSpec) -> None:
        if importlib.util.find_spec("openvino") is None:
            raise BackendUnavailable("the openvino backend needs OpenVINO: pip install 'aip[openvino]'")
        options = spec.options
        parse_imgsz(options.get("imgsz"))
        _hint(options)
        _requests(options)
        if options.get("threads") is not None and int(options["threads"]) < 1:
            raise ValueError(f"openvino threads must be >= 1, got {options['threads']!r}")
        device = str(options.get("device", "CPU")).upper()
        devices = available_devices()
        if device not in devices and not any(d.startswith(device + ".") for d in devices):
            raise BackendUnavailable(f"OpenVINO has no device {device} here (it has "
                                     f"{', '.join(devices) or 'none'})")
        model = Path(str(options.get("model", DEFAULT_MODEL))).expanduser()
        if model.suffix.lower() in (".xml", ".onnx"):
            if not model.is_file():
                raise FileNotFoundError(f"openvino model {str(model)!r} not found")
        elif importlib.util.find_spec("ultralytics") is None or importlib.util.find_spec("onnx") is None:
            raise BackendUnavailable(f"the openvino backend was given {model.name}, and exporting it "
                                     "needs ultralytics and onnx: pip install 'aip[ultralytics,onnx]', "
                                     "or pass an .xml or .onnx")

    def _artifact(self) -> Path:
        options = self.spec.options
        model = Path(str(options.get("model", DEFAULT_MODEL))).expanduser()
        if model.suffix.lower() == ".xml":
            return model
        onnx = artifact_path(model, "onnx", self._input_hw, seed=int(options.get("seed", 0)),
                             dynamic_batch=self._batch > 1)
        return convert(onnx)

    def load(self) -> None:
        import openvino

        core = openvino.Core()
        model = core.read_model(str(self._artifact()))
        shape = model.inputs[0].get_partial_shape()
        if shape.rank.get_length() != 4:
            raise ValueError(f"{self._artifact()} takes {shape} inputs, not (n, 3, H, W) images")
        model.reshape([self._batch, 3, *self._input_hw])  # fixed: the fastest compiled form
        config: dict[str, Any] = {"PERFORMANCE_HINT": HINTS[self._hint]}
        if self.spec.options.get("threads"):
            config["INFERENCE_NUM_THREADS"] = int(self.spec.options["threads"])
        if self._hint == "latency" and self._requests_asked is None:
            config["PERFORMANCE_HINT_NUM_REQUESTS"] = 1
        self._compiled = core.compile_model(model, self._device, config)
        optimal = int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.requests_in_flight = self._requests_asked or (optimal if self._hint == "throughput" else 1)
        self._request = self._compiled.create_infer_request()
        if self.requests_in_flight > 1:
            self._queue = openvino.AsyncInferQueue(self._compiled, self.requests_in_flight)
            self._queue.set_callback(self._finished)
        zeros = np.zeros((self._batch, 3, *self._input_hw), np.float32)
        for _ in range(WARMUP_RUNS):
            self.infer(zeros)

    def infer(self, batch: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """(n, 3, H, W) float32 -> raw head output (n, 4 + nc, N) float32, one request."""
        if self._request is None:
            raise RuntimeError("call load() before infer()")
        batch = self._fit(batch)
        self._request.infer({0: batch}, share_inputs=True)
        output = self._request.get_output_tensor(0).data
        return np.array(output[: len(batch)], dtype=np.float32)  # a copy: the request reuses it

    # ---- requests in flight: submit, then take what has finished -------------------------

    def submit(self, tensor: npt.NDArray[Any], tag: Any) -> None:
        """Start one request on ``tensor`` (kept alive by the caller until it
        finishes); :meth:`finished` returns ``(tag, output)`` once it has."""
        if self._queue is None:
            self._done.put((tag, self.infer(tensor)))
            return
        self._queue.start_async({0: self._fit(tensor)}, userdata=tag, share_inputs=True)

    def finished(self, timeout: float | None) -> list[tuple[Any, npt.NDArray[Any] | BaseException]]:
        """The requests that finished, waiting up to ``timeout`` for the first."""
        try:
            done = [self._done.get(timeout=timeout) if timeout else self._done.get_nowait()]
        except queue.Empty:
            return []
        while True:
            try:
                done.append(self._done.get_nowait())
            except queue.Empty:
                return done

    def _finished(self, request: Any, tag: Any) -> None:
        # OpenVINO's thread: hand the output over, the worker's thread reports it.
        try:
            output = np.array(request.get_output_tensor(0).data, dtype=np.float32)
            self._done.put((tag, output))
        except BaseException as error:  # noqa: BLE001 - reported as that frame's failure
            self._done.put((tag, error))

    def _fit(self, batch: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """A batch of fewer frames than the compiled size, padded (the model is static)."""
        if len(batch) == self._batch:
            return np.ascontiguousarray(batch, dtype=np.float32)
        padded = np.zeros((self._batch, *batch.shape[1:]), np.float32)
        padded[: len(batch)] = batch
        return padded

    def close(self) -> None:
        if self._queue is not None:
            self._queue.wait_all()
        self._queue = self._request = self._compiled = None


def _hint(options: dict[str, Any]) -> str:
    hint = str(options.get("hint", "throughput")).lower()
    if hint not in HINTS:
        raise ValueError(f"openvino hint must be latency or throughput, got {options['hint']!r}")
    return hint


def _requests(options: dict[str, Any]) -> int | None:
    if options.get("requests") is None:
        return None
    requests = int(options["requests"])
    if requests < 1:
        raise ValueError(f"openvino requests must be >= 1, got {options['requests']!r}")
    return requests


BACKEND = OpenVinoBackend
