"""``aip run --config FILE``: every flag from TOML, flags win, errors name the key."""
from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from aip.app import config
from aip.app.cli import build_parser, main
from aip.errors import EXIT_USAGE, ConfigError


def _args(tmp_path: Path, text: str, *argv: str) -> object:
    path = tmp_path / "aip.toml"
    path.write_text(text)
    full = ["run", "--config", str(path), *argv]
    return config.apply(build_parser().parse_args(full), full, build_parser)


def test_every_kind_of_key_is_read(tmp_path: Path) -> None:
    args = _args(tmp_path, """
        sources = ["a.mp4", "rtsp://127.0.0.1/x"]
        backends = ["onnx:threads=1", {name = "cpu", threads = 2, half = false}]
        mode = "adaptive"
        on-full = "drop-oldest"
        fps = 12
        max_age_ms = 250
        stream-timeout = 2.5
        frames = 100
        conf = 0.4
        iou = 0.5
        imgsz = [480, 640]
        realtime = true
        jsonl = "out.jsonl"
        metrics_json = "m.json"
    """)
    expected = {
        "sources": ["a.mp4", "rtsp://127.0.0.1/x"], "backend": ["onnx:threads=1", "cpu:threads=2,half=false"],
        "mode": "adaptive", "on_full": "drop-oldest", "fps": 12.0, "max_age_ms": 250.0,
        "stream_timeout": 2.5, "frames": 100, "conf": 0.4, "iou": 0.5, "imgsz": (480, 640),
        "realtime": True, "jsonl": "out.jsonl", "metrics_json": "m.json", "stream_options": [],
    }
    assert {key: vars(args)[key] for key in expected} == expected


def test_flags_win_over_the_file(tmp_path: Path) -> None:
    args = _args(tmp_path, 'sources = ["a.mp4"]\nbackends = ["cpu", "cpu"]\nframes = 100\nmode = "pull"\n'
                 'conf = 0.5\n', "b.mp4", "-b", "sim:0.01", "--frames", "7", "--conf", "0.25")
    assert args.sources == ["b.mp4"] and args.backend == ["sim:0.01"]  # type: ignore[attr-defined]
    assert args.frames == 7 and args.mode == "pull"  # type: ignore[attr-defined]
    assert args.conf == 0.25  # given on the command line, though it is the default  # type: ignore[attr-defined]


def test_stream_tables_carry_their_own_options(tmp_path: Path) -> None:
    args = _args(tmp_path, """
        sources = ["plain.mp4"]
        [[streams]]
        source = "rtsp://127.0.0.1/door"
        name = "door"
        fps = 10
        policy = "latest"
        max_age_ms = 200
        [[streams]]
        source = 0
        frames = 5
    """)
    assert args.sources == ["plain.mp4", "rtsp://127.0.0.1/door", "0"]  # type: ignore[attr-defined]
    assert args.stream_options == [  # type: ignore[attr-defined]
        {}, {"name": "door", "fps": 10.0, "policy": "latest", "max_age_ms": 200.0}, {"max_frames": 5}]


@pytest.mark.parametrize("text, named", [
    ("colour = 'red'", "unknown key 'colour'"),
    ("fps = 'fast'", "fps = 'fast': must be a number"),
    ("fps = -1", "fps = -1: must be a number > 0"),
    ("frames = true", "frames = True: must be a number"),
    ("on_full = 'sometimes'", "on_full = 'sometimes': choose one of block, drop-oldest"),
    ("conf = 1.5", "conf = 1.5: must be between 0 and 1"),
    ("realtime = 'yes'", "realtime = 'yes': must be true or false"),
    ("imgsz = 'big'", "imgsz = 'big'"),
    ("config = 'other.toml'", "unknown key 'config'"),
    ("[[streams]]\nsource = 'a.mp4'\nspeed = 2", "streams[0]: unknown key 'speed'"),
    ("[[streams]]\nname = 'a'", "streams[0]: needs source"),
    ("[[streams]]\nsource = 'a.mp4'\npolicy = 'fifo'", "streams[0]: policy = 'fifo': choose one of"),
    ("backends = [{threads = 1}]", "a backend table needs name"),
    ("mode = ", "is not valid TOML"),
])
def test_a_bad_key_or_value_is_named(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("(", r"\(")):
        _args(tmp_path, text)


def test_a_config_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jsonl = tmp_path / "out.jsonl"
    path = tmp_path / "aip.toml"
    path.write_text(f"""
        backends = ["sim:0.001", {{name = "sim", latency_s = 0.002}}]
        mode = "pull"
        frames = 6
        jsonl = "{jsonl}"
        [[streams]]
        source = "synthetic:64x48"
        name = "a"
        frames = 3
        [[streams]]
        source = "synthetic:32x24"
        name = "b"
    """)
    assert main(["run", "--config", str(path)]) == 0
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert sorted((line["stream"], line["frame_id"]) for line in lines) == \
        [("a", i) for i in range(3)] + [("b", i) for i in range(6)]
    assert mp.active_children() == []


def test_config_errors_exit_with_the_usage_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "aip.toml"
    path.write_text("backend = ['sim:0.001']\nspeed = 3\n")
    assert main(["run", "--config", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown key 'speed'" in err and "known keys:" in err
    assert main(["run", "--config", str(tmp_path / "missing.toml")]) == EXIT_USAGE
    assert "not found" in capsys.readouterr().err


def test_the_readme_example_is_a_valid_config(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = readme.split("```toml\n# aip.toml\n", 1)[1].split("```", 1)[0]
    args = _args(tmp_path, example)
    assert args.backend == ["onnx:threads=1", "cpu:threads=1"]  # type: ignore[attr-defined]
    assert args.sources == ["rtsp://camera-1/stream", "yard.mp4"]  # type: ignore[attr-defined]
    assert args.stream_options[0]["name"] == "door"  # type: ignore[attr-defined]
    assert args.stream_options[1] == {"max_frames": 1000}  # type: ignore[attr-defined]
