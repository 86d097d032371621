"""The ``aip`` commands that load the runtimes: ``aip backends`` asks each one
whether it runs here, ``aip export`` exports the seeded YOLO11n for real, and a
run on a backend this machine lacks says so (the rest of the command is tested
on sim workers in tests/unit/test_cli.py and tests/unit/test_cli_errors.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from aip.app.cli import main
from aip.errors import EXIT_BACKEND
from cli_checks import check_error, run_aip


def test_export_writes_a_cached_onnx(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ultralytics")
    pytest.importorskip("onnx")
    from aip.vision.models import RandomWeightsWarning

    with pytest.warns(RandomWeightsWarning):
        assert main(["export", "--format", "onnx", "--imgsz", "480x640"]) == 0
    path = Path(capsys.readouterr().out.split("onnx: ", 1)[1].strip())
    assert path.suffix == ".onnx" and path.stat().st_size > 1_000_000
    assert "480x640" in path.name


def test_backends_lists_every_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "sim      available" in out
    for name in ("cpu", "onnx", "cuda", "mps", "coreml"):
        assert name in out


def test_a_backend_this_machine_lacks() -> None:
    from aip.app.cli import available_backends

    lacking = [name for name, reason in available_backends().items() if reason is not None]
    if not lacking:
        pytest.skip("this machine runs every backend")
    for name in lacking[:2]:  # coreml and mps off a Mac, cuda without an NVIDIA GPU
        code, err, _ = run_aip("run", "synthetic:64x48", "--frames", "2", "-b", name)
        check_error(err, code, EXIT_BACKEND, name)
