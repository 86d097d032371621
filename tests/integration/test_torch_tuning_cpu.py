"""The ``cuda`` backend's tuning options leave the ``cpu`` path as it was, on the
seeded YOLO11n (how the options are read: tests/unit/test_torch_tuning.py)."""
from __future__ import annotations

import numpy as np
import pytest


def test_the_cpu_path_is_unchanged_by_default_options() -> None:
    """Same output bit for bit, no CUDA runner, and cuDNN's global switch untouched."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    from aip.backends.base import BackendSpec, create
    from aip.vision.models import RandomWeightsWarning

    before = torch.backends.cudnn.benchmark
    backends = []
    for options in ({}, {"half": 0, "pinned": 0, "graphs": "off", "cudnn_benchmark": 1}):
        backend = create(BackendSpec("cpu", {"imgsz": 128, **options}))
        with pytest.warns(RandomWeightsWarning):
            backend.load()
        backends.append(backend)
    tensor = np.random.default_rng(0).random((1, 3, 128, 128), dtype=np.float32)
    plain, explicit = (backend.infer(tensor) for backend in backends)
    np.testing.assert_array_equal(plain, explicit)
    assert plain.dtype == np.float32 and plain.shape == (1, 84, 336)
    assert all(getattr(backend, "_runner") is None for backend in backends)
    assert torch.backends.cudnn.benchmark == before
    for backend in backends:
        backend.close()
