"""Calibration you can trust: never cached when a worker died, restarted or
ran far below its peers; a cached one checked by a probe; identical workers
measured once; a worker that slows the others left out. Real processes."""
from __future__ import annotations

import json
import multiprocessing as mp
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aip.backends import BackendSpec
from aip.pipeline.calibration_cache import cached_entries
from aip.pipeline import Pipeline
from aip.results import FrameResult

pytestmark = pytest.mark.stress

SMALL = (48, 64, 3)


def sim(latency_s: float, **options: Any) -> BackendSpec:
    return BackendSpec("sim", {"latency_s": latency_s, **options})


def frames(count: int) -> list[np.ndarray]:
    return [np.full(SMALL, i % 256, np.uint8) for i in range(count)]


def kill_worker_soon(pipeline: Pipeline, index: int, after_s: float) -> threading.Thread:
    """SIGKILL a worker process ``after_s`` from now (during a calibration phase)."""
    def kill() -> None:
        time.sleep(after_s)
        pipeline.pool.workers[index].process.kill()

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def workers_used(pipeline: Pipeline, count: int) -> set[str]:
    return {r.backend for r in pipeline.run(frames(count)) if isinstance(r, FrameResult)}


@pytest.mark.parametrize("restart", [False, True])
def test_a_worker_killed_during_calibration_poisons_nothing(tmp_path: Path, restart: bool) -> None:
    """Killed during calibration (restarted or not): the measurement serves
    that run only, nothing is cached, and the next run uses every worker."""
    cache = tmp_path / "calibration.json"
    specs = [sim(0.01), sim(0.01)]
    with Pipeline(specs, mode="static", restart_workers=restart) as pipeline:
        pipeline.start(SMALL)
        killer = kill_worker_soon(pipeline, 0, 0.4)
        result = pipeline.calibrate(np.zeros(SMALL, np.uint8), seconds=1.0, cache_path=cache)
        killer.join()
        assert result.problems and any(p.startswith("sim#0") for p in result.problems)
        if not restart:
            assert pipeline.weights[0] == 0 and pipeline.weights[1] >= 1
    assert cached_entries(cache) == []  # nothing cached: the next run measures again
    with Pipeline(specs, mode="static") as pipeline:
        again = pipeline.calibrate(np.zeros(SMALL, np.uint8), seconds=0.6, cache_path=cache)
        assert not again.problems and all(w >= 1 for w in pipeline.weights)
        assert workers_used(pipeline, 120) == {"sim#0", "sim#1"}
    assert len(cached_entries(cache)) == 1
    assert mp.active_children() == []


def test_a_poisoned_cache_is_found_by_the_probe_and_measured_again(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A cache that says a live worker does 0 FPS (as one written before
    calibrations were checked could) is caught by the start-up probe."""
    cache = tmp_path / "calibration.json"
    specs = [sim(0.01), sim(0.01)]
    with Pipeline(specs, mode="static") as pipeline:
        pipeline.calibrate(np.zeros(SMALL, np.uint8), seconds=0.6, cache_path=cache)
    document = json.loads(cache.read_text())
    (entry,) = document["entries"].values()
    poisoned = next(name for name in entry["together_fps"] if name.startswith("sim#0"))
    entry["together_fps"][poisoned] = 0.0
    entry["weights"][poisoned] = 0
    cache.write_text(json.dumps(document))
    with caplog.at_level("WARNING", logger="aip.pipeline"), \
            Pipeline(specs, mode="static") as pipeline:
        result = pipeline.calibrate(np.zeros(SMALL, np.uint8), seconds=0.6, cache_path=cache)
        assert result.source == "measured" and all(w >= 1 for w in pipeline.weights)
        assert workers_used(pipeline, 120) == {"sim#0", "sim#1"}
    assert "measuring again" in caplog.text
    ((_, stored),) = cached_entries(cache)
    assert stored.together_fps[poisoned] > 0
    # And a sound cache passes its probe: used as it is.
    with Pipeline(specs, mode="static") as pipeline:
        again = pipeline.calibrate(np.zeros(SMALL, np.uint8), seconds=0.6, cache_path=cache)
        assert again.source == "cache" and again == stored
    assert mp.active_children() == []


def test_identical_workers_are_measured_alone_once(tmp_path: Path) -> None:
    specs = [sim(0.01), sim(0.01), sim(0.01), sim(0.03)]
    with Pipeline(specs, mode="static") as pipeline:
        result = pipeline.calibrate(np.zeros(SMALL, np.uint8), seconds=0.5,
                                    cache_path=tmp_path / "cal.json", subset=False)
    alone = {name.split("=")[0]: fps for name, fps in result.alone_fps.items()}
    assert alone["sim#0"] == alone["sim#1"] == alone["sim#2"] > 0  # one measurement, shared
    assert alone["sim#3"] != alone["sim#0"] and alone["sim#3"] > 0


def test_a_worker_that_slows_the_others_is_left_out(tmp_path: Path) -> None:
    """Two CPU-bound workers fill the two cores; a slow third one taking a
    share of them lowers the total: calibration leaves it out, and says so."""
    cache = tmp_path / "cal.json"
    specs = [sim(0.04, busy=True), sim(0.04, busy=True), sim(0.4, busy=True)]
    with Pipeline(specs, mode="static") as pipeline:
        result = pipeline.calibrate(np.zeros(SMALL, np.uint8), seconds=1.0, cache_path=cache)
        slow = next(name for name in result.together_fps if name.startswith("sim#2"))
        assert list(result.left_out) == [slow] and "without it" in result.left_out[slow]
        assert pipeline.weights[2] == 0 and not pipeline.pool.workers[2].process.is_alive()
        assert workers_used(pipeline, 200) == {"sim#0", "sim#1"}
    with Pipeline(specs, mode="static") as pipeline:  # from the cache: left out again
        cached = pipeline.calibrate(np.zeros(SMALL, np.uint8), seconds=1.0, cache_path=cache)
        assert cached.source == "cache" and list(cached.left_out) == [slow]
        assert not pipeline.pool.workers[2].process.is_alive()
        assert workers_used(pipeline, 100) == {"sim#0", "sim#1"}
    assert mp.active_children() == []


@pytest.mark.parametrize("mode", ["static", "pull"])
def test_a_latency_budget_keeps_frames_off_a_worker_that_cannot_make_it(tmp_path: Path,
                                                                       mode: str) -> None:
    """A 5 ms and a 100 ms worker, a 50 ms budget, more frames than the fast
    one can do: the slow one gets none (it never finishes in time), and the
    frames nobody can finish in time are late gaps, not results."""
    from aip.pipeline.reorder import Gap

    specs = [sim(0.005), sim(0.1)]
    frame = np.zeros(SMALL, np.uint8)
    with Pipeline(specs, mode=mode, latency_budget_ms=50) as pipeline:
        pipeline.calibrate(frame, seconds=0.6, cache_path=tmp_path / "cal.json", subset=False)
        pipeline.add_stream((frame for _ in range(900)), name="s", fps=300, policy="drop-oldest")
        out = list(pipeline.run())
    results = [r for r in out if isinstance(r, FrameResult)]
    late = [g for g in out if isinstance(g, Gap) and g.reason == "late"]
    assert len(out) == 900 and results and late
    assert {r.backend for r in results} == {"sim#0"}
    assert pipeline.metrics.frames_late == len(late)
    # Without a budget the slow worker gets its share: the budget is what kept it off.
    with Pipeline(specs, mode="pull") as pipeline:
        pipeline.add_stream((frame for _ in range(300)), name="s", fps=300, policy="drop-oldest")
        assert {r.backend for r in pipeline.run() if isinstance(r, FrameResult)} == {"sim#0", "sim#1"}
    assert mp.active_children() == []


def test_a_stream_budget_overrides_the_pipelines(tmp_path: Path) -> None:
    frame = np.zeros(SMALL, np.uint8)
    with Pipeline([sim(0.005)], latency_budget_ms=1000) as pipeline:
        pipeline.add_stream([frame] * 5, name="tight", latency_budget_ms=0.001)
        pipeline.add_stream([frame] * 5, name="loose")
        out = list(pipeline.run())
    tight = [r for r in out if r.stream == "tight"]
    loose = [r for r in out if r.stream == "loose"]
    assert len(tight) == 5 and not any(isinstance(r, FrameResult) for r in tight)
    assert len(loose) == 5 and all(isinstance(r, FrameResult) for r in loose)
