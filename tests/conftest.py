"""What every test shares: a hermetic cache, the segment-leak check, the marks by
folder, and the seeded model and video of the real-backend tests."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from segment_checks import SESSION_MARK, Snapshot, wait_for_leaks

TESTS = Path(__file__).resolve().parent

# Each folder's kind, as a marker (registered in pyproject.toml), so that
# ``-m "not build and not stress"`` is the developer's inner loop.
FOLDER_MARKS = {"integration": "integration", "stress": "stress", "packaging": "build", "browser": "browser"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            folder = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:
            continue  # a test file given from outside tests/
        name = FOLDER_MARKS.get(folder)
        if name is not None and item.get_closest_marker(name) is None:  # keep an explicit mark as written
            item.add_marker(name)


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


@pytest.fixture(autouse=True, scope="session")
def session_mark() -> Iterator[str]:
    """A mark in the environment of every process this session starts, by which
    the segment check knows them (see segment_checks)."""
    mark = uuid.uuid4().hex
    previous = os.environ.get(SESSION_MARK)
    os.environ[SESSION_MARK] = mark
    yield mark
    if previous is None:
        os.environ.pop(SESSION_MARK, None)
    else:
        os.environ[SESSION_MARK] = previous


@pytest.fixture(autouse=True)
def no_leaked_segments(session_mark: str) -> Iterator[None]:
    """Every test must leave no aip segment behind, nor may any process it started.

    Function-scoped, so it is set up after the module- and session-scoped
    fixtures and torn down before them: the segments those keep for many
    tests are in the snapshot, never counted against one test.
    """
    snapshot = Snapshot.take()
    yield
    leaked = wait_for_leaks(snapshot, session_mark)
    assert not leaked, "test leaked shared-memory segments: " + ", ".join(
        f"{segment.name} ({segment.kind}, {segment.reason})" for segment in leaked)


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
