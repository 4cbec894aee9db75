"""IBN-Net model zoo: ``create_model(name, num_classes=1000, **kwargs)`` and ``list_models()``.

Every model: ``construct(x)`` -> logits, ``forward_features(x)`` -> pooled embedding
(N, ``num_features``), ``forward_head(features, pre_logits=False)``,
``reset_classifier(num_classes)``. ``python -m train.models --list`` prints the registry.
"""
from __future__ import annotations

from ._base import ImageClassifier
from ._registry import create_model, is_model, list_models, model_entrypoint, register_model
from . import densenet_ibn, resnet_ibn  # noqa: F401  (register the families)
from .densenet_ibn import DenseNetIBN
from .layers import IBN, InstanceNorm2d, MaxPool2dSymmetric, portable_ops
from .resnet_ibn import ResNetIBN

__all__ = [
    "create_model",
    "is_model",
    "list_models",
    "model_entrypoint",
    "register_model",
    "IBN",
    "ImageClassifier",
    "InstanceNorm2d",
    "MaxPool2dSymmetric",
    "portable_ops",
    "DenseNetIBN",
    "ResNetIBN",
]
