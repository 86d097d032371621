"""Micro-batching in workers: batches fill, per-stream order holds, the
static cycle hands a batching worker runs of frames."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest

from aip.backends import BackendSpec
from aip.pipeline import Pipeline
from aip.results import FrameResult
from aip.pipeline.scheduler import cycle_in_runs, make_scheduler
from aip.pipeline.worker import BatchWait

pytestmark = pytest.mark.stress


def frames(count: int) -> Iterator[np.ndarray]:
    for i in range(count):
        yield np.full((8, 8, 3), i % 256, np.uint8)


def test_a_batching_worker_runs_batches_and_keeps_each_streams_order() -> None:
    spec = BackendSpec("sim", {"latency_s": 0.01, "batch": 8, "max_wait_ms": 50})
    with Pipeline([spec], mode="pull") as pipeline:
        out = list(pipeline.run([frames(160), frames(160)]))
        metrics = pipeline.metrics
    for name in ("s0", "s1"):
        assert [r.frame_id for r in out if r.stream == name] == list(range(160))
    assert all(isinstance(r, FrameResult) for r in out)
    # One 10 ms service per batch of up to 8: far fewer calls than frames.
    batches = Counter((r.worker, r.t_infer_start_ns) for r in out)
    assert max(batches.values()) == 8 and len(batches) < 320 / 4
    assert metrics.frames_ordered == 320


def test_static_cycles_hand_batching_workers_runs_with_exact_shares() -> None:
    import random

    cycle = cycle_in_runs({0: 7, 1: 3}, {0: 8}, random.Random(0))
    assert Counter(cycle) == {0: 56, 1: 24}  # 7:3 exactly
    runs = [len(list(group)) for key, group in __import__("itertools").groupby(cycle) if key == 0]
    assert all(run % 8 == 0 for run in runs)  # worker 0's frames come 8 (or 16, ...) at a time
    scheduler = make_scheduler("static", [7, 3], runs={0: 8})
    hints = [scheduler.next_hint(i) for i in range(80)]
    assert Counter(hints) == {0: 56, 1: 24}


def test_batch_wait_is_fixed_when_given_and_adapts_when_not() -> None:
    assert BatchWait(25).wait_s() == pytest.approx(0.025)
    auto = BatchWait()
    assert auto.wait_s() == 0.0  # no service time measured yet: don't wait
    auto.observe(0.04)
    assert auto.wait_s() == pytest.approx(0.02)  # half a batch's service time
    for i in range(10):  # frames come every 5 ms: a batch fills within the budget
        auto.arrived(i * 5_000_000)
    assert auto.wait_s() == pytest.approx(0.02)
    for i in range(10):  # now every 100 ms: waiting would only add latency
        auto.arrived(50_000_000 + (i + 1) * 100_000_000)
    assert auto.wait_s() == 0.0
    auto.observe(1.0)
    assert BatchWait().wait_s() == 0.0 and auto.wait_s() <= BatchWait.AUTO_MAX_WAIT_S
