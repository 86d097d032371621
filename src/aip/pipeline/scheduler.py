"""Which backend gets which frame: static, adaptive and pull scheduling.

The manager asks its scheduler for one *hint* per frame and writes it into the
frame's slot; the worker of that backend claims the slot. Three policies:

* ``static``: the seed's calibrated weighted round-robin. Integer weights
  (e.g. 7 : 3 : 1) become one cycle of backend hints, walked frame by frame.
* ``adaptive``: the same cycle, re-weighted online from each backend's
  measured service time (EWMA) when the measured shares drift past a
  threshold, and at once when a backend dies.
* ``pull``: no hint (:data:`ANY_WORKER`); whichever worker is idle takes the
  next frame (work-conserving baseline).

Backends are small non-negative ints (worker/backend indices); a weights
mapping lists exactly the backends that get frames.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Final, Protocol, TypeVar

import numpy as np

from aip.ring import ANY_WORKER  # "any worker may take this frame": the slot table's own value

__all__ = [
    "ANY_WORKER",
    "SCHEDULER_MODES",
    "AdaptiveScheduler",
    "PullScheduler",
    "Scheduler",
    "StaticScheduler",
    "NoLiveBackendError",
    "integer_weights",
    "make_scheduler",
    "weighted_cycle",
]


Weights = Mapping[int, int] | Sequence[int]
"""Integer weights per backend id; a sequence means ids ``0..len-1``."""

Rng = random.Random | np.random.Generator

_K = TypeVar("_K")


def _weight_dict(weights: Weights) -> dict[int, int]:
    """Validate ``weights`` and return ``{backend: weight}`` without zero weights."""
    items = weights.items() if isinstance(weights, Mapping) else enumerate(weights)
    result: dict[int, int] = {}
    for backend, weight in items:
        if not 0 <= backend < ANY_WORKER:
            raise ValueError(f"backend id must be in [0, {ANY_WORKER}), got {backend}")
        if int(weight) != weight or weight < 0:
            raise ValueError(f"weight of backend {backend} must be a non-negative integer, got {weight!r}")
        if weight:
            result[int(backend)] = int(weight)
    return result


def _pick(rng: Rng, candidates: list[int]) -> int:
    if len(candidates) == 1:
        return candidates[0]
    if isinstance(rng, random.Random):
        return rng.choice(candidates)
    return candidates[int(rng.integers(len(candidates)))]


def weighted_cycle(weights: Weights, rng: Rng) -> list[int]:
    """Return one cycle of backend hints: backend ``b`` appears exactly ``weights[b]`` times.

    The order spreads each backend evenly, so that short windows are
    balanced, which is what keeps per-backend queues (and so latency) flat;
    a random shuffle would meet the weights only once per whole cycle. It is
    Tijdeman's "chairman assignment" rule: at frame ``n`` only backends owed
    at least ``1/(2k-2)`` frames (``k`` backends) are eligible, and of those
    the one whose next frame falls due first is picked. It guarantees that
    after any ``n`` frames every backend has within ``1 - 1/(2k-2)`` frames
    (less than one) of its ideal ``n * w_b / sum(w)``; nginx's smooth
    weighted round-robin is simpler but can exceed one frame.

    ``rng`` (a seeded ``random.Random`` or numpy ``Generator``) breaks ties
    between equally due backends, so equal weights give a reproducible random
    order. A random rotation is deliberately not applied: it would loosen
    the bound to two frames.
    """
    weight_of = _weight_dict(weights)
    if not weight_of:
        raise ValueError("weighted_cycle needs at least one positive weight")
    total = sum(weight_of.values())
    if len(weight_of) == 1:
        return [next(iter(weight_of))] * total
    # Exact fractions: due times of different backends tie exactly and must compare equal.
    slack = Fraction(1, 2 * len(weight_of) - 2)
    given = dict.fromkeys(weight_of, 0)
    cycle: list[int] = []
    for frame in range(1, total + 1):
        due = {
            b: (given[b] + 1 - slack) / w
            for b, w in weight_of.items()
            if Fraction(frame * w, total) - given[b] >= slack
        }
        first_due = min(due.values())
        chosen = _pick(rng, [b for b, d in due.items() if d == first_due])
        given[chosen] += 1
        cycle.append(chosen)
    return cycle


def integer_weights(
    throughputs: Mapping[_K, float], *, max_cycle: int = 64, tolerance: float = 0.02
) -> tuple[dict[_K, int], float]:
    """Turn measured throughputs (frames/s) into small integer weights.

    Returns ``(weights, rounding_error)``. ``rounding_error`` is the fraction of
    the ideal throughput (the sum of all throughputs) that a static schedule
    with these weights cannot reach: backend ``b`` gets share ``s_b`` of the
    frames but supplies share ``t_b`` of the capacity, so the pipeline runs at
    ``min_b t_b / s_b`` of ideal and the error is ``1 - min_b t_b / s_b``.
    This is the metric that matters (an L1 distance between shares would rate
    over-feeding the slowest backend as mildly as over-feeding the fastest).

    The smallest cycle length (sum of weights) up to ``max_cycle`` whose error
    is at most ``tolerance`` wins; if none is, the most accurate one does.
    Every backend with throughput > 0 gets weight >= 1; backends with zero
    throughput are left out. For each cycle length the weights come from the
    greedy divisor rule (give the next frame to the backend with the smallest
    ``(w_b + 1) / t_b``), which minimises ``max_b s_b / t_b`` for that length.
    """
    live: dict[_K, float] = {}
    for key, fps in throughputs.items():
        if not (math.isfinite(fps) and fps >= 0):
            raise ValueError(f"throughput of {key!r} must be finite and >= 0, got {fps!r}")
        if fps > 0:
            live[key] = float(fps)
    if not live:
        raise ValueError("integer_weights needs at least one backend with throughput > 0")
    if max_cycle < len(live):
        raise ValueError(f"max_cycle={max_cycle} is below the number of live backends ({len(live)})")

    capacity = sum(live.values())
    weights = dict.fromkeys(live, 1)
    best_weights, best_error = dict(weights), math.inf
    for cycle_length in range(len(live), max_cycle + 1):
        if cycle_length > len(live):
            grow = min(live, key=lambda k: (weights[k] + 1) / live[k])
            weights[grow] += 1
        error = 1.0 - min((live[k] / capacity) / (weights[k] / cycle_length) for k in live)
        error = max(error, 0.0)  # the best backend has t/s >= 1; clamp float noise
        if error < best_error:
            best_weights, best_error = dict(weights), error
        if error <= tolerance:
            break
    return best_weights, best_error


class NoLiveBackendError(RuntimeError):
    """Every backend of the schedule is dead (perhaps for now: restarts)."""


class Scheduler(Protocol):
    """What the manager needs from a scheduling policy."""

    @property
    def weights(self) -> dict[int, int]:
        """Current integer weights of the backends that get frames."""
        ...

    def next_hint(self, frame_id: int) -> int:
        """Backend hint for the next frame (:data:`ANY_WORKER` for any worker)."""
        ...

    def observe(self, backend: int, service_time_s: float) -> None:
        """Report that ``backend`` served one frame in ``service_time_s`` seconds."""
        ...

    def mark_dead(self, backend: int) -> None:
        """Stop scheduling frames to ``backend`` (until :meth:`revive`)."""
        ...

    def revive(self, backend: int, weight: int) -> None:
        """Schedule frames to ``backend`` again (a restarted worker), at ``weight``."""
        ...


def cycle_in_runs(weights: Mapping[int, int], runs: Mapping[int, int], rng: Rng) -> list[int]:
    """A weighted cycle in which a batching backend's frames come in runs of
    its batch size (``runs[backend]``), so that its batches fill.

    Shares stay exact: every weight is scaled by the least common multiple
    L of the batch sizes, and a backend with batch b takes w * L / b runs of
    b frames per cycle, spread like any weighted cycle.
    """
    batches = {b: max(1, int(runs.get(b, 1))) for b in weights}
    if all(size == 1 for size in batches.values()):
        return weighted_cycle(weights, rng)
    lcm = 1
    for size in batches.values():
        lcm = lcm * size // math.gcd(lcm, size)
    units = {b: w * lcm // batches[b] for b, w in weights.items()}
    divisor = 0
    for count in units.values():
        divisor = math.gcd(divisor, count)
    units = {b: count // divisor for b, count in units.items()}  # the shortest such cycle
    return [b for unit in weighted_cycle(units, rng) for b in [unit] * batches[unit]]


class _CycleScheduler:
    """Walks a weighted cycle; shared by the static and adaptive policies."""

    def __init__(self, weights: Weights, seed: int = 0,
                 runs: Mapping[int, int] | None = None) -> None:
        self._runs = dict(runs or {})
        self._weights = _weight_dict(weights)
        if not self._weights:
            raise ValueError("a cycle scheduler needs at least one backend with weight > 0")
        # Backends at weight 0 are known too: a dead or restarted one can be named.
        items = weights.items() if isinstance(weights, Mapping) else enumerate(weights)
        self._known = {int(backend) for backend, _ in items}
        self._dead: set[int] = set()
        self._rng = random.Random(seed)
        self._cycle: list[int] = []
        self._position = 0
        self.rebuilds = 0  # cycles rebuilt after construction (for reports and tests)
        self._set_weights(self._weights, count_rebuild=False)

    @property
    def weights(self) -> dict[int, int]:
        return dict(self._weights)

    @property
    def cycle(self) -> tuple[int, ...]:
        """The cycle of hints being walked."""
        return tuple(self._cycle)

    def next_hint(self, frame_id: int) -> int:
        """Next hint of the cycle.

        The position advances once per call rather than following
        ``frame_id``, so shares stay exact when frame ids skip (drops).
        """
        if not self._cycle:
            raise NoLiveBackendError("no live backend left to schedule frames to")
        hint = self._cycle[self._position]
        self._position = (self._position + 1) % len(self._cycle)
        return hint

    def observe(self, backend: int, service_time_s: float) -> None:
        """Static policies ignore service times."""

    def mark_dead(self, backend: int) -> None:
        """Remove ``backend`` from the cycle for good (idempotent)."""
        self._check_known(backend)
        self._dead.add(backend)
        if backend in self._weights:
            self._set_weights({b: w for b, w in self._weights.items() if b != backend})

    def revive(self, backend: int, weight: int) -> None:
        """Put a dead ``backend`` back into the cycle at ``weight`` (a restart)."""
        self._check_known(backend)
        self._dead.discard(backend)
        if weight > 0:
            self._set_weights({**self._weights, backend: weight})

    def _check_known(self, backend: int) -> None:
        if backend not in self._known:
            raise KeyError(f"unknown backend {backend}; known: {sorted(self._known)}")

    def _set_weights(self, weights: dict[int, int], *, count_rebuild: bool = True) -> None:
        # A new cycle starts from its beginning: its prefixes are the balanced ones.
        self._weights = weights
        self._cycle = cycle_in_runs(weights, self._runs, self._rng) if weights else []
        self._position = 0
        if count_rebuild:
            self.rebuilds += 1


class StaticScheduler(_CycleScheduler):
    """The seed's policy: a fixed weighted cycle; a dead backend leaves it."""


class AdaptiveScheduler(_CycleScheduler):
    """A weighted cycle re-weighted online from measured service times.

    Each backend's service time is smoothed with an EWMA and its rate taken
    as ``1 / ewma``. (Averaging times, not rates, keeps the rate unbiased:
    the mean of ``1/x`` over jittery samples overstates throughput.) Once
    every live backend has ``min_samples`` observations, the measured shares
    are compared with the shares the current weights were set for; when any
    backend's share moved by more than ``drift_threshold`` (relative), the
    weights are recomputed with :func:`integer_weights` and the cycle rebuilt
    if they changed. Small noise stays below the threshold and rebuilds
    nothing; in exchange weights may stay up to about ``drift_threshold``
    away from the measured rates, costing about that much throughput. A
    dead backend leaves for good (a stalled worker is killed by the pool, so
    it dies too); a restarted one comes back through :meth:`revive`.
    """

    def __init__(
        self,
        weights: Weights,
        seed: int = 0,
        *,
        alpha: float = 0.1,
        drift_threshold: float = 0.1,
        min_samples: int = 5,
        runs: Mapping[int, int] | None = None,
    ) -> None:
        # alpha: weight of the newest sample. 0.1 forgets in ~10 frames per
        # backend (fast enough for a 3x slowdown) and shrinks sample jitter
        # ~4x (std of the EWMA = std * sqrt(alpha / (2 - alpha))).
        # drift_threshold: stale weights cost about this fraction of the ideal
        # throughput before they are replaced (a backend fed share s but
        # supplying t < s runs the pipeline at t / s), so lower is tighter but
        # closer to the noise; 0.1 sits ~7 EWMA sigmas above +-10 % jitter.
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if drift_threshold <= 0:
            raise ValueError(f"drift_threshold must be > 0, got {drift_threshold}")
        if min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {min_samples}")
        self.alpha = alpha
        self.drift_threshold = drift_threshold
        self.min_samples = min_samples
        self._ewma_time: dict[int, float] = {}
        self._samples: dict[int, int] = {}
        self._reference_share: dict[int, float] = {}  # the shares the weights were set for
        super().__init__(weights, seed, runs)

    @property
    def service_rates(self) -> dict[int, float]:
        """Smoothed service rate (frames/s) of each observed backend."""
        return {b: 1.0 / t for b, t in self._ewma_time.items()}

    def observe(self, backend: int, service_time_s: float) -> None:
        """Fold one service time into the EWMA; re-weight if shares drifted."""
        self._check_known(backend)
        if not (math.isfinite(service_time_s) and service_time_s > 0):
            raise ValueError(f"service_time_s must be finite and > 0, got {service_time_s!r}")
        if backend in self._dead:
            return
        previous = self._ewma_time.get(backend)
        self._ewma_time[backend] = (
            service_time_s if previous is None else previous + self.alpha * (service_time_s - previous)
        )
        self._samples[backend] = self._samples.get(backend, 0) + 1
        self._reweight_if_drifted()

    def revive(self, backend: int, weight: int) -> None:
        """A restarted backend is measured again from scratch: it runs at
        ``weight`` until it has ``min_samples`` fresh service times, then the
        cycle follows what it measures now, not what it measured before."""
        self._ewma_time.pop(backend, None)
        self._samples.pop(backend, None)
        super().revive(backend, weight)

    def _set_weights(self, weights: dict[int, int], *, count_rebuild: bool = True) -> None:
        super()._set_weights(weights, count_rebuild=count_rebuild)
        total = sum(weights.values())
        self._reference_share = {b: w / total for b, w in weights.items()}

    def _reweight_if_drifted(self) -> None:
        live = self._weights
        if not live or any(self._samples.get(b, 0) < self.min_samples for b in live):
            return
        rates = {b: 1.0 / self._ewma_time[b] for b in live}
        total_rate = sum(rates.values())
        shares = {b: r / total_rate for b, r in rates.items()}
        reference = self._reference_share
        if all(abs(shares[b] - reference[b]) <= self.drift_threshold * reference[b] for b in live):
            return
        new_weights, _ = integer_weights(rates)
        if new_weights != live:
            self._set_weights(new_weights)
        # Anchor on the measured shares, not the rounded weights: otherwise a
        # rounding error above the threshold would be re-detected every frame.
        self._reference_share = shares


class PullScheduler:
    """Work-conserving policy: every frame may go to any idle worker."""

    def __init__(self, weights: Weights | None = None) -> None:
        # Weights only say which backends are live (for reports); they do not steer frames.
        self._weights = _weight_dict(weights) if weights is not None else {}

    @property
    def weights(self) -> dict[int, int]:
        return dict(self._weights)

    def next_hint(self, frame_id: int) -> int:
        return ANY_WORKER

    def observe(self, backend: int, service_time_s: float) -> None:
        """Pull scheduling needs no measurements."""

    def mark_dead(self, backend: int) -> None:
        """Drop ``backend`` from the reported weights; hints are unaffected."""
        self._weights.pop(backend, None)

    def revive(self, backend: int, weight: int) -> None:
        """Report ``backend`` live again; hints are unaffected."""
        self._weights[backend] = weight


SCHEDULER_MODES: Final = ("static", "adaptive", "pull")


def make_scheduler(
    mode: str,
    weights: Weights,
    seed: int = 0,
    *,
    runs: Mapping[int, int] | None = None,
    alpha: float = 0.1,
    drift_threshold: float = 0.1,
    min_samples: int = 5,
) -> Scheduler:
    """Build the scheduler for ``mode`` (one of :data:`SCHEDULER_MODES`).

    ``alpha``, ``drift_threshold`` and ``min_samples`` tune the adaptive policy only;
    ``runs`` (backend -> batch size) makes cycles hand batching backends runs of frames.
    """
    if mode == "static":
        return StaticScheduler(weights, seed, runs=runs)
    if mode == "adaptive":
        return AdaptiveScheduler(
            weights, seed, alpha=alpha, drift_threshold=drift_threshold, min_samples=min_samples,
            runs=runs,
        )
    if mode == "pull":
        return PullScheduler(weights)
    raise ValueError(f"unknown scheduling mode {mode!r}; choose one of {', '.join(SCHEDULER_MODES)}")
