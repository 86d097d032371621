"""A node on a Dask worker started the way a newcomer would: ``dask worker``
under its nanny, with Dask's default ``distributed.worker.daemon`` (a
daemonic process, which multiprocessing refuses children). Loopback only;
every Dask process is killed at the end, pass or fail."""
from __future__ import annotations

import multiprocessing
import threading
from typing import Any

import pytest

pytest.importorskip("distributed")

from distributed import Client  # noqa: E402

from aip.backends import BackendSpec  # noqa: E402
from aip.cluster import Cluster  # noqa: E402
from aip.cluster.local import LocalDaskCluster  # noqa: E402
from aip.cluster.node import allow_child_processes  # noqa: E402
from aip.results import FrameResult  # noqa: E402

pytestmark = [pytest.mark.stress, pytest.mark.timeout(150)]

SIM = [BackendSpec("sim", {"latency_s": 0.01})] * 2


def test_a_node_on_a_daemonic_worker_starts_its_pipeline_and_runs() -> None:
    with LocalDaskCluster() as local:
        local.env.pop("DASK_DISTRIBUTED__WORKER__DAEMON")  # Dask's default, as `dask worker` has it
        local.start_worker("node_0")
        with Client(local.address, set_as_default=False) as client:  # type: ignore[no-untyped-call]
            # The premise: Dask's default makes the worker a daemonic process.
            assert list(client.run(lambda: __import__("multiprocessing").current_process().daemon)
                        .values()) == [True]
        with Cluster(local.address, SIM, max_frame_shape=(120, 160, 3), calibrate_s=0.3) as cluster:
            assert list(cluster.calibration) == ["node_0"]
            for mode in ("streams", "frames"):
                results = list(cluster.run(["synthetic:160x120"] * 2, mode=mode, max_frames=30))
                assert sorted((r.stream, r.frame_id) for r in results if isinstance(r, FrameResult)) == [
                    (stream, i) for stream in ("s0", "s1") for i in range(30)], mode


def _exit_at_once() -> None:
    pass


def _start_child() -> int | None:
    child = multiprocessing.get_context("spawn").Process(target=_exit_at_once, daemon=True)
    child.start()
    child.join(60)
    return child.exitcode


def _in_a_daemon(answers: Any) -> None:
    try:
        _start_child()
        refused = False
    except AssertionError:
        refused = True
    allow_child_processes("node_x")
    first = _start_child()
    # Later, from another thread: the way a pipeline restarts a worker mid-run.
    later: list[int | None] = []
    thread = threading.Thread(target=lambda: later.append(_start_child()))
    thread.start()
    thread.join(60)
    answers.put((refused, first, later))


def test_a_daemonic_process_may_start_children_once_allowed_for_good() -> None:
    context = multiprocessing.get_context("spawn")
    answers = context.Queue()
    daemon = context.Process(target=_in_a_daemon, args=(answers,), daemon=True)
    daemon.start()
    try:
        assert answers.get(timeout=60) == (True, 0, [0])
    finally:
        daemon.join(30)
        answers.close()
        answers.join_thread()
    assert daemon.exitcode == 0
