"""The model and the pixels around it: what every backend shares.

- :mod:`aip.vision.models`: YOLO11 from weights or a seeded ``.yaml``, and
  its exports (ONNX, TorchScript, Core ML), cached;
- :mod:`aip.vision.preprocess`: the Numba letterbox, straight into a
  backend's input tensor;
- :mod:`aip.vision.postprocess`: the raw head -> boxes in frame pixels (NMS).

Runs in worker processes, so it imports nothing of the manager: only
:mod:`aip.errors` and :mod:`aip.cache` from aip. Heavy runtimes (torch,
ultralytics) are imported inside the functions that need them.
"""
