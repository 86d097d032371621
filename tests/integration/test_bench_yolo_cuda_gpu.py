"""``python -m aip.bench yolo --device cuda`` asks torch whether a GPU is there: the
refusal names this machine's reason, or lets its GPU through (the rest of the
bench, on any machine without torch: tests/unit/test_bench_yolo_cuda.py)."""
from __future__ import annotations

import re

import pytest

from aip.bench import yolo_cuda


def test_the_refusal_names_this_machines_reason_or_lets_a_gpu_through() -> None:
    reason = yolo_cuda.gpu_missing()
    if reason is None:  # a GPU machine: nothing to refuse
        yolo_cuda.check_gpu(dry_run=False)
    else:
        with pytest.raises(yolo_cuda.NoGpu, match=re.escape(reason)):
            yolo_cuda.check_gpu(dry_run=False)
    yolo_cuda.check_gpu(dry_run=True)  # a rehearsal never needs one
