"""Camera credentials never leave the process: aip.io.credentials, and a real
``aip run`` on two loopback cameras whose URLs carry a password, whose every
output (stdout, stderr, JSON Lines, --metrics-json, /metrics, /healthz) is
searched for it."""
from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aip.io.credentials import (
    MASK,
    RedactingFilter,
    install_log_redaction,
    redact,
    redacted_names,
    stream_name,
)
from aip.errors import EXIT_SOURCE

SECRET = "S3cretPass"
PATIENCE_S = 120.0  # an upper bound for a loaded machine, never a measurement


# ---- redact ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("rtsp://admin:S3cretPass@10.0.0.5:554/stream1", "rtsp://***@10.0.0.5:554/stream1"),
    ("rtsps://admin:S3cretPass@cam.local/live", "rtsps://***@cam.local/live"),
    ("rtmp://user:S3cretPass@host/app/key", "rtmp://***@host/app/key"),
    ("http://admin:S3cretPass@host/cam.mjpg", "http://***@host/cam.mjpg"),
    ("https://admin:S3cretPass@host:8443/x", "https://***@host:8443/x"),
    ("udp://u:S3cretPass@239.0.0.1:1234", "udp://***@239.0.0.1:1234"),
    ("tcp://u:S3cretPass@10.1.1.1:9000", "tcp://***@10.1.1.1:9000"),
    ("srt+tls://u:S3cretPass@h:9000", "srt+tls://***@h:9000"),  # any scheme
    ("HTTP://Admin:S3cretPass@HOST/x", "HTTP://***@HOST/x"),
    # a user alone is masked too: it is half of the credentials
    ("rtsp://admin@10.0.0.5/stream1", "rtsp://***@10.0.0.5/stream1"),
    ("rtsp://:S3cretPass@10.0.0.5/stream1", "rtsp://***@10.0.0.5/stream1"),
    ("rtsp://@host/x", "rtsp://***@host/x"),
    # a raw "@" in the password: the userinfo ends at the last "@" before the path
    ("rtsp://admin:S3c@ret@Pass@10.0.0.5/s", "rtsp://***@10.0.0.5/s"),
    ("rtsp://admin:p%40ss%3Aw@10.0.0.5/s", "rtsp://***@10.0.0.5/s"),
    ("rtsp://admin:pa'ss,w\"d@10.0.0.5/s", "rtsp://***@10.0.0.5/s"),
    ("http://u:p@[fe80::1]:8080/x", "http://***@[fe80::1]:8080/x"),
    ("rtsp://u:p@host", "rtsp://***@host"),
    ("rtsp://u:p@host?x=1", "rtsp://***@host?x=1"),
    ("rtsp://u:p@host#frag", "rtsp://***@host#frag"),
    # secrets in the query
    ("https://h/live.m3u8?token=abc123", "https://h/live.m3u8?token=***"),
    ("https://h/x?channel=1&password=S3cretPass&subtype=0",
     "https://h/x?channel=1&password=***&subtype=0"),
    ("https://h/x?user=a&pwd=1&passwd=2&pass=3&auth=4&key=5&api_key=6&secret=7&signature=8&sig=9",
     "https://h/x?user=a&pwd=***&passwd=***&pass=***&auth=***&key=***&api_key=***&secret=***"
     "&signature=***&sig=***"),
    ("https://h/x?access_token=a.b.c&X-Amz-Signature=ff&Client_Secret=s#t",
     "https://h/x?access_token=***&X-Amz-Signature=***&Client_Secret=***#t"),
    ("https://h/x?TOKEN=abc", "https://h/x?TOKEN=***"),
    ("https://h/x?token=", "https://h/x?token=***"),
    # names that only contain a secret word are not secrets
    ("https://h/x?passenger=2&monkey=3&keyframe=4", "https://h/x?passenger=2&monkey=3&keyframe=4"),
    # URLs inside any text
    ("cannot open 'rtsp://admin:S3cretPass@10.0.0.5/s': Connection refused",
     "cannot open 'rtsp://***@10.0.0.5/s': Connection refused"),
    ('["rtsp://a:S3cretPass@h1/x", "rtsp://b:S3cretPass@h2/y"]', '["rtsp://***@h1/x", "rtsp://***@h2/y"]'),
    ("a=rtsp://a:S3cretPass@h1/x,b=http://b:S3cretPass@h2/y",
     "a=rtsp://***@h1/x,b=http://***@h2/y"),
    ("stream_rtsp://u:S3cretPass@h/x dead", "stream_rtsp://***@h/x dead"),
    ("stream1rtsp://u:S3cretPass@h/x dead", "stream1rtsp://***@h/x dead"),
    ("Traceback (most recent call last):\n  File \"x.py\", line 1\nStreamDeadError: stream "
     "http://admin:S3cretPass@127.0.0.1:1/cam.mjpg dead\n",
     "Traceback (most recent call last):\n  File \"x.py\", line 1\nStreamDeadError: stream "
     "http://***@127.0.0.1:1/cam.mjpg dead\n"),
])
def test_redact_masks_userinfo_and_secret_query_values(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert SECRET not in redact(text)
    assert redact(redact(text)) == redact(text)


@pytest.mark.parametrize("text", [
    "",
    "plain text, no URL",
    "rtsp://10.0.0.5:554/stream1",
    "http://127.0.0.1:8080/stream.mjpg?channel=1&subtype=0",
    "https://example.com/path/user@example.com",  # an "@" in the path is no userinfo
    "http://host/x?email=a@b.com",
    "mailto:someone@example.com",
    "someone@example.com wrote a=b",
    "/data/videos/clip.mp4",
    "synthetic:640x480",
    "frames     generated 40  assigned 40  ordered 40",
    "x == y; key = value",
    "10.0.0.5:554/stream1#2",
    "camera0",
])
def test_redact_leaves_text_without_credentials_unchanged(text: str) -> None:
    assert redact(text) == text


def test_redact_takes_linear_time_on_long_text() -> None:
    # One try per run of scheme characters: a quadratic scan of this would take hours.
    blob = "A" * 200_000
    text = f"{blob} rtsp://u:{SECRET}@h/x {blob}://{blob}?{'k_' * 50_000}"
    assert redact(text) == f"{blob} rtsp://***@h/x {blob}://{blob}?{'k_' * 50_000}"


_PASSWORD = st.text(st.characters(blacklist_categories=("Cs", "Z", "Cc"), blacklist_characters="/?#"),
                    min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(scheme=st.sampled_from(["rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt"]),
       user=st.text(st.characters(whitelist_categories=("L", "N")), max_size=10),
       password=_PASSWORD,
       prefix=st.sampled_from(["", "error: ", "'", "(", "source=", "x "]),
       suffix=st.sampled_from(["", "/stream1", ":554/a/b?x=1", "' not found", ") dead", " now"]))
def test_no_password_survives(scheme: str, user: str, password: str, prefix: str, suffix: str) -> None:
    url = f"{scheme}://{user}:{password}@10.0.0.5{suffix}"
    out = redact(prefix + url)
    assert out == f"{prefix}{scheme}://{MASK}@10.0.0.5{suffix}"
    assert redact(out) == out


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_redact_is_idempotent_on_any_text(text: str) -> None:
    once = redact(text)
    assert redact(once) == once


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(["token", "access_token", "password", "sig", "api_key", "X-Goog-Signature"]),
       value=st.text(st.sampled_from("abcXYZ0189-_.~%+/="), min_size=1, max_size=40))
def test_no_query_secret_survives(name: str, value: str) -> None:
    out = redact(f"https://h/p?a=1&{name}={value}&b=2")
    assert out == f"https://h/p?a=1&{name}={MASK}&b=2"


# ---- stream_name ----------------------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    ("rtsp://admin:S3cretPass@10.0.0.5:554/stream1", "10.0.0.5:554/stream1"),
    ("rtsp://admin:S3cretPass@10.0.0.5:554/stream1?token=abc&channel=1#x", "10.0.0.5:554/stream1"),
    ("rtsp://10.0.0.5/Streaming/Channels/101", "10.0.0.5/Streaming/Channels/101"),
    ("http://admin:S3cret@Pass@cam.local:8080//video//mjpg/", "cam.local:8080/video/mjpg"),
    ("https://u@example.com", "example.com"),
    ("https://example.com/", "example.com"),
    ("udp://239.0.0.1:1234", "239.0.0.1:1234"),
    ("http://u:p@[fe80::1]:8080/x", "[fe80::1]:8080/x"),
    (0, "camera0"),
    (3, "camera3"),
    ("0", "camera0"),
    ("12", "camera12"),
    ("/data/videos/clip.mp4", "clip.mp4"),
    ("clip.mp4", "clip.mp4"),
    ("relative/dir/frames/", "frames"),
    (Path("/data/frames"), "frames"),
    ("synthetic:640x480", "synthetic:640x480"),
    ("sample", "sample"),
    ("sample:120", "sample:120"),
])
def test_stream_name(spec: str | int | Path, expected: str) -> None:
    name = stream_name(spec)
    assert name == expected
    assert SECRET not in name and "admin" not in name and "?" not in name and "://" not in name
    assert redact(name) == name


def test_stream_name_of_the_current_folder_is_its_name() -> None:
    assert stream_name(".") == Path.cwd().name


def test_stream_names_are_made_unique() -> None:
    url = "rtsp://admin:S3cretPass@10.0.0.5:554/stream1"
    taken: list[str] = []
    for _ in range(4):
        taken.append(stream_name(url, taken))
    assert taken == ["10.0.0.5:554/stream1", "10.0.0.5:554/stream1#2", "10.0.0.5:554/stream1#3",
                     "10.0.0.5:554/stream1#4"]
    assert stream_name(url, iter(taken)) == "10.0.0.5:554/stream1#5"  # any iterable
    assert stream_name("a/clip.mp4", ["clip.mp4", "clip.mp4#3"]) == "clip.mp4#2"
    assert stream_name(0, {"camera0"}) == "camera0#2"


def test_default_stream_names_of_the_cli_are_distinct_and_keep_given_names() -> None:
    from aip.app.cli import default_stream_names

    specs = ["rtsp://a:S3cretPass@h/x", "rtsp://b:S3cretPass@h/x", "0", "clip.mp4", "other/clip.mp4"]
    assert default_stream_names(specs) == ["h/x", "h/x#2", "camera0", "clip.mp4", "clip.mp4#2"]
    # a config's [[streams]] name wins, and a default never takes it
    assert default_stream_names(specs[:3], [{"name": "h/x"}, {"fps": 5.0}]) == ["h/x", "h/x#2", "camera0"]


def test_redacted_names_stay_distinct() -> None:
    names = ["rtsp://a:S3cretPass@h/x", "rtsp://b:other@h/x", "cam", "rtsp://***@h/x#2"]
    assert redacted_names(names) == ["rtsp://***@h/x", "rtsp://***@h/x#2", "cam", "rtsp://***@h/x#2#2"]


def test_metrics_report_stream_names_redacted() -> None:
    from aip.pipeline.metrics import Metrics, StreamMetrics

    metrics = Metrics()
    metrics.streams = {"rtsp://admin:S3cretPass@h/x": StreamMetrics(), "rtsp://u:other@h/x": StreamMetrics()}
    table, text = metrics.format_table(), metrics.to_json()
    assert SECRET not in table + text and "other" not in table + text
    assert list(metrics.to_dict()["streams"]) == ["rtsp://***@h/x", "rtsp://***@h/x#2"]
    assert "rtsp://***@h/x" in table


def test_jsonl_lines_name_streams_redacted(tmp_path: Path) -> None:
    from aip.pipeline.reorder import Gap
    from aip.io.sinks import JsonLinesSink

    with JsonLinesSink(tmp_path / "out.jsonl") as sink:
        sink.write(Gap(0, "dropped", "rtsp://admin:S3cretPass@h/x"))
    line = json.loads((tmp_path / "out.jsonl").read_text())
    assert line == {"stream": "rtsp://***@h/x", "frame_id": 0, "dropped": "dropped"}


# ---- log records ----------------------------------------------------------------------------

@pytest.fixture
def log_to_text() -> Iterator[tuple[io.StringIO, logging.Handler]]:
    """A handler on a logger of its own (no propagation): no global logging state touched."""
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    parent = logging.getLogger("aip_redaction_test")
    parent.addHandler(handler)
    parent.setLevel(logging.INFO)
    parent.propagate = False
    try:
        yield text, handler
    finally:
        parent.removeHandler(handler)
        parent.propagate = True
        parent.setLevel(logging.NOTSET)


def test_log_records_of_child_loggers_are_redacted(log_to_text: tuple[io.StringIO, logging.Handler]) -> None:
    text, handler = log_to_text
    url = f"rtsp://admin:{SECRET}@10.0.0.5:554/stream1?token=t0k3n"
    assert handler in install_log_redaction("aip_redaction_test")
    install_log_redaction("aip_redaction_test.child")  # idempotent: one filter on the handler
    assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1

    child = logging.getLogger("aip_redaction_test.child.grandchild")
    child.info("stream %s reconnecting: %s", url, {"url": url})
    child.warning(f"evicted: {url}")
    try:
        raise ConnectionError(f"cannot open {url}")
    except ConnectionError:
        child.exception("stream %s failed", "cam")
    child.warning("with a stack", stack_info=True)
    child.info("no secret: %d frames", 12)

    output = text.getvalue()
    assert SECRET not in output and "t0k3n" not in output and "admin" not in output
    assert output.count("rtsp://***@10.0.0.5:554/stream1?token=***") == 4, output
    assert "ConnectionError: cannot open rtsp://***@" in output
    assert "Traceback (most recent call last)" in output and "Stack (most recent call last)" in output
    assert "aip_redaction_test.child.grandchild: no secret: 12 frames" in output


def test_a_record_without_secrets_keeps_its_arguments() -> None:
    record = logging.LogRecord("aip", logging.INFO, __file__, 1, "%s frames", (12,), None)
    assert RedactingFilter().filter(record)
    assert record.msg == "%s frames" and record.args == (12,)
    broken = logging.LogRecord("aip", logging.INFO, __file__, 1, "%s and %s", ("one",), None)
    assert RedactingFilter().filter(broken)  # a bad format string is the handler's to report


# ---- the real CLI ---------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed once the probe is: free, nothing listens


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as error:  # 503 while starting or idle: a body all the same
        with error:
            return str(error.read().decode())
    except (urllib.error.URLError, OSError):
        return None  # not listening yet, or closed with the run


def _aip(*argv: str, out: Path, err: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with out.open("wb") as stdout, err.open("wb") as stderr:
        return subprocess.Popen([sys.executable, "-m", "aip", *argv], stdout=stdout, stderr=stderr,
                                env={**os.environ, **(env or {})})


def test_a_run_on_cameras_with_passwords_never_shows_them(tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    pytest.importorskip("prometheus_client")
    from aip.bench.mjpeg import MjpegCameras

    jsonl, metrics_json = tmp_path / "out.jsonl", tmp_path / "metrics.json"
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    port = _free_port()
    scraped: dict[str, list[str]] = {"/metrics": [], "/healthz": []}
    # 30 frames a stream at 10 FPS: about 3 s of run, for the scrapes to see the streams.
    with MjpegCameras(2, fps=10, frames=400) as cameras:
        # FFmpeg sends the user and password as basic auth, which the test cameras ignore.
        urls = [url.replace("http://", f"http://admin:{SECRET}@") for url in cameras.urls]
        names = [url.removeprefix("http://") for url in cameras.urls]  # 127.0.0.1:PORT/stream.mjpg
        child = _aip("run", *urls, "-b", "sim:0.002", "--frames", "30", "--jsonl", str(jsonl),
                     "--metrics-json", str(metrics_json), "--metrics-port", str(port),
                     out=out, err=err)
        try:
            deadline = time.monotonic() + PATIENCE_S
            while child.poll() is None and time.monotonic() < deadline:
                for path, bodies in scraped.items():
                    body = _get(f"http://127.0.0.1:{port}{path}")
                    if body is not None:
                        bodies.append(body)
                time.sleep(0.05)
            code = child.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    stdout, stderr = out.read_text(), err.read_text()
    assert code == 0, stderr

    outputs = {"stdout": stdout, "stderr": stderr, "jsonl": jsonl.read_text(),
               "metrics-json": metrics_json.read_text(),
               **{f"{path} #{i}": body for path, bodies in scraped.items() for i, body in enumerate(bodies)}}
    for where, text in outputs.items():
        assert SECRET not in text, f"the password is in {where}:\n{text}"
        assert "admin" not in text, f"the user is in {where}:\n{text}"

    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert {line["stream"] for line in lines} == set(names)
    assert set(json.loads(metrics_json.read_text())["streams"]) == set(names)
    assert all(name in stdout for name in names), stdout  # the summary's stream table
    assert all(name in stderr for name in names), stderr  # the progress display's last line

    # /metrics and /healthz while the streams ran (the server closes with the run)
    labelled = [body for body in scraped["/metrics"] if all(f'stream="{n}"' in body for n in names)]
    assert labelled, f"no scrape of /metrics saw both streams ({len(scraped['/metrics'])} scrapes)"
    healthy = [json.loads(body) for body in scraped["/healthz"]]
    assert any(set(body.get("streams", {})) == set(names) for body in healthy), healthy[-3:]


def test_a_camera_that_fails_to_open_is_named_without_its_password(tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    port = _free_port()  # nothing listens there
    url = f"http://admin:{SECRET}@127.0.0.1:{port}/cam.mjpg"
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    # AIP_TRACEBACK=1: the traceback printed under the error is redacted too.
    child = _aip("run", url, "-b", "sim:0.01", "--stream-timeout", "0.5", out=out, err=err,
                 env={"AIP_TRACEBACK": "1"})
    try:
        code = child.wait(timeout=PATIENCE_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    stdout, stderr = out.read_text(), err.read_text()
    assert code == EXIT_SOURCE, stderr
    assert SECRET not in stdout + stderr and "admin" not in stdout + stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("aip: error:")]
    assert len(errors) == 1, stderr
    assert f"http://***@127.0.0.1:{port}/cam.mjpg" in errors[0]
    assert "check the address" in errors[0]
    assert "Traceback (most recent call last)" in stderr and f"http://***@127.0.0.1:{port}" in stderr
