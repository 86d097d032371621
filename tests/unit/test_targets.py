"""Latency budgets: which worker can finish a frame in time (on fakes)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aip.pipeline.targets import DELIVERY_S, SERVICE_SLACK, Targets
from aip.ring import ANY_WORKER

MS = 1_000_000


class FixedSchedule:
    """Always picks ``pick``; counts observations."""

    def __init__(self, pick: int) -> None:
        self.pick = pick
        self.observed: list[tuple[int, float]] = []

    @property
    def weights(self) -> dict[int, int]:
        return {}

    def next_hint(self, frame_id: int) -> int:
        return self.pick

    def observe(self, backend: int, service_time_s: float) -> None:
        self.observed.append((backend, service_time_s))

    def mark_dead(self, backend: int) -> None:
        pass

    def revive(self, backend: int, weight: int) -> None:
        pass


@dataclass
class FakeWorker:
    index: int
    alive: bool = True


class FakeTable:
    def __init__(self, slots: list[dict[str, Any]]) -> None:
        self.slots = slots
        self.n_slots = len(slots)

    def slot_info(self, slot: int) -> dict[str, Any]:
        return self.slots[slot]


class FakePool:
    def __init__(self, workers: int, slots: list[dict[str, Any]]) -> None:
        self.workers = [FakeWorker(i) for i in range(workers)]
        self.table = FakeTable(slots)


def free() -> dict[str, Any]:
    return {"state": "FREE", "target": 0, "owner": None, "t_claim_ns": 0}


def ready_for(worker: int) -> dict[str, Any]:
    return {"state": "READY", "target": worker, "owner": None, "t_claim_ns": 0}


def held_by(worker: int, since_ns: int) -> dict[str, Any]:
    return {"state": "READING", "target": worker, "owner": worker, "t_claim_ns": since_ns}


def finish_ms(service_ms: float, frames: int) -> float:
    return frames * service_ms * (1 + SERVICE_SLACK) + DELIVERY_S * 1e3


def test_no_deadline_is_the_schedulers_pick() -> None:
    targets = Targets(FixedSchedule(1), FakePool(2, [free()]), {0: 0.005, 1: 0.1})
    assert targets.target_for(7, 0) == (1, 0)


def test_the_pick_that_meets_the_deadline_keeps_it() -> None:
    targets = Targets(FixedSchedule(0), FakePool(2, [free()] * 4), {0: 0.005, 1: 0.1})
    deadline = time.perf_counter_ns() + 50 * MS
    worker, latest_start = targets.target_for(1, deadline)  # type: ignore[misc]
    assert worker == 0
    assert latest_start == deadline - int(finish_ms(5, 1) * MS)


def test_a_pick_that_would_be_late_goes_to_a_worker_in_time() -> None:
    targets = Targets(FixedSchedule(1), FakePool(2, [free()] * 4), {0: 0.005, 1: 0.1})
    route = targets.target_for(1, time.perf_counter_ns() + 50 * MS)
    assert route is not None and route[0] == 0


def test_queues_count_and_no_worker_in_time_means_late() -> None:
    now = time.perf_counter_ns()
    # The fast worker holds a frame and 9 wait for it: 10 more x 5.5 ms > 50 ms.
    slots = [held_by(0, now)] + [ready_for(0)] * 9 + [free()] * 6
    targets = Targets(FixedSchedule(0), FakePool(2, slots), {0: 0.005, 1: 0.1})
    assert targets.target_for(1, now + 50 * MS) is None
    assert targets.target_for(2, now + 200 * MS) is not None  # a longer budget: in time


def test_dead_workers_are_never_chosen() -> None:
    pool = FakePool(2, [free()] * 2)
    pool.workers[0].alive = False
    targets = Targets(FixedSchedule(0), pool, {0: 0.005, 1: 0.1})
    assert targets.target_for(1, time.perf_counter_ns() + 50 * MS) is None
    route = targets.target_for(2, time.perf_counter_ns() + 500 * MS)
    assert route is not None and route[0] == 1


def test_service_times_follow_the_results() -> None:
    schedule = FixedSchedule(0)
    targets = Targets(schedule, None)
    for _ in range(60):
        targets.observe(0, 0.02)
    assert abs(targets.service_s[0] - 0.02) < 1e-6 and len(schedule.observed) == 60
    assert targets.target_for(1, time.perf_counter_ns() + MS) == (0, 0)  # no pool: no budgets
    assert int(ANY_WORKER) != 0
