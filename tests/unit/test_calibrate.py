from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from aip.pipeline.calibration_cache import (
    CalibrationKey,
    CalibrationResult,
    calibrate,
    default_cache_path,
    load_cached,
    machine_fingerprint,
    store,
    weights_from_measurements,
)
from aip.pipeline.scheduler import integer_weights

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
    monkeypatch.delenv("AIP_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_path() == tmp_path / ".cache" / "aip" / "calibration.json"
    assert not (tmp_path / ".cache").exists()  # nothing is created until something is stored


def run_calibrate(
    bench: FakeBench, cache: Path, key: CalibrationKey | None = None, **kwargs: Any
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


# ---- trust: probes, results not to cache, left-out backends -----------------------------------

def test_a_cached_result_that_passes_its_probe_is_used(tmp_path: Path) -> None:
    cache = tmp_path / "calibration.json"
    bench = FakeBench(ALONE, TOGETHER)
    first = run_calibrate(bench, cache)
    probed = {name: fps * 1.2 for name, fps in TOGETHER.items()}  # within 25 %
    again = run_calibrate(bench, cache, probe=lambda: probed)
    assert again == first and again.source == "cache" and bench.together_calls == 1


def test_a_cached_result_off_by_more_than_a_quarter_is_measured_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    cache = tmp_path / "calibration.json"
    run_calibrate(FakeBench(ALONE, TOGETHER), cache)
    slower = FakeBench(ALONE, {**TOGETHER, "gpu": 5.0})
    with caplog.at_level("WARNING", logger="aip.pipeline"):
        again = run_calibrate(slower, cache, probe=lambda: dict(slower.together))
    assert again.source == "measured" and again.together_fps["gpu"] == 5.0
    assert "off by" in caplog.text and "measuring again" in caplog.text
    assert load_cached(seed_key(), cache) == again


def test_a_measurement_with_problems_serves_its_run_and_is_never_cached(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    from aip.pipeline.calibration_cache import Together

    cache = tmp_path / "calibration.json"
    with caplog.at_level("WARNING", logger="aip.pipeline"):
        result = calibrate(seed_key(), ALONE.__getitem__,
                           lambda: Together({**TOGETHER, "cpu": 0.0}, problems=["cpu died"]),
                           path=cache)
    assert result.problems == ("cpu died",) and result.weights.get("cpu", 0) == 0
    assert load_cached(seed_key(), cache) is None and "not cached" in caplog.text


def test_left_out_backends_are_cached_with_their_reason(tmp_path: Path) -> None:
    from aip.pipeline.calibration_cache import Together, format_result

    cache = tmp_path / "calibration.json"
    result = calibrate(seed_key(), ALONE.__getitem__,
                       lambda: Together({**TOGETHER, "cpu": 0.0}, left_out={"cpu": "slows the rest"}),
                       path=cache)
    cached = load_cached(seed_key(), cache)
    assert cached == result and cached is not None and cached.left_out == {"cpu": "slows the rest"}
    assert "left out: cpu: slows the rest" in format_result(cached)


def test_an_entry_cached_before_the_trust_fields_still_loads(tmp_path: Path) -> None:
    cache = tmp_path / "calibration.json"
    result = run_calibrate(FakeBench(ALONE, TOGETHER), cache)
    document = json.loads(cache.read_text())
    for entry in document["entries"].values():
        entry.pop("left_out")
        entry.pop("problems")
    cache.write_text(json.dumps(document))
    assert load_cached(seed_key(), cache) == result


def test_probe_error_is_the_worst_of_each_backend_and_the_total() -> None:
    from aip.pipeline.calibration_cache import probe_error

    assert probe_error({"a": 10.0, "b": 10.0}, {"a": 10.0, "b": 10.0}) == 0
    assert probe_error({"a": 10.0, "b": 10.0}, {"a": 10.0, "b": 5.0}) == pytest.approx(0.5)
    assert probe_error({"a": 0.0, "b": 10.0}, {"a": 16.0, "b": 10.0}) >= 1.0  # a poisoned 0


def test_calibrate_show_lists_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from aip.app.cli import main

    monkeypatch.setenv("AIP_CACHE_DIR", str(tmp_path))
    assert main(["calibrate", "--show"]) == 0
    assert "no calibration cached" in capsys.readouterr().out
    store(seed_key(), weights_from_measurements(ALONE, TOGETHER), default_cache_path())
    assert main(["calibrate", "--show"]) == 0
    shown = capsys.readouterr().out
    assert "model yolo11n.pt, 640x480 frames, measured" in shown and "ane" in shown


def test_the_cache_folder_follows_aip_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aip.vision.models import default_cache_dir

    monkeypatch.setenv("AIP_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_path() == tmp_path / "c" / "calibration.json"
    assert default_cache_dir() == tmp_path / "c" / "models"
    monkeypatch.delenv("AIP_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_path() == tmp_path / ".cache" / "aip" / "calibration.json"
