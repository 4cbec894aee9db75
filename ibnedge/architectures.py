"""Every IBN-Net variant as data, and what follows from it, with no framework.

One record per variant (the table at the end of this module) holds what defines the
network: family, block type, stage depths, widths and groups, where the IBN layers go,
squeeze-excitation, DenseNet growth and blocks, the official release file. Everything
else is derived from the records:

- the layer plan (``ResNetArch.stages()``, ``DenseNetArch.blocks()``) that
  ``train.models`` builds MindSpore cells from and ``ibnedge.onnx_builder`` builds ONNX
  graphs from;
- the official PyTorch ``state_dict`` keys with their shapes (``ArchBase.tensors``),
  which ``train.convert`` maps onto MindSpore names and the ONNX builder reads;
- the architecture a checkpoint holds, from its keys and shapes (``infer_arch``).

The facts (shared/notes/ibn-net.md, the authors' ``ibnnet/`` package):
- ResNet IBN-a, ``ibn=('a', 'a', 'a', None)``: in every block of layer1..3 the norm after
  the first conv (``bn1``) is an IBN: the FIRST ``int(width * 0.5)`` channels through an
  affine InstanceNorm (``bn1.IN``), the rest through BatchNorm (``bn1.BN``).
- ResNet IBN-b, ``ibn=('b', 'b', None, None)``: the stem's ``bn1`` is an affine
  InstanceNorm, and the LAST block of layer1 and layer2 applies ``IN`` after the residual
  add, before the ReLU.
- ResNeXt: bottleneck width ``floor(planes * base_width / 64) * cardinality``, grouped 3x3.
- SE: squeeze-excitation (``se.fc.0``/``se.fc.2``, bias-free, hidden ``int(C / 16)``) on
  the block output before the residual add.
- DenseNet-IBN-a: BN-first IBN, ``int(C * 0.6)`` channels BN and the rest IN
  (``ratio=0.4``), at ``norm1`` of dense layers ``i % 3 == 0`` of dense blocks 1-3.
- Every norm uses eps 1e-5; the head is a global average pool (the official
  ``AvgPool2d(7)`` at 224 px) and a linear classifier (``fc`` or ``classifier``).

Python 3.7, no NumPy: values only need a ``.shape``.
"""
from __future__ import annotations

import difflib
import functools
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterator, List, Mapping, Optional, Sequence, Tuple

from .errors import UserError

NORM_EPS = 1e-5
RESNET_IBN_RATIO = 0.5
DENSENET_IBN_RATIO = 0.4
SE_REDUCTION = 16
RELEASE_URL = "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/"

IBN_A = ("a", "a", "a", None)
IBN_B = ("b", "b", None, None)
NO_IBN = (None, None, None, None)

Shape = Tuple[int, ...]


class UnknownArchitecture(UserError, ValueError):
    """A name or a checkpoint that matches no described architecture; the message says what to pass."""


# --------------------------------------------------------------------------- layer plan


@dataclass(frozen=True)
class Norm:
    """The normalisation of ``channels`` channels after a conv.

    ``instance`` of them are instance-normalised (0: BatchNorm alone; ``channels``:
    InstanceNorm alone): the first ones when ``instance_first`` (ResNet IBN-a), else the
    last ones (DenseNet-IBN-a). A mixed norm has the children ``IN`` and ``BN``.
    """

    channels: int
    instance: int = 0
    instance_first: bool = True

    @property
    def mixed(self) -> bool:
        return 0 < self.instance < self.channels

    def parts(self) -> List[Tuple[str, str, int]]:
        """``(child name, "in" or "bn", channels)`` in channel order; the child is "" for a plain norm."""
        if self.instance == 0:
            return [("", "bn", self.channels)]
        if self.instance == self.channels:
            return [("", "in", self.channels)]
        instance, batch = ("IN", "in", self.instance), ("BN", "bn", self.channels - self.instance)
        return [instance, batch] if self.instance_first else [batch, instance]


def ibn_norm(channels: int, ratio: float, instance_first: bool = True) -> Norm:
    """The official IBN split: ``int(channels * ratio)`` IN channels first, or (BN first)
    ``int(channels * (1 - ratio))`` BN channels and the rest IN."""
    if instance_first:
        instance = int(channels * ratio)
    else:
        instance = channels - int(channels * (1 - ratio))
    if not 0 < instance < channels:
        raise ValueError("IBN(planes=%d, ratio=%g) leaves no channel for IN or for BN" % (channels, ratio))
    return Norm(channels, instance, instance_first)


@dataclass(frozen=True)
class ResidualBlock:
    """One residual block, ``name`` like ``layer2.0``: conv1 (1x1 in a bottleneck, else 3x3,
    stride here in a basic block), ``bn1``, conv2 (3x3, grouped, the bottleneck's stride),
    ``bn2``, [conv3, ``bn3``], [``se``], + shortcut (``downsample``: 1x1 conv + BN), [``IN``], ReLU."""

    name: str
    bottleneck: bool
    in_channels: int
    width: int
    out_channels: int
    stride: int
    groups: int
    norm1: Norm
    se_hidden: int  # 0: no squeeze-excitation
    downsample: bool
    post_add_norm: bool  # IBN-b: InstanceNorm after the residual add


@dataclass(frozen=True)
class DenseLayer:
    """``name`` like ``features.denseblock1.denselayer1``: norm1-ReLU-conv1 (1x1 to
    ``bottleneck``)-norm2-ReLU-conv2 (3x3 to ``growth``), concatenated to its input."""

    name: str
    in_channels: int
    bottleneck: int
    growth: int
    norm1: Norm


@dataclass(frozen=True)
class Transition:
    """``name`` like ``features.transition1``: norm-ReLU-conv (1x1)-AvgPool(2, 2)."""

    name: str
    in_channels: int
    out_channels: int


@dataclass(frozen=True)
class DenseBlock:
    name: str
    layers: Tuple[DenseLayer, ...]
    transition: Optional[Transition]  # None after the last block


@dataclass(frozen=True)
class Tensor:
    """One entry of the official ``state_dict`` (BN ``num_batches_tracked`` counters left out).

    ``module`` is ``conv``, ``linear``, ``batch_norm`` or ``instance_norm``: what the leaf
    (``weight``, ``bias``, ``running_mean``, ``running_var``) belongs to.
    """

    key: str
    shape: Shape
    module: str


# --------------------------------------------------------------------------- the records


@dataclass(frozen=True)
class ArchBase:
    name: str
    weights: str = ""  # the official release file; "" where upstream released none

    family = ""
    classifier = ""

    @property
    def weights_url(self) -> str:
        return RELEASE_URL + self.weights if self.weights else ""

    def tensors(self, num_classes: int = 1000) -> List[Tensor]:
        """The official ``state_dict`` keys and shapes in their order; ``num_classes=0``: headless."""
        return list(_cached_tensors(self, num_classes))

    def _features(self) -> Iterator[Tensor]:
        raise NotImplementedError

    @property
    def num_features(self) -> int:
        raise NotImplementedError


@dataclass(frozen=True)
class ResNetArch(ArchBase):
    """ResNet / ResNeXt / SE-ResNet with IBN placement ``ibn`` (one entry per stage)."""

    block: str = "bottleneck"  # or "basic"
    layers: Tuple[int, int, int, int] = (3, 4, 6, 3)
    ibn: Tuple[Optional[str], ...] = IBN_A
    channels: Tuple[int, int, int, int] = (64, 128, 256, 512)
    stem_width: int = 64
    cardinality: int = 1
    base_width: int = 64
    se: bool = False

    family = "resnet"
    classifier = "fc"

    def __post_init__(self) -> None:
        if self.block not in ("basic", "bottleneck"):
            raise ValueError("%s: block must be 'basic' or 'bottleneck', got %r" % (self.name, self.block))
        if len(self.layers) != 4 or len(self.ibn) != 4 or len(self.channels) != 4:
            raise ValueError("%s: layers, ibn and channels need one entry per stage (4)" % self.name)
        if any(c not in ("a", "b", None) for c in self.ibn):
            raise ValueError("%s: ibn entries must be 'a', 'b' or None, got %r" % (self.name, tuple(self.ibn)))
        if self.block == "basic" and (self.cardinality != 1 or self.base_width != 64 or self.se):
            raise ValueError("%s: basic blocks support neither ResNeXt grouping nor SE; use bottleneck" % self.name)

    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1

    @property
    def num_features(self) -> int:
        return self.channels[3] * self.expansion

    def stem_norm(self) -> Norm:
        """``bn1`` after the 7x7 stem conv: InstanceNorm for IBN-b, else BatchNorm."""
        return Norm(self.stem_width, self.stem_width if self.ibn[0] == "b" else 0)

    def stages(self) -> List[List[ResidualBlock]]:
        """The blocks of layer1..layer4."""
        stages = []
        in_channels = self.stem_width
        for index, (planes, depth, ibn) in enumerate(zip(self.channels, self.layers, self.ibn)):
            stride = 1 if index == 0 else 2
            out_channels = planes * self.expansion
            if self.block == "bottleneck":
                width = int(math.floor(planes * (self.base_width / 64))) * self.cardinality
            else:
                width = planes
            blocks = []
            for b in range(depth):
                block_in = in_channels if b == 0 else out_channels
                blocks.append(ResidualBlock(
                    name="layer%d.%d" % (index + 1, b),
                    bottleneck=self.block == "bottleneck",
                    in_channels=block_in,
                    width=width,
                    out_channels=out_channels,
                    stride=stride if b == 0 else 1,
                    groups=self.cardinality,
                    norm1=ibn_norm(width, RESNET_IBN_RATIO) if ibn == "a" else Norm(width),
                    se_hidden=int(out_channels / SE_REDUCTION) if self.se else 0,
                    downsample=b == 0 and (stride != 1 or block_in != out_channels),
                    post_add_norm=ibn == "b" and b == depth - 1,
                ))
            stages.append(blocks)
            in_channels = out_channels
        return stages

    def _features(self) -> Iterator[Tensor]:
        yield _conv("conv1", self.stem_width, 3, 7)
        yield from _norm("bn1", self.stem_norm())
        for blocks in self.stages():
            for block in blocks:
                yield from _residual_block(block)


@dataclass(frozen=True)
class DenseNetArch(ArchBase):
    """DenseNet-BC with IBN-a in dense blocks 1-3."""

    block_config: Tuple[int, ...] = (6, 12, 24, 16)
    growth_rate: int = 32
    num_init_features: int = 64
    bn_size: int = 4

    family = "densenet"
    classifier = "classifier"

    def stem_norm(self) -> Norm:
        return Norm(self.num_init_features)

    def blocks(self) -> List[DenseBlock]:
        blocks = []
        channels = self.num_init_features
        last = len(self.block_config) - 1
        for index, depth in enumerate(self.block_config):
            name = "features.denseblock%d" % (index + 1)
            layers = []
            for i in range(depth):
                in_channels = channels + i * self.growth_rate
                ibn = index < 3 and i % 3 == 0
                norm1 = ibn_norm(in_channels, DENSENET_IBN_RATIO, instance_first=False) if ibn else Norm(in_channels)
                layers.append(DenseLayer("%s.denselayer%d" % (name, i + 1), in_channels,
                                         self.bn_size * self.growth_rate, self.growth_rate, norm1))
            channels += depth * self.growth_rate
            transition = None
            if index != last:
                transition = Transition("features.transition%d" % (index + 1), channels, channels // 2)
                channels //= 2
            blocks.append(DenseBlock(name, tuple(layers), transition))
        return blocks

    @property
    def num_features(self) -> int:
        blocks = self.blocks()
        last = blocks[-1].layers[-1]
        return last.in_channels + last.growth

    def _features(self) -> Iterator[Tensor]:
        yield _conv("features.conv0", self.num_init_features, 3, 7)
        yield from _norm("features.norm0", self.stem_norm())
        for block in self.blocks():
            for layer in block.layers:
                yield from _norm(layer.name + ".norm1", layer.norm1)
                yield _conv(layer.name + ".conv1", layer.bottleneck, layer.in_channels, 1)
                yield from _norm(layer.name + ".norm2", Norm(layer.bottleneck))
                yield _conv(layer.name + ".conv2", layer.growth, layer.bottleneck, 3)
            if block.transition is not None:
                t = block.transition
                yield from _norm(t.name + ".norm", Norm(t.in_channels))
                yield _conv(t.name + ".conv", t.out_channels, t.in_channels, 1)
        yield from _norm("features.norm5", Norm(self.num_features))


# --------------------------------------------------------------------------- official keys


def _conv(name: str, out_channels: int, in_per_group: int, kernel: int) -> Tensor:
    return Tensor(name + ".weight", (out_channels, in_per_group, kernel, kernel), "conv")


def _norm(name: str, norm: Norm) -> Iterator[Tensor]:
    for child, kind, channels in norm.parts():
        prefix = "%s.%s" % (name, child) if child else name
        if kind == "in":
            leaves, module = ("weight", "bias"), "instance_norm"
        else:
            leaves, module = ("weight", "bias", "running_mean", "running_var"), "batch_norm"
        for leaf in leaves:
            yield Tensor("%s.%s" % (prefix, leaf), (channels,), module)


def _residual_block(block: ResidualBlock) -> Iterator[Tensor]:
    n = block.name
    if block.bottleneck:
        yield _conv(n + ".conv1", block.width, block.in_channels, 1)
        yield from _norm(n + ".bn1", block.norm1)
        yield _conv(n + ".conv2", block.width, block.width // block.groups, 3)
        yield from _norm(n + ".bn2", Norm(block.width))
        yield _conv(n + ".conv3", block.out_channels, block.width, 1)
        yield from _norm(n + ".bn3", Norm(block.out_channels))
    else:
        yield _conv(n + ".conv1", block.width, block.in_channels, 3)
        yield from _norm(n + ".bn1", block.norm1)
        yield _conv(n + ".conv2", block.out_channels, block.width, 3)
        yield from _norm(n + ".bn2", Norm(block.out_channels))
    if block.se_hidden:
        yield Tensor(n + ".se.fc.0.weight", (block.se_hidden, block.out_channels), "linear")
        yield Tensor(n + ".se.fc.2.weight", (block.out_channels, block.se_hidden), "linear")
    if block.post_add_norm:
        yield from _norm(n + ".IN", Norm(block.out_channels, block.out_channels))
    if block.downsample:
        yield _conv(n + ".downsample.0", block.out_channels, block.in_channels, 1)
        yield from _norm(n + ".downsample.1", Norm(block.out_channels))


@functools.lru_cache(maxsize=256)
def _cached_tensors(arch: ArchBase, num_classes: int) -> Tuple[Tensor, ...]:
    if num_classes < 0:
        raise ValueError("num_classes must be >= 0, got %d" % num_classes)
    head = ()  # type: Tuple[Tensor, ...]
    if num_classes:
        head = (Tensor(arch.classifier + ".weight", (num_classes, arch.num_features), "linear"),
                Tensor(arch.classifier + ".bias", (num_classes,), "linear"))
    return tuple(arch._features()) + head


# --------------------------------------------------------------------------- checkpoints


@dataclass
class StateDictCheck:
    """How a state_dict fits an architecture: official keys it lacks, keys it has that the
    architecture does not, and ``(key, file shape, expected shape)`` mismatches."""

    missing: List[str]
    unexpected: List[str]
    mismatched: List[Tuple[str, Shape, Shape]]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def classifier_keys() -> Tuple[str, ...]:
    """The classifier weight key of every family (``fc.weight``, ``classifier.weight``)."""
    return tuple(sorted({arch.classifier + ".weight" for arch in ARCHITECTURES.values()}))


def num_classes_of(state_dict: Mapping[str, Any]) -> int:
    """The classifier's output rows; 0 for a headless checkpoint."""
    for key in classifier_keys():
        if key in state_dict:
            return int(state_dict[key].shape[0])
    return 0


def check_state_dict(arch: ArchBase, state_dict: Mapping[str, Any], num_classes: int) -> StateDictCheck:
    expected = arch.tensors(num_classes)
    keys = {t.key for t in expected}
    missing, mismatched = [], []
    for tensor in expected:
        value = state_dict.get(tensor.key)
        if value is None:
            missing.append(tensor.key)
        elif tuple(value.shape) != tensor.shape:
            mismatched.append((tensor.key, tuple(int(s) for s in value.shape), tensor.shape))
    return StateDictCheck(missing, [k for k in state_dict if k not in keys], mismatched)


def infer_arch(state_dict: Mapping[str, Any], source: Optional[str] = None) -> str:
    """The variant whose every official key the state_dict holds with the right shape (the
    largest such one: resnet18's keys are a subset of resnet34's); extra keys (a re-ID head,
    optimizer state) are allowed. Raises UnknownArchitecture naming the closest variant,
    and ``source`` (the file the state_dict was read from) when given."""
    num_classes = num_classes_of(state_dict)
    best, closest = None, None  # type: Optional[Tuple[int, str]], Optional[Tuple[int, ArchBase, StateDictCheck]]
    for arch in ARCHITECTURES.values():
        check = check_state_dict(arch, state_dict, num_classes)
        present = len(state_dict) - len(check.unexpected)
        if not check.missing and not check.mismatched:
            if best is None or present > best[0]:
                best = (present, arch.name)
        score = present - 2 * len(check.mismatched) - len(check.missing)  # right keys minus wrong ones
        if closest is None or score > closest[0]:
            closest = (score, arch, check)
    if best is not None:
        return best[1]
    hint = ""
    if closest is not None and closest[0] > 0:
        _, arch, check = closest
        wrong = set(check.missing) | {key for key, _, _ in check.mismatched}
        keys = [t.key for t in arch.tensors(num_classes) if t.key in wrong]
        hint = " (closest: %s, which also needs %s%s)" % (
            arch.name, ", ".join(keys[:5]), " and %d more" % (len(keys) - 5) if len(keys) > 5 else "")
    raise UnknownArchitecture(
        "%scannot infer the architecture from the checkpoint's keys%s: pass --arch NAME (one of %s)"
        % ("%s: " % source if source else "", hint, ", ".join(names()))
    )


# --------------------------------------------------------------------------- lookup


def names() -> List[str]:
    return sorted(ARCHITECTURES)


def get(name: str) -> ArchBase:
    """The record of ``name``; an unknown name lists the closest valid ones."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise unknown_name(name, names()) from None


def unknown_name(name: str, choices: Sequence[str]) -> UnknownArchitecture:
    close = difflib.get_close_matches(name, choices, n=5, cutoff=0.5)
    hint = ("did you mean: %s? " % ", ".join(close)) if close else ""
    return UnknownArchitecture("unknown model %r: %sregistered models are %s" % (name, hint, ", ".join(sorted(choices))))


def of_family(family: str) -> List[ArchBase]:
    return [arch for arch in ARCHITECTURES.values() if arch.family == family]


# --------------------------------------------------------------------------- the variants
# Upstream (XingangPan/IBN-Net, ibnnet/): resnet_ibn.py, resnext_ibn.py, se_resnet_ibn.py,
# densenet_ibn.py. ``weights``: the v1.0 release files (sha256 prefix in the name); the
# others have definitions only. The plain resnets are torchvision's layout, as baselines.

_B, _BASIC = "bottleneck", "basic"
_VARIANTS: Tuple[ArchBase, ...] = (
    # Tiny IBN-a ResNet for fast tests: real IBN placement, small widths. Not upstream.
    ResNetArch("resnet_ibn_a_tiny", block=_BASIC, layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), stem_width=16),
    ResNetArch("resnet18_ibn_a", "resnet18_ibn_a-2f571257.pth", block=_BASIC, layers=(2, 2, 2, 2)),
    ResNetArch("resnet34_ibn_a", "resnet34_ibn_a-94bc1577.pth", block=_BASIC, layers=(3, 4, 6, 3)),
    ResNetArch("resnet50_ibn_a", "resnet50_ibn_a-d9d0bb7b.pth", layers=(3, 4, 6, 3)),
    ResNetArch("resnet101_ibn_a", "resnet101_ibn_a-59ea0ac6.pth", layers=(3, 4, 23, 3)),
    ResNetArch("resnet152_ibn_a", layers=(3, 8, 36, 3)),
    ResNetArch("resnet18_ibn_b", "resnet18_ibn_b-bc2f3c11.pth", block=_BASIC, layers=(2, 2, 2, 2), ibn=IBN_B),
    ResNetArch("resnet34_ibn_b", "resnet34_ibn_b-04134c37.pth", block=_BASIC, layers=(3, 4, 6, 3), ibn=IBN_B),
    ResNetArch("resnet50_ibn_b", "resnet50_ibn_b-9ca61e85.pth", layers=(3, 4, 6, 3), ibn=IBN_B),
    ResNetArch("resnet101_ibn_b", "resnet101_ibn_b-c55f6dba.pth", layers=(3, 4, 23, 3), ibn=IBN_B),
    ResNetArch("resnet152_ibn_b", layers=(3, 8, 36, 3), ibn=IBN_B),
    ResNetArch("resnext50_ibn_a", layers=(3, 4, 6, 3), cardinality=32, base_width=4),
    ResNetArch("resnext101_ibn_a", "resnext101_ibn_a-6ace051d.pth", layers=(3, 4, 23, 3), cardinality=32, base_width=4),
    ResNetArch("resnext152_ibn_a", layers=(3, 8, 36, 3), cardinality=32, base_width=4),
    ResNetArch("se_resnet50_ibn_a", layers=(3, 4, 6, 3), se=True),
    ResNetArch("se_resnet101_ibn_a", "se_resnet101_ibn_a-fabed4e2.pth", layers=(3, 4, 23, 3), se=True),
    ResNetArch("se_resnet152_ibn_a", layers=(3, 8, 36, 3), se=True),
    DenseNetArch("densenet121_ibn_a", "densenet121_ibn_a-e4af5cc1.pth", block_config=(6, 12, 24, 16)),
    DenseNetArch("densenet169_ibn_a", "densenet169_ibn_a-9f32c161.pth", block_config=(6, 12, 32, 32)),
    DenseNetArch("densenet201_ibn_a", block_config=(6, 12, 48, 32)),
    DenseNetArch("densenet161_ibn_a", block_config=(6, 12, 36, 24), growth_rate=48, num_init_features=96),
    ResNetArch("resnet18", block=_BASIC, layers=(2, 2, 2, 2), ibn=NO_IBN),
    ResNetArch("resnet34", block=_BASIC, layers=(3, 4, 6, 3), ibn=NO_IBN),
    ResNetArch("resnet50", layers=(3, 4, 6, 3), ibn=NO_IBN),
    ResNetArch("resnet101", layers=(3, 4, 23, 3), ibn=NO_IBN),
)

ARCHITECTURES: "OrderedDict[str, ArchBase]" = OrderedDict((arch.name, arch) for arch in _VARIANTS)
if len(ARCHITECTURES) != len(_VARIANTS):
    raise RuntimeError("ibnedge.architectures: a variant name is listed twice")
