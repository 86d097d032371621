"""Many processes on one ring / table, under the spawn start method."""
from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from multiprocessing.context import SpawnProcess
from typing import Any

import numpy as np
import pytest

from aip.ring import ANY_WORKER, Closed, Empty, ResultRing, SlotTable

pytestmark = pytest.mark.stress

CTX = mp.get_context("spawn")
RECORD = np.dtype([("producer", "<u4"), ("seq", "<u4"), ("pad", "<u8")])
RECORDS_PER_PRODUCER = 100_000
JOIN_S = 60  # generous: a 2-core CI machine under load


@pytest.fixture
def processes() -> Iterator[list[SpawnProcess]]:
    """Started children; whatever a test leaves running is killed."""
    started: list[SpawnProcess] = []
    yield started
    for proc in started:
        if proc.is_alive():
            proc.kill()
        proc.join(JOIN_S)


def start(processes: list[SpawnProcess], target: Any, *args: Any) -> SpawnProcess:
    proc = CTX.Process(target=target, args=args, daemon=True)
    proc.start()
    processes.append(proc)
    return proc


def produce(ring_name: str, producer: int, count: int, progress: Any = None) -> None:
    ring = ResultRing.attach(ring_name)
    record = np.zeros((), RECORD)
    record["producer"] = producer
    for seq in range(count):
        record["seq"] = seq
        ring.put(record.tobytes(), timeout=JOIN_S)
        if progress is not None:
            progress.value = seq + 1  # after put returned: completed records
    ring.close()


def consume(ring: ResultRing, expected: int, idle_timeout: float) -> np.ndarray:
    """Read until ``expected`` records came, or nothing came for ``idle_timeout``."""
    received = np.zeros(expected, RECORD)
    got = 0
    while got < expected:
        n = ring.get_many(received[got:], timeout=idle_timeout)
        if n == 0:
            break
        got += n
    return received[:got]


def assert_exactly_once_in_order(received: np.ndarray, producers: int, count: int) -> None:
    for producer in range(producers):
        seqs = received["seq"][received["producer"] == producer]
        np.testing.assert_array_equal(seqs, np.arange(count, dtype=np.uint32))


@pytest.mark.parametrize("n_producers", [1, 2, 4])
def test_producers_deliver_exactly_once_in_order(
    processes: list[SpawnProcess], n_producers: int
) -> None:
    with ResultRing.create(capacity=1024, record_size=RECORD.itemsize, max_producers=4) as ring:
        for producer in range(n_producers):
            start(processes, produce, ring.name, producer, RECORDS_PER_PRODUCER)
        received = consume(ring, n_producers * RECORDS_PER_PRODUCER, idle_timeout=JOIN_S)
        for proc in processes:
            proc.join(JOIN_S)
            assert proc.exitcode == 0
        assert len(received) == n_producers * RECORDS_PER_PRODUCER
        assert_exactly_once_in_order(received, n_producers, RECORDS_PER_PRODUCER)
        assert len(ring) == 0


def test_producer_killed_midstream_loses_nothing_completed(processes: list[SpawnProcess]) -> None:
    with ResultRing.create(capacity=256, record_size=RECORD.itemsize, max_producers=2) as ring:
        progress = CTX.RawValue("Q", 0)
        doomed = start(processes, produce, ring.name, 0, 10**9, progress)
        survivor = start(processes, produce, ring.name, 1, 50_000)
        chunks = []
        deadline = time.monotonic() + JOIN_S
        while progress.value < 20_000 and time.monotonic() < deadline:
            out = np.zeros(512, RECORD)
            chunks.append(out[: ring.get_many(out, timeout=1.0)])
        time.sleep(random.uniform(0, 0.01))  # land the kill anywhere in a put
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.join(JOIN_S)
        completed = progress.value
        chunks.append(consume(ring, 10**7, idle_timeout=2.0))  # drain; must not hang
        received = np.concatenate(chunks)
        survivor.join(JOIN_S)
        assert survivor.exitcode == 0 and doomed.exitcode == -signal.SIGKILL

        dead = received["seq"][received["producer"] == 0]
        # every record put() returned for arrived, in order, exactly once; at
        # most the one record in flight at the kill arrived beyond that
        assert completed >= 20_000
        assert completed <= len(dead) <= completed + 1
        np.testing.assert_array_equal(dead, np.arange(len(dead), dtype=np.uint32))
        np.testing.assert_array_equal(
            received["seq"][received["producer"] == 1], np.arange(50_000, dtype=np.uint32)
        )
        with pytest.raises(Empty):
            ring.get(timeout=0.05)

        # the dead producer's lane is taken over by a newcomer
        newcomer = start(processes, produce, ring.name, 2, 10)
        late = consume(ring, 10, idle_timeout=JOIN_S)
        newcomer.join(JOIN_S)
        assert newcomer.exitcode == 0
        np.testing.assert_array_equal(late["seq"], np.arange(10, dtype=np.uint32))


def claim_until_closed(table_name: str, ring_name: str, worker: int, barrier: Any) -> None:
    table = SlotTable.attach(table_name)
    ring = ResultRing.attach(ring_name)
    record = np.zeros((), RECORD)
    record["producer"] = worker
    barrier.wait()
    try:
        while True:
            slot = table.claim(ANY_WORKER, worker, timeout=JOIN_S)
            record["seq"] = table.frame_id(slot)
            ring.put(record.tobytes(), timeout=JOIN_S)
            table.release(slot, worker)
    except Closed:
        pass
    ring.close()
    table.close()


def test_racing_claims_take_each_frame_exactly_once(processes: list[SpawnProcess]) -> None:
    n_workers, n_frames = 4, 20_000
    with SlotTable.create(n_slots=16, slot_bytes=8) as table, ResultRing.create(
        capacity=4096, record_size=RECORD.itemsize, max_producers=n_workers
    ) as ring:
        barrier = CTX.Barrier(n_workers + 1)
        for worker in range(n_workers):
            start(processes, claim_until_closed, table.name, ring.name, worker, barrier)
        # fill every slot first so that all workers race for the same READY slots
        for frame_id in range(table.n_slots):
            table.publish(table.acquire_free(timeout=0), frame_id)
        barrier.wait()
        received = []
        out = np.zeros(4096, RECORD)
        for frame_id in range(table.n_slots, n_frames):
            table.publish(table.acquire_free(timeout=JOIN_S), frame_id)
            received.append(out[: ring.get_many(out, timeout=0)].copy())
        while sum(map(len, received)) < n_frames:
            n = ring.get_many(out, timeout=JOIN_S)
            assert n, "workers stopped delivering"
            received.append(out[:n].copy())
        table.shutdown()
        for proc in processes:
            proc.join(JOIN_S)
            assert proc.exitcode == 0
        frames = np.sort(np.concatenate(received)["seq"])
        np.testing.assert_array_equal(frames, np.arange(n_frames, dtype=np.uint32))
        by_worker = np.bincount(np.concatenate(received)["producer"], minlength=n_workers)
        assert (by_worker > 0).sum() >= 2, f"no race happened: {by_worker}"


def claim_and_hang(table_name: str, worker: int, claimed: Any) -> None:
    table = SlotTable.attach(table_name)
    table.claim(ANY_WORKER, worker, timeout=JOIN_S)
    claimed.set()
    time.sleep(3600)


def test_dead_workers_slot_is_reclaimed(processes: list[SpawnProcess]) -> None:
    with SlotTable.create(n_slots=2, slot_bytes=8) as table:
        table.publish(table.acquire_free(timeout=0), 5, target=0)
        claimed = CTX.Event()
        proc = start(processes, claim_and_hang, table.name, 3, claimed)
        assert claimed.wait(JOIN_S)
        proc.kill()
        proc.join(JOIN_S)
        [(slot, frame_id)] = table.reclaim(3)
        assert frame_id == 5
        assert table.claim(0, 4, timeout=0) == slot  # re-hinted to ANY_WORKER
        table.release(slot, 4)


def wait_for_record(ring_name: str) -> None:
    ring = ResultRing.attach(ring_name)
    try:
        ring.get(timeout=None)
    except Closed:
        ring.close()
        return
    raise SystemExit(3)


def test_shutdown_wakes_a_blocked_consumer_in_another_process(
    processes: list[SpawnProcess],
) -> None:
    with ResultRing.create(capacity=4, record_size=8) as ring:
        proc = start(processes, wait_for_record, ring.name)
        time.sleep(0.5)  # let it block (the test holds whether or not it did)
        ring.shutdown()
        proc.join(JOIN_S)
        assert proc.exitcode == 0


@pytest.mark.skipif(sys.platform != "linux", reason="looks in /dev/shm")
def test_segment_of_a_killed_creator_is_cleaned_up() -> None:
    # A process of its own (not a multiprocessing child, which would share
    # this test's resource tracker): its tracker outlives it and unlinks.
    code = (
        "import os, signal\n"
        "from aip.ring import ResultRing\n"
        "ring = ResultRing.create(capacity=4, record_size=8)\n"
        "print(ring.name, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=JOIN_S
    )
    assert proc.returncode == -signal.SIGKILL
    name = proc.stdout.strip()
    assert name.startswith("aip_")
    deadline = time.monotonic() + JOIN_S
    while os.path.exists(f"/dev/shm/{name}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/dev/shm/{name}")


def put_through_inherited_handle(ring: ResultRing, producer: int, count: int) -> None:
    record = np.zeros((), RECORD)
    record["producer"] = producer
    for seq in range(count):
        record["seq"] = seq
        ring.put(record.tobytes(), timeout=JOIN_S)
    ring.close()  # must not give back the parent's lane


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_forked_child_takes_a_lane_of_its_own() -> None:
    import threading

    fork = mp.get_context("fork")
    with ResultRing.create(capacity=64, record_size=RECORD.itemsize, max_producers=2) as ring:
        record = np.zeros((), RECORD)
        ring.put(record.tobytes())  # the parent holds lane 0 now
        child = fork.Process(target=put_through_inherited_handle, args=(ring, 1, 5000))
        child.start()
        # a second handle consumes, in a thread, so that both producers keep flowing
        consumer = ResultRing.attach(ring.name)
        received: list[np.ndarray] = []
        reader = threading.Thread(
            target=lambda: received.append(consume(consumer, 10_000, idle_timeout=JOIN_S)))
        reader.start()
        for seq in range(1, 5000):
            record["seq"] = seq
            ring.put(record.tobytes(), timeout=JOIN_S)
        reader.join(JOIN_S)
        child.join(JOIN_S)
        consumer.close()
        assert child.exitcode == 0
        assert_exactly_once_in_order(received[0], 2, 5000)
        ring.put(record.tobytes())  # the parent still owns its lane
