"""Calibration: measured backend throughputs -> integer weights, cached as JSON.

Each backend is measured alone and all together. The weights come from the
*together* figures: backends running at once share memory bandwidth, power
and cores, which is the production condition; the alone figures are kept
beside them to show how much that sharing costs. Results are cached in one
JSON file, keyed by model, backend set, input size and machine, so a
pipeline starts without re-measuring unless told to.

The measurement itself is passed in as callables, so this module starts no
process and knows no backend.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from aip.scheduler import integer_weights

__all__ = [
    "CalibrationKey",
    "CalibrationResult",
    "calibrate",
    "default_cache_path",
    "load_cached",
    "machine_fingerprint",
    "store",
    "weights_from_measurements",
]

# Bump when the layout of a cached entry changes; older files are then ignored.
_CACHE_VERSION: Final = 1


def machine_fingerprint() -> str:
    """What makes throughputs comparable: OS, architecture, CPU, core count, Python."""
    return "|".join(
        [
            platform.system(),
            platform.machine(),
            platform.processor() or "unknown-cpu",
            f"{os.cpu_count()}cpu",
            f"py{sys.version_info.major}.{sys.version_info.minor}",
        ]
    )


def default_cache_path() -> Path:
    """``~/.cache/aip/calibration.json`` (resolved at call time, never at import)."""
    return Path.home() / ".cache" / "aip" / "calibration.json"


@dataclass(frozen=True)
class CalibrationKey:
    """Identifies a calibration: same key, same expected throughputs."""

    model: str
    backends: frozenset[str]
    input_size: tuple[int, int]  # (height, width) of the network input
    machine: str = field(default_factory=machine_fingerprint)

    def as_str(self) -> str:
        """Canonical text form, the key of the entry in the cache file."""
        return json.dumps(
            {
                "model": self.model,
                "backends": sorted(self.backends),
                "input_size": list(self.input_size),
                "machine": self.machine,
            },
            sort_keys=True,
        )


@dataclass(frozen=True)
class CalibrationResult:
    """Measured throughputs (frames/s) and the integer weights derived from them."""

    alone_fps: dict[str, float]
    together_fps: dict[str, float]
    weights: dict[str, int]
    rounding_error: float
    """Fraction of ``ideal_fps`` a static schedule with ``weights`` cannot reach."""
    ideal_fps: float
    """Sum of the together throughputs: what a perfect schedule would reach."""
    timestamp: float
    """When it was measured (seconds since the epoch)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationResult:
        return cls(
            alone_fps={str(k): float(v) for k, v in data["alone_fps"].items()},
            together_fps={str(k): float(v) for k, v in data["together_fps"].items()},
            weights={str(k): int(v) for k, v in data["weights"].items()},
            rounding_error=float(data["rounding_error"]),
            ideal_fps=float(data["ideal_fps"]),
            timestamp=float(data["timestamp"]),
        )


def weights_from_measurements(
    alone: Mapping[str, float], together: Mapping[str, float], *, max_cycle: int = 64, tolerance: float = 0.02
) -> CalibrationResult:
    """Derive weights from the ``together`` throughputs; keep ``alone`` for reference.

    A backend with zero together-throughput gets no weight (see
    :func:`aip.scheduler.integer_weights`, which ``max_cycle`` and ``tolerance`` tune).
    """
    if set(alone) != set(together):
        raise ValueError(
            f"alone and together measure different backends: {sorted(alone)} vs {sorted(together)}"
        )
    weights, rounding_error = integer_weights(together, max_cycle=max_cycle, tolerance=tolerance)
    return CalibrationResult(
        alone_fps={k: float(v) for k, v in alone.items()},
        together_fps={k: float(v) for k, v in together.items()},
        weights=weights,
        rounding_error=rounding_error,
        ideal_fps=float(sum(together.values())),
        timestamp=time.time(),
    )


def _read_entries(path: Path) -> dict[str, Any]:
    """The cache's entries; an unreadable or outdated file counts as empty."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        warnings.warn(f"ignoring unreadable calibration cache {path}: {error}", stacklevel=3)
        return {}
    if not isinstance(document, dict) or document.get("version") != _CACHE_VERSION:
        return {}
    entries = document.get("entries")
    return entries if isinstance(entries, dict) else {}


def load_cached(key: CalibrationKey, path: Path | None = None) -> CalibrationResult | None:
    """The cached result for ``key``, or ``None`` if there is none."""
    entry = _read_entries(path or default_cache_path()).get(key.as_str())
    if entry is None:
        return None
    try:
        return CalibrationResult.from_dict(entry)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None  # a malformed entry is as good as none: measure again


def store(key: CalibrationKey, result: CalibrationResult, path: Path | None = None) -> None:
    """Save ``result`` under ``key``, keeping the file's other entries.

    Written to a temporary file and renamed, so a crash or a concurrent
    reader never sees a half-written cache.
    """
    path = path or default_cache_path()
    entries = _read_entries(path)
    entries[key.as_str()] = result.to_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump({"version": _CACHE_VERSION, "entries": entries}, file, indent=2, sort_keys=True)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def calibrate(
    key: CalibrationKey,
    measure_alone: Callable[[str], float],
    measure_together: Callable[[], Mapping[str, float]],
    *,
    path: Path | None = None,
    refresh: bool = False,
    max_cycle: int = 64,
    tolerance: float = 0.02,
) -> CalibrationResult:
    """Return the calibration for ``key``: from the cache, or measured and cached.

    ``measure_alone(backend)`` gives one backend's throughput (frames/s) when
    it runs by itself; ``measure_together()`` gives every backend's
    throughput while all run at once. Both should warm up before timing.
    With ``refresh=True`` the cache is ignored and overwritten.
    """
    if not refresh and (cached := load_cached(key, path)) is not None:
        return cached
    backends = sorted(key.backends)
    alone = {backend: measure_alone(backend) for backend in backends}
    together = dict(measure_together())
    if set(together) != set(backends):
        raise ValueError(f"measure_together() returned {sorted(together)}, expected {backends}")
    result = weights_from_measurements(alone, together, max_cycle=max_cycle, tolerance=tolerance)
    store(key, result, path)
    return result
