from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import pytest

SHM_DIR = Path("/dev/shm")


def _creator_pid(path: Path) -> int | None:
    try:
        with path.open("rb") as segment:
            header = segment.read(32)
    except OSError:
        return None  # unlinked meanwhile
    # aip_segment_header: magic, version, total_size, generation, creator_pid
    return int.from_bytes(header[24:28], "little") if len(header) == 32 else None


def aip_segments() -> set[str]:
    """aip's shared-memory segments made by this process that exist now (Linux).

    Only this process's: other programs on the machine may have theirs.
    """
    if not SHM_DIR.is_dir():
        return set()
    me = os.getpid()
    return {
        p.name
        for p in SHM_DIR.iterdir()
        if p.name.startswith("aip_") and _creator_pid(p) == me
    }


@pytest.fixture(autouse=True, scope="session")
def hermetic_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """aip's caches (calibrations, exported models) in a folder of this test
    session, never the user's ~/.cache/aip; subprocesses inherit it."""
    folder = tmp_path_factory.mktemp("aip-cache")
    previous = os.environ.get("AIP_CACHE_DIR")
    os.environ["AIP_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("AIP_CACHE_DIR", None)
    else:
        os.environ["AIP_CACHE_DIR"] = previous


@pytest.fixture(autouse=True)
def no_leaked_segments() -> Iterator[None]:
    """Every test must leave no aip segment behind."""
    before = aip_segments()
    yield
    leaked = aip_segments() - before
    assert not leaked, f"test leaked shared-memory segments: {sorted(leaked)}"


# ---- the model and video the real-backend tests share ------------------------------------------

@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """ultralytics' yolo11n.yaml with seeded random weights (no weights can be downloaded)."""
    from aip.vision.models import RandomWeightsWarning, resolve_model

    with pytest.warns(RandomWeightsWarning):
        return resolve_model("yolo11n.yaml", seed=0, cache_dir=tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """The test video's frames (made from ultralytics' two photos) as aip's source decodes them."""
    from aip.io.samples import VIDEO_FRAMES, make_video
    from aip.io.sources import VideoFileSource

    video = make_video(tmp_path_factory.mktemp("media") / "bus_zidane.mp4")
    with VideoFileSource(video) as source:
        decoded = [frame for frame, _ in source]
    assert len(decoded) == VIDEO_FRAMES
    return decoded
