from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from aip.pipeline.metrics import LatencyStats, Metrics

# Half the 2 % bucket width: the promised percentile accuracy.
PERCENTILE_TOLERANCE = 0.01


def stats_of(samples: np.ndarray) -> LatencyStats:
    stats = LatencyStats()
    for sample in samples:
        stats.record(float(sample))
    return stats


def test_empty_stats_report_nothing_rather_than_zero() -> None:
    stats = LatencyStats()
    assert stats.count == 0
    assert math.isnan(stats.mean_s)
    assert math.isnan(stats.p99_s)
    assert stats.to_dict() == {
        "count": 0,
        "mean_ms": None,
        "p50_ms": None,
        "p95_ms": None,
        "p99_ms": None,
        "max_ms": None,
    }


def test_a_single_sample_is_every_percentile_exactly() -> None:
    stats = stats_of(np.array([0.0421]))
    assert stats.p50_s == stats.p99_s == stats.max_s == stats.min_s == stats.mean_s == 0.0421


@pytest.mark.parametrize(
    "distribution",
    ["lognormal", "uniform", "bimodal"],
)
def test_percentiles_match_numpy_within_one_percent(distribution: str) -> None:
    rng = np.random.default_rng(7)
    samples = {
        "lognormal": rng.lognormal(mean=math.log(0.03), sigma=0.5, size=20_000),
        "uniform": rng.uniform(0.001, 0.1, size=20_000),
        "bimodal": np.concatenate([rng.normal(0.02, 0.001, 15_000), rng.normal(0.1, 0.005, 5_000)]),
    }[distribution]
    stats = stats_of(samples)
    for q in (1, 50, 90, 95, 99, 99.9):
        exact = float(np.percentile(samples, q, method="inverted_cdf"))  # nearest rank, as documented
        assert stats.percentile(q) == pytest.approx(exact, rel=PERCENTILE_TOLERANCE), q
    assert stats.count == samples.size
    assert stats.mean_s == pytest.approx(float(samples.mean()), rel=1e-9)
    assert (stats.min_s, stats.max_s) == (float(samples.min()), float(samples.max()))


def test_values_outside_the_histogram_range_stay_within_min_and_max() -> None:
    stats = stats_of(np.array([0.0, 1e-8, 5_000.0, 9_000.0]))
    assert stats.percentile(0) == 0.0
    assert stats.percentile(100) == 9_000.0
    assert 0.0 <= stats.p50_s <= 9_000.0
    assert stats.mean_s == pytest.approx((1e-8 + 14_000.0) / 4)


def test_memory_does_not_grow_with_the_number_of_samples() -> None:
    stats = stats_of(np.full(10, 0.01))
    buckets_before = len(stats._counts)
    for sample in np.random.default_rng(1).uniform(1e-5, 100.0, 50_000):
        stats.record(float(sample))
    assert len(stats._counts) == buckets_before


@pytest.mark.parametrize("bad", [-0.001, math.nan, math.inf])
def test_record_rejects_impossible_latencies(bad: float) -> None:
    with pytest.raises(ValueError):
        LatencyStats().record(bad)


@pytest.mark.parametrize("q", [-1, 100.5])
def test_percentile_rejects_out_of_range_q(q: float) -> None:
    with pytest.raises(ValueError):
        LatencyStats().percentile(q)


def seed_run() -> Metrics:
    """800 frames over 10 s from the seed's three backends, 5 : 2 : 1."""
    metrics = Metrics(ideal_fps=80.0, wall_time_s=10.0, manager_cpu_s=0.3)
    metrics.frames_generated = metrics.frames_assigned = 802
    metrics.frames_dropped = 2
    metrics.buffer_full_waits = 5
    service = {"ane": 0.02, "gpu": 0.05, "cpu": 0.1}
    for frame_id in range(800):
        backend = ["ane", "ane", "gpu", "ane", "ane", "gpu", "ane", "cpu"][frame_id % 8]
        metrics.record_processed(backend, service[backend])
        metrics.record_ordered(backend, 2 * service[backend], elapsed_s=frame_id / 80)
    return metrics


def test_recording_counts_per_backend_and_overall() -> None:
    metrics = seed_run()
    assert metrics.frames_processed == metrics.frames_ordered == 800
    assert {name: b.frames for name, b in metrics.backends.items()} == {"ane": 500, "gpu": 200, "cpu": 100}
    assert metrics.backends["gpu"].inference.p50_s == pytest.approx(0.05)
    assert metrics.backends["cpu"].end_to_end.p99_s == pytest.approx(0.2)
    assert metrics.inference.count == metrics.end_to_end.count == 800
    assert metrics.inference.mean_s == pytest.approx((500 * 0.02 + 200 * 0.05 + 100 * 0.1) / 800)


def test_derived_figures() -> None:
    metrics = seed_run()
    assert metrics.fps == pytest.approx(80.0)
    assert metrics.scheduling_efficiency == pytest.approx(1.0)
    assert metrics.manager_cpu_pct == pytest.approx(3.0)


def test_derived_figures_before_time_passes_or_without_calibration() -> None:
    metrics = Metrics()
    assert (metrics.fps, metrics.manager_cpu_pct, metrics.scheduling_efficiency) == (0.0, 0.0, None)


def test_fps_timeline_bins_ordered_frames_per_second() -> None:
    metrics = Metrics()
    for elapsed in (0.1, 0.9, 1.5, 3.2):
        metrics.record_ordered("cpu", 0.01, elapsed)
    assert metrics.fps_timeline == [2, 1, 0, 1]
    assert sum(seed_run().fps_timeline) == 800
    assert seed_run().fps_timeline == [80] * 10


@pytest.mark.parametrize("metrics", [seed_run(), Metrics()], ids=["seed run", "empty"])
def test_to_dict_is_plain_json_and_round_trips(metrics: Metrics) -> None:
    as_dict = metrics.to_dict()
    text = json.dumps(as_dict, allow_nan=False)  # NaN would not be valid JSON
    assert json.loads(text) == as_dict
    assert json.loads(metrics.to_json()) == as_dict


def test_to_dict_carries_the_section_5_figures() -> None:
    as_dict = seed_run().to_dict()
    assert as_dict["frames_dropped"] == 2
    assert as_dict["buffer_full_waits"] == 5
    assert as_dict["scheduling_efficiency"] == pytest.approx(1.0)
    assert as_dict["backends"]["ane"]["frames"] == 500
    assert as_dict["backends"]["ane"]["inference"]["p50_ms"] == pytest.approx(20.0)
    assert as_dict["end_to_end"]["p99_ms"] == pytest.approx(200.0)


def test_format_table_is_readable_and_aligned() -> None:
    table = seed_run().format_table()
    assert "generated 802" in table
    assert "dropped 2" in table
    assert "buffer-full waits 5" in table
    assert "80.0 FPS" in table
    assert "efficiency 100.0 %" in table
    assert "3.0 % of one core" in table
    rows = table.splitlines()[-4:]
    assert [row.split()[0] for row in rows] == ["ane", "gpu", "cpu", "all"]
    assert rows[0].split()[1:3] == ["500", "62.5%"]
    assert len({len(row) for row in rows}) == 1  # fixed width


def test_format_table_of_an_empty_run_shows_dashes() -> None:
    table = Metrics().format_table()
    assert "no calibrated ideal" in table
    assert table.splitlines()[-1].split() == ["all", "0", "-", "-", "-", "-", "-", "-", "-", "-"]


def test_histogram_counts_every_sample() -> None:
    stats = LatencyStats()
    for seconds in (0.01, 0.01, 0.02, 1e-7):
        stats.record(seconds)
    lower, counts = stats.histogram()
    assert counts.sum() == 4 and lower[0] == 0.0
    assert (np.diff(lower) > 0).all()


def test_plot_writes_a_png(tmp_path: Any) -> None:
    pytest.importorskip("matplotlib")
    metrics = Metrics(ideal_fps=50.0)
    for i in range(100):
        metrics.record_processed("onnx", 0.02 + i * 1e-4)
        metrics.record_ordered("onnx", 0.05, i / 40)
    path = tmp_path / "metrics.png"
    metrics.plot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
