"""The core against a corrupt segment, page-rounded sizes, closes from other
threads, forks, leaks, odd timeouts and recycled pids."""
from __future__ import annotations

import gc
import math
import mmap
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from aip.ring import (
    ANY_WORKER,
    Closed,
    CorruptSegmentError,
    ResultRing,
    RingError,
    SlotTable,
)

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="edits segments through /dev/shm")

# Offsets in the layouts of include/aip_layout.h (version 2).
SEG_TOTAL_SIZE = 8
SEG_CLOSED = 28
TABLE_N_SLOTS = 64
TABLE_N_WAKE = 68
TABLE_SLOT_BYTES = 72
TABLE_WAKE_OFFSET = 80
RING_CAPACITY = 64
RING_RECORD_SIZE = 68
RING_N_LANES = 72
RING_LANES_OFFSET = 192
LANE_BYTES = 128
LANE_TAIL = 0
LANE_OWNER_TOKEN = 8
LANE_OWNER_START = 16
LANE_HEAD = 64
JOIN_S = 30


@contextmanager
def raw(name: str) -> Iterator[mmap.mmap]:
    """The segment's bytes, as another process would see them."""
    with open(f"/dev/shm/{name}", "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        yield m


def poke(name: str, offset: int, value: int, size: int) -> None:
    with raw(name) as m:
        m[offset : offset + size] = value.to_bytes(size, "little")


def peek(name: str, offset: int, size: int) -> int:
    with raw(name) as m:
        return int.from_bytes(m[offset : offset + size], "little")


# ---- values read from the segment are checked ------------------------------


@linux_only
def test_impossible_slot_state_is_a_corrupt_segment_error() -> None:
    with SlotTable.create(n_slots=4, slot_bytes=8) as table:
        slots_offset = 192 + (table.wake_words + 1) * 64
        poke(table.name, slots_offset + 2 * 64, 0x77, 1)  # slot 2's state byte
        calls: list[Callable[[], Any]] = [
            lambda: table.claim(0, 0, timeout=0),
            table.counts,
            lambda: table.slot_info(2),
            lambda: table.state(2),
            lambda: table.drop_oldest(),
            lambda: table.reclaim(1),
            lambda: table.retarget(1, 2),
        ]
        for call in calls:
            with pytest.raises(CorruptSegmentError, match=f"{table.name}.*slot 2"):
                call()
        # acquire_free takes slots 0 and 1 before it reaches the corrupt one.
        assert [table.acquire_free(timeout=0), table.acquire_free(timeout=0)] == [0, 1]
        with pytest.raises(CorruptSegmentError, match="slot 2"):
            table.acquire_free(timeout=0)
        poke(table.name, slots_offset + 2 * 64, 0, 1)  # back to FREE
        assert table.acquire_free(timeout=0) == 2
        for slot in range(3):
            table.abort(slot)


@linux_only
@pytest.mark.parametrize("field, value", [("head", 10**6), ("tail", 10**6), ("head", 3)])
def test_lane_counters_out_of_range_are_a_corrupt_segment_error(field: str, value: int) -> None:
    with ResultRing.create(capacity=4, record_size=8, max_producers=2) as ring:
        ring.put(b"x" * 8)
        ring.put(b"y" * 8)  # tail 2, head 0
        offset = RING_LANES_OFFSET + (LANE_HEAD if field == "head" else LANE_TAIL)
        poke(ring.name, offset, value, 8)
        with pytest.raises(CorruptSegmentError, match=f"{ring.name}.*lane 0"):
            ring.get(timeout=0)
        with pytest.raises(CorruptSegmentError, match="lane 0"):
            len(ring)
        if field == "head" and value > 4:  # ahead of anything the producer will put
            with pytest.raises(CorruptSegmentError):
                for _ in range(8):  # the producer notices when it looks at head
                    ring.put(b"z" * 8, timeout=0)


@linux_only
@pytest.mark.parametrize(
    "offset, value, size",
    [
        (TABLE_N_SLOTS, 0, 4),
        (TABLE_N_SLOTS, 0xFFFFFFFF, 4),
        (TABLE_N_WAKE, 0, 4),
        (TABLE_N_WAKE, 1 << 30, 4),
        (TABLE_SLOT_BYTES, 1 << 62, 8),  # would overflow the layout arithmetic
        (TABLE_WAKE_OFFSET, 64, 8),
        (SEG_TOTAL_SIZE, 1 << 63, 8),
    ],
)
def test_attach_rejects_absurd_table_headers(offset: int, value: int, size: int) -> None:
    with SlotTable.create(n_slots=4, slot_bytes=100) as table:
        poke(table.name, offset, value, size)
        with pytest.raises(CorruptSegmentError, match=table.name):
            SlotTable.attach(table.name)


@linux_only
@pytest.mark.parametrize(
    "offset, value, size",
    [
        (RING_CAPACITY, 0, 4),
        (RING_CAPACITY, 3, 4),
        (RING_CAPACITY, 1 << 31, 4),
        (RING_RECORD_SIZE, 0, 4),
        (RING_RECORD_SIZE, 0xFFFFFFFF, 4),
        (RING_N_LANES, 0, 4),
        (RING_N_LANES, 1 << 20, 4),
        (80, 7, 8),  # cells_offset
    ],
)
def test_attach_rejects_absurd_ring_headers(offset: int, value: int, size: int) -> None:
    with ResultRing.create(capacity=8, record_size=16) as ring:
        poke(ring.name, offset, value, size)
        with pytest.raises(CorruptSegmentError, match=ring.name):
            ResultRing.attach(ring.name)


def test_create_rejects_what_attach_rejects() -> None:
    with pytest.raises(ValueError, match="slot_bytes"):
        SlotTable.create(n_slots=1, slot_bytes=1 << 40)
    with pytest.raises(ValueError, match="wake_words"):
        SlotTable.create(n_slots=1, wake_words=0)
    with pytest.raises(ValueError, match="more than"):
        ResultRing.create(capacity=1 << 30, record_size=1 << 20, max_producers=4)


# ---- page-rounded sizes ------------------------------------------------------


@linux_only
def test_attach_accepts_a_segment_larger_than_its_layout() -> None:
    # macOS reports a shm segment's size rounded up to its page (16 KiB on
    # Apple silicon): attach must take the larger file and map the layout.
    with SlotTable.create(n_slots=2, slot_bytes=100) as table, ResultRing.create(
        capacity=4, record_size=8
    ) as ring:
        for name in (table.name, ring.name):
            size = os.stat(f"/dev/shm/{name}").st_size
            os.truncate(f"/dev/shm/{name}", size + 16384 + 123)
        other_table = SlotTable.attach(table.name)
        other_ring = ResultRing.attach(ring.name)
        try:
            slot = table.acquire_free(timeout=0)
            table.buffer(slot)[:3] = b"abc"
            table.publish(slot, 9, 0)
            claimed = other_table.claim(0, 1, timeout=0)
            assert bytes(other_table.buffer(claimed)[:3]) == b"abc"
            other_table.release(claimed, 1)
            other_ring.put(b"12345678")
            assert ring.get(timeout=0) == b"12345678"
        finally:
            other_table.close()
            other_ring.close()


@linux_only
def test_attach_rejects_a_truncated_segment() -> None:
    with SlotTable.create(n_slots=2, slot_bytes=4096) as table:
        os.truncate(f"/dev/shm/{table.name}", 4096)
        with pytest.raises(CorruptSegmentError, match="truncated or corrupt"):
            SlotTable.attach(table.name)


# ---- timeouts ------------------------------------------------------------------


def test_timeouts_nan_inf_and_huge() -> None:
    with SlotTable.create(n_slots=1) as table, ResultRing.create(capacity=2, record_size=8) as ring:
        for call in (
            lambda t: table.claim(0, 0, timeout=t),
            lambda t: ring.get(timeout=t),
        ):
            with pytest.raises(ValueError, match="timeout"):
                call(math.nan)
            with pytest.raises(ValueError, match="timeout"):
                call(-1.0)
        # inf and absurdly long timeouts mean "forever": a shutdown ends them.
        outcomes: list[BaseException | None] = []
        waiters = []
        for timeout in (math.inf, 1e300, 2.0**70):

            def wait(t: float = timeout) -> None:
                try:
                    table.claim(0, 0, timeout=t)
                    outcomes.append(None)
                except BaseException as exc:  # noqa: BLE001 - recorded, checked below
                    outcomes.append(exc)

            waiters.append(threading.Thread(target=wait))
            waiters[-1].start()
            wait_until(lambda n=len(waiters): table.blocked_calls == n)
        table.shutdown()
        for waiter in waiters:
            waiter.join(JOIN_S)
        assert len(outcomes) == 3 and all(isinstance(o, Closed) for o in outcomes), outcomes


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + JOIN_S
    while not condition():
        assert time.monotonic() < deadline, "condition never came true"
        time.sleep(0.005)


# ---- close while another thread is blocked ------------------------------------


def blocked_call_wakes_with_closed(handle: SlotTable | ResultRing, call: Callable[[], Any]) -> None:
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - recorded, checked below
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    wait_until(lambda: handle.blocked_calls == 1)
    handle.close()
    assert handle.closed  # at once, for every new call
    thread.join(JOIN_S)
    assert not thread.is_alive()
    assert isinstance(outcome[0], Closed), outcome
    assert handle.blocked_calls == 0
    assert "closed" in repr(handle)
    with pytest.raises(ValueError, match="closed"):
        _ = handle.is_shutdown


def test_close_wakes_a_blocked_claim_with_closed() -> None:
    with SlotTable.create(n_slots=2) as table:
        other = SlotTable.attach(table.name)
        blocked_call_wakes_with_closed(other, lambda: other.claim(0, 0, timeout=JOIN_S))
        # the creator's handle is untouched
        slot = table.acquire_free(timeout=0)
        table.publish(slot, 1, 0)
        assert table.claim(0, 0, timeout=0) == slot
        table.release(slot, 0)


def test_close_wakes_a_blocked_acquire_free_with_closed() -> None:
    with SlotTable.create(n_slots=1) as table:
        other = SlotTable.attach(table.name)
        other.acquire_free(timeout=0)
        blocked_call_wakes_with_closed(other, lambda: other.acquire_free(timeout=JOIN_S))


def test_close_wakes_a_blocked_get_and_put_with_closed() -> None:
    with ResultRing.create(capacity=2, record_size=8) as ring:
        consumer = ResultRing.attach(ring.name)
        blocked_call_wakes_with_closed(consumer, lambda: consumer.get(timeout=JOIN_S))
        producer = ResultRing.attach(ring.name)
        producer.put(b"a" * 8)
        producer.put(b"b" * 8)  # full
        blocked_call_wakes_with_closed(producer, lambda: producer.put(b"c" * 8, timeout=JOIN_S))
        # the closed producer gave its lane back; its records stay readable
        assert [ring.get(timeout=0), ring.get(timeout=0)] == [b"a" * 8, b"b" * 8]


# ---- small correctness items ---------------------------------------------------


def test_release_stamps_only_after_it_owns_the_release() -> None:
    with SlotTable.create(n_slots=1) as table:
        slot = table.acquire_free(timeout=0)
        table.publish(slot, 1, 0)
        assert table.claim(0, 7, timeout=0) == slot
        before = table.slot_info(slot)["t_release_ns"]
        with pytest.raises(RingError):
            table.release(slot, 8)  # not the owner
        assert table.slot_info(slot)["t_release_ns"] == before
        table.release(slot, 7)
        assert table.slot_info(slot)["t_release_ns"] > before


def test_reclaim_bumps_the_generation() -> None:
    with SlotTable.create(n_slots=1) as table:
        slot = table.acquire_free(timeout=0)
        table.publish(slot, 1, 0)
        table.claim(0, 3, timeout=0)
        generation = table.slot_info(slot)["generation"]
        assert table.reclaim(3) == [(slot, 1)]
        assert table.slot_info(slot)["generation"] == generation + 1


def test_an_unclosed_handle_warns_when_collected() -> None:
    with SlotTable.create(n_slots=1) as table, ResultRing.create(capacity=2, record_size=8) as ring:
        for handle_class, name in ((SlotTable, table.name), (ResultRing, ring.name)):
            handle = handle_class.attach(name)  # type: ignore[attr-defined]
            with pytest.warns(ResourceWarning, match="unclosed"):
                del handle
                gc.collect()


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_a_forked_child_never_unlinks_its_parents_segment() -> None:
    with SlotTable.create(n_slots=1) as table, ResultRing.create(capacity=2, record_size=8) as ring:
        pid = os.fork()  # no threads run here: fork is safe
        if pid == 0:  # the child leaves both with blocks, as the parent would
            code = 0
            try:
                table.__exit__(None, None, None)
                ring.__exit__(None, None, None)
            except BaseException:  # noqa: BLE001 - the exit code says it
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        SlotTable.attach(table.name).close()
        ResultRing.attach(ring.name).close()


# ---- who holds a role: pid plus process start time ------------------------------


def process_start(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[19])


@linux_only
def test_a_recycled_pid_does_not_keep_a_lane() -> None:
    with ResultRing.create(capacity=2, record_size=8, max_producers=1) as ring:
        lane = RING_LANES_OFFSET
        # A lane held by a live process (pid 1) that is not the one that took
        # it: its start time differs, so the holder is dead and pid 1 is a
        # newcomer with a recycled number.
        poke(ring.name, lane + LANE_OWNER_TOKEN, (1 << 32) | 5, 8)
        poke(ring.name, lane + LANE_OWNER_START, process_start(1) + 1, 8)
        producer = ResultRing.attach(ring.name)
        producer.put(b"p" * 8)  # took the lane over
        assert peek(ring.name, lane + LANE_OWNER_TOKEN, 8) >> 32 == os.getpid()
        assert peek(ring.name, lane + LANE_OWNER_START, 8) == process_start(os.getpid())
        producer.close()
        # The same pid with its real start time is alive: the lane stays its own.
        poke(ring.name, lane + LANE_OWNER_TOKEN, (1 << 32) | 5, 8)
        poke(ring.name, lane + LANE_OWNER_START, process_start(1), 8)
        producer = ResultRing.attach(ring.name)
        with pytest.raises(RingError, match="held by live producers"):
            producer.put(b"q" * 8)
        producer.close()
        poke(ring.name, lane + LANE_OWNER_TOKEN, 0, 8)


@linux_only
def test_attach_refuses_a_ring_of_another_pid_namespace() -> None:
    with ResultRing.create(capacity=2, record_size=8) as ring:
        poke(ring.name, 40, peek(ring.name, 40, 8) + 1, 8)
        with pytest.raises(RingError, match="PID namespace"):
            ResultRing.attach(ring.name)


@linux_only
def test_shutdown_flag_garbage_reads_as_shut_down() -> None:
    with SlotTable.create(n_slots=1) as table:
        poke(table.name, SEG_CLOSED, 0xDEADBEEF, 4)
        assert table.is_shutdown
        with pytest.raises(Closed):
            table.claim(ANY_WORKER, 0, timeout=1)


@linux_only
def test_segments_record_their_creators_pid_and_start_time() -> None:
    from aip._core._segment import process_alive, process_start

    with SlotTable.create(n_slots=1) as table:
        pid, start = peek(table.name, 24, 4), peek(table.name, 48, 8)
        assert pid == os.getpid() and start == process_start(os.getpid()) != 0
        assert process_alive(pid, start)
        assert not process_alive(pid, start + 1)  # the same pid, another process
