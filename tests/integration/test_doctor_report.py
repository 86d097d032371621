"""``aip doctor``'s whole report, which asks every runtime whether it runs here, and
its ``--clean`` (the sweep itself is tested in tests/unit/test_doctor.py)."""
from __future__ import annotations

import pytest

from aip import segments
from aip.app.cli import main
from segment_checks import orphan_segment

pytestmark = pytest.mark.skipif(not segments.SHM_DIR.is_dir(), reason="needs /dev/shm (Linux)")


def test_doctor_shows_every_section_and_cleans(capsys: pytest.CaptureFixture[str]) -> None:
    name = orphan_segment()
    try:
        assert main(["doctor"]) == 0
        screen = capsys.readouterr().out
        for section in ("backends", "versions", "devices", "threads", "shared memory", "aip segments"):
            assert f"\n{section}\n" in screen
        assert "onnx" in screen and "numpy" in screen and "/dev/shm" in screen
        assert f"{name}" in screen and "stale" in screen and "--clean" in screen
        assert main(["doctor", "--clean"]) == 0
        assert f"removed {name}" in capsys.readouterr().out
        assert not (segments.SHM_DIR / name).exists()
    finally:
        (segments.SHM_DIR / name).unlink(missing_ok=True)
