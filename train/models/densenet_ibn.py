"""DenseNet-IBN-a (DenseNet-BC with IBN at ``norm1`` of every third dense layer of blocks 1-3).

The architectures are described once, framework-free, in ``ibnedge.architectures``
(``DenseNetArch``: growth rate, blocks, initial features); its layer plan
(``DenseNetArch.blocks()``) says which dense layers carry the BN-first IBN (``int(C * 0.6)``
channels batch-normalised, the rest instance-normalised: ``ratio=0.4``). One constructor
is registered per ``DenseNetArch`` record. Parameter names mirror the official keys
(``features.denseblock1.denselayer1.norm1.BN.*``, ``features.transition1.conv.weight``,
``classifier.*``); see ``train.convert``.
"""
from __future__ import annotations

from collections import OrderedDict

import mindspore.nn as nn
import mindspore.ops as ops

from ibnedge.architectures import DenseBlock, DenseLayer as DenseLayerPlan, DenseNetArch, Transition, of_family

from ._base import ImageClassifier
from ._registry import register_architectures
from .layers import MaxPool2dSymmetric, batch_norm2d, conv2d, global_avg_pool, make_norm


class DenseLayer(nn.Cell):
    """norm1 (BN or IBN)-ReLU-conv1x1-BN-ReLU-conv3x3; returns the input with ``growth`` new channels appended."""

    def __init__(self, plan: DenseLayerPlan) -> None:
        super().__init__()
        self.norm1 = make_norm(plan.norm1)
        self.relu1 = nn.ReLU()
        self.conv1 = conv2d(plan.in_channels, plan.bottleneck, 1)
        self.norm2 = batch_norm2d(plan.bottleneck)
        self.relu2 = nn.ReLU()
        self.conv2 = conv2d(plan.bottleneck, plan.growth, 3)

    def construct(self, x):
        new_features = self.conv1(self.relu1(self.norm1(x)))
        new_features = self.conv2(self.relu2(self.norm2(new_features)))
        return ops.concat((x, new_features), axis=1)


def make_dense_block(plan: DenseBlock) -> nn.SequentialCell:
    return nn.SequentialCell(OrderedDict((layer.name.rsplit(".", 1)[-1], DenseLayer(layer)) for layer in plan.layers))


def make_transition(plan: Transition) -> nn.SequentialCell:
    return nn.SequentialCell(
        OrderedDict(
            [
                ("norm", batch_norm2d(plan.in_channels)),
                ("relu", nn.ReLU()),
                ("conv", conv2d(plan.in_channels, plan.out_channels, 1)),
                ("pool", nn.AvgPool2d(kernel_size=2, stride=2, pad_mode="valid")),
            ]
        )
    )


class DenseNetIBN(ImageClassifier):
    """The DenseNet described by ``arch`` (an ``ibnedge.architectures.DenseNetArch``); same
    contract as ``ResNetIBN`` (``forward_features`` etc.)."""

    head_name = "classifier"

    def __init__(self, arch: DenseNetArch, num_classes: int = 1000) -> None:
        super().__init__()
        self.arch = arch
        stages = OrderedDict(
            [
                ("conv0", conv2d(3, arch.num_init_features, 7, 2)),
                ("norm0", make_norm(arch.stem_norm())),
                ("relu0", nn.ReLU()),
                ("pool0", MaxPool2dSymmetric(3, 2, 1)),
            ]
        )
        for block in arch.blocks():
            stages[block.name.rsplit(".", 1)[-1]] = make_dense_block(block)
            if block.transition is not None:
                stages[block.transition.name.rsplit(".", 1)[-1]] = make_transition(block.transition)
        stages["norm5"] = batch_norm2d(arch.num_features)
        self.features = nn.SequentialCell(stages)
        self.relu = nn.ReLU()
        self.num_features = arch.num_features
        self.reset_classifier(num_classes)

    def forward_features(self, x):
        return global_avg_pool(self.relu(self.features(x)))

    def forward_head(self, features, pre_logits: bool = False):
        if pre_logits:
            return features
        return self.classifier(features)


register_architectures(DenseNetIBN, of_family(DenseNetArch.family))
