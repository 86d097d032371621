"""Shared parts of the build tests: the core's test files, logged subprocesses,
and a pytest plugin that proves which aip a test run imported.

Every build test builds from the repository this file lives in, into its own
temporary directory, and runs the core's tests in a child process. What a
child prints goes to one log per test; a failure shows the log's tail and
where the whole log is.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"

# The compiled core's own tests: rings, slot tables, the model check and the
# multi-process stress tests, plus any hostile-segment or core test file that
# exists: test_hostile*.py, test_core.py, test_core_*.py (not test_coreml.py,
# the Core ML backend's; never tests/packaging, or a build test would run itself).
CORE_TEST_FILES = (
    "unit/test_result_ring.py",
    "unit/test_slot_table.py",
    "unit/test_ring_model.py",
    "stress/test_ring_processes.py",
)
CORE_TEST_GLOBS = ("test_hostile*.py", "test_core.py", "test_core_*.py")

# Lines of a failed step's log shown in the failure message; the whole log
# stays on disk (its path is in the message).
TAIL_LINES = 150


def core_test_files(tests: Path = TESTS) -> list[Path]:
    """The core's test files that exist in ``tests``, in a stable order."""
    found = {tests / name for name in CORE_TEST_FILES if (tests / name).is_file()}
    for pattern in CORE_TEST_GLOBS:
        found.update(
            path for path in tests.rglob(pattern)
            if path.is_file() and "packaging" not in path.relative_to(tests).parts[:-1]
        )
    return sorted(found)


def supported_pythons(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """The CPython versions pyproject's classifiers declare, e.g. ``["3.10", ...]``.

    One source of truth: a version added to the classifiers is built and tested.
    """
    text = pyproject.read_text(encoding="utf-8")
    versions = re.findall(r'"Programming Language :: Python :: (3\.\d+)"', text)
    return sorted(set(versions), key=lambda v: tuple(map(int, v.split("."))))


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: this one, minus what would change which
    aip it imports or which tests it runs, and without bytecode written into
    the repository's test folders."""
    env = {
        key: value for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTEST_ADDOPTS",
                       "PYTEST_PLUGINS", "VIRTUAL_ENV", "LD_PRELOAD"}
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"
    env["PIP_NO_INPUT"] = "1"
    if extra:
        env.update(extra)
    return env


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    cut = len(text) - lines
    head = [f"[... {cut} earlier lines in {path} ...]"] if cut > 0 else []
    return "\n".join(head + text[-lines:])


def run_step(
    step: str,
    cmd: Sequence[str | Path],
    *,
    log: Path,
    timeout: float,
    cwd: Path,
    env: Mapping[str, str],
    also_show: Callable[[], str] | None = None,
) -> float:
    """Run one step with its output appended to ``log``; fail the test with the
    log's tail (and ``also_show()``) when it exits non-zero or outlives
    ``timeout``. Returns seconds.

    The child gets a session of its own, so a timeout kills everything it
    started (pip's build backends, the stress tests' spawned processes).
    """
    argv = [str(part) for part in cmd]
    with log.open("a", encoding="utf-8") as out:
        out.write(f"\n===== {step}\n$ {' '.join(argv)}\n(cwd {cwd})\n")
        out.flush()
        start = time.monotonic()
        proc = subprocess.Popen(
            argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
        finally:
            if proc.poll() is None:  # interrupted (Ctrl-C, pytest-timeout)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        seconds = time.monotonic() - start
        out.write(f"===== {step}: exit {rc} after {seconds:.1f} s\n")
    if rc != 0:
        what = f"no result after {timeout:.0f} s, killed" if rc is None else f"exit status {rc}"
        extra = also_show() if also_show else ""
        pytest.fail(f"{step}: {what}\n{tail(log)}{extra}", pytrace=False)
    print(f"{step}: {seconds:.1f} s")
    return seconds


CHECK_PLUGIN = '''\
"""pytest plugin (-p {name}): fail the run unless aip is the build under test."""
import os
import sys

import pytest

EXPECT_UNDER = {expect_under!r}
EXPECT_DEBUG_BUILD = {debug_build!r}
EXPECT_SANITIZED = {sanitized!r}
HEADER = []


def _problems():
    import aip
    import aip.ring
    import aip._core.slot_table as slot_table

    problems = []
    modules = sorted(
        (name, module) for name, module in sys.modules.items()
        if (name == "aip" or name.startswith("aip.")) and getattr(module, "__file__", None)
    )
    extensions = []
    for name, module in modules:
        path = os.path.realpath(module.__file__)
        if not path.startswith(EXPECT_UNDER + os.sep):
            problems.append(f"{{name}} was imported from {{path}}, not from {{EXPECT_UNDER}}")
        if path.endswith(".so"):
            extensions.append(path)
    HEADER.append(f"aip under test: {{os.path.dirname(os.path.realpath(aip.__file__))}}")
    HEADER.append(f"aip._core.slot_table.DEBUG_BUILD: {{slot_table.DEBUG_BUILD!r}}")
    if slot_table.DEBUG_BUILD is not EXPECT_DEBUG_BUILD:
        problems.append(f"DEBUG_BUILD is {{slot_table.DEBUG_BUILD!r}}, expected {{EXPECT_DEBUG_BUILD!r}}")
    if not extensions:
        problems.append("no compiled aip module was imported")
    if EXPECT_SANITIZED:
        with open("/proc/self/maps") as maps:
            mapped = maps.read()
        for runtime in ("libasan", "libubsan"):
            if runtime not in mapped:
                problems.append(f"{{runtime}} is not loaded in this process")
        for path in extensions:
            with open(path, "rb") as so:
                code = so.read()
            for marker in (b"__asan_", b"__ubsan_handle_"):
                if marker not in code:
                    problems.append(f"{{path}} was not compiled with {{marker.decode()}}*")
        HEADER.append("sanitizers: ASan and UBSan runtimes loaded; every core module instrumented")
    return problems


def pytest_configure(config):
    problems = _problems()
    if problems:
        raise pytest.UsageError("wrong aip under test:\\n  " + "\\n  ".join(problems))


def pytest_report_header(config):
    return HEADER
'''


def write_check_plugin(
    directory: Path, *, expect_under: Path, debug_build: bool, sanitized: bool
) -> str:
    """Write the check plugin into ``directory`` (the child's working directory,
    which ``python -m pytest`` puts on sys.path) and return its module name."""
    name = "aip_build_under_test"
    (directory / f"{name}.py").write_text(
        CHECK_PLUGIN.format(
            name=name,
            expect_under=os.path.realpath(expect_under),
            debug_build=debug_build,
            sanitized=sanitized,
        ),
        encoding="utf-8",
    )
    return name


def pytest_args(plugin: str, files: Sequence[Path], repo: Path = REPO) -> list[str]:
    """Arguments after ``python -m`` that run ``files`` under the repository's
    pytest settings (filterwarnings = error, per-test timeouts, markers) and
    write nothing into the repository (no cache)."""
    return [
        "pytest", "-p", "no:cacheprovider", "-p", plugin,
        "-c", str(repo / "pyproject.toml"), "--rootdir", str(repo),
        "-v", "-ra", "--durations=10", "--color=no",
        *[str(path) for path in files],
    ]


def python_version_of(python: str | Path) -> tuple[str, int, int] | None:
    """``(implementation, major, minor)`` of an interpreter that can make
    venvs with pip (venv and ensurepip importable), else None."""
    try:
        probe = subprocess.run(
            [str(python), "-c",
             "import sys, venv, ensurepip; "
             "print(sys.implementation.name, *sys.version_info[:2], sys.abiflags)"],
            capture_output=True, text=True, timeout=60, env=child_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    fields = probe.stdout.split()
    if probe.returncode != 0 or len(fields) < 3:
        return None
    if len(fields) > 3 and "t" in fields[3]:
        return None  # a free-threaded build is another ABI
    return fields[0], int(fields[1]), int(fields[2])


def find_python(version: str) -> tuple[Path | None, list[str]]:
    """A CPython ``version`` ("3.12") interpreter of this machine, and where
    it looked: pyenv's versions (``$PYENV_ROOT`` or ``pyenv root``), then
    ``pythonX.Y`` on PATH, then the interpreter running the tests."""
    major, minor = map(int, version.split("."))
    candidates: list[Path] = []
    looked: list[str] = []
    root = os.environ.get("PYENV_ROOT")
    if not root and (pyenv := shutil.which("pyenv")):
        done = subprocess.run([pyenv, "root"], capture_output=True, text=True, timeout=60)
        root = done.stdout.strip() if done.returncode == 0 else None
    if root:
        versions = Path(root) / "versions"
        looked.append(f"{versions}/{version}.*")
        releases = [
            path for path in versions.glob(f"{version}.*")
            if re.fullmatch(rf"{re.escape(version)}\.\d+", path.name)
        ]
        releases.sort(key=lambda path: int(path.name.rsplit(".", 1)[1]), reverse=True)
        candidates += [path / "bin" / f"python{version}" for path in releases]
    looked.append(f"python{version} on PATH")
    if on_path := shutil.which(f"python{version}"):
        candidates.append(Path(on_path))
    if sys.version_info[:2] == (major, minor):
        looked.append("the running interpreter")
        candidates.append(Path(sys.executable))
    for candidate in candidates:
        if python_version_of(candidate) == ("cpython", major, minor):
            return candidate, looked
    return None, looked

