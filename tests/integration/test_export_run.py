"""``aip export`` then ``aip run --model <that file>``, with no other flag:
the run takes the input size the file was exported for (640x640 by
default), not the rectangle it would pick for the source (480x640 for the
sample), which the file would reject."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aip.app.cli import main
from aip.errors import EXIT_BACKEND
from aip.vision.models import RandomWeightsWarning, exported_imgsz

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(seeded: Any) -> Path:
    """The seeded model exported with ``aip export``'s defaults."""
    with pytest.warns(RandomWeightsWarning):
        assert main(["export", str(seeded.path), "--format", "onnx"]) == 0
    (path,) = seeded.path.parent.glob("*.onnx")
    return path


def test_a_default_export_runs_with_no_extra_flags(exported: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert "640x640" in exported.name and exported_imgsz(exported) == (640, 640)
    jsonl = tmp_path / "out.jsonl"
    # The default source (the sample video) and the default backends.
    assert main(["run", "--model", str(exported), "--frames", "4", "--jsonl", str(jsonl)]) == 0, \
        capsys.readouterr().err
    err = capsys.readouterr().err
    assert "'imgsz': (640, 640)" in err.split("workers: ", 1)[1].splitlines()[0]
    assert [json.loads(line)["frame_id"] for line in jsonl.read_text().splitlines()] == [0, 1, 2, 3]


def test_a_backend_naming_the_export_takes_its_size(exported: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "-b", f"onnx:model={exported},threads=1", "--frames", "2", "-q"]) == 0, \
        capsys.readouterr().err


def test_imgsz_given_still_wins(exported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()  # the file takes no other size: its worker cannot load it, and says why
    assert main(["run", "-b", "onnx", "--model", str(exported), "--imgsz", "480x640",
                 "--frames", "2", "-q"]) == EXIT_BACKEND
    assert "640x640 inputs" in capsys.readouterr().err
