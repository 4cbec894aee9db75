"""The compiled engine, ``ibnedge._native``, and the one-line error when it does not load
(built for another machine or Python, or the system's libjpeg-turbo missing): what
``ibnedge infer`` says instead of a traceback and ``ibnedge doctor`` reports."""
from __future__ import annotations

from types import ModuleType

from .errors import UserError

REINSTALL = ("reinstall ibnedge (pip install ., or make native in a checkout); it needs the system "
             "libjpeg-turbo (apt-get install libjpeg62-turbo)")


class EngineUnavailable(UserError, ImportError):
    """``ibnedge._native`` does not load; the message says why and how to fix it."""


def load_native() -> ModuleType:
    """``ibnedge._native``; raises :class:`EngineUnavailable` when it does not load."""
    try:
        from . import _native
    except ImportError as exc:
        raise EngineUnavailable("the native engine (ibnedge._native) does not load: %s; %s" % (exc, REINSTALL)) from exc
    return _native


__all__ = ["EngineUnavailable", "REINSTALL", "load_native"]
