"""A Dask scheduler and workers as processes on this machine: to try the
cluster, for its tests and its benchmark.

    python -m aip.cluster.local 3      # a scheduler and node_0..node_2; Ctrl-C stops them

Each worker is one "node": ``--nthreads 1`` and its own resource
(``node_0=1``, ...), the way each server of a real cluster runs one. Every
process it starts is its own process group, and :meth:`LocalDaskCluster.close`
kills them all (SIGKILL after a short SIGTERM grace), on any way out.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

# Worker processes run local Pipelines, whose workers are child processes: a
# worker started by a nanny is a daemon process by default, and daemon
# processes may not have children. A node's actor allows them itself (see
# aip.cluster.node.allow_child_processes); this is Dask's own setting for
# it, the way the docs start a worker.
WORKER_ENV = {"DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
# How long a process may take to come up. A cold start imports dask, numpy
# and aip on a loaded 2-core machine: seconds; a failure shows in its log.
START_TIMEOUT_S = 60.0


class LocalDaskCluster:
    """``dask scheduler`` on a free loopback port and one ``dask worker`` per node.

    ``address`` is the scheduler's (``tcp://127.0.0.1:PORT``). Workers are
    started with :meth:`start_worker` (``nodes`` of them at once), may be
    killed with :meth:`kill_worker` (a node lost) and started again.
    """

    def __init__(self, nodes: int = 0, *, nanny: bool = True, env: dict[str, str] | None = None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="aip-dask-")
        self.path = Path(self._dir.name)
        self.nanny = nanny
        self.env = {**os.environ, **WORKER_ENV, **(env or {})}
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.address = ""
        try:
            self._start_scheduler()
            for index in range(nodes):
                self.start_worker(f"node_{index}", wait=False)
            self.wait_for_workers(nodes)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> LocalDaskCluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def scheduler_file(self) -> Path:
        return self.path / "scheduler.json"

    def _popen(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = open(self.path / log_name, "ab")  # noqa: SIM115 - the child holds it
        try:
            return subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)
        finally:
            log.close()

    def _start_scheduler(self) -> None:
        self.scheduler = self._popen(
            ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
             "--no-dashboard", "--scheduler-file", str(self.scheduler_file)], "scheduler.log")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.scheduler.poll() is not None:
                raise RuntimeError(f"the Dask scheduler exited at start:\n{self.log('scheduler')}")
            try:
                self.address = str(json.loads(self.scheduler_file.read_text())["address"])
                return
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)
        raise TimeoutError(f"the Dask scheduler did not start in {START_TIMEOUT_S:g} s:\n{self.log('scheduler')}")

    def start_worker(self, node: str, *, wait: bool = True) -> None:
        """Start a worker holding resource ``node=1`` (a node joins or returns)."""
        args = ["distributed.cli.dask_worker", "--scheduler-file", str(self.scheduler_file),
                "--nthreads", "1", "--resources", f"{node}=1", "--name", node,
                "--host", "127.0.0.1", "--no-dashboard", "--death-timeout", "30"]
        if not self.nanny:
            args.append("--no-nanny")
        self.workers[node] = self._popen(args, f"{node}.log")
        if wait:
            self.wait_for_workers(len(self.workers))

    def wait_for_workers(self, count: int, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until ``count`` workers have joined the scheduler."""
        from distributed import Client

        with Client(self.address, timeout=timeout_s,  # type: ignore[no-untyped-call]
                    set_as_default=False) as client:
            deadline = time.monotonic() + timeout_s
            while len(client.scheduler_info()["workers"]) < count:
                for node, process in self.workers.items():
                    if process.poll() is not None:
                        raise RuntimeError(f"Dask worker {node} exited at start:\n{self.log(node)}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{count} Dask workers did not join in {timeout_s:g} s")
                time.sleep(0.1)

    def kill_worker(self, node: str) -> None:
        """SIGKILL a worker's whole process group: the node is lost at once."""
        process = self.workers.pop(node)
        _kill_group(process, grace_s=0.0)

    def kill_scheduler(self) -> None:
        if self.scheduler is not None:
            _kill_group(self.scheduler, grace_s=0.0)

    def log(self, name: str) -> str:
        try:
            return (self.path / f"{name}.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def close(self) -> None:
        """Kill every process it started (workers first) and remove its files. Idempotent."""
        for node in list(self.workers):
            _kill_group(self.workers.pop(node), grace_s=2.0)
        if self.scheduler is not None:
            _kill_group(self.scheduler, grace_s=2.0)
            self.scheduler = None
        self._dir.cleanup()


def _kill_group(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after ``grace_s``,
    then remove the shared-memory segments its processes made: a group killed
    whole takes its resource tracker with it, which would have unlinked them."""
    made = _segments_made_by(process)
    _signal_group(process, grace_s)
    if made:
        from aip.segments import SHM_DIR, clean_stale

        deadline = time.monotonic() + 2.0  # a killed creator takes a moment to be gone
        while True:
            clean_stale(only=made)
            made = {name for name in made if (SHM_DIR / name).exists()}
            if not made or time.monotonic() > deadline:
                break
            time.sleep(0.05)


def _segments_made_by(process: subprocess.Popen[bytes]) -> set[str]:
    """Names of the aip segments made by ``process`` or its descendants (a
    node's pipeline: the Dask worker under its nanny, and its workers)."""
    import psutil  # a dependency of distributed

    from aip.segments import list_segments

    try:
        pids = {process.pid} | {child.pid for child in psutil.Process(process.pid).children(recursive=True)}
    except psutil.Error:  # already gone: what it made is stale, and nobody can tell which
        return set()
    return {segment.name for segment in list_segments() if segment.creator_pid in pids}


def _signal_group(process: subprocess.Popen[bytes], grace_s: float) -> None:
    for signum in ((signal.SIGTERM, signal.SIGKILL) if grace_s else (signal.SIGKILL,)):
        try:
            os.killpg(process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            process.wait(timeout=grace_s or 10.0)
            break
        except subprocess.TimeoutExpired:
            continue
    # The local pipelines' workers are in the group too (they follow their
    # manager anyway): one last SIGKILL for any that outlived it.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m aip.cluster.local",
                                     description="a local Dask cluster of N nodes, until Ctrl-C")
    parser.add_argument("nodes", type=int, nargs="?", default=2)
    args = parser.parse_args(argv)
    with LocalDaskCluster(args.nodes) as cluster:
        print(f"scheduler {cluster.address}; nodes " + ", ".join(cluster.workers), flush=True)
        print(f"try: aip run synthetic:640x480 --frames 300 -b sim:0.02 --cluster {cluster.address}",
              flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
