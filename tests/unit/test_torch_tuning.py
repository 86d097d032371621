"""The ``cuda`` backend's tuning options, on any machine: how they are read and
refused (that none of them touches the ``cpu`` path: tests/integration/test_torch_tuning_cpu.py)."""
from __future__ import annotations

from typing import Any

import pytest

from aip.backends.torch_backend import CudaTuning


def test_defaults_are_the_plain_path() -> None:
    tuning = CudaTuning.from_options("cuda", {})
    assert tuning == CudaTuning() and not tuning.staged and tuning.cudnn_benchmark
    assert tuning.label() == ""


@pytest.mark.parametrize(("value", "expected"), [
    (1, True), (0, False), (True, True), (False, False), ("1", True), ("0", False),
    ("true", True), ("False", False), ("yes", True), ("no", False), ("on", True), ("off", False),
])
def test_flags_take_what_a_command_line_writes(value: Any, expected: bool) -> None:
    assert CudaTuning.from_options("cuda", {"graphs": value}).graphs is expected


@pytest.mark.parametrize("value", [2, -1, 0.5, "maybe", None, [1]])
def test_a_malformed_flag_is_refused_with_what_to_write(value: Any) -> None:
    with pytest.raises(ValueError, match=r"option pinned=.*: write 1 or 0"):
        CudaTuning.from_options("cuda", {"pinned": value})


def test_each_option_switches_one_field_and_labels_itself() -> None:
    options = {"half": 1, "pinned": 1, "stream": 1, "channels_last": 1, "graphs": 1, "cudnn_benchmark": 0}
    tuning = CudaTuning.from_options("cuda", options)
    assert tuning == CudaTuning(True, True, True, True, True, False) and tuning.staged
    assert tuning.label() == "half=1,pinned=1,stream=1,channels_last=1,graphs=1,cudnn_benchmark=0"
    assert not CudaTuning.from_options("cuda", {"half": 1}).staged  # fp16 alone keeps the plain path
    for name in ("pinned", "stream", "channels_last", "graphs"):
        assert CudaTuning.from_options("cuda", {name: 1}).staged, name


def test_the_command_line_spelling_reaches_the_backend() -> None:
    from aip.app.cli import parse_backend

    spec = parse_backend("cuda:half=1,graphs=1,channels_last=1,pinned=1,stream=0")
    assert CudaTuning.from_options(spec.name, spec.options) == CudaTuning(
        half=True, pinned=True, channels_last=True, graphs=True)


@pytest.mark.parametrize("backend", ["cpu", "mps"])
@pytest.mark.parametrize("name", ["half", "pinned", "stream", "channels_last", "graphs"])
def test_cuda_options_switched_on_elsewhere_are_refused(backend: str, name: str) -> None:
    with pytest.raises(ValueError, match=f"runs on the cuda backend only, not on {backend}"):
        CudaTuning.from_options(backend, {name: 1})


def test_cuda_options_left_at_their_defaults_are_accepted_elsewhere() -> None:
    options = {"half": 0, "pinned": "off", "stream": False, "channels_last": "0", "graphs": 0,
               "cudnn_benchmark": 1}
    assert CudaTuning.from_options("cpu", options) == CudaTuning()


