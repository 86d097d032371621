"""The sample video: made once, whoever asks for it at the same moment."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aip.io.samples import sample_video


def test_openers_that_race_for_the_sample_all_get_it(tmp_path: Path) -> None:
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: sample_video(5, cache_dir=tmp_path), range(4)))
    assert len(set(paths)) == 1 and paths[0].is_file()
    assert [p.name for p in tmp_path.iterdir()] == [paths[0].name]  # no partial file left
