"""Registry of named model constructors (timm's ``_registry`` + ``_factory`` in one file).

A family module decorates one small constructor per variant with ``@register_model``;
``create_model(name, **kwargs)`` looks it up. Construction never does I/O: weights are
loaded afterwards (``train.convert`` writes checkpoints, MindSpore's
``load_checkpoint``/``load_param_into_net`` loads them).
"""
from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable, Dict, List, Optional

import mindspore.nn as nn

ModelConstructor = Callable[..., nn.Cell]

_model_entrypoints: Dict[str, ModelConstructor] = {}
_model_family: Dict[str, str] = {}


def register_model(fn: ModelConstructor) -> ModelConstructor:
    """Register ``fn`` under its own name; a second constructor with the same name is an error."""
    name = fn.__name__
    if name in _model_entrypoints:
        other = _model_entrypoints[name]
        raise ValueError(
            "model name %r is registered twice (%s.%s and %s.%s): rename one of the constructors"
            % (name, other.__module__, other.__qualname__, fn.__module__, fn.__qualname__)
        )
    _model_entrypoints[name] = fn
    _model_family[name] = fn.__module__.rsplit(".", 1)[-1]
    return fn


def list_models(pattern: Optional[str] = None) -> List[str]:
    """Sorted registered names, optionally filtered by a shell-style ``pattern`` (``'resnet*_ibn_a'``)."""
    names = sorted(_model_entrypoints)
    if pattern:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return names


def is_model(name: str) -> bool:
    return name in _model_entrypoints


def model_entrypoint(name: str) -> ModelConstructor:
    """The registered constructor; an unknown name lists the closest valid ones."""
    try:
        return _model_entrypoints[name]
    except KeyError:
        close = difflib.get_close_matches(name, _model_entrypoints, n=5, cutoff=0.5)
        hint = ("did you mean: %s? " % ", ".join(close)) if close else ""
        raise ValueError(
            "unknown model %r: %sregistered models are %s"
            % (name, hint, ", ".join(list_models()))
        ) from None


def create_model(name: str, num_classes: Optional[int] = 1000, **kwargs: Any) -> nn.Cell:
    """Build the registered model ``name``.

    ``None`` values are dropped so that command-line defaults of ``None`` never override a
    model's own defaults. ``num_classes=0`` builds the model without a classifier: ``construct``
    then returns the pooled embedding (the ``features`` mode used for re-identification).
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return model_entrypoint(name)(**kwargs)
