"""``python -m aip.bench ring``: aip's rings against the usual IPC mechanisms.

Messages: 64-byte records from 1 or 2 producer processes to 1 consumer
process, all started with ``spawn``. Throughput: each producer sends as fast
as it can, the consumer times first-to-last. Latency: producers send at a
paced 5,000 msgs/s in total, each record stamped with ``perf_counter_ns``
(CLOCK_MONOTONIC, the same clock in every process); the consumer takes the
difference on arrival.

Frames: 640x480x3 uint8 frames from a writer to a worker process that claims
each one zero-copy and hands it back (a null worker), through aip's SlotTable,
through a shared-memory slot plus slot index sent over a Pipe (and freed slot
indexes sent back), and through an in-process ``np.copyto`` of the same frames
into the same number of buffers.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from aip.bench.report import format_table, percentiles_us, publish, suite_parser
from aip.ring import HINT_ANY, Empty, ResultRing, SlotTable, slot_arrays

CTX = mp.get_context("spawn")
MSG_SIZE = 64
# Each record: send time, producer, sequence, padding to 64 bytes.
MSG = np.dtype([("t_ns", "<i8"), ("producer", "<u4"), ("seq", "<u4"), ("pad", "V48")])
PACED_RATE = 5000  # msgs/s in total, as the targets are stated
PACED_SECONDS = 2.0
FRAME_SHAPE = (480, 640, 3)
FRAME_SLOTS = 8
TIMEOUT_S = 120


def stamp(producer: int, seq: int) -> bytes:
    record = np.zeros((), MSG)
    record["t_ns"] = time.perf_counter_ns()
    record["producer"] = producer
    record["seq"] = seq
    return record.tobytes()


def pace(start_ns: int, index: int, period_ns: int) -> None:
    """Wait until ``start + index * period``: sleep most of it, spin the end.

    time.sleep overshoots by ~60 us here; spinning only the last 150 us keeps
    the schedule tight without a producer eating a core.
    """
    due = start_ns + index * period_ns
    left = due - time.perf_counter_ns()
    if left > 150_000:
        time.sleep((left - 150_000) / 1e9)
    while time.perf_counter_ns() < due:
        pass


# ---- mechanisms: producer and consumer ends of each ----------------------


@dataclass
class Mechanism:
    name: str
    messages: int  # per producer, in throughput mode
    setup: Callable[[int], Any]  # producers -> picklable endpoint description
    cleanup: Callable[[Any], None] = lambda endpoint: None
    notes: list[str] = field(default_factory=list)


def _aip_setup(producers: int) -> Any:
    ring = ResultRing.create(capacity=4096, record_size=MSG_SIZE, max_producers=producers)
    return ring  # the handle itself stays here; children attach by name


def _aip_cleanup(ring: ResultRing) -> None:
    ring.close()
    ring.unlink()


def _queue_setup(producers: int) -> Any:
    return CTX.Queue(maxsize=4096)


def _pipe_setup(producers: int) -> Any:
    return CTX.Pipe(duplex=False)


def _faster_fifo_setup(producers: int) -> Any:
    import faster_fifo

    return faster_fifo.Queue(max_size_bytes=4096 * (MSG_SIZE + 16))


def _zmq_setup(producers: int) -> Any:
    return f"ipc://{tempfile.gettempdir()}/aip-bench-{os.getpid()}-{time.monotonic_ns()}"


def _zmq_cleanup(endpoint: str) -> None:
    path = endpoint.removeprefix("ipc://")
    if os.path.exists(path):
        os.unlink(path)


def available_mechanisms() -> list[Mechanism]:
    mechanisms = [
        Mechanism("aip.ResultRing", 2_000_000, _aip_setup, _aip_cleanup),
        Mechanism("multiprocessing.Queue", 150_000, _queue_setup),
        Mechanism("multiprocessing.Pipe", 300_000, _pipe_setup),
    ]
    try:
        import faster_fifo  # noqa: F401

        mechanisms.append(Mechanism("faster_fifo", 150_000, _faster_fifo_setup))
    except ImportError:
        pass
    try:
        import zmq  # noqa: F401

        mechanisms.append(Mechanism("pyzmq", 600_000, _zmq_setup, _zmq_cleanup))
    except ImportError:
        pass
    return mechanisms


def _endpoint_for_child(name: str, endpoint: Any) -> Any:
    return endpoint.name if name == "aip.ResultRing" else endpoint


class _Sender:
    """The producer end of one mechanism, in a child process."""

    def __init__(self, name: str, endpoint: Any) -> None:
        self.name = name
        if name == "aip.ResultRing":
            ring = ResultRing.attach(endpoint)
            self.send: Callable[[bytes], None] = ring.put
            self.close: Callable[[], None] = ring.close
        elif name == "multiprocessing.Queue":
            self.send, self.close = endpoint.put, lambda: None
        elif name == "multiprocessing.Pipe":
            self.send, self.close = endpoint[1].send_bytes, lambda: None
        elif name == "faster_fifo":
            self.send, self.close = endpoint.put, lambda: None
        else:
            import zmq

            context = zmq.Context()
            socket = context.socket(zmq.PUSH)
            socket.connect(endpoint)
            self.send = socket.send

            def close() -> None:
                socket.close(linger=-1)  # deliver what is queued, then stop
                context.term()

            self.close = close


class _Receiver:
    """The consumer end: ``receive()`` returns a batch of raw records."""

    def __init__(self, name: str, endpoint: Any) -> None:
        self.name = name
        self.close: Callable[[], None] = lambda: None
        if name == "aip.ResultRing":
            ring = ResultRing.attach(endpoint)
            out = np.zeros(512, MSG)
            raw = out.view(np.uint8).reshape(512, MSG_SIZE)

            def receive() -> Any:
                n = ring.get_many(out, timeout=TIMEOUT_S)
                return raw[:n]

            self.receive = receive
            self.close = ring.close
        elif name == "multiprocessing.Queue":
            self.receive = lambda: (endpoint.get(timeout=TIMEOUT_S),)
        elif name == "multiprocessing.Pipe":
            self.receive = lambda: (endpoint[0].recv_bytes(),)
        elif name == "faster_fifo":
            self.receive = lambda: endpoint.get_many(timeout=TIMEOUT_S, max_messages_to_get=512)
        else:
            import zmq

            context = zmq.Context()
            socket = context.socket(zmq.PULL)
            socket.bind(endpoint)
            self.receive = lambda: (socket.recv(),)

            def close() -> None:
                socket.close(linger=0)
                context.term()

            self.close = close


def _produce(name: str, endpoint: Any, producer: int, count: int, paced_period_ns: int,
             ready: Any, go: Any, done: Any) -> None:
    sender = _Sender(name, endpoint)
    payload = stamp(producer, 0)
    ready.release()
    go.wait()
    if paced_period_ns:
        start = time.perf_counter_ns()
        for seq in range(count):
            pace(start, seq, paced_period_ns)
            sender.send(stamp(producer, seq))
    else:
        send = sender.send
        for _ in range(count):
            send(payload)
    # Close only once everything arrived: zmq may drop what is still queued
    # on the receiving side when its sender disconnects.
    done.wait(TIMEOUT_S)
    sender.close()


def _consume(name: str, endpoint: Any, total: int, paced: bool, ready: Any, go: Any,
             results: Any, done: Any) -> None:
    receiver = _Receiver(name, endpoint)
    latencies = np.zeros(total if paced else 0, np.int64)
    ready.release()
    go.wait()
    # Timed from the start signal to the last record, so that records that
    # pile up in a buffer before the consumer looks are not free.
    first = last = time.perf_counter_ns()
    got = 0
    while got < total:
        batch = receiver.receive()
        now = time.perf_counter_ns()
        if paced:
            for record in batch:
                latencies[got] = now - int.from_bytes(bytes(record[:8]), "little", signed=True)
                got += 1
        else:
            got += len(batch)
        last = now
    done.set()
    receiver.close()
    results.put((got, last - first, latencies))


def run_messages(mechanism: Mechanism, producers: int, paced: bool) -> dict[str, Any]:
    endpoint = mechanism.setup(producers)
    child_endpoint = _endpoint_for_child(mechanism.name, endpoint)
    per_producer = int(PACED_RATE * PACED_SECONDS / producers) if paced else mechanism.messages
    period_ns = int(1e9 * producers / PACED_RATE) if paced else 0
    total = per_producer * producers
    ready, go, done, results = CTX.Semaphore(0), CTX.Event(), CTX.Event(), CTX.Queue()
    consumer = CTX.Process(target=_consume, args=(mechanism.name, child_endpoint, total, paced,
                                                  ready, go, results, done))
    consumer.start()
    ready.acquire(timeout=TIMEOUT_S)  # the consumer binds first (zmq), then producers connect
    children = [
        CTX.Process(target=_produce, args=(mechanism.name, child_endpoint, p, per_producer,
                                           period_ns, ready, go, done))
        for p in range(producers)
    ]
    try:
        for child in children:
            child.start()
        for _ in children:
            ready.acquire(timeout=TIMEOUT_S)
        go.set()
        got, elapsed_ns, latencies = results.get(timeout=TIMEOUT_S)
    finally:
        for proc in (*children, consumer):
            proc.join(TIMEOUT_S)
            if proc.is_alive():
                proc.kill()
                proc.join()
        mechanism.cleanup(endpoint)
    row: dict[str, Any] = {"mechanism": mechanism.name, "producers": producers}
    if paced:
        # drop the first 5 %: connection set-up and first-touch page faults
        row["p50_us"], row["p99_us"] = percentiles_us(latencies[total // 20:])
    else:
        row["msgs_per_s"] = got / (elapsed_ns / 1e9)
    return row


def _idle_consumer(ring_name: str, seconds: float, results: Any) -> None:
    ring = ResultRing.attach(ring_name)
    try:
        # One-time work is not idling: the consumer role, and a first
        # blocking call (its first futex wait costs tens of ms of set-up).
        ring.get(timeout=0.2)
    except Empty:
        pass
    # process_time reads the scheduler's exact runtime; getrusage is
    # tick-sampled and charges a whole tick to a process that wakes on one.
    cpu_start, start = time.process_time(), time.perf_counter()
    try:
        ring.get(timeout=seconds)
    except Empty:
        pass
    cpu = time.process_time() - cpu_start
    wall = time.perf_counter() - start
    ring.close()
    results.put(100.0 * cpu / wall)


def idle_consumer_cpu_pct(seconds: float = 3.0) -> float:
    """CPU of a consumer blocked on an empty ResultRing, % of one core."""
    with ResultRing.create(capacity=16, record_size=MSG_SIZE) as ring:
        results = CTX.Queue()
        proc = CTX.Process(target=_idle_consumer, args=(ring.name, seconds, results))
        proc.start()
        value = float(results.get(timeout=TIMEOUT_S))
        proc.join(TIMEOUT_S)
    return value


# ---- frames ---------------------------------------------------------------


def _source_frames() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, FRAME_SHAPE, dtype=np.uint8) for _ in range(4)]


def _null_worker_slot_table(name: str, count: int) -> None:
    table = SlotTable.attach(name)
    frames = slot_arrays(table, FRAME_SHAPE)
    checksum = 0
    for _ in range(count):
        slot = table.claim(HINT_ANY, 0, timeout=TIMEOUT_S)
        checksum += int(frames[slot][0, 0, 0])  # touch it: a zero-copy read
        table.release(slot, 0)
    del frames
    table.close()


def frames_slot_table(count: int) -> float:
    source = _source_frames()
    with SlotTable.create(n_slots=FRAME_SLOTS, slot_bytes=int(np.prod(FRAME_SHAPE))) as table:
        frames = slot_arrays(table, FRAME_SHAPE)
        for frame in frames:  # first touch outside the timing, as for the other two
            frame.fill(0)
        worker = CTX.Process(target=_null_worker_slot_table, args=(table.name, count))
        worker.start()
        time.sleep(0.5)  # the worker's start-up is not what is measured
        start = time.perf_counter()
        for i in range(count):
            slot = table.acquire_free(timeout=TIMEOUT_S)
            np.copyto(frames[slot], source[i % len(source)])
            table.publish(slot, i, HINT_ANY)
        worker.join(TIMEOUT_S)
        elapsed = time.perf_counter() - start
        del frames
    return count / elapsed


def _null_worker_shm_pipe(shm_name: str, ready_end: Any, free_end: Any, count: int) -> None:
    shm = shared_memory.SharedMemory(shm_name)
    frames = np.ndarray((FRAME_SLOTS, *FRAME_SHAPE), np.uint8, buffer=shm.buf)
    checksum = 0
    for _ in range(count):
        slot = int.from_bytes(ready_end.recv_bytes(), "little")
        checksum += int(frames[slot, 0, 0, 0])
        free_end.send_bytes(slot.to_bytes(4, "little"))
    del frames
    shm.close()


def frames_shm_pipe(count: int) -> float:
    """The seed's own recommendation: a shm slot, its index over a Pipe."""
    source = _source_frames()
    shm = shared_memory.SharedMemory(create=True, size=FRAME_SLOTS * int(np.prod(FRAME_SHAPE)))
    try:
        frames = np.ndarray((FRAME_SLOTS, *FRAME_SHAPE), np.uint8, buffer=shm.buf)
        frames.fill(0)
        ready_recv, ready_send = CTX.Pipe(duplex=False)
        free_recv, free_send = CTX.Pipe(duplex=False)
        worker = CTX.Process(target=_null_worker_shm_pipe,
                             args=(shm.name, ready_recv, free_send, count))
        worker.start()
        time.sleep(0.5)
        free = list(range(FRAME_SLOTS))
        start = time.perf_counter()
        for i in range(count):
            if not free:
                free.append(int.from_bytes(free_recv.recv_bytes(), "little"))
            slot = free.pop()
            np.copyto(frames[slot], source[i % len(source)])
            ready_send.send_bytes(slot.to_bytes(4, "little"))
        for _ in range(FRAME_SLOTS - len(free)):
            free_recv.recv_bytes()  # wait until the worker is done with all
        elapsed = time.perf_counter() - start
        worker.join(TIMEOUT_S)
        del frames
    finally:
        shm.close()
        shm.unlink()
    return count / elapsed


def frames_copyto(count: int) -> float:
    source = _source_frames()
    buffers = [np.zeros(FRAME_SHAPE, np.uint8) for _ in range(FRAME_SLOTS)]
    start = time.perf_counter()
    for i in range(count):
        np.copyto(buffers[i % FRAME_SLOTS], source[i % len(source)])
    return count / (time.perf_counter() - start)


# ---- the suite --------------------------------------------------------------


def run(frames: int = 5000, quick: bool = False) -> dict[str, Any]:
    results = []
    for mechanism in available_mechanisms():
        if quick:
            mechanism.messages //= 10
        for producers in (1, 2):
            row = run_messages(mechanism, producers, paced=False)
            row.update(run_messages(mechanism, producers, paced=True))
            if mechanism.name == "aip.ResultRing" and producers == 1:
                row["idle_consumer_cpu_pct"] = idle_consumer_cpu_pct()
            results.append(row)
            print(format_table([row], ["mechanism", "producers", "msgs_per_s", "p50_us", "p99_us"])
                  .splitlines()[-1], flush=True)
    frame_count = frames // 10 if quick else frames
    frame_rows = [
        {"mechanism": "aip.SlotTable", "frames_per_s": frames_slot_table(frame_count)},
        {"mechanism": "shm+Pipe", "frames_per_s": frames_shm_pipe(frame_count)},
        {"mechanism": "np.copyto", "frames_per_s": frames_copyto(frame_count)},
    ]
    return {"results": results, "frames": frame_rows}


def summarize(document: dict[str, Any]) -> str:
    rows, frames = document["results"], document["frames"]
    out = ["Messages (64 bytes, spawn processes)",
           format_table(rows, ["mechanism", "producers", "msgs_per_s", "p50_us", "p99_us"])]
    by = {(r["mechanism"], r["producers"]): r for r in rows}
    ours = by.get(("aip.ResultRing", 1))
    lines = []
    if ours:
        for other in ("pyzmq", "multiprocessing.Pipe"):
            theirs = by.get((other, 1))
            if theirs:
                lines.append(f"aip/{other} 1->1: {ours['msgs_per_s'] / theirs['msgs_per_s']:.1f}x "
                             f"throughput, p50 {ours['p50_us']:.1f} vs {theirs['p50_us']:.1f} us")
        lines.append(f"idle consumer CPU: {ours['idle_consumer_cpu_pct']:.2f} % of a core")
    out += lines
    out += [f"\nFrames ({FRAME_SHAPE[1]}x{FRAME_SHAPE[0]}x3 uint8, {FRAME_SLOTS} slots, null worker)",
            format_table(frames, ["mechanism", "frames_per_s"])]
    f = {r["mechanism"]: r["frames_per_s"] for r in frames}
    out.append(f"aip.SlotTable / shm+Pipe: {f['aip.SlotTable'] / f['shm+Pipe']:.2f}x; "
               f"/ np.copyto: {100 * f['aip.SlotTable'] / f['np.copyto']:.0f} %")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = suite_parser("ring", __doc__)
    parser.add_argument("--frames", type=int, default=5000, help="frames per frame mechanism")
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages (smoke run)")
    args = parser.parse_args(argv)
    document = run(frames=args.frames, quick=args.quick)
    return publish("ring", document, summarize(document), args.json)
