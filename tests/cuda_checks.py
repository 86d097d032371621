"""Whether this machine runs the cuda tests, and why not.

The cuda tests skip, with the reason, where no NVIDIA GPU is visible to
torch. Where one is, they never skip: a missing runtime they need
(ultralytics, ONNX Runtime, OpenCV) fails them with what to install. With
``AIP_REQUIRE_CUDA=1`` (``benchmarks/gpu_check.sh`` sets it) a machine
without a usable GPU fails them too, so a GPU run cannot pass by skipping.
"""
from __future__ import annotations

import importlib.util
import os

import pytest

REQUIRE_ENV = "AIP_REQUIRE_CUDA"


def cuda_missing() -> str | None:
    """None where torch sees a CUDA GPU, else why not."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed, so no CUDA GPU can be used here"
    import torch

    if not torch.cuda.is_available():
        build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        return f"no NVIDIA GPU is visible to torch {torch.__version__} ({build}) on this machine"
    return None


def cuda_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def cuda_mark() -> pytest.MarkDecorator:
    """Skip where there is no GPU, unless the run requires one (then the tests fail)."""
    reason = cuda_missing()
    return pytest.mark.skipif(reason is not None and not cuda_required(),
                              reason=f"cuda tests: {reason}; they run where torch sees a GPU")


def require(*modules: str) -> None:
    """Fail (never skip) when a runtime the cuda tests need is missing, or when no GPU is
    usable in a run that requires one."""
    reason = cuda_missing()
    if reason is not None:
        pytest.fail(f"{REQUIRE_ENV} is set but {reason}")
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        pytest.fail(f"this machine has a CUDA GPU but lacks {', '.join(missing)}: install them "
                    "(benchmarks/gpu_check.sh installs them from its wheel folder)")
