"""The MQTT and webhook sinks against real servers on loopback: amqtt's broker
with a paho subscriber, and http.server. Every server is started here and
stopped; the far end is killed and brought back mid-run."""
from __future__ import annotations

import asyncio
import collections
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from aip.io.remote_sinks import (
    DeliveryPolicy,
    MqttSink,
    QueuedDelivery,
    WebhookSink,
    open_remote_sinks,
    topic_level,
)
from aip.results import FrameResult, Gap, TrackEvent

# Fast retries, so that outages play out in a fraction of a second.
FAST = DeliveryPolicy(max_attempts=3, backoff_initial_s=0.02, backoff_max_s=0.1)
WRITE_LIMIT_S = 0.5  # a behaviour check (write never waits on the far end), not a benchmark


def wait_until(condition: Callable[[], object], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_result(stream: str, frame_id: int, n_events: int = 1, tracked: bool = True) -> FrameResult:
    detections = np.array([[10.5, 20.25, 110.0, 220.0, 0.875, 0.0], [5.0, 6.0, 7.0, 8.0, 0.5, 2.0]], np.float32)
    events = tuple(
        TrackEvent(
            kind="cross", stream=stream, region="door", track_id=7 + i, class_id=0, class_name="person",
            frame_id=frame_id, capture_ns=1_000, timestamp=1_700_000_000.25, direction="in",
        )
        for i in range(n_events)
    )
    return FrameResult(
        frame_id=frame_id, backend="onnx", worker=1, detections=detections,
        t_capture_ns=0, t_ingest_ns=1_000_000, t_infer_start_ns=2_000_000, t_infer_end_ns=5_000_000,
        t_done_ns=6_000_000, stream=stream,
        track_ids=np.array([7, 8], np.int64) if tracked else None,
        events=events, class_names=("person", "bicycle", "car"),
    )


def timed_write(sink: QueuedDelivery[Any], result: FrameResult | Gap) -> float:
    start = time.perf_counter()
    sink.write(result)
    return time.perf_counter() - start


# ---- an MQTT broker (amqtt) in a thread, and a subscriber (paho) ------------------------------

class Broker:
    """amqtt's broker on 127.0.0.1:port, its asyncio loop in a thread of its own."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="amqtt-broker", daemon=True)
        self._broker: Any = None

    def _run(self) -> None:
        from amqtt.broker import Broker as AmqttBroker  # type: ignore[import-untyped]  # no py.typed

        asyncio.set_event_loop(self._loop)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            # Only anonymous auth: no $SYS plugin (a timer task), no packet logging.
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

        async def start() -> None:
            self._broker = AmqttBroker(config)
            await self._broker.start()

        try:
            self._loop.run_until_complete(start())
        except BaseException as exc:  # noqa: BLE001 - handed to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> Broker:
        self._thread.start()
        assert self._ready.wait(10), "the broker did not start"
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._broker is not None:
            asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class Subscriber:
    """A paho client subscribed to ``topic``, keeping what it receives."""

    def __init__(self, port: int, topic: str = "aip/#") -> None:
        self.messages: list[paho.MQTTMessage] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_connect = lambda client, *args: client.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "no SUBACK"

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(message)

    def received(self, suffix: str = "") -> list[paho.MQTTMessage]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def payloads(self, suffix: str = "") -> list[Any]:
        return [json.loads(m.payload) for m in self.received(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker() -> Iterator[Broker]:
    running = Broker(free_port()).start()
    yield running
    running.stop()


@pytest.fixture
def subscriber(broker: Broker) -> Iterator[Subscriber]:
    client = Subscriber(broker.port)
    yield client
    client.close()


# ---- a webhook receiver (http.server) ---------------------------------------------------------

class HookServer:
    """ThreadingHTTPServer on 127.0.0.1 that records each POST (header names in
    lower case) and answers the next status of ``statuses`` (200 when none is
    left); ``hang`` makes it hold every request until released."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[tuple[dict[str, str], Any]] = []
        self.statuses: collections.deque[int] = collections.deque()
        self.hang = threading.Event()
        self.release = threading.Event()
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if server.hang.is_set():
                    server.release.wait(10)
                    return
                with lock:
                    server.requests.append(({k.lower(): v for k, v in self.headers.items()}, json.loads(body)))
                    status = server.statuses.popleft() if server.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.05,), name="hook-server", daemon=True
        )
        self._thread.start()

    def bodies(self) -> list[Any]:
        return [body for _, body in self.requests]

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(10)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback only: a proxy from the environment must not take the webhook's requests."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def hook() -> Iterator[HookServer]:
    server = HookServer()
    yield server
    server.stop()


# ---- names and URLs ---------------------------------------------------------------------------

def test_topic_level_is_one_valid_level() -> None:
    assert topic_level("cam1") == "cam1"
    assert topic_level("10.0.0.5:554/stream1") == "10.0.0.5_554_stream1"
    assert topic_level("a+b#c d") == "a_b_c_d"
    assert topic_level("") == "_"
    level = topic_level("rtsp://admin:hunter2@host/x")
    assert "hunter2" not in level and "/" not in level


@pytest.mark.parametrize(
    ("mqtt", "webhook", "expected"),
    [
        ("tcp://127.0.0.1:1883", None, "mqtt://"),
        ("mqtt://", None, "mqtt://"),
        ("mqtt://host:notaport", None, "mqtt://"),
        (None, "ftp://host/hook", "http[s]://"),
        (None, "http:///hook", "http[s]://"),
        (None, "localhost:8080/hook", "http[s]://"),
    ],
)
def test_bad_url_raises_value_error_naming_the_form(mqtt: str | None, webhook: str | None, expected: str) -> None:
    with pytest.raises(ValueError, match="expected") as info:
        open_remote_sinks(mqtt, webhook)
    assert expected in str(info.value)


def test_bad_url_error_is_redacted() -> None:
    with pytest.raises(ValueError) as info:
        open_remote_sinks("tcp://user:hunter2@host", None)
    assert "hunter2" not in str(info.value)


def test_missing_paho_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'aip\[events\]'"):
        MqttSink("mqtt://127.0.0.1:1")


# ---- MQTT -------------------------------------------------------------------------------------

def test_mqtt_events_arrive_as_json(broker: Broker, subscriber: Subscriber) -> None:
    with MqttSink(f"mqtt://127.0.0.1:{broker.port}", policy=FAST) as sink:
        sink.write(make_result("cam/1", 0, n_events=2))
        sink.write(Gap(1, "dropped", stream="cam/1"))
        sink.write(make_result("cam/1", 2, n_events=0))
        assert wait_until(lambda: len(subscriber.received()) >= 2)
        assert sink.stats()["delivered"] == 2
    assert {m.topic for m in subscriber.received()} == {"aip/cam_1/events"}  # no detections: not asked for
    first = subscriber.payloads()[0]
    assert first == {
        "kind": "cross", "stream": "cam/1", "region": "door", "track_id": 7, "class_id": 0,
        "class_name": "person", "frame_id": 0, "timestamp": 1_700_000_000.25, "direction": "in",
    }
    assert [p["track_id"] for p in subscriber.payloads()] == [7, 8]
    stats = sink.stats()
    assert stats["dropped"] == 0 and stats["failing"] is False


def test_mqtt_detections_at_qos_1(broker: Broker, subscriber: Subscriber) -> None:
    with MqttSink(f"mqtt://127.0.0.1:{broker.port}", qos=1, detections=True, policy=FAST) as sink:
        sink.write(make_result("cam2", 0, n_events=1))
        sink.write(Gap(1, "dropped", stream="cam2"))
        assert wait_until(lambda: len(subscriber.received()) >= 3)
    assert all(m.qos == 1 for m in subscriber.received())
    frame, gap = subscriber.payloads("/detections")
    assert frame["stream"] == "cam2" and frame["frame_id"] == 0 and frame["backend"] == "onnx"
    assert frame["detections"] == [[10.5, 20.25, 110.0, 220.0, 0.875, 0], [5.0, 6.0, 7.0, 8.0, 0.5, 2]]
    assert frame["names"] == ["person", "car"] and frame["track_ids"] == [7, 8]
    assert frame["latency_ms"] == 6.0 and frame["inference_ms"] == 3.0
    assert gap == {"stream": "cam2", "frame_id": 1, "dropped": "dropped"}
    assert len(subscriber.received("/events")) == 1
    assert sink.stats()["delivered"] == 3


def test_mqtt_retained_message_reaches_a_late_subscriber(broker: Broker) -> None:
    with MqttSink(f"mqtt://127.0.0.1:{broker.port}", qos=1, retain=True, policy=FAST) as sink:
        sink.write(make_result("door", 5))
        assert wait_until(lambda: sink.stats()["delivered"] == 1)
    late = Subscriber(broker.port)
    try:
        assert wait_until(lambda: late.received("/events"))
        message = late.received("/events")[0]
        assert message.retain and json.loads(message.payload)["frame_id"] == 5
    finally:
        late.close()


def test_mqtt_broker_down_mid_run_then_back() -> None:
    port = free_port()
    first = Broker(port).start()
    listener = Subscriber(port)
    sink = MqttSink(f"mqtt://127.0.0.1:{port}", policy=FAST)
    second: Broker | None = None
    try:
        sink.write(make_result("cam", 0))
        assert wait_until(lambda: len(listener.received()) == 1)
    finally:
        listener.close()
        first.stop()
    try:
        slowest = max(timed_write(sink, make_result("cam", i)) for i in range(1, 41))
        assert slowest < WRITE_LIMIT_S
        assert wait_until(lambda: sink.stats()["failing"] and sink.stats()["retries"] > 0)
        assert wait_until(lambda: sink.stats()["dropped"] > 0)
        second = Broker(port).start()  # the same port: the sink reconnects by itself
        listener = Subscriber(port)
        try:
            for i in range(100, 105):
                sink.write(make_result("cam", i))
            assert wait_until(lambda: {100, 101, 102, 103, 104} <= {p["frame_id"] for p in listener.payloads()})
            assert wait_until(lambda: not sink.stats()["failing"])
        finally:
            listener.close()
    finally:
        sink.close()
        if second is not None:
            second.stop()
    stats = sink.stats()
    assert stats["delivered"] + stats["dropped"] == 46  # every message accounted for
    assert stats["last_error"] is not None and str(port) in stats["last_error"]


def test_mqtt_broker_down_at_start() -> None:
    port = free_port()  # nothing listens there
    start = time.perf_counter()
    sink = MqttSink(f"mqtt://aip:hunter2@127.0.0.1:{port}", qos=1, policy=FAST)
    try:
        slowest = max(timed_write(sink, make_result("cam", i)) for i in range(10))
        assert time.perf_counter() - start < WRITE_LIMIT_S * 2
        assert slowest < WRITE_LIMIT_S
        assert wait_until(lambda: sink.stats()["failing"])
        assert wait_until(lambda: sink.stats()["dropped"] >= 1)
        stats = sink.stats()
        assert stats["delivered"] == 0 and stats["retries"] >= 1
        assert "cannot connect" in stats["last_error"] and "hunter2" not in stats["last_error"]
    finally:
        sink.close(timeout_s=0.2)
    assert sink.stats()["dropped"] == 10 and sink.stats()["queued"] == 0


class SilentBroker:
    """Accepts MQTT connections and answers CONNECT with CONNACK, then never
    acknowledges anything: a broker that hangs."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._server.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                pass
            else:
                self._connections.append(conn)
            for conn in list(self._connections):
                conn.settimeout(0.0)
                try:
                    data = conn.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._connections.remove(conn)
                    conn.close()
                elif data[0] == 0x10:  # CONNECT
                    conn.sendall(b"\x20\x02\x00\x00")  # CONNACK, accepted

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._connections:
            conn.close()
        self._server.close()


def test_mqtt_unacknowledged_publish_is_retried_then_dropped() -> None:
    silent = SilentBroker()
    policy = DeliveryPolicy(max_attempts=2, backoff_initial_s=0.02, backoff_max_s=0.05)
    sink = MqttSink(f"mqtt://127.0.0.1:{silent.port}", qos=1, timeout_s=0.2, policy=policy)
    try:
        assert timed_write(sink, make_result("cam", 0)) < WRITE_LIMIT_S
        assert wait_until(lambda: sink.stats()["dropped"] == 1)
        stats = sink.stats()
        assert stats["retries"] == 1 and stats["delivered"] == 0 and stats["failing"]
        assert "did not acknowledge" in stats["last_error"]
    finally:
        sink.close(timeout_s=0.2)
        silent.stop()


# ---- webhook ----------------------------------------------------------------------------------

def test_webhook_bodies_and_token_arrive(hook: HookServer) -> None:
    with WebhookSink(hook.url, token="s3cret", detections=True, policy=FAST) as sink:
        sink.write(make_result("cam:1", 0, n_events=2))
        sink.write(make_result("cam:1", 1, n_events=0))
        assert wait_until(lambda: len(hook.requests) == 3)
    (h1, events), (h2, frame0), (h3, frame1) = hook.requests
    assert h1["authorization"] == "Bearer s3cret" and h1["content-type"] == "application/json"
    assert h1["x-aip-kind"] == "events" and h2["x-aip-kind"] == "detections"
    assert [e["track_id"] for e in events] == [7, 8] and events[0]["kind"] == "cross"
    assert events[0]["stream"] == "cam:1"
    assert frame0["frame_id"] == 0 and frame1["frame_id"] == 1 and frame1["track_ids"] == [7, 8]
    assert sink.stats()["delivered"] == 3


def test_webhook_without_detections_sends_only_frames_with_events(hook: HookServer) -> None:
    with WebhookSink(hook.url, policy=FAST) as sink:
        sink.write(make_result("cam", 0, n_events=0))
        sink.write(Gap(1, "lost", stream="cam"))
        sink.write(make_result("cam", 2, n_events=1))
        assert wait_until(lambda: sink.stats()["delivered"] == 1)
    assert len(hook.requests) == 1 and "authorization" not in hook.requests[0][0]
    assert hook.bodies()[0][0]["frame_id"] == 2


def test_webhook_server_down_then_back() -> None:
    port = free_port()  # refused until the server starts there
    sink = WebhookSink(f"http://127.0.0.1:{port}/hook?token=hunter2", policy=FAST)
    server: HookServer | None = None
    try:
        slowest = max(timed_write(sink, make_result("cam", i)) for i in range(20))
        assert slowest < WRITE_LIMIT_S
        assert wait_until(lambda: sink.stats()["failing"] and sink.stats()["retries"] > 0)
        assert wait_until(lambda: sink.stats()["dropped"] > 0)
        assert "hunter2" not in sink.stats()["last_error"]
        server = HookServer(port)
        for i in range(100, 103):
            sink.write(make_result("cam", i))
        assert wait_until(lambda: {100, 101, 102} <= {body[0]["frame_id"] for body in server.bodies()})
        assert not sink.stats()["failing"]
    finally:
        sink.close()
        if server is not None:
            server.stop()
    stats = sink.stats()
    assert stats["delivered"] + stats["dropped"] == 23


def test_webhook_500_then_200_is_delivered_after_retry(hook: HookServer) -> None:
    hook.statuses.extend([500, 503])
    with WebhookSink(hook.url, policy=FAST) as sink:
        sink.write(make_result("cam", 0))
        assert wait_until(lambda: sink.stats()["delivered"] == 1)
        stats = sink.stats()
    assert len(hook.requests) == 3 and stats["retries"] == 2 and stats["dropped"] == 0
    assert not stats["failing"] and "HTTP 503" in stats["last_error"]


@pytest.mark.parametrize("status", [400, 401, 404])
def test_webhook_4xx_is_dropped_at_once(hook: HookServer, status: int) -> None:
    hook.statuses.append(status)
    with WebhookSink(hook.url, policy=FAST) as sink:
        sink.write(make_result("cam", 0))
        assert wait_until(lambda: sink.stats()["dropped"] == 1)
        stats = sink.stats()
        assert stats["retries"] == 0 and stats["failing"] and f"HTTP {status}" in stats["last_error"]
        sink.write(make_result("cam", 1))  # the next message goes through
        assert wait_until(lambda: sink.stats()["delivered"] == 1)
    assert len(hook.requests) == 2 and not sink.stats()["failing"]


def test_webhook_429_is_retried(hook: HookServer) -> None:
    hook.statuses.append(429)
    with WebhookSink(hook.url, policy=FAST) as sink:
        sink.write(make_result("cam", 0))
        assert wait_until(lambda: sink.stats()["delivered"] == 1)
    assert sink.stats()["retries"] == 1


# ---- the queue and close() --------------------------------------------------------------------

def test_full_queue_drops_and_counts(hook: HookServer) -> None:
    hook.hang.set()  # the server takes each request and never answers
    policy = DeliveryPolicy(maxsize=4, max_attempts=1, backoff_initial_s=0.02, backoff_max_s=0.1)
    sink = WebhookSink(hook.url, timeout_s=5.0, policy=policy)
    try:
        sink.write(make_result("cam", 0))
        assert wait_until(lambda: sink.stats()["queued"] == 0)  # the thread holds it, waiting on the server
        slowest = max(timed_write(sink, make_result("cam", i)) for i in range(1, 31))
        assert slowest < WRITE_LIMIT_S
        stats = sink.stats()
        assert stats["queued"] == 4 and stats["dropped_queue_full"] == 26 and stats["dropped"] == 26
    finally:
        start = time.perf_counter()
        sink.close(timeout_s=0.3)
        assert time.perf_counter() - start < 2.0
    assert sink.stats()["dropped"] >= 30 and sink.stats()["delivered"] == 0


def _dead_mqtt() -> QueuedDelivery[Any]:
    return MqttSink(f"mqtt://127.0.0.1:{free_port()}", qos=1, policy=FAST)


def _dead_webhook() -> QueuedDelivery[Any]:
    return WebhookSink(f"http://127.0.0.1:{free_port()}/hook", policy=FAST)


@pytest.mark.parametrize("make_sink", [_dead_mqtt, _dead_webhook], ids=["mqtt", "webhook"])
def test_close_does_not_hang_when_the_far_end_is_dead(make_sink: Callable[[], QueuedDelivery[Any]]) -> None:
    # Failing one by one, 50 messages would take seconds; close's deadline wins.
    sink = make_sink()
    for i in range(50):
        sink.write(make_result("cam", i))
    start = time.perf_counter()
    sink.close(timeout_s=0.3)
    assert time.perf_counter() - start < 1.5
    stats = sink.stats()
    assert stats["delivered"] == 0 and stats["queued"] == 0 and stats["dropped"] >= 49
    sink.write(make_result("cam", 99))  # after close: counted, not queued, no error
    assert sink.stats()["dropped"] >= 50
    sink.close()  # idempotent


def test_open_remote_sinks_makes_both(broker: Broker, subscriber: Subscriber, hook: HookServer) -> None:
    sinks = open_remote_sinks(f"mqtt://127.0.0.1:{broker.port}", hook.url, token="t", qos=1)
    try:
        assert [sink.name for sink in sinks] == ["mqtt", "webhook"]
        for sink in sinks:
            sink.write(make_result("cam", 0))
        assert wait_until(lambda: subscriber.received("/events") and hook.requests)
        assert hook.requests[0][0]["authorization"] == "Bearer t"
    finally:
        for sink in sinks:
            sink.close()
    assert open_remote_sinks(None, None) == []
