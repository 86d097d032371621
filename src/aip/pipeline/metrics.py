"""Counters and latency distributions of a pipeline run, and their reports.

:class:`Metrics` holds the seed paper's section 5 figures (frames generated,
assigned, processed and ordered, buffer-full waits, frames and latency per
backend, overall FPS) plus dropped frames, latency percentiles, the
calibrated ideal FPS, scheduling efficiency and the manager's CPU time. It
reports as a Python object, a JSON-able dict and a fixed-width text table.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import numpy as np

from aip.io.credentials import redacted_names

__all__ = ["BackendMetrics", "LatencyStats", "Metrics", "StreamMetrics"]

_T = TypeVar("_T")

# Histogram layout. Buckets grow by 2 %, so the geometric middle of a bucket
# is within 1 % of every value in it; 1 us .. 1 h then takes ~1,100 buckets
# (a few KiB per distribution, whatever the run length). Values outside the
# range land in the first/last bucket and are still exact in min/max/mean.
_LOWEST_S: Final = 1e-6
_HIGHEST_S: Final = 3600.0
_GROWTH: Final = 1.02
_LOG_GROWTH: Final = math.log(_GROWTH)
_N_BUCKETS: Final = math.ceil(math.log(_HIGHEST_S / _LOWEST_S) / _LOG_GROWTH) + 2
# Live FPS: results counted per 100 ms, the last 10 s of them kept.
_FPS_BUCKET_NS: Final = 100_000_000
_FPS_BUCKETS_KEPT: Final = 100
# Exclusive upper edge of each bucket (the last one is open).
_UPPER_S: Final = np.append(_LOWEST_S * np.exp(np.arange(_N_BUCKETS - 1) * _LOG_GROWTH), math.inf)


class LatencyStats:
    """A latency distribution in bounded memory (a log-bucket histogram).

    ``count``, ``mean``, ``min`` and ``max`` are exact; percentiles are
    within about 1 % of the exact (nearest-rank) value, and exact at the
    extremes. All times in seconds.
    """

    def __init__(self) -> None:
        # Bucket 0 holds values below _LOWEST_S; bucket i >= 1 holds
        # [_LOWEST_S * G**(i-1), _LOWEST_S * G**i); the last one also everything above.
        # A list, not an ndarray: incrementing a Python int is the cheaper hot path.
        self._counts = [0] * _N_BUCKETS
        self.count = 0
        self.total_s = 0.0
        self.min_s = math.inf
        self.max_s = 0.0

    def record(self, seconds: float) -> None:
        """Add one latency sample."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"latency must be finite and >= 0, got {seconds!r}")
        if seconds < _LOWEST_S:
            bucket = 0
        else:
            bucket = min(int(math.log(seconds / _LOWEST_S) / _LOG_GROWTH) + 1, _N_BUCKETS - 1)
        self._counts[bucket] += 1
        self.count += 1
        self.total_s += seconds
        self.min_s = min(self.min_s, seconds)
        self.max_s = max(self.max_s, seconds)

    @property
    def mean_s(self) -> float:
        """Mean latency (NaN when empty)."""
        return self.total_s / self.count if self.count else math.nan

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0..100), nearest rank; NaN when empty."""
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {q}")
        if not self.count:
            return math.nan
        rank = max(1, math.ceil(q / 100 * self.count))
        if rank == 1:  # the extremes are known exactly
            return self.min_s
        if rank == self.count:
            return self.max_s
        bucket = int(np.searchsorted(np.cumsum(self._counts), rank))
        middle = _LOWEST_S * math.exp((bucket - 0.5) * _LOG_GROWTH)  # geometric middle
        return min(max(middle, self.min_s), self.max_s)

    @property
    def p50_s(self) -> float:
        return self.percentile(50)

    @property
    def p95_s(self) -> float:
        return self.percentile(95)

    @property
    def p99_s(self) -> float:
        return self.percentile(99)

    def histogram(self) -> tuple[np.ndarray, np.ndarray]:
        """``(lower_edges_s, counts)`` of the buckets that hold samples (for plots)."""
        counts = np.asarray(self._counts)
        used = np.flatnonzero(counts)
        lower = np.where(used == 0, 0.0, _LOWEST_S * np.exp((used - 1) * _LOG_GROWTH))
        return lower, counts[used]

    def cumulative_counts(self, bounds: Sequence[float]) -> list[int]:
        """Samples at most each of the ascending ``bounds`` (seconds), then all
        of them: the buckets of a Prometheus histogram (``le``, then ``+Inf``).

        A bucket counts under a bound only when its whole range is below it,
        so a sample up to 2 % under a bound may count under the next one,
        never the reverse. Safe to call while another thread records: it
        reads one snapshot, and its last figure is that snapshot's total.
        """
        counts = np.cumsum(list(self._counts))  # one snapshot of the buckets
        below = np.searchsorted(_UPPER_S, np.asarray(bounds, dtype=float), side="right")
        return [int(counts[n - 1]) if n else 0 for n in below] + [int(counts[-1])]

    def to_dict(self) -> dict[str, Any]:
        """Summary in milliseconds; ``None`` for figures of an empty distribution."""

        def ms(seconds: float) -> float | None:
            return seconds * 1e3 if self.count else None

        return {
            "count": self.count,
            "mean_ms": ms(self.mean_s),
            "p50_ms": ms(self.p50_s),
            "p95_ms": ms(self.p95_s),
            "p99_ms": ms(self.p99_s),
            "max_ms": ms(self.max_s),
        }


@dataclass
class BackendMetrics:
    """Frames served by one backend and their latencies."""

    frames: int = 0
    inference: LatencyStats = field(default_factory=LatencyStats)
    end_to_end: LatencyStats = field(default_factory=LatencyStats)

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "inference": self.inference.to_dict(),
            "end_to_end": self.end_to_end.to_dict(),
        }


@dataclass
class StreamMetrics:
    """One stream's frames: read, delivered, dropped, late, and its latency."""

    frames_read: int = 0
    frames_published: int = 0
    frames_ordered: int = 0
    frames_dropped: int = 0
    frames_late: int = 0
    buffer_full_waits: int = 0
    reconnects: int = 0
    frames_decoded: int = 0  # live: frames decoded for a worker (MJPEG stays encoded until then)
    decodes_skipped: int = 0  # live: frames replaced or dropped before anything decoded them
    clock_clamped: int = 0  # capture times from another clock, replaced by the publish time
    state: str = "running"
    """running, ended, evicted or removed."""
    end_to_end: LatencyStats = field(default_factory=LatencyStats)
    first_ns: int = 0
    last_ns: int = 0

    @property
    def fps(self) -> float:
        """Delivered (ordered) frames per second between its first and last result."""
        span = (self.last_ns - self.first_ns) / 1e9
        return (self.frames_ordered - 1) / span if span > 0 and self.frames_ordered > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "frames_read": self.frames_read,
            "frames_published": self.frames_published,
            "frames_ordered": self.frames_ordered,
            "frames_dropped": self.frames_dropped,
            "frames_late": self.frames_late,
            "buffer_full_waits": self.buffer_full_waits,
            "reconnects": self.reconnects,
            "frames_decoded": self.frames_decoded,
            "decodes_skipped": self.decodes_skipped,
            "clock_clamped": self.clock_clamped,
            "fps": self.fps,
            "end_to_end": self.end_to_end.to_dict(),
        }


@dataclass
class Metrics:
    """Figures of one pipeline run.

    The manager bumps the plain counters itself and records per-frame
    figures with :meth:`record_processed` (a worker's result arrived) and
    :meth:`record_ordered` (that result left the reorder buffer). Ordered
    frames count results only: gaps for dropped frames are in
    ``frames_dropped``, frames skipped past their ``max_age_ms`` in
    ``frames_late``. ``end_to_end`` is capture to ordered output, everywhere.
    """

    frames_generated: int = 0
    frames_assigned: int = 0
    frames_processed: int = 0
    frames_ordered: int = 0
    frames_dropped: int = 0
    frames_late: int = 0
    buffer_full_waits: int = 0
    wall_time_s: float = 0.0
    manager_cpu_s: float = 0.0
    decode_cpu_s: float = 0.0
    """Of manager_cpu_s, what the admission thread spent decoding live frames into slots."""
    ideal_fps: float | None = None
    """Calibrated ideal throughput (sum of the backends' together-FPS), if known."""
    backends: dict[str, BackendMetrics] = field(default_factory=dict)
    inference: LatencyStats = field(default_factory=LatencyStats)
    end_to_end: LatencyStats = field(default_factory=LatencyStats)
    fps_timeline: list[int] = field(default_factory=list)
    """Ordered frames in each whole second since the run started (for FPS plots)."""
    streams: dict[str, StreamMetrics] = field(default_factory=dict)
    # Results per 100 ms for the last 10 s, for fps_now: bounded whatever the rate.
    _recent: deque[tuple[int, int]] = field(
        default_factory=lambda: deque(maxlen=_FPS_BUCKETS_KEPT), repr=False)
    _last_result_ns: int = field(default=0, repr=False)

    def record_processed(self, backend: str, inference_s: float) -> None:
        """Count a result from ``backend`` whose inference took ``inference_s``."""
        per_backend = self.backends.setdefault(backend, BackendMetrics())
        per_backend.frames += 1
        per_backend.inference.record(inference_s)
        self.inference.record(inference_s)
        self.frames_processed += 1

    def record_ordered(self, backend: str, end_to_end_s: float, elapsed_s: float) -> None:
        """Count a result released in order, ``elapsed_s`` after the run started."""
        self.backends.setdefault(backend, BackendMetrics()).end_to_end.record(end_to_end_s)
        self.end_to_end.record(end_to_end_s)
        self.frames_ordered += 1
        now = time.perf_counter_ns()
        self._last_result_ns = now
        bucket = now // _FPS_BUCKET_NS
        recent = self._recent
        if recent and recent[-1][0] == bucket:
            recent[-1] = (bucket, recent[-1][1] + 1)
        else:
            recent.append((bucket, 1))
        second = max(int(elapsed_s), 0)
        if second >= len(self.fps_timeline):
            self.fps_timeline.extend([0] * (second + 1 - len(self.fps_timeline)))
        self.fps_timeline[second] += 1

    def fps_now(self, window_s: float = 2.0) -> float:
        """Ordered frames per second over the last ``window_s`` (a live figure)."""
        # A copy: the run loop appends while a display thread reads.
        buckets = list(self._recent)
        first = (time.perf_counter_ns() - int(window_s * 1e9)) // _FPS_BUCKET_NS
        return sum(count for bucket, count in buckets if bucket >= first) / window_s

    def seconds_since_last_result(self) -> float | None:
        if not self._recent and not self._last_result_ns:
            return None
        return (time.perf_counter_ns() - self._last_result_ns) / 1e9

    @property
    def fps(self) -> float:
        """Ordered frames per second of wall time (0 before any time has passed)."""
        return self.frames_ordered / self.wall_time_s if self.wall_time_s > 0 else 0.0

    @property
    def scheduling_efficiency(self) -> float | None:
        """Achieved / calibrated ideal FPS, or ``None`` without a calibration."""
        return self.fps / self.ideal_fps if self.ideal_fps else None

    @property
    def manager_cpu_pct(self) -> float:
        """Manager CPU time as a percentage of one core over the wall time."""
        return 100 * self.manager_cpu_s / self.wall_time_s if self.wall_time_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """All figures as plain JSON types (latencies in ms, ``None`` when unknown)."""
        return {
            "frames_generated": self.frames_generated,
            "frames_assigned": self.frames_assigned,
            "frames_processed": self.frames_processed,
            "frames_ordered": self.frames_ordered,
            "frames_dropped": self.frames_dropped,
            "frames_late": self.frames_late,
            "buffer_full_waits": self.buffer_full_waits,
            "wall_time_s": self.wall_time_s,
            "fps": self.fps,
            "ideal_fps": self.ideal_fps,
            "scheduling_efficiency": self.scheduling_efficiency,
            "manager_cpu_s": self.manager_cpu_s,
            "manager_cpu_pct": self.manager_cpu_pct,
            "decode_cpu_s": self.decode_cpu_s,
            "inference": self.inference.to_dict(),
            "end_to_end": self.end_to_end.to_dict(),
            "backends": {name: b.to_dict() for name, b in self.backends.items()},
            "fps_timeline": list(self.fps_timeline),
            # Names redacted: a stream named by its URL by hand must not write its password.
            "streams": _by_redacted_name({name: stream.to_dict() for name, stream in self.streams.items()}),
        }

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent)

    def plot(self, path: str) -> None:
        """Save a figure: inference latency per backend, and ordered FPS over time.

        Needs matplotlib (ultralytics brings it).
        """
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt

        figure, (latency_axes, fps_axes) = plt.subplots(1, 2, figsize=(12, 4.5))
        for name, backend in self.backends.items():
            lower, counts = backend.inference.histogram()
            if len(counts):
                latency_axes.bar(lower * 1e3, counts, width=lower * 1e3 * (_GROWTH - 1),
                                 align="edge", alpha=0.6, label=name)
        latency_axes.set(xlabel="inference latency (ms)", ylabel="frames", xscale="log",
                         title="Latency per backend")
        latency_axes.legend()
        fps_axes.bar(np.arange(len(self.fps_timeline)), self.fps_timeline, width=1.0, align="edge")
        if self.ideal_fps:
            fps_axes.axhline(self.ideal_fps, color="black", linestyle="--", label="calibrated ideal")
            fps_axes.legend()
        fps_axes.set(xlabel="second of the run", ylabel="ordered frames", title="Throughput")
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)

    def format_table(self) -> str:
        """A fixed-width text report: run totals, then one latency row per backend."""
        efficiency = self.scheduling_efficiency
        ideal = (
            f"ideal {self.ideal_fps:.1f} FPS, efficiency {100 * efficiency:.1f} %"
            if self.ideal_fps and efficiency is not None
            else "no calibrated ideal"
        )
        lines = [
            f"frames     generated {self.frames_generated}  assigned {self.frames_assigned}  "
            f"processed {self.frames_processed}  ordered {self.frames_ordered}  "
            f"dropped {self.frames_dropped}  late {self.frames_late}  "
            f"buffer-full waits {self.buffer_full_waits}",
            f"throughput {self.fps:.1f} FPS over {self.wall_time_s:.2f} s  ({ideal})",
            f"manager    {self.manager_cpu_s:.2f} s CPU  ({self.manager_cpu_pct:.1f} % of one core)",
            "",
            f"{'backend':<12}{'frames':>8}{'share':>8}"
            f"{'inf mean':>10}{'p50':>8}{'p95':>8}{'p99':>8}"
            f"{'e2e p50':>10}{'p95':>8}{'p99':>8}   (ms)",
        ]
        rows = [(name, b.frames, b.inference, b.end_to_end) for name, b in self.backends.items()]
        rows.append(("all", self.frames_processed, self.inference, self.end_to_end))
        for name, frames, inference, end_to_end in rows:
            share = f"{100 * frames / self.frames_processed:.1f}%" if self.frames_processed else "-"
            lines.append(
                f"{name:<12}{frames:>8}{share:>8}"
                f"{_ms(inference.mean_s):>10}{_ms(inference.p50_s):>8}"
                f"{_ms(inference.p95_s):>8}{_ms(inference.p99_s):>8}"
                f"{_ms(end_to_end.p50_s):>10}{_ms(end_to_end.p95_s):>8}{_ms(end_to_end.p99_s):>8}"
            )
        if len(self.streams) > 1:
            streams = _by_redacted_name(self.streams)
            width = max(12, *(len(name) + 1 for name in streams))  # names are host:port/path
            lines += ["", f"{'stream':<{width}}{'state':>9}{'read':>8}{'ordered':>9}{'dropped':>9}"
                          f"{'late':>7}{'FPS':>8}{'e2e p50':>10}{'p99':>8}   (ms)"]
            for name, stream in streams.items():
                lines.append(
                    f"{name:<{width}}{stream.state:>9}{stream.frames_read:>8}{stream.frames_ordered:>9}"
                    f"{stream.frames_dropped:>9}{stream.frames_late:>7}{stream.fps:>8.1f}"
                    f"{_ms(stream.end_to_end.p50_s):>10}{_ms(stream.end_to_end.p99_s):>8}"
                )
        return "\n".join(lines)


def _by_redacted_name(items: dict[str, _T]) -> dict[str, _T]:
    """``items`` keyed by their names redacted (aip.io.credentials), still distinct."""
    items = dict(items)  # one look: the run loop may add a stream meanwhile
    return dict(zip(redacted_names(items), items.values()))


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1e3:.1f}"
