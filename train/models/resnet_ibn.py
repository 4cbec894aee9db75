"""ResNet-IBN-a/b, ResNeXt-IBN-a, SE-ResNet-IBN-a and the plain-BN ResNet baselines.

The architectures are described once, framework-free, in ``ibnedge.architectures``
(``ResNetArch``: block type, depths, widths, groups, IBN placement, SE); its layer plan
(``ResNetArch.stages()``) says what each block holds, and the cells here build exactly
that. One constructor is registered per ``ResNetArch`` record.

Parameter names mirror the official ``state_dict`` keys with MindSpore's leaf names
(``gamma``/``beta``/``moving_mean``/``moving_variance`` for norms); the mapping is
``train.convert`` and is documented there. The official head, ``AvgPool2d(7)``, is a
global average pool here, identical at 224 px and valid at any size.
"""
from __future__ import annotations

from typing import List

import mindspore.nn as nn

from ibnedge.architectures import ResidualBlock, ResNetArch, of_family

from ._base import ImageClassifier
from ._registry import register_architectures
from .layers import InstanceNorm2d, MaxPool2dSymmetric, batch_norm2d, conv2d, global_avg_pool, make_norm


class SEModule(nn.Cell):
    """Squeeze-excitation: ``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))``; ``fc`` indices match PyTorch."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc = nn.SequentialCell(
            [
                nn.Dense(channels, hidden, has_bias=False),
                nn.ReLU(),
                nn.Dense(hidden, channels, has_bias=False),
                nn.Sigmoid(),
            ]
        )

    def construct(self, x):
        # expand_dims (not a reshape to (N, C, 1, 1)) keeps the batch dimension dynamic on export.
        scale = self.fc(global_avg_pool(x)).expand_dims(-1).expand_dims(-1)
        return x * scale


def _downsample(plan: ResidualBlock):
    if not plan.downsample:
        return None
    return nn.SequentialCell([conv2d(plan.in_channels, plan.out_channels, 1, plan.stride),
                              batch_norm2d(plan.out_channels)])


class BasicBlock(nn.Cell):
    """conv3x3 (stride) - bn1 - ReLU - conv3x3 - bn2, + shortcut, [IN], ReLU."""

    def __init__(self, plan: ResidualBlock) -> None:
        super().__init__()
        self.conv1 = conv2d(plan.in_channels, plan.width, 3, plan.stride)
        self.bn1 = make_norm(plan.norm1)
        self.conv2 = conv2d(plan.width, plan.out_channels, 3)
        self.bn2 = batch_norm2d(plan.out_channels)
        self.IN = InstanceNorm2d(plan.out_channels) if plan.post_add_norm else None
        self.relu = nn.ReLU()
        self.downsample = _downsample(plan)

    def construct(self, x):
        shortcut = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            shortcut = self.downsample(x)
        out = out + shortcut
        if self.IN is not None:
            out = self.IN(out)
        return self.relu(out)


class Bottleneck(nn.Cell):
    """conv1x1 - bn1 - ReLU - conv3x3 (stride, groups) - bn2 - ReLU - conv1x1 - bn3, [SE],
    + shortcut, [IN], ReLU."""

    def __init__(self, plan: ResidualBlock) -> None:
        super().__init__()
        self.conv1 = conv2d(plan.in_channels, plan.width, 1)
        self.bn1 = make_norm(plan.norm1)
        self.conv2 = conv2d(plan.width, plan.width, 3, plan.stride, groups=plan.groups)
        self.bn2 = batch_norm2d(plan.width)
        self.conv3 = conv2d(plan.width, plan.out_channels, 1)
        self.bn3 = batch_norm2d(plan.out_channels)
        self.se = SEModule(plan.out_channels, plan.se_hidden) if plan.se_hidden else None
        self.IN = InstanceNorm2d(plan.out_channels) if plan.post_add_norm else None
        self.relu = nn.ReLU()
        self.downsample = _downsample(plan)

    def construct(self, x):
        shortcut = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        if self.downsample is not None:
            shortcut = self.downsample(x)
        out = out + shortcut
        if self.IN is not None:
            out = self.IN(out)
        return self.relu(out)


def make_stage(plans: List[ResidualBlock]) -> nn.SequentialCell:
    """One residual stage (``layerN``) from its planned blocks."""
    return nn.SequentialCell([(Bottleneck if plan.bottleneck else BasicBlock)(plan) for plan in plans])


class ResNetIBN(ImageClassifier):
    """The ResNet described by ``arch`` (an ``ibnedge.architectures.ResNetArch``).

    ``construct(x)`` returns logits; ``forward_features(x)`` the pooled embedding of
    ``num_features`` channels; ``num_classes=0`` leaves out the classifier.
    """

    def __init__(self, arch: ResNetArch, num_classes: int = 1000) -> None:
        super().__init__()
        self.arch = arch
        self.conv1 = conv2d(3, arch.stem_width, 7, 2)
        self.bn1 = make_norm(arch.stem_norm())
        self.relu = nn.ReLU()
        self.maxpool = MaxPool2dSymmetric(3, 2, 1)
        self.layer1, self.layer2, self.layer3, self.layer4 = [make_stage(plans) for plans in arch.stages()]
        self.num_features = arch.num_features
        self.reset_classifier(num_classes)

    def forward_features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return global_avg_pool(x)

    def forward_head(self, features, pre_logits: bool = False):
        if pre_logits:
            return features
        return self.fc(features)


register_architectures(ResNetIBN, of_family(ResNetArch.family))
