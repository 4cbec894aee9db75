"""Building blocks written with operators that every MindSpore backend runs and exports.

Why not the stock layers (measured with MindSpore 2.10, see shared/notes/ibn-net.md):
- ``nn.InstanceNorm2d`` has no CPU kernel and ``nn.GroupNorm`` does not export to ONNX.
  Instance normalisation therefore has two forms with the same maths: for training and
  MindSpore evaluation, a training-mode BatchNorm over a (1, N*C, H, W) view (one fused
  kernel and its fused backward: 7x faster than the reduction form on CPU, forward and
  backward); for export (``portable_ops``), ReduceMean/Sub/Mul/Add/Sqrt/Div, which
  ONNX, Lite's converter and a dynamic batch dimension all accept (no Rsqrt: the ONNX
  exporter cannot map it).
- ``pad_mode='same'`` pads asymmetrically (the extra row/column at the end) whereas PyTorch
  pads symmetrically; convolutions therefore use ``pad_mode='pad'`` with ``k // 2``.
- ``nn.MaxPool2d(pad_mode='pad')`` lowers to MaxPool3DWithArgmax, which neither ONNX nor
  Lite accept; the pool pads explicitly and then pools with ``'valid'``.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import mindspore.nn as nn
import mindspore.ops as ops
from mindspore import dtype as mstype
from mindspore import Parameter
from mindspore.common.initializer import HeNormal, initializer

from ibnedge.architectures import NORM_EPS, Norm, ibn_norm

# PyTorch's default; MindSpore's BN ``momentum`` is the weight of the OLD running value,
# i.e. 1 - PyTorch's 0.1.
BN_MOMENTUM = 0.9


def conv2d(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """Bias-free conv with PyTorch's symmetric ``padding = kernel_size // 2``.

    Initialised like the official IBN-Net code: normal(0, sqrt(2 / (k * k * out_channels))),
    i.e. He normal over fan-out.
    """
    return nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        pad_mode="pad",
        padding=kernel_size // 2,
        group=groups,
        has_bias=False,
        weight_init=HeNormal(mode="fan_out", nonlinearity="relu"),
    )


def batch_norm2d(num_features: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(num_features, eps=NORM_EPS, momentum=BN_MOMENTUM)


def global_avg_pool(x):
    """(N, C, H, W) -> (N, C); any input size (the official ``AvgPool2d(7)`` assumed 224 px)."""
    return x.mean(axis=(2, 3), keep_dims=False)


class InstanceNorm2d(nn.Cell):
    """Affine instance normalisation with per-sample statistics in training AND eval.

    Same maths as ``torch.nn.InstanceNorm2d(C, affine=True)`` (biased variance, eps inside
    the square root, no running statistics). Parameters are ``gamma``/``beta`` like
    MindSpore's norms; the converter maps them from PyTorch's ``weight``/``bias``.

    ``portable=False`` (the default) normalises through a training-mode BatchNorm on a
    (1, N*C, H, W) view: BatchNorm's per-channel batch statistics are then exactly the
    per-sample, per-channel statistics of instance norm. Its running-statistics update
    goes to throwaway tensors. It needs a static batch size, so exports switch to
    ``portable=True`` (see ``portable_ops``): the same result from plain reductions.
    Mixed-precision training keeps this cell in float32 (``train.loop.mixed_precision``).
    """

    def __init__(self, num_features: int, eps: float = NORM_EPS, portable: bool = False) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.portable = portable
        self.gamma = Parameter(initializer("ones", (num_features,)), name="gamma")
        self.beta = Parameter(initializer("zeros", (num_features,)), name="beta")
        self.batch_norm = ops.BatchNorm(is_training=True, epsilon=eps)

    def construct(self, x):
        if self.portable:
            return self._reduction_form(x)
        n, c, h, w = x.shape
        flat_channels = n * c
        unused_mean = ops.zeros((flat_channels,), mstype.float32)
        unused_var = ops.ones((flat_channels,), mstype.float32)
        normed = self.batch_norm(
            x.reshape((1, flat_channels, h, w)),
            ops.tile(self.gamma, (n,)),
            ops.tile(self.beta, (n,)),
            unused_mean,
            unused_var,
        )[0]
        return normed.reshape((n, c, h, w))

    def _reduction_form(self, x):
        mean = x.mean(axis=(2, 3), keep_dims=True)
        centered = x - mean
        var = (centered * centered).mean(axis=(2, 3), keep_dims=True)
        normed = centered / ops.sqrt(var + self.eps)
        scale = self.gamma.reshape((1, self.num_features, 1, 1))
        shift = self.beta.reshape((1, self.num_features, 1, 1))
        return normed * scale + shift

    def extend_repr(self) -> str:
        return "num_features=%d, eps=%g, portable=%s" % (self.num_features, self.eps, self.portable)


@contextmanager
def portable_ops(net: nn.Cell) -> Iterator[nn.Cell]:
    """Within the block, every layer of ``net`` that has a fast and a portable form uses the
    portable one (for export to MINDIR/ONNX/AIR with a fixed or dynamic batch). The outputs
    are the same; the previous forms are restored on exit."""
    cells = [cell for _, cell in net.cells_and_names() if isinstance(cell, InstanceNorm2d)]
    before = [cell.portable for cell in cells]
    for cell in cells:
        cell.portable = True
    try:
        yield net
    finally:
        for cell, portable in zip(cells, before):
            cell.portable = portable


class IBN(nn.Cell):
    """Instance-Batch Normalisation: part of the channels through IN, the rest through BN.

    ``instance_first=True`` (ResNet family): the FIRST ``int(planes * ratio)`` channels are
    instance-normalised. ``instance_first=False`` (DenseNet-IBN-a): the first
    ``int(planes * (1 - ratio))`` channels are batch-normalised and the rest
    instance-normalised (``ibnedge.architectures.ibn_norm``); ``instance`` gives the IN
    channel count of a planned norm directly. Children are named ``IN`` and ``BN`` like the
    official modules.
    """

    def __init__(self, planes: int, ratio: float = 0.5, instance_first: bool = True,
                 instance: Optional[int] = None) -> None:
        super().__init__()
        if instance is None:
            norm = ibn_norm(planes, ratio, instance_first)
        else:
            norm = Norm(planes, instance, instance_first)
            if not norm.mixed:
                raise ValueError("IBN(planes=%d) with %d IN channels leaves no channel for IN or for BN" % (planes, instance))
        self.instance_first = instance_first
        self.split = norm.parts()[0][2]
        self.IN = InstanceNorm2d(norm.instance)
        self.BN = batch_norm2d(planes - norm.instance)

    def construct(self, x):
        head = x[:, : self.split]
        tail = x[:, self.split :]
        if self.instance_first:
            return ops.concat((self.IN(head), self.BN(tail)), axis=1)
        return ops.concat((self.BN(head), self.IN(tail)), axis=1)


def make_norm(norm: Norm) -> nn.Cell:
    """The cell of a planned norm: BatchNorm, InstanceNorm or the IBN mix."""
    if norm.mixed:
        return IBN(norm.channels, instance_first=norm.instance_first, instance=norm.instance)
    if norm.instance:
        return InstanceNorm2d(norm.channels)
    return batch_norm2d(norm.channels)


class MaxPool2dSymmetric(nn.Cell):
    """PyTorch's ``MaxPool2d(kernel_size, stride, padding)`` as explicit padding + 'valid' pool.

    Pads with zeros, which equals PyTorch's -inf padding because every use follows a ReLU
    (inputs are >= 0) and every window keeps at least one real pixel.
    """

    def __init__(self, kernel_size: int = 3, stride: int = 2, padding: int = 1) -> None:
        super().__init__()
        self.pad = nn.Pad(((0, 0), (0, 0), (padding, padding), (padding, padding))) if padding else nn.Identity()
        self.pool = nn.MaxPool2d(kernel_size=kernel_size, stride=stride, pad_mode="valid")

    def construct(self, x):
        return self.pool(self.pad(x))
