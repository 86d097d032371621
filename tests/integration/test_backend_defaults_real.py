"""A backend that fails to load in its worker, on the seeded YOLO11n: a default
run goes on without it, a named one fails loudly; a loaded ``onnx`` CPU worker
runs on the CPU provider alone. (The choice of defaults is in
tests/unit/test_backend_defaults.py.)"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aip.app import cli
from aip.backends.base import BackendSpec, BackendUnavailable, create
from aip.vision.models import ModelSource, RandomWeightsWarning, resolve_model


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> ModelSource:
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    with pytest.warns(RandomWeightsWarning):
        return resolve_model("yolo11n.yaml", seed=0, cache_dir=tmp_path_factory.mktemp("models"))


# A cpu worker whose load fails in the worker process (after every check the
# manager makes has passed): torch.set_num_threads(int("many")).
BROKEN_CPU = {"threads": "many"}


def test_default_run_leaves_out_a_backend_that_fails_to_load(
    seeded: ModelSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The default set here is a cpu worker that cannot load and a sim worker: the run goes on with sim."""
    asked: list[dict[str, str]] = []

    def defaults(options: dict[str, Any], cores: int, skip: dict[str, str] | None = None) -> list[BackendSpec]:
        asked.append(dict(skip or {}))
        specs = [BackendSpec("cpu", {**options, **BROKEN_CPU}), BackendSpec("sim", {"latency_s": 0.001})]
        return [spec for spec in specs if spec.name not in (skip or {})]

    monkeypatch.setattr(cli, "default_specs", defaults)
    jsonl = tmp_path / "out.jsonl"
    with caplog.at_level(logging.WARNING, logger="aip.app.cli"), pytest.warns(RandomWeightsWarning):
        rc = cli.main(["run", "synthetic:64x48", "--model", str(seeded.path), "--frames", "10",
                       "--mode", "pull", "--jsonl", str(jsonl)])
    assert rc == 0
    assert asked[0] == {} and list(asked[-1]) == ["cpu"]
    assert "invalid literal for int()" in asked[-1]["cpu"]
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "aip.app.cli"]
    assert "leaving out the cpu backend" in warning.getMessage()
    assert "ValueError: invalid literal for int() with base 10: 'many'" in warning.getMessage()
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [line["frame_id"] for line in lines] == list(range(10))
    assert {line["backend"] for line in lines} == {"sim"}
    assert mp.active_children() == []


def test_a_named_backend_that_fails_to_load_fails_the_run(
    seeded: ModelSource, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.warns(RandomWeightsWarning):
        rc = cli.main(["run", "synthetic:64x48", "--model", str(seeded.path), "--frames", "4",
                       "-b", "cpu:threads=many", "-b", "sim:0.001"])
    assert rc == 4  # a worker that fails to start: backend unavailable
    err = capsys.readouterr().err
    assert err.startswith("aip: error: worker cpu failed to start")
    assert "invalid literal for int() with base 10: 'many'" in err
    assert mp.active_children() == []


def test_a_default_run_with_nothing_that_loads_says_why_for_each(
    seeded: ModelSource, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def defaults(options: dict[str, Any], cores: int, skip: dict[str, str] | None = None) -> list[BackendSpec]:
        if skip:
            raise BackendUnavailable("no real backend runs on this machine:\n" +
                                     "\n".join(f"  {name}: {why}" for name, why in skip.items()))
        return [BackendSpec("cpu", {**options, **BROKEN_CPU})]

    monkeypatch.setattr(cli, "default_specs", defaults)
    with pytest.warns(RandomWeightsWarning):
        assert cli.main(["run", "synthetic:64x48", "--model", str(seeded.path), "--frames", "4"]) == 4  # backend unavailable
    err = capsys.readouterr().err
    assert "no real backend runs on this machine" in err and "cpu: failed to load: ValueError" in err
    assert mp.active_children() == []


def test_a_loaded_onnx_cpu_worker_runs_on_the_cpu_provider_alone(seeded: ModelSource) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from aip.vision.models import export

    backend = create(BackendSpec("onnx", {"model": str(export(seeded, "onnx", (320, 320))), "threads": 1}))
    backend.load()
    try:
        assert backend.device == "CPUExecutionProvider"
        assert backend._session.get_providers() == ["CPUExecutionProvider"]  # type: ignore[attr-defined]
        assert backend.infer(np.zeros((1, 3, 320, 320), np.float32)).shape == (1, 84, 2100)
    finally:
        backend.close()
