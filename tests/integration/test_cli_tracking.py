"""``aip run --track`` with zones and lines from a config, events to a webhook
and the JSONL, as a user runs it; and the tracking flags' errors."""
from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from aip.errors import EXIT_USAGE
from cli_checks import check_error, run_aip

CONFIG = """\
backends = ["sim:latency_s=0,boxes=4"]
track = "bytetrack.yaml"

[[streams]]
source = "synthetic:128x128"
name = "door-cam"
frames = 40
zones = [{ name = "left", points = [[0, 0], [31.5, 0], [31.5, 480], [0, 480]] }]
lines = [{ name = "door", start = [31.5, 0], end = [31.5, 480] }]
"""


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[bytes]]]:
    received: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/events", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_config_with_zones_and_lines_gives_events_in_the_jsonl_and_the_webhook(
        tmp_path: Path, webhook: tuple[str, list[bytes]]) -> None:
    url, received = webhook
    config = tmp_path / "aip.toml"
    config.write_text(CONFIG)
    out = tmp_path / "out.jsonl"
    code, err, _ = run_aip("run", "--config", str(config), "--jsonl", str(out), "--webhook", url, "-q")
    assert code == 0, err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame_id"] for r in records] == list(range(40))
    assert all(len(r["track_ids"]) == len(r["detections"]) for r in records if "detections" in r)
    events = [e for r in records for e in r.get("events", [])]
    assert {e["kind"] for e in events} >= {"enter", "exit", "cross"}
    assert all(e["stream"] == "door-cam" for e in events)
    posted = [e for body in received for e in json.loads(body)]
    assert sorted(map(json.dumps, posted)) == sorted(map(json.dumps, events))  # every event, once


@pytest.mark.parametrize(("flags", "fragment"), [
    (["--track", "nosuch.yaml"], "bytetrack.yaml"),
    (["--mqtt", "http://broker"], "mqtt://"),
    (["--webhook", "ftp://host/x"], "http"),
])
def test_tracking_flags_that_cannot_work_are_usage_errors(flags: list[str], fragment: str) -> None:
    code, err, _ = run_aip("run", "synthetic:64x64", "--frames", "3", "-b", "sim:0", *flags)
    check_error(err, code, EXIT_USAGE, fragment)


def test_a_bad_zone_in_a_config_names_the_stream_and_the_key(tmp_path: Path) -> None:
    config = tmp_path / "aip.toml"
    config.write_text('backends = ["sim:0"]\n[[streams]]\nsource = "synthetic:64x64"\n'
                      'zones = [{ name = "z", points = [[0, 0], [1, 1]] }]\n')
    code, err, _ = run_aip("run", "--config", str(config))
    check_error(err, code, EXIT_USAGE, "streams[0]", "zones", "3 points")
