"""What a user sees while a pipeline runs: a progress display, Prometheus
metrics and a health endpoint.

    Pipeline.run  (the caller's thread: never blocked by anything here)
        |  status(), metrics: read-only, from other threads
        v
    ProgressDisplay   a rich Live table on a terminal (refreshed ~4 times a
                      second by rich's own thread), else one plain line every
                      few seconds (a daemon thread), and a last line at the end
    MetricsServer     a small HTTP server on its own daemon threads:
                        /metrics   Prometheus text (PipelineCollector, read at scrape time)
                        /healthz   200 or 503 and a JSON body (health)

Stream names leave the process redacted (:mod:`aip.io.credentials`): a stream
named by a URL with a password in it shows ``rtsp://***@host/...`` here.

Nothing here writes to the pipeline: it reads the counters the run loop
keeps, at the moment it is asked (a scrape, a refresh), so it costs nothing
between two looks. ``rich`` and ``prometheus-client`` come with the
``observe`` extra; without rich the display falls back to plain lines.
"""
from __future__ import annotations

import json
import logging
import math
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, TextIO

from aip.io.credentials import redact, redacted_names

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from aip.pipeline import Pipeline
    from aip.pipeline.metrics import BackendMetrics, LatencyStats, StreamMetrics

__all__ = [
    "HEALTH_CODES", "LATENCY_BUCKETS_S", "MetricsServer", "PipelineCollector", "ProgressDisplay",
    "health", "observed_state",
]

log = logging.getLogger(__name__)

# Prometheus `le` bounds (seconds) of every latency histogram. From 1 ms
# (a GPU's inference) to 10 s (a stalled frame), densest at 10-100 ms where
# real-time targets sit (60 ms p99 for 30 FPS streams). Each bound costs one
# series per histogram; the 2 % buckets of LatencyStats map onto them.
LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2,
                     0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)

# The workers idle between the frames of paced streams, so Pipeline.status()
# says "starved" for a moment at every gap. Starved means no result for this
# long: longer than the gap between two frames of a 0.5 FPS camera, short
# enough that a probe notices a dead input within a few seconds.
STARVED_AFTER_S = 2.0

# /healthz: 200 while detections flow (at full capacity too: backpressure is
# load, not failure; a file read as fast as the workers go is in it all the
# time), 503 while none do, and the state in the body says why.
HEALTH_CODES: Mapping[str, int] = {
    "ready": 200,
    "backpressure": 200,
    "starved": 503,
    "stalled": 503,
    "idle": 503,
    "starting": 503,
}
_REASONS = {
    "ready": "frames flow",
    "backpressure": "the workers are saturated: every slot is taken, input waits or drops",
    "starved": "no input: the workers wait, the streams give no frame",
    "stalled": "frames wait in slots and no result comes",
    "idle": "no run is going on (starting, calibrating or finished)",
    "starting": "the pipeline is not started yet",
}
_STATES = ("ready", "starved", "backpressure", "stalled", "idle", "starting")
_STREAM_STATES = ("running", "ended", "evicted", "removed")


# ---- health -------------------------------------------------------------------------------

def observed_state(status: Mapping[str, Any], seconds_since_result: float | None) -> str:
    """The state a person should see: ``status()["state"]``, except that
    workers idle between the frames of a paced stream are not starved while
    results came within ``STARVED_AFTER_S``."""
    state = str(status["state"])
    if (state == "starved" and seconds_since_result is not None
            and seconds_since_result < STARVED_AFTER_S):
        return "ready"
    return state


def health(pipeline: Pipeline | None) -> tuple[int, dict[str, Any]]:
    """``(http_code, body)`` for ``/healthz``: the state, why, and what flows."""
    if pipeline is None:
        return HEALTH_CODES["starting"], {"state": "starting", "reason": _REASONS["starting"]}
    status = pipeline.status()
    since = pipeline.metrics.seconds_since_last_result()
    state = observed_state(status, since)
    now_ns = time.perf_counter_ns()
    named = dict(pipeline.metrics.streams)
    streams = {
        name: {
            "state": stream.state,
            "frames_read": stream.frames_read,
            "frames_ordered": stream.frames_ordered,
            "frames_dropped": stream.frames_dropped,
            "frames_late": stream.frames_late,
            "seconds_since_result": (now_ns - stream.last_ns) / 1e9 if stream.last_ns else None,
        }
        for name, stream in zip(redacted_names(named), named.values())
    }
    body = {
        "state": state,
        "reason": _REASONS.get(state, state),
        "fps": status["fps"],
        "seconds_since_result": since,
        "slots": status["slots"],
        "workers": [{"backend": w["label"], "device": w["device"], "alive": w["alive"]}
                    for w in status["workers"]],
        "streams": streams,
    }
    return HEALTH_CODES.get(state, 503), body


# ---- Prometheus ---------------------------------------------------------------------------

def _histogram_buckets(stats: LatencyStats) -> tuple[list[tuple[str, float]], float]:
    counts = stats.cumulative_counts(LATENCY_BUCKETS_S)
    bounds = [repr(bound) for bound in LATENCY_BUCKETS_S] + ["+Inf"]
    return list(zip(bounds, map(float, counts))), stats.total_s


class PipelineCollector:
    """A prometheus-client collector that reads a pipeline's live figures at
    scrape time: per stream and per backend counters, latency histograms
    (capture -> ordered result per stream and per backend, inference per
    backend), and gauges for FPS, slots, workers and the state.

    Register it anywhere: ``prometheus_client.REGISTRY.register(PipelineCollector(p))``.
    Counters start again at zero with each run (a new :class:`~aip.pipeline.metrics.Metrics`):
    Prometheus' ``rate()`` treats that as a counter reset. Every family is
    there from the first scrape, before the pipeline exists: the ``streams``
    named (a run's sources, known before it starts) at zero, the rest with
    no sample, so that a dashboard and an alert find them from the start.
    """

    def __init__(self, pipeline: Pipeline | None = None, *, streams: Sequence[str] = ()) -> None:
        self.pipeline = pipeline
        self.streams = list(streams)
        self.sinks: list[Any] = []  # remote sinks (MQTT, webhook): anything with .name and .stats()

    def collect(self) -> Iterator[Metric]:
        pipeline = self.pipeline
        if pipeline is None:
            yield from self._stream_families({})
            yield from self._backend_families([], {})
            yield from self._run_families(None, None, "starting")
            yield from self._region_families({})
            yield from self._sink_families(self.sinks)
            return
        status = pipeline.status()
        metrics = pipeline.metrics
        # copies: the run loop may add to them meanwhile
        yield from self._stream_families(dict(metrics.streams))
        yield from self._backend_families(status["workers"], dict(metrics.backends))
        state = observed_state(status, metrics.seconds_since_last_result())
        yield from self._run_families(status, metrics.ideal_fps, state)
        tracking = pipeline.tracking
        yield from self._region_families(tracking.counts() if tracking is not None else {})
        yield from self._sink_families(self.sinks)

    @staticmethod
    def _region_families(counts: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
        """Per stream, zone and class: objects inside, entries, exits; per line,
        class and direction: crossings (:meth:`aip.track.RegionCounter.counts`)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = ["stream", "zone", "class"]
        inside = GaugeMetricFamily("aip_zone_objects", "Tracked objects inside the zone now.", labels=labels)
        entered = CounterMetricFamily("aip_zone_entries", "Tracked objects that entered the zone.", labels=labels)
        exited = CounterMetricFamily("aip_zone_exits", "Tracked objects that left the zone.", labels=labels)
        crossed = CounterMetricFamily("aip_line_crossings", "Tracked objects that crossed the line.",
                                      labels=["stream", "line", "class", "direction"])
        for stream, regions in zip(redacted_names(counts), counts.values()):
            for zone, figures in regions.get("zones", {}).items():
                for family, key in ((inside, "inside"), (entered, "entered"), (exited, "exited")):
                    for cls, count in figures.get(key, {}).items():
                        family.add_metric([stream, zone, cls], float(count))
            for line, figures in regions.get("lines", {}).items():
                for direction in ("in", "out"):
                    for cls, count in figures.get(direction, {}).items():
                        crossed.add_metric([stream, line, cls, direction], float(count))
        yield from (inside, entered, exited, crossed)

    @staticmethod
    def _sink_families(sinks: Sequence[Any]) -> Iterator[Metric]:
        """Per remote sink: delivered, dropped (queue full, far end down or
        refusing), retries, and whether its far end fails now."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        families = {key: CounterMetricFamily(f"aip_sink_{key}", doc, labels=["sink"]) for key, doc in (
            ("delivered", "Messages the far end took."),
            ("dropped", "Messages given up: the queue was full, or the far end refused or stayed down."),
            ("retries", "Delivery attempts that failed and were tried again."))}
        failing = GaugeMetricFamily("aip_sink_failing", "1 while the sink's far end fails.", labels=["sink"])
        for sink in sinks:
            stats = sink.stats()
            for key, family in families.items():
                family.add_metric([sink.name], float(stats[key]))
            failing.add_metric([sink.name], 1.0 if stats["failing"] else 0.0)
        yield from families.values()
        yield failing

    def _stream_families(self, streams: dict[str, StreamMetrics]) -> Iterator[Metric]:
        """Per stream: the counters, the capture -> result histogram, the
        state. A stream named at the start that has no figures yet: zeros."""
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, StateSetMetricFamily

        from aip.pipeline.metrics import StreamMetrics

        counters = {field: CounterMetricFamily(f"aip_stream_{field}", doc, labels=["stream"])
                    for field, doc in _STREAM_COUNTERS}
        stream_latency = HistogramMetricFamily(
            "aip_stream_end_to_end_seconds", "Capture to ordered result, per stream.",
            labels=["stream"])
        stream_state = StateSetMetricFamily(
            "aip_stream_state", "The stream's state.", labels=["stream"])
        waiting = {name: StreamMetrics() for name in self.streams if name not in streams}
        named = {**streams, **waiting}
        for name, (key, stream) in zip(redacted_names(named), named.items()):
            for field, family in counters.items():
                family.add_metric([name], getattr(stream, field))
            stream_latency.add_metric([name], *_histogram_buckets(stream.end_to_end))
            if key in streams:
                stream_state.add_metric([name], {s: stream.state == s for s in _STREAM_STATES})
        yield from counters.values()
        yield stream_latency
        yield stream_state

    @staticmethod
    def _backend_families(workers: list[dict[str, Any]],
                          backends: dict[str, BackendMetrics]) -> Iterator[Metric]:
        """Per backend (a worker's label): frames, latency histograms, up."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        frames = CounterMetricFamily("aip_backend_frames", "Frames inferred by the backend's worker.",
                                     labels=["backend"])
        inference = HistogramMetricFamily("aip_backend_inference_seconds",
                                          "Inference time (preprocess, model, postprocess).",
                                          labels=["backend"])
        end_to_end = HistogramMetricFamily("aip_backend_end_to_end_seconds",
                                           "Capture to ordered result, per backend.",
                                           labels=["backend"])
        up = GaugeMetricFamily("aip_backend_up", "1 while the backend's worker is alive.",
                               labels=["backend", "device"])
        for worker in workers:
            label = worker["label"]
            backend = backends.get(label)
            frames.add_metric([label], backend.frames if backend else 0)
            if backend is not None:
                inference.add_metric([label], *_histogram_buckets(backend.inference))
                end_to_end.add_metric([label], *_histogram_buckets(backend.end_to_end))
            up.add_metric([label, str(worker["device"])], 1.0 if worker["alive"] else 0.0)
        yield from (frames, inference, end_to_end, up)

    @staticmethod
    def _run_families(status: Mapping[str, Any] | None, ideal_fps: float | None,
                      state: str) -> Iterator[Metric]:
        """The whole run: FPS, the calibration, the slots, the state."""
        from prometheus_client.core import GaugeMetricFamily, StateSetMetricFamily

        fps = GaugeMetricFamily("aip_fps", "Ordered results per second over the last 2 s.",
                                value=float(status["fps"]) if status is not None else 0.0)
        calibrated = GaugeMetricFamily("aip_calibrated_fps",
                                       "Calibrated throughput of all backends together.")
        if ideal_fps:
            calibrated.add_metric([], float(ideal_fps))
        slots = GaugeMetricFamily("aip_slots", "Frame slots in each state (FREE, WRITING, "
                                  "READY, READING).", labels=["state"])
        for name, count in ((status or {}).get("slots") or {}).items():  # None between runs
            slots.add_metric([name], float(count))
        yield from (fps, calibrated, slots)
        yield StateSetMetricFamily("aip_state", "The pipeline's state, as /healthz says it.",
                                   value={s: state == s for s in _STATES})


_STREAM_COUNTERS = (
    ("frames_read", "Frames read from the stream's source."),
    ("frames_published", "Frames put in a slot for the workers."),
    ("frames_ordered", "Results delivered in order."),
    ("frames_dropped", "Frames dropped by the on-full policy, or lost."),
    ("frames_late", "Frames skipped as older than max_age_ms."),
    ("buffer_full_waits", "Waits for a free slot."),
    ("reconnects", "Times the source was reopened."),
)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a slow scraper never holds up the exit
    observer: MetricsServer


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer

    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                code = 200
                content_type, body = self.server.observer.exposition(self.headers.get("Accept", ""))
            elif path == "/healthz":
                code, payload = health(self.server.observer.pipeline)
                content_type, body = "application/json", json.dumps(payload).encode() + b"\n"
            elif path == "/":
                code, content_type, body = 200, "text/plain; charset=utf-8", b"aip: /metrics /healthz\n"
            else:
                code, content_type, body = 404, "text/plain; charset=utf-8", b"not found\n"
        except Exception as error:  # a bad scrape must not print tracebacks or stop the server
            text = redact(str(error))
            log.warning("%s failed: %s: %s", path, type(error).__name__, text)
            code, content_type, body = 500, "text/plain; charset=utf-8", f"{text}\n".encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s " + format, self.address_string(), *args)


class MetricsServer:
    """``/metrics`` (Prometheus text) and ``/healthz`` on one port.

    >>> with MetricsServer(9100) as server, Pipeline(specs) as pipeline:
    ...     server.watch(pipeline)
    ...     for result in pipeline.run(sources): ...

    It listens from ``start`` (or ``with``), before the pipeline exists if
    need be (``/healthz`` then says ``starting``), so that a busy port fails
    before any worker starts. ``port=0`` takes a free port: read it back
    from :attr:`port`. Loopback by default: the figures name your streams.
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1", *,
                 pipeline: Pipeline | None = None, streams: Sequence[str] = ()) -> None:
        self.host = host
        self.requested_port = port
        self.collector = PipelineCollector(pipeline, streams=streams)
        self._registry: CollectorRegistry | None = None
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def pipeline(self) -> Pipeline | None:
        return self.collector.pipeline

    def watch(self, pipeline: Pipeline) -> None:
        """Serve the figures of ``pipeline`` from now on."""
        self.collector.pipeline = pipeline

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the metrics server is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> MetricsServer:
        from prometheus_client import CollectorRegistry, ProcessCollector

        registry = CollectorRegistry()
        registry.register(self.collector)
        ProcessCollector(registry=registry)  # the manager's own CPU and memory
        self._registry = registry
        server_class = _HTTPServer6 if ":" in self.host else _HTTPServer
        try:
            server = server_class((self.host, self.requested_port), _Handler)
        except OSError as error:
            raise OSError(error.errno, f"--metrics-port: cannot listen on {self.host}:"
                          f"{self.requested_port}: {error.strerror}") from error
        server.observer = self
        self._server = server
        # Polls for shutdown twice a second: nothing else wakes while idle.
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="aip-metrics", daemon=True)
        self._thread.start()
        return self

    def exposition(self, accept: str) -> tuple[str, bytes]:
        """``(content_type, body)`` of a scrape: Prometheus text, or
        OpenMetrics when the scraper asks for it."""
        from prometheus_client.exposition import choose_encoder

        assert self._registry is not None
        encoder, content_type = choose_encoder(accept)
        return content_type, encoder(self._registry)

    def close(self) -> None:
        """Stop listening. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ---- the progress display -------------------------------------------------------------

class _Rates:
    """Per-key rates of growing counters over a sliding window."""

    def __init__(self, window_s: float, start: float | None = None) -> None:
        self.window_s = window_s
        self._samples: dict[str, deque[tuple[float, int]]] = {}
        self._first = start

    def update(self, now: float, counts: Mapping[str, int]) -> dict[str, float]:
        rates = {}
        if self._first is None:
            self._first = now
        for key, count in counts.items():
            # A key seen for the first time (a stream that joined): from zero at the start.
            samples = self._samples.setdefault(key, deque([(self._first, 0)]))
            if samples and count < samples[-1][1]:
                samples.clear()  # a new run: its counters started again
            samples.append((now, count))
            # Keep one sample at least window_s old: the rate spans the whole window.
            while len(samples) > 2 and now - samples[1][0] >= self.window_s:
                samples.popleft()
            then, before = samples[0]
            rates[key] = (count - before) / (now - then) if now > then else 0.0
        for key in self._samples.keys() - counts.keys():
            del self._samples[key]
        return rates


# Rows of streams shown live; the rest are summed up in one line (the plain
# line and /metrics still have them all).
_MAX_STREAM_ROWS = 20
_MAX_PLAIN_STREAMS = 8


class ProgressDisplay:
    """A live view of a run: per-stream FPS, drops and late frames, and each
    backend's share of the frames.

    On a terminal, a rich table refreshed ``refresh_per_second`` times a
    second; otherwise (a pipe, a log file, a CI job) one plain line every
    ``interval_s`` and one at the end. ``quiet`` shows nothing. Use it around
    the loop over ``pipeline.run()``::

        with ProgressDisplay(pipeline):
            for result in pipeline.run(sources): ...

    It reads ``pipeline.status()`` from its own thread and never touches the
    run. Writes to ``file`` (default: stderr, so stdout stays the results').
    """

    def __init__(self, pipeline: Pipeline, *, file: TextIO | None = None, quiet: bool = False,
                 terminal: bool | None = None, interval_s: float = 5.0,
                 refresh_per_second: float = 4.0) -> None:
        self.pipeline = pipeline
        self.file = file if file is not None else sys.stderr
        self.quiet = quiet
        self.interval_s = interval_s
        self.refresh_per_second = refresh_per_second
        self.terminal = self._is_terminal() if terminal is None else terminal
        self._started = 0.0
        self._final = False
        self._rates = _Rates(interval_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Any = None
        self._rerouted: list[logging.StreamHandler[Any]] = []
        self._last: Any = None

    def _is_terminal(self) -> bool:
        isatty: Callable[[], bool] | None = getattr(self.file, "isatty", None)
        try:
            return bool(isatty and isatty())
        except ValueError:  # a closed file
            return False

    # ---- lifecycle ----

    def __enter__(self) -> ProgressDisplay:
        self._started = time.monotonic()
        self._rates = _Rates(self.interval_s, self._started)
        if self.quiet:
            return self
        if self.terminal:
            try:
                self._start_live()
                return self
            except ImportError:
                log.debug("rich is not installed: plain progress lines")
        self._thread = threading.Thread(target=self._plain_lines, name="aip-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._final = True
        if self._live is not None:
            self._live.stop()  # draws the last figures, and leaves them on screen
            for handler in self._rerouted:
                handler.setStream(self.file)
            self._rerouted = []
            self._live = None
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._write_line()

    # ---- a terminal: rich ----

    def _start_live(self) -> None:
        from rich.console import Console
        from rich.live import Live

        console = Console(file=self.file, force_terminal=True)
        self._rates = _Rates(2.0, self._started)
        # Not stdout: whoever pipes the results must get them alone.
        redirect = self.file is sys.stderr
        self._live = Live(get_renderable=self._render, console=console,
                          refresh_per_second=self.refresh_per_second,
                          redirect_stdout=False, redirect_stderr=redirect)
        self._live.start()
        # Log records (a reconnect, an eviction) print above the table,
        # not through it: the root handlers that write to stderr write to
        # rich's proxy of it while the display is up.
        if redirect and sys.stderr is not self.file:
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream is self.file:
                    handler.setStream(sys.stderr)
                    self._rerouted.append(handler)

    def _render(self) -> Any:
        try:
            self._last = self._table(*self._figures())
        except Exception as error:  # rich's refresh thread must go on; the next look may work
            log.debug("progress display: %s: %s", type(error).__name__, error)
        return self._last if self._last is not None else ""

    def _figures(self) -> tuple[dict[str, Any], float, dict[str, float]]:
        status = self.pipeline.status()
        state = observed_state(status, self.pipeline.metrics.seconds_since_last_result())
        if self._final and state == "idle":
            state = "done"
        named = status["streams"]  # shown by their redacted names, from here on
        status["streams"] = dict(zip(redacted_names(named), named.values()))
        counts = {f"stream:{name}": s["frames_ordered"] for name, s in status["streams"].items()}
        counts.update({f"backend:{w['label']}": w["frames"] for w in status["workers"]})
        counts["all"] = status["frames_ordered"]
        status["observed_state"] = state
        return status, time.monotonic() - self._started, self._rates.update(time.monotonic(), counts)

    def _table(self, status: dict[str, Any], elapsed: float, rates: dict[str, float]) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        state = status["observed_state"]
        colour = {"ready": "green", "backpressure": "yellow", "starved": "yellow",
                  "stalled": "red"}.get(state, "dim")
        slots = status["slots"] or {}
        busy = sum(n for name, n in slots.items() if name != "FREE")
        header = Text.assemble(
            ("aip ", "bold"), (f"{state:<12}", colour),
            f"{rates.get('all', 0.0):7.1f} FPS  ordered {status['frames_ordered']:,}  "
            f"dropped {status['frames_dropped']:,}  late {status['frames_late']:,}  "
            f"slots {busy}/{sum(slots.values())}  {elapsed:.1f} s")

        streams = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("stream", "state"):
            streams.add_column(column)
        for column in ("FPS", "ordered", "dropped", "late", "p50 ms", "p99 ms"):
            streams.add_column(column, justify="right")
        items = list(status["streams"].items())
        for name, s in items[:_MAX_STREAM_ROWS]:
            e2e = s["end_to_end"]
            streams.add_row(
                redact(name), s["state"], f"{rates.get(f'stream:{name}', 0.0):.1f}",
                f"{s['frames_ordered']:,}",
                Text(f"{s['frames_dropped']:,}", "yellow" if s["frames_dropped"] else ""),
                Text(f"{s['frames_late']:,}", "yellow" if s["frames_late"] else ""),
                _ms(e2e["p50_ms"]), _ms(e2e["p99_ms"]))
        if len(items) > _MAX_STREAM_ROWS:
            rest = [s for _, s in items[_MAX_STREAM_ROWS:]]
            streams.add_row(f"+{len(rest)} more", "", "", f"{sum(s['frames_ordered'] for s in rest):,}",
                            f"{sum(s['frames_dropped'] for s in rest):,}",
                            f"{sum(s['frames_late'] for s in rest):,}", "", "")

        backends = Table(box=None, pad_edge=False, header_style="bold")
        backends.add_column("backend")
        backends.add_column("device")
        backends.add_column("FPS", justify="right")
        backends.add_column("frames", justify="right")
        backends.add_column("share", justify="right")
        backends.add_column("")
        total = sum(w["frames"] for w in status["workers"])
        for worker in status["workers"]:
            share = 100 * worker["frames"] / total if total else 0.0
            backends.add_row(
                worker["label"] if worker["alive"] else Text(f"{worker['label']} (dead)", "red"),
                str(worker["device"]), f"{rates.get('backend:' + worker['label'], 0.0):.1f}",
                f"{worker['frames']:,}", f"{share:.1f} %",
                ProgressBar(total=100, completed=share, width=20))
        return Group(header, Text(""), streams, Text(""), backends)

    # ---- not a terminal: plain lines ----

    def _plain_lines(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._write_line()

    def _write_line(self) -> None:
        try:
            line = self.plain_line(*self._figures())
            self.file.write(line + "\n")
            self.file.flush()
        except Exception as error:  # a closed pipe: stop talking, never stop the run
            log.debug("progress line: %s: %s", type(error).__name__, error)

    @staticmethod
    def plain_line(status: dict[str, Any], elapsed: float, rates: dict[str, float]) -> str:
        """One line: run totals | per stream FPS, dropped, late | each backend's share."""
        head = (f"aip: {elapsed:.1f} s {status['observed_state']} {rates.get('all', 0.0):.1f} FPS "
                f"ordered {status['frames_ordered']} dropped {status['frames_dropped']} "
                f"late {status['frames_late']}")
        items = list(status["streams"].items())
        streams = [f"{redact(name)} {rates.get(f'stream:{name}', 0.0):.1f} FPS "
                   f"({s['frames_dropped']} dropped, {s['frames_late']} late)"
                   for name, s in items[:_MAX_PLAIN_STREAMS]]
        if len(items) > _MAX_PLAIN_STREAMS:
            streams.append(f"+{len(items) - _MAX_PLAIN_STREAMS} more")
        total = sum(w["frames"] for w in status["workers"])
        shares = [f"{w['label']} {100 * w['frames'] / total if total else 0.0:.0f}%"
                  + ("" if w["alive"] else " (dead)") for w in status["workers"]]
        return " | ".join([head, "streams " + ", ".join(streams) if streams else "no stream",
                           "backends " + ", ".join(shares)])


def _ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"
