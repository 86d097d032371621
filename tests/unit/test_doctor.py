"""The stale-segment sweep of ``aip doctor --clean``: what is removed, and what never is
(the whole report: tests/integration/test_doctor_report.py)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from aip import segments
from aip.ring import ResultRing
from segment_checks import orphan_segment

pytestmark = pytest.mark.skipif(not segments.SHM_DIR.is_dir(), reason="needs /dev/shm (Linux)")


def _by_name(name: str, directory: Path = segments.SHM_DIR) -> segments.SegmentInfo:
    return next(s for s in segments.list_segments(directory) if s.name == name)


def test_a_segment_of_a_killed_creator_is_listed_as_stale_and_cleaned() -> None:
    name = orphan_segment()
    try:
        found = _by_name(name)
        assert found.state == segments.STALE and found.kind == "ResultRing"
        assert name in {s.name for s in segments.stale_segments()}
        removed = segments.clean_stale(only={name})
        assert [s.name for s in removed] == [name]
        assert not (segments.SHM_DIR / name).exists()
    finally:
        (segments.SHM_DIR / name).unlink(missing_ok=True)


def test_a_live_segment_is_never_removed() -> None:
    with ResultRing.create(capacity=16, record_size=64) as ring:
        found = _by_name(ring.name)
        assert found.state == segments.LIVE and found.creator_pid == os.getpid()
        assert segments.clean_stale(only={ring.name}) == []
        assert (segments.SHM_DIR / ring.name).exists()


def _copy_header(source: str, directory: Path, name: str, *, namespace: int | None = None) -> Path:
    raw = bytearray((segments.SHM_DIR / source).read_bytes()[:segments.HEADER_SIZE])
    if namespace is not None:
        raw[40:48] = namespace.to_bytes(8, sys.byteorder)
    path = directory / name
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.skipif(os.geteuid() != 0, reason="making another user's file needs root")
def test_another_users_stale_segment_is_left(tmp_path: Path) -> None:
    name = orphan_segment()
    try:
        path = _copy_header(name, tmp_path, "aip_otheruser")
        os.chown(path, 65534, 65534)  # nobody
        found = _by_name("aip_otheruser", tmp_path)
        assert found.state == segments.OTHER_USER
        assert segments.clean_stale(tmp_path) == [] and path.exists()
    finally:
        (segments.SHM_DIR / name).unlink(missing_ok=True)


def test_a_segment_of_another_pid_namespace_is_left(tmp_path: Path) -> None:
    name = orphan_segment()
    try:
        path = _copy_header(name, tmp_path, "aip_container", namespace=segments.our_pid_namespace() + 1)
        found = _by_name("aip_container", tmp_path)
        assert found.state == segments.OTHER_NAMESPACE and "namespace" in found.reason
        assert segments.clean_stale(tmp_path) == [] and path.exists()
        # the same header in our namespace is stale
        _copy_header(name, tmp_path, "aip_here")
        assert [s.name for s in segments.clean_stale(tmp_path)] == ["aip_here"]
    finally:
        (segments.SHM_DIR / name).unlink(missing_ok=True)


def test_what_is_not_an_aip_header_is_left(tmp_path: Path) -> None:
    (tmp_path / "aip_empty").write_bytes(b"")
    (tmp_path / "aip_garbage").write_bytes(b"x" * 64)
    assert {s.state for s in segments.list_segments(tmp_path)} == {segments.UNKNOWN}
    assert segments.clean_stale(tmp_path) == []


