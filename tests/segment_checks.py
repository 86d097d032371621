"""Which aip shared-memory segments a test left behind: its own process's, and
those of every process it started (pipeline workers, ``aip`` in a subprocess,
their children).

A segment's header names its creator (pid and start time). A segment that
appeared during a test is blamed on it when, once the test and its function
fixtures are torn down and a short grace period has passed:

- this process created it (a Pipeline or ring a test did not close);
- its creator still runs, started during the test, and is one of this
  session's processes: a descendant of this one, or a process that carries
  SESSION_MARK in its environment (an orphan whose parent died, re-parented
  away from us);
- or its creator is gone and had started during the test: nobody will ever
  unlink it (the resource tracker would have done so within the grace
  period). After its death a process cannot be tied to this session, so on
  a machine where another test session kills aip processes at the same
  moment, such a segment of theirs could be blamed here; one session alone
  is exact.

Segments made before the test (by module- or session-scoped fixtures, which
pytest sets up before any function fixture) are in the snapshot and never
count; processes older than the test (a fixture's server or cluster) are
not the test's either, whatever they create. Where there is no
``/dev/shm`` (macOS) nothing is listed and nothing is checked.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from aip import segments
from aip.segments import SegmentInfo

SESSION_MARK = "AIP_TEST_SESSION"  # set by tests/conftest.py for the session; subprocesses inherit it
GRACE_S = 2.0  # a creator that is exiting, a resource tracker about to unlink: given this long
POLL_S = 0.05
_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def boot_ticks() -> int:
    """Now, in the units of a segment's creator_start on Linux: clock ticks since boot."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * _TICKS_PER_S)


@dataclass(frozen=True)
class Snapshot:
    """The aip segments that exist when a test starts, and when that is."""

    names: frozenset[str]
    ticks: int  # boot_ticks() when taken

    @classmethod
    def take(cls) -> Snapshot:
        ticks = boot_ticks() if hasattr(time, "CLOCK_BOOTTIME") else 0
        return cls(frozenset(segment.name for segment in segments.list_segments()), ticks)


def _stat_field(pid: int, field: int) -> int | None:
    """Field ``field`` (numbered as in proc(5)) of /proc/PID/stat; None once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces, so count from the last ')', where field 3 starts
    return int(stat.rpartition(")")[2].split()[field - 3])


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in :func:`boot_ticks`' units (a segment's creator_start)."""
    return _stat_field(pid, 22)


def _marked(pid: int, mark: str) -> bool:
    try:
        environment = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{SESSION_MARK}={mark}".encode() in environment.split(b"\0")


def of_this_session(pid: int, mark: str) -> bool:
    """Whether the running process ``pid`` is this process's descendant or carries ``mark``."""
    me, ancestor = os.getpid(), pid
    for _ in range(64):  # deeper than any process tree a test makes
        ancestor = _stat_field(ancestor, 4) or 0  # its parent
        if ancestor == me:
            return True
        if ancestor <= 1:
            break
    return _marked(pid, mark)


def made_during(segment: SegmentInfo, since_ticks: int, mark: str) -> bool:
    """Whether ``segment`` (absent at the snapshot) was made by this session during the test."""
    if segment.creator_pid == os.getpid():
        return True
    if segment.state not in (segments.LIVE, segments.STALE) or segment.creator_pid is None:
        return False  # another user's, another namespace's, or not an aip header of ours
    if segment.creator_start is None or segment.creator_start < since_ticks:
        return False  # its creator is older than the test
    if segment.state == segments.LIVE:
        return of_this_session(segment.creator_pid, mark)
    return True  # a creator gone, started during the test: see the module docstring


def leaked_since(snapshot: Snapshot, mark: str) -> list[SegmentInfo]:
    """The segments made by this session since ``snapshot`` that still exist."""
    return [segment for segment in segments.list_segments()
            if segment.name not in snapshot.names and made_during(segment, snapshot.ticks, mark)]


def wait_for_leaks(snapshot: Snapshot, mark: str, grace_s: float = GRACE_S) -> list[SegmentInfo]:
    """:func:`leaked_since`, after giving exiting creators and resource trackers ``grace_s``."""
    deadline = time.monotonic() + grace_s
    while True:
        leaked = leaked_since(snapshot, mark)
        if not leaked or time.monotonic() >= deadline:
            return leaked
        time.sleep(POLL_S)


# A creator that leaves its segment behind as a killed resource tracker does:
# it creates a ring, takes it off its tracker's list, says its name and waits.
ORPHAN_MAKER = """
import sys, time
from multiprocessing import resource_tracker
from aip.ring import ResultRing
ring = ResultRing.create(capacity=16, record_size=64)
resource_tracker.unregister("/" + ring.name, "shared_memory")
print(ring.name, flush=True)
time.sleep(60)
"""


def orphan_segment() -> str:
    """The name of a ring whose creator was killed with its resource tracker: stale."""
    child = subprocess.Popen([sys.executable, "-c", ORPHAN_MAKER], stdout=subprocess.PIPE,
                             text=True, start_new_session=True)
    assert child.stdout is not None
    name = child.stdout.readline().strip()
    os.killpg(child.pid, signal.SIGKILL)  # the creator and its resource tracker
    child.wait(timeout=10)
    child.stdout.close()
    assert name.startswith("aip_") and (segments.SHM_DIR / name).exists()
    return name
