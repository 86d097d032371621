"""The compiled core built with ASan, UBSan and AIP_DEBUG, under the core's tests.

The build comes from this repository with pip (build isolation, its own
temporary build folder) and lands in a bare venv of this interpreter whose
own site-packages holds only the sanitized aip; a ``.pth`` file appends this
environment's site-packages for pytest, hypothesis and numpy. A venv rather
than PYTHONPATH: an editable install of aip puts an import hook in front of
sys.path, and a venv's interpreter (the one the stress tests' spawned children
run too) never loads the hook. A pytest plugin checks in the child that aip
and every compiled module came from the sanitized build, that DEBUG_BUILD is
on and that both sanitizer runtimes are loaded.

The runtime: libasan preloaded (CPython itself is not instrumented), libubsan
beside it, ``PYTHONMALLOC=malloc`` so that every Python object goes through
ASan's allocator, and leak detection off (CPython keeps objects alive until
exit by design). The first report aborts the process; faulthandler then
prints the Python stack of the test that hit it. Reports go to files
(``log_path``), not to stderr: pytest captures a test's stderr and drops it
when the process dies or the test passes, and a spawned child's report would
vanish with it. Any report file fails the test, even when pytest passed.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from build_harness import (
    REPO,
    child_env,
    core_test_files,
    pytest_args,
    run_step,
    tail,
    write_check_plugin,
)

pytestmark = [
    pytest.mark.build,
    pytest.mark.skipif(sys.platform != "linux", reason="LD_PRELOAD of GCC's libasan: Linux only"),
]

ASAN_OPTIONS = [
    "detect_leaks=0",      # CPython leaks by design: interned objects, static types
    "halt_on_error=1",     # the first error ends the process ...
    "abort_on_error=1",    # ... with SIGABRT, so faulthandler shows the Python stack
    "disable_coredump=1",  # no multi-GB core files on the CI machine
]
UBSAN_OPTIONS = ["print_stacktrace=1", "halt_on_error=1", "abort_on_error=1"]

# What ASan, UBSan and LeakSanitizer print when they find something, should
# one write to the output after all.
SANITIZER_REPORT = re.compile(
    r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error: |"
    r"SUMMARY: (Address|UndefinedBehavior)Sanitizer"
)
REPORT_CHARS = 20_000  # of each report file shown in a failure

# Writes 64 bytes into an 8-byte malloc: proves the set-up turns a memory
# error into a loud, non-zero exit before any result of the real run counts.
CANARY = """
import ctypes
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
ctypes.memset(libc.malloc(8), 0, 64)
print("the overflow went unnoticed")
"""

BUILD_TIMEOUT_S = 900   # about 30 s on an idle 2-core machine
TESTS_TIMEOUT_S = 1200  # about 30 s idle; the tests keep their own per-test timeout


def gcc_runtime(name: str) -> Path:
    """The path of a GCC sanitizer runtime (``libasan.so``) on this machine."""
    try:
        found = subprocess.run(
            ["gcc", f"-print-file-name={name}"], capture_output=True, text=True, timeout=60
        ).stdout.strip()
    except OSError as exc:
        pytest.fail(f"the sanitizer build needs gcc: {exc}", pytrace=False)
    path = Path(found)
    if not path.is_absolute() or not path.exists():
        pytest.fail(f"gcc does not ship {name} here (it answered {found!r}); "
                    "install the package with GCC's sanitizer runtimes", pytrace=False)
    return path


def sanitizer_env(reports: Path) -> dict[str, str]:
    """The environment of a sanitized child; its reports land in ``reports``."""
    reports.mkdir()
    preload = [gcc_runtime("libasan.so"), gcc_runtime("libubsan.so")]
    log_path = f"log_path={reports / 'report'}"  # one file per process: report.<pid>
    return child_env({
        "LD_PRELOAD": " ".join(str(path) for path in preload),
        "PYTHONMALLOC": "malloc",
        "ASAN_OPTIONS": ":".join([*ASAN_OPTIONS, log_path]),
        "UBSAN_OPTIONS": ":".join([*UBSAN_OPTIONS, log_path]),
    })


def read_reports(reports: Path) -> str:
    """Every sanitizer report in ``reports``, for a failure message."""
    texts = []
    for path in sorted(reports.iterdir()):
        text = path.read_text(encoding="utf-8", errors="replace")
        cut = f"\n[... {len(text) - REPORT_CHARS} more characters in {path}]" \
            if len(text) > REPORT_CHARS else ""
        texts.append(f"\n----- sanitizer report {path.name}\n{text[:REPORT_CHARS]}{cut}")
    return "".join(texts)


def make_sanitized_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A bare venv of this interpreter that sees this environment's packages
    after its own. Returns (python, site-packages)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)],
                   check=True, env=child_env(), timeout=300)
    site_packages = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    assert site_packages.is_dir(), site_packages
    import site

    ours = site.getsitepackages()
    if site.ENABLE_USER_SITE:
        ours.append(site.getusersitepackages())
    (site_packages / "zz_test_environment.pth").write_text(
        "".join(f"{path}\n" for path in ours if Path(path).is_dir()), encoding="utf-8"
    )
    return venv / "bin" / "python", site_packages


@pytest.mark.timeout(BUILD_TIMEOUT_S + TESTS_TIMEOUT_S + 300)
def test_core_tests_pass_under_asan_and_ubsan(tmp_path: Path) -> None:
    files = core_test_files()
    assert files, "none of the core's test files exists"
    python, site_packages = make_sanitized_venv(tmp_path)

    build_log = tmp_path / "build.log"
    run_step(
        "build the core with ASan+UBSan+AIP_DEBUG",
        [sys.executable, "-m", "pip", "install", "-v", "--no-deps", "--no-compile",
         "--target", site_packages,
         "--config-settings=cmake.define.AIP_SANITIZE=ON",
         "--config-settings=cmake.define.AIP_DEBUG=ON",
         "--config-settings=build.verbose=true",
         f"--config-settings=build-dir={tmp_path / 'build'}",
         REPO],
        log=build_log, timeout=BUILD_TIMEOUT_S, cwd=tmp_path, env=child_env(),
    )

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    canary_reports = tmp_path / "canary-reports"
    canary = subprocess.run([python, "-c", CANARY], cwd=run_dir,
                            env=sanitizer_env(canary_reports),
                            capture_output=True, text=True, timeout=120)
    canary_report = read_reports(canary_reports)
    assert canary.returncode != 0 and "heap-buffer-overflow" in canary_report, (
        "the sanitizer set-up let a heap overflow pass silently: "
        f"exit {canary.returncode}\n{canary.stdout}{canary.stderr}{canary_report}"
    )

    plugin = write_check_plugin(run_dir, expect_under=site_packages, debug_build=True,
                                sanitized=True)
    reports = tmp_path / "sanitizer-reports"
    tests_log = tmp_path / "tests.log"
    run_step(
        "core tests under ASan+UBSan",
        [python, "-m", *pytest_args(plugin, files)],
        log=tests_log, timeout=TESTS_TIMEOUT_S, cwd=run_dir, env=sanitizer_env(reports),
        also_show=lambda: read_reports(reports),
    )
    found = read_reports(reports)
    if found:
        pytest.fail("the tests passed, but a sanitizer reported an error (in a child process?)"
                    f"\n{tail(tests_log, 40)}{found}", pytrace=False)
    output = tests_log.read_text(encoding="utf-8", errors="replace")
    if report := SANITIZER_REPORT.search(output):
        pytest.fail("the tests passed, but their output has a sanitizer report:\n"
                    f"{output[max(0, report.start() - 2000):report.start() + 8000]}\n"
                    f"(whole log: {tests_log})", pytrace=False)
    print(tail(tests_log, 25))
