"""Another project's Cython module can cimport the shipped .pxd files."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("Cython")
pytest.importorskip("setuptools")

CONSUMER_PYX = """
# cython: language_level=3
from aip._core._layout cimport AIP_LAYOUT_VERSION, aip_slot, aip_slot_table_header
from aip._core.slot_table cimport SlotTable

def layout_version():
    return AIP_LAYOUT_VERSION

def struct_sizes():
    return sizeof(aip_slot_table_header), sizeof(aip_slot)

def slots_of(SlotTable table):
    return table.n_slots
"""

SETUP_PY = """
import aip
from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [Extension("consumer", ["consumer.pyx"], include_dirs=[aip.get_include()])],
        quiet=True,
    ),
    script_args=["build_ext", "--inplace"],
)
"""

CHECK = """
import consumer
from aip.ring import SlotTable
assert consumer.layout_version() == 2, consumer.layout_version()
assert consumer.struct_sizes() == (192, 64), consumer.struct_sizes()
with SlotTable.create(n_slots=3) as table:
    assert consumer.slots_of(table) == 3
print("ok")
"""


def test_compile_a_module_that_cimports_aip(tmp_path: Path) -> None:
    (tmp_path / "consumer.pyx").write_text(CONSUMER_PYX)
    (tmp_path / "setup.py").write_text(textwrap.dedent(SETUP_PY))
    build = subprocess.run(
        [sys.executable, "setup.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert build.returncode == 0, build.stdout + build.stderr
    run = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == "ok"
