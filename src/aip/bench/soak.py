"""``python -m aip.bench soak``: a long run with workers SIGKILLed under it.

``sim`` workers with jittered service times run ``--frames`` frames (block
policy: nothing may be dropped) while a worker is SIGKILLed every
``frames / (kills + 1)`` frames, round-robin, never the last one alive;
``Pipeline(restart_workers=True)`` brings each back. At the end it checks:

- **accounting**: every frame id of the stream came out exactly once, in
  order, as a result or as a counted gap (by reason);
- **memory**: the RSS of the manager (this process) and of the workers,
  sampled after warm-up, grows by less than ``--max-growth`` (5 %);
- **leftovers**: no aip segment this process created, and no worker process
  ever started (each known by pid *and* start time) is still there, zombie
  or not.

The sim backend sleeps: the figures are about the pipeline's bookkeeping
under failure, never about inference speed. Exit status 1 if a check fails.
"""
from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aip._core._segment import process_alive, process_start
from aip.backends import BackendSpec
from aip.bench.report import publish, suite_parser

WARMUP_FRACTION = 0.2  # RSS samples before this share of the frames are warm-up (caches, arenas)
SAMPLES = 40  # RSS samples after warm-up
EDGE_SAMPLES = 3  # growth compares the median of the first 3 samples with the median of the last 3


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` (Linux /proc), None where it cannot be read."""
    try:
        resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def process_state(pid: int) -> str:
    """The kernel's one-letter state of ``pid`` (Z: zombie), or "?"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def growth(samples: list[int]) -> float | None:
    """Relative growth from the start of ``samples`` to their end (medians of a few)."""
    if len(samples) < 2 * EDGE_SAMPLES:
        return None
    first = float(np.median(samples[:EDGE_SAMPLES]))
    last = float(np.median(samples[-EDGE_SAMPLES:]))
    return (last - first) / first if first else None


@dataclass
class _Accounting:
    """What came out of the stream: each frame id should come once, in order, as a result or a gap."""

    expected_id: int = 0
    delivered: int = 0
    gaps: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    out_of_order: int = 0

    def note(self, frame_id: int, gap_reason: str | None) -> None:
        if frame_id < self.expected_id:
            self.duplicates += 1
        elif frame_id > self.expected_id:
            self.out_of_order += 1
            self.expected_id = frame_id + 1
        else:
            self.expected_id += 1
        if gap_reason is not None:
            self.gaps[gap_reason] += 1
        else:
            self.delivered += 1

    @property
    def accounted(self) -> int:
        return self.delivered + sum(self.gaps.values())


class _WorkerKiller:
    """SIGKILLs a pool's workers round-robin on a schedule, never the last one alive, and
    remembers every worker process the pool ever ran (pid -> start time)."""

    def __init__(self, pool: Any, workers: int, kills: int, kill_every: int) -> None:
        self.pool = pool
        self.workers = workers
        self.kills = kills
        self.kill_every = kill_every
        self.next_kill = kill_every
        self.victim = 0
        self.killed: list[dict[str, Any]] = []
        self.seen: dict[int, int] = {}

    def live_pids(self) -> list[int]:
        """The pids of the workers alive now; notes any new worker process."""
        pids = []
        for worker in self.pool.workers:
            pid = worker.process.pid
            if pid is not None and pid not in self.seen:
                self.seen[pid] = process_start(pid) or 0
            if pid is not None and worker.alive and worker.process.is_alive():
                pids.append(pid)
        return pids

    def kill_if_due(self, count: int, live: list[int]) -> None:
        if count < self.next_kill or len(self.killed) >= self.kills or len(live) < 2:
            return
        victim_worker = self.pool.workers[self.victim % self.workers]
        self.victim += 1
        pid = victim_worker.process.pid
        if pid in live:
            os.kill(pid, signal.SIGKILL)
            self.killed.append({"frame": count, "worker": victim_worker.label, "pid": pid})
            self.next_kill += self.kill_every


@dataclass
class _RssSamples:
    """Resident memory of the manager and (mean of) the live workers, sampled after warm-up."""

    warmup: int
    every: int
    manager: list[int] = field(default_factory=list)
    workers: list[int] = field(default_factory=list)

    def sample_if_due(self, count: int, live: list[int]) -> None:
        if count > self.warmup and (count - self.warmup) % self.every == 0:
            self.manager.append(rss_bytes(os.getpid()) or 0)
            sizes = [rss_bytes(pid) for pid in live]
            self.workers.append(int(np.mean([s for s in sizes if s])) if any(sizes) else 0)


def _repeat(frame: np.ndarray, count: int) -> Iterator[np.ndarray]:
    for _ in range(count):
        yield frame


def soak(frames: int = 100_000, kills: int | None = None, workers: int = 4, latency_ms: float = 1.0,
         jitter_ms: float = 0.5, shape: tuple[int, int, int] = (48, 64, 3), seed: int = 0,
         max_growth: float = 0.05) -> dict[str, Any]:
    """Run the soak; returns its figures and whether each check passed."""
    from aip.pipeline import Pipeline
    from aip.pipeline.reorder import Gap

    if workers < 2:
        raise ValueError("the soak needs at least 2 workers: it never kills the last one alive")
    kills = max(0, frames // 4000) if kills is None else kills
    specs = [BackendSpec("sim", {"latency_s": latency_ms / 1e3, "jitter_s": jitter_ms / 1e3,
                                 "seed": seed + i}) for i in range(workers)]
    frame = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    account = _Accounting()
    warmup = int(frames * WARMUP_FRACTION)
    rss = _RssSamples(warmup=warmup, every=max(1, (frames - warmup) // SAMPLES))
    pipeline = Pipeline(specs, mode="pull", n_slots=4 * workers, restart_workers=True,
                        # kills come faster than any real failure: the restart limit is not what is tested
                        max_restarts_per_minute=10_000, stall_timeout_s=30.0)
    started = time.perf_counter()
    with pipeline:
        pipeline.start(shape)
        names = {pipeline.pool.table.name, pipeline.pool.ring.name}
        killer = _WorkerKiller(pipeline.pool, workers, kills, frames // (kills + 1) if kills else frames + 1)
        for count, result in enumerate(pipeline.run(_repeat(frame, frames)), start=1):
            account.note(result.frame_id, result.reason if isinstance(result, Gap) else None)
            live = killer.live_pids()
            killer.kill_if_due(count, live)
            rss.sample_if_due(count, live)
        elapsed = time.perf_counter() - started
        killer.live_pids()
    # closed: every worker joined, both segments unlinked
    config = {"frames": frames, "kills": kills, "workers": workers, "latency_ms": latency_ms,
              "jitter_ms": jitter_ms, "shape": list(shape), "policy": "block", "mode": "pull"}
    return _report(config, account, killer, rss, names, elapsed, max_growth)


def _report(config: dict[str, Any], account: _Accounting, killer: _WorkerKiller, rss: _RssSamples,
            names: set[str], elapsed: float, max_growth: float) -> dict[str, Any]:
    """The soak's figures, what it left behind, and each check, from a closed pipeline."""
    from aip.segments import list_segments

    frames = config["frames"]
    segments_left = sorted(s.name for s in list_segments()
                           if s.name in names or s.creator_pid == os.getpid())
    processes_left = {pid: process_state(pid) for pid, start in killer.seen.items()
                      if process_alive(pid, start)}
    manager_growth, worker_growth = growth(rss.manager), growth(rss.workers)
    checks = {
        "every frame accounted for": account.accounted == frames and account.expected_id == frames,
        "delivered once, in order": account.duplicates == 0 and account.out_of_order == 0,
        "kills done": len(killer.killed) == config["kills"],
        f"manager memory growth < {max_growth:.0%}": manager_growth is None or manager_growth < max_growth,
        f"worker memory growth < {max_growth:.0%}": worker_growth is None or worker_growth < max_growth,
        "no segment left": not segments_left,
        "no worker process or zombie left": not processes_left,
    }
    return {
        "config": config,
        "frames": frames, "delivered": account.delivered, "gaps": dict(account.gaps),
        "accounted": account.accounted, "duplicates": account.duplicates,
        "out_of_order": account.out_of_order, "kills": killer.killed,
        "restarts": len(killer.seen) - config["workers"], "seconds": elapsed, "fps": frames / elapsed,
        "manager_rss_mib": [round(v / 2**20, 2) for v in rss.manager],
        "worker_rss_mib": [round(v / 2**20, 2) for v in rss.workers],
        "manager_growth": manager_growth, "worker_growth": worker_growth,
        "segments_left": segments_left, "processes_left": processes_left,
        "checks": checks, "passed": all(checks.values()),
    }


def summarize(document: dict[str, Any]) -> str:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:+.2%}"

    manager, workers = document["manager_rss_mib"], document["worker_rss_mib"]
    lines = [
        f"soak: {document['frames']} frames in {document['seconds']:.1f} s ({document['fps']:.0f} FPS), "
        f"{len(document['kills'])} workers SIGKILLed, {document['restarts']} restarts",
        f"  delivered {document['delivered']}, gaps {document['gaps'] or 0}, accounted "
        f"{document['accounted']}/{document['frames']}, duplicates {document['duplicates']}, "
        f"out of order {document['out_of_order']}",
        f"  manager RSS {manager[0] if manager else 0:.1f} -> {manager[-1] if manager else 0:.1f} MiB "
        f"({pct(document['manager_growth'])}), worker RSS (mean) {workers[0] if workers else 0:.1f} -> "
        f"{workers[-1] if workers else 0:.1f} MiB ({pct(document['worker_growth'])}), after warm-up",
        f"  segments left {len(document['segments_left'])}, worker processes left "
        f"{len(document['processes_left'])}",
    ]
    lines += [f"  [{'ok' if ok else 'FAILED'}] {name}" for name, ok in document["checks"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = suite_parser("soak", __doc__)
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--kills", type=int, help="workers to SIGKILL (default: one per 4000 frames)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--latency-ms", type=float, default=1.0, help="sim service time")
    parser.add_argument("--jitter-ms", type=float, default=0.5, help="± uniform jitter on it")
    parser.add_argument("--max-growth", type=float, default=0.05, help="allowed RSS growth after warm-up")
    args = parser.parse_args(argv)
    document = soak(args.frames, args.kills, args.workers, args.latency_ms, args.jitter_ms,
                    max_growth=args.max_growth)
    publish("soak", document, summarize(document), args.json)
    return 0 if document["passed"] else 1
