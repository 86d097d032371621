"""The docs: the mkdocs-material site under docs/ builds with --strict (a
broken link or anchor fails), and the README stays a front door (short, its
links into the docs resolve)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
README_MAX_LINES = 250
BUILD_TIMEOUT_S = 300.0  # an upper bound for a loaded machine, never a measurement

# [text](target) with a relative target: no scheme, not an in-page anchor.
LINK = re.compile(r"\]\((?![a-z][a-z0-9+.-]*:|#)([^)\s#]+)(?:#([^)\s]*))?\)")


def _readme_links() -> list[tuple[str, str | None]]:
    return [(m.group(1), m.group(2)) for m in LINK.finditer(README.read_text())]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for this module, offline, into a temporary folder."""
    site_dir = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # mkdocs-material's end-of-life banner
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
    )
    assert build.returncode == 0, (
        f"mkdocs build --strict failed ({build.returncode}); needs mkdocs-material:\n"
        f"{build.stdout}\n{build.stderr}"
    )
    return site_dir


def test_the_site_builds_strict(site: Path) -> None:
    assert (site / "index.html").is_file()
    assert (site / "architecture" / "index.html").is_file()
    assert "Package layout" in (site / "architecture" / "index.html").read_text()


def test_the_readme_is_a_front_door() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_the_readme_links_resolve() -> None:
    links = _readme_links()
    into_docs = [target for target, _ in links if target.startswith("docs/")]
    assert into_docs, "README.md links to no docs page"
    for target in into_docs:
        assert target.endswith(".md"), f"README.md links to {target}, not a docs page"
    missing = sorted({target for target, _ in links if not (ROOT / target).exists()})
    assert not missing, f"README.md links to missing files: {missing}"


def test_the_readme_anchors_exist_in_the_site(site: Path) -> None:
    for target, anchor in _readme_links():
        if not (target.startswith("docs/") and anchor):
            continue
        page = Path(target).relative_to("docs").with_suffix("")
        html = site / ("" if page.name == "index" else page) / "index.html"
        assert f'id="{anchor}"' in html.read_text(), f"README.md: {target}#{anchor}: no such anchor"
