"""``aip run --serve [HOST:]PORT``: a live page and a REST API for a run.

- :mod:`aip.app.web.live`: :class:`LiveView`, the sink the run loop feeds:
  each stream's latest frame, recent track events, delivered FPS; tiles
  drawn and encoded only when someone looks;
- :mod:`aip.app.web.app`: the starlette app, its routes and the token check;
- :mod:`aip.app.web.adds`: streams added over the API, opened in threads;
- :mod:`aip.app.web.server`: :class:`WebServer`, uvicorn on a daemon thread;
- ``static/``: the page (index.html, app.js, style.css): plain files, no
  build step, nothing fetched from elsewhere.

Owns the web service and nothing else. May import the pipeline's public
facade (:mod:`aip.pipeline`), :mod:`aip.io` (sinks, credentials, sources),
:mod:`aip.results`, :mod:`aip.errors` and :mod:`aip.app.observe` (its
Prometheus collector and health). Nothing imports it but :mod:`aip.app.cli`.
starlette and uvicorn (the ``web`` extra) are imported only when a server
is made; importing this package needs neither.
"""
from __future__ import annotations

from aip.app.web.live import LiveView
from aip.app.web.server import WebServer, WebUnavailable, check_bind, serve_address

__all__ = ["LiveView", "WebServer", "WebUnavailable", "check_bind", "serve_address"]
