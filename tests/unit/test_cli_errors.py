"""Every bad input, tried as a new user would: ``aip`` in a subprocess.

Each ends with a one-line error that says what to do and its documented
exit code (aip.errors); no traceback; and nothing left behind: no process
that carries the run's marker in its environment (the run, its workers,
its resource tracker), no aip segment that the run created.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from aip import segments
from aip.errors import (
    EXIT_BACKEND,
    EXIT_RUNTIME,
    EXIT_SOURCE,
    EXIT_USAGE,
    ConfigError,
    SourceError,
    exit_code,
)
from aip.io.samples import sample_video

MARK = "AIP_TEST_RUN_MARK"


def _processes_marked(mark: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"{MARK}={mark}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def run_aip(*argv: str, timeout: float = 120) -> tuple[int, str, float]:
    """``aip ARGV`` in a fresh process; returns (exit code, stderr, seconds), after
    checking that it left no process and no segment behind."""
    mark = uuid.uuid4().hex
    env = {**os.environ, MARK: mark, "PYTHONWARNINGS": "ignore"}
    started = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "aip", *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    _, err = child.communicate(timeout=timeout)
    elapsed = time.monotonic() - started
    deadline = time.monotonic() + 5.0  # a worker may take a moment to notice its manager is gone
    while True:
        left = _processes_marked(mark) if Path("/proc/self/environ").exists() else []
        ours = [s.name for s in segments.list_segments() if s.creator_pid == child.pid]
        if not left and not ours:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"aip {' '.join(argv)} left processes {left} and segments {ours}")
        time.sleep(0.1)
    return child.returncode, err, elapsed


def check_error(err: str, code: int, expected_code: int, *fragments: str) -> None:
    assert code == expected_code, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(("aip: error:", "aip run: error:")), err
    assert sum(line.startswith(("aip: error", "aip run: error")) for line in err.splitlines()) == 1
    for fragment in fragments:
        assert fragment in last, last


@pytest.fixture(scope="module")
def broken_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad-inputs")
    video = sample_video().read_bytes()
    files = {
        "truncated": folder / "truncated.mp4",  # the first half: no index (moov) at the end
        "corrupt": folder / "corrupt.mp4",
        "text.onnx": folder / "model.onnx",
        "notyolo.pt": folder / "notyolo.pt",  # a torch checkpoint of something else
        "pickle.pt": folder / "pickle.pt",  # not a torch checkpoint at all
        "unknown-key.toml": folder / "aip.toml",
    }
    files["truncated"].write_bytes(video[: len(video) // 2])
    files["corrupt"].write_bytes(bytes(range(256)) * 64)
    files["text.onnx"].write_text("this is not a model\n")
    import pickle

    import torch

    torch.save({"weights": [1, 2, 3]}, files["notyolo.pt"])
    files["pickle.pt"].write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    files["unknown-key.toml"].write_text('backends = ["sim:0.01"]\nspeed = "fast"\n')
    return files


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


@pytest.mark.parametrize("which, argv, expected, fragments", [
    ("truncated", ["-b", "sim:0.01"], EXIT_SOURCE, ["not a readable video"]),
    ("corrupt", ["-b", "sim:0.01"], EXIT_SOURCE, ["not a readable video"]),
    ("text.onnx", ["synthetic:64x48", "--frames", "2", "-b", "onnx", "--model"], EXIT_BACKEND,
     ["failed to start", "Protobuf parsing failed", "AIP_TRACEBACK=1"]),
    ("notyolo.pt", ["synthetic:64x48", "--frames", "2", "-b", "cpu", "--model"], EXIT_USAGE,
     ["not a loadable YOLO .pt checkpoint"]),
    ("pickle.pt", ["synthetic:64x48", "--frames", "2", "-b", "cpu", "--model"], EXIT_USAGE,
     ["not a PyTorch checkpoint", "expected a YOLO .pt file"]),
    ("unknown-key.toml", ["--config"], EXIT_USAGE, ["unknown key 'speed'", "known keys:"]),
])
def test_bad_files(broken_files: dict[str, Path], which: str, argv: list[str], expected: int,
                   fragments: list[str]) -> None:
    path = str(broken_files[which])
    full = ["run", *argv, path] if argv[-1].startswith("--") else ["run", path, *argv]
    code, err, _ = run_aip(*full)
    check_error(err, code, expected, *fragments)


def test_an_unreachable_stream_times_out_then_says_so() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/x.mjpg"
    code, err, elapsed = run_aip("run", url, "-b", "sim:0.01", "--stream-timeout", "0.5")
    check_error(err, code, EXIT_SOURCE, url, "check the address", "--stream-timeout")
    assert elapsed < 20


def test_a_backend_this_machine_lacks() -> None:
    from aip.app.cli import available_backends

    lacking = [name for name, reason in available_backends().items() if reason is not None]
    if not lacking:
        pytest.skip("this machine runs every backend")
    for name in lacking[:2]:  # coreml and mps off a Mac, cuda without an NVIDIA GPU
        code, err, _ = run_aip("run", "synthetic:64x48", "--frames", "2", "-b", name)
        check_error(err, code, EXIT_BACKEND, name)


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
