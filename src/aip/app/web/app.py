"""The ASGI app of ``aip run --serve``: the page, its files, the REST API.

    GET    /                               the page (static/index.html)
    GET    /static/{file}                  its script and style
    GET    /api/status                     Pipeline.status(), backends' shares and use, FPS history
    GET    /api/streams                    every stream and its figures
    POST   /api/streams                    {source, name?, fps?, policy?, max_age_ms?, priority?,
                                            latency_budget_ms?} -> 202, opened in a thread
    GET    /api/streams/{name}             one stream
    DELETE /api/streams/{name}             Pipeline.remove_stream
    GET    /api/streams/{name}/snapshot.jpg  the latest annotated frame (tile)
    GET    /api/streams/{name}/live        the tiles as MJPEG (multipart/x-mixed-replace)
    GET    /api/events                     recent stream and track events
    GET    /metrics                        Prometheus text (observe.PipelineCollector)
    GET    /livez, /readyz                 probes: no token needed (see TokenGuard)

Handlers run on uvicorn's event loop, in the manager process beside the run
loop; what costs (a tile's JPEG, a scrape, a stream's open) goes to worker
threads, so that a request never waits behind another, and the run loop
never waits on any.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aip.app.observe import HEALTH_CODES, PipelineCollector, health, observed_state
from aip.app.web.adds import BadRequest, StreamAdds, stream_request
from aip.app.web.live import EVENTS_KEPT, LiveView
from aip.io.credentials import redact, redacted_names

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from aip.pipeline import Pipeline

__all__ = ["OPEN_PATHS", "STATIC", "TokenGuard", "WebService", "build_app"]

log = logging.getLogger("aip.app.web")

STATIC = Path(__file__).resolve().parent / "static"
# Paths served without the token: probes (a kubelet's or a load balancer's)
# often cannot send a header or keep a secret in a URL, and these say only
# "up" and the pipeline's state, never a stream's name or figures.
OPEN_PATHS = frozenset({"/livez", "/readyz"})
# A request body larger than this is refused (a stream's JSON is ~200 bytes).
MAX_BODY_BYTES = 64 * 1024
_JSON = "application/json"
_PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
             "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def json_response(payload: Any, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """JSON with NaN and infinities as null (JSON has neither)."""
    body = json.dumps(_finite(payload), separators=(",", ":")).encode() + b"\n"
    return Response(body, status_code, headers=dict(headers or {}), media_type=_JSON)


def error(status_code: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """``{"error": message}``: what was wrong, for a person."""
    return json_response({"error": message}, status_code, headers)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


# ---- the token ------------------------------------------------------------------------------

class TokenGuard:
    """Every HTTP request but :data:`OPEN_PATHS` needs the token, as
    ``Authorization: Bearer TOKEN`` or ``?token=TOKEN`` (``<img>`` and the
    page's own files cannot send a header). 401 without one, 403 with a
    wrong one; compared in constant time. Without a token (loopback only,
    see :func:`aip.app.web.server.check_bind`) everything passes. Adds the
    headers every response carries: no caching, no referrer (a page URL may
    hold the token), no MIME sniffing."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                for name, value in ((b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer"),
                                    (b"x-content-type-options", b"nosniff")):
                    if name not in names:
                        headers.append((name, value))
                message = {**message, "headers": headers}
            await send(message)

        refusal = self.refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def refusal(self, scope: Scope) -> Response | None:
        """The 401 or 403 for this request, or None: it may go on."""
        if self.token is None or scope["path"] in OPEN_PATHS:
            return None
        given = presented_token(scope)
        if given is None:
            return error(401, "this server needs its token: send 'Authorization: Bearer TOKEN' "
                         "or add ?token=TOKEN to the URL", {"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.encode(), self.token):
            return error(403, "wrong token", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return None


def presented_token(scope: Scope) -> str | None:
    """The token a request carries: its bearer header, else its ``token`` query parameter."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, credentials = bytes(value).decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get("token")
    return values[-1] if values else None


# ---- the service --------------------------------------------------------------------------------

class _BusyMeter:
    """Each backend's share of the last second spent inferring (0-1), from
    the growing inference totals; a new run's smaller totals start again."""

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self._last: tuple[float, dict[str, float]] | None = None
        self._busy: dict[str, float] = {}
        self._lock = threading.Lock()

    def update(self, busy_s: dict[str, float]) -> dict[str, float]:
        now = time.monotonic()
        with self._lock:
            if self._last is None:
                self._last = (now, busy_s)
            elif now - self._last[0] >= self.window_s:
                then, before = self._last
                self._busy = {label: min(1.0, max(0.0, (total - before.get(label, 0.0)) / (now - then)))
                              for label, total in busy_s.items()}
                self._last = (now, busy_s)
            return dict(self._busy)


class WebService:
    """What the routes share: the pipeline (through a getter: it may not
    exist yet), the live view, the streams opening, the Prometheus registry."""

    def __init__(self, pipeline: Callable[[], Pipeline | None], live: LiveView, token: str | None, *,
                 closing: threading.Event | None = None, streams: Iterable[str] = ()) -> None:
        self.pipeline = pipeline
        self.live = live
        self.token = token
        self.closing = closing or threading.Event()
        self.adds = StreamAdds()
        self.collector = PipelineCollector(None, streams=list(streams))
        self._registry: CollectorRegistry | None = None
        self._busy = _BusyMeter()
        # perf_counter (stream events' clock) -> UNIX time
        self._unix_offset_s = time.time() - time.perf_counter()
        self._page = (STATIC / "index.html").read_text(encoding="utf-8")

    # ---- figures ----

    def status(self) -> dict[str, Any]:
        pipeline = self.pipeline()
        if pipeline is None:
            found: dict[str, Any] = {"state": "starting", "observed_state": "starting", "fps": 0.0,
                                     "frames_ordered": 0, "frames_dropped": 0, "frames_late": 0,
                                     "slots": None, "workers": [], "streams": {}}
        else:
            found = pipeline.status()
            metrics = pipeline.metrics
            found["observed_state"] = observed_state(found, metrics.seconds_since_last_result())
            found["streams"] = dict(zip(redacted_names(found["streams"]), found["streams"].values()))
            backends = dict(metrics.backends)
            busy = self._busy.update({label: b.inference.total_s for label, b in backends.items()})
            total = sum(w["frames"] for w in found["workers"])
            weights = list(getattr(pipeline, "weights", []))
            for index, worker in enumerate(found["workers"]):
                worker["share"] = worker["frames"] / total if total else 0.0
                worker["utilisation"] = busy.get(worker["label"])
                worker["weight"] = weights[index] if index < len(weights) else None
                backend = backends.get(worker["label"])
                worker["inference_p50_ms"] = backend.inference.to_dict()["p50_ms"] if backend else None
            found["ideal_fps"] = metrics.ideal_fps
        found["fps_history"] = self.live.fps_history()
        found["time"] = time.time()
        return found

    def _known(self, pipeline: Pipeline | None) -> dict[str, str]:
        """Redacted name -> the pipeline's name, of every stream it has (removed ones too)."""
        if pipeline is None:
            return {}
        names = list(dict.fromkeys([*pipeline.metrics.streams, *pipeline.stream_settings()]))
        return dict(zip(redacted_names(names), names))

    def streams(self) -> list[dict[str, Any]]:
        """Every stream but the removed: the pipeline's, then those opening or failed over the API."""
        pipeline = self.pipeline()
        rows: dict[str, dict[str, Any]] = {}
        if pipeline is not None:
            figures = {name: stream.to_dict() for name, stream in dict(pipeline.metrics.streams).items()}
            settings = pipeline.stream_settings()
            evictions = {event.stream: event.message for event in list(pipeline.events)
                         if event.kind == "evicted"}
            for shown, name in self._known(pipeline).items():
                figure = figures.get(name, {})
                state = figure.get("state", "waiting") if figure else "waiting"
                if state == "removed":
                    continue
                setting = settings.get(name, {})
                latency = figure.get("end_to_end", {})
                rows[shown] = {
                    "name": shown, "source": setting.get("source"), "state": state,
                    "fps": self.live.stream_fps(name), "fps_run": figure.get("fps", 0.0),
                    "age_p50_ms": latency.get("p50_ms"), "age_p99_ms": latency.get("p99_ms"),
                    **{key: figure.get(key, 0) for key in ("frames_read", "frames_ordered", "frames_dropped",
                                                           "frames_late", "reconnects")},
                    **{key: setting.get(key) for key in ("policy", "max_age_ms", "priority",
                                                         "latency_budget_ms")},
                    "fps_limit": setting.get("fps"),
                    "frame_id": self.live.latest_frame_id(name),
                    "reason": evictions.get(name) if state == "evicted" else None,
                }
        opening, failed = self.adds.records()
        for state, records in (("opening", opening), ("evicted", failed)):
            for name, record in records.items():
                shown = redact(name)
                if shown not in rows:
                    rows[shown] = {"name": shown, "source": record.get("source"), "state": state,
                                   "fps": 0.0, "frames_read": 0, "frames_ordered": 0, "frames_dropped": 0,
                                   "frames_late": 0, "reconnects": 0, "frame_id": None,
                                   "policy": record.get("policy"), "fps_limit": record.get("fps"),
                                   "reason": record.get("reason")}
        return list(rows.values())

    def events(self, limit: int) -> list[dict[str, Any]]:
        """Stream events (the pipeline's and the API's own) and track events, oldest first."""
        found = list(self.adds.events)
        pipeline = self.pipeline()
        if pipeline is not None:
            found += [{"time": event.t_ns / 1e9 + self._unix_offset_s, "type": "stream",
                       "stream": redact(event.stream), "kind": event.kind, "message": redact(event.message)}
                      for event in list(pipeline.events)[-limit:]]
        for event in self.live.events(limit):
            record = event.to_dict()
            what = event.class_name or str(event.class_id)
            found.append({**record, "time": event.timestamp, "type": "track", "stream": redact(event.stream),
                          "message": f"#{event.track_id} {what} {event.kind} {event.region}"
                          + (f" ({event.direction})" if event.direction else "")})
        found.sort(key=lambda record: float(record["time"]))
        return found[-limit:]

    def metrics_text(self, accept: str) -> tuple[str, bytes]:
        from prometheus_client import CollectorRegistry, ProcessCollector
        from prometheus_client.exposition import choose_encoder

        if self._registry is None:
            registry = CollectorRegistry()
            registry.register(self.collector)
            ProcessCollector(registry=registry)  # the manager's own CPU and memory
            self._registry = registry
        self.collector.pipeline = self.pipeline()
        encoder, content_type = choose_encoder(accept)
        return content_type, encoder(self._registry)

    def page(self, request: Request) -> str:
        """index.html, its own files' URLs carrying the token the request came with."""
        token = presented_token(request.scope) if self.token else None
        query = f"?token={quote(token, safe='')}" if token else ""
        return self._page.replace("{{query}}", query)

    # ---- the routes ----

    async def get_page(self, request: Request) -> Response:
        return HTMLResponse(self.page(request), headers={"Content-Security-Policy": _PAGE_CSP})

    async def get_status(self, request: Request) -> Response:
        return json_response(self.status())

    async def get_streams(self, request: Request) -> Response:
        return json_response({"streams": self.streams()})

    async def get_stream(self, request: Request) -> Response:
        name = request.path_params["name"]
        for row in self.streams():
            if row["name"] == name:
                return json_response(row)
        return error(404, f"no stream named {name!r}")

    async def post_stream(self, request: Request) -> Response:
        pipeline = self.pipeline()
        if pipeline is None:
            return error(503, "the pipeline is not started yet: try again in a moment (GET /readyz)")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                return error(413, f"the body is too large (at most {MAX_BODY_BYTES} bytes)")
        try:
            body = json.loads(raw) if raw.strip() else None
        except (ValueError, UnicodeDecodeError) as failure:
            return error(400, f"the body is not JSON: {failure}")
        known = self._known(pipeline)
        taken = set(known) | set(known.values()) | self.adds.names()
        try:
            name, source, options = stream_request(body, taken)
            self.adds.start(pipeline, name, source, options)
        except BadRequest as refused:
            return error(refused.status_code, refused.message)
        location = f"api/streams/{quote(redact(name), safe='')}"
        return json_response({"name": redact(name), "state": "opening", "url": location}, 202,
                             {"Location": "/" + location})

    async def delete_stream(self, request: Request) -> Response:
        pipeline = self.pipeline()
        shown = request.path_params["name"]
        name = self._known(pipeline).get(shown, shown)
        if self.adds.discard(name):
            return json_response({"name": shown, "state": "removed"})
        states = {} if pipeline is None else {n: s.state for n, s in dict(pipeline.metrics.streams).items()}
        if pipeline is None or name not in self._known(pipeline).values() or states.get(name) == "removed":
            return error(404, f"no stream named {shown!r}")
        try:
            pipeline.remove_stream(name)
        except KeyError:
            return error(404, f"no stream named {shown!r}")
        self.live.forget(name)
        return json_response({"name": shown, "state": "removed"})

    def _stream_name(self, request: Request) -> str:
        shown = str(request.path_params["name"])
        return self._known(self.pipeline()).get(shown, shown)

    async def get_snapshot(self, request: Request) -> Response:
        name = self._stream_name(request)
        tile = self.live.cached_tile(name) or await run_in_threadpool(self.live.tile, name)
        if tile is None:
            shown = request.path_params["name"]
            known = name in self._known(self.pipeline()).values() or name in self.adds.names()
            return error(404, f"stream {shown!r} has no frame yet" if known else f"no stream named {shown!r}")
        headers = {"ETag": tile.etag, "X-Frame-Id": str(tile.frame_id), "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == tile.etag:
            return Response(status_code=304, headers=headers)
        return Response(tile.jpeg, headers=headers, media_type="image/jpeg")

    async def get_live(self, request: Request) -> Response:
        name = self._stream_name(request)
        if self.live.latest_frame_id(name) is None:
            shown = request.path_params["name"]
            return error(404, f"no frame of a stream named {shown!r} yet")
        return StreamingResponse(self._mjpeg(name), media_type="multipart/x-mixed-replace; boundary=frame",
                                 headers={"Cache-Control": "no-store"})

    async def _mjpeg(self, name: str) -> Any:
        """The stream's tiles, each once, ``tile_fps`` at most; ends with the
        stream (removed), the server (stopping) or the viewer (gone)."""
        serial = None
        period = 1.0 / self.live.tile_fps
        while not self.closing.is_set():
            started = time.monotonic()
            tile = self.live.cached_tile(name) or await run_in_threadpool(self.live.tile, name)
            if tile is None:
                return
            if tile.serial != serial:
                serial = tile.serial
                yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\nX-Frame-Id: %d\r\n\r\n"
                       % (len(tile.jpeg), tile.frame_id) + tile.jpeg + b"\r\n")
            await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))

    async def get_events(self, request: Request) -> Response:
        text = request.query_params.get("limit", "50")
        if not text.isdigit() or not 1 <= int(text) <= EVENTS_KEPT:
            return error(400, f"limit must be a whole number 1-{EVENTS_KEPT}, got {text!r}")
        return json_response({"events": self.events(int(text))})

    async def get_metrics(self, request: Request) -> Response:
        try:
            content_type, body = await run_in_threadpool(self.metrics_text, request.headers.get("accept", ""))
        except ImportError:
            return error(501, "/metrics needs prometheus-client: pip install 'aip[observe]'")
        return Response(body, headers={"Content-Type": content_type})

    async def get_livez(self, request: Request) -> Response:
        return json_response({"state": "live"})

    async def get_readyz(self, request: Request) -> Response:
        """200 while frames flow (ready, or backpressure: load, not failure), as
        /healthz of --metrics-port; 503 and why otherwise. Names nothing."""
        code, body = health(self.pipeline())  # a status() and a few counters: cheap
        return json_response({"state": body["state"], "reason": body["reason"]},
                             code if code in HEALTH_CODES.values() else 503)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.get_page, methods=["GET"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
            Route("/api/status", self.get_status, methods=["GET"]),
            Route("/api/streams", self.get_streams, methods=["GET"]),
            Route("/api/streams", self.post_stream, methods=["POST"]),
            Route("/api/streams/{name:path}/snapshot.jpg", self.get_snapshot, methods=["GET"]),
            Route("/api/streams/{name:path}/live", self.get_live, methods=["GET"]),
            Route("/api/streams/{name:path}", self.get_stream, methods=["GET"]),
            Route("/api/streams/{name:path}", self.delete_stream, methods=["DELETE"]),
            Route("/api/events", self.get_events, methods=["GET"]),
            Route("/metrics", self.get_metrics, methods=["GET"]),
            Route("/livez", self.get_livez, methods=["GET"]),
            Route("/readyz", self.get_readyz, methods=["GET"]),
        ]


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: f"no route {request.url.path!r}: see GET /api/status, /api/streams, /api/events",
                405: f"{request.method} is not allowed on {request.url.path!r}"}
    return error(exc.status_code, messages.get(exc.status_code, str(exc.detail)), exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    text = redact(str(exc)) or type(exc).__name__
    log.warning("%s %s failed: %s: %s", request.method, redact(request.url.path), type(exc).__name__, text)
    return error(500, f"internal error: {type(exc).__name__}: {text}")


def build_app(pipeline: Callable[[], Pipeline | None], live: LiveView, token: str | None, *,
              closing: threading.Event | None = None, streams: Iterable[str] = ()) -> Starlette:
    """The app: ``pipeline()`` gives the pipeline to show (None while it starts),
    ``live`` its frames and events, ``token`` what every route but the probes
    needs (None: none). ``closing`` ends the MJPEG responses when set;
    ``streams`` are the names /metrics shows at zero before the run."""
    service = WebService(pipeline, live, token, closing=closing, streams=streams)
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        HTTPException: _http_error, Exception: _internal_error}
    app = Starlette(routes=service.routes(), middleware=[Middleware(TokenGuard, token=token)],
                    exception_handlers=handlers)
    app.state.service = service
    return app
