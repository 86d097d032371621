"""The ``aip`` command: argument parsing, runs on sim workers, clear errors."""
from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from aip.backends import BackendSpec
from aip.app.cli import main, parse_backend


@pytest.mark.parametrize(
    "text, expected",
    [
        ("cpu", BackendSpec("cpu", {})),
        ("sim:0.02", BackendSpec("sim", {"latency_s": 0.02})),
        ("cuda:1", BackendSpec("cuda", {"device": 1})),
        ("cpu:threads=2,model=x.pt", BackendSpec("cpu", {"threads": 2, "model": "x.pt"})),
    ],
)
def test_parse_backend(text: str, expected: BackendSpec) -> None:
    assert parse_backend(text) == expected


def test_parse_backend_errors() -> None:
    with pytest.raises(ValueError, match="key=value"):
        parse_backend("onnx:fast")
    with pytest.raises(ValueError, match="is not key=value"):
        parse_backend("cpu:threads=1,oops")


def test_run_on_sim_workers_writes_jsonl_and_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jsonl, metrics = tmp_path / "out.jsonl", tmp_path / "metrics.json"
    rc = main(["run", "synthetic:64x48", "-b", "sim:0.002", "-b", "sim:0.004", "--frames", "40",
               "--mode", "pull", "--jsonl", str(jsonl), "--metrics-json", str(metrics)])
    assert rc == 0
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [line["frame_id"] for line in lines] == list(range(40))
    assert json.loads(metrics.read_text())["frames_ordered"] == 40
    assert "throughput" in capsys.readouterr().out
    assert mp.active_children() == []


@pytest.mark.parametrize(
    "argv, message, code",
    [
        (["run", "/no/such/video.mp4", "-b", "sim:0.01"], "not found", 3),
        (["run", "-b", "tpu"], "unknown backend 'tpu'", 2),
        (["run", "-b", "sim:0.01", "--mode", "pull", "synthetic:0x0"], "h, w >= 1", 3),
    ],
)
def test_bad_input_exits_nonzero_with_a_clear_message(
    argv: list[str], message: str, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("aip: error:") and message in err
    assert mp.active_children() == []


def test_run_writes_an_annotated_video(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    video = tmp_path / "annotated.mp4"
    assert main(["run", "synthetic:64x48", "-b", "sim:0.001", "--frames", "12", "--mode", "pull",
                 "--video", str(video)]) == 0
    capture = cv2.VideoCapture(str(video))
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    assert frames == 12
