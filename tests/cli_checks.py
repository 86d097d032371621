"""``aip`` in a subprocess, as a new user runs it, and what its error must look like:
shared by the command-line error tests (unit: bad command lines; integration: bad files)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from aip import segments


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
