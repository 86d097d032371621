"""Calibration: measured backend throughputs -> integer weights, cached as JSON.

Each backend is measured alone and all together. The weights come from the
*together* figures: backends running at once share memory bandwidth, power
and cores, which is the production condition; the alone figures are kept
beside them to show how much that sharing costs. Results are cached in one
JSON file, keyed by model, backend set, input size and machine, so a
pipeline starts without re-measuring unless told to.

A cached calibration is trusted only as far as it holds: a short probe of
every worker together (``probe``) is compared with it at start, and a
result off by more than ``PROBE_TOLERANCE`` is measured again. A
measurement that says it went wrong (a worker died, restarted, or ran far
below its identical peers: :class:`Together` ``problems``) is used for the
run it was made for and never cached: one bad calibration must not halve
every later run.

The measurement itself is passed in as callables, so this module starts no
process and knows no backend.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from aip.cache import cache_dir
from aip.pipeline.scheduler import integer_weights

__all__ = [
    "CalibrationKey",
    "CalibrationResult",
    "PROBE_TOLERANCE",
    "Together",
    "calibrate",
    "cached_entries",
    "default_cache_path",
    "format_result",
    "load_cached",
    "machine_fingerprint",
    "store",
    "weights_from_measurements",
]

# Bump when the layout of a cached entry changes; older files are then ignored.
_CACHE_VERSION: Final = 1
# A probe off from the cached figures by more than this (for any worker, or
# in all) means the cache no longer describes this machine: measure again.
PROBE_TOLERANCE: Final = 0.25

log = logging.getLogger("aip.pipeline")


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
    """``calibration.json`` in :func:`cache_dir` (resolved at call time, never at import)."""
    return cache_dir() / "calibration.json"


@dataclass(frozen=True)
class CalibrationKey:
    """Identifies a calibration: same key, same expected throughputs."""

    model: str
    backends: frozenset[str]  # label=options of every worker: the network input is in the options
    input_size: tuple[int, int]  # (height, width) of the frames measured
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
    left_out: dict[str, str] = field(default_factory=dict)
    """Backends whose presence lowered the total, left out (weight 0), and the figures."""
    problems: tuple[str, ...] = ()
    """Why this measurement was not cached (a worker died, restarted, ran far below its peers)."""
    source: str = field(default="measured", compare=False)
    """``measured`` now, ``cache`` (probed and found to hold, or not probed)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("source")
        data["problems"] = list(self.problems)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationResult:
        return cls(
            alone_fps={str(k): float(v) for k, v in data["alone_fps"].items()},
            together_fps={str(k): float(v) for k, v in data["together_fps"].items()},
            weights={str(k): int(v) for k, v in data["weights"].items()},
            rounding_error=float(data["rounding_error"]),
            ideal_fps=float(data["ideal_fps"]),
            timestamp=float(data["timestamp"]),
            left_out={str(k): str(v) for k, v in data.get("left_out", {}).items()},
            problems=tuple(str(p) for p in data.get("problems", ())),
            source="cache",
        )


@dataclass(frozen=True)
class Together:
    """What a together measurement found: each backend's frames/s, the
    backends it left out (and why), and anything that makes it untrustworthy."""

    fps: Mapping[str, float]
    left_out: Mapping[str, str] = field(default_factory=dict)
    problems: Sequence[str] = ()


def weights_from_measurements(
    alone: Mapping[str, float], together: Mapping[str, float], *, max_cycle: int = 64, tolerance: float = 0.02
) -> CalibrationResult:
    """Derive weights from the ``together`` throughputs; keep ``alone`` for reference.

    A backend with zero together-throughput gets no weight (see
    :func:`aip.pipeline.scheduler.integer_weights`, which ``max_cycle`` and ``tolerance`` tune).
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


def cached_entries(path: Path | None = None) -> list[tuple[dict[str, Any], CalibrationResult]]:
    """Every cached calibration: its key's fields and its result (``aip calibrate --show``)."""
    found = []
    for text, entry in _read_entries(path or default_cache_path()).items():
        try:
            found.append((dict(json.loads(text)), CalibrationResult.from_dict(entry)))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    return found


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


def probe_error(cached: Mapping[str, float], probed: Mapping[str, float]) -> float:
    """How far a probe is from the cached together figures: the largest
    relative error of one backend's, or of the total (0: identical)."""
    errors = [abs(sum(probed.values()) - sum(cached.values())) / max(sum(cached.values()), 1e-9)]
    for backend, fps in cached.items():
        measured = probed.get(backend, 0.0)
        errors.append(abs(measured - fps) / max(fps, measured, 1e-9))
    return max(errors)


def calibrate(
    key: CalibrationKey,
    measure_alone: Callable[[str], float],
    measure_together: Callable[[], Mapping[str, float] | Together],
    *,
    path: Path | None = None,
    refresh: bool = False,
    max_cycle: int = 64,
    tolerance: float = 0.02,
    probe: Callable[[], Mapping[str, float]] | None = None,
) -> CalibrationResult:
    """Return the calibration for ``key``: from the cache, or measured and cached.

    ``measure_alone(backend)`` gives one backend's throughput (frames/s) when
    it runs by itself; ``measure_together()`` gives every backend's
    throughput while all run at once (or a :class:`Together`, which may
    leave backends out and say why the result must not be cached). Both
    should warm up before timing. With ``refresh=True`` the cache is ignored
    and overwritten. ``probe()``, when given, measures the cached backends
    together briefly: a cached result it is off from by more than
    ``PROBE_TOLERANCE`` is measured again (and said so in the log).
    """
    if not refresh and (cached := load_cached(key, path)) is not None:
        if probe is None:
            return cached
        kept = {b: fps for b, fps in cached.together_fps.items() if b not in cached.left_out}
        probed = probe()
        error = probe_error(kept, probed)
        if error <= PROBE_TOLERANCE:
            return cached
        measured_at = time.strftime("%Y-%m-%d %H:%M", time.localtime(cached.timestamp))
        log.warning("the cached calibration of %s is off by %.0f %% (a short probe measured %s FPS "
                    "against %s cached): measuring again", measured_at, 100 * error,
                    _figures(probed), _figures(kept))
    backends = sorted(key.backends)
    alone = {backend: measure_alone(backend) for backend in backends}
    measured = measure_together()
    together = measured if isinstance(measured, Together) else Together(dict(measured))
    if set(together.fps) != set(backends):
        raise ValueError(f"measure_together() returned {sorted(together.fps)}, expected {backends}")
    result = replace(weights_from_measurements(alone, together.fps, max_cycle=max_cycle,
                                               tolerance=tolerance),
                     left_out=dict(together.left_out), problems=tuple(together.problems))
    if result.problems:
        log.warning("calibration not cached, it is used for this run only: %s; the next run "
                    "measures again", "; ".join(result.problems))
    else:
        store(key, result, path)
    return result


def format_result(result: CalibrationResult) -> str:
    """The table ``aip calibrate`` prints: each backend alone and together, its weight."""
    lines = [f"{'backend':24}{'alone FPS':>12}{'together FPS':>14}{'weight':>8}"]
    for name in sorted(result.together_fps):
        label = name.split("=", 1)[0]
        lines.append(f"{label:24}{result.alone_fps.get(name, 0.0):12.1f}"
                     f"{result.together_fps[name]:14.1f}{result.weights.get(name, 0):8d}")
    lines.append(f"ideal {result.ideal_fps:.1f} FPS; rounding error {result.rounding_error:.4f}")
    lines += [f"left out: {name.split('=', 1)[0]}: {why}" for name, why in sorted(result.left_out.items())]
    if result.problems:
        lines.append("not cached: " + "; ".join(result.problems))
    return "\n".join(lines)


def _figures(fps: Mapping[str, float]) -> str:
    return ", ".join(f"{name.split('=', 1)[0]} {value:.1f}" for name, value in sorted(fps.items()))
