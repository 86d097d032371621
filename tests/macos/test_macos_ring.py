"""The compiled core on macOS: its wait path and page-rounded shared-memory segments.

The multi-process stress tests (tests/stress/test_ring_processes.py,
test_wakeups.py) run on a Mac unchanged; benchmarks/mac_check.sh runs them
beside this file, so they exercise the macOS wait path
(``os_sync_wait_on_address`` / ``__ulock_wait``) there. This file checks
that the build really uses it, and what is specific to macOS: it rounds a
shared-memory segment up to whole pages (16 KiB on Apple silicon), so the
file a process attaches to is larger than the layout it holds.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import resource
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aip.ring import Empty, ResultRing, SlotTable

CTX = mp.get_context("spawn")
RECORD = np.dtype([("seq", "<u8"), ("value", "<f8"), ("tag", "<u4")])  # 20 bytes: no page multiple
JOIN_S = 60


def core_modules() -> list[Path]:
    import aip._core

    return sorted(Path(aip._core.__file__).parent.glob("*.so"))


def test_the_core_waits_on_the_macos_address_wait() -> None:
    """The compiled core calls os_sync_wait_on_address or __ulock_wait, not the timed back-off fallback."""
    nm = shutil.which("nm")
    assert nm, "nm (Xcode command line tools) is needed to read the core's symbols"
    symbols = set()
    for module in core_modules():
        out = subprocess.run([nm, "-u", str(module)], capture_output=True, text=True, check=True).stdout
        symbols |= {line.strip().lstrip("_") for line in out.splitlines()}
    waits = {"os_sync_wait_on_address", "ulock_wait"} & symbols
    wakes = {"os_sync_wake_by_address_any", "os_sync_wake_by_address_all", "ulock_wake"} & symbols
    assert waits and wakes, f"no macOS address wait/wake in {[m.name for m in core_modules()]}"


def _blocked_consumer(name: str, out: Any) -> None:
    ring = ResultRing.attach(name)
    before = resource.getrusage(resource.RUSAGE_SELF)
    try:
        ring.get(timeout=2.0)  # nothing comes: it must sleep, not spin
        out.put(("got", 0.0))
    except Empty:
        after = resource.getrusage(resource.RUSAGE_SELF)
        out.put(("empty", (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)))
    record = ring.get(timeout=JOIN_S)  # then one comes from the parent: it must wake
    out.put(("record", bytes(record)))
    ring.close()


def test_a_blocked_consumer_sleeps_and_wakes_across_processes() -> None:
    with ResultRing.create(capacity=16, record_size=RECORD.itemsize) as ring:
        out = CTX.Queue()
        child = CTX.Process(target=_blocked_consumer, args=(ring.name, out), daemon=True)
        child.start()
        kind, cpu_s = out.get(timeout=JOIN_S)
        assert kind == "empty"
        assert cpu_s < 0.2, f"an idle consumer used {cpu_s:.3f} s of CPU in a 2 s wait"
        record = np.array((7, 0.5, 3), RECORD)
        ring.put(record.tobytes())
        kind, payload = out.get(timeout=JOIN_S)
        assert kind == "record" and np.frombuffer(payload, RECORD)[0] == record
        child.join(JOIN_S)
        assert child.exitcode == 0


def shm_file_size(name: str) -> int:
    """The size of the shared-memory object as macOS reports it (fstat after shm_open)."""
    import _posixshmem

    fd = _posixshmem.shm_open("/" + name, os.O_RDONLY, 0o600)
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def _attach_and_echo(ring_name: str, table_name: str, shape: tuple[int, ...], out: Any) -> None:
    from aip.ring import slot_arrays

    ring = ResultRing.attach(ring_name)
    table = SlotTable.attach(table_name)
    slot = table.claim(0, 0, timeout=JOIN_S)
    payload = slot_arrays(table, shape)[slot]
    ring.put(np.array((int(payload.sum()), float(payload[0, 0]), slot), RECORD).tobytes(), timeout=JOIN_S)
    del payload
    table.release(slot, 0)
    out.put("done")
    table.close()
    ring.close()


@pytest.mark.parametrize(("n_slots", "frame_shape"), [(3, (7, 11)), (5, (481, 641)), (2, (4096, 4))])
def test_page_rounded_segments_attach_from_another_process(n_slots: int, frame_shape: tuple[int, int]) -> None:
    """Layouts that are no page multiple: macOS makes the files larger, and attach must accept them.

    Needs the core's page-rounded attach (a file larger than its layout is fine).
    """
    page = os.sysconf("SC_PAGE_SIZE")
    slot_bytes = int(np.prod(frame_shape))
    with ResultRing.create(capacity=16, record_size=RECORD.itemsize) as ring, \
            SlotTable.create(n_slots=n_slots, slot_bytes=slot_bytes) as table:
        for name in (ring.name, table.name):
            assert shm_file_size(name) % page == 0, "macOS rounds shared memory to whole pages"
        from aip.ring import ANY_WORKER, slot_arrays

        slot = table.acquire_free(timeout=1)
        frame = slot_arrays(table, frame_shape)[slot]
        frame[:] = np.arange(frame.size, dtype=np.uint64).reshape(frame_shape) % 251
        expected = int(frame.sum())
        first = float(frame[0, 0])
        del frame
        table.publish(slot, 1, ANY_WORKER)
        out = CTX.Queue()
        child = CTX.Process(target=_attach_and_echo, args=(ring.name, table.name, frame_shape, out),
                            daemon=True)
        child.start()
        assert out.get(timeout=JOIN_S) == "done"
        echoed = np.frombuffer(ring.get(timeout=JOIN_S), RECORD)[0]
        assert (int(echoed["seq"]), float(echoed["value"]), int(echoed["tag"])) == (expected, first, slot)
        child.join(JOIN_S)
        assert child.exitcode == 0
