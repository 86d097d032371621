"""``/metrics`` before any pipeline: every aip family is there from the
first scrape (a dashboard or an alert finds them while the models load),
the streams named at the start at zero."""
from __future__ import annotations

import urllib.request
from typing import Any

import numpy as np
import pytest

pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from aip.app.observe import MetricsServer, PipelineCollector  # noqa: E402
from aip.backends import BackendSpec  # noqa: E402
from aip.pipeline import Pipeline  # noqa: E402


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)
            if family.name.startswith("aip_")}


def families_of_a_run() -> set[str]:
    """The aip families a collector serves after a short run on a sim worker."""
    with Pipeline([BackendSpec("sim", {"latency_s": 0.001})], mode="pull") as pipeline:
        pipeline.add_stream(iter([np.zeros((24, 32, 3), np.uint8)] * 5), name="door")
        assert sum(1 for _ in pipeline.run()) == 5
        registry = CollectorRegistry()
        registry.register(PipelineCollector(pipeline))
        return set(families(generate_latest(registry).decode()))


def test_every_aip_family_is_served_before_the_pipeline_starts() -> None:
    streams = ["door", "rtsp://admin:hunter2@10.0.0.5/stream1"]
    with MetricsServer(0, "127.0.0.1", streams=streams) as server:
        with urllib.request.urlopen(server.url + "/metrics", timeout=30) as response:
            assert response.status == 200
            text = response.read().decode()
    found = families(text)
    assert set(found) == families_of_a_run()
    for name in ("aip_stream_frames_read", "aip_stream_frames_ordered", "aip_stream_end_to_end_seconds",
                 "aip_backend_frames", "aip_backend_up", "aip_fps", "aip_slots", "aip_state"):
        assert name in found, name
    read = {sample.labels["stream"]: sample.value for sample in found["aip_stream_frames_read"].samples}
    assert read == {"door": 0.0, "rtsp://***@10.0.0.5/stream1": 0.0}  # named at the start, redacted
    assert "hunter2" not in text
    state = {sample.labels["aip_state"]: sample.value for sample in found["aip_state"].samples}
    assert state["starting"] == 1.0 and sum(state.values()) == 1.0
    assert "# TYPE aip_backend_frames_total counter" in text  # no worker yet: no sample, its type
