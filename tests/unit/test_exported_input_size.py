"""An exported model runs at the input size it was exported for: ``aip run
--model x.onnx`` reads it from the file instead of picking one for the
source (which the file would reject). Tiny hand-made ONNX graphs here; the
real export then run is tests/integration/test_export_run.py."""
from __future__ import annotations

from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx")

from aip.app.cli import build_parser, input_size, named_backends  # noqa: E402
from aip.vision.models import exported_imgsz  # noqa: E402


def tiny_onnx(path: Path, height: int | str, width: int | str, imgsz: str | None = None) -> Path:
    """One Identity node on a (1, 3, height, width) input; ``imgsz`` metadata as ultralytics writes it."""
    from onnx import TensorProto, helper

    shape = [1, 3, height, width]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["output0"])], "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph)
    if imgsz is not None:
        helper.set_model_props(model, {"imgsz": imgsz})
    onnx.save(model, str(path))
    return path


def test_the_input_size_comes_from_the_shape_or_the_metadata(tmp_path: Path) -> None:
    assert exported_imgsz(tiny_onnx(tmp_path / "fixed.onnx", 480, 640)) == (480, 640)
    free = tiny_onnx(tmp_path / "free.onnx", "height", "width", imgsz="[320, 640]")
    assert exported_imgsz(free) == (320, 640)  # a free shape: the size it was exported at
    assert exported_imgsz(tiny_onnx(tmp_path / "none.onnx", "height", "width")) is None
    assert exported_imgsz(tmp_path / "weights.pt") is None  # not an export
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    assert exported_imgsz(tmp_path / "broken.onnx") is None  # its backend says what is wrong


def test_a_run_adopts_an_exported_models_size_unless_imgsz_is_given(tmp_path: Path) -> None:
    square = str(tiny_onnx(tmp_path / "square.onnx", 640, 640))
    frame_hw = (480, 640)
    parse = build_parser().parse_args
    assert input_size(parse(["run"]), frame_hw) == (480, 640)  # no model: fits the frames
    assert input_size(parse(["run", "--model", square]), frame_hw) == (640, 640)
    assert input_size(parse(["run", "--model", square, "--imgsz", "320"]), frame_hw) == (320, 320)
    assert input_size(parse(["run", "--model", "yolo11n.yaml"]), frame_hw) == (480, 640)


def test_a_backend_with_an_exported_model_of_its_own_takes_its_size(tmp_path: Path) -> None:
    square = str(tiny_onnx(tmp_path / "square.onnx", 640, 640))
    args = build_parser().parse_args(["run", "-b", f"onnx:model={square}", "-b", "cpu", "-b", "sim:0.01"])
    shared = {"imgsz": (480, 640)}
    onnx_spec, cpu_spec, sim_spec = named_backends(args, shared)
    assert onnx_spec.options == {"imgsz": (640, 640), "model": square}
    assert cpu_spec.options == {"imgsz": (480, 640)}
    assert sim_spec.options == {"latency_s": 0.01}
    own = build_parser().parse_args(["run", "-b", f"onnx:model={square},imgsz=320"])
    assert named_backends(own, shared)[0].options["imgsz"] == 320  # the spec's own imgsz wins
