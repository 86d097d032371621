"""Targets: which worker a frame goes to, and whether any can meet its deadline.

The scheduler (static, adaptive or pull) picks a worker for each frame; it
is shared by every reader thread, so this wraps it in a lock. With a latency
budget, the pick must also finish in time:

    predicted finish of worker w = now + what is left of the frame in its
                                   hands + (frames waiting for it + 1) x its
                                   per-frame service time (running mean)

A frame goes to the scheduler's pick when that meets the frame's deadline
(its capture time + the budget), else to the worker that finishes it first,
if that one does; when none can, :meth:`Targets.target_for` says so and the
frame is a ``late`` gap before any inference is spent on it. The worker that
takes it skips it too (a ``late`` gap) if it claims it too late to finish in
time: a delivered frame always met its budget.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from aip.pipeline.scheduler import NoLiveBackendError

if TYPE_CHECKING:
    from aip.pipeline.pool import WorkerPool
    from aip.pipeline.scheduler import Scheduler

# Weight of a new per-frame service time in a worker's running mean.
SERVICE_EWMA = 0.2
# A frame's service time runs this much over the mean (a sleep's overshoot,
# a busy core), and its result takes this long to reach the caller (the
# ring, the loop's wake-up, the reorder): a budget keeps both in hand.
SERVICE_SLACK = 0.1
DELIVERY_S = 0.002


class Targets:
    """The scheduler, shared by every reader thread (it is not thread-safe),
    and each worker's service time, for latency budgets."""

    def __init__(self, scheduler: Scheduler, pool: WorkerPool | None = None,
                 service_s: dict[int, float] | None = None) -> None:
        self.scheduler = scheduler
        self.pool = pool  # to see the queues; None: no budgets (calibration)
        self.service_s = dict(service_s or {})  # per-frame, by worker
        self._lock = threading.Lock()

    def next_target(self, frame_id: int) -> int:
        with self._lock:
            return self._pick(frame_id)

    def target_for(self, frame_id: int, deadline_ns: int) -> tuple[int, int] | None:
        """``(worker, latest start)`` for a frame due by ``deadline_ns``
        (``perf_counter_ns``; 0: no deadline, and no latest start), or None
        when no worker can finish it by then."""
        with self._lock:
            pick = self._pick(frame_id)
            if not deadline_ns or self.pool is None or self.pool.table is None:
                return pick, 0
            finish = self._predicted_finish()
            if finish.get(pick, deadline_ns + 1) > deadline_ns:
                meeting = [(at, worker) for worker, at in finish.items() if at <= deadline_ns]
                if not meeting:
                    return None
                pick = min(meeting)[1]
            return pick, deadline_ns - self._duration_ns(pick, 1)

    def _pick(self, frame_id: int) -> int:
        try:
            return int(self.scheduler.next_hint(frame_id))
        except NoLiveBackendError:
            # Every worker is dead for now (restarts pending): whoever
            # comes back first takes it.
            from aip.ring import ANY_WORKER

            return int(ANY_WORKER)

    def _predicted_finish(self) -> dict[int, int]:
        """When each live worker would finish one more frame (perf_counter_ns)."""
        assert self.pool is not None
        table = self.pool.table
        now = time.perf_counter_ns()
        live = [w.index for w in self.pool.workers if w.alive]
        waiting = dict.fromkeys(live, 0)
        busy_until = dict.fromkeys(live, now)
        for slot in range(table.n_slots):
            info = table.slot_info(slot)
            if info["state"] == "READY" and info["target"] in waiting:
                waiting[info["target"]] += 1
            elif info["state"] == "READING" and info["owner"] in busy_until:
                worker = info["owner"]
                ends = info["t_claim_ns"] + int(self.service_s.get(worker, 0.0) * 1e9)
                busy_until[worker] = max(busy_until[worker], ends)
        return {w: busy_until[w] + self._duration_ns(w, waiting[w] + 1) for w in live}

    def _duration_ns(self, worker: int, frames: int) -> int:
        """How long ``worker`` takes for ``frames`` more frames, and their delivery."""
        service = self.service_s.get(worker, 0.0) * (1 + SERVICE_SLACK)
        return int((frames * service + DELIVERY_S) * 1e9)

    def observe(self, worker: int, service_s: float) -> None:
        with self._lock:
            self.scheduler.observe(worker, service_s)
            known = self.service_s.get(worker)
            self.service_s[worker] = (service_s if known is None
                                      else known + SERVICE_EWMA * (service_s - known))

    def mark_dead(self, worker: int) -> None:
        with self._lock:
            self.scheduler.mark_dead(worker)

    def revive(self, worker: int, weight: int) -> None:
        with self._lock:
            self.scheduler.revive(worker, weight)
