"""The benchmark suites' plumbing runs (their figures are not checked here)."""
from __future__ import annotations

import json
import multiprocessing as mp
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
    mechanisms = {m.key: m for m in ring.available_mechanisms()}
    for key, batch_max in ((("aip.ResultRing", "get"), 1), (("aip.ResultRing", "get_many"), 512)):
        mechanism = mechanisms[key]
        assert mechanism.batch_max == batch_max
        mechanism.messages = 2000
        row = ring.run_messages(mechanism, producers=2, paced=False)
        assert row["msgs_per_s"] > 0 and 1 <= row["batch_mean"] <= batch_max
    paced = ring.run_messages(mechanisms[("multiprocessing.Pipe", "recv_bytes")], producers=1,
                              paced=True, paced_seconds=0.05)
    assert 0 < paced["p50_us"] <= paced["p99_us"]
    assert ring.frames_slot_table(20) > 0 and ring.frames_shm_pipe(20) > 0


def test_every_one_record_call_says_so() -> None:
    for mechanism in ring.available_mechanisms():
        assert (mechanism.batch_max == 1) == (mechanism.call != "get_many"), mechanism.key


def test_busy_cores_starts_and_stops_its_spinners() -> None:
    with ring.busy_cores(1) as n:
        assert n == 1
        children = mp.active_children()
        assert children
    for child in children:
        assert not child.is_alive()


def test_summary_states_batch_sizes_and_targets() -> None:
    def row(mechanism: str, call: str, batch_max: int, producers: int, rate: float,
            p50: float) -> dict[str, object]:
        return {"mechanism": mechanism, "call": call, "batch_max": batch_max,
                "batch_mean": 1.0, "producers": producers, "msgs_per_s": rate,
                "idle_p50_us": p50, "idle_p99_us": 2 * p50,
                "loaded_p50_us": p50, "loaded_p99_us": 3 * p50}

    results = []
    for producers in (1, 2):
        results += [row("aip.ResultRing", "get", 1, producers, 5e6, 10.0),
                    row("aip.ResultRing", "get_many", 512, producers, 2e7, 10.0),
                    row("multiprocessing.Pipe", "recv_bytes", 1, producers, 5e5, 10.0),
                    row("pyzmq ipc", "recv", 1, producers, 1e6, 20.0)]
    frames = [{"mechanism": "aip.SlotTable", "frames_per_s": 40.0},
              {"mechanism": "shm+Pipe", "frames_per_s": 40.0},
              {"mechanism": "np.copyto", "frames_per_s": 100.0}]
    text = ring.summarize({"settings": {"busy_processes": 2}, "results": results, "frames": frames})
    assert "batch_max" in text and "loaded_p50_us" in text
    assert "aip get (batch <= 1) / pyzmq recv, 1->1: 5.0x (target >= 4x): met" in text
    assert "aip get_many (batch <= 512) / pyzmq recv, 1->1: 20.0x (target >= 8x): met" in text
    assert "paced p50 loaded, 2->1: aip get 10.0 us vs Pipe 10.0 us = 1.00x" in text
    assert "frames aip.SlotTable / np.copyto: 40 % (target >= 50 %): NOT met" in text


def test_publish_writes_the_documented_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"mechanism": "aip.ResultRing", "producers": 1, "msgs_per_s": 1.5e6}]
    path = tmp_path / "out.json"
    assert publish("ring", {"results": rows, "frames": []},
                   format_table(rows, ["mechanism", "msgs_per_s"]), str(path)) == 0
    document = json.loads(path.read_text())
    assert document["suite"] == "ring" and document["results"] == rows
    assert "1,500,000.0" in capsys.readouterr().out
