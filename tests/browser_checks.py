"""Headless Chromium for the page's tests, driven over the DevTools protocol
on a pipe (``--remote-debugging-pipe``: commands in on fd 3, answers out on
fd 4, each a JSON text ended by a NUL). No port, no websocket, nothing to
install beyond the browser itself (Debian: ``apt-get install chromium``).
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
INSTALL_HINT = "headless Chromium is needed: apt-get install chromium (Debian/Ubuntu)"

# Puts the two pipe ends on fd 3 and 4, as Chromium expects them, then
# becomes the browser (no preexec_fn: the test process has threads).
_ON_FDS_3_AND_4 = ("import os, sys\n"
                   "r, w = int(sys.argv[1]), int(sys.argv[2])\n"
                   "os.dup2(r, 3); os.dup2(w, 4); os.close(r); os.close(w)\n"
                   "os.execv(sys.argv[3], sys.argv[3:])\n")


def find_chromium() -> str | None:
    """The browser's path ($AIP_CHROMIUM first), or None."""
    given = os.environ.get("AIP_CHROMIUM")
    if given:
        return shutil.which(given)
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    return None


class CdpError(RuntimeError):
    pass


def _high_fd(fd: int) -> int:
    """``fd`` moved to 10 or above (so that putting the other end on 3 or 4 cannot overwrite it)."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class Chromium:
    """One headless browser and one page of it.

    >>> with Chromium(find_chromium(), tmp_path) as browser:
    ...     browser.open("http://127.0.0.1:8080/")
    ...     browser.wait_for("document.querySelectorAll('.tile').length === 3")
    """

    def __init__(self, binary: str, profile: Path, *, width: int = 1440, height: int = 960,
                 timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        to_browser_r, to_browser_w = (_high_fd(fd) for fd in os.pipe())
        from_browser_r, from_browser_w = (_high_fd(fd) for fd in os.pipe())
        flags = ["--headless", "--remote-debugging-pipe", "--no-first-run", "--no-default-browser-check",
                 "--disable-gpu", "--disable-extensions", "--disable-background-networking",
                 "--disable-sync", "--disable-dev-shm-usage", "--mute-audio", "--hide-scrollbars",
                 f"--user-data-dir={profile}", f"--window-size={width},{height}"]
        if os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self.process = subprocess.Popen(
            [sys.executable, "-c", _ON_FDS_3_AND_4, str(to_browser_r), str(from_browser_w), binary,
             *flags, "about:blank"],
            pass_fds=(to_browser_r, from_browser_w), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._out = to_browser_w
        self._in = from_browser_r
        self._ids = 0
        self._answers: dict[int, dict[str, Any]] = {}
        self._ready = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()
        self.session: str | None = None
        self.width, self.height = width, height

    # ---- the protocol ----

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._in, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    with self._ready:
                        self._answers[message["id"]] = message
                        self._ready.notify_all()
        with self._ready:
            self._answers[-1] = {"error": {"message": "the browser closed its pipe"}}
            self._ready.notify_all()

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True,
             timeout_s: float | None = None) -> dict[str, Any]:
        self._ids += 1
        number = self._ids
        message: dict[str, Any] = {"id": number, "method": method, "params": params or {}}
        if session and self.session is not None:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        with self._ready:
            while number not in self._answers:
                if -1 in self._answers:
                    raise CdpError(f"{method}: {self._answers[-1]['error']['message']}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CdpError(f"{method}: no answer in {timeout_s or self.timeout_s} s")
                self._ready.wait(left)
            answer = self._answers.pop(number)
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    # ---- a page ----

    def open(self, url: str) -> None:
        """A new page at ``url``; later commands go to it."""
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.navigate", {"url": url})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        answer = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            raise CdpError(f"{expression!r} threw: {details.get('exception', {}).get('description', details)}")
        return answer["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 30.0, interval_s: float = 0.2) -> Any:
        """Poll ``expression`` until it is truthy; its value. AssertionError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        value = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(interval_s)
        raise AssertionError(f"still false after {timeout_s} s: {expression} (last: {value!r})")

    def screenshot(self, path: Path) -> Path:
        """The page as it is now, as a PNG."""
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """End the browser (and wait for it): idempotent."""
        if self.process.poll() is None:
            try:
                self.send("Browser.close", session=False, timeout_s=5.0)
            except (CdpError, OSError):
                pass
            try:
                self.process.wait(10.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10.0)
        self._reader.join(5.0)  # it ends at the pipe's end, once the browser is gone
        for fd in (self._out, self._in):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
