"""Property test: the ResultRing behaves like one deque per producer."""
from __future__ import annotations

from collections import deque

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from aip.ring import Empty, Full, ResultRing

CAPACITY = 4
PRODUCERS = 3
RECORD = np.dtype([("producer", "<u4"), ("seq", "<u4")])


class RingAgainstDeques(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ring = ResultRing.create(
            capacity=CAPACITY, record_size=RECORD.itemsize, max_producers=PRODUCERS
        )
        self.producers = [ResultRing.attach(self.ring.name) for _ in range(PRODUCERS)]
        self.model: list[deque[int]] = [deque() for _ in range(PRODUCERS)]
        self.next_seq = [0] * PRODUCERS

    def _check_received(self, records: np.ndarray) -> None:
        for producer, seq in zip(records["producer"], records["seq"]):
            assert self.model[producer], f"got a record producer {producer} never put"
            assert self.model[producer].popleft() == seq, "per-producer order broken"

    @rule(producer=st.integers(0, PRODUCERS - 1))
    def put(self, producer: int) -> None:
        record = np.array((producer, self.next_seq[producer]), RECORD).tobytes()
        if len(self.model[producer]) == CAPACITY:
            try:
                self.producers[producer].put_nowait(record)
            except Full:
                return
            raise AssertionError("put into a full lane succeeded")
        self.producers[producer].put_nowait(record)
        self.model[producer].append(self.next_seq[producer])
        self.next_seq[producer] += 1

    @rule()
    def get_one(self) -> None:
        if not any(self.model):
            try:
                self.ring.get_nowait()
            except Empty:
                return
            raise AssertionError("get from an empty ring returned a record")
        self._check_received(np.frombuffer(self.ring.get_nowait(), RECORD))

    @rule(batch=st.integers(1, 2 * CAPACITY * PRODUCERS))
    def get_many(self, batch: int) -> None:
        out = np.zeros(batch, RECORD)
        n = self.ring.get_many(out, timeout=0)
        assert n == min(batch, sum(map(len, self.model)))
        self._check_received(out[:n])

    @precondition(lambda self: any(self.model))
    @rule()
    def drain(self) -> None:
        out = np.zeros(CAPACITY * PRODUCERS, RECORD)
        self._check_received(out[: self.ring.get_many(out, timeout=0)])
        assert not any(self.model)

    @invariant()
    def pending_matches(self) -> None:
        assert len(self.ring) == sum(map(len, self.model))

    def teardown(self) -> None:
        for producer in self.producers:
            producer.close()
        self.ring.close()
        self.ring.unlink()


RingAgainstDeques.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestRingAgainstDeques = RingAgainstDeques.TestCase
