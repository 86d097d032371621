"""``aip run`` with many cameras: the streams file, priorities, policies by source."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aip.bench.mjpeg import MjpegCameras
from aip.app.cli import _priorities, build_parser, read_streams_file
from aip.errors import ConfigError


def test_a_streams_file_carries_options_per_line(tmp_path: Path) -> None:
    listed = tmp_path / "cams.txt"
    listed.write_text("# the door and the yard\n"
                      "rtsp://10.0.0.5/door name=door priority=2 policy=drop-oldest  # weighed twice\n"
                      "\n"
                      "rtsp://10.0.0.6/yard fps=5 max_age_ms=250\n")
    sources, options = read_streams_file(str(listed))
    assert sources == ["rtsp://10.0.0.5/door", "rtsp://10.0.0.6/yard"]
    assert options == [{"name": "door", "priority": 2.0, "policy": "drop-oldest"},
                       {"fps": 5.0, "max_age_ms": 250.0}]


@pytest.mark.parametrize("line, message", [
    ("rtsp://cam/1 priority", "key=value"),
    ("rtsp://cam/1 colour=red", "unknown key 'colour'"),
    ("rtsp://cam/1 priority=0", "priority"),
    ("rtsp://cam/1 policy=newest", "choose one of"),
])
def test_a_bad_option_in_a_streams_file_names_the_line(tmp_path: Path, line: str, message: str) -> None:
    listed = tmp_path / "cams.txt"
    listed.write_text(line + "\n")
    with pytest.raises((ValueError, ConfigError), match=message):
        read_streams_file(str(listed))


def test_priorities_by_name_source_or_position() -> None:
    specs = ["rtsp://a/1", "rtsp://b/2", "clip.mp4"]
    names = ["a/1", "b/2", "clip.mp4"]
    assert _priorities(["b/2=3", "rtsp://a/1=0.5", "2=2"], specs, names) == {1: 3.0, 0: 0.5, 2: 2.0}
    with pytest.raises(ValueError, match="no stream named 'nope'"):
        _priorities(["nope=2"], specs, names)
    with pytest.raises(ValueError, match="W > 0"):
        _priorities(["a/1=-1"], specs, names)


def test_the_policy_follows_the_source_unless_on_full_says() -> None:
    args = build_parser().parse_args(["run", "x"])
    assert args.on_full is None and args.max_reconnects == 3 and not args.reconnect_forever


def test_a_run_says_which_policy_each_stream_got() -> None:
    """A live camera gets latest and a file block, and the run says so."""
    with MjpegCameras(1, fps=20, frames=400) as cameras:
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        done = subprocess.run(
            [sys.executable, "-m", "aip", "run", cameras.urls[0], "synthetic:640x480", "-b", "sim:0.002",
             "--frames", "6", "--priority", "synthetic:640x480=2"],
            capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr
    port = cameras.urls[0].split(":")[2].split("/")[0]
    assert f"latest: 127.0.0.1:{port}/stream.mjpg" in done.stderr
    assert "block: synthetic:640x480" in done.stderr
