"""Streams added over the API: checked at once, opened in threads of their own.

``Pipeline.add_stream`` opens its source before it returns: a dead camera
holds it up to the stream timeout. A request never waits for that: it gets
202 and the name; the open goes on in a thread, and a failure leaves the
stream "evicted" with the reason (GET /api/streams) and an event.
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aip.io.credentials import redact, stream_name

if TYPE_CHECKING:
    from aip.pipeline import Pipeline

__all__ = ["MAX_OPENING", "STREAM_FIELDS", "BadRequest", "StreamAdds", "stream_request"]

log = logging.getLogger("aip.app.web")

# POST /api/streams: each field and the JSON types it takes.
STREAM_FIELDS: Mapping[str, tuple[type, ...]] = {
    "source": (str, int), "name": (str,), "fps": (int, float), "policy": (str,),
    "max_age_ms": (int, float), "priority": (int, float), "latency_budget_ms": (int, float),
}
_TYPE_NAMES: dict[tuple[type, ...], str] = {(str, int): "a string (or a camera index)", (str,): "a string", (int, float): "a number"}
# Streams opening at once over the API (each holds a thread while its
# source opens: up to --stream-timeout for a dead camera). A client adding
# more gets 429 until some are open: a loop cannot pile up threads.
MAX_OPENING = 16
# The events kept of the API's own (streams that failed to open).
_EVENTS_KEPT = 100


class BadRequest(Exception):
    """A request the API refuses: its code and what was wrong."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


class StreamAdds:
    """Streams being opened for the API, in threads of their own, and those
    whose open failed (shown as evicted, with the reason, until deleted)."""

    def __init__(self, max_opening: int = MAX_OPENING) -> None:
        self.max_opening = max_opening
        self.opening: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, dict[str, Any]] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=_EVENTS_KEPT)
        self._threads: list[threading.Thread] = []
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()

    def names(self) -> set[str]:
        with self._lock:
            return set(self.opening) | set(self.failed)

    def records(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """Copies of ``(opening, failed)``."""
        with self._lock:
            return dict(self.opening), dict(self.failed)

    def start(self, pipeline: Pipeline, name: str, source: str | int, options: dict[str, Any]) -> None:
        """Open and add the stream in a thread; BadRequest(429) when too many are opening."""
        with self._lock:
            if len(self.opening) >= self.max_opening:
                raise BadRequest(429, f"{len(self.opening)} streams are opening already: wait for "
                                 "them (GET /api/streams) and try again")
            self.failed.pop(name, None)
            self.opening[name] = {"source": redact(str(source)), "since": time.time(), **options}
            thread = threading.Thread(target=self._add, args=(pipeline, name, source, options),
                                      name=f"aip-web-add-{name}", daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _add(self, pipeline: Pipeline, name: str, source: str | int, options: dict[str, Any]) -> None:
        try:
            pipeline.add_stream(source, name=name, **options)
        except Exception as failure:  # noqa: BLE001 - any failure to open is the stream's state
            reason = redact(str(failure)) or type(failure).__name__
            log.warning("stream %s could not be added: %s", redact(name), reason)
            with self._lock:
                record = self.opening.pop(name, {})
                if name in self._cancelled:
                    self._cancelled.discard(name)
                else:
                    self.failed[name] = {**record, "reason": reason}
                    self.events.append({"time": time.time(), "type": "stream", "stream": redact(name),
                                        "kind": "evicted", "message": f"could not open: {reason}"})
            return
        with self._lock:
            self.opening.pop(name, None)
            cancelled = name in self._cancelled
            self._cancelled.discard(name)
        if cancelled:  # deleted while it opened
            try:
                pipeline.remove_stream(name)
            except KeyError:
                pass

    def discard(self, name: str) -> bool:
        """Forget a failed stream, or remove one still opening once it is open. False: unknown."""
        with self._lock:
            if self.failed.pop(name, None) is not None:
                return True
            if name in self.opening:
                self._cancelled.add(name)
                self.opening.pop(name)
                return True
        return False

    def join(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` in all for the opens in progress."""
        deadline = time.monotonic() + timeout_s
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))


def stream_request(body: Any, taken: Iterable[str]) -> tuple[str, str | int, dict[str, Any]]:
    """``(name, source, add_stream options)`` of a POST /api/streams body; BadRequest if wrong."""
    from aip.pipeline import POLICIES

    if not isinstance(body, dict):
        raise BadRequest(400, "the body must be a JSON object: {\"source\": ..., \"name\": ...}")
    unknown = sorted(set(body) - set(STREAM_FIELDS))
    if unknown:
        raise BadRequest(400, f"unknown field {', '.join(map(repr, unknown))}; the fields are "
                         f"{', '.join(STREAM_FIELDS)}")
    for field, value in body.items():
        if isinstance(value, bool) or not isinstance(value, STREAM_FIELDS[field]):
            raise BadRequest(400, f"{field} must be {_TYPE_NAMES[STREAM_FIELDS[field]]}, got {json.dumps(value)}")
    if "source" not in body:
        raise BadRequest(400, "source is required: a file, folder, camera index, stream URL, "
                         "'synthetic[:WxH]' or 'sample[:FRAMES]'")
    source = body["source"]
    if isinstance(source, str):
        source = source.strip()
        if not source:
            raise BadRequest(400, "source must not be empty")
        _check_local(source)
    elif source < 0:
        raise BadRequest(400, f"a camera index is >= 0, got {source}")
    options: dict[str, Any] = {}
    for field in ("fps", "max_age_ms", "priority", "latency_budget_ms"):
        if field in body:
            value = float(body[field])
            if not (math.isfinite(value) and value > 0):
                raise BadRequest(400, f"{field} must be a number > 0, got {body[field]}")
            options[field] = value
    if "policy" in body:
        if body["policy"] not in POLICIES:
            raise BadRequest(400, f"unknown policy {body['policy']!r}; the policies are {', '.join(POLICIES)}")
        options["policy"] = body["policy"]
    taken = set(taken)
    name = body.get("name")
    if name is None:
        name = stream_name(source, taken)
    else:
        name = name.strip()
        if not name or len(name) > 200 or any(ord(c) < 32 for c in name):
            raise BadRequest(400, "name must be 1-200 printable characters")
    if name in taken:
        raise BadRequest(409, f"a stream named {redact(name)!r} exists already")
    return name, source, options


def _check_local(source: str) -> None:
    """A local path that is not there: 400 at once (a URL or camera is found out by opening it)."""
    from aip.io.sources import STREAM_SCHEMES

    text = source.lower()
    if (text.isdigit() or text.startswith(STREAM_SCHEMES) or text.split(":", 1)[0] in ("synthetic", "sample")):
        return
    if not Path(source).expanduser().exists():
        raise BadRequest(400, f"source {redact(source)!r} not found: expected a video file, an image "
                         "folder, a camera index, a stream URL, 'synthetic[:WxH]' or 'sample[:FRAMES]'")
