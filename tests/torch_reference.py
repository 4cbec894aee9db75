"""The tests' own PyTorch reference of the IBN-Net architectures (test-only; needs torch).

Written from the paper and the authors' published module layout so that ``state_dict()``
keys are exactly those of the official checkpoints (``layer1.0.bn1.IN.weight``,
``features.denseblock1.denselayer1.norm1.BN.running_mean``, ...). Nothing in ``train`` or
``ibnedge`` imports this file or torch.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class IBN(nn.Module):
    """IN on the first ``int(planes * ratio)`` channels, BN on the rest."""

    def __init__(self, planes: int, ratio: float = 0.5) -> None:
        super().__init__()
        self.half = int(planes * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x):
        head, tail = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat((self.IN(head.contiguous()), self.BN(tail.contiguous())), 1)


class DenseIBN(nn.Module):
    """DenseNet-IBN-a's variant: BN on the first ``int(planes * (1 - ratio))`` channels, IN on the rest."""

    def __init__(self, planes: int, ratio: float = 0.4) -> None:
        super().__init__()
        self.half = int(planes * (1 - ratio))
        self.BN = nn.BatchNorm2d(self.half)
        self.IN = nn.InstanceNorm2d(planes - self.half, affine=True)

    def forward(self, x):
        head, tail = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat((self.BN(head.contiguous()), self.IN(tail.contiguous())), 1)


class SELayer(nn.Module):
    def __init__(self, channel: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        hidden = int(channel / reduction)
        self.fc = nn.Sequential(
            nn.Linear(channel, hidden, bias=False), nn.ReLU(inplace=True),
            nn.Linear(hidden, channel, bias=False), nn.Sigmoid(),
        )

    def forward(self, x):
        b, c = x.shape[:2]
        return x * self.fc(self.avg_pool(x).view(b, c)).view(b, c, 1, 1)


def _norm1(ibn: Optional[str], channels: int) -> nn.Module:
    return IBN(channels) if ibn == "a" else nn.BatchNorm2d(channels)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, ibn=None, cardinality=1, base_width=64, se=False):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = _norm1(ibn, planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.IN = nn.InstanceNorm2d(planes, affine=True) if ibn == "b" else None
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + (self.downsample(x) if self.downsample is not None else x)
        if self.IN is not None:
            out = self.IN(out)
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, ibn=None, cardinality=1, base_width=64, se=False):
        super().__init__()
        width = int(math.floor(planes * (base_width / 64))) * cardinality
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = _norm1(ibn, width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.se = SELayer(planes * 4) if se else None
        self.IN = nn.InstanceNorm2d(planes * 4, affine=True) if ibn == "b" else None
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        out = out + (self.downsample(x) if self.downsample is not None else x)
        if self.IN is not None:
            out = self.IN(out)
        return self.relu(out)


class ResNetIBN(nn.Module):
    def __init__(self, block, layers, ibn_cfg, num_classes=1000, channels=(64, 128, 256, 512), stem_width=64,
                 cardinality=1, base_width=64, se=False):
        super().__init__()
        self.inplanes = stem_width
        self.block_kwargs = dict(cardinality=cardinality, base_width=base_width, se=se)
        self.conv1 = nn.Conv2d(3, stem_width, 7, 2, 3, bias=False)
        self.bn1 = nn.InstanceNorm2d(stem_width, affine=True) if ibn_cfg[0] == "b" else nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, channels[0], layers[0], 1, ibn_cfg[0])
        self.layer2 = self._make_layer(block, channels[1], layers[1], 2, ibn_cfg[1])
        self.layer3 = self._make_layer(block, channels[2], layers[2], 2, ibn_cfg[2])
        self.layer4 = self._make_layer(block, channels[3], layers[3], 2, ibn_cfg[3])
        self.fc = nn.Linear(channels[3] * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride, ibn):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, None if ibn == "b" and blocks > 1 else ibn,
                        **self.block_kwargs)]
        self.inplanes = planes * block.expansion
        for i in range(1, blocks):
            layers.append(block(self.inplanes, planes, 1, None, None if (ibn == "b" and i < blocks - 1) else ibn,
                                **self.block_kwargs))
        return nn.Sequential(*layers)

    def forward_features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))

    def forward(self, x):
        return self.fc(self.forward_features(x))


class _DenseLayer(nn.Sequential):
    def __init__(self, num_input_features, growth_rate, bn_size, ibn):
        super().__init__()
        self.add_module("norm1", DenseIBN(num_input_features, 0.4) if ibn else nn.BatchNorm2d(num_input_features))
        self.add_module("relu1", nn.ReLU(inplace=True))
        self.add_module("conv1", nn.Conv2d(num_input_features, bn_size * growth_rate, 1, bias=False))
        self.add_module("norm2", nn.BatchNorm2d(bn_size * growth_rate))
        self.add_module("relu2", nn.ReLU(inplace=True))
        self.add_module("conv2", nn.Conv2d(bn_size * growth_rate, growth_rate, 3, 1, 1, bias=False))

    def forward(self, x):
        return torch.cat([x, super().forward(x)], 1)


class DenseNetIBN(nn.Module):
    def __init__(self, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, bn_size=4, num_classes=1000):
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(3, num_init_features, 7, 2, 3, bias=False)),
            ("norm0", nn.BatchNorm2d(num_init_features)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(3, 2, 1)),
        ]))
        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            block = nn.Sequential()
            for j in range(num_layers):
                block.add_module("denselayer%d" % (j + 1), _DenseLayer(
                    num_features + j * growth_rate, growth_rate, bn_size, ibn=(i < 3 and j % 3 == 0)))
            self.features.add_module("denseblock%d" % (i + 1), block)
            num_features += num_layers * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module("transition%d" % (i + 1), nn.Sequential(OrderedDict([
                    ("norm", nn.BatchNorm2d(num_features)),
                    ("relu", nn.ReLU(inplace=True)),
                    ("conv", nn.Conv2d(num_features, num_features // 2, 1, bias=False)),
                    ("pool", nn.AvgPool2d(2, 2)),
                ])))
                num_features //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(num_features))
        self.classifier = nn.Linear(num_features, num_classes)

    def forward_features(self, x):
        return F.relu(self.features(x)).mean(dim=(2, 3))

    def forward(self, x):
        return self.classifier(self.forward_features(x))


A = ("a", "a", "a", None)
B = ("b", "b", None, None)
N = (None, None, None, None)

ARCHS: Dict[str, Callable[..., nn.Module]] = {
    "resnet_ibn_a_tiny": lambda **kw: ResNetIBN(BasicBlock, (1, 1, 1, 1), A, channels=(16, 32, 64, 128), stem_width=16, **kw),
    "resnet18_ibn_a": lambda **kw: ResNetIBN(BasicBlock, (2, 2, 2, 2), A, **kw),
    "resnet34_ibn_a": lambda **kw: ResNetIBN(BasicBlock, (3, 4, 6, 3), A, **kw),
    "resnet50_ibn_a": lambda **kw: ResNetIBN(Bottleneck, (3, 4, 6, 3), A, **kw),
    "resnet101_ibn_a": lambda **kw: ResNetIBN(Bottleneck, (3, 4, 23, 3), A, **kw),
    "resnet152_ibn_a": lambda **kw: ResNetIBN(Bottleneck, (3, 8, 36, 3), A, **kw),
    "resnet18_ibn_b": lambda **kw: ResNetIBN(BasicBlock, (2, 2, 2, 2), B, **kw),
    "resnet34_ibn_b": lambda **kw: ResNetIBN(BasicBlock, (3, 4, 6, 3), B, **kw),
    "resnet50_ibn_b": lambda **kw: ResNetIBN(Bottleneck, (3, 4, 6, 3), B, **kw),
    "resnet101_ibn_b": lambda **kw: ResNetIBN(Bottleneck, (3, 4, 23, 3), B, **kw),
    "resnet152_ibn_b": lambda **kw: ResNetIBN(Bottleneck, (3, 8, 36, 3), B, **kw),
    "resnext50_ibn_a": lambda **kw: ResNetIBN(Bottleneck, (3, 4, 6, 3), A, cardinality=32, base_width=4, **kw),
    "resnext101_ibn_a": lambda **kw: ResNetIBN(Bottleneck, (3, 4, 23, 3), A, cardinality=32, base_width=4, **kw),
    "resnext152_ibn_a": lambda **kw: ResNetIBN(Bottleneck, (3, 8, 36, 3), A, cardinality=32, base_width=4, **kw),
    "se_resnet50_ibn_a": lambda **kw: ResNetIBN(Bottleneck, (3, 4, 6, 3), A, se=True, **kw),
    "se_resnet101_ibn_a": lambda **kw: ResNetIBN(Bottleneck, (3, 4, 23, 3), A, se=True, **kw),
    "se_resnet152_ibn_a": lambda **kw: ResNetIBN(Bottleneck, (3, 8, 36, 3), A, se=True, **kw),
    "densenet121_ibn_a": lambda **kw: DenseNetIBN(32, (6, 12, 24, 16), 64, **kw),
    "densenet169_ibn_a": lambda **kw: DenseNetIBN(32, (6, 12, 32, 32), 64, **kw),
    "densenet201_ibn_a": lambda **kw: DenseNetIBN(32, (6, 12, 48, 32), 64, **kw),
    "densenet161_ibn_a": lambda **kw: DenseNetIBN(48, (6, 12, 36, 24), 96, **kw),
    "resnet18": lambda **kw: ResNetIBN(BasicBlock, (2, 2, 2, 2), N, **kw),
    "resnet34": lambda **kw: ResNetIBN(BasicBlock, (3, 4, 6, 3), N, **kw),
    "resnet50": lambda **kw: ResNetIBN(Bottleneck, (3, 4, 6, 3), N, **kw),
    "resnet101": lambda **kw: ResNetIBN(Bottleneck, (3, 4, 23, 3), N, **kw),
}


def build(name: str, num_classes: int = 1000, seed: int = 0) -> nn.Module:
    """The reference ``name`` with random weights AND non-trivial norm statistics/affines.

    Conv weights follow the official He-normal init (so activations stay O(1) through deep
    nets); every BN gets random running mean/var and affine, every IN a random affine, so a
    converter that drops or swaps any of them cannot pass the comparison.
    """
    torch.manual_seed(seed)
    model = ARCHS[name](num_classes=num_classes)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                module.weight.normal_(0, math.sqrt(2.0 / fan_out), generator=gen)
            elif isinstance(module, (nn.BatchNorm2d, nn.InstanceNorm2d)):
                c = module.num_features
                module.weight.copy_(torch.rand(c, generator=gen) * 0.8 + 0.6)
                module.bias.copy_(torch.randn(c, generator=gen) * 0.2)
                if isinstance(module, nn.BatchNorm2d):
                    module.running_mean.copy_(torch.randn(c, generator=gen) * 0.2)
                    module.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
                    module.num_batches_tracked.fill_(1234)
            elif isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.in_features)
                module.weight.uniform_(-bound, bound, generator=gen)
                if module.bias is not None:
                    module.bias.uniform_(-bound, bound, generator=gen)
        # The norm closing each residual branch gets a small scale, as in trained ResNets (and
        # zero-init-residual training). With unit-scale branches, a 50-block stack in training
        # mode (batch statistics) amplifies float32 rounding chaotically: PyTorch's own float32
        # logits of resnet152_ibn_a then differ from its float64 ones by 2.5e-4 x max |logit|,
        # which no float32 port can beat; with this scale that floor is 3e-6.
        for module in model.modules():
            closing = getattr(module, "bn3" if isinstance(module, Bottleneck) else "bn2", None)
            if isinstance(module, (BasicBlock, Bottleneck)) and closing is not None:
                closing.weight.copy_(torch.rand(closing.num_features, generator=gen) * 0.3 + 0.1)
    return model.eval()


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
