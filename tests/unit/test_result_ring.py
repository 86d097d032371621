"""ResultRing in one process: API, errors, roles, segment validation."""
from __future__ import annotations

import mmap
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from aip.ring import Closed, Empty, Full, NoLaneError, ResultRing, RingError, SlotTable

RECORD = np.dtype([("producer", "<u4"), ("seq", "<u4"), ("t_ns", "<i8")])


def rec(producer: int, seq: int) -> bytes:
    return np.array((producer, seq, 0), dtype=RECORD).tobytes()


@pytest.fixture
def ring() -> ResultRing:
    with ResultRing.create(capacity=8, record_size=RECORD.itemsize, max_producers=2) as r:
        yield r


def test_put_get_roundtrip_fifo(ring: ResultRing) -> None:
    for i in range(5):
        ring.put(rec(0, i))
    assert len(ring) == 5
    got = [np.frombuffer(ring.get(), RECORD)["seq"][0] for _ in range(5)]
    assert got == [0, 1, 2, 3, 4]
    assert len(ring) == 0


def test_full_and_empty(ring: ResultRing) -> None:
    with pytest.raises(Empty):
        ring.get_nowait()
    with pytest.raises(Empty):
        ring.get(timeout=0.02)
    for i in range(8):
        ring.put_nowait(rec(0, i))
    with pytest.raises(Full):
        ring.put_nowait(rec(0, 8))
    with pytest.raises(Full):
        ring.put(rec(0, 8), timeout=0.02)
    ring.get()
    ring.put_nowait(rec(0, 8))  # room again after one get
    assert len(ring) == 8


def test_wraparound_many_times(ring: ResultRing) -> None:
    out = np.empty(5, RECORD)
    expected = 0
    for i in range(100):
        ring.put(rec(0, i))
        if i % 3 == 2:
            n = ring.get_many(out, timeout=0)
            assert list(out["seq"][:n]) == list(range(expected, expected + n))
            expected += n
    while (n := ring.get_many(out, timeout=0)):
        assert list(out["seq"][:n]) == list(range(expected, expected + n))
        expected += n
    assert expected == 100


def test_get_many_into_structured_and_uint8(ring: ResultRing) -> None:
    producer2 = ResultRing.attach(ring.name)
    try:
        for i in range(3):
            ring.put(rec(0, i))
            producer2.put(rec(1, i))
        out = np.zeros(4, RECORD)
        n = ring.get_many(out, timeout=0)
        assert n == 4
        raw = np.zeros((4, RECORD.itemsize), np.uint8)
        m = ring.get_many(raw, timeout=0)
        assert m == 2
        both = np.concatenate([out[:n], raw[:m].copy().view(RECORD).ravel()])
        for producer in (0, 1):
            assert list(both["seq"][both["producer"] == producer]) == [0, 1, 2]
        assert ring.get_many(out, timeout=0) == 0
        assert ring.get_many(np.zeros(0, RECORD), timeout=None) == 0
    finally:
        producer2.close()


def test_record_size_and_buffer_errors(ring: ResultRing) -> None:
    with pytest.raises(ValueError, match="record is 3 bytes"):
        ring.put(b"abc")
    with pytest.raises(ValueError, match="whole number"):
        ring.get_many(bytearray(RECORD.itemsize + 1), timeout=0)
    with pytest.raises(BufferError):
        ring.get_many(bytes(RECORD.itemsize), timeout=0)  # read-only
    with pytest.raises(TypeError):
        ring.put(12345)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        ring.get(timeout=-1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"capacity": 3}, "power of two"),
        ({"capacity": 1}, "power of two"),
        ({"record_size": 0}, "record_size"),
        ({"max_producers": 0}, "max_producers"),
    ],
)
def test_create_argument_errors(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ResultRing.create(**kwargs)


def test_producer_lanes_are_bounded_and_released(ring: ResultRing) -> None:
    a, b, c = (ResultRing.attach(ring.name) for _ in range(3))
    try:
        a.put(rec(1, 0))
        b.put(rec(2, 0))
        with pytest.raises(NoLaneError, match="max_producers"):
            c.put(rec(3, 0))
        a.close()  # gives its lane back; its record stays readable
        c.put(rec(3, 0))
        got = sorted(np.frombuffer(ring.get(), RECORD)["producer"][0] for _ in range(3))
        assert got == [1, 2, 3]
    finally:
        for handle in (a, b, c):
            handle.close()


def test_one_consumer_at_a_time(ring: ResultRing) -> None:
    ring.put(rec(0, 0))
    ring.get()  # ring is now the consumer
    other = ResultRing.attach(ring.name)
    try:
        with pytest.raises(RingError, match="already has a consumer"):
            other.get_nowait()
        ring.close()  # gives the role back
        with pytest.raises(Empty):
            other.get_nowait()
    finally:
        other.close()


def test_shutdown_drains_then_closed(ring: ResultRing) -> None:
    ring.put(rec(0, 1))
    ring.shutdown()
    assert ring.is_shutdown
    with pytest.raises(Closed):
        ring.put(rec(0, 2))
    assert np.frombuffer(ring.get(), RECORD)["seq"][0] == 1
    with pytest.raises(Closed):
        ring.get(timeout=None)
    with pytest.raises(Closed):
        ring.get_many(np.zeros(2, RECORD), timeout=0)


def test_closed_handle_and_repr(ring: ResultRing) -> None:
    other = ResultRing.attach(ring.name)
    assert "capacity=8" in repr(other)
    other.close()
    assert other.closed and "closed" in repr(other)
    with pytest.raises(ValueError, match="closed"):
        other.put(rec(0, 0))
    with pytest.raises(ValueError, match="closed"):
        len(other)


@pytest.mark.skipif(sys.platform != "linux", reason="/dev/shm is Linux's")
def test_segment_is_owner_only(ring: ResultRing) -> None:
    mode = stat.S_IMODE(os.stat(f"/dev/shm/{ring.name}").st_mode)
    assert mode == 0o600


def test_attach_wrong_kind_is_value_error() -> None:
    with SlotTable.create(n_slots=2) as table, pytest.raises(ValueError, match="not an aip ResultRing"):
        ResultRing.attach(table.name)


@pytest.mark.skipif(sys.platform != "linux", reason="edits the segment through /dev/shm")
@pytest.mark.parametrize(
    "offset, value, match",
    [
        (0, b"JUNK", "not an aip ResultRing"),
        (4, (99).to_bytes(4, "little"), "layout version 99"),
        (8, (12345).to_bytes(8, "little"), "truncated or corrupt"),
    ],
)
def test_attach_corrupt_header_is_value_error(offset: int, value: bytes, match: str) -> None:
    with ResultRing.create(capacity=4, record_size=8) as ring:
        with open(f"/dev/shm/{ring.name}", "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
            m[offset : offset + len(value)] = value
        with pytest.raises(ValueError, match=match):
            ResultRing.attach(ring.name)


@pytest.mark.skipif(sys.platform != "linux", reason="makes a foreign segment in /dev/shm")
def test_attach_tiny_foreign_segment_is_value_error() -> None:
    path = Path("/dev/shm/aip_test_foreign")
    path.write_bytes(b"x" * 10)
    try:
        with pytest.raises(ValueError, match="too small"):
            ResultRing.attach(path.name)
    finally:
        path.unlink()


def test_attach_missing_is_file_not_found() -> None:
    with pytest.raises(FileNotFoundError):
        ResultRing.attach("aip_no_such_ring")


def test_random_names_differ() -> None:
    with ResultRing.create() as a, ResultRing.create() as b:
        assert a.name != b.name and a.name.startswith("aip_") and len(a.name) <= 30
