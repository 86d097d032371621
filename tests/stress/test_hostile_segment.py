"""A hostile process scribbles on the metadata of a SlotTable and a ResultRing
while another process uses them: that process never dies from a signal, and
every failure it sees is a Python exception of the ring's own kinds.

The hostile side is this test process; the user is a separate interpreter
that hammers every call of both structures (manager and worker roles, a
producer and the consumer, fresh attaches) with short timeouts.
"""
from __future__ import annotations

import json
import mmap
import subprocess
import sys
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aip.ring import ResultRing, SlotTable

pytestmark = [
    pytest.mark.stress,
    pytest.mark.skipif(sys.platform != "linux", reason="writes segments through /dev/shm"),
]

N_SLOTS = 6
SLOT_BYTES = 256
WAKE_WORDS = 4
N_LANES = 3
CAPACITY = 8
RECORD_SIZE = 24
USER_S = 0.4  # how long the user hammers while the hostile side writes

# Metadata regions, (start, length) in bytes, from include/aip_layout.h.
TABLE_REGIONS = {
    "segment header": (0, 64),
    "table header": (64, 128),
    "wake lines": (192, (WAKE_WORDS + 1) * 64),
    "slots": (192 + (WAKE_WORDS + 1) * 64, N_SLOTS * 64),
}
RING_REGIONS = {
    "segment header": (0, 64),
    "ring header": (64, 128),
    "lanes": (192, N_LANES * 128),
}

# Runs in the user process: every call of both structures, over and over.
# Exceptions are tallied by class; anything that is not the ring's own kind
# (or a timeout) is reported, and a signal would show in the return code.
USER = r"""
import json, sys, time
from aip._core import RingError, ResultRing, SlotTable

table_name, ring_name, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
EXPECTED = (RingError, TimeoutError, ValueError, IndexError)
seen, unexpected = {}, []
table = ring = None
record = bytes(range(24))
out = bytearray(24 * 8)

def call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except EXPECTED as exc:
        # Every error of the core names its segment (IndexError: a slot
        # number of ours that the table no longer has).
        if not isinstance(exc, IndexError) and "aip_" not in str(exc):
            unexpected.append(f"{type(exc).__name__} without the segment's name: {exc}")
        key = type(exc).__name__
        seen[key] = seen.get(key, 0) + 1
    except Exception as exc:
        unexpected.append(f"{type(exc).__name__}: {exc}")
    return None

def reopen():
    # Fresh handles when the segments still attach; else go on with the old.
    global table, ring
    new_table = call(SlotTable.attach, table_name)
    if new_table is not None:
        if table is not None:
            table.close()
        table = new_table
    new_ring = call(ResultRing.attach, ring_name)
    if new_ring is not None:
        if ring is not None:
            ring.close()
        ring = new_ring

reopen()
assert table is not None and ring is not None
print("ready", flush=True)
deadline = time.monotonic() + seconds
rounds = 0
while time.monotonic() < deadline:
    rounds += 1
    if rounds % 50 == 0:
        reopen()
    slot = call(table.acquire_free, timeout=0.001)
    if slot is not None:
        view = call(table.buffer, slot)
        if view is not None:
            view[:4] = b"abcd"
            view.release()
        call(table.publish, slot, rounds, rounds % 3)
    claimed = call(table.claim, rounds % 3, rounds % 3, timeout=0.001)
    if claimed is not None:
        call(table.release, claimed, rounds % 3)
    call(table.drop_oldest)
    call(table.reclaim, 2)
    call(table.retarget, 1, 0)
    call(table.counts)
    call(table.slot_info, rounds % 6)
    call(table.state, rounds % 6)
    call(lambda: table.is_shutdown)
    call(ring.put, record, timeout=0.001)
    call(ring.get, timeout=0.001)
    call(ring.get_many, out, timeout=0.001)
    call(len, ring)
    call(lambda: ring.is_shutdown)
reopen()
for handle in (table, ring):
    if handle is not None:
        handle.close()
print(json.dumps({"rounds": rounds, "seen": seen, "unexpected": unexpected}), flush=True)
"""

writes = st.lists(
    st.tuples(
        st.sampled_from(["table", "ring"]),
        st.integers(0, 10**6),  # picks a region and an offset in it
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=40,
)


def scribble(m: mmap.mmap, regions: dict[str, tuple[int, int]], where: int, data: bytes) -> None:
    start, length = list(regions.values())[where % len(regions)]
    offset = start + (where // len(regions)) % length
    m[offset : offset + len(data)] = data[: max(0, len(m) - offset)]


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(plan=writes)
def test_scribbled_metadata_never_kills_the_user(plan: list[tuple[str, int, bytes]]) -> None:
    with SlotTable.create(n_slots=N_SLOTS, slot_bytes=SLOT_BYTES, wake_words=WAKE_WORDS) as table, \
            ResultRing.create(capacity=CAPACITY, record_size=RECORD_SIZE, max_producers=N_LANES) as ring:
        user = subprocess.Popen(
            [sys.executable, "-c", USER, table.name, ring.name, str(USER_S)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            assert user.stdout is not None
            assert user.stdout.readline().strip() == "ready"
            with open(f"/dev/shm/{table.name}", "r+b") as tf, mmap.mmap(tf.fileno(), 0) as tm, \
                    open(f"/dev/shm/{ring.name}", "r+b") as rf, mmap.mmap(rf.fileno(), 0) as rm:
                pause = USER_S / (2 * len(plan))
                for target, where, data in plan:
                    if target == "table":
                        scribble(tm, TABLE_REGIONS, where, data)
                    else:
                        scribble(rm, RING_REGIONS, where, data)
                    time.sleep(pause)
            stdout, stderr = user.communicate(timeout=60)
        finally:
            if user.poll() is None:
                user.kill()
                user.wait()
        assert user.returncode == 0, f"user died (code {user.returncode}):\n{stderr}"
        report: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
        assert report["rounds"] > 0
        assert not report["unexpected"], report["unexpected"]
