"""Calibration measurement: workers alone, together, and the best subset.

    Calibrator.measure()
      alone      one worker of each distinct spec by itself (identical
                 workers run at one speed: measured once, not per worker)
      together   every live worker at once (pull among them): the weights
      subset     each distinct spec with one worker fewer: a worker whose
                 presence lowers the total (a CPU worker taking the cores
                 decoding or an accelerator's feeding needs) is left out
      trust      a worker that died or restarted during a phase, or that
                 measured far below its identical peers, makes the result
                 one not to cache (it would halve every later run)

Every phase drives the pool through the same run loop as a real run, with
a stream that repeats one frame (:meth:`Calibrator.throughput`).
"""
from __future__ import annotations

import itertools
import logging
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aip.pipeline.calibration_cache import (
    CalibrationKey,
    CalibrationResult,
    Together,
    calibrate,
    load_cached,
)
from aip.pipeline.metrics import Metrics
from aip.pipeline.loop import RunLoop
from aip.pipeline.streams import ReaderPolicy, Stream, StreamOptions
from aip.pipeline.targets import Targets
from aip.results import FrameResult

if TYPE_CHECKING:
    from aip.backends.base import BackendSpec
    from aip.pipeline.pool import WorkerPool

log = logging.getLogger("aip.pipeline")

# The internal stream calibration feeds (never a user's stream index).
CALIBRATION_STREAM = 0xFFFFFFFF
# A worker that measures below this share of its identical peers' median
# (the same backend, the same options) is suspect: something else was wrong
# (it died, restarted, or the machine was busy just then).
PEER_FLOOR = 0.5
# Leaving a worker out must raise the total by more than this to count:
# less is within what two phases on a busy machine differ by.
SUBSET_GAIN = 0.05


def spec_key(spec: BackendSpec) -> str:
    """Workers with the same key are identical: the same backend and options."""
    return f"{spec.name}:{sorted(spec.options.items())}"


@dataclass
class Phase:
    """One phase's frames per second per worker, and what went wrong in it."""

    rates: dict[int, float]
    died: set[int] = field(default_factory=set)
    restarted: set[int] = field(default_factory=set)


@dataclass
class Measured:
    """What :meth:`Calibrator.measure` found, by worker index."""

    alone: dict[int, float]
    together: dict[int, float]  # of the workers kept; 0 for those left out
    left_out: dict[int, str]  # worker -> why, with the figures
    problems: list[str]  # why the result must not be cached (empty: it may be)


class _CalibrationSchedule:
    """A scheduler for calibration: one worker alone, every worker (any of
    them takes the next frame), or a subset of them. A frame for "any
    worker" would go to workers outside a subset too, so a subset's frames
    go to its worker with the fewest frames outstanding (work-conserving
    among them, whatever their speeds)."""

    def __init__(self, workers: list[int], everyone: bool) -> None:
        from aip.ring import ANY_WORKER

        self._any = int(ANY_WORKER) if everyone and len(workers) > 1 else None
        self._outstanding = dict.fromkeys(workers, 0)
        self.revived: set[int] = set()

    @property
    def weights(self) -> dict[int, int]:
        return {}

    def next_hint(self, frame_id: int) -> int:
        if self._any is not None or not self._outstanding:
            from aip.ring import ANY_WORKER

            return int(ANY_WORKER) if self._any is None else self._any
        worker = min(self._outstanding, key=lambda w: (self._outstanding[w], w))
        self._outstanding[worker] += 1
        return worker

    def observe(self, backend: int, service_time_s: float) -> None:
        if backend in self._outstanding and self._outstanding[backend] > 0:
            self._outstanding[backend] -= 1

    def mark_dead(self, backend: int) -> None:
        self._outstanding.pop(backend, None)  # its frames were redirected to any worker

    def revive(self, backend: int, weight: int) -> None:
        self.revived.add(backend)  # restarted during the phase: its figure is not to be trusted


class Calibrator:
    """Measures a started pool's workers, through the run loop."""

    def __init__(self, pool: WorkerPool, labels: Sequence[str], ids: Any,
                 stream_timeout_s: float) -> None:
        self.pool = pool
        self.labels = list(labels)
        self.ids = ids
        self.stream_timeout_s = stream_timeout_s

    def measure(self, frame: np.ndarray, seconds: float, warmup_frames: int,
                *, subset: bool = True) -> Measured:
        specs = self.pool.specs
        problems: list[str] = []
        groups: dict[str, list[int]] = {}
        for index, spec in enumerate(specs):
            groups.setdefault(spec_key(spec), []).append(index)

        retired = {w.index for w in self.pool.workers if w.retired}  # left out before
        alone: dict[int, float] = dict.fromkeys(retired, 0.0)
        for members in groups.values():
            members = [w for w in members if w not in retired]
            if not members:
                continue
            live = [w for w in members if self.pool.workers[w].alive] or members[:1]
            phase = self.throughput(frame, live[:1], seconds, warmup_frames)
            self._note(phase, problems, "alone")
            for worker in members:  # identical workers run at one speed
                alone[worker] = phase.rates.get(live[0], 0.0)

        everyone = [w for w in range(len(specs)) if self.pool.workers[w].alive]
        phase = self.throughput(frame, everyone, seconds, warmup_frames)
        self._note(phase, problems, "together")
        together = {w: phase.rates.get(w, 0.0) for w in range(len(specs))}
        left_out = {w: "left out by an earlier calibration" for w in retired}
        if subset:
            together, found = self._best_subset(frame, seconds, warmup_frames, groups, together,
                                                problems)
            left_out.update(found)
        problems += self._below_peers(groups, together, left_out)
        return Measured(alone, together, left_out, problems)

    def probe(self, frame: np.ndarray, seconds: float, warmup_frames: int,
              workers: Sequence[int]) -> dict[int, float]:
        """A short together phase of ``workers``: do they still run at the cached speed?"""
        return self.throughput(frame, list(workers), seconds, warmup_frames).rates

    # ---- phases ------------------------------------------------------------------------------

    def throughput(self, frame: np.ndarray, workers: list[int], seconds: float,
                   warmup_frames: int) -> Phase:
        """Frames/s of each of ``workers`` kept busy together (pull among them),
        fed by a stream that repeats ``frame``, through the run loop."""
        pool = self.pool
        alive = [w for w in workers if pool.workers[w].alive]
        if not alive:
            return Phase(dict.fromkeys(workers, 0.0), died=set(workers))
        everyone = set(alive) == {w.index for w in pool.workers if w.alive}
        schedule = _CalibrationSchedule(alive, everyone)
        targets = Targets(schedule)
        stream = Stream("calibration", CALIBRATION_STREAM, itertools.repeat(frame),
                        StreamOptions(policy="block"), spec=None, opener=None,
                        first=(frame, time.perf_counter_ns()),
                        reader=ReaderPolicy(max_reconnects=0, reconnect_backoff_s=0.0))
        counts = dict.fromkeys(workers, 0)
        warm = dict.fromkeys(alive, 0)
        died: set[int] = set()
        processes = {w: pool.workers[w].process for w in alive}
        started_ns = 0
        # A worker may die (or never answer) during a phase: the phase ends by
        # this deadline anyway, without it, and says so.
        deadline = time.monotonic() + seconds + pool.options.stall_timeout_s

        def phase_over() -> bool:
            for worker in list(warm):
                if not pool.workers[worker].alive:
                    log.warning("worker %s died during calibration: it is measured at 0 FPS",
                                self.labels[worker])
                    del warm[worker]
                    died.add(worker)
            if not warm or time.monotonic() > deadline:
                return True
            return bool(started_ns) and time.perf_counter_ns() - started_ns >= seconds * 1e9

        loop = RunLoop(pool, {stream.index: stream}, targets, Metrics(),
                       stream_timeout_s=self.stream_timeout_s, on_event=lambda event: None,
                       stop_when=phase_over)
        stream.start(pool, targets, self.ids)
        try:
            for result in loop.results():
                if not isinstance(result, FrameResult) or result.worker not in warm:
                    continue
                if warm[result.worker] < warmup_frames:
                    warm[result.worker] += 1
                    if not started_ns and min(warm.values()) >= warmup_frames:
                        started_ns = time.perf_counter_ns()
                elif started_ns and result.t_infer_end_ns > started_ns:
                    counts[result.worker] += 1
        finally:
            elapsed = (time.perf_counter_ns() - started_ns) / 1e9 if started_ns else 0.0
            loop.finish()
        restarted = schedule.revived | {w for w, process in processes.items()
                                        if pool.workers[w].process is not process}
        rates = {worker: count / elapsed if elapsed > 0 and worker in warm else 0.0
                 for worker, count in counts.items()}
        return Phase(rates, died=died | (restarted - set(warm)), restarted=restarted)

    def _note(self, phase: Phase, problems: list[str], name: str) -> None:
        for worker in sorted(phase.died | phase.restarted):
            what = "restarted" if worker in phase.restarted else "died"
            problems.append(f"{self.labels[worker]} {what} during the {name} phase")

    # ---- the best subset ---------------------------------------------------------------------

    def _best_subset(self, frame: np.ndarray, seconds: float, warmup_frames: int,
                     groups: Mapping[str, list[int]], together: dict[int, float],
                     problems: list[str]) -> tuple[dict[int, float], dict[int, str]]:
        """Leave out, one at a time, a worker whose absence raises the total
        by more than ``SUBSET_GAIN``; the best such each round, until none does."""
        kept = [w for w, fps in together.items() if fps > 0 and self.pool.workers[w].alive]
        best_total = sum(together[w] for w in kept)
        left_out: dict[int, str] = {}
        while len(kept) > 1:
            trials: list[tuple[float, int, dict[int, float]]] = []
            for members in groups.values():
                candidates = [w for w in members if w in kept]
                if not candidates:
                    continue
                leave = candidates[-1]  # identical workers: leaving any one out is the same
                phase = self.throughput(frame, [w for w in kept if w != leave], seconds, warmup_frames)
                self._note(phase, problems, "subset")
                trials.append((sum(phase.rates.values()), leave, phase.rates))
            if not trials:
                break
            total, leave, rates = max(trials, key=lambda trial: trial[0])
            if total <= best_total * (1 + SUBSET_GAIN):
                break
            left_out[leave] = (f"the others do more without it: {best_total:.1f} FPS together "
                               f"with it, {total:.1f} FPS without it")
            kept.remove(leave)
            best_total = total
            together = {w: (rates.get(w, 0.0) if w in kept else 0.0) for w in together}
        return together, left_out

    def _below_peers(self, groups: Mapping[str, list[int]], together: Mapping[int, float],
                     left_out: Mapping[int, str]) -> list[str]:
        """Identical workers run at one speed: one far below the others was not measured right."""
        problems = []
        for members in groups.values():
            measured = [w for w in members if w not in left_out]
            if len(measured) < 2:
                continue
            median = statistics.median(together[w] for w in measured)
            for worker in measured:
                if together[worker] < PEER_FLOOR * median:
                    problems.append(f"{self.labels[worker]} measured {together[worker]:.1f} FPS "
                                    f"against {median:.1f} for its identical peers")
        return problems


@dataclass(frozen=True)
class CalibrationPlan:
    """How ``Pipeline.calibrate`` measures: see its docstring."""

    seconds: float = 2.0  # per phase
    warmup_frames: int = 2  # per worker, before each phase is timed
    subset: bool = True  # leave out a worker whose presence lowers the total
    probe_s: float | None = 1.0  # check a cached result this long; None: trust it
    refresh: bool = False  # measure again, whatever the cache holds
    model: str | None = None  # the cache key's model (default: from the specs)
    cache_path: Path | None = None  # default: calibration.json in aip's cache


def worker_names(pool: WorkerPool) -> list[str]:
    """Each worker's name in a calibration: its label and options (identical
    workers share a measurement, not a name)."""
    return [f"{label}={spec.options}" for label, spec in zip(pool.labels, pool.specs)]


def calibrate_pool(pool: WorkerPool, labels: Sequence[str], ids: Iterator[int], stream_timeout_s: float,
                   frame: np.ndarray, plan: CalibrationPlan) -> CalibrationResult:
    """The calibration of a started pool on ``frame``: cached, probed, or
    measured (:func:`aip.pipeline.calibration_cache.calibrate` decides);
    workers the result leaves out are retired."""
    names = worker_names(pool)
    key = CalibrationKey(model=plan.model or _model_name(pool.specs), backends=frozenset(names),
                         input_size=(int(frame.shape[0]), int(frame.shape[1])))
    calibrator = Calibrator(pool, labels, ids, stream_timeout_s)
    measured: list[Measured] = []  # measured once, on the first call that needs it

    def measure() -> Measured:
        if not measured:
            measured.append(calibrator.measure(frame, plan.seconds, plan.warmup_frames, subset=plan.subset))
        return measured[0]

    def together() -> Together:
        found = measure()
        return Together({names[w]: fps for w, fps in found.together.items()},
                        {names[w]: why for w, why in found.left_out.items()}, found.problems)

    def probe() -> dict[str, float]:
        cached = load_cached(key, plan.cache_path)
        skip = set(cached.left_out) if cached is not None else set()
        workers = [i for i, name in enumerate(names) if name not in skip and pool.workers[i].alive]
        rates = calibrator.probe(frame, plan.probe_s or 0.0, plan.warmup_frames, workers)
        return {names[w]: fps for w, fps in rates.items()}

    result = calibrate(key, lambda name: measure().alone[names.index(name)], together,
                       path=plan.cache_path, refresh=plan.refresh, probe=probe if plan.probe_s else None)
    for index, name in enumerate(names):
        if name in result.left_out:
            pool.retire(index, result.left_out[name])
    return result


def _model_name(specs: Sequence[BackendSpec]) -> str:
    models = {str(spec.options.get("model", spec.name)) for spec in specs}
    return ",".join(sorted(models))
