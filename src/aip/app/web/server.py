"""uvicorn on a daemon thread of the manager process, for the length of a run.

    aip run --serve [HOST:]PORT
        WebServer.start   binds and listens at once (a busy port fails before
                          any worker starts), then uvicorn serves the app on
                          its own thread and event loop
        WebServer.watch   the pipeline to show, once it exists
        WebServer.stop    should_exit; the MJPEG responses end; joined
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aip.app.web.live import LiveView
from aip.errors import EXIT_BACKEND, AipError, UsageError

if TYPE_CHECKING:
    from aip.pipeline import Pipeline

__all__ = ["WebServer", "WebUnavailable", "check_bind", "is_loopback", "require_web", "serve_address"]

log = logging.getLogger("aip.app.web")

# How long stop() lets requests in progress finish before uvicorn closes
# their connections: a tile is milliseconds; an MJPEG viewer is told to end
# at once (closing), a poll does not wait for more than this.
GRACE_S = 2.0
# How long start() waits for uvicorn to serve on the bound socket.
START_TIMEOUT_S = 10.0


class WebUnavailable(AipError, ImportError):
    """``--serve`` without starlette or uvicorn installed."""

    exit_code = EXIT_BACKEND


def require_web() -> None:
    """WebUnavailable, naming the extra, unless starlette and uvicorn import."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as missing:
        raise WebUnavailable(f"--serve needs starlette and uvicorn ({missing.name} is not installed): "
                             "pip install 'aip[web]'") from missing


def is_loopback(host: str) -> bool:
    """``localhost`` or an address of 127.0.0.0/8 or ::1: reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name, or "": it may resolve to anything


def check_bind(host: str, token: str | None) -> None:
    """UsageError for a bind beyond loopback without a token: the page adds and
    removes cameras and shows their images."""
    if not token and not is_loopback(host):
        raise UsageError(f"--serve {host}:...: listening beyond this machine needs a token (--token "
                         "TOKEN or the AIP_TOKEN environment variable; every request then sends it); "
                         "or bind 127.0.0.1")


def serve_address(text: str) -> tuple[str, int]:
    """``--serve [HOST:]PORT`` -> ``(host, port)``; 127.0.0.1 when no host is given.
    ``[::1]:8080`` for an IPv6 address; port 0 takes a free one."""
    usage = f"expected [HOST:]PORT, e.g. 8080, 0.0.0.0:8080 or [::1]:8080, got {text!r}"
    text = text.strip()
    if text.startswith("["):  # [IPv6]:PORT
        host, sep, port_text = text[1:].partition("]:")
        if not sep or not host:
            raise argparse.ArgumentTypeError(usage)
    elif text.count(":") > 1:
        raise argparse.ArgumentTypeError(f"an IPv6 address goes in brackets, [::1]:8080; got {text!r}")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host = "127.0.0.1"
        elif not host:
            raise argparse.ArgumentTypeError(usage)
    try:
        port = int(port_text)
    except ValueError:
        raise argparse.ArgumentTypeError(usage) from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"the port must be 0-65535 (0: any free one), got {port}")
    return host, port


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so,
    # and without it a keep-alive client waits 40 ms (delayed ACK) per response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart reuses the port at once
        sock.bind((host, port))
        sock.listen(128)
    except OSError as failure:
        sock.close()
        raise OSError(failure.errno, f"--serve: cannot listen on {host}:{port}: {failure.strerror}") from failure
    sock.set_inheritable(False)
    return sock


class WebServer:
    """The page and the REST API (:mod:`aip.app.web.app`) on ``host:port``.

    >>> live = LiveView()
    >>> with WebServer("127.0.0.1", 8080, None, live) as server, Pipeline(specs, keep_frames=True) as p:
    ...     server.watch(p)
    ...     for result in p.run(sources):
    ...         live.write(result)

    It listens from ``start`` (or ``with``), before the pipeline exists if
    need be (``/livez`` answers, ``/readyz`` says starting), so a busy port
    fails before any worker starts. ``port=0`` takes a free port: read it
    back from :attr:`port`. Loopback by default; any other host needs
    ``token`` (:func:`check_bind`), which every route but the probes then
    checks.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 live: LiveView | None = None, *, streams: Sequence[str] = ()) -> None:
        check_bind(host, token)
        require_web()
        from aip.app.web.app import build_app

        self.host = host
        self.requested_port = port
        self.token = token or None
        self.live = live if live is not None else LiveView()
        self.closing = threading.Event()
        self._pipeline: Pipeline | None = None
        self.app = build_app(lambda: self._pipeline, self.live, self.token, closing=self.closing,
                             streams=streams)
        self._socket: socket.socket | None = None
        self._port: int | None = None  # bound: still known once stopped
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def pipeline(self) -> Pipeline | None:
        return self._pipeline

    def watch(self, pipeline: Pipeline) -> None:
        """Show ``pipeline`` from now on (its status, streams, metrics)."""
        self._pipeline = pipeline

    @property
    def collector(self) -> Any:
        """The Prometheus collector behind ``/metrics`` (``.sinks``: the remote sinks to report)."""
        return self.app.state.service.collector

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the web server is not started")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> WebServer:
        if self._thread is not None:
            return self
        import uvicorn

        sock = _listen(self.host, self.requested_port)
        self._port = int(sock.getsockname()[1])
        # log_config None: uvicorn leaves the process's logging alone (its
        # errors reach aip's handlers); no access log; no lifespan, no websockets.
        config = uvicorn.Config(self.app, log_config=None, log_level="warning", access_log=False,
                                lifespan="off", ws="none", loop="asyncio", server_header=False,
                                timeout_graceful_shutdown=int(GRACE_S))
        server = uvicorn.Server(config)
        self._socket, self._server = sock, server
        # uvicorn installs no signal handlers off the main thread: SIGTERM and
        # Ctrl-C stay the run's (they drain it).
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="aip-web",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"--serve: the web server did not start on {self.host}:"
                                   f"{self.requested_port} (see the log above)")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving. Idempotent."""
        self.closing.set()
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(GRACE_S + 3.0)
            if thread.is_alive():
                log.warning("the web server did not stop within %.0f s; leaving it to exit with the process",
                            GRACE_S + 3.0)
        service = getattr(self.app.state, "service", None)
        if service is not None:
            service.adds.join(GRACE_S)
        if self._socket is not None:
            self._socket.close()

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
