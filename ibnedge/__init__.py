"""ibnedge: IBN-Net inference on MindSpore Lite with a native JPEG-to-tensor engine.

Data flow: files (:mod:`ibnedge.files`) -> native decode/resize/normalise
(:mod:`ibnedge.preprocess`, C++ in ``cpp/``) -> tensor batch -> backend
(:mod:`ibnedge.backends`) -> results (:mod:`ibnedge.results`); :class:`Classifier` ties
them together and ``ibnedge`` (:mod:`ibnedge.cli`) is the command line over it.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Classifier", "Preprocessor", "PreprocessResult", "ItemError", "PreprocessSpec", "__version__"]

# Where each public name lives. Imported on first use (PEP 562, Python 3.7+) so that
# `import ibnedge` stays light: no NumPy, OpenCV or native module until needed.
_LAZY = {
    "Classifier": "ibnedge.classifier",
    "Preprocessor": "ibnedge.preprocess",
    "PreprocessResult": "ibnedge.preprocess",
    "ItemError": "ibnedge.preprocess",
    "PreprocessSpec": "ibnedge.metadata",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError("module 'ibnedge' has no attribute %r" % (name,))
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__() -> list:
    return sorted(list(globals()) + list(_LAZY))
