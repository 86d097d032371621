"""What a user sees: the progress display, Prometheus text, /healthz, and
per-stream figures in --metrics-json. Loopback only; no assertion on time."""
from __future__ import annotations

import io
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("prometheus_client")
pytest.importorskip("rich")

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from aip.backends import BackendSpec  # noqa: E402
from aip.app.cli import main  # noqa: E402
from aip.pipeline.metrics import LatencyStats  # noqa: E402
from aip.app.observe import (  # noqa: E402
    HEALTH_CODES,
    LATENCY_BUCKETS_S,
    STARVED_AFTER_S,
    MetricsServer,
    PipelineCollector,
    ProgressDisplay,
    observed_state,
)
from aip.pipeline import Pipeline  # noqa: E402
from stream_checks import PATIENCE_S, wait_for



def sim(latency_s: float) -> BackendSpec:
    return BackendSpec("sim", {"latency_s": latency_s})


def frames(count: int, shape: tuple[int, int, int] = (48, 64, 3)) -> Iterator[np.ndarray]:
    for i in range(count):
        yield np.full(shape, i % 256, np.uint8)


def scrape(collector: PipelineCollector) -> dict[str, Any]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family: Any, name: str, **labels: str) -> list[Any]:
    return [s for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def value(family: Any, name: str, **labels: str) -> float:
    (sample,) = samples(family, name, **labels)
    return float(sample.value)




def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=PATIENCE_S) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read().decode()


# ---- histograms ----------------------------------------------------------------------------

def test_cumulative_counts_map_log_buckets_onto_prometheus_bounds() -> None:
    stats = LatencyStats()
    values = [0.0004, 0.003, 0.0049, 0.012, 0.04, 0.04, 0.5, 7.0, 42.0]
    for seconds in values:
        stats.record(seconds)
    counts = stats.cumulative_counts(LATENCY_BUCKETS_S)
    assert len(counts) == len(LATENCY_BUCKETS_S) + 1 and counts[-1] == len(values)
    assert counts == sorted(counts)
    for bound, count in zip(LATENCY_BUCKETS_S, counts):
        # Never more than the samples at most the bound; at least those clear of it by 2 %.
        assert sum(v <= bound / 1.02 for v in values) <= count <= sum(v <= bound for v in values)
    assert LatencyStats().cumulative_counts([0.1, 1.0]) == [0, 0, 0]


# ---- Prometheus ----------------------------------------------------------------------------

def test_collector_has_per_stream_and_per_backend_families() -> None:
    with Pipeline([sim(0.002), sim(0.002)], mode="pull") as pipeline:
        collector = PipelineCollector(pipeline)
        pipeline.add_stream(frames(30), name="cam-a")
        pipeline.add_stream(frames(30, (24, 32, 3)), name="cam-b")
        during: dict[str, Any] = {}
        for i, _ in enumerate(pipeline.run()):
            if i == 10:
                during = scrape(collector)  # mid-run: the live figures, slots included
        after = scrape(collector)

    assert {"aip_stream_frames_ordered", "aip_slots", "aip_state"} <= during.keys()
    assert sum(s.value for s in during["aip_slots"].samples) == pipeline.n_slots

    for name in ("frames_read", "frames_published", "frames_ordered", "frames_dropped",
                 "frames_late", "buffer_full_waits", "reconnects"):
        assert after[f"aip_stream_{name}"].type == "counter"
    for stream in ("cam-a", "cam-b"):
        assert value(after["aip_stream_frames_read"], "aip_stream_frames_read_total", stream=stream) == 30
        assert value(after["aip_stream_frames_ordered"], "aip_stream_frames_ordered_total",
                     stream=stream) == 30
        assert value(after["aip_stream_frames_dropped"], "aip_stream_frames_dropped_total",
                     stream=stream) == 0
        latency = after["aip_stream_end_to_end_seconds"]
        assert latency.type == "histogram"
        buckets = samples(latency, "aip_stream_end_to_end_seconds_bucket", stream=stream)
        assert [s.labels["le"] for s in buckets][-1] == "+Inf"
        assert [s.value for s in buckets] == sorted(s.value for s in buckets)
        assert buckets[-1].value == value(latency, "aip_stream_end_to_end_seconds_count", stream=stream) == 30
        assert value(after["aip_stream_state"], "aip_stream_state", stream=stream,
                     aip_stream_state="ended") == 1

    labels = pipeline.labels
    frames_total = after["aip_backend_frames"]
    assert {s.labels["backend"] for s in frames_total.samples} == set(labels)
    assert sum(s.value for s in frames_total.samples) == 60
    for label in labels:
        inference = after["aip_backend_inference_seconds"]
        assert value(inference, "aip_backend_inference_seconds_count", backend=label) == value(
            frames_total, "aip_backend_frames_total", backend=label)
        assert "aip_backend_end_to_end_seconds" in after
        assert value(after["aip_backend_up"], "aip_backend_up", backend=label) == 1
    assert after["aip_fps"].type == "gauge"
    assert value(after["aip_state"], "aip_state", aip_state="idle") == 1  # the run is over


# ---- /healthz ------------------------------------------------------------------------------

def test_observed_state_tells_a_gap_between_frames_from_starvation() -> None:
    assert observed_state({"state": "starved"}, None) == "starved"
    assert observed_state({"state": "starved"}, STARVED_AFTER_S / 4) == "ready"
    assert observed_state({"state": "starved"}, STARVED_AFTER_S * 2) == "starved"
    assert observed_state({"state": "stalled"}, 0.0) == "stalled"
    assert observed_state({"state": "backpressure"}, None) == "backpressure"
    assert {state: HEALTH_CODES[state] for state in ("ready", "backpressure", "starved", "stalled",
                                                     "idle")} == {
        "ready": 200, "backpressure": 200, "starved": 503, "stalled": 503, "idle": 503}


class _Run:
    """A run in a thread, as a server or a camera loop would drive it."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        try:
            for _ in self.pipeline.run(until_stopped=True):
                pass
        except BaseException as error:  # re-raised in the test's thread
            self.error = error

    def join(self) -> None:
        self.thread.join(PATIENCE_S)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


def test_healthz_and_metrics_over_http_follow_a_run() -> None:
    with MetricsServer(0, "127.0.0.1") as server, Pipeline([sim(0.01)], mode="pull") as pipeline:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}"

        def health() -> tuple[int, dict[str, Any]]:
            code, content_type, body = get(server.url + "/healthz")
            assert content_type == "application/json"
            return code, json.loads(body)

        assert health() == (503, {"state": "starting", "reason": "the pipeline is not started yet"})
        server.watch(pipeline)
        assert health()[0] == 503 and health()[1]["state"] == "idle"

        run = _Run(pipeline)
        try:
            # No stream: the workers wait for input.
            code, body = wait_for(lambda: (h := health())[1]["state"] == "starved" and h)
            assert code == 503 and "no input" in body["reason"]
            # A paced camera: frames flow (the workers idle between its frames: not starved).
            pipeline.add_stream(frames(10**6), name="cam", fps=20)
            code, body = wait_for(lambda: (h := health())[1]["state"] == "ready" and h)
            assert code == 200 and body["streams"]["cam"]["state"] == "running"
            assert [(w["backend"], w["alive"]) for w in body["workers"]] == [("sim", True)]
            # A file read as fast as it goes: every slot taken, the workers saturated.
            pipeline.add_stream(frames(10**6), name="flood")
            code, body = wait_for(lambda: (h := health())[1]["state"] == "backpressure" and h)
            assert code == 200 and body["slots"]["FREE"] == 0

            code, content_type, text = get(server.url + "/metrics")
            assert code == 200 and content_type.startswith("text/plain")
            families = {f.name: f for f in text_string_to_metric_families(text)}
            assert value(families["aip_state"], "aip_state", aip_state="backpressure") == 1
            assert {s.labels["stream"] for s in families["aip_stream_frames_read"].samples} == {"cam", "flood"}
            assert "process_cpu_seconds" in families  # the manager's own CPU
            assert get(server.url + "/nothing")[0] == 404
        finally:
            for name in ("cam", "flood"):
                if name in pipeline.metrics.streams:
                    pipeline.remove_stream(name)
            pipeline.stop()
            run.join()
        assert health()[1]["state"] == "idle"


def test_a_busy_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="cannot listen on 127.0.0.1"):
            MetricsServer(taken.getsockname()[1]).start()


# ---- the progress display ---------------------------------------------------------------

def test_live_display_on_a_terminal_shows_streams_and_backends() -> None:
    screen = io.StringIO()
    with Pipeline([sim(0.002), sim(0.002)], mode="pull") as pipeline:
        pipeline.add_stream(frames(20), name="cam-a")
        pipeline.add_stream(frames(20), name="cam-b")
        with ProgressDisplay(pipeline, file=screen, terminal=True):
            assert sum(1 for _ in pipeline.run()) == 40
    text = screen.getvalue()
    assert "\x1b[" in text  # drawn for a terminal
    for word in ("cam-a", "cam-b", "sim#0", "sim#1", "done", "dropped", "late", "share"):
        assert word in text


def run_cli(capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[str, str]:
    rc = main(["run", "synthetic:64x48", "synthetic:32x24", "-b", "sim:0.002", "-b", "sim:0.002",
               "--mode", "pull", "--frames", "25", *flags])
    assert rc == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def progress_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if re.match(r"aip: [0-9.]+ s ", line)]


def test_plain_progress_lines_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    out, err = run_cli(capsys)
    progress = progress_lines(err)
    assert progress, err
    last = progress[-1]  # the line at the end
    assert " done " in last and "ordered 50 dropped 0 late 0" in last
    assert "synthetic:64x48" in last and "synthetic:32x24" in last and "backends sim#0" in last
    assert "\x1b[" not in err and "throughput" in out


def test_quiet_silences_the_display_but_not_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    out, err = run_cli(capsys, "--quiet")
    assert not progress_lines(err) and "workers:" not in err
    assert "throughput" in out


def test_metrics_port_serves_during_a_cli_run(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a free port on loopback
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out, err = run_cli(capsys, "--metrics-port", str(port))
    assert f"metrics: http://127.0.0.1:{port}/metrics" in err
    with pytest.raises(urllib.error.URLError):  # closed with the run
        get(f"http://127.0.0.1:{port}/healthz")


def test_metrics_json_has_per_stream_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "metrics.json"
    run_cli(capsys, "--quiet", "--metrics-json", str(path))
    streams = json.loads(path.read_text())["streams"]
    assert set(streams) == {"synthetic:64x48", "synthetic:32x24"}
    for figures in streams.values():
        assert figures["state"] == "ended"
        assert figures["frames_read"] == figures["frames_published"] == figures["frames_ordered"] == 25
        assert figures["frames_dropped"] == figures["frames_late"] == 0
        assert figures["end_to_end"]["count"] == 25 and figures["end_to_end"]["p99_ms"] > 0
        assert figures["fps"] > 0
