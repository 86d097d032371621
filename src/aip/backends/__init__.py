"""Inference backends, one module per runtime; see :mod:`aip.backends.base`."""
from aip.backends.base import (
    REGISTRY,
    Backend,
    BackendSpec,
    BackendUnavailable,
    available_backends,
    backend_class,
    check_available,
    create,
)

__all__ = [
    "REGISTRY",
    "Backend",
    "BackendSpec",
    "BackendUnavailable",
    "available_backends",
    "backend_class",
    "check_available",
    "create",
]
