"""Where paced one-way latency comes from: process placement, repeated runs.

    python benchmarks/ring_latency.py [--repeats N] [--seconds S] [--loaded]
                                      [--placements unpinned,same,split] [--json PATH]

The same paced measurement as ``python -m aip.bench ring`` (64-byte records
at 5,000 msgs/s, 1 producer -> 1 consumer), for aip's ``get``, ``Pipe`` and
pyzmq, with the processes pinned three ways (Linux ``sched_setaffinity``):

- ``unpinned``: wherever the scheduler puts them (what the suite measures);
- ``same``: producer and consumer on CPU 0;
- ``split``: producer on CPU 0, consumer on CPU 1.

Each repeat runs every placement and mechanism once, interleaved, so that
noise from other load hits them all alike. ``--loaded`` keeps every core
busy with one spinning process per core meanwhile. ``PYTHONPATH`` pointing
at another build of aip measures that build with this same script.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from aip.bench import ring

PLACEMENTS: dict[str, tuple[list[int] | None, list[int] | None]] = {
    "unpinned": (None, None),
    "same": ([0], [0]),
    "split": ([1], [0]),  # (consumer, producer)
}
MECHANISMS = [("aip.ResultRing", "get"), ("multiprocessing.Pipe", "recv_bytes"),
              ("pyzmq ipc", "recv")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0, help="per paced measurement")
    parser.add_argument("--placements", default=",".join(PLACEMENTS))
    parser.add_argument("--loaded", action="store_true", help="one spinning process per core")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    placements = args.placements.split(",")
    if (os.cpu_count() or 1) < 2 and "split" in placements:
        placements.remove("split")
    available = {m.key: m for m in ring.available_mechanisms()}
    mechanisms = [available[key] for key in MECHANISMS if key in available]
    rows: list[dict[str, Any]] = []
    with ring.busy_cores() if args.loaded else nullcontext():
        for repeat in range(args.repeats):
            for placement in placements:
                for mechanism in mechanisms:
                    row = ring.run_messages(mechanism, 1, paced=True, paced_seconds=args.seconds,
                                            cpus=PLACEMENTS[placement])
                    row.update(placement=placement, mechanism=mechanism.name, repeat=repeat)
                    rows.append(row)
                    print(f"{repeat}  {placement:8}  {mechanism.name:20}  p50 {row['p50_us']:7.1f}"
                          f"  p99 {row['p99_us']:8.1f} us", flush=True)
    print(f"\nmedian (min-max) over {args.repeats} repeats, "
          f"{'every core busy' if args.loaded else 'idle'}:")
    for placement in placements:
        for mechanism in mechanisms:
            mine = [r for r in rows if r["placement"] == placement
                    and r["mechanism"] == mechanism.name]
            p50s, p99s = [r["p50_us"] for r in mine], [r["p99_us"] for r in mine]
            print(f"  {placement:8}  {mechanism.name:20}  p50 {statistics.median(p50s):6.1f} "
                  f"({min(p50s):.1f}-{max(p50s):.1f})  p99 {statistics.median(p99s):7.1f} "
                  f"({min(p99s):.1f}-{max(p99s):.1f}) us")
    if args.json:
        Path(args.json).write_text(json.dumps({"loaded": args.loaded, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
