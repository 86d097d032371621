"""``aip run --cluster`` takes the flags it honours for real: the nodes'
pipelines and streams accept what the flags become, and ``--plot`` is
drawn from the cluster's metrics (the refusals need no cluster:
tests/unit/test_cli_cluster_flags.py). One node, on loopback."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("distributed")
pytest.importorskip("matplotlib")

from aip.app.cli import main  # noqa: E402
from aip.cluster.local import LocalDaskCluster  # noqa: E402

pytestmark = [pytest.mark.stress, pytest.mark.timeout(150)]


def test_streams_mode_honours_its_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jsonl, plot = tmp_path / "out.jsonl", tmp_path / "plot.png"
    with LocalDaskCluster(1) as nodes:
        code = main(["run", "synthetic:160x120", "synthetic:160x120", "--frames", "20",
                     "-b", "sim:0.005", "--cluster", nodes.address,
                     "--fps", "200", "--on-full", "block", "--max-age-ms", "60000",
                     "--latency-budget-ms", "60000", "--stream-timeout", "30", "--max-reconnects", "1",
                     "--restart-workers", "--plot", str(plot), "--jsonl", str(jsonl), "-q"])
    assert code == 0, capsys.readouterr().err
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert sorted((line["stream"], line["frame_id"]) for line in lines) == sorted(
        (stream, i) for stream in ("s0", "s1") for i in range(20))
    assert plot.read_bytes().startswith(b"\x89PNG")
