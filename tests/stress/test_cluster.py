"""aip.cluster on a real Dask cluster: a scheduler and worker processes on
this machine (loopback only), on sim and on real ONNX; a node killed mid-run,
a node that returns, a scheduler that dies. Every Dask process is killed at
the end of its fixture, pass or fail."""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("distributed")

from aip.backends import BackendSpec  # noqa: E402
from aip.cluster import Cluster, ClusterError  # noqa: E402
from aip.cluster.local import LocalDaskCluster  # noqa: E402
from aip.pipeline.reorder import Gap  # noqa: E402
from aip.results import FrameResult  # noqa: E402

pytestmark = [
    pytest.mark.stress,
    pytest.mark.timeout(150),
]

SHAPE = (120, 160, 3)
SIM = [BackendSpec("sim", {"latency_s": 0.01})] * 2


def by_stream(results: list[FrameResult | Gap]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for result in results:
        assert isinstance(result, FrameResult), result
        out.setdefault(result.stream, []).append(result.frame_id)
    return out


@pytest.fixture(scope="module")
def three_nodes() -> Iterator[LocalDaskCluster]:
    with LocalDaskCluster(3) as cluster:
        yield cluster


@pytest.fixture
def fresh_nodes() -> Iterator[LocalDaskCluster]:
    """Its own cluster: the test kills processes of it."""
    with LocalDaskCluster(3) as cluster:
        yield cluster


def connect(address: str, backends: list[BackendSpec] = SIM, **options: Any) -> Cluster:
    return Cluster(address, backends, max_frame_shape=SHAPE, calibrate_s=0.3, **options)


def test_sim_every_frame_once_in_order_in_both_modes(three_nodes: LocalDaskCluster) -> None:
    with connect(three_nodes.address) as cluster:
        assert sorted(cluster.calibration) == ["node_0", "node_1", "node_2"]
        assert all(fps > 0 for fps in cluster.calibration.values())
        for mode in ("streams", "frames"):
            results = list(cluster.run(["synthetic:160x120"] * 4, mode=mode, max_frames=90))
            assert by_stream(results) == {f"s{i}": list(range(90)) for i in range(4)}, mode
            metrics = cluster.metrics
            assert metrics.frames_ordered == 360
            nodes = {name.split("/")[0] for name in metrics.backends}
            assert nodes == {"node_0", "node_1", "node_2"}, mode  # every node took part
            assert sum(m.frames_processed for m in cluster.node_metrics.values()) == 360
            assert metrics.ideal_fps == pytest.approx(sum(cluster.calibration.values()))


def test_frames_mode_with_jpeg_and_frames_in_hand(three_nodes: LocalDaskCluster) -> None:
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, SHAPE, dtype=np.uint8) for _ in range(40)]
    with connect(three_nodes.address, encoding="jpeg", max_in_flight=2) as cluster:
        results = list(cluster.run(iter(frames), mode="frames"))
    assert by_stream(results) == {"s0": list(range(40))}


def kill_after(results: Iterator[FrameResult | Gap], count: int, kill: Any) -> list[FrameResult | Gap]:
    out = []
    for result in results:
        out.append(result)
        if len(out) == count:
            kill()
    return out


@pytest.mark.parametrize("mode", ["frames", "streams"])
def test_a_node_killed_mid_run_loses_and_duplicates_nothing(fresh_nodes: LocalDaskCluster,
                                                            mode: str) -> None:
    backends = [BackendSpec("sim", {"latency_s": 0.02})] * 2
    with connect(fresh_nodes.address, backends) as cluster:
        results = kill_after(cluster.run(["synthetic:160x120"] * 3, mode=mode, max_frames=150),
                             60, lambda: fresh_nodes.kill_worker("node_1"))
        assert by_stream(results) == {f"s{i}": list(range(150)) for i in range(3)}
        assert any("node node_1 lost" in line for line in cluster.events)
        assert "node_1" not in cluster.calibration
        # The node returns: its actor is created again, and it works.
        fresh_nodes.start_worker("node_1")
        assert sorted(cluster.wait_for_nodes(timeout_s=60)) == ["node_0", "node_1", "node_2"]
        results = list(cluster.run(["synthetic:160x120"] * 3, mode=mode, max_frames=60))
        assert by_stream(results) == {f"s{i}": list(range(60)) for i in range(3)}
        assert "node_1" in {name.split("/")[0] for name in cluster.metrics.backends}


def test_a_dead_scheduler_is_a_clear_error(fresh_nodes: LocalDaskCluster) -> None:
    with connect(fresh_nodes.address, scheduler_timeout_s=2.0) as cluster:
        started = time.monotonic()
        with pytest.raises(ClusterError, match="scheduler"):
            kill_after(cluster.run(["synthetic:160x120"], mode="frames", max_frames=100_000),
                       20, fresh_nodes.kill_scheduler)
        assert time.monotonic() - started < 60


def test_no_scheduler_is_a_clear_error() -> None:
    started = time.monotonic()
    with pytest.raises(ClusterError, match="no Dask scheduler"):
        Cluster("tcp://127.0.0.1:9", SIM, connect_timeout_s=2)
    assert time.monotonic() - started < 30


@pytest.mark.filterwarnings("ignore::aip.vision.models.RandomWeightsWarning")  # seeded weights: same on both sides
def test_onnx_on_two_nodes_equals_a_local_run(three_nodes: LocalDaskCluster) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("ultralytics")
    from aip.backends.base import prepare
    from aip.pipeline import Pipeline
    from aip.io.sources import open_source

    spec = prepare(BackendSpec("onnx", {"imgsz": (128, 160), "threads": 1}))
    with open_source("sample:12") as source:
        frames = [frame.copy() for frame, _ in source]
    shape = frames[0].shape
    with Pipeline([spec], mode="pull", conf=1e-4) as pipeline:
        expected = [r.detections for r in pipeline.run(iter(frames)) if isinstance(r, FrameResult)]
    with Cluster(three_nodes.address, [spec], nodes=["node_0", "node_1"], max_frame_shape=shape,
                 calibrate_s=0.3, pipeline_options={"conf": 1e-4}) as cluster:
        results = list(cluster.run(iter(frames), mode="frames"))
        assert by_stream(results) == {"s0": list(range(12))}
        for result, want in zip(results, expected):
            assert isinstance(result, FrameResult)
            np.testing.assert_allclose(result.detections, want, rtol=1e-4, atol=1e-3)
        streamed = list(cluster.run(["sample:12", "sample:12"], mode="streams"))
        assert by_stream(streamed) == {"s0": list(range(12)), "s1": list(range(12))}


def test_aip_run_with_cluster(three_nodes: LocalDaskCluster, tmp_path: Any,
                              capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from aip.app.cli import main

    jsonl = tmp_path / "out.jsonl"
    for mode in ("streams", "frames"):
        code = main(["run", "synthetic:160x120", "synthetic:160x120", "--frames", "30", "-b", "sim:0.01",
                     "-b", "sim:0.01", "--cluster", three_nodes.address, "--cluster-mode", mode,
                     "--jsonl", str(jsonl), "-q"])
        assert code == 0, capsys.readouterr().err
        lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
        assert sorted((line["stream"], line["frame_id"]) for line in lines) == sorted(
            (stream, i) for stream in ("s0", "s1") for i in range(30))
        assert "ordered 60" in capsys.readouterr().out
