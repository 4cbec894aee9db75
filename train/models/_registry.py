"""Registry of named model constructors (timm's ``_registry`` + ``_factory`` in one file).

A family module registers one constructor per variant: ``register_architectures`` makes one
per ``ibnedge.architectures`` record of its family, named like the record, and
``@register_model`` takes any other; ``create_model(name, **kwargs)`` looks it up. Construction never does I/O: weights are
loaded afterwards (``train.convert`` writes checkpoints, MindSpore's
``load_checkpoint``/``load_param_into_net`` loads them).
"""
from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, Callable, Dict, Iterable, List, Optional

import mindspore.nn as nn

from ibnedge.architectures import ArchBase, unknown_name

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


def register_architectures(model_class: Callable[[Any, int], nn.Cell], archs: Iterable[ArchBase]) -> None:
    """Register ``model_class(arch, num_classes)`` under each record's name. Keyword arguments
    other than ``num_classes`` replace fields of the record (``channels=...``)."""
    for arch in archs:
        register_model(_constructor(model_class, arch))


def _constructor(model_class: Callable[[Any, int], nn.Cell], arch: ArchBase) -> ModelConstructor:
    def create(num_classes: int = 1000, **overrides: Any) -> nn.Cell:
        return model_class(dataclasses.replace(arch, **overrides) if overrides else arch, num_classes)

    create.__name__ = create.__qualname__ = arch.name
    create.__module__ = model_class.__module__
    create.__doc__ = "%s from ibnedge.architectures: %r" % (arch.name, arch)
    return create


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
        raise unknown_name(name, list_models()) from None


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
