"""ResNet-IBN-a/b, ResNeXt-IBN-a, SE-ResNet-IBN-a and the plain-BN ResNet baselines.

Architecture as in the authors' PyTorch code (XingangPan/IBN-Net, ``ibnnet/``):

- IBN-a, ``ibn_cfg=('a', 'a', 'a', None)``: in every block of layer1..3 the norm after the
  first conv (``bn1``) is ``IBN(width)``: the first half of the channels instance-normalised.
- IBN-b, ``ibn_cfg=('b', 'b', None, None)``: the stem's ``bn1`` is an affine InstanceNorm and
  the LAST block of layer1 and layer2 applies ``IN`` after the residual add, before the ReLU.
- ResNeXt-IBN-a: bottleneck width ``floor(planes * base_width / 64) * cardinality``, grouped 3x3.
- SE-ResNet-IBN-a: squeeze-excitation (reduction 16, bias-free FCs) on the block output
  before the residual add.

Parameter names mirror the official ``state_dict`` keys with MindSpore's leaf names
(``gamma``/``beta``/``moving_mean``/``moving_variance`` for norms); the mapping is
``train.convert.torch_key_for`` and is documented there. The official head,
``AvgPool2d(7)``, is a global average pool here, identical at 224 px and valid at any size.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Type, Union

import mindspore.nn as nn

from ._base import ImageClassifier
from ._registry import register_model
from .layers import IBN, InstanceNorm2d, MaxPool2dSymmetric, batch_norm2d, conv2d, global_avg_pool


def _first_norm(ibn: Optional[str], channels: int) -> nn.Cell:
    return IBN(channels) if ibn == "a" else batch_norm2d(channels)


class SEModule(nn.Cell):
    """Squeeze-excitation: ``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))``; ``fc`` indices match PyTorch."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = int(channels / reduction)
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


class BasicBlock(nn.Cell):
    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Optional[nn.Cell] = None,
        ibn: Optional[str] = None,
        cardinality: int = 1,
        base_width: int = 64,
        use_se: bool = False,
    ) -> None:
        super().__init__()
        if cardinality != 1 or base_width != 64 or use_se:
            raise ValueError("BasicBlock supports neither ResNeXt grouping nor SE; use Bottleneck")
        self.conv1 = conv2d(inplanes, planes, 3, stride)
        self.bn1 = _first_norm(ibn, planes)
        self.conv2 = conv2d(planes, planes, 3)
        self.bn2 = batch_norm2d(planes)
        self.IN = InstanceNorm2d(planes) if ibn == "b" else None
        self.relu = nn.ReLU()
        self.downsample = downsample

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
    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Optional[nn.Cell] = None,
        ibn: Optional[str] = None,
        cardinality: int = 1,
        base_width: int = 64,
        use_se: bool = False,
    ) -> None:
        super().__init__()
        width = int(math.floor(planes * (base_width / 64))) * cardinality
        outplanes = planes * self.expansion
        self.conv1 = conv2d(inplanes, width, 1)
        self.bn1 = _first_norm(ibn, width)
        self.conv2 = conv2d(width, width, 3, stride, groups=cardinality)
        self.bn2 = batch_norm2d(width)
        self.conv3 = conv2d(width, outplanes, 1)
        self.bn3 = batch_norm2d(outplanes)
        self.se = SEModule(outplanes) if use_se else None
        self.IN = InstanceNorm2d(outplanes) if ibn == "b" else None
        self.relu = nn.ReLU()
        self.downsample = downsample

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


Block = Union[Type[BasicBlock], Type[Bottleneck]]


def make_stage(
    block: Block,
    inplanes: int,
    planes: int,
    num_blocks: int,
    stride: int,
    ibn: Optional[str],
    **block_kwargs,
) -> Tuple[nn.SequentialCell, int]:
    """One residual stage (``layerN``); returns it and its output channel count.

    IBN-a goes into every block; IBN-b's ``IN`` only into the last block of the stage.
    """
    outplanes = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != outplanes:
        downsample = nn.SequentialCell([conv2d(inplanes, outplanes, 1, stride), batch_norm2d(outplanes)])
    blocks = []
    for index in range(num_blocks):
        block_ibn = ibn
        if ibn == "b" and index < num_blocks - 1:
            block_ibn = None
        blocks.append(
            block(
                inplanes if index == 0 else outplanes,
                planes,
                stride if index == 0 else 1,
                downsample if index == 0 else None,
                block_ibn,
                **block_kwargs,
            )
        )
    return nn.SequentialCell(blocks), outplanes


class ResNetIBN(ImageClassifier):
    """ResNet with IBN placement ``ibn_cfg`` (one entry per stage: 'a', 'b' or None).

    ``construct(x)`` returns logits; ``forward_features(x)`` the pooled embedding of
    ``num_features`` channels; ``num_classes=0`` leaves out the classifier.
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        ibn_cfg: Sequence[Optional[str]] = ("a", "a", "a", None),
        num_classes: int = 1000,
        channels: Sequence[int] = (64, 128, 256, 512),
        stem_width: int = 64,
        cardinality: int = 1,
        base_width: int = 64,
        use_se: bool = False,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or len(ibn_cfg) != 4 or len(channels) != 4:
            raise ValueError("layers, ibn_cfg and channels need one entry per stage (4)")
        unknown = [c for c in ibn_cfg if c not in ("a", "b", None)]
        if unknown:
            raise ValueError("ibn_cfg entries must be 'a', 'b' or None, got %r" % (tuple(ibn_cfg),))
        self.ibn_cfg = tuple(ibn_cfg)
        self.conv1 = conv2d(3, stem_width, 7, 2)
        self.bn1 = InstanceNorm2d(stem_width) if ibn_cfg[0] == "b" else batch_norm2d(stem_width)
        self.relu = nn.ReLU()
        self.maxpool = MaxPool2dSymmetric(3, 2, 1)
        block_kwargs = dict(cardinality=cardinality, base_width=base_width, use_se=use_se)
        inplanes = stem_width
        self.layer1, inplanes = make_stage(block, inplanes, channels[0], layers[0], 1, ibn_cfg[0], **block_kwargs)
        self.layer2, inplanes = make_stage(block, inplanes, channels[1], layers[1], 2, ibn_cfg[1], **block_kwargs)
        self.layer3, inplanes = make_stage(block, inplanes, channels[2], layers[2], 2, ibn_cfg[2], **block_kwargs)
        self.layer4, inplanes = make_stage(block, inplanes, channels[3], layers[3], 2, ibn_cfg[3], **block_kwargs)
        self.num_features = inplanes
        self.reset_classifier(num_classes)

    def forward_features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return global_avg_pool(x)

    def forward_head(self, features, pre_logits: bool = False):
        if pre_logits:
            return features
        return self.fc(features)


def _create_resnet(block: Block, layers: Sequence[int], ibn_cfg: Sequence[Optional[str]], **kwargs) -> ResNetIBN:
    return ResNetIBN(block, layers, ibn_cfg, **kwargs)


IBN_A = ("a", "a", "a", None)
IBN_B = ("b", "b", None, None)
NO_IBN = (None, None, None, None)


@register_model
def resnet_ibn_a_tiny(**kwargs) -> ResNetIBN:
    """Tiny IBN-a ResNet for fast tests: BasicBlocks (1, 1, 1, 1), widths 16-128, real IBN placement."""
    kwargs.setdefault("channels", (16, 32, 64, 128))
    kwargs.setdefault("stem_width", 16)
    return _create_resnet(BasicBlock, (1, 1, 1, 1), IBN_A, **kwargs)


@register_model
def resnet18_ibn_a(**kwargs) -> ResNetIBN:
    return _create_resnet(BasicBlock, (2, 2, 2, 2), IBN_A, **kwargs)


@register_model
def resnet34_ibn_a(**kwargs) -> ResNetIBN:
    return _create_resnet(BasicBlock, (3, 4, 6, 3), IBN_A, **kwargs)


@register_model
def resnet50_ibn_a(**kwargs) -> ResNetIBN:
    return _create_resnet(Bottleneck, (3, 4, 6, 3), IBN_A, **kwargs)


@register_model
def resnet101_ibn_a(**kwargs) -> ResNetIBN:
    return _create_resnet(Bottleneck, (3, 4, 23, 3), IBN_A, **kwargs)


@register_model
def resnet152_ibn_a(**kwargs) -> ResNetIBN:
    return _create_resnet(Bottleneck, (3, 8, 36, 3), IBN_A, **kwargs)


@register_model
def resnet18_ibn_b(**kwargs) -> ResNetIBN:
    return _create_resnet(BasicBlock, (2, 2, 2, 2), IBN_B, **kwargs)


@register_model
def resnet34_ibn_b(**kwargs) -> ResNetIBN:
    return _create_resnet(BasicBlock, (3, 4, 6, 3), IBN_B, **kwargs)


@register_model
def resnet50_ibn_b(**kwargs) -> ResNetIBN:
    return _create_resnet(Bottleneck, (3, 4, 6, 3), IBN_B, **kwargs)


@register_model
def resnet101_ibn_b(**kwargs) -> ResNetIBN:
    return _create_resnet(Bottleneck, (3, 4, 23, 3), IBN_B, **kwargs)


@register_model
def resnet152_ibn_b(**kwargs) -> ResNetIBN:
    return _create_resnet(Bottleneck, (3, 8, 36, 3), IBN_B, **kwargs)


@register_model
def resnext101_ibn_a(**kwargs) -> ResNetIBN:
    """ResNeXt-101-IBN-a, 32x4d."""
    kwargs.setdefault("cardinality", 32)
    kwargs.setdefault("base_width", 4)
    return _create_resnet(Bottleneck, (3, 4, 23, 3), IBN_A, **kwargs)


@register_model
def se_resnet101_ibn_a(**kwargs) -> ResNetIBN:
    kwargs.setdefault("use_se", True)
    return _create_resnet(Bottleneck, (3, 4, 23, 3), IBN_A, **kwargs)


@register_model
def resnet18(**kwargs) -> ResNetIBN:
    """Plain-BN baseline (torchvision layout)."""
    return _create_resnet(BasicBlock, (2, 2, 2, 2), NO_IBN, **kwargs)


@register_model
def resnet34(**kwargs) -> ResNetIBN:
    return _create_resnet(BasicBlock, (3, 4, 6, 3), NO_IBN, **kwargs)


@register_model
def resnet50(**kwargs) -> ResNetIBN:
    return _create_resnet(Bottleneck, (3, 4, 6, 3), NO_IBN, **kwargs)


@register_model
def resnet101(**kwargs) -> ResNetIBN:
    return _create_resnet(Bottleneck, (3, 4, 23, 3), NO_IBN, **kwargs)
