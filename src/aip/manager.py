"""The manager, by its older name: see :mod:`aip.pipeline`.

Kept so that ``from aip.manager import Pipeline`` goes on working; new code
imports from :mod:`aip` or :mod:`aip.pipeline`.
"""
from aip.backends.base import BackendUnavailable
from aip.pipeline import POLICIES, Pipeline, StreamError, StreamEvent, WorkerError

DROP_POLICIES = POLICIES

__all__ = ["DROP_POLICIES", "POLICIES", "BackendUnavailable", "Pipeline", "StreamError",
           "StreamEvent", "WorkerError"]
