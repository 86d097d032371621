"""The benchmark suites' plumbing runs (their figures are not checked here)."""
from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from aip.bench import ring
from aip.bench.__main__ import main
from aip.bench.report import format_table, publish


def test_unknown_suite_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nope"]) == 2
    assert "unknown suite" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "ring" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["ring", "--help"])
    assert exit_info.value.code == 0


def test_ring_measurements_run_end_to_end() -> None:
    mechanisms = {m.key: m for m in ring.available_mechanisms()}
    for key, batch_max in ((("aip.ResultRing", "get"), 1), (("aip.ResultRing", "get_many"), 512)):
        mechanism = mechanisms[key]
        assert mechanism.batch_max == batch_max
        mechanism.messages = 2000
        row = ring.run_messages(mechanism, producers=2, paced=False)
        assert row["msgs_per_s"] > 0 and 1 <= row["batch_mean"] <= batch_max
    paced = ring.run_messages(mechanisms[("multiprocessing.Pipe", "recv_bytes")], producers=1,
                              paced=True, paced_seconds=0.05)
    assert 0 < paced["p50_us"] <= paced["p99_us"]
    assert ring.frames_slot_table(20) > 0 and ring.frames_shm_pipe(20) > 0


def test_every_one_record_call_says_so() -> None:
    for mechanism in ring.available_mechanisms():
        assert (mechanism.batch_max == 1) == (mechanism.call != "get_many"), mechanism.key


def test_busy_cores_starts_and_stops_its_spinners() -> None:
    with ring.busy_cores(1) as n:
        assert n == 1
        children = mp.active_children()
        assert children
    for child in children:
        assert not child.is_alive()


def test_summary_states_batch_sizes_and_targets() -> None:
    def row(mechanism: str, call: str, batch_max: int, producers: int, rate: float,
            p50: float) -> dict[str, object]:
        return {"mechanism": mechanism, "call": call, "batch_max": batch_max,
                "batch_mean": 1.0, "producers": producers, "msgs_per_s": rate,
                "idle_p50_us": p50, "idle_p99_us": 2 * p50,
                "loaded_p50_us": p50, "loaded_p99_us": 3 * p50}

    results = []
    for producers in (1, 2):
        results += [row("aip.ResultRing", "get", 1, producers, 5e6, 10.0),
                    row("aip.ResultRing", "get_many", 512, producers, 2e7, 10.0),
                    row("multiprocessing.Pipe", "recv_bytes", 1, producers, 5e5, 10.0),
                    row("pyzmq ipc", "recv", 1, producers, 1e6, 20.0)]
    frames = [{"mechanism": "aip.SlotTable", "frames_per_s": 40.0},
              {"mechanism": "shm+Pipe", "frames_per_s": 40.0},
              {"mechanism": "np.copyto", "frames_per_s": 100.0}]
    text = ring.summarize({"settings": {"busy_processes": 2}, "results": results, "frames": frames})
    assert "batch_max" in text and "loaded_p50_us" in text
    assert "aip get (batch <= 1) / pyzmq recv, 1->1: 5.0x (target >= 4x): met" in text
    assert "aip get_many (batch <= 512) / pyzmq recv, 1->1: 20.0x (target >= 8x): met" in text
    assert "paced p50 loaded, 2->1: aip get 10.0 us vs Pipe 10.0 us = 1.00x" in text
    assert "frames aip.SlotTable / np.copyto: 40 % (target >= 50 %): NOT met" in text


def test_publish_writes_the_documented_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"mechanism": "aip.ResultRing", "producers": 1, "msgs_per_s": 1.5e6}]
    path = tmp_path / "out.json"
    assert publish("ring", {"results": rows, "frames": []},
                   format_table(rows, ["mechanism", "msgs_per_s"]), str(path)) == 0
    document = json.loads(path.read_text())
    assert document["suite"] == "ring" and document["results"] == rows
    assert "1,500,000.0" in capsys.readouterr().out


# ---- streams: many live streams (plumbing only; no figure is checked) --------------------

def test_streams_suite_is_registered(capsys: pytest.CaptureFixture[str]) -> None:
    from aip.bench.__main__ import SUITES

    assert SUITES["streams"] == "aip.bench.streams"
    with pytest.raises(SystemExit) as exit_info:
        main(["streams", "--help"])
    assert exit_info.value.code == 0
    assert "--seconds" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["streams", "--scenarios", "nope"])


def test_stamp_survives_jpeg() -> None:
    import cv2
    import numpy as np

    from aip.bench.mjpeg import STAMP_MAX, read_stamp, stamp

    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert read_stamp(frame) is None  # noise is no stamp
    for value in (0, 1, 12345, STAMP_MAX - 1):
        ok, jpeg = cv2.imencode(".jpg", stamp(frame, value), [cv2.IMWRITE_JPEG_QUALITY, 60])
        assert ok and read_stamp(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)) == value
    with pytest.raises(ValueError):
        stamp(frame, STAMP_MAX)
    assert read_stamp(frame[:, :100]) is None


def test_mjpeg_camera_serves_frames_opencv_decodes() -> None:
    import time
    import urllib.error
    import urllib.request

    import cv2

    from aip.bench.mjpeg import MjpegCameras, read_stamp

    with MjpegCameras(2, fps=30, frames=200, distinct=16) as cameras:
        assert len(cameras.urls) == 2 and all(url.startswith("http://127.0.0.1:") for url in cameras.urls)
        with pytest.raises(urllib.error.HTTPError) as not_found:
            urllib.request.urlopen(cameras.urls[0].replace("stream.mjpg", "nope"), timeout=10)
        not_found.value.close()
        capture = cv2.VideoCapture(cameras.urls[1], cv2.CAP_FFMPEG)
        try:
            assert capture.isOpened()
            stamps, numbers = [], []
            for _ in range(20):  # more than `distinct`: stamps wrap around
                ok, frame = capture.read()
                assert ok and frame.shape == (480, 640, 3)
                value = read_stamp(frame)
                assert value is not None
                number, sent_ns = cameras.sent(1, value, time.perf_counter_ns())
                assert number % 16 == value and 0 < sent_ns <= time.perf_counter_ns()
                numbers.append(number)
                stamps.append(value)
        finally:
            capture.release()
        assert numbers == sorted(numbers) and numbers[-1] >= 19  # past the wrap of the stamps
        assert cameras.sent(0, stamps[0], time.perf_counter_ns()) == (-1, 0)  # camera 0 never started
        assert cameras.sent(5, 0, time.perf_counter_ns()) == (-1, 0)
        cpu = cameras.cpu_seconds()
        assert cpu is None or cpu > 0


def test_streams_measure_counts_drops_late_and_fairness() -> None:
    from aip.bench.streams import Delivery, Run, measure

    second = 1_000_000_000
    run = Run()
    # stream 0: frames 0..9, one result every 0.1 s; stream 1: every other frame
    run.deliveries += [Delivery(0, k, k * second // 10, 10.0 + k) for k in range(10)]
    run.deliveries += [Delivery(1, k, k * second // 10, 20.0) for k in range(0, 10, 2)]
    run.late_ns.append(5 * second // 10)
    row = measure(run, n_streams=2, warmup_s=0.0, seconds=10.0)
    assert row["frames"] == 15
    assert row["fairness"] == pytest.approx(0.5)
    assert row["late_pct"] == pytest.approx(100 * 1 / 19)  # 10 + 9 frames expected
    assert row["drop_pct"] == pytest.approx(100 * 3 / 19)  # 4 missing, one of them late
    assert row["p50_ms"] == pytest.approx(17.0)
    assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    empty = measure(Run(), n_streams=2, warmup_s=1.0, seconds=1.0)
    assert empty["delivered_fps"] == 0.0


def test_streams_sim_runs_end_to_end() -> None:
    from aip.bench.streams import COLUMNS, run_sim, summarize

    row = run_sim(0.4, 0.1, streams=3, fps=20.0, workers=1, latency_s=0.001, calibration_s=0.2)
    assert set(COLUMNS) <= set(row)
    assert row["system"] == "aip" and row["streams"] == 3 and row["offered_fps"] == 60.0
    assert row["frames"] > 0 and len(row["stream_fps"]) == 3
    text = summarize({"settings": {"seconds": 0.4, "warmup_s": 0.1}, "results": [row]})
    assert "sim: zero drops" in text and "sim: manager CPU" in text


def test_streams_aip_reads_the_cameras_stamps() -> None:
    from aip.backends import BackendSpec
    from aip.bench.mjpeg import MjpegCameras
    from aip.bench.streams import consume, measure
    from aip.pipeline import Pipeline

    with MjpegCameras(2, fps=20, frames=400) as cameras, Pipeline(
            [BackendSpec("sim", {"latency_s": 0.001})], mode="pull", keep_frames=True) as pipeline:
        names = [pipeline.add_stream(url, name=f"cam{i}", policy="latest")
                 for i, url in enumerate(cameras.urls)]
        run = consume(pipeline.run(), {name: i for i, name in enumerate(names)}, 1.0, sent=cameras)
    assert run.deliveries and not run.errors and run.unreadable == 0
    assert {d.stream for d in run.deliveries} == {0, 1}
    assert all(d.latency_ms > 0 for d in run.deliveries)
    assert measure(run, 2, 0.2, 0.5)["frames"] > 0


def test_streams_summary_states_each_target() -> None:
    from aip.bench.streams import summarize

    def row(system: str, scenario: str, fps: float, p99: float, **extra: object) -> dict[str, object]:
        return {"system": system, "scenario": scenario, "streams": 4, "offered_fps": 40.0,
                "delivered_fps": fps, "drop_pct": 0.0, "late_pct": 0.0, "p50_ms": p99 / 2,
                "p99_ms": p99, "fairness": 0.9, "manager_cpu_pct": 5.0, **extra}

    rows = [row("aip", "sim", 480.0, 20.0, manager_cpu_pct=30.0),
            row("aip", "real-under", 24.0, 50.0, service_ms=20.0, capacity_fps=40.0),
            row("aip", "real-over", 39.0, 70.0, service_ms=20.0, capacity_fps=40.0),
            row("ultralytics", "real-under", 24.0, 400.0),
            row("ultralytics", "real-over", 10.0, 500.0)]
    text = summarize({"settings": {"seconds": 1, "warmup_s": 1}, "results": rows})
    assert "sim: manager CPU <= 25 % of a core: 30.0 %: NOT met" in text
    assert "real under capacity: p99 <= 3x service time (60.0 ms): 50.0 ms: met" in text
    assert "real overloaded, latest: p99 <= 3x service time (60.0 ms): 70.0 ms: NOT met" in text
    assert "delivered >= 95 % of calibrated capacity: 39.0 of 40.0 FPS = 98 %: met" in text
    assert "real-over: aip >= 2x ultralytics' delivered FPS: 39.0 vs 10.0 FPS = 3.90x: met" in text
    assert "real-over: aip p99 < ultralytics' p99: 70.0 vs 500.0 ms: met" in text
    assert "real-under: aip p99 < ultralytics' p99: 50.0 vs 400.0 ms: met" in text
    assert "real-under: aip >= 2x" not in text  # the cameras' rate caps both under capacity


# ---- streams: many cameras on one box (the sweep's plumbing; no camera is started) -------

def test_streams_measure_p95_and_window_from_every_stream() -> None:
    from aip.bench.streams import Delivery, Run, measure, window_start_ns

    second = 1_000_000_000
    run = Run()
    # stream 0 from t = 0, stream 1 only from t = 2 s; latencies 1..100 ms on stream 0
    run.deliveries += [Delivery(0, k, k * second // 10, float(k + 1)) for k in range(100)]
    run.deliveries += [Delivery(1, k, 2 * second + k * second // 10, 50.0) for k in range(50)]
    assert window_start_ns(run, 2) == 0
    assert window_start_ns(run, 2, from_all_streams=True) == 2 * second
    assert window_start_ns(run, 3, from_all_streams=True) == 0  # stream 2 never came
    row = measure(run, n_streams=1, warmup_s=0.0, seconds=100.0)
    assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    only0 = measure(Run(deliveries=run.deliveries[:100]), n_streams=1, warmup_s=0.0, seconds=100.0)
    assert only0["p95_ms"] == pytest.approx(95.05)
    assert only0["p99_ms"] == pytest.approx(99.01)
    # from the first result the late stream looks starved; from every stream's first, it is fair
    assert measure(run, 2, 0.0, 4.0)["fairness"] < 0.9
    settled = measure(run, 2, 0.5, 2.0, from_all_streams=True)
    assert settled["fairness"] == pytest.approx(1.0)
    assert settled["window_s"] == pytest.approx(2.0)


def test_sweep_window_gives_each_camera_its_frames_up_to_the_cap() -> None:
    from aip.bench.streams import SWEEP_FRAMES_PER_CAMERA, sweep_window_s

    assert SWEEP_FRAMES_PER_CAMERA == 20
    # 45 FPS over 100 cameras: 0.45 FPS each, 20 frames take 44.4 s
    assert sweep_window_s(20.0, 45.0, 100) == pytest.approx(20 / 0.45)
    assert sweep_window_s(20.0, 45.0, 100, max_s=30.0) == 30.0  # capped
    assert sweep_window_s(20.0, 450.0, 20) == 20.0  # 22.5 FPS each: --seconds is enough
    assert sweep_window_s(120.0, 45.0, 100, max_s=90.0) == 120.0  # --seconds is never cut
    assert sweep_window_s(8.0, 45.0, 100, frames_per_camera=5) == pytest.approx(5 / 0.45)
    assert sweep_window_s(8.0, 0.0, 10, max_s=60.0) == 60.0  # no capacity measured: the cap
    assert sweep_window_s(8.0, float("nan"), 10, max_s=60.0) == 60.0


def test_capacity_search_finds_the_largest_passing_count() -> None:
    from collections.abc import Callable

    from aip.bench.streams import search_capacity

    def served_up_to(limit: int) -> tuple[list[int], Callable[[int], tuple[bool, dict[str, int]]]]:
        asked: list[int] = []

        def try_n(n: int) -> tuple[bool, dict[str, int]]:
            asked.append(n)
            return n <= limit, {"streams": n}

        return asked, try_n

    # from 22: fail, down to 17: pass, bisect 19: fail, 18: fail -> 17
    asked, try_n = served_up_to(17)
    best, row, tries = search_capacity(22, try_n, max_tries=4)
    assert (best, row) == (17, {"streams": 17}) and asked == [22, 17, 19, 18]
    assert [(n, ok) for n, ok, _ in tries] == [(22, False), (17, True), (19, False), (18, False)]
    # from below: up by 1.25 while served, then bisect; stops once the pass and fail are neighbours
    asked, try_n = served_up_to(11)
    best, _, _ = search_capacity(8, try_n, max_tries=10)
    assert best == 11 and asked == [8, 10, 13, 11, 12]
    # bounded: never more than max_tries, the best so far
    asked, try_n = served_up_to(1000)
    best, _, tries = search_capacity(10, try_n, max_tries=3)
    assert len(tries) == 3 and best == asked[-1] and asked == [10, 13, 17]
    # none served, down to one camera and no further
    asked, try_n = served_up_to(0)
    best, row, tries = search_capacity(2, try_n, max_tries=4)
    assert best is None and row is None and asked == [2, 1]
    # a start of 0 (capacity under 2 FPS) tries one camera
    asked, try_n = served_up_to(1)
    assert search_capacity(0, try_n, max_tries=1)[0] == 1


def test_capacity_try_needs_no_drop_and_p95_under_the_limit() -> None:
    from aip.bench.streams import capacity_ok

    good = {"frames": 100, "drop_pct": 0.0, "p95_ms": 300.0}
    assert capacity_ok(good)
    assert not capacity_ok({**good, "drop_pct": 0.5})
    assert not capacity_ok({**good, "p95_ms": 501.0})
    assert not capacity_ok({**good, "errors": ["evicted"]})
    assert not capacity_ok({"delivered_fps": 0.0, "frames": 0})


def test_decode_and_memory_figures(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from aip.bench.streams import decode_figures, memory_figures, rss_bytes, shm_bytes

    streams = {"a": SimpleNamespace(frames_decoded=30, decodes_skipped=10),
               "b": SimpleNamespace(frames_decoded=30, decodes_skipped=30)}
    figures = decode_figures(SimpleNamespace(wall_time_s=10.0, decode_cpu_s=2.5, streams=streams))
    assert figures["decode_cpu_pct"] == pytest.approx(25.0)
    assert (figures["frames_decoded"], figures["decodes_skipped"]) == (60, 40)
    assert figures["decode_saved_pct"] == pytest.approx(40.0)
    # a pipeline that does not count them: None, not an error
    old = decode_figures(SimpleNamespace(wall_time_s=10.0, streams={"a": SimpleNamespace()}))
    assert old["decode_cpu_pct"] is None and old["frames_decoded"] is None
    assert old["decode_saved_pct"] is None

    memory = memory_figures(100 * 2**20, 110 * 2**20, 4 * 2**20, 20)
    assert memory["rss_mb"] == pytest.approx(110.0)
    assert memory["rss_per_stream_kb"] == pytest.approx(512.0)
    assert memory["shm_mb"] == pytest.approx(4.0) and memory["shm_per_stream_kb"] == pytest.approx(204.8)
    assert memory_figures(None, None, None, 5)["rss_per_stream_kb"] is None

    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmPeak:\t  999 kB\nVmRSS:\t  2048 kB\n")
    assert rss_bytes(status) == 2048 * 1024
    assert rss_bytes(tmp_path / "nope") is None
    real = rss_bytes()
    assert real is None or real > 0
    (tmp_path / "aip_table").write_bytes(b"x" * 1000)
    (tmp_path / "aip_ring").write_bytes(b"x" * 24)
    assert shm_bytes(["/aip_table", "aip_ring"], tmp_path) == 1024
    assert shm_bytes(["aip_table", None], tmp_path) is None
    assert shm_bytes(["aip_gone"], tmp_path) is None


def test_streams_scenario_and_count_arguments() -> None:
    from aip.bench.streams import SCENARIOS, parse_counts, parse_scenarios

    assert SCENARIOS == ("sim", "sim-tracked", "real-under", "real-over", "ultralytics")  # the sweep is not default
    assert parse_scenarios("sweep") == ["cameras", "cameras-ultralytics", "capacity"]
    assert parse_scenarios("sim, cameras,,sweep") == ["sim", "cameras", "cameras-ultralytics",
                                                       "capacity"]
    assert parse_counts("20,50,100") == [20, 50, 100]
    assert parse_counts(" 6 ,6") == [6]
    for bad in ("", "0", "ten", "-5", "2.5"):
        with pytest.raises(ValueError):
            parse_counts(bad)
    for argv in (["--camera-counts", "0"], ["--capacity-tries", "0"], ["--scenarios", "camera"]):
        with pytest.raises(SystemExit):
            main(["streams", *argv])


def test_streams_summary_states_the_sweep_targets() -> None:
    from aip.bench.streams import CAMERA_COLUMNS, summarize, targets

    def row(system: str, scenario: str, streams: int, fps: float, p99: float,
            **extra: object) -> dict[str, object]:
        return {"system": system, "scenario": scenario, "streams": streams, "offered_fps": 60.0,
                "delivered_fps": fps, "drop_pct": 30.0, "late_pct": 0.0, "p50_ms": p99 / 2,
                "p95_ms": p99 * 0.9, "p99_ms": p99, "fairness": 0.95, "manager_cpu_pct": 40.0,
                "capacity_fps": 40.0, "service_ms": 50.0, "window_s": 30.0, "camera_fps": 3.0,
                **extra}

    aip = {"decode_cpu_pct": 12.0, "frames_decoded": 600, "decodes_skipped": 200,
           "decode_saved_pct": 25.0, "rss_mb": 300.0, "rss_per_stream_kb": 900.0,
           "shm_mb": 10.0, "shm_per_stream_kb": 512.0, "efficiency_pct": 95.0}
    rows = [row("aip", "cameras-20", 20, 38.0, 120.0, **aip),  # all met
            row("ultralytics", "cameras-20", 20, 12.0, 900.0),
            row("aip", "cameras-100", 100, 30.0, 200.0, fairness=0.5, **aip),  # none met
            row("aip", "capacity", 18, 36.0, 300.0, drop_pct=0.0, capacity_camera_fps=2.0,
                capacity_p95_limit_ms=500.0, capacity_trials=[
                    {"streams": 20, "ok": False, "drop_pct": 1.5, "p95_ms": 700.0},
                    {"streams": 18, "ok": True, "drop_pct": 0.0, "p95_ms": 270.0}])]
    document = {"settings": {"seconds": 20, "warmup_s": 2}, "results": rows}
    checks = {target: (figure, ok) for target, figure, ok in targets(document)}
    assert checks["cameras-20: fairness >= 0.9"] == ("0.95", True)
    assert checks["cameras-20: delivered >= 90 % of calibrated capacity"] == (
        "38.0 of 40.0 FPS = 95 %", True)
    assert checks["cameras-20: p99 age <= 3x service time (150.0 ms)"] == ("120.0 ms", True)
    assert checks["cameras-20: aip delivered FPS > ultralytics'"] == (
        "38.0 vs 12.0 FPS = 3.17x", True)
    assert checks["cameras-100: fairness >= 0.9"][1] is False
    assert checks["cameras-100: delivered >= 90 % of calibrated capacity"][1] is False
    assert checks["cameras-100: p99 age <= 3x service time (150.0 ms)"][1] is False
    assert "cameras-100: aip delivered FPS > ultralytics'" not in checks  # none on 100
    assert not any(target.startswith("capacity") for target in checks)
    text = summarize(document)
    assert "Many live streams" not in text  # no row of the default scenarios: no empty table
    header = next(line for line in text.splitlines() if "efficiency_pct" in line)
    assert all(column in header for column in CAMERA_COLUMNS)
    assert "cameras-20: fairness >= 0.9: 0.95: met" in text
    assert "cameras-100: fairness >= 0.9: 0.50: NOT met" in text
    assert "cameras-20: aip delivered FPS > ultralytics': 38.0 vs 12.0 FPS = 3.17x: met" in text
    assert ("aip capacity: 18 cameras at 2 FPS served with no drop and p95 age <= 500 ms "
            "(0.00 % dropped, p95 270.0 ms)") in text
    assert "tries: 20 not (1.50 % dropped, p95 700.0 ms), 18 served" in text
    assert "decode CPU 12.0 % of a core, 600 frames decoded, 200 decodes skipped (25.0 % saved)" in text
    assert "manager RSS 300.0 MB (900.0 KB per stream" in text
    # a losing aip: NOT met
    rows[1]["delivered_fps"] = 50.0
    assert "cameras-20: aip delivered FPS > ultralytics': 38.0 vs 50.0 FPS = 0.76x: NOT met" in summarize(
        document)
