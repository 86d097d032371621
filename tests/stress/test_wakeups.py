"""Targeted wake-ups: a frame wakes the worker it is meant for, and a frame
any worker may take wakes one worker, not every idle one."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aip.ring import ANY_WORKER, SlotTable

pytestmark = pytest.mark.stress

N_WORKERS = 16
FRAMES = 1000
JOIN_S = 120

# A worker process: claims frames for its hint until the table shuts down,
# releases each at once, and reports how often its sleeps were woken.
WORKER = r"""
import json, sys
from aip._core import Closed, ANY_WORKER, SlotTable

name, worker, hint = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
table = SlotTable.attach(name)
print("ready", flush=True)
taken = 0
while True:
    try:
        slot = table.claim(hint, worker, timeout=None)
    except Closed:
        break
    taken += 1
    table.release(slot, worker)
print(json.dumps({"worker": worker, "taken": taken, "wakeups": table.wakeups}), flush=True)
table.close()
"""


def run_idle_workers(pull: bool) -> list[dict[str, int]]:
    """16 idle workers; FRAMES frames, one at a time, each hinted to worker 0
    (or, with ``pull``, to any worker). Returns each worker's report."""
    with SlotTable.create(n_slots=1, slot_bytes=8, wake_words=N_WORKERS) as table:
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, table.name, str(i),
                 str(ANY_WORKER if pull else i)],
                stdout=subprocess.PIPE, text=True,
            )
            for i in range(N_WORKERS)
        ]
        try:
            for worker in workers:
                assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
            for frame_id in range(FRAMES):
                # One slot: this waits until the previous frame was released,
                # so that every worker is idle again when the next comes.
                slot = table.acquire_free(timeout=JOIN_S)
                table.publish(slot, frame_id, ANY_WORKER if pull else 0)
            table.acquire_free(timeout=JOIN_S)  # the last frame is done
            table.shutdown()
            return [json.loads(w.communicate(timeout=JOIN_S)[0].strip()) for w in workers]
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()


def test_a_hinted_frame_wakes_only_its_worker() -> None:
    reports = run_idle_workers(pull=False)
    assert reports[0]["taken"] == FRAMES
    assert sum(r["taken"] for r in reports) == FRAMES
    # At most one wake-up per frame for worker 0, plus the shutdown's one
    # per worker and a few passed-on wakes from races; a broadcast would
    # give about N_WORKERS per frame.
    total = sum(r["wakeups"] for r in reports)
    others = sum(r["wakeups"] for r in reports[1:])
    assert total <= FRAMES + 2 * N_WORKERS + FRAMES // 20, reports
    assert others <= 2 * (N_WORKERS - 1) + FRAMES // 20, reports


def test_a_frame_for_any_worker_wakes_one_worker() -> None:
    reports = run_idle_workers(pull=True)
    assert sum(r["taken"] for r in reports) == FRAMES
    total = sum(r["wakeups"] for r in reports)
    assert total <= FRAMES + 2 * N_WORKERS + FRAMES // 10, reports
