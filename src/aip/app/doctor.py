"""``aip doctor``: one screen on what this machine can run, and what aip left behind.

Sections: the backends (and why one cannot run), the versions of the
runtimes aip uses, the devices they see, the threads, the space of the
shared-memory filesystem, and the aip segments in it (live, stale, another
user's, another PID namespace's). ``--clean`` removes the stale ones with
:func:`aip.segments.clean_stale`.

Versions come from installed package metadata, so that a broken runtime
does not stop the report; the device section imports torch and ONNX
Runtime when they are installed (a second or two).
"""
from __future__ import annotations

import os
import platform
import shutil
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

from aip.segments import SHM_DIR, STALE, SegmentInfo, clean_stale, list_segments

# The distributions whose versions matter, each with the names it ships under.
PACKAGES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",),
    "numba": ("numba",),
    "torch": ("torch",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-silicon"),
    "ultralytics": ("ultralytics",),
    "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless",
               "opencv-contrib-python"),
    "coremltools": ("coremltools",),
    "openvino": ("openvino",),
}
# Environment variables that set runtimes' thread pools.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def versions() -> dict[str, str | None]:
    """Package -> installed version, or None."""
    found: dict[str, str | None] = {}
    for package, distributions in PACKAGES.items():
        found[package] = None
        for distribution in distributions:
            try:
                found[package] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:
                continue
    return found


def devices() -> list[str]:
    """What the runtimes see: CUDA GPUs, MPS, ONNX Runtime's providers."""
    lines = []
    try:
        import torch

        if torch.cuda.is_available():
            for index in range(torch.cuda.device_count()):
                properties = torch.cuda.get_device_properties(index)
                lines.append(f"cuda:{index}  {properties.name}, "
                             f"{properties.total_memory / 2**30:.0f} GiB")
        else:
            lines.append("cuda: none (torch sees no CUDA device)")
        mps = getattr(torch.backends, "mps", None)
        if sys.platform == "darwin":
            lines.append(f"mps: {'available' if mps is not None and mps.is_available() else 'unavailable'}")
    except ImportError:
        lines.append("torch: not installed")
    except Exception as error:  # a broken runtime is a finding, not a crash of the report
        lines.append(f"torch: fails to start ({type(error).__name__}: {error})")
    try:
        import onnxruntime

        lines.append("onnxruntime providers: " + ", ".join(onnxruntime.get_available_providers()))
    except ImportError:
        lines.append("onnxruntime: not installed")
    except Exception as error:
        lines.append(f"onnxruntime: fails to start ({type(error).__name__}: {error})")
    lines.append(openvino_devices_line())
    return lines


def openvino_devices_line() -> str:
    """OpenVINO's devices (each can be an ``openvino:device=...`` worker)."""
    try:
        import openvino

        core = openvino.Core()
        named = [f"{d} ({core.get_property(d, 'FULL_DEVICE_NAME')})" for d in core.available_devices]
        return "openvino devices: " + (", ".join(named) or "none")
    except ImportError:
        return "openvino: not installed"
    except Exception as error:  # noqa: BLE001 - a broken runtime is a finding, not a crash
        return f"openvino: fails to start ({type(error).__name__}: {error})"


def threads() -> list[str]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [f"cores: {os.cpu_count()} (usable by this process: {usable})"]
    set_variables = [f"{name}={os.environ[name]}" for name in THREAD_VARIABLES if name in os.environ]
    lines.append("thread variables: " + (", ".join(set_variables) if set_variables else "none set"))
    return lines


def shared_memory() -> list[str]:
    if not SHM_DIR.is_dir():
        return [f"{SHM_DIR}: none on this system (segments live in the kernel and cannot be listed)"]
    usage = shutil.disk_usage(SHM_DIR)
    gib = 2**30
    lines = [f"{SHM_DIR}: {usage.free / gib:.1f} GiB free of {usage.total / gib:.1f} GiB"]
    if usage.free < 256 * 2**20:
        lines.append("  low: a pipeline's slots need (frame bytes x slots); containers often "
                     "give 64 MiB (docker run --shm-size=1g)")
    return lines


def segment_lines(segments: Sequence[SegmentInfo]) -> list[str]:
    if not segments:
        return ["no aip segments"]
    lines = [f"{s.name:22} {s.kind:11} {s.size / 2**20:8.1f} MiB  {s.state}: {s.reason}" for s in segments]
    stale = sum(s.state == STALE for s in segments)
    if stale:
        lines.append(f"{stale} stale: aip doctor --clean removes them")
    return lines


def report(*, clean: bool = False, backends: Callable[[], dict[str, str | None]] | None = None) -> str:
    """The doctor's screen; with ``clean``, stale segments are removed first."""
    import aip
    from aip.backends import available_backends

    listed = (backends or available_backends)()

    sections: list[tuple[str, list[str]]] = []
    sections.append(("aip", [f"aip {aip.__version__}, Python {platform.python_version()} "
                             f"({sys.executable}), {platform.system()} {platform.machine()}"]))
    sections.append(("backends", [
        f"{name:8} {'ok' if reason is None else 'unavailable: ' + reason.splitlines()[0]}"
        for name, reason in listed.items()]))
    sections.append(("versions", [f"{name:12} {version or 'not installed'}"
                                  for name, version in versions().items()]))
    sections.append(("devices", devices()))
    sections.append(("threads", threads()))
    sections.append(("shared memory", shared_memory()))
    cleaned: list[str] = []
    if clean:
        cleaned = [f"removed {s.name} ({s.kind}, {s.reason})" for s in clean_stale()]
        cleaned = cleaned or ["nothing stale to remove"]
    sections.append(("aip segments", cleaned + segment_lines(list_segments())))
    return "\n".join(f"{title}\n" + "\n".join(f"  {line}" for line in lines) for title, lines in sections)


def main(clean: bool = False) -> int:
    print(report(clean=clean))
    return 0
