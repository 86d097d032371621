"""Every backend declares its options; an unknown one is an error that lists them."""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import re

import pytest

from aip.backends.base import (
    BACKEND_OPTIONS,
    REGISTRY,
    BackendOptionError,
    BackendSpec,
    BackendUnavailable,
    UnknownBackendError,
    check_available,
)
from aip.errors import EXIT_BACKEND, EXIT_USAGE, exit_code

# options["x"], options.get("x"), spec.options.get("x"), "x" in options
_READS = re.compile(r"""options(?:\.get\(|\[)\s*["'](\w+)["']|["'](\w+)["']\s+in\s+(?:\w+\.)?options""")


def test_every_backend_has_a_declared_set() -> None:
    assert set(BACKEND_OPTIONS) == set(REGISTRY)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_backend_reads_only_declared_options(name: str) -> None:
    module = importlib.import_module(REGISTRY[name])
    source = inspect.getsource(module)
    read = {a or b for a, b in _READS.findall(source)}
    for value in vars(module).values():  # option dataclasses (CudaTuning.from_options): a field per option
        if isinstance(value, type) and dataclasses.is_dataclass(value) and hasattr(value, "from_options"):
            read |= {field.name for field in dataclasses.fields(value)}
    assert read, f"found no option reads in {REGISTRY[name]}"
    assert read <= BACKEND_OPTIONS[name], f"undeclared: {sorted(read - BACKEND_OPTIONS[name])}"


def test_an_unknown_option_is_rejected_with_the_known_ones() -> None:
    with pytest.raises(BackendOptionError, match=r"backend onnx has no option 'bogus'; its options: .*threads"):
        check_available(BackendSpec("onnx", {"threads": 1, "bogus": 7}))
    with pytest.raises(BackendOptionError, match=r"no options 'a', 'b'"):
        check_available(BackendSpec("sim", {"a": 1, "b": 2}))
    check_available(BackendSpec("sim", {"latency_s": 0.01, "jitter_s": 0.001, "seed": 3}))


def test_exit_codes_of_backend_errors() -> None:
    with pytest.raises(UnknownBackendError) as unknown:
        check_available(BackendSpec("tpu"))
    assert isinstance(unknown.value, BackendUnavailable) and exit_code(unknown.value) == EXIT_USAGE
    with pytest.raises(BackendOptionError) as option:
        check_available(BackendSpec("cpu", {"thread": 1}))
    assert exit_code(option.value) == EXIT_USAGE
    assert exit_code(BackendUnavailable("no GPU")) == EXIT_BACKEND
