"""mypy reads the shipped .pyi stubs: good code passes, misuse is caught."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")

GOOD = """
import numpy as np
from aip.ring import Empty, ResultRing, SlotTable, slot_arrays

def roundtrip() -> int:
    with ResultRing.create(capacity=8, record_size=8) as ring:
        ring.put(b"12345678", timeout=1.0)
        ring.put_nowait(np.zeros(1, np.uint64))
        first: bytes = ring.get(timeout=None)
        out = np.zeros(4, np.uint64)
        n: int = ring.get_many(out, timeout=0)
        try:
            ring.get_nowait()
        except Empty:
            pass
        return n + len(first) + len(ring)

def frames() -> None:
    with SlotTable.create(n_slots=2, slot_bytes=12) as table:
        slot: int = table.acquire_free(timeout=None)
        arrays = slot_arrays(table, (2, 2, 3))
        arrays[slot][:] = 1
        table.publish(slot, frame_id=0, target=1)
        claimed = table.claim(1, worker=0, timeout=0.5)
        table.release(claimed, 0)
        pair = table.drop_oldest()
        if pair is not None:
            s, f = pair
"""

BAD = """
from aip.ring import ResultRing, SlotTable

ring = ResultRing.create(capacity="8")
n: str = ring.get_many(bytearray(8))
SlotTable.create(n_slots=2).claim("gpu", worker=0)
"""


def run_mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "snippet.py"
    path.write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )


def test_stubs_accept_correct_use(tmp_path: Path) -> None:
    result = run_mypy(tmp_path, GOOD)
    assert result.returncode == 0, result.stdout + result.stderr


def test_stubs_reject_misuse(tmp_path: Path) -> None:
    result = run_mypy(tmp_path, BAD)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.count("error:") == 3, result.stdout
