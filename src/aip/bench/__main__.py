"""``python -m aip.bench [SUITE] [--json PATH]``."""
from __future__ import annotations

import sys

SUITES = {
    "ring": "aip.bench.ring",
    "pipeline": "aip.bench.pipeline",
    "yolo": "aip.bench.yolo",
    "preprocess": "aip.bench.preprocess",
    "soak": "aip.bench.soak",
    "streams": "aip.bench.streams",
    "cluster": "aip.bench.cluster",
}
DEFAULT_SUITE = "ring"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("suites: " + ", ".join(SUITES) + f" (default: {DEFAULT_SUITE})")
        print("python -m aip.bench SUITE --help shows a suite's options")
        return 0
    suite = argv.pop(0) if argv and not argv[0].startswith("-") else DEFAULT_SUITE
    if suite not in SUITES:
        print(f"unknown suite {suite!r}; suites: {', '.join(SUITES)}", file=sys.stderr)
        return 2
    import importlib

    module = importlib.import_module(SUITES[suite])
    return int(module.main(argv))


if __name__ == "__main__":
    sys.exit(main())
