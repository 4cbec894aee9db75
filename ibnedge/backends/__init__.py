"""Inference runtimes behind one small interface (see :mod:`ibnedge.backends.base`).

Importing this package registers every backend (:data:`ibnedge.choices.BACKENDS`) but
imports no runtime: each one imports its library inside ``load``.
"""
from __future__ import annotations

from .base import (
    AUTO_ORDER,
    BACKENDS,
    DEVICES,
    Backend,
    BackendError,
    backend_names,
    create_backend,
    get_backend_class,
    installed_backends,
    register,
)
from . import lite, mindspore, onnx  # noqa: F401,E402  (registration, in AUTO_ORDER)

__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "DEVICES",
    "Backend",
    "BackendError",
    "backend_names",
    "create_backend",
    "get_backend_class",
    "installed_backends",
    "register",
]
