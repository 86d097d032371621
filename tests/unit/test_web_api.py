"""``aip run --serve``: the REST API, its errors, the token, the live view.

Through starlette's TestClient on the app itself, over a real pipeline on the
``sim`` backend whose run feeds a LiveView (as ``aip run`` does); a few
tests start uvicorn for real on loopback. No assertion on time but "at
once" (a request that an open would block answers well within the open's
timeout).
"""
from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
pytest.importorskip("cv2")

import cv2  # noqa: E402
from starlette.routing import Mount, Route  # noqa: E402

with warnings.catch_warnings():
    # starlette >= 1.x asks for httpx2 and warns on httpx, which the test extra has
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from starlette.testclient import TestClient  # noqa: E402

from aip.app.cli import check_cluster_flags, main  # noqa: E402
from aip.app.web import LiveView, WebServer, check_bind, serve_address  # noqa: E402
from aip.app.web.app import OPEN_PATHS, build_app  # noqa: E402
from aip.app.web.server import is_loopback  # noqa: E402
from aip.backends import BackendSpec  # noqa: E402
from aip.errors import EXIT_USAGE, UsageError  # noqa: E402
from aip.pipeline import Pipeline, StreamError  # noqa: E402
from aip.results import FrameResult, Gap, TrackEvent  # noqa: E402
from stream_checks import PATIENCE_S, wait_for

OPEN_TIMEOUT_S = 3.0  # the pipeline's stream timeout: what a dead camera's open takes
TOKEN = "s3cret-token"


def frames(count: int, shape: tuple[int, int, int] = (96, 128, 3)) -> Iterator[np.ndarray]:
    for i in range(count):
        frame = np.zeros(shape, np.uint8)
        frame[:, : (i * 7) % shape[1]] = 200  # a bar that moves: every frame differs
        yield frame




class Served:
    """A pipeline on sim, running until stopped, its results into a LiveView."""

    def __init__(self) -> None:
        self.pipeline = Pipeline([BackendSpec("sim", {"latency_s": 0.002})], mode="pull", keep_frames=True,
                                 max_frame_shape=(480, 640, 3), stream_timeout_s=OPEN_TIMEOUT_S,
                                 max_reconnects=0)
        self.live = LiveView()
        self.error: BaseException | None = None
        self.pipeline.add_stream(frames(10**6), name="cam", fps=30)
        self.pipeline.add_stream(frames(10**6, (480, 640, 3)), name="wide", fps=10)  # scaled to a tile
        self.thread = threading.Thread(target=self._run)
        self.thread.start()
        wait_for(lambda: {"cam", "wide"} <= set(self.live.streams()))

    def _run(self) -> None:
        try:
            for result in self.pipeline.run(until_stopped=True):
                self.live.write(result)
        except BaseException as error:  # re-raised at the end
            self.error = error

    def app(self, token: str | None = None) -> Any:
        return build_app(lambda: self.pipeline, self.live, token)

    def client(self, token: str | None = None) -> TestClient:
        return TestClient(self.app(token))

    def close(self) -> None:
        try:
            for name, stream in list(self.pipeline.metrics.streams.items()):
                if stream.state == "running":
                    self.pipeline.remove_stream(name)
            self.pipeline.stop()
            self.thread.join(PATIENCE_S)
            assert not self.thread.is_alive()
        finally:
            self.pipeline.close()
        # The streams that could not open (the tests' dead cameras) end the run as StreamError.
        if self.error is not None and not isinstance(self.error, StreamError):
            raise self.error


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    run = Served()
    try:
        yield run
    finally:
        run.close()


@pytest.fixture()
def client(served: Served) -> Iterator[TestClient]:
    with served.client() as test_client:
        yield test_client


def stream_row(client: TestClient, name: str) -> dict[str, Any] | None:
    rows = client.get("/api/streams").json()["streams"]
    return next((row for row in rows if row["name"] == name), None)


def decodes_as_jpeg(body: bytes) -> tuple[int, int]:
    assert body[:2] == b"\xff\xd8"  # SOI
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image.shape[1], image.shape[0]


# ---- every route ---------------------------------------------------------------------------

def test_the_page_and_its_files(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="static/app.js"' in page.text and 'href="static/style.css"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        answer = client.get(f"/static/{name}")
        assert answer.status_code == 200 and kind in answer.headers["content-type"]
    assert client.get("/static/nothing.js").status_code == 404
    # Nothing from elsewhere: no CDN, no external font.
    for text in (page.text, client.get("/static/app.js").text, client.get("/static/style.css").text):
        assert "http://" not in text and "https://" not in text and "@import" not in text


def test_status_has_the_pipeline_the_backends_and_the_history(client: TestClient) -> None:
    body = wait_for(lambda: (b := client.get("/api/status").json())["fps_history"] and b)
    assert body["observed_state"] in ("ready", "starved", "backpressure")
    assert {"cam", "wide"} <= set(body["streams"])
    (worker,) = body["workers"]
    assert worker["label"] == "sim" and worker["alive"] and worker["share"] == 1.0
    body = wait_for(lambda: (b := client.get("/api/status").json())["workers"][0]["utilisation"] is not None
                    and b)
    assert 0.0 <= body["workers"][0]["utilisation"] <= 1.0
    assert all(isinstance(count, int) for count in body["fps_history"])


def test_streams_have_their_figures(client: TestClient) -> None:
    row = wait_for(lambda: (r := stream_row(client, "cam")) and r["frames_ordered"] > 5 and r)
    assert row["state"] == "running" and row["policy"] == "block" and row["fps_limit"] == 30
    assert row["age_p50_ms"] is not None and row["age_p99_ms"] >= row["age_p50_ms"]
    assert row["fps"] > 0 and row["frame_id"] is not None
    for key in ("frames_dropped", "frames_late", "reconnects", "priority", "max_age_ms", "source"):
        assert key in row
    assert client.get("/api/streams/cam").json()["name"] == "cam"


def test_a_snapshot_is_a_jpeg_drawn_once_per_frame(served: Served, client: TestClient) -> None:
    answer = client.get("/api/streams/cam/snapshot.jpg")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    assert decodes_as_jpeg(answer.content) == (128, 96)  # narrower than a tile: not enlarged
    assert int(answer.headers["x-frame-id"]) >= 0
    # The same tile again (within 1/TILE_FPS, or the same frame): not encoded again; 304 by ETag.
    before = served.live.encoded
    again = client.get("/api/streams/cam/snapshot.jpg", headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code in (200, 304)
    wide = client.get("/api/streams/wide/snapshot.jpg")
    assert decodes_as_jpeg(wide.content) == (480, 360)  # 640x480 scaled to the tile's width
    # Many viewers at once: the tile is made once, however many ask.
    encoded = served.live.encoded
    results = [client.get("/api/streams/wide/snapshot.jpg").headers["etag"] for _ in range(8)]
    assert served.live.encoded - encoded <= 2 and len(set(results)) <= 2
    assert served.live.encoded - before <= 4


def test_events_list_stream_events(client: TestClient) -> None:
    events = client.get("/api/events").json()["events"]
    started = [e for e in events if e["type"] == "stream" and e["kind"] == "started"]
    assert {e["stream"] for e in started} >= {"cam", "wide"}
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)


def test_metrics_are_prometheus_text(client: TestClient) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    families = {family.name for family in text_string_to_metric_families(answer.text)}
    assert {"aip_stream_frames_ordered", "aip_backend_frames", "aip_state", "process_cpu_seconds"} <= families


def test_metrics_report_the_remote_sinks_and_the_zones(served: Served) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    class Sink:
        name = "webhook"

        def stats(self) -> dict[str, Any]:
            return {"delivered": 7, "dropped": 2, "retries": 3, "failing": True}

    app = served.app(None)
    app.state.service.collector.sinks = [Sink()]
    text = TestClient(app).get("/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert {"aip_zone_objects", "aip_zone_entries", "aip_line_crossings"} <= set(families)
    dropped = families["aip_sink_dropped"].samples
    assert [(s.labels, s.value) for s in dropped if s.name.endswith("_total")] == [({"sink": "webhook"}, 2.0)]
    assert families["aip_sink_failing"].samples[0].value == 1.0


def test_probes_while_frames_flow(client: TestClient) -> None:
    assert client.get("/livez").json() == {"state": "live"}
    ready = wait_for(lambda: (r := client.get("/readyz")).status_code == 200 and r)
    assert ready.json()["state"] in ("ready", "backpressure")
    assert set(ready.json()) == {"state", "reason"}  # no stream name: the probes need no token


def test_post_then_delete_a_stream(served: Served, client: TestClient) -> None:
    answer = client.post("/api/streams", json={"source": "synthetic:64x48", "name": "extra", "fps": 20,
                                               "policy": "latest", "priority": 2})
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"name": "extra", "state": "opening", "url": "api/streams/extra"}
    row = wait_for(lambda: (r := stream_row(client, "extra")) and r["frame_id"] is not None and r)
    assert row["state"] == "running" and row["policy"] == "latest" and row["priority"] == 2
    assert row["source"] == "synthetic:64x48" and row["fps_limit"] == 20
    assert decodes_as_jpeg(client.get("/api/streams/extra/snapshot.jpg").content) == (64, 48)

    assert client.delete("/api/streams/extra").json() == {"name": "extra", "state": "removed"}
    assert stream_row(client, "extra") is None
    assert client.get("/api/streams/extra/snapshot.jpg").status_code == 404
    assert client.delete("/api/streams/extra").status_code == 404
    kinds = [e["kind"] for e in client.get("/api/events").json()["events"] if e["stream"] == "extra"]
    assert kinds[-2:] == ["started", "removed"]


def test_a_stream_without_a_name_is_named_by_its_source(client: TestClient) -> None:
    answer = client.post("/api/streams", json={"source": "synthetic:32x24", "fps": 5})
    assert answer.status_code == 202 and answer.json()["name"] == "synthetic:32x24"
    wait_for(lambda: (r := stream_row(client, "synthetic:32x24")) and r["state"] == "running")
    assert client.delete("/api/streams/synthetic:32x24").status_code == 200


def test_an_unreachable_camera_never_holds_the_request(client: TestClient) -> None:
    with socket.socket() as silent:  # accepts, never says a word: an open waits for its timeout
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"rtsp://user:pw@127.0.0.1:{silent.getsockname()[1]}/stream"
        started = time.monotonic()
        answer = client.post("/api/streams", json={"source": url, "name": "silent"})
        assert answer.status_code == 202
        assert time.monotonic() - started < OPEN_TIMEOUT_S  # answered before the open could end
        assert stream_row(client, "silent")["state"] in ("opening", "waiting", "running")
        assert "pw" not in client.get("/api/streams").text  # the source is shown redacted
        wait_for(lambda: stream_row(client, "silent")["state"] != "opening")
    # A camera that refuses: the open fails; the stream is evicted, with the reason and an event.
    refused = client.post("/api/streams", json={"source": "rtsp://127.0.0.1:9/none", "name": "refused"})
    assert refused.status_code == 202
    row = wait_for(lambda: (r := stream_row(client, "refused")) and r["state"] == "evicted" and r)
    assert row["reason"]
    events = client.get("/api/events").json()["events"]
    assert any(e["stream"] == "refused" and e["kind"] == "evicted" for e in events)
    assert client.delete("/api/streams/refused").status_code == 200
    assert stream_row(client, "refused") is None
    for name in ("silent",):
        if (row := stream_row(client, name)) is not None and row["state"] == "running":
            client.delete(f"/api/streams/{name}")


# ---- what a wrong request gets --------------------------------------------------------------

@pytest.mark.parametrize("body, code, words", [
    (b"not json", 400, "not JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b"{}", 400, "source is required"),
    (b'{"source": "synthetic", "colour": "red"}', 400, "unknown field 'colour'"),
    (b'{"source": "synthetic", "fps": "ten"}', 400, "fps must be a number"),
    (b'{"source": "synthetic", "fps": true}', 400, "fps must be a number"),
    (b'{"source": "synthetic", "fps": -1}', 400, "fps must be a number > 0"),
    (b'{"source": "synthetic", "priority": 0}', 400, "priority must be a number > 0"),
    (b'{"source": "synthetic", "policy": "sometimes"}', 400, "unknown policy 'sometimes'"),
    (b'{"source": 3.5}', 400, "source must be a string"),
    (b'{"source": "   "}', 400, "must not be empty"),
    (b'{"source": "/no/such/clip.mp4"}', 400, "not found"),
    (b'{"source": "synthetic", "name": ""}', 400, "name must be"),
    (b'{"source": "synthetic", "name": "cam"}', 409, "exists already"),
])
def test_a_bad_stream_request_says_what_was_wrong(client: TestClient, body: bytes, code: int,
                                                  words: str) -> None:
    answer = client.post("/api/streams", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == code and answer.headers["content-type"] == "application/json"
    assert words in answer.json()["error"]


@pytest.mark.parametrize("method, path, code, words", [
    ("DELETE", "/api/streams/nobody", 404, "no stream named 'nobody'"),
    ("GET", "/api/streams/nobody", 404, "no stream named 'nobody'"),
    ("GET", "/api/streams/nobody/snapshot.jpg", 404, "no stream named 'nobody'"),
    ("GET", "/api/streams/nobody/live", 404, "nobody"),
    ("GET", "/api/nothing", 404, "no route"),
    ("PUT", "/api/streams", 405, "PUT is not allowed"),
    ("GET", "/api/events?limit=0", 400, "limit must be"),
    ("GET", "/api/events?limit=many", 400, "limit must be"),
])
def test_wrong_requests_get_json_errors(client: TestClient, method: str, path: str, code: int,
                                        words: str) -> None:
    answer = client.request(method, path)
    assert answer.status_code == code and answer.headers["content-type"] == "application/json"
    assert words in answer.json()["error"]


def test_a_too_large_body_is_refused(client: TestClient) -> None:
    answer = client.post("/api/streams", content=b"{" + b" " * 100_000 + b"}")
    assert answer.status_code == 413 and "too large" in answer.json()["error"]


# ---- the live MJPEG view --------------------------------------------------------------------

def test_live_is_an_mjpeg_stream_of_tiles(served: Served) -> None:
    closing = threading.Event()
    app = build_app(lambda: served.pipeline, served.live, None, closing=closing)
    with TestClient(app) as test_client, test_client.stream("GET", "/api/streams/cam/live") as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
        received = b""
        for chunk in answer.iter_bytes():
            received += chunk
            if received.count(b"--frame") >= 2:
                break
        closing.set()  # the server stopping ends every MJPEG response
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"--frame\r\nContent-Type: image/jpeg")
    length = int(dict(line.split(b": ") for line in head.split(b"\r\n")[1:])[b"Content-Length"])
    decodes_as_jpeg(rest[:length])


# ---- the token ------------------------------------------------------------------------------

def every_route(app: Any) -> list[tuple[str, str]]:
    """(method, path) of every route of the app, its parameters filled in: a
    route added later is in this list without anyone writing it down."""
    found = []
    for route in app.routes:
        if isinstance(route, Mount):
            found.append(("GET", route.path + "/app.js"))
        elif isinstance(route, Route):
            for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
                # a stream with frames for what reads one (not the endless MJPEG), none for the rest
                name = "cam" if method == "GET" and not route.path.endswith("/live") else "nobody"
                found.append((method, route.path.replace("{name:path}", name)))
        else:
            raise AssertionError(f"a route of a kind this test does not know: {route!r}")
    assert len(found) >= 12
    return found


def test_every_route_needs_the_token(served: Served) -> None:
    app = served.app(TOKEN)
    with TestClient(app) as test_client:
        for method, path in every_route(app):
            if path in OPEN_PATHS:
                continue
            missing = test_client.request(method, path)
            assert missing.status_code == 401, (method, path)
            assert "token" in missing.json()["error"] and missing.headers["www-authenticate"].startswith("Bearer")
            for wrong in ({"headers": {"Authorization": "Bearer nope"}}, {"params": {"token": "nope"}},
                          {"headers": {"Authorization": f"Basic {TOKEN}"}, "params": {"token": "x"}}):
                assert test_client.request(method, path, **wrong).status_code == 403, (method, path, wrong)
            for right in ({"headers": {"Authorization": f"Bearer {TOKEN}"}}, {"params": {"token": TOKEN}}):
                answer = test_client.request(method, path, **right)
                assert answer.status_code not in (401, 403), (method, path, right)
                assert answer.status_code < 500, (method, path, answer.text)


def test_the_probes_need_no_token(served: Served) -> None:
    app = served.app(TOKEN)
    assert {path for _, path in every_route(app)} >= OPEN_PATHS
    with TestClient(app) as test_client:
        assert test_client.get("/livez").status_code == 200
        assert test_client.get("/readyz").status_code in (200, 503)


def test_the_page_passes_its_token_on_to_its_own_files(served: Served) -> None:
    with TestClient(served.app(TOKEN)) as test_client:
        page = test_client.get("/", params={"token": TOKEN}).text
        assert f'src="static/app.js?token={TOKEN}"' in page
        assert test_client.get(f"/static/app.js?token={TOKEN}").status_code == 200


def test_beyond_loopback_needs_a_token() -> None:
    for host in ("127.0.0.1", "127.0.0.9", "::1", "localhost"):
        assert is_loopback(host)
        check_bind(host, None)
    for host in ("0.0.0.0", "::", "192.168.1.10", "camera-box", ""):
        assert not is_loopback(host)
        with pytest.raises(UsageError, match="needs a token"):
            check_bind(host, None)
        check_bind(host, TOKEN)
    with pytest.raises(UsageError, match="--token"):
        WebServer("0.0.0.0", 0, None)


def test_the_run_refuses_to_serve_beyond_loopback_without_a_token(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIP_TOKEN", raising=False)
    assert main(["run", "synthetic:64x48", "-b", "sim:0.002", "--frames", "5",
                 "--serve", "0.0.0.0:0"]) == EXIT_USAGE
    assert "needs a token" in capsys.readouterr().err
    assert main(["run", "synthetic:64x48", "-b", "sim:0.002", "--frames", "5", "--token", "x"]) == EXIT_USAGE
    assert "--token goes with --serve" in capsys.readouterr().err


def test_serve_is_refused_with_a_cluster() -> None:
    args = argparse.Namespace(cluster_mode="streams")
    with pytest.raises(UsageError, match="--serve"):
        check_cluster_flags(args, {"serve"}, [])


def test_a_config_file_takes_serve_and_token(tmp_path: Path) -> None:
    from aip.app.cli import build_parser
    from aip.app.config import apply

    config = tmp_path / "aip.toml"
    config.write_text('serve = "0.0.0.0:8080"\ntoken = "from-the-file"\n')
    argv = ["run", "--config", str(config)]
    args = apply(build_parser().parse_args(argv), argv, build_parser)
    assert args.serve == ("0.0.0.0", 8080) and args.token == "from-the-file"


def test_without_the_web_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from aip.app.web.server import WebUnavailable, require_web
    from aip.errors import EXIT_BACKEND, exit_code

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    with pytest.raises(WebUnavailable, match=r"pip install 'aip\[web\]'") as raised:
        require_web()
    assert isinstance(raised.value, ImportError) and exit_code(raised.value) == EXIT_BACKEND


@pytest.mark.parametrize("text, address", [
    ("8080", ("127.0.0.1", 8080)), ("0", ("127.0.0.1", 0)), ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("localhost:9000", ("localhost", 9000)), ("[::1]:8080", ("::1", 8080)),
])
def test_serve_takes_host_and_port(text: str, address: tuple[str, int]) -> None:
    assert serve_address(text) == address


@pytest.mark.parametrize("text", ["", "port", ":8080", "::1:8080", "[::1]", "1.2.3.4:70000", "1.2.3.4:-1"])
def test_a_bad_serve_address_is_a_usage_error(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        serve_address(text)


# ---- start-up: before the pipeline exists ----------------------------------------------------

def test_livez_answers_before_the_pipeline_exists_and_readyz_says_starting() -> None:
    with TestClient(build_app(lambda: None, LiveView(), None)) as test_client:
        assert test_client.get("/livez").status_code == 200
        ready = test_client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["state"] == "starting"
        assert test_client.get("/api/status").json()["state"] == "starting"
        assert test_client.get("/api/streams").json() == {"streams": []}
        assert test_client.get("/metrics").status_code == 200
        assert test_client.get("/").status_code == 200
        refused = test_client.post("/api/streams", json={"source": "synthetic"})
        assert refused.status_code == 503 and "not started yet" in refused.json()["error"]


def test_readyz_is_503_while_the_pipeline_idles() -> None:
    with Pipeline([BackendSpec("sim", {"latency_s": 0.002})]) as pipeline, \
            TestClient(build_app(lambda: pipeline, LiveView(), None)) as test_client:
        ready = test_client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["state"] == "idle"
        assert test_client.get("/livez").status_code == 200


# ---- the server: uvicorn on a thread -------------------------------------------------------------

def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=PATIENCE_S) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as failure:
        with failure:
            return failure.code, failure.read()


def test_the_server_listens_at_start_and_stops() -> None:
    live = LiveView()
    with WebServer("127.0.0.1", 0, None, live) as server:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}"
        assert http_get(server.url + "/livez") == (200, b'{"state":"live"}\n')
        assert http_get(server.url + "/readyz")[0] == 503
        with pytest.raises(OSError, match="cannot listen on 127.0.0.1"):
            WebServer("127.0.0.1", server.port, None).start()  # busy: at once
    with pytest.raises(urllib.error.URLError):
        http_get(server.url + "/livez")


def test_the_server_checks_the_token_over_http() -> None:
    with WebServer("127.0.0.1", 0, TOKEN) as server:
        assert http_get(server.url + "/api/status")[0] == 401
        assert http_get(server.url + "/api/status?token=nope")[0] == 403
        assert http_get(server.url + f"/api/status?token={TOKEN}")[0] == 200
        assert http_get(server.url + "/livez")[0] == 200


def test_a_cli_run_serves_while_it_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "synthetic:64x48", "synthetic:32x24", "-b", "sim:0.002", "--frames", "20",
                 "--serve", "127.0.0.1:0"]) == 0
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("web: ")]
    assert line.startswith("web: http://127.0.0.1:")
    with pytest.raises(urllib.error.URLError):  # closed with the run
        http_get(line.split()[1] + "livez")


# ---- the live view itself ---------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def result(frame_id: int, stream: str = "a", frame: np.ndarray | None = None,
           events: tuple[TrackEvent, ...] = ()) -> FrameResult:
    boxes = np.array([[10, 10, 40, 30, 0.9, 0]], np.float32)
    return FrameResult(frame_id, "sim", 0, boxes, 0, 0, 0, 0, 0, frame=frame, stream=stream, events=events)


def test_the_live_view_keeps_the_latest_frame_and_encodes_nothing_on_write() -> None:
    clock = Clock()
    live = LiveView(clock=clock)
    image = np.zeros((48, 64, 3), np.uint8)
    for i in range(100):
        live.write(result(i, frame=image))
        live.write(Gap(i, "dropped", "a"))
        clock.now += 0.01
    live.write(result(100))  # no frame: counted, not shown
    assert live.encoded == 0 and live.latest_frame_id("a") == 99 and live.streams() == ["a"]
    tile = live.tile("a")
    assert tile is not None and tile.frame_id == 99 and live.encoded == 1
    assert live.tile("a") is tile and live.encoded == 1  # same frame: the same tile
    assert live.tile("b") is None
    live.forget("a")
    assert live.tile("a") is None and live.streams() == []


def test_tiles_are_made_at_most_tile_fps_a_second() -> None:
    clock = Clock()
    live = LiveView(clock=clock, tile_fps=5)
    image = np.zeros((48, 64, 3), np.uint8)
    made = set()
    for i in range(100):  # 100 frames over 1 s, a viewer asking for each
        live.write(result(i, frame=image))
        tile = live.tile("a")
        assert tile is not None
        made.add(tile.serial)
        clock.now += 0.01
    assert len(made) == live.encoded <= 6


def test_the_fps_history_has_one_sample_a_second() -> None:
    clock = Clock()
    live = LiveView(clock=clock, history_s=10)
    assert live.fps_history() == []
    for second in range(15):
        for _ in range(second):
            live.write(result(0))
        clock.now += 1.0
    history = live.fps_history()
    assert len(history) == 10 and history == list(range(5, 15))
    clock.now += 3.0  # nothing for 3 s: zeros
    assert live.fps_history()[-4:] == [14, 0, 0, 0]
    assert live.stream_fps("a") == 0.0


def test_the_live_view_keeps_recent_track_events() -> None:
    live = LiveView(events_kept=3)
    for i in range(5):
        event = TrackEvent("enter", "a", "door", i, 0, "person", i, 0, 1000.0 + i)
        live.write(result(i, events=(event,)))
    assert [e.track_id for e in live.events()] == [2, 3, 4]
    assert [e.track_id for e in live.events(limit=1)] == [4]
