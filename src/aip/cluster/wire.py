"""How a frame travels to a node in ``frames`` mode.

``raw``: the pixels as they are (a contiguous uint8 array: Dask sends its
buffer without a pickle copy). ``jpeg``: encoded at the client, decoded at
the node (OpenCV): about a tenth of the bytes of a natural image, for CPU
time on both ends and a lossy frame (detections may differ slightly from
the raw frame's). Which is cheaper depends on the network and the cores:
``python -m aip.bench cluster`` measures both on the machine it runs on.
"""
from __future__ import annotations

from typing import Any

import numpy as np

ENCODINGS = ("raw", "jpeg")
# JPEG quality: 90 keeps a detector's input close to the original (a few
# boxes move by a pixel) at about a tenth of the raw size.
JPEG_QUALITY = 90


def encode_frame(frame: np.ndarray, encoding: str) -> Any:
    """What :func:`decode_frame` turns back into ``frame`` (exactly, for ``raw``)."""
    if encoding == "raw":
        return np.ascontiguousarray(frame)
    if encoding == "jpeg":
        import cv2

        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ValueError(f"OpenCV could not encode a {frame.shape} frame as JPEG")
        return ("jpeg", data.tobytes())
    raise ValueError(f"unknown encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")


def decode_frame(payload: Any) -> np.ndarray:
    """The BGR uint8 frame a payload of :func:`encode_frame` carries."""
    if isinstance(payload, np.ndarray):
        return payload
    if isinstance(payload, tuple) and len(payload) == 2 and payload[0] == "jpeg":
        import cv2

        frame = cv2.imdecode(np.frombuffer(payload[1], np.uint8), cv2.IMREAD_COLOR)
        if frame is None:
            raise ValueError("a frame's JPEG bytes do not decode")
        return np.asarray(frame, dtype=np.uint8)
    raise ValueError(f"not a frame payload: {type(payload).__name__}")
