"""The pipeline on the sim backend: ordering, drops, shares, crashes, cleanup."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from aip.backends import BackendSpec, BackendUnavailable
from aip.pipeline import Pipeline
from aip.pipeline import StreamError
from aip.pipeline.reorder import Gap
from aip.results import FrameResult

pytestmark = pytest.mark.stress

SMALL = (8, 8, 3)  # frame content does not matter to sim workers


def frames(count: int, shape: tuple[int, int, int] = SMALL) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(0)
    for _ in range(count):
        yield rng.integers(0, 256, shape, dtype=np.uint8)


def sim(latency_s: float, jitter_s: float = 0.0, seed: int = 0, label: str = "") -> BackendSpec:
    return BackendSpec("sim", {"latency_s": latency_s, "jitter_s": jitter_s, "seed": seed}, label)


def assert_no_children_left() -> None:
    assert mp.active_children() == []


@pytest.mark.parametrize("mode", ["static", "adaptive", "pull"])
def test_exactly_once_in_order_with_jitter(mode: str) -> None:
    specs = [sim(0.001, 0.001, seed=1), sim(0.002, 0.002, seed=2), sim(0.0005, 0.0005, seed=3)]
    with Pipeline(specs, mode=mode, weights=[2, 1, 4]) as pipeline:
        out = list(pipeline.run(frames(5000)))
        metrics = pipeline.metrics
    assert [r.frame_id for r in out] == list(range(5000))
    assert all(isinstance(r, FrameResult) for r in out)
    assert metrics.frames_ordered == metrics.frames_processed == 5000
    assert metrics.frames_dropped == 0
    assert sum(b.frames for b in metrics.backends.values()) == 5000
    assert_no_children_left()


@pytest.mark.parametrize("policy", ["drop-newest", "drop-oldest"])
def test_drop_policies_count_exactly_what_they_drop(policy: str) -> None:
    # one slow worker, two slots, frames offered 10x faster than it can go
    with Pipeline([sim(0.01)], mode="pull", on_full=policy, n_slots=2, target_fps=1000) as pipeline:
        out = list(pipeline.run(frames(300)))
        metrics = pipeline.metrics
    assert [item.frame_id for item in out] == list(range(300))  # every frame once, in order
    gaps = [item for item in out if isinstance(item, Gap)]
    assert gaps and all(gap.reason == "dropped" for gap in gaps)
    assert len(gaps) == metrics.frames_dropped
    assert metrics.frames_ordered == 300 - len(gaps) == metrics.frames_processed
    assert metrics.frames_generated == 300
    if policy == "drop-newest":
        assert metrics.frames_assigned == 300 - len(gaps)
    else:  # dropped frames were assigned, then replaced before a worker took them
        assert metrics.frames_assigned == 300


def test_block_policy_loses_nothing_and_counts_waits() -> None:
    with Pipeline([sim(0.002)], mode="pull", n_slots=2) as pipeline:
        out = list(pipeline.run(frames(200)))
        metrics = pipeline.metrics
    assert [r.frame_id for r in out] == list(range(200))
    assert not any(isinstance(r, Gap) for r in out)
    assert metrics.frames_dropped == 0
    assert 0 < metrics.buffer_full_waits <= 200


def test_static_weights_give_shares_within_one_frame_per_cycle() -> None:
    weights = [3, 2, 1]
    specs = [sim(0.0005, label="a"), sim(0.0005, label="b"), sim(0.0005, label="c")]
    total = 6 * 150 + 4  # not a whole number of cycles
    with Pipeline(specs, mode="static", weights=weights) as pipeline:
        list(pipeline.run(frames(total)))
        shares = {name: b.frames for name, b in pipeline.metrics.backends.items()}
    for label, weight in zip("abc", weights):
        assert abs(shares[label] - total * weight / sum(weights)) <= 1, shares


def test_killed_worker_frames_are_redone_and_its_weight_dropped() -> None:
    specs = [sim(0.002, label="a"), sim(0.002, label="b"), sim(0.004, label="victim")]
    with Pipeline(specs, mode="static", weights=[1, 1, 2]) as pipeline:
        out: list[Any] = []
        for result in pipeline.run(frames(1500)):
            out.append(result)
            if len(out) == 300:
                victim = pipeline.pool.workers[2].process
                os.kill(victim.pid, signal.SIGKILL)
        scheduler = pipeline.scheduler
        metrics = pipeline.metrics
    assert [r.frame_id for r in out] == list(range(1500))  # nothing lost, nothing twice
    assert all(isinstance(r, FrameResult) for r in out)
    assert scheduler is not None and 2 not in scheduler.weights
    late = [r for r in out[-500:] if r.backend == "victim"]
    assert late == []
    assert metrics.frames_ordered == 1500
    assert_no_children_left()


def test_unknown_backend_is_refused_before_anything_starts() -> None:
    with pytest.raises(BackendUnavailable, match="unknown backend 'tpu'"):
        Pipeline([BackendSpec("tpu")])
    assert_no_children_left()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "fastest"}, "unknown mode"),
        ({"on_full": "drop-all"}, "unknown on_full"),
        ({"weights": [1, 2]}, "2 weights for 1 backends"),
        ({"target_fps": 0}, "target_fps"),
    ],
)
def test_bad_options_are_clear_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Pipeline([sim(0.001)], **kwargs)


def test_frames_of_other_sizes_are_fine_up_to_the_slots_size() -> None:
    def changing() -> Iterator[np.ndarray]:
        yield np.zeros(SMALL, np.uint8)
        yield np.zeros((4, 6, 3), np.uint8)  # smaller: fits its slot, says its size
        yield np.zeros((16, 16, 3), np.uint8)  # larger than the slots: the stream fails

    with Pipeline([sim(0.001)]) as pipeline:
        out: list[Any] = []
        with pytest.raises(StreamError, match="larger than the pipeline's slots.*max_frame_shape"):
            for result in pipeline.run(changing()):
                out.append(result)
        assert [r.frame_id for r in out] == [0, 1]  # what was read is delivered first
        assert pipeline.events[-1].kind == "evicted"
    assert_no_children_left()


def test_calibration_weights_follow_service_rates(tmp_path: Any) -> None:
    specs = [sim(0.01, label="fast"), sim(0.03, label="slow")]
    with Pipeline(specs, mode="static") as pipeline:
        result = pipeline.calibrate(np.zeros(SMALL, np.uint8), seconds=0.6,
                                    cache_path=tmp_path / "cal.json")
        # 10 ms vs 30 ms per frame: ~3:1, whatever the machine's noise
        assert pipeline.weights[0] > pipeline.weights[1] >= 1
        assert result.ideal_fps == pytest.approx(sum(result.together_fps.values()))
        again = pipeline.calibrate(np.zeros(SMALL, np.uint8), cache_path=tmp_path / "cal.json")
        assert again == result  # reused from the cache, not measured again
        out = list(pipeline.run(frames(60)))
    assert [r.frame_id for r in out] == list(range(out[0].frame_id, out[0].frame_id + 60))


def test_stalled_worker_is_killed_and_its_frames_redone() -> None:
    stalling = BackendSpec("sim", {"latency_s": 0.002, "slowdown_after": 20,
                                   "slowdown_factor": 10_000}, "stalls")
    with Pipeline([stalling, sim(0.002, label="steady")], mode="pull",
                  stall_timeout_s=2.0) as pipeline:
        out = list(pipeline.run(frames(300)))
    assert [r.frame_id for r in out] == list(range(300))
    assert all(isinstance(r, FrameResult) for r in out)
    assert sum(r.backend == "stalls" for r in out) <= 21
    assert_no_children_left()


MANAGER_DIES = """
import os, signal, sys
import numpy as np
from aip.backends import BackendSpec
from aip.pipeline import Pipeline

if __name__ == "__main__":
    pipeline = Pipeline([BackendSpec("sim", {"latency_s": 0.01})] * 2, mode="pull")
    frames = (np.zeros((8, 8, 3), np.uint8) for _ in range(10_000))
    for i, result in enumerate(pipeline.run(frames)):
        if i == 20:
            print(" ".join(str(w.process.pid) for w in pipeline.pool.workers), flush=True)
            print(pipeline.pool.table.name, pipeline.pool.ring.name, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="looks in /dev/shm")
def test_killed_manager_leaves_no_orphan_worker_or_segment(tmp_path: Any) -> None:
    import subprocess
    import sys
    import time

    script = tmp_path / "manager_dies.py"
    script.write_text(MANAGER_DIES)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pids_line, names_line = proc.stdout.strip().splitlines()
    pids, names = [int(p) for p in pids_line.split()], names_line.split()

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    deadline = time.monotonic() + 30
    while (any(map(alive, pids)) or any(os.path.exists(f"/dev/shm/{n}") for n in names)) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(alive, pids)), "workers outlived their manager"
    assert not any(os.path.exists(f"/dev/shm/{n}") for n in names), "segments leaked"


class _FailingScheduler:
    """A scheduler that fails while a reader holds a slot for writing."""

    def __init__(self, inner: Any, at_frame: int) -> None:
        self._inner = inner
        self._at_frame = at_frame

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def next_hint(self, frame_id: int) -> int:
        if frame_id == self._at_frame:
            raise RuntimeError("boom")
        return int(self._inner.next_hint(frame_id))


def test_a_failure_between_acquire_and_publish_hands_the_slot_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import aip.pipeline.facade

    real = aip.pipeline.facade.make_scheduler
    monkeypatch.setattr(
        aip.pipeline.facade, "make_scheduler",
        lambda *args, **kwargs: _FailingScheduler(real(*args, **kwargs), at_frame=5),
    )
    with Pipeline([sim(0.001)], mode="pull", n_slots=4) as pipeline:
        with pytest.raises(StreamError, match="boom"):
            list(pipeline.run(frames(20)))
        counts = pipeline.pool.table.counts()
    assert counts["WRITING"] == 0 and counts["READY"] == 0, counts
    assert_no_children_left()
