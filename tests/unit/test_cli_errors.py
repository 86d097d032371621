"""Every bad command line, tried as a new user would: ``aip`` in a subprocess.

Each ends with a one-line error that says what to do and its documented
exit code (aip.errors); no traceback; and nothing left behind: no process
that carries the run's marker in its environment (the run, its workers,
its resource tracker), no aip segment that the run created (tests/cli_checks.py).
Bad files (videos, models, configs) are in tests/integration/test_cli_bad_files.py.
"""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from aip.errors import (
    EXIT_BACKEND,
    EXIT_RUNTIME,
    EXIT_SOURCE,
    EXIT_USAGE,
    ConfigError,
    SourceError,
    exit_code,
)
from cli_checks import check_error, run_aip


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed once the probe is


@pytest.mark.parametrize("argv, expected, fragments", [
    (["run", "/no/such/video.mp4", "-b", "sim:0.01"], EXIT_SOURCE, ["not found", "expected a video file"]),
    (["run", "-b", "tpu"], EXIT_USAGE, ["unknown backend 'tpu'", "aip backends"]),
    (["run", "-b", "onnx:threads=1,bogus=7"], EXIT_USAGE, ["no option 'bogus'", "its options:", "threads"]),
    (["run", "-b", "sim:0.01", "--fps", "-1"], EXIT_USAGE, ["--fps", "> 0"]),
    (["run", "-b", "sim:0.01", "--frames", "0"], EXIT_USAGE, ["--frames", ">= 1"]),
    (["run", "-b", "sim:0.01", "--conf", "2"], EXIT_USAGE, ["--conf", "between 0 and 1"]),
    (["run", "-b", "sim:0.01", "--imgsz", "big"], EXIT_USAGE, ["--imgsz", "480x640"]),
    (["run", "-b", "sim:0.01", "--mode", "fastest"], EXIT_USAGE, ["--mode", "invalid choice"]),
    (["run", "-b", "sim:0.01", "--stream-timeout", "0"], EXIT_USAGE, ["--stream-timeout"]),
    (["run", "-b", "sim:x"], EXIT_USAGE, []),
    (["frobnicate"], EXIT_USAGE, ["invalid choice"]),
])
def test_bad_command_lines(argv: list[str], expected: int, fragments: list[str]) -> None:
    code, err, _ = run_aip(*argv)
    check_error(err, code, expected, *fragments)


def test_an_unreachable_stream_times_out_then_says_so() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/x.mjpg"
    code, err, elapsed = run_aip("run", url, "-b", "sim:0.01", "--stream-timeout", "0.5")
    check_error(err, code, EXIT_SOURCE, url, "check the address", "--stream-timeout")
    assert elapsed < 20


def test_exit_codes_of_errors_raised_during_a_run() -> None:
    from aip.pipeline import StreamError, WorkerError

    assert exit_code(StreamError([])) == EXIT_SOURCE  # a stream evicted, the others delivered
    assert exit_code(SourceError("x")) == EXIT_SOURCE
    assert exit_code(ConnectionError("x")) == EXIT_SOURCE
    assert exit_code(ConfigError("x")) == EXIT_USAGE
    assert exit_code(WorkerError("every worker died")) == EXIT_RUNTIME
    assert exit_code(WorkerError("worker cpu failed to start:\nTraceback ...", worker=0)) == EXIT_BACKEND
    assert exit_code(ModuleNotFoundError("no torch", name="torch")) == EXIT_BACKEND
    assert exit_code(KeyboardInterrupt()) == 130
    assert exit_code(ZeroDivisionError()) == EXIT_RUNTIME


def test_help_documents_the_exit_codes() -> None:
    out = subprocess.run([sys.executable, "-m", "aip", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for line in ("0  success", "2  usage error", "3  source error", "4  backend unavailable",
                 "130  interrupted by SIGINT", "143  terminated by SIGTERM"):
        assert line in out
