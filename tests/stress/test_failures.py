"""Failure paths with real processes dying: during calibration, between a
result and its release, on a poison frame, and restarts."""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from aip.backends import BackendSpec
from aip.pipeline import Pipeline
from aip.pipeline.reorder import Gap
from aip.results import FrameResult

pytestmark = pytest.mark.stress

SMALL = (8, 8, 3)


def sim(latency_s: float, label: str = "", **faults: Any) -> BackendSpec:
    return BackendSpec("sim", {"latency_s": latency_s, **faults}, label)


def frames(count: int, start: int = 1) -> Iterator[np.ndarray]:
    """Frame i starts with byte (start + i) % 256: faults pick frames by it."""
    for i in range(count):
        yield np.full(SMALL, (start + i) % 256, np.uint8)


def assert_no_children_left() -> None:
    assert mp.active_children() == []


@pytest.mark.parametrize("phase", ["alone", "together"])
def test_a_worker_that_dies_during_calibration_is_left_out(
    phase: str, tmp_path: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    # "alone": it dies on its first frame; "together": after its alone phase.
    faults = {"crash_on": 7} if phase == "alone" else {"crash_after": 40}
    specs = [sim(0.005, "dies", **faults), sim(0.005, "lives")]
    with caplog.at_level(logging.WARNING, logger="aip.pipeline"), \
            Pipeline(specs, mode="static") as pipeline:
        result = pipeline.calibrate(np.full(SMALL, 7, np.uint8), seconds=0.5,
                                    cache_path=tmp_path / "cal.json")
        assert pipeline.weights[1] >= 1
        assert result.together_fps[next(k for k in result.together_fps if k.startswith("dies"))] == 0
        out = list(pipeline.run(frames(200, start=8)))
    assert "died during calibration" in caplog.text or "died" in caplog.text
    assert [r.frame_id for r in out] == list(range(200))
    assert all(isinstance(r, FrameResult) and r.backend == "lives" for r in out)
    assert_no_children_left()


@pytest.mark.parametrize("policy", ["block", "drop-oldest", "drop-newest", "latest"])
def test_a_worker_that_dies_between_put_and_release_loses_nothing(policy: str) -> None:
    # Every frame goes to "dies" until it dies; frame 20 (first byte 21)
    # kills it once that frame's result is out, before its slot is released.
    # The slot is reclaimed and "lives" does the frame again: a duplicate.
    specs = [sim(0.002, "dies", die_after_put_on=21), sim(0.002, "lives")]
    with Pipeline(specs, mode="static", weights=[1, 0], on_full=policy,
                  target_fps=200) as pipeline:
        out = list(pipeline.run(frames(300)))
    assert [r.frame_id for r in out] == list(range(300))  # once each, in order
    results = {r.frame_id for r in out if isinstance(r, FrameResult)}
    assert 20 in results  # its result counts: no gap for a frame that has one
    if policy == "block":
        assert len(results) == 300
    assert_no_children_left()


def test_a_poison_frame_that_kills_workers_becomes_a_failed_gap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Frame 12 (first byte 13) kills whichever worker takes it.
    specs = [sim(0.002, "a", crash_on=13), sim(0.002, "b", crash_on=13)]
    with caplog.at_level(logging.WARNING, logger="aip.pipeline"), \
            Pipeline(specs, mode="pull", restart_workers=True) as pipeline:
        out = list(pipeline.run(frames(200)))
    assert [r.frame_id for r in out] == list(range(200))
    gaps = [r for r in out if isinstance(r, Gap)]
    assert [(g.frame_id, g.reason) for g in gaps] == [(12, "failed")]
    assert "given up" in caplog.text and "killed 2 workers" in caplog.text
    assert_no_children_left()


def test_a_frame_that_raises_is_tried_again_then_a_failed_gap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    specs = [sim(0.002, "a", raise_on=13), sim(0.002, "b", raise_on=13)]
    with caplog.at_level(logging.WARNING, logger="aip.pipeline"), \
            Pipeline(specs, mode="pull") as pipeline:
        out = list(pipeline.run(frames(100)))
        alive = [w.alive for w in pipeline.pool.workers]
    assert [r.frame_id for r in out] == list(range(100))
    assert [(g.frame_id, g.reason) for g in out if isinstance(g, Gap)] == [(12, "failed")]
    assert "RuntimeError: sim: frame starting with 13" in caplog.text  # the traceback is logged
    assert alive == [True, True]  # an exception costs a frame, not a worker
    assert_no_children_left()


def test_a_killed_worker_is_restarted_and_works_again(caplog: pytest.LogCaptureFixture) -> None:
    specs = [sim(0.003, "victim"), sim(0.003, "other")]
    with caplog.at_level(logging.WARNING, logger="aip.pipeline"), \
            Pipeline(specs, mode="static", restart_workers=True) as pipeline:
        out: list[Any] = []
        first_pid = None
        for result in pipeline.run(frames(1500)):
            out.append(result)
            if len(out) == 200:
                first_pid = pipeline.pool.workers[0].process.pid
                os.kill(first_pid, signal.SIGKILL)
        victim = pipeline.pool.workers[0]
        assert victim.alive and victim.process.pid != first_pid
    assert [r.frame_id for r in out] == list(range(1500))
    assert all(isinstance(r, FrameResult) for r in out)
    assert "is back" in caplog.text
    assert any(r.backend == "victim" for r in out[-300:])  # back in the schedule
    assert_no_children_left()


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="looks in /dev/shm")
def test_a_starting_pipeline_sweeps_segments_of_dead_creators() -> None:
    import subprocess
    import sys

    from aip.ring import ResultRing

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(gone.stdout)
    with ResultRing.create(capacity=2, record_size=8) as orphan:
        path = f"/dev/shm/{orphan.name}"
        with open(path, "r+b") as f:  # as if a dead process had made it
            f.seek(24)
            f.write(dead_pid.to_bytes(4, "little"))
        with Pipeline([sim(0.001)]) as pipeline:
            pipeline.start(SMALL)
            assert not os.path.exists(path)
    assert_no_children_left()


def test_a_worker_killed_mid_batch_loses_no_frame() -> None:
    # Batches of 4; frame 40 (first byte 41) kills the batching worker while it
    # holds a whole batch: every frame it held goes to the other worker.
    specs = [sim(0.01, "batcher", batch=4, max_wait_ms=20, crash_on=41), sim(0.003, "single")]
    with Pipeline(specs, mode="pull") as pipeline:
        out = list(pipeline.run(frames(200)))
    assert [r.frame_id for r in out] == list(range(200))
    failed = [r.frame_id for r in out if isinstance(r, Gap)]
    assert failed == []  # one crash is one attempt: the frames are done again
    assert_no_children_left()
