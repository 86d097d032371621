"""The soak, short: 5,000 frames on jittered sim workers, two of them SIGKILLed and restarted."""
from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from aip.bench.__main__ import main as bench_main

pytestmark = pytest.mark.stress


def test_short_soak_accounts_for_every_frame_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "soak.json"
    # 5,000 frames give few memory samples: the growth bound here is loose, the full run's is 5 %
    rc = bench_main(["soak", "--frames", "5000", "--kills", "2", "--max-growth", "0.25",
                     "--json", str(out)])
    document = json.loads(out.read_text())
    assert rc == 0, capsys.readouterr().out
    assert document["accounted"] == document["frames"] == 5000
    assert document["duplicates"] == document["out_of_order"] == 0
    assert len(document["kills"]) == 2 and document["restarts"] >= 1
    assert document["segments_left"] == [] and document["processes_left"] == {}
    assert all(document["checks"].values()), document["checks"]
    assert "[ok] every frame accounted for" in capsys.readouterr().out
    assert mp.active_children() == []
