"""Sinks that send events and results to another machine: an MQTT broker, a webhook.

Neither may slow the pipeline down, whatever the far end does. ``write``
encodes the result into small messages (bytes) and puts them in a bounded
queue; one daemon thread per sink delivers them, with retries and back-off.
A full queue drops the message and counts it; a dead, slow or refusing far
end is a number in :meth:`QueuedDelivery.stats`, never an exception or a
wait in ``write``::

    pipeline thread                          delivery thread (one per sink)
    ---------------                          ------------------------------
    sink.write(result)                       loop:
      encode -> [message, ...]                 message = queue.get()
      queue.put_nowait(message) --> queue -->  for attempt in 1..max_attempts:
      (full: dropped += 1)        (bounded)      wait out the back-off while failing
                                                 _deliver(message)  -> MQTT publish / HTTP POST
                                                   ok:        delivered += 1, back-off reset
                                                   rejected:  dropped += 1 (retrying cannot help)
                                                   failed:    retries += 1, back-off doubles
                                               all attempts failed: dropped += 1

Messages are encoded in ``write``, on the producer's side: a queued
:class:`~aip.results.FrameResult` would keep its frame image alive (megabytes
per message) and its arrays may be views of a ring slot that is reused once
``write`` returns. A message is a few hundred bytes that own their data.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from aip.io.credentials import redact
from aip.io.sinks import event_records, result_record
from aip.results import FrameResult, Gap

if TYPE_CHECKING:
    from paho.mqtt.client import Client, ConnectFlags
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

__all__ = [
    "DeliveryPolicy", "MqttSink", "check_urls", "QueuedDelivery", "WebhookSink", "open_remote_sinks", "topic_level",
]

log = logging.getLogger(__name__)

# Messages waiting per sink. Larger rides out a longer outage without loss
# (a busy run makes a few events per second; 1000 is minutes of them) at the
# cost of memory (~1 KB each with detections) and of delivering stale
# messages once the far end is back; smaller drops sooner and stays fresh.
DEFAULT_QUEUE_SIZE = 1000

# Attempts per message, the first included. More rides out a short blip for
# that message; fewer moves on sooner, so that one message the far end keeps
# failing on (a "poison" message) cannot hold up those behind it for long.
DEFAULT_MAX_ATTEMPTS = 5

# Back-off between failed attempts: doubles from the first value up to the
# cap. A short first wait retries a blip almost at once; the cap bounds both
# how long a recovered endpoint waits to be noticed and how often a dead one
# is knocked on (one attempt per cap while it stays down).
DEFAULT_BACKOFF_INITIAL_S = 0.1
DEFAULT_BACKOFF_MAX_S = 5.0

# How long close() waits, after its deadline, for the attempt in progress to
# end (an HTTP request or a connect cannot be interrupted). Short: the thread
# is a daemon, and an attempt that outlives it is counted when it ends.
_STOP_GRACE_S = 0.5

# How often an idle MQTT sink services its connection (keep-alive pings,
# noticing a broker that went away, reconnecting). Far below the keep-alive;
# one select() call per tick.
_MQTT_IDLE_TICK_S = 1.0

# Most of a webhook's reply body that is read (then thrown away): enough to
# let the server finish its answer, not enough for a wrong URL that streams.
_MAX_REPLY_BYTES = 64 * 1024

MessageT = TypeVar("MessageT")
_SinkT = TypeVar("_SinkT", bound="QueuedDelivery[Any]")


class DeliveryError(Exception):
    """An attempt failed; a later one may succeed (far end down, 5xx, timeout)."""


class RejectedError(DeliveryError):
    """The far end refused this message for good (HTTP 4xx): retrying cannot help."""


@dataclass(frozen=True)
class DeliveryPolicy:
    """How a :class:`QueuedDelivery` queues and retries (see the module's constants for the trade-offs).

    Attributes:
        maxsize: messages the queue holds; a message that does not fit is dropped.
        max_attempts: attempts per message, the first included, before it is dropped.
        backoff_initial_s: the wait after the first failure; it doubles after
            each further one, up to ``backoff_max_s``, and resets on a delivery.
    """

    maxsize: int = DEFAULT_QUEUE_SIZE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff_initial_s: float = DEFAULT_BACKOFF_INITIAL_S
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S

    def __post_init__(self) -> None:
        if self.maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {self.maxsize}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError(
                f"need 0 < backoff_initial_s <= backoff_max_s, got {self.backoff_initial_s} and {self.backoff_max_s}"
            )


class QueuedDelivery(Generic[MessageT]):
    """A sink that hands messages to one delivery thread through a bounded queue.

    :meth:`write` never blocks and never raises for the far end's sake: it
    encodes the result (:meth:`_encode`) and queues the messages, dropping
    (and counting) those that do not fit. The thread delivers each message
    (:meth:`_deliver`) with up to ``policy.max_attempts`` attempts.

    Retry policy: a bounded number of attempts per message, with a back-off
    that belongs to the endpoint, not to the message. Bounded, because a
    message the far end keeps failing on must not hold up every message
    behind it, and because an event delivered minutes late is worth less
    than the next one. The back-off grows over consecutive failures whichever
    message they hit and resets on the first delivery, so a dead endpoint is
    tried once per ``backoff_max_s``, not hammered afresh for each message.
    While it stays down the queue fills and new messages are dropped at
    ``write``; once it is back, delivery resumes within one back-off.

    Subclasses set :attr:`name`, implement :meth:`_encode` and
    :meth:`_deliver`, and call :meth:`_start_delivery` last in ``__init__``.
    """

    name: str = "remote"
    """What the sink is, for metrics: ``"mqtt"``, ``"webhook"``."""

    target: str = ""
    """Where it delivers, redacted (no password or token)."""

    # The delivery thread blocks this long at most on an empty queue before
    # calling _on_idle; None: it blocks until a message comes.
    _idle_tick_s: float | None = None

    def __init__(self, policy: DeliveryPolicy | None = None) -> None:
        self.policy = policy or DeliveryPolicy()
        # None is the wake-up that close() puts in; never a message.
        self._queue: queue.Queue[MessageT | None] = queue.Queue(self.policy.maxsize)
        self._lock = threading.Lock()  # guards the counters and the failure state below
        self._delivered = 0
        self._dropped = 0
        self._dropped_full = 0
        self._retries = 0
        self._failing = False
        self._last_error: str | None = None
        self._backoff_s = self.policy.backoff_initial_s  # the wait after the next failure
        self._retry_at = 0.0  # monotonic time before which no attempt is made (while failing)
        self._closing = threading.Event()  # close() was called: drain, then stop
        self._stop = threading.Event()  # give up now: the close deadline passed
        self._close_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"aip-{self.name}-delivery", daemon=True)

    def _start_delivery(self) -> None:
        self._thread.start()

    # ---- what subclasses provide -------------------------------------------------------------

    def _encode(self, result: FrameResult | Gap) -> Iterable[MessageT]:
        """The messages ``result`` makes (none is fine). Runs in the producer's thread."""
        raise NotImplementedError

    def _deliver(self, message: MessageT) -> None:
        """One attempt to deliver ``message``. Runs in the delivery thread.

        Returns when delivered; raises :class:`RejectedError` when retrying
        cannot help, any other exception when it may.
        """
        raise NotImplementedError

    def _on_idle(self) -> None:
        """Called in the delivery thread at start and every ``_idle_tick_s`` without messages."""

    def _on_stop(self) -> None:
        """Called in the delivery thread as it ends: release the connection."""

    # ---- the producer's side -----------------------------------------------------------------

    def write(self, result: FrameResult | Gap) -> None:
        """Queue what ``result`` makes for delivery; returns at once, whatever the far end does."""
        messages = list(self._encode(result))
        if self._closing.is_set():
            self._count(dropped=len(messages))
            return
        for message in messages:
            try:
                self._queue.put_nowait(message)
            except queue.Full:
                self._count(dropped=1, dropped_full=1)

    def stats(self) -> dict[str, Any]:
        """Counters, for metrics.

        ``delivered``, ``dropped`` (all causes), ``dropped_queue_full`` (the
        part of ``dropped`` that found the queue full), ``retries`` (attempts
        after a message's first), ``queued`` (waiting now), ``failing``
        (the last attempt did not deliver: the far end is down or refusing;
        cleared by the next delivery), ``last_error`` (the last failure, as
        text, redacted; kept after recovery, for the record).
        """
        with self._lock:
            return {
                "delivered": self._delivered,
                "dropped": self._dropped,
                "dropped_queue_full": self._dropped_full,
                "retries": self._retries,
                "queued": self._queue.qsize(),
                "failing": self._failing,
                "last_error": self._last_error,
            }

    def close(self, timeout_s: float = 2.0) -> None:
        """Deliver what is queued for at most ``timeout_s``, then stop the thread.

        Messages still queued then are counted as dropped; one whose attempt
        is still in progress is counted when that attempt ends. Returns in at
        most ``timeout_s`` plus a short grace, however dead the far end is.
        Idempotent; a later :meth:`write` counts its messages as dropped.
        """
        with self._close_lock:
            if self._closing.is_set():
                return
            self._closing.set()
        try:
            self._queue.put_nowait(None)  # wakes a thread blocked on an empty queue
        except queue.Full:
            pass  # not blocked then: it sees _closing after its current message
        if self._thread.is_alive():
            self._thread.join(max(timeout_s, 0.0))
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(_STOP_GRACE_S)
        left = 0
        while True:
            try:
                message = self._queue.get_nowait()
            except queue.Empty:
                break
            left += message is not None
        self._count(dropped=left)

    def __enter__(self: _SinkT) -> _SinkT:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- the delivery thread -----------------------------------------------------------------

    def _count(self, *, delivered: int = 0, dropped: int = 0, dropped_full: int = 0, retries: int = 0) -> None:
        with self._lock:
            self._delivered += delivered
            self._dropped += dropped
            self._dropped_full += dropped_full
            self._retries += retries

    def _run(self) -> None:
        try:
            self._idle_safely()
            while not self._stop.is_set():
                if self._closing.is_set() and self._queue.empty():
                    break
                try:
                    message = self._queue.get(timeout=self._idle_tick_s)
                except queue.Empty:
                    self._idle_safely()
                    continue
                if message is not None:
                    self._deliver_with_retries(message)
        finally:
            try:
                self._on_stop()
            except Exception:  # noqa: BLE001 - the far end is going away anyway
                log.debug("%s sink: error while disconnecting", self.name, exc_info=True)

    def _idle_safely(self) -> None:
        try:
            self._on_idle()
        except Exception as exc:  # noqa: BLE001 - nothing from the far end may end the thread
            self._note_failure(exc)

    def _deliver_with_retries(self, message: MessageT) -> None:
        for attempt in range(1, self.policy.max_attempts + 1):
            if not self._wait_backoff():
                break  # stopped: count it as dropped
            if attempt > 1:
                self._count(retries=1)
            try:
                self._deliver(message)
            except RejectedError as exc:
                self._note_failure(exc, backoff=False)
                break
            except Exception as exc:  # noqa: BLE001 - any failure of the far end is a failed attempt
                self._note_failure(exc)
            else:
                self._note_delivered()
                return
        self._count(dropped=1)

    def _wait_backoff(self) -> bool:
        """Wait until the back-off allows an attempt; False if told to stop meanwhile."""
        with self._lock:
            wait_s = self._retry_at - time.monotonic() if self._failing else 0.0
        if wait_s > 0:
            return not self._stop.wait(wait_s)
        return not self._stop.is_set()

    def _retry_due(self) -> bool:
        with self._lock:
            return not self._failing or time.monotonic() >= self._retry_at

    def _note_failure(self, exc: BaseException, *, backoff: bool = True) -> None:
        text = redact(str(exc) or type(exc).__name__)
        with self._lock:
            was_failing = self._failing
            self._failing = True
            self._last_error = text
            if backoff:
                self._retry_at = time.monotonic() + self._backoff_s
                self._backoff_s = min(self._backoff_s * 2, self.policy.backoff_max_s)
        if not was_failing:  # one line per outage, not one per attempt
            then = "retrying with back-off" if backoff else "dropped: retrying cannot help"
            log.warning("%s sink: %s (%s; stats() counts what follows)", self.name, text, then)

    def _note_delivered(self) -> None:
        with self._lock:
            was_failing = self._failing
            self._failing = False
            self._backoff_s = self.policy.backoff_initial_s
            self._delivered += 1
        if was_failing:
            log.info("%s sink %s: delivering again", self.name, self.target)

    def _note_reachable(self) -> None:
        """The far end answered (a connection made while idle): not failing, back-off reset."""
        with self._lock:
            was_failing = self._failing
            self._failing = False
            self._backoff_s = self.policy.backoff_initial_s
        if was_failing:
            log.info("%s sink %s: reachable again", self.name, self.target)


# ---- what the messages hold ------------------------------------------------------------------

def _dumps(record: Any) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode("utf-8")


# ---- MQTT ------------------------------------------------------------------------------------

_TOPIC_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def topic_level(stream: str) -> str:
    """A stream's name as one MQTT topic level: every character other than
    ASCII letters, digits, ``.``, ``_`` and ``-`` becomes ``_``; an empty name is ``_``.

    That removes what MQTT forbids or reads specially (``/`` separates levels,
    ``+`` and ``#`` are wildcards, NUL) and what consumers stumble on (``:``,
    spaces, non-ASCII), one character for one: ``10.0.0.5:554/stream1`` ->
    ``10.0.0.5_554_stream1``. Two names may map to one level; the message's
    ``stream`` field holds the name exactly. Credentials are redacted first.
    """
    return _TOPIC_UNSAFE.sub("_", redact(stream)) or "_"


class _MqttMessage(NamedTuple):
    topic: str
    payload: bytes


@dataclass(frozen=True)
class _MqttEndpoint:
    host: str
    port: int
    username: str | None
    password: str | None


def _parse_mqtt_url(url: str) -> _MqttEndpoint:
    expected = "expected mqtt://[user:password@]host[:port] (port 1883 by default)"
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad MQTT URL {redact(url)!r}: the port is not 0 to 65535; {expected}") from None
    if parts.scheme.lower() != "mqtt":
        raise ValueError(f"bad MQTT URL {redact(url)!r}: scheme {parts.scheme or '(none)'!r}; {expected}")
    if not parts.hostname:
        raise ValueError(f"bad MQTT URL {redact(url)!r}: no host; {expected}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"bad MQTT URL {redact(url)!r}: a path, query or fragment has no meaning; {expected}")
    username = urllib.parse.unquote(parts.username) if parts.username is not None else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    return _MqttEndpoint(parts.hostname, port or 1883, username, password)


class MqttSink(QueuedDelivery[_MqttMessage]):
    """Publishes track events, and optionally per-frame detections, to an MQTT broker.

    Topics (``<stream>`` is :func:`topic_level` of the stream's name):

    - ``<prefix>/<stream>/events``: one message per :class:`aip.results.TrackEvent`,
      its :meth:`~aip.results.TrackEvent.to_dict` as JSON;
    - ``<prefix>/<stream>/detections`` (``detections=True``): one message per
      frame, the JSON Lines record (:class:`aip.io.sinks.JsonLinesSink`) plus
      ``track_ids`` and ``names`` when known; a gap sends its small
      ``{"stream", "frame_id", "dropped"}`` record there, so that a consumer
      counting frames sees it.

    The connection is made in the delivery thread, at start and again after
    the broker goes away; a broker that is down only shows as ``failing`` in
    :meth:`stats` (and drops, once the queue is full). A publish at QoS 1 or 2
    that is not acknowledged within ``timeout_s`` is a failed attempt (the
    connection is dropped and made again), so a message may arrive twice: the
    at-least-once of QoS 1.

    Threading: the delivery thread drives paho's ``loop()`` itself rather than
    paho's own network thread (``loop_start``). One thread then owns the
    client, its socket and its state; paho's internal queue, which would
    keep messages beyond the bounded one and resend them on its own, stays
    empty (one publish at a time, a fresh client for each connection), and
    the back-off is this class's, not a second one inside paho.
    """

    name = "mqtt"
    _idle_tick_s = _MQTT_IDLE_TICK_S

    def __init__(
        self,
        url: str,
        *,
        qos: int = 0,
        retain: bool = False,
        detections: bool = False,
        topic_prefix: str = "aip",
        client_id: str | None = None,
        keepalive_s: int = 60,
        timeout_s: float = 5.0,
        policy: DeliveryPolicy | None = None,
    ) -> None:
        """``url``: ``mqtt://[user:password@]host[:port]`` (user and password
        percent-encoded). ``timeout_s`` bounds a connect and the wait for a
        QoS 1/2 acknowledgement. ``client_id``: default ``aip-`` and a random part.

        Raises ValueError for a bad URL, QoS or prefix; ImportError without paho-mqtt.
        """
        try:
            import paho.mqtt.client  # noqa: F401 - the optional dependency, checked up front
        except ImportError as exc:
            raise ImportError("MqttSink needs paho-mqtt: pip install 'aip[events]'") from exc
        self._endpoint = _parse_mqtt_url(url)
        if qos not in (0, 1, 2):
            raise ValueError(f"MQTT QoS must be 0, 1 or 2, got {qos!r}")
        prefix = topic_prefix.strip("/")
        if not prefix or any(c in prefix for c in "+#\0"):
            raise ValueError(f"topic prefix must be non-empty, without '+', '#' or NUL, got {topic_prefix!r}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if keepalive_s < 0:
            raise ValueError(f"keepalive_s must be >= 0 (0: none), got {keepalive_s}")
        self.qos = qos
        self.retain = retain
        self.detections = detections
        self.topic_prefix = prefix
        self.client_id = client_id or f"aip-{uuid.uuid4().hex[:12]}"
        self.keepalive_s = keepalive_s
        self.timeout_s = timeout_s
        self.target = f"mqtt://{self._endpoint.host}:{self._endpoint.port}"
        self._client: Client | None = None
        super().__init__(policy)
        self._start_delivery()

    def _encode(self, result: FrameResult | Gap) -> list[_MqttMessage]:
        messages = []
        if isinstance(result, FrameResult) and result.events:
            topic = f"{self.topic_prefix}/{topic_level(result.stream)}/events"
            messages = [_MqttMessage(topic, _dumps(record)) for record in event_records(result)]
        if self.detections:
            topic = f"{self.topic_prefix}/{topic_level(result.stream)}/detections"
            messages.append(_MqttMessage(topic, _dumps(result_record(result, events=False))))
        return messages

    def _deliver(self, message: _MqttMessage) -> None:
        from paho.mqtt.client import MQTT_ERR_SUCCESS, error_string

        client = self._connected_client()
        info = client.publish(message.topic, message.payload, qos=self.qos, retain=self.retain)
        if info.rc != MQTT_ERR_SUCCESS:
            self._drop_client()
            raise DeliveryError(f"publish to {self.target} failed: {error_string(info.rc)}")
        # QoS 0: done once written (at once, mostly); QoS 1/2: once the broker acknowledges.
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                if info.is_published():
                    return
            except (ValueError, RuntimeError) as exc:  # paho's way of saying the publish failed
                self._drop_client()
                raise DeliveryError(f"publish to {self.target} failed: {exc}") from exc
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set():
                self._drop_client()  # the connection is suspect; the next attempt makes a new one
                raise DeliveryError(
                    f"{self.target} did not acknowledge a QoS {self.qos} publish in {self.timeout_s:g} s"
                )
            rc = client.loop(min(remaining, 0.25))  # short: notice _stop soon
            if rc != MQTT_ERR_SUCCESS:
                self._drop_client()
                raise DeliveryError(f"lost the connection to {self.target}: {error_string(rc)}")

    def _on_idle(self) -> None:
        from paho.mqtt.client import MQTT_ERR_SUCCESS, error_string

        if self._client is not None:
            rc = self._client.loop(0)  # keep-alive pings; notices a broker that went away
            if rc != MQTT_ERR_SUCCESS or not self._client.is_connected():
                self._drop_client()
                self._note_failure(DeliveryError(f"lost the connection to {self.target}: {error_string(rc)}"))
        elif self._retry_due() and not self._closing.is_set():
            self._connect()
            self._note_reachable()

    def _on_stop(self) -> None:
        self._drop_client()

    def _connected_client(self) -> Client:
        from paho.mqtt.client import MQTT_ERR_SUCCESS

        if self._client is not None:
            # Read what the broker sent meanwhile: a broker that closed the
            # connection shows now, not as a QoS 0 message written into the void.
            if self._client.loop(0) == MQTT_ERR_SUCCESS and self._client.is_connected():
                return self._client
            self._drop_client()
        return self._connect()

    def _connect(self) -> Client:
        from paho.mqtt.client import MQTT_ERR_SUCCESS, Client, MQTTv311, error_string
        from paho.mqtt.enums import CallbackAPIVersion

        # A fresh client for each connection: nothing left over from the last
        # one (paho keeps unacknowledged messages to resend) is sent again.
        client = Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTv311,
            clean_session=True,
        )
        client.connect_timeout = self.timeout_s
        if self._endpoint.username is not None:
            client.username_pw_set(self._endpoint.username, self._endpoint.password)
        answers: list[ReasonCode] = []

        def on_connect(
            client: Client, userdata: Any, flags: ConnectFlags, reason: ReasonCode, properties: Properties | None
        ) -> None:
            answers.append(reason)

        client.on_connect = on_connect
        try:
            client.connect(self._endpoint.host, self._endpoint.port, keepalive=self.keepalive_s)
        except OSError as exc:  # refused, unreachable, timed out, unknown host
            _close_client(client)
            raise DeliveryError(f"cannot connect to {self.target}: {exc}") from exc
        deadline = time.monotonic() + self.timeout_s
        while not answers:
            remaining = deadline - time.monotonic()
            rc = client.loop(min(max(remaining, 0.0), 0.25))
            if rc != MQTT_ERR_SUCCESS or remaining <= 0 or self._stop.is_set():
                _close_client(client)
                why = error_string(rc) if rc != MQTT_ERR_SUCCESS else f"no answer in {self.timeout_s:g} s"
                raise DeliveryError(f"cannot connect to {self.target}: {why}")
        if answers[0].is_failure:
            _close_client(client)
            raise DeliveryError(f"{self.target} refused the connection: {answers[0]}")
        self._client = client
        return client

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            _close_client(client)


def _close_client(client: Client) -> None:
    """Disconnect (politely, if the socket still works) and close every socket paho holds."""
    client.on_connect = None
    try:
        client.disconnect()
    except Exception:  # noqa: BLE001 - a broken socket: closing is all that is left
        pass
    sock = client.socket()  # still open when DISCONNECT could not be written
    if sock is not None:
        sock.close()


# ---- webhook ---------------------------------------------------------------------------------

class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are errors: urllib would turn the POST into a GET without
    its body, and the token would go to wherever the redirect points."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> None:
        return None


class _WebhookMessage(NamedTuple):
    kind: str  # "events" or "detections": the X-AIP-Kind header
    body: bytes


def _check_webhook_url(url: str) -> None:
    expected = "expected http[s]://host[:port][/path]"
    parts = urllib.parse.urlsplit(url)
    try:
        parts.port
    except ValueError:
        raise ValueError(f"bad webhook URL {redact(url)!r}: the port is not 0 to 65535; {expected}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"bad webhook URL {redact(url)!r}: scheme {parts.scheme or '(none)'!r}; {expected}")
    if not parts.hostname:
        raise ValueError(f"bad webhook URL {redact(url)!r}: no host; {expected}")


class WebhookSink(QueuedDelivery[_WebhookMessage]):
    """POSTs track events, and optionally per-frame detections, as JSON to a URL.

    One request per frame that caused events, its body the JSON list of the
    frame's events (:meth:`~aip.results.TrackEvent.to_dict` each), header
    ``X-AIP-Kind: events``. Batched by frame: a crowd crossing a line makes
    one request, not one each; the events of a frame arrive (or are dropped)
    together; and the request rate stays at most the frame rate. With
    ``detections=True``, each frame (and gap) also sends its JSON Lines
    record, a JSON object, with ``X-AIP-Kind: detections``.

    A 2xx answer is delivered. 5xx, 408, 429, a refused or reset connection
    and a timeout are retried with back-off; any other answer (4xx, and 3xx:
    redirects are not followed) drops the message at once, ``last_error``
    giving the status. Standard library only (``urllib.request``); proxies
    from the environment apply, as for any urllib request.
    """

    name = "webhook"

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout_s: float = 5.0,
        detections: bool = False,
        policy: DeliveryPolicy | None = None,
    ) -> None:
        """``token`` is sent as ``Authorization: Bearer <token>``; ``timeout_s`` bounds each request.

        Raises ValueError for a URL that is not ``http[s]://host...``.
        """
        _check_webhook_url(url)
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.url = url
        self.target = redact(url)
        self.timeout_s = timeout_s
        self.detections = detections
        self._headers = {"Content-Type": "application/json", "User-Agent": "aip-webhook"}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._opener = urllib.request.build_opener(_NoRedirects())
        super().__init__(policy)
        self._start_delivery()

    def _encode(self, result: FrameResult | Gap) -> list[_WebhookMessage]:
        messages = []
        if isinstance(result, FrameResult) and result.events:
            messages.append(_WebhookMessage("events", _dumps(event_records(result))))
        if self.detections:
            messages.append(_WebhookMessage("detections", _dumps(result_record(result, events=False))))
        return messages

    def _deliver(self, message: _WebhookMessage) -> None:
        request = urllib.request.Request(
            self.url, data=message.body, method="POST", headers={**self._headers, "X-AIP-Kind": message.kind}
        )
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                response.read(_MAX_REPLY_BYTES)
        except urllib.error.HTTPError as exc:
            status, reason = exc.code, exc.reason
            exc.close()  # it holds the reply's socket
            text = f"POST {self.target}: HTTP {status} {reason}"
            if status >= 500 or status in (408, 429):
                raise DeliveryError(text) from None
            if 300 <= status < 400:
                text += " (redirects are not followed: give the final URL)"
            raise RejectedError(text) from None
        except urllib.error.URLError as exc:  # refused, unknown host, TLS
            raise DeliveryError(f"POST {self.target}: {exc.reason}") from None
        except (OSError, ValueError) as exc:  # timeout, reset; http.client's errors (bad status line...)
            raise DeliveryError(f"POST {self.target}: {type(exc).__name__}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - http.client.HTTPException and kin
            raise DeliveryError(f"POST {self.target}: {type(exc).__name__}: {exc}") from None


# ---- for the CLI -----------------------------------------------------------------------------

def check_urls(mqtt: str | None, webhook: str | None) -> None:
    """ValueError, saying the form expected, for an MQTT or webhook URL that
    cannot work; nothing connects. For a command line to check before it starts."""
    if mqtt is not None:
        _parse_mqtt_url(mqtt)
    if webhook is not None:
        _check_webhook_url(webhook)


def open_remote_sinks(
    mqtt: str | None,
    webhook: str | None,
    *,
    token: str | None = None,
    qos: int = 0,
    retain: bool = False,
    detections: bool = False,
    policy: DeliveryPolicy | None = None,
) -> list[QueuedDelivery[Any]]:
    """The sinks the CLI's ``--mqtt URL`` and ``--webhook URL`` ask for (none, one or both).

    Every URL is checked before any sink starts: a bad one raises ValueError
    saying the form expected, and nothing is left running. ``token`` is the
    webhook's bearer token; ``qos`` and ``retain`` are MQTT's (build
    :class:`MqttSink` directly for its other options).
    """
    check_urls(mqtt, webhook)
    if mqtt is not None and qos not in (0, 1, 2):
        raise ValueError(f"MQTT QoS must be 0, 1 or 2, got {qos!r}")
    sinks: list[QueuedDelivery[Any]] = []
    try:
        if mqtt is not None:
            sinks.append(MqttSink(mqtt, qos=qos, retain=retain, detections=detections, policy=policy))
        if webhook is not None:
            sinks.append(WebhookSink(webhook, token=token, detections=detections, policy=policy))
    except BaseException:
        for sink in sinks:
            sink.close(timeout_s=0.0)
        raise
    return sinks
