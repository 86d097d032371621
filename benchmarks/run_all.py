"""Run every benchmark suite of aip, one after another, writing one JSON each.

    python benchmarks/run_all.py [--out DIR] [SUITE ...]

The suites themselves live in the package (``python -m aip.bench SUITE``),
so that an installed wheel can measure the machine it is on; this script
is the whole-set run for a results folder. Each suite measures aip side by
side with its baselines in the same run. Run it on an otherwise idle
machine: the figures are ratios, but noise still moves them.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from aip.bench.__main__ import SUITES


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="where the JSON goes")
    parser.add_argument("suites", nargs="*", metavar="SUITE", help=f"of {', '.join(SUITES)}; default: all")
    args = parser.parse_args()
    unknown = set(args.suites) - set(SUITES)
    if unknown:
        parser.error(f"unknown suites {', '.join(sorted(unknown))}; choose from {', '.join(SUITES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for suite in args.suites or list(SUITES):
        started = time.perf_counter()
        print(f"== {suite}", flush=True)
        # one process per suite: no warm caches or imported runtimes carried between them
        result = subprocess.run([sys.executable, "-m", "aip.bench", suite,
                                 "--json", str(args.out / f"{suite}.json")])
        print(f"== {suite}: exit {result.returncode} after {time.perf_counter() - started:.0f} s",
              flush=True)
        if result.returncode:
            failed.append(suite)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
