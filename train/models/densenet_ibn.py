"""DenseNet-IBN-a (DenseNet-BC with IBN at ``norm1`` of every third dense layer of blocks 1-3).

As in the authors' PyTorch code (XingangPan/IBN-Net, ``ibnnet/densenet_ibn.py``): the IBN of
this family batch-normalises the FIRST ``int(planes * 0.6)`` channels and instance-normalises
the rest (``ratio=0.4``), in dense layers ``i % 3 == 0`` of dense blocks 1, 2 and 3.
Parameter names mirror the official keys (``features.denseblock1.denselayer1.norm1.BN.*``,
``features.transition1.conv.weight``, ``classifier.*``); see ``train.convert``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import mindspore.nn as nn
import mindspore.ops as ops

from ._base import ImageClassifier
from ._registry import register_model
from .layers import IBN, MaxPool2dSymmetric, batch_norm2d, conv2d, global_avg_pool

DENSE_IBN_RATIO = 0.4


class DenseLayer(nn.Cell):
    """BN(or IBN)-ReLU-conv1x1-BN-ReLU-conv3x3; returns the input with ``growth_rate`` new channels appended."""

    def __init__(self, num_input_features: int, growth_rate: int, bn_size: int, ibn: bool) -> None:
        super().__init__()
        if ibn:
            self.norm1 = IBN(num_input_features, DENSE_IBN_RATIO, instance_first=False)
        else:
            self.norm1 = batch_norm2d(num_input_features)
        self.relu1 = nn.ReLU()
        self.conv1 = conv2d(num_input_features, bn_size * growth_rate, 1)
        self.norm2 = batch_norm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU()
        self.conv2 = conv2d(bn_size * growth_rate, growth_rate, 3)

    def construct(self, x):
        new_features = self.conv1(self.relu1(self.norm1(x)))
        new_features = self.conv2(self.relu2(self.norm2(new_features)))
        return ops.concat((x, new_features), axis=1)


def make_dense_block(num_layers: int, num_input_features: int, bn_size: int, growth_rate: int, ibn: bool) -> nn.SequentialCell:
    layers = OrderedDict()
    for index in range(num_layers):
        layers["denselayer%d" % (index + 1)] = DenseLayer(
            num_input_features + index * growth_rate, growth_rate, bn_size, ibn and index % 3 == 0
        )
    return nn.SequentialCell(layers)


def make_transition(num_input_features: int, num_output_features: int) -> nn.SequentialCell:
    return nn.SequentialCell(
        OrderedDict(
            [
                ("norm", batch_norm2d(num_input_features)),
                ("relu", nn.ReLU()),
                ("conv", conv2d(num_input_features, num_output_features, 1)),
                ("pool", nn.AvgPool2d(kernel_size=2, stride=2, pad_mode="valid")),
            ]
        )
    )


class DenseNetIBN(ImageClassifier):
    """DenseNet-BC with IBN-a; same contract as ``ResNetIBN`` (``forward_features`` etc.)."""

    head_name = "classifier"

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        stages = OrderedDict(
            [
                ("conv0", conv2d(3, num_init_features, 7, 2)),
                ("norm0", batch_norm2d(num_init_features)),
                ("relu0", nn.ReLU()),
                ("pool0", MaxPool2dSymmetric(3, 2, 1)),
            ]
        )
        channels = num_init_features
        for index, num_layers in enumerate(block_config):
            stages["denseblock%d" % (index + 1)] = make_dense_block(num_layers, channels, bn_size, growth_rate, ibn=index < 3)
            channels += num_layers * growth_rate
            if index != len(block_config) - 1:
                stages["transition%d" % (index + 1)] = make_transition(channels, channels // 2)
                channels //= 2
        stages["norm5"] = batch_norm2d(channels)
        self.features = nn.SequentialCell(stages)
        self.relu = nn.ReLU()
        self.num_features = channels
        self.reset_classifier(num_classes)

    def forward_features(self, x):
        return global_avg_pool(self.relu(self.features(x)))

    def forward_head(self, features, pre_logits: bool = False):
        if pre_logits:
            return features
        return self.classifier(features)


def _create_densenet(block_config: Sequence[int], **kwargs) -> DenseNetIBN:
    kwargs.setdefault("growth_rate", 32)
    kwargs.setdefault("num_init_features", 64)
    return DenseNetIBN(block_config=block_config, **kwargs)


@register_model
def densenet121_ibn_a(**kwargs) -> DenseNetIBN:
    return _create_densenet((6, 12, 24, 16), **kwargs)


@register_model
def densenet169_ibn_a(**kwargs) -> DenseNetIBN:
    return _create_densenet((6, 12, 32, 32), **kwargs)
