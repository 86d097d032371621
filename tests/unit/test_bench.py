"""The benchmark suites' plumbing runs (their figures are not checked here)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from aip.bench import ring
from aip.bench.__main__ import main
from aip.bench.report import format_table, publish


def test_unknown_suite_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nope"]) == 2
    assert "unknown suite" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "ring" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["ring", "--help"])
    assert exit_info.value.code == 0


def test_ring_measurements_run_end_to_end() -> None:
    [mechanism] = [m for m in ring.available_mechanisms() if m.name == "aip.ResultRing"]
    mechanism.messages = 2000
    row = ring.run_messages(mechanism, producers=2, paced=False)
    assert row["mechanism"] == "aip.ResultRing" and row["msgs_per_s"] > 0
    assert ring.frames_slot_table(20) > 0 and ring.frames_shm_pipe(20) > 0


def test_publish_writes_the_documented_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"mechanism": "aip.ResultRing", "producers": 1, "msgs_per_s": 1.5e6}]
    path = tmp_path / "out.json"
    assert publish("ring", {"results": rows, "frames": []},
                   format_table(rows, ["mechanism", "msgs_per_s"]), str(path)) == 0
    document = json.loads(path.read_text())
    assert document["suite"] == "ring" and document["results"] == rows
    assert "1,500,000.0" in capsys.readouterr().out
