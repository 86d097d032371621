"""The segment-leak check every test runs (tests/segment_checks.py): what it blames on a
test, and what it leaves to others."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from aip import segments
from aip.ring import ResultRing
from segment_checks import (
    SESSION_MARK,
    Snapshot,
    boot_ticks,
    leaked_since,
    of_this_session,
    orphan_segment,
    start_ticks,
    wait_for_leaks,
)

pytestmark = pytest.mark.skipif(not segments.SHM_DIR.is_dir(), reason="needs /dev/shm (Linux)")

# Makes a ring when told to (a line on stdin), says its name, and keeps it until stdin closes.
RING_ON_REQUEST = """
import sys
from aip.ring import ResultRing
sys.stdin.readline()
with ResultRing.create(capacity=16, record_size=64) as ring:
    print(ring.name, flush=True)
    sys.stdin.read()
"""


def leaked_names(snapshot: Snapshot) -> set[str]:
    return {segment.name for segment in leaked_since(snapshot, os.environ[SESSION_MARK])}


def test_a_ring_of_this_process_counts_until_it_is_closed() -> None:
    with ResultRing.create(capacity=16, record_size=64) as kept:
        snapshot = Snapshot.take()
        with ResultRing.create(capacity=16, record_size=64) as made:
            assert leaked_names(snapshot) == {made.name}  # the one made before is the snapshot's
        assert kept.name not in leaked_names(snapshot)
    assert leaked_names(snapshot) == set()


def test_the_segment_a_killed_subprocess_left_counts_until_it_is_removed() -> None:
    snapshot = Snapshot.take()
    name = orphan_segment()
    try:
        assert leaked_names(snapshot) == {name}
    finally:
        (segments.SHM_DIR / name).unlink(missing_ok=True)
    assert wait_for_leaks(snapshot, os.environ[SESSION_MARK], grace_s=0) == []


def test_a_segment_a_subprocess_keeps_counts_until_the_subprocess_lets_it_go() -> None:
    snapshot = Snapshot.take()
    with subprocess.Popen([sys.executable, "-c", RING_ON_REQUEST], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as child:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("make\n")
        child.stdin.flush()
        name = child.stdout.readline().strip()
        assert leaked_names(snapshot) == {name}  # alive, and this session's
        child.stdin.close()
    assert wait_for_leaks(snapshot, os.environ[SESSION_MARK]) == []


def test_a_segment_of_a_process_older_than_the_test_is_not_the_tests() -> None:
    """A fixture's server started before the test, making a segment during it."""
    server = subprocess.Popen([sys.executable, "-c", RING_ON_REQUEST], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert server.stdin is not None and server.stdout is not None
    try:
        started = start_ticks(server.pid)
        assert started is not None
        while boot_ticks() <= started:  # the clock's ticks are coarse: let one pass
            time.sleep(0.01)
        snapshot = Snapshot.take()
        server.stdin.write("make\n")
        server.stdin.flush()
        name = server.stdout.readline().strip()
        assert (segments.SHM_DIR / name).exists()
        assert name not in leaked_names(snapshot)
    finally:
        server.stdin.close()
        server.wait(timeout=30)
        server.stdout.close()


def test_this_sessions_processes_are_its_descendants_and_those_that_carry_its_mark() -> None:
    mark = os.environ[SESSION_MARK]
    code = "import sys; sys.stdin.read()"
    with subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE) as child:
        assert of_this_session(child.pid, mark)
        assert child.stdin is not None
        child.stdin.close()
    assert not of_this_session(os.getppid(), mark)  # what started pytest
    assert not of_this_session(os.getppid(), "another session")
