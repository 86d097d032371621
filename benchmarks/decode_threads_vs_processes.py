"""Decoding many streams: a reader thread per stream (what aip does) against a
decoder process per stream, both writing each frame straight into a
shared-memory slot.

Each stream decodes the 640x480 sample video into slots of one SlotTable
(acquire a free slot, decode into it, hand it back), as fast as it can.
Reported per design and stream count: frames decoded per second in all, and
the CPU the manager process spent (threads: all of it; processes: only the
waiting). Run: ``python benchmarks/decode_threads_vs_processes.py [--json PATH]``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import threading
import time
from pathlib import Path
from typing import Any

FRAMES_PER_STREAM = 600


def _decode_into_slots(table_name: str, video: str, frames: int) -> None:
    """Decode ``frames`` frames (the video looped) into free slots of the table."""
    from aip.pipeline.protocol import SlotFrames
    from aip.ring import SlotTable
    from aip.io.sources import VideoFileSource

    table = SlotTable.attach(table_name)
    views = SlotFrames(table, (480, 640, 3))
    try:
        done = 0
        while done < frames:
            with VideoFileSource(video) as source:
                while done < frames:
                    slot = table.acquire_free(timeout=10)
                    captured = source.read_into(views.image(slot, 480, 640))
                    table.abort(slot)
                    if captured is None:
                        break
                    done += 1
    finally:
        views.release()
        table.close()


def measure(design: str, streams: int, video: str) -> dict[str, Any]:
    from aip.pipeline.protocol import slot_bytes_for
    from aip.ring import SlotTable

    with SlotTable.create(n_slots=2 * streams, slot_bytes=slot_bytes_for((480, 640, 3))) as table:
        cpu0 = time.process_time()
        start = time.perf_counter()
        if design == "threads":
            runners: list[Any] = [threading.Thread(target=_decode_into_slots,
                                                   args=(table.name, video, FRAMES_PER_STREAM))
                                  for _ in range(streams)]
        else:
            context = mp.get_context("spawn")
            runners = [context.Process(target=_decode_into_slots,
                                       args=(table.name, video, FRAMES_PER_STREAM))
                       for _ in range(streams)]
        for runner in runners:
            runner.start()
        for runner in runners:
            runner.join()
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu0
    total = streams * FRAMES_PER_STREAM
    return {"design": design, "streams": streams, "frames": total, "seconds": elapsed,
            "fps": total / elapsed, "manager_cpu_pct": 100 * cpu / elapsed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--streams", type=int, nargs="*", default=[1, 4, 8])
    args = parser.parse_args(argv)
    from aip.io.samples import sample_video

    video = str(sample_video(120))
    rows = []
    for streams in args.streams:
        for design in ("threads", "processes"):
            row = measure(design, streams, video)
            rows.append(row)
            print(f"{design:9} {streams:2} streams: {row['fps']:8.1f} frames/s decoded, "
                  f"manager CPU {row['manager_cpu_pct']:5.1f} % of a core", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
