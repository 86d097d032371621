"""SlotTable: every transition, every error, in one process."""
from __future__ import annotations

import numpy as np
import pytest

from aip.ring import ANY_WORKER, MAX_WORKER, Closed, SlotStateError, SlotTable, slot_arrays


@pytest.fixture
def table() -> SlotTable:
    with SlotTable.create(n_slots=4, slot_bytes=100) as t:
        yield t


def test_create_attach_share_payload(table: SlotTable) -> None:
    slot = table.acquire_free(timeout=0)
    table.buffer(slot)[:5] = b"hello"
    table.publish(slot, frame_id=41, target=2)
    other = SlotTable.attach(table.name)
    try:
        assert other.n_slots == 4 and other.slot_bytes == 100
        got = other.claim(2, worker=9, timeout=0)
        assert got == slot
        assert bytes(other.buffer(got)[:5]) == b"hello"
        assert other.frame_id(got) == 41
        other.release(got, worker=9)
    finally:
        other.close()
    assert table.counts() == {"FREE": 4, "WRITING": 0, "READY": 0, "READING": 0}


def test_full_cycle_fields_and_generation(table: SlotTable) -> None:
    slot = table.acquire_free(timeout=0)
    info = table.slot_info(slot)
    assert info["state"] == "WRITING" and info["generation"] == 1 and info["owner"] is None
    table.publish(slot, 7, target=1)
    info = table.slot_info(slot)
    assert (info["state"], info["frame_id"], info["target"]) == ("READY", 7, 1)
    assert info["t_publish_ns"] > 0
    assert table.claim(1, 3, timeout=0) == slot
    info = table.slot_info(slot)
    assert info["state"] == "READING" and info["owner"] == 3
    assert info["t_claim_ns"] >= info["t_publish_ns"]
    table.release(slot, 3)
    info = table.slot_info(slot)
    assert info["state"] == "FREE" and info["t_release_ns"] >= info["t_claim_ns"]
    # the next write of any slot is a new generation
    slot2 = table.acquire_free(timeout=0)
    assert table.slot_info(slot2)["generation"] >= 1


def test_claim_respects_hints_and_takes_oldest(table: SlotTable) -> None:
    for frame_id, hint in [(10, 0), (5, 1), (3, 0), (8, ANY_WORKER)]:
        table.publish(table.acquire_free(timeout=0), frame_id, hint)
    claimed = []
    while True:
        try:
            slot = table.claim(0, worker=1, timeout=0)
        except TimeoutError:
            break
        claimed.append(table.frame_id(slot))
    # backend 0 gets its own frames and the ANY_WORKER one, oldest first
    assert claimed == [3, 8, 10]
    slot = table.claim(ANY_WORKER, worker=2, timeout=0)  # ANY_WORKER claims anything
    assert table.frame_id(slot) == 5


def test_acquire_free_when_full_times_out(table: SlotTable) -> None:
    for _ in range(4):
        table.acquire_free(timeout=0)
    with pytest.raises(TimeoutError):
        table.acquire_free(timeout=0)
    with pytest.raises(TimeoutError):
        table.acquire_free(timeout=0.05)


def test_claim_timeout(table: SlotTable) -> None:
    with pytest.raises(TimeoutError):
        table.claim(0, worker=0, timeout=0)
    with pytest.raises(TimeoutError):
        table.claim(0, worker=0, timeout=0.05)


def test_wrong_state_transitions(table: SlotTable) -> None:
    slot = table.acquire_free(timeout=0)
    with pytest.raises(SlotStateError, match="not READING"):
        table.release(slot, 0)
    table.publish(slot, 1)
    with pytest.raises(SlotStateError, match="not WRITING"):
        table.publish(slot, 1)
    with pytest.raises(SlotStateError, match="not WRITING"):
        table.abort(slot)
    claimed = table.claim(ANY_WORKER, 4, timeout=0)
    with pytest.raises(SlotStateError, match="held by worker 4, not 5"):
        table.release(claimed, 5)


def test_abort_returns_slot(table: SlotTable) -> None:
    slot = table.acquire_free(timeout=0)
    table.abort(slot)
    assert table.state(slot) == 0
    assert table.counts()["FREE"] == 4


def test_drop_oldest_takes_unclaimed_frames_only(table: SlotTable) -> None:
    for frame_id in (4, 2, 9):
        table.publish(table.acquire_free(timeout=0), frame_id, target=frame_id % 2)
    held = table.claim(0, worker=1, timeout=0)  # claims frame 2 (hint 0, oldest)
    assert table.frame_id(held) == 2
    slot, dropped = table.drop_oldest()
    assert dropped == 4 and table.state(slot) == 1  # WRITING, ready to overwrite
    assert table.drop_oldest(target=0) is None  # frame 9 has hint 1
    slot, dropped = table.drop_oldest(target=1)
    assert dropped == 9
    assert table.drop_oldest() is None


def test_reclaim_rehints_and_makes_stale_release_fail(table: SlotTable) -> None:
    for frame_id in range(3):
        table.publish(table.acquire_free(timeout=0), frame_id, target=0)
    held = [table.claim(0, worker=7, timeout=0) for _ in range(2)]
    reclaimed = table.reclaim(7, target=1)
    assert sorted(f for _, f in reclaimed) == [0, 1]
    assert all(table.slot_info(s)["target"] == 1 for s in held)
    assert table.reclaim(7) == []
    # another worker takes the frame; the "dead" worker's late release fails
    again = table.claim(1, worker=8, timeout=0)
    assert again in held
    with pytest.raises(SlotStateError):
        table.release(again, 7)
    table.release(again, 8)


def test_index_and_argument_errors(table: SlotTable) -> None:
    with pytest.raises(IndexError):
        table.publish(4, 0)
    with pytest.raises(IndexError):
        table.buffer(-1)
    with pytest.raises(ValueError, match="worker"):
        table.claim(0, MAX_WORKER + 1, timeout=0)
    with pytest.raises(ValueError, match="timeout"):
        table.claim(0, 0, timeout=-1)
    with pytest.raises(ValueError, match="n_slots"):
        SlotTable.create(n_slots=0)
    with pytest.raises(ValueError, match="slot_bytes"):
        SlotTable.create(n_slots=1, slot_bytes=-1)


def test_shutdown_wakes_waiters_after_ready_frames(table: SlotTable) -> None:
    table.publish(table.acquire_free(timeout=0), 1)
    table.shutdown()
    assert table.is_shutdown
    slot = table.claim(ANY_WORKER, 0, timeout=0)  # what was READY still comes out
    table.release(slot, 0)
    with pytest.raises(Closed):
        table.claim(ANY_WORKER, 0, timeout=None)
    for _ in range(4):
        table.acquire_free(timeout=0)
    with pytest.raises(Closed):
        table.acquire_free(timeout=None)


def test_closed_handle_refuses(table: SlotTable) -> None:
    other = SlotTable.attach(table.name)
    other.close()
    other.close()  # idempotent
    assert other.closed
    with pytest.raises(ValueError, match="closed"):
        other.acquire_free(timeout=0)
    assert "closed" in repr(other)


def test_slot_arrays_are_zero_copy_views(table: SlotTable) -> None:
    arrays = slot_arrays(table, (10, 10), np.uint8)
    slot = table.acquire_free(timeout=0)
    arrays[slot][:] = 3
    assert bytes(table.buffer(slot)[:100]) == b"\x03" * 100
    with pytest.raises(ValueError, match="slots hold 100"):
        slot_arrays(table, (11, 10))
    del arrays


def test_attach_errors() -> None:
    with pytest.raises(FileNotFoundError):
        SlotTable.attach("aip_does_not_exist")
    with pytest.raises(ValueError, match="1-30 characters"):
        SlotTable.attach("a/b")
    with SlotTable.create(n_slots=1) as t, pytest.raises(FileExistsError):
        SlotTable.create(t.name, n_slots=1)


def test_retarget_moves_only_ready_frames_of_that_hint(table: SlotTable) -> None:
    for frame_id, hint in [(0, 2), (1, 2), (2, 1)]:
        table.publish(table.acquire_free(timeout=0), frame_id, hint)
    held = table.claim(2, worker=0, timeout=0)  # frame 0, READING: not moved
    assert table.retarget(2, 1) == 1
    assert table.retarget(2, 1) == 0
    claimed = sorted(table.frame_id(table.claim(1, worker=1, timeout=0)) for _ in range(2))
    assert claimed == [1, 2]
    assert table.slot_info(held)["target"] == 2


def test_take_back_only_an_unclaimed_frame_it_still_holds(table: SlotTable) -> None:
    slot = table.acquire_free(timeout=0)
    table.publish(slot, 41, 0)
    assert not table.take_back(slot, 40)  # another frame
    assert table.take_back(slot, 41)
    assert table.state(slot) == 1  # WRITING: the caller's to overwrite
    table.publish(slot, 42, 0)
    assert table.claim(0, 0, timeout=0) == slot
    assert not table.take_back(slot, 42)  # claimed: being served
    table.release(slot, 0)
    assert not table.take_back(slot, 42)  # FREE


def test_take_back_refuses_a_frame_claimed_and_reclaimed_since(table: SlotTable) -> None:
    slot = table.acquire_free(timeout=0)
    generation = table.publish(slot, 7, 0)
    table.claim(0, 3, timeout=0)
    table.reclaim(3)  # its worker died: READY again, a new generation
    assert not table.take_back(slot, 7, generation)  # it may have a result already
    assert table.take_back(slot, 7)  # without the generation: any unclaimed frame 7
    table.abort(slot)


def test_take_from_only_the_named_owner(table: SlotTable) -> None:
    slot = table.acquire_free(timeout=0)
    table.publish(slot, 9, 0)
    table.claim(0, 5, timeout=0)
    assert not table.take_from(slot, 6)
    assert table.take_from(slot, 5)
    assert table.state(slot) == 1  # WRITING: the manager's
    table.abort(slot)
    assert not table.take_from(slot, 5)
