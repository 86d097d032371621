"""Shared output of the benchmark suites: a text table and a JSON file."""
from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def percentiles_us(latencies_ns: np.ndarray) -> tuple[float, float]:
    """p50 and p99 of nanosecond latencies, in microseconds."""
    p50, p99 = np.percentile(latencies_ns, [50, 99])
    return float(p50) / 1e3, float(p99) / 1e3


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A fixed-width table of ``rows`` (missing values print as '-')."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
        return str(value)

    cells = [[cell(row.get(col)) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    lines = ["  ".join(col.rjust(w) for col, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import os

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }


def write_json(path: str | Path, suite: str, **sections: Any) -> None:
    document = {"suite": suite, "machine": machine(), **sections}
    Path(path).write_text(json.dumps(document, indent=2) + "\n")


def suite_parser(suite: str, description: str | None) -> argparse.ArgumentParser:
    """The command line every suite shares: ``python -m aip.bench SUITE [--json PATH]``."""
    parser = argparse.ArgumentParser(prog=f"python -m aip.bench {suite}", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    return parser


def publish(suite: str, document: dict[str, Any], summary: str, json_path: str | None) -> int:
    """Print a suite's summary and, when asked, write its JSON; the exit status."""
    print(summary)
    if json_path:
        write_json(json_path, suite, **document)
    return 0


def latency_row(system: str, config: str, fps: float, latencies_ms: np.ndarray,
                 **extra: Any) -> dict[str, Any]:
    """A table row: throughput, and latency p50/p99 from per-frame figures."""
    return {"system": system, "config": config, "fps": fps,
            "p50_ms": float(np.percentile(latencies_ms, 50)),
            "p99_ms": float(np.percentile(latencies_ms, 99)), **extra}
