"""A node's actor on a daemonic Dask worker: where the process cannot be
allowed children, the error names the fix. (The process that can is in
tests/stress/test_cluster_daemon_worker.py.)"""
from __future__ import annotations

import multiprocessing

import pytest

from aip.cluster import NodeError
from aip.cluster.node import allow_child_processes


class _StartedDaemon:
    """A process object whose daemon flag cannot be changed any more."""

    @property
    def daemon(self) -> bool:
        return True

    @daemon.setter
    def daemon(self, value: bool) -> None:
        raise AssertionError("process has already started")


def test_a_daemon_that_cannot_be_changed_is_an_error_that_names_the_fix(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multiprocessing, "current_process", _StartedDaemon)
    with pytest.raises(NodeError, match="node_a") as raised:
        allow_child_processes("node_a")
    assert "DASK_DISTRIBUTED__WORKER__DAEMON=False" in str(raised.value)
    assert "--no-nanny" in str(raised.value)


def test_a_process_that_is_no_daemon_is_left_as_it_is() -> None:
    assert not multiprocessing.current_process().daemon
    allow_child_processes("node_a")
    assert not multiprocessing.current_process().daemon
