"""Every bad file, tried as a new user would: ``aip`` in a subprocess given a truncated
or corrupt video, a model that is no model (the cpu and onnx workers load them for
real), an unknown config key. Each ends with a one-line error and its documented exit
code, leaving nothing behind (see tests/cli_checks.py; bad command lines are in
tests/unit/test_cli_errors.py).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from aip.errors import EXIT_BACKEND, EXIT_SOURCE, EXIT_USAGE
from aip.io.samples import sample_video
from cli_checks import check_error, run_aip


@pytest.fixture(scope="module")
def broken_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad-inputs")
    video = sample_video().read_bytes()
    files = {
        "truncated": folder / "truncated.mp4",  # the first half: no index (moov) at the end
        "corrupt": folder / "corrupt.mp4",
        "text.onnx": folder / "model.onnx",
        "notyolo.pt": folder / "notyolo.pt",  # a torch checkpoint of something else
        "pickle.pt": folder / "pickle.pt",  # not a torch checkpoint at all
        "unknown-key.toml": folder / "aip.toml",
    }
    files["truncated"].write_bytes(video[: len(video) // 2])
    files["corrupt"].write_bytes(bytes(range(256)) * 64)
    files["text.onnx"].write_text("this is not a model\n")
    import pickle

    import torch

    torch.save({"weights": [1, 2, 3]}, files["notyolo.pt"])
    files["pickle.pt"].write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    files["unknown-key.toml"].write_text('backends = ["sim:0.01"]\nspeed = "fast"\n')
    return files


@pytest.mark.parametrize("which, argv, expected, fragments", [
    ("truncated", ["-b", "sim:0.01"], EXIT_SOURCE, ["not a readable video"]),
    ("corrupt", ["-b", "sim:0.01"], EXIT_SOURCE, ["not a readable video"]),
    ("text.onnx", ["synthetic:64x48", "--frames", "2", "-b", "onnx", "--model"], EXIT_BACKEND,
     ["failed to start", "Protobuf parsing failed", "AIP_TRACEBACK=1"]),
    ("notyolo.pt", ["synthetic:64x48", "--frames", "2", "-b", "cpu", "--model"], EXIT_USAGE,
     ["not a loadable YOLO .pt checkpoint"]),
    ("pickle.pt", ["synthetic:64x48", "--frames", "2", "-b", "cpu", "--model"], EXIT_USAGE,
     ["not a PyTorch checkpoint", "expected a YOLO .pt file"]),
    ("unknown-key.toml", ["--config"], EXIT_USAGE, ["unknown key 'speed'", "known keys:"]),
])
def test_bad_files(broken_files: dict[str, Path], which: str, argv: list[str], expected: int,
                   fragments: list[str]) -> None:
    path = str(broken_files[which])
    full = ["run", *argv, path] if argv[-1].startswith("--") else ["run", path, *argv]
    code, err, _ = run_aip(*full)
    check_error(err, code, expected, *fragments)
