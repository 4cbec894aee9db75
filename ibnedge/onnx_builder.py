"""Official IBN-Net weights (``.pth``) -> an ONNX graph, with neither PyTorch nor MindSpore.

    build_from_pth("resnet50_ibn_a-d9d0bb7b.pth", "resnet50_ibn_a.onnx")  # + resnet50_ibn_a.json

The graph is written node by node from the layer plan of ``ibnedge.architectures``, with
the checkpoint's tensors as initializers (named by their official keys), for the ``onnx``
package alone; ``ibnedge convert`` then makes a MindSpore Lite model of it. The ``.pth``
is read by the restricted unpickler (``ibnedge.pth_reader``). ``train.export`` stays the
route for models trained here.

What the runtimes accept (measured with MindSpore Lite 2.0's converter and ONNX Runtime):
- opset 11, IR version 6, float32, a symbolic batch dimension ("batch").
- Conv nodes carry every attribute (kernel_shape, strides, pads, dilations, group): Lite
  2.0 fails on a Conv without strides/dilations ("kernel_size/stride/dilation is nullptr").
- MaxPool nodes carry no ``dilations``: Lite 2.0 rejects the attribute ("pooling op not
  support dilations now"). Its symmetric ``pads`` pad with -inf, as PyTorch does.
- InstanceNorm is the ONNX ``InstanceNormalization`` operator: one node, which Lite 2.0
  converts and runs (relative error 2e-7 against ONNX Runtime), and which the Ascend
  converter supports for opsets 8-18 in float16 and float32 without restrictions (CANN
  ONNX operator specification, InstanceNormalization: hiascend.com, canncommercial
  apiref/aolapi atlasoxol_09_0082). The reduction form that ``train.export`` writes
  (ReduceMean/Sub/Mul/ReduceMean/Add/Sqrt/Div) converts as well, but squares deviations
  in the graph's precision, which overflows float16 for activations in the hundreds.
- BatchNormalization in inference form with the official eps 1e-5; the head is
  GlobalAveragePool + Flatten + Gemm (the official AvgPool2d(7) at 224 px, any size here);
  squeeze-excitation is GlobalAveragePool + two 1x1 Conv (the FC weights reshaped) +
  Sigmoid + Mul, so no Reshape pins the batch size.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import architectures
from .architectures import DenseNetArch, Norm, ResidualBlock, ResNetArch
from .errors import UserError
from .metadata import ModelMetadata, embed_in_onnx, save_for_model

PathLike = Union[str, "os.PathLike[str]"]

OPSET = 11
IR_VERSION = 6
INPUT_NAME = "input"
OUTPUT_NAME = "logits"  # "features" for a headless checkpoint


class OnnxBuildError(UserError, ValueError):
    """The checkpoint does not fit the architecture, or the ``onnx`` package is missing."""


@dataclass
class BuiltModel:
    """What ``build_from_pth`` wrote: the ONNX file (its metadata embedded) and the metadata saved beside it."""

    path: Path
    metadata_path: Path
    metadata: ModelMetadata


class _Graph:
    """Nodes and initializers of one ONNX graph; every op returns its output's name."""

    def __init__(self, state_dict: Mapping[str, np.ndarray]) -> None:
        from onnx import helper, numpy_helper

        self._helper = helper
        self._numpy_helper = numpy_helper
        self.state_dict = state_dict
        self.nodes = []  # type: List[Any]
        self.initializers = []  # type: List[Any]
        self._count = 0

    def weight(self, key: str, shape: Optional[Sequence[int]] = None) -> str:
        """The checkpoint tensor ``key`` as a float32 initializer of the same name (reshaped to ``shape``)."""
        value = np.ascontiguousarray(self.state_dict[key], dtype=np.float32)
        if shape is not None:
            value = value.reshape(tuple(shape))
        self.initializers.append(self._numpy_helper.from_array(value, key))
        return key

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(self._numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], name: str = "", **attrs: Any) -> str:
        self._count += 1
        output = "%s_%d" % (name or op_type.lower(), self._count)
        self.nodes.append(self._helper.make_node(op_type, list(inputs), [output], name=output, **attrs))
        return output

    # -- layers ---------------------------------------------------------------------------

    def conv(self, x: str, key: str, stride: int = 1, groups: int = 1) -> str:
        kernel = int(self.state_dict[key].shape[2])
        pad = kernel // 2
        return self.op("Conv", [x, self.weight(key)], key, kernel_shape=[kernel, kernel], strides=[stride, stride],
                       pads=[pad, pad, pad, pad], dilations=[1, 1], group=groups)

    def norm(self, x: str, prefix: str, norm: Norm) -> str:
        """BatchNorm, InstanceNorm or the IBN mix (channel slices normalised apart, then concatenated)."""
        parts = norm.parts()
        if len(parts) == 1:
            return self._single_norm(x, prefix, parts[0][1])
        outputs = []
        start = 0
        for child, kind, channels in parts:
            piece = self.slice_channels(x, start, start + channels, "%s.%s" % (prefix, child))
            outputs.append(self._single_norm(piece, "%s.%s" % (prefix, child), kind))
            start += channels
        return self.op("Concat", outputs, prefix, axis=1)

    def _single_norm(self, x: str, prefix: str, kind: str) -> str:
        scale, bias = self.weight(prefix + ".weight"), self.weight(prefix + ".bias")
        if kind == "in":
            return self.op("InstanceNormalization", [x, scale, bias], prefix, epsilon=architectures.NORM_EPS)
        mean, var = self.weight(prefix + ".running_mean"), self.weight(prefix + ".running_var")
        return self.op("BatchNormalization", [x, scale, bias, mean, var], prefix, epsilon=architectures.NORM_EPS)

    def slice_channels(self, x: str, start: int, end: int, name: str) -> str:
        bounds = [self.constant("%s.%s" % (name, label), np.array([v], dtype=np.int64))
                  for label, v in (("start", start), ("end", end), ("axis", 1))]
        return self.op("Slice", [x] + bounds, name)

    def relu(self, x: str) -> str:
        return self.op("Relu", [x])

    def max_pool(self, x: str) -> str:
        return self.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])

    def avg_pool(self, x: str) -> str:
        return self.op("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])

    def pooled(self, x: str) -> str:
        """(N, C, H, W) -> (N, C)."""
        return self.op("Flatten", [self.op("GlobalAveragePool", [x])], axis=1)

    def linear(self, x: str, prefix: str) -> str:
        return self.op("Gemm", [x, self.weight(prefix + ".weight"), self.weight(prefix + ".bias")], prefix, transB=1)

    def squeeze_excitation(self, x: str, prefix: str) -> str:
        squeeze = self.op("GlobalAveragePool", [x])
        hidden = self.relu(self._fc_as_conv(squeeze, prefix + ".fc.0.weight"))
        gate = self.op("Sigmoid", [self._fc_as_conv(hidden, prefix + ".fc.2.weight")])
        return self.op("Mul", [x, gate], prefix)

    def _fc_as_conv(self, x: str, key: str) -> str:
        rows, cols = self.state_dict[key].shape
        return self.op("Conv", [x, self.weight(key, (rows, cols, 1, 1))], key, kernel_shape=[1, 1], strides=[1, 1],
                       pads=[0, 0, 0, 0], dilations=[1, 1], group=1)


# --------------------------------------------------------------------------- families


def _residual_block(g: _Graph, x: str, block: ResidualBlock) -> str:
    n = block.name
    if block.bottleneck:
        out = g.relu(g.norm(g.conv(x, n + ".conv1.weight"), n + ".bn1", block.norm1))
        out = g.relu(g.norm(g.conv(out, n + ".conv2.weight", block.stride, block.groups), n + ".bn2", Norm(block.width)))
        out = g.norm(g.conv(out, n + ".conv3.weight"), n + ".bn3", Norm(block.out_channels))
    else:
        out = g.relu(g.norm(g.conv(x, n + ".conv1.weight", block.stride), n + ".bn1", block.norm1))
        out = g.norm(g.conv(out, n + ".conv2.weight"), n + ".bn2", Norm(block.out_channels))
    if block.se_hidden:
        out = g.squeeze_excitation(out, n + ".se")
    shortcut = x
    if block.downsample:
        shortcut = g.norm(g.conv(x, n + ".downsample.0.weight", block.stride), n + ".downsample.1",
                          Norm(block.out_channels))
    out = g.op("Add", [out, shortcut], n)
    if block.post_add_norm:
        out = g.norm(out, n + ".IN", Norm(block.out_channels, block.out_channels))
    return g.relu(out)


def _resnet_features(g: _Graph, x: str, arch: ResNetArch) -> str:
    x = g.max_pool(g.relu(g.norm(g.conv(x, "conv1.weight", 2), "bn1", arch.stem_norm())))
    for blocks in arch.stages():
        for block in blocks:
            x = _residual_block(g, x, block)
    return g.pooled(x)


def _densenet_features(g: _Graph, x: str, arch: DenseNetArch) -> str:
    x = g.max_pool(g.relu(g.norm(g.conv(x, "features.conv0.weight", 2), "features.norm0", arch.stem_norm())))
    for block in arch.blocks():
        for layer in block.layers:
            new = g.conv(g.relu(g.norm(x, layer.name + ".norm1", layer.norm1)), layer.name + ".conv1.weight")
            new = g.conv(g.relu(g.norm(new, layer.name + ".norm2", Norm(layer.bottleneck))), layer.name + ".conv2.weight")
            x = g.op("Concat", [x, new], layer.name, axis=1)
        if block.transition is not None:
            t = block.transition
            x = g.avg_pool(g.conv(g.relu(g.norm(x, t.name + ".norm", Norm(t.in_channels))), t.name + ".conv.weight"))
    return g.pooled(g.relu(g.norm(x, "features.norm5", Norm(arch.num_features))))


_FEATURES = {ResNetArch.family: _resnet_features, DenseNetArch.family: _densenet_features}


# --------------------------------------------------------------------------- public API


def _onnx():
    try:
        import onnx
    except ImportError as exc:
        raise OnnxBuildError("building an ONNX model needs the onnx package (%s): pip install onnx" % exc) from None
    return onnx


def build_model(arch: str, state_dict: Mapping[str, np.ndarray], input_size: Tuple[int, int] = (224, 224),
                source: str = "checkpoint"):
    """The ``onnx.ModelProto`` of ``arch`` with the weights of ``state_dict`` (official keys).

    Input ``input`` (batch, 3, H, W) with a symbolic batch; output ``logits`` (batch,
    classes), or ``features`` for a headless checkpoint. Every official key must be there
    with its shape and no other key may be (OnnxBuildError lists them, naming ``source``).
    """
    onnx = _onnx()
    check_fits(arch, state_dict, source)
    description = architectures.get(arch)
    num_classes = architectures.num_classes_of(state_dict)
    height, width = (int(v) for v in input_size)
    if min(height, width) < 32:
        raise OnnxBuildError("input_size must be at least 32x32 (five stride-2 stages), got %r" % (tuple(input_size),))
    g = _Graph(state_dict)
    output = _FEATURES[description.family](g, INPUT_NAME, description)
    output_name, columns = "features", description.num_features
    if num_classes:
        output = g.linear(output, description.classifier)
        output_name, columns = OUTPUT_NAME, num_classes
    g.nodes[-1].output[0] = output_name  # the last node's output is the graph's
    graph = onnx.helper.make_graph(
        g.nodes, arch,
        [onnx.helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, ["batch", 3, height, width])],
        [onnx.helper.make_tensor_value_info(output_name, onnx.TensorProto.FLOAT, ["batch", columns])],
        initializer=g.initializers,
    )
    model = onnx.helper.make_model(graph, producer_name="ibnedge.onnx_builder",
                                   opset_imports=[onnx.helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def check_fits(arch: str, state_dict: Mapping[str, np.ndarray], source: str = "checkpoint") -> None:
    """OnnxBuildError naming ``source`` and every wrong key unless ``state_dict`` holds
    exactly ``arch``'s official keys with their shapes."""
    check = architectures.check_state_dict(architectures.get(arch), state_dict,
                                           architectures.num_classes_of(state_dict))
    if not check.ok:
        raise OnnxBuildError("%s does not match %s: %s" % (source, arch, _problems(check)))


def _problems(check: architectures.StateDictCheck) -> str:
    lines = []
    if check.missing:
        lines.append("missing %s" % ", ".join(check.missing))
    if check.unexpected:
        lines.append("unexpected %s" % ", ".join(check.unexpected))
    lines.extend("%s has shape %s, expected %s" % (k, got, want) for k, got, want in check.mismatched)
    return "; ".join(lines) + " (pass the right --arch, or convert a checkpoint of a registered variant)"


def build_from_pth(src: PathLike, output: Optional[PathLike] = None, arch: Optional[str] = None,
                   input_size: Tuple[int, int] = (224, 224)) -> BuiltModel:
    """Read the official ``.pth`` ``src`` (no PyTorch), build its ONNX graph and write it to
    ``output`` (default: ``src`` with ``.onnx``), with its metadata inside and beside it.

    ``arch`` defaults to the architecture the keys and shapes describe, as ``train.convert``
    infers it. Raises PthError (unreadable file), UnknownArchitecture or OnnxBuildError,
    each naming ``src``.
    """
    from .pth_reader import load_state_dict

    src = Path(src)
    output = Path(output) if output is not None else src.with_suffix(".onnx")
    _check_output(output)
    return build_from_state_dict(load_state_dict(src), src, output, arch, input_size)


def build_from_state_dict(state_dict: Mapping[str, np.ndarray], src: PathLike, output: PathLike,
                          arch: Optional[str] = None, input_size: Tuple[int, int] = (224, 224)) -> BuiltModel:
    """:func:`build_from_pth` of the tensors already read from ``src`` (named in errors and
    recorded as the weights' source)."""
    src, output = Path(src), Path(output)
    _check_output(output)
    if arch is None:
        arch = architectures.infer_arch(state_dict, source=str(src))
    model = build_model(arch, state_dict, input_size, source=str(src))
    meta = ModelMetadata.official(arch, architectures.num_classes_of(state_dict), src.name, input_size)
    embed_in_onnx(model, meta)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(".%s.%d.tmp" % (output.name, os.getpid()))
    try:
        _onnx().save(model, str(tmp))
        os.replace(str(tmp), str(output))
    finally:
        if tmp.exists():
            tmp.unlink()
    return BuiltModel(output, save_for_model(meta, output), meta)


def _check_output(output: Path) -> None:
    if output.suffix.lower() != ".onnx":
        raise OnnxBuildError("the ONNX output must be an .onnx file, got %s" % output)


__all__ = ["BuiltModel", "OnnxBuildError", "build_from_pth", "build_from_state_dict", "build_model", "check_fits"]
