"""The page of ``aip run --serve`` in a real browser: headless Chromium,
driven over the DevTools protocol (tests/browser_checks.py), on a real
``aip run`` in a process of its own.

The run is on the ``sim`` backend: this tests the page (tiles, figures,
chart, events, the form, the remove button, the token), not inference,
and sim starts in a moment. Its sources are synthetic, paced and long
enough to outlast the test; the test ends the run with SIGTERM.

Under CI (``CI=true``) a missing browser fails the test; elsewhere it skips.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from browser_checks import INSTALL_HINT, Chromium, find_chromium

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("cv2")

TOKEN = "page-test-token"
SOURCES = ("synthetic:320x240", "synthetic:352x288", "synthetic:256x192")
START_TIMEOUT_S = 60.0  # an upper bound on a loaded machine, never a measurement
WAIT_S = 30.0


def chromium_or_skip() -> str:
    binary = find_chromium()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser test: {INSTALL_HINT}")
        pytest.skip(INSTALL_HINT)
    return binary


class AipRun:
    """``aip run ... --serve 127.0.0.1:0 --token TOKEN`` in a child process; its URL from stderr."""

    def __init__(self, *sources: str) -> None:
        command = [sys.executable, "-m", "aip", "run", *sources, "-b", "sim:0.005", "--fps", "12",
                   "--frames", "100000", "--serve", "127.0.0.1:0", "--token", TOKEN]
        # A session of its own: its workers and resource tracker are one process group to reap.
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                        start_new_session=True)
        self.lines: list[str] = []
        self.url: str | None = None
        self._seen = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._seen.wait(START_TIMEOUT_S) or self.url is None:
            self.stop()
            raise AssertionError("aip run did not say its URL:\n" + "".join(self.lines))
        # Ready (frames flow): the run is past its start-up, and SIGTERM drains it.
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.ready() != 200:
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise AssertionError("aip run never got ready:\n" + "".join(self.lines))
            time.sleep(0.1)

    def ready(self) -> int:
        """/readyz's code (it needs no token)."""
        assert self.url is not None
        try:
            with urllib.request.urlopen(self.url + "readyz", timeout=WAIT_S) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as failure:
            with failure:
                return int(failure.code)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            found = re.match(r"web: (http://\S+/)", line)
            if found:
                self.url = found[1]
                self._seen.set()
        self._seen.set()

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        assert self.url is not None
        request = urllib.request.Request(self.url + path, method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"Bearer {TOKEN}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=WAIT_S) as answer:
            return answer.status, json.loads(answer.read())

    def stop(self) -> int:
        """SIGTERM (the run drains and ends), then its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(WAIT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(WAIT_S)
        # What it started ends with it; whatever is left of its group after
        # a grace period (an orphaned worker) is killed, never left running.
        deadline = time.monotonic() + WAIT_S / 3
        try:
            while time.monotonic() < deadline:
                os.killpg(self.process.pid, 0)
                time.sleep(0.1)
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._reader.join(WAIT_S)
        if self.process.stderr is not None:
            self.process.stderr.close()
        return self.process.returncode


@pytest.fixture()
def run() -> Iterator[AipRun]:
    started = AipRun(*SOURCES)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[Chromium]:
    """The browser (asked for before the run, so that a missing one skips at once)."""
    with Chromium(chromium_or_skip(), tmp_path / "profile") as opened:
        yield opened


# What a tile shows, read from the page: its frame, how many images it got, its figures.
TILES = """[...document.querySelectorAll('#tiles .tile')].map(tile => ({
    stream: tile.dataset.stream, state: tile.dataset.state, frame: tile.dataset.frame,
    images: Number(tile.dataset.images), loaded: tile.querySelector('img').naturalWidth,
    fps: tile.querySelector('[data-field="fps"]').textContent,
    ordered: Number(tile.querySelector('[data-field="frames_ordered"]').textContent),
    p99: tile.querySelector('[data-field="age_p99_ms"]').textContent}))"""


def tiles(browser: Chromium) -> dict[str, dict[str, Any]]:
    return {tile["stream"]: tile for tile in browser.evaluate(TILES)}


def wait_for_tiles(browser: Chromium, names: set[str]) -> dict[str, dict[str, Any]]:
    """The tiles, once exactly ``names`` are there, each with an image."""
    deadline = time.monotonic() + WAIT_S
    shown: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        shown = tiles(browser)
        if set(shown) == names and all(tile["loaded"] > 0 for tile in shown.values()):
            return shown
        time.sleep(0.2)
    raise AssertionError(f"tiles {sorted(shown)} (want {sorted(names)}): {shown}")


def test_three_live_tiles_a_fourth_added_and_one_removed(browser: Chromium, run: AipRun,
                                                         tmp_path: Path) -> None:
    assert run.url is not None
    browser.open(run.url + f"?token={TOKEN}")
    first = wait_for_tiles(browser, set(SOURCES))

    # The images change and the numbers move while the run goes on.
    def moved() -> bool:
        now = tiles(browser)
        return all(now[name]["frame"] != first[name]["frame"] and now[name]["images"] > first[name]["images"]
                   and now[name]["ordered"] > first[name]["ordered"] for name in SOURCES)

    deadline = time.monotonic() + WAIT_S
    while not moved():
        assert time.monotonic() < deadline, (first, tiles(browser))
        time.sleep(0.2)
    for tile in tiles(browser).values():
        assert float(tile["fps"]) > 0 and tile["p99"].endswith(" ms") and tile["state"] == "running"
    ordered = int(browser.evaluate("document.querySelector('#ordered').textContent"))
    browser.wait_for(f"Number(document.querySelector('#ordered').textContent) > {ordered}")
    browser.wait_for("Number(document.querySelector('#fps').textContent) > 0")
    assert browser.evaluate("document.querySelector('#state').dataset.state") in ("ready", "starved")
    browser.wait_for("Number(document.querySelector('#chart').dataset.points) > 0")
    backend = browser.wait_for("""(() => { const row = document.querySelector('#backends tr[data-backend="sim"]');
        return row && row.querySelector('[data-field="share"] span').textContent; })()""")
    assert backend == "100%"
    browser.wait_for("document.querySelectorAll('#events li[data-kind=\"started\"]').length >= 3")

    # A fourth stream through the API: its tile appears, with its images.
    status, body = run.api("POST", "api/streams", {"source": "synthetic:160x120", "name": "fourth", "fps": 10})
    assert (status, body["name"]) == (202, "fourth")
    wait_for_tiles(browser, {*SOURCES, "fourth"})

    # A fifth through the page's form.
    browser.evaluate("""(() => { document.querySelector('#add-source').value = 'synthetic:96x72';
        document.querySelector('#add-name').value = 'fifth';
        document.querySelector('#add-fps').value = '8';
        document.querySelector('#add-form').requestSubmit(); })()""")
    browser.wait_for("document.querySelector('#message').textContent.includes('fifth')")
    wait_for_tiles(browser, {*SOURCES, "fourth", "fifth"})
    browser.screenshot(tmp_path / "page.png")  # for a person looking into a failure
    if os.environ.get("AIP_WEB_SCREENSHOT"):
        browser.screenshot(Path(os.environ["AIP_WEB_SCREENSHOT"]))

    # Its remove button: the tile goes, the API no longer has it, the events say so.
    browser.evaluate("""[...document.querySelectorAll('#tiles .tile')]
        .find(tile => tile.dataset.stream === 'fourth').querySelector('.remove').click()""")
    wait_for_tiles(browser, {*SOURCES, "fifth"})
    _, streams = run.api("GET", "api/streams")
    assert "fourth" not in {row["name"] for row in streams["streams"]}
    browser.wait_for("""[...document.querySelectorAll('#events li[data-kind="removed"]')]
        .some(item => item.dataset.stream === 'fourth')""")
    assert not browser.evaluate("document.querySelector('#connection').hidden === false")

    code = run.stop()
    assert code == 128 + signal.SIGTERM, "".join(run.lines)
    assert "Traceback" not in "".join(run.lines)


def test_the_page_without_its_token_gets_nothing(browser: Chromium, run: AipRun) -> None:
    assert run.url is not None
    browser.open(run.url)
    browser.wait_for("document.body && document.body.innerText.includes('token')")
    assert browser.evaluate("document.querySelectorAll('.tile').length") == 0
