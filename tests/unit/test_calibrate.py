from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from pathlib import Path

import pytest

from aip.calibrate import (
    CalibrationKey,
    CalibrationResult,
    calibrate,
    default_cache_path,
    load_cached,
    machine_fingerprint,
    store,
    weights_from_measurements,
)
from aip.scheduler import integer_weights

ALONE = {"ane": 80.0, "gpu": 35.0, "cpu": 12.0}
TOGETHER = {"ane": 70.1, "gpu": 29.8, "cpu": 10.2}


def seed_key(
    model: str = "yolo11n.pt",
    backends: frozenset[str] = frozenset(TOGETHER),
    input_size: tuple[int, int] = (480, 640),
    machine: str = "m1",
) -> CalibrationKey:
    return CalibrationKey(model, backends, input_size, machine)


class FakeBench:
    """Measurement callables that count how often they are called."""

    def __init__(self, alone: Mapping[str, float], together: Mapping[str, float]) -> None:
        self.alone, self.together = dict(alone), dict(together)
        self.alone_calls: list[str] = []
        self.together_calls = 0

    def measure_alone(self, backend: str) -> float:
        self.alone_calls.append(backend)
        return self.alone[backend]

    def measure_together(self) -> dict[str, float]:
        self.together_calls += 1
        return dict(self.together)


def test_machine_fingerprint_names_the_machine_and_is_stable() -> None:
    fingerprint = machine_fingerprint()
    assert platform.machine() in fingerprint
    assert f"{os.cpu_count()}cpu" in fingerprint
    assert fingerprint == machine_fingerprint()
    assert CalibrationKey("m", frozenset({"cpu"}), (640, 640)).machine == fingerprint


def test_key_ignores_backend_order_but_not_what_matters() -> None:
    assert seed_key().as_str() == seed_key(backends=frozenset(["cpu", "gpu", "ane"])).as_str()
    variants = [
        seed_key(model="yolo11s.pt"),
        seed_key(backends=frozenset({"ane", "gpu"})),
        seed_key(input_size=(640, 640)),
        seed_key(machine="m2"),
    ]
    assert len({seed_key().as_str(), *(variant.as_str() for variant in variants)}) == 5


def test_weights_come_from_the_together_figures() -> None:
    result = weights_from_measurements(ALONE, TOGETHER)
    assert result.weights == {"ane": 7, "gpu": 3, "cpu": 1}
    assert (result.weights, result.rounding_error) == integer_weights(TOGETHER)
    assert result.alone_fps == ALONE
    assert result.together_fps == TOGETHER
    assert result.ideal_fps == pytest.approx(110.1)


def test_a_backend_that_managed_nothing_together_gets_no_weight() -> None:
    result = weights_from_measurements({"gpu": 30.0, "cpu": 5.0}, {"gpu": 30.0, "cpu": 0.0})
    assert result.weights == {"gpu": 1}
    assert result.alone_fps["cpu"] == 5.0


def test_weights_from_measurements_needs_the_same_backends() -> None:
    with pytest.raises(ValueError, match="different backends"):
        weights_from_measurements({"gpu": 1.0}, {"gpu": 1.0, "cpu": 1.0})


def test_result_round_trips_through_its_dict() -> None:
    result = weights_from_measurements(ALONE, TOGETHER)
    assert CalibrationResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_store_then_load(tmp_path: Path) -> None:
    cache = tmp_path / "nested" / "calibration.json"
    result = weights_from_measurements(ALONE, TOGETHER)
    assert load_cached(seed_key(), cache) is None
    store(seed_key(), result, cache)
    assert load_cached(seed_key(), cache) == result
    assert load_cached(seed_key(input_size=(640, 640)), cache) is None
    assert [p.name for p in cache.parent.iterdir()] == ["calibration.json"]  # no temporary left


def test_entries_for_different_keys_live_side_by_side(tmp_path: Path) -> None:
    cache = tmp_path / "calibration.json"
    first = weights_from_measurements(ALONE, TOGETHER)
    second = weights_from_measurements({"cpu": 9.0}, {"cpu": 9.0})
    store(seed_key(), first, cache)
    store(seed_key(backends=frozenset({"cpu"})), second, cache)
    assert load_cached(seed_key(), cache) == first
    assert load_cached(seed_key(backends=frozenset({"cpu"})), cache) == second


def test_a_cache_of_another_layout_version_is_ignored(tmp_path: Path) -> None:
    cache = tmp_path / "calibration.json"
    store(seed_key(), weights_from_measurements(ALONE, TOGETHER), cache)
    document = json.loads(cache.read_text())
    document["version"] = 999
    cache.write_text(json.dumps(document))
    assert load_cached(seed_key(), cache) is None


def test_a_malformed_entry_is_treated_as_missing(tmp_path: Path) -> None:
    cache = tmp_path / "calibration.json"
    cache.write_text(json.dumps({"version": 1, "entries": {seed_key().as_str(): {"weights": 3}}}))
    assert load_cached(seed_key(), cache) is None


def test_a_corrupt_cache_warns_and_is_replaced_by_the_next_store(tmp_path: Path) -> None:
    cache = tmp_path / "calibration.json"
    cache.write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable calibration cache"):
        assert load_cached(seed_key(), cache) is None
    result = weights_from_measurements(ALONE, TOGETHER)
    with pytest.warns(UserWarning, match="unreadable calibration cache"):
        store(seed_key(), result, cache)
    assert load_cached(seed_key(), cache) == result


def test_default_cache_path_is_resolved_at_call_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_path() == tmp_path / ".cache" / "aip" / "calibration.json"
    assert not (tmp_path / ".cache").exists()  # nothing is created until something is stored


def run_calibrate(
    bench: FakeBench, cache: Path, key: CalibrationKey | None = None, **kwargs: bool
) -> CalibrationResult:
    return calibrate(key or seed_key(), bench.measure_alone, bench.measure_together, path=cache, **kwargs)


def test_calibrate_measures_once_then_uses_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "calibration.json"
    bench = FakeBench(ALONE, TOGETHER)
    first = run_calibrate(bench, cache)
    assert sorted(bench.alone_calls) == sorted(TOGETHER)
    assert bench.together_calls == 1
    assert first.weights == {"ane": 7, "gpu": 3, "cpu": 1}
    assert run_calibrate(bench, cache) == first
    assert (len(bench.alone_calls), bench.together_calls) == (3, 1)


def test_calibrate_refresh_measures_again_and_overwrites(tmp_path: Path) -> None:
    cache = tmp_path / "calibration.json"
    run_calibrate(FakeBench(ALONE, TOGETHER), cache)
    slower_cpu = FakeBench(ALONE, {**TOGETHER, "cpu": 30.0})
    refreshed = run_calibrate(slower_cpu, cache, refresh=True)
    assert slower_cpu.together_calls == 1
    assert refreshed.together_fps["cpu"] == 30.0
    assert refreshed.weights == integer_weights(slower_cpu.together)[0]
    assert load_cached(seed_key(), cache) == refreshed


def test_calibrate_measures_a_new_key_separately(tmp_path: Path) -> None:
    cache = tmp_path / "calibration.json"
    run_calibrate(FakeBench(ALONE, TOGETHER), cache)
    bench = FakeBench(ALONE, TOGETHER)
    run_calibrate(bench, cache, key=seed_key(input_size=(640, 640)))
    assert bench.together_calls == 1


def test_calibrate_rejects_a_together_measurement_of_other_backends(tmp_path: Path) -> None:
    cache = tmp_path / "calibration.json"
    bench = FakeBench(ALONE, {"ane": 70.0, "gpu": 30.0})
    with pytest.raises(ValueError, match="measure_together"):
        run_calibrate(bench, cache)
    assert not cache.exists()
