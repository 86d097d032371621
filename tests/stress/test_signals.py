"""SIGTERM and SIGINT drain a running `aip run`: every frame taken in comes
out (delivered or counted), the sinks are finalized, the exit code is 128+N."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.stress,
              pytest.mark.skipif(sys.platform != "linux", reason="looks in /proc and /dev/shm")]


def start_run(tmp_path: Path, *extra: str, backend: str = "sim:0.004") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "aip", "run", "synthetic:64x48", "-b", backend, "-b", backend,
         "--mode", "pull", "--frames", "100000", "--quiet", "--jsonl", str(tmp_path / "out.jsonl"),
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_lines(path: Path, count: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= count:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the run produced no results")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError):
                pass
    return found


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_drains_and_finalizes_the_sinks(tmp_path: Path, signum: int, code: int) -> None:
    import cv2

    proc = start_run(tmp_path, "--video", str(tmp_path / "out.mp4"))
    jsonl = tmp_path / "out.jsonl"
    wait_for_lines(jsonl, 50, proc)
    workers = children_of(proc.pid)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "draining" in stderr and "Traceback" not in stderr
    assert "throughput" in stdout  # the summary was printed
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [line["frame_id"] for line in lines] == list(range(len(lines)))  # none lost, in order
    capture = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    assert frames == len(lines)  # the mp4 was finalized, one frame per JSONL line
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    # Slow workers: the drain of the frames in flight takes seconds.
    proc = start_run(tmp_path, "--drain-timeout", "60", backend="sim:0.3")
    wait_for_lines(tmp_path / "out.jsonl", 4, proc)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 143


@pytest.mark.parametrize("delay_s", [0.8, 2.0])
def test_sigterm_while_starting_leaves_nothing_behind(tmp_path: Path, delay_s: float) -> None:
    """Before frames flow (workers spawning, loading, calibrating) SIGTERM stops
    everything that was started: no orphan worker or resource tracker, no segment."""
    from aip import segments
    from cli_checks import MARK, _processes_marked

    mark = f"sigterm-start-{delay_s}-{os.getpid()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "aip", "run", "synthetic:64x48", "-b", "sim:0.004", "-b", "sim:0.004",
         "--frames", "100000", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, MARK: mark})
    time.sleep(delay_s)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    # 143 from aip's handler; -15 if the signal came before Python had even loaded aip
    assert proc.returncode in (143, -signal.SIGTERM), err
    assert "Traceback" not in err, err
    deadline = time.monotonic() + 10
    while _processes_marked(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _processes_marked(mark), f"left running after SIGTERM: {_processes_marked(mark)}"
    assert not [s.name for s in segments.list_segments() if s.creator_pid == proc.pid]
