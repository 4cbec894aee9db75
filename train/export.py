"""Export a MindSpore model to MINDIR, ONNX or AIR; ``python -m train.export`` (``main``) adds the metadata JSON.

``export_model(net, path, fmt, metadata=...)`` writes exactly ``path`` (MindSpore would
otherwise append its own suffix) and returns it; an ONNX file carries the metadata inside
(``ibnedge.metadata``), which ``main`` also writes beside every format. ONNX files are
post-processed so that MindSpore Lite 2.0's converter accepts them: its ONNX parser
rejects MaxPool nodes that carry a ``dilations`` attribute ("pooling op not support
dilations now"), which MindSpore's exporter always writes (as all ones, i.e. meaning
nothing), so that attribute is removed; with a dynamic batch the outputs' batch dimension
is made symbolic too. Layers with a fast training form export their portable form
(``train.models.portable_ops``).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import mindspore.nn as nn
import numpy as np

from ibnedge.errors import UserError, run_reporting
from ibnedge.metadata import ModelMetadata, embed_in_onnx, imagenet_class_names, save_for_model

from .models import portable_ops

PathLike = Union[str, "os.PathLike[str]"]

FORMATS = ("MINDIR", "ONNX", "AIR")
SUFFIXES = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class ExportError(UserError, RuntimeError):
    """The model cannot be exported in the requested format here; the message says why and what to do."""


class _ExportGraph(nn.Cell):
    """A fresh top-level cell per export.

    MindSpore caches a compiled graph per (phase, top-level cell) and its ONNX exporter
    rewrites that cached graph in place, so a second ONNX export of the same cell fails
    ("i: 6 out of range: 6 ... PrimFunc_BatchNorm", MindSpore 2.10). A new wrapper is a new
    cache key. ``auto_prefix=False`` keeps the parameter names of ``net``.
    """

    def __init__(self, net) -> None:
        super().__init__(auto_prefix=False)
        self.net = net

    def construct(self, x):
        return self.net(x)


def check_format_here(fmt: str) -> None:
    """Refuse a format this MindSpore context cannot write (AIR off Ascend)."""
    import mindspore as ms

    if fmt == "AIR" and ms.get_context("device_target") != "Ascend":
        raise ExportError(
            "AIR export needs MindSpore running on an Ascend device (device_target is %s): export MINDIR "
            "instead, which MindSpore Lite converts for Ascend (converter_lite --optimize=ascend_oriented)"
            % ms.get_context("device_target")
        )


def _check_shape(input_shape: Sequence[int]) -> Tuple[int, int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError("input_shape must be (N, C, H, W) with positive sizes, got %r" % (tuple(input_shape),))
    return shape  # type: ignore[return-value]


def _example_input(shape: Tuple[int, int, int, int], dynamic_batch: bool):
    import mindspore as ms

    if dynamic_batch:
        return ms.Tensor(shape=[None, shape[1], shape[2], shape[3]], dtype=ms.float32)
    return ms.Tensor(np.zeros(shape, dtype=np.float32))


def fix_onnx_for_lite(onnx_path: PathLike, dynamic_batch: bool, metadata: Optional[ModelMetadata] = None) -> None:
    """Post-process MindSpore's ONNX file in place for the runtimes that read it, and embed
    ``metadata`` (an ``ibnedge.metadata.ModelMetadata``) when given.

    - Removes ``dilations`` from every MaxPool node: MindSpore Lite 2.0's converter rejects
      the attribute ("pooling op not support dilations now"). Only all-ones dilations (the
      ONNX default) are removed; anything else would change the model and raises ExportError.
    - With ``dynamic_batch``, makes the outputs' batch dimension symbolic as well: MindSpore
      2.10 marks only the inputs, leaving the outputs at batch 1, which runtimes then
      contradict on every batch of another size.
    """
    import onnx

    model = onnx.load(str(onnx_path))
    for node in model.graph.node:
        if node.op_type != "MaxPool":
            continue
        for attr in list(node.attribute):
            if attr.name == "dilations":
                if any(d != 1 for d in attr.ints):
                    raise ExportError(
                        "%s: MaxPool node %s has dilations %s, which MindSpore Lite 2.0 cannot convert"
                        % (onnx_path, node.name, list(attr.ints))
                    )
                node.attribute.remove(attr)
    if dynamic_batch:
        for value in model.graph.output:
            dims = value.type.tensor_type.shape.dim
            if len(dims) > 0:
                dims[0].ClearField("dim_value")
                dims[0].dim_param = "batch"
    if metadata is not None:
        embed_in_onnx(model, metadata)
    onnx.save(model, str(onnx_path))


def export_model(
    net,
    path: PathLike,
    fmt: str = "MINDIR",
    input_shape: Sequence[int] = (1, 3, 224, 224),
    dynamic_batch: bool = False,
    metadata: Optional[ModelMetadata] = None,
) -> Path:
    """Export ``net`` (put in eval mode; restored afterwards) to ``path`` in ``fmt``.

    ``dynamic_batch`` makes the batch dimension symbolic (MINDIR: a ``None`` dim; ONNX:
    ``dynamic_axes``); H and W stay as in ``input_shape``. AIR needs an Ascend device.
    ``metadata`` (``ibnedge.metadata.ModelMetadata``) is embedded in an ONNX file; the
    other formats have no room for it (write the sidecar with ``save_for_model``).
    """
    import mindspore as ms

    fmt = fmt.upper()
    if fmt not in FORMATS:
        raise ValueError("unknown export format %r: choose one of %s" % (fmt, ", ".join(FORMATS)))
    shape = _check_shape(input_shape)
    path = Path(path)
    check_format_here(fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = net.training
    net.set_train(False)
    # MindSpore appends its own suffix to file_name; export into a scratch directory and move
    # the file to exactly ``path`` so callers get the name they asked for.
    scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=str(path.parent)))
    try:
        stem = str(scratch / "model")
        example = _example_input(shape, dynamic_batch)
        graph = _ExportGraph(net)
        graph.set_train(False)
        # The exported graph must not depend on a static batch size (dynamic_batch) and must
        # use only operators every target runtime maps.
        with portable_ops(net):
            if fmt == "ONNX":
                from mindspore import onnx as ms_onnx

                ms_onnx.export(
                    graph,
                    example if not dynamic_batch else ms.Tensor(np.zeros(shape, dtype=np.float32)),
                    file_name=stem,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None,
                )
            else:
                ms.export(graph, example, file_name=stem, file_format=fmt)
        produced = scratch / ("model" + SUFFIXES[fmt])
        if not produced.is_file():
            raise ExportError("MindSpore wrote no %s file for %s (expected %s)" % (fmt, type(net).__name__, produced))
        if fmt == "ONNX":
            fix_onnx_for_lite(produced, dynamic_batch, metadata)
        os.replace(produced, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        net.set_train(was_training)
    return path


# --------------------------------------------------------------------------- metadata and CLI
# ``python -m train.export``: checkpoint -> model file + ``<model>.json`` (ibnedge.metadata)
# beside it, so ibnedge preprocesses exactly as the model was trained or evaluated.


def model_metadata(info: ModelMetadata, input_shape: Sequence[int], class_names: Optional[Sequence[str]] = None,
                   semantics: Optional[str] = None) -> ModelMetadata:
    """The record of the model exported from weights described by ``info`` (the
    checkpoint's record), at ``input_shape`` (NCHW; batch -1 = dynamic).

    Class names: ``class_names`` if given, else the checkpoint's (training folder names),
    else ImageNet's 1000 names for a 1000-class model, else none (ibnedge shows indices).
    Resize semantics: ``semantics`` if given, else the record's, which its origin decided
    where the weights were made (``ibnedge.metadata.ORIGIN_SEMANTICS``).
    """
    names = list(class_names) if class_names is not None else info.class_names
    if names is None and info.num_classes == 1000:
        names = imagenet_class_names()
    meta = info.with_input(crop=(int(input_shape[2]), int(input_shape[3])), batch=int(input_shape[0]),
                           semantics=semantics)
    return dataclasses.replace(meta, class_names=names)


def _read_class_names(path: PathLike) -> List[str]:
    names = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not names:
        raise ExportError("%s: no class names (one per line expected)" % path)
    return names


def _check_class_count(names: Optional[List[str]], path: PathLike, num_classes: int) -> None:
    if names is not None and len(names) != num_classes:
        raise ExportError("%s: %d class names for a %d-class model; give one line per class"
                          % (path, len(names), num_classes))


def main(argv: Optional[List[str]] = None) -> int:
    from . import config as settings

    cfg = settings.resolve(settings.export_parser(), argv)
    return run_reporting(lambda: _export_command(cfg), "error: ", cfg.debug)


def _export_command(cfg: argparse.Namespace) -> int:
    """The checks that need nothing (--class-names, what to export), then those that need the
    MindSpore context (the format) and the checkpoint (the number of classes), and only then
    the model is built and exported: a user's mistake is told before the expensive work."""
    import json

    from .context import setup_context
    from .eval import build_network, checkpoint_from_settings, checkpoint_info, with_explicit_sizes
    from .models import create_model

    class_names = _read_class_names(cfg.class_names) if cfg.class_names else None
    if not cfg.checkpoint and "arch" not in cfg.explicit:
        raise ExportError("give --checkpoint (or --arch to export an untrained model)")
    fmt = cfg.format.upper()
    setup_context(cfg.device, cfg.mode)
    check_format_here(fmt)
    if cfg.checkpoint:
        ckpt = checkpoint_from_settings(cfg)
        info = with_explicit_sizes(checkpoint_info(ckpt), cfg)
        _check_class_count(class_names, cfg.class_names, info.num_classes)
        net = build_network(ckpt, cfg.num_classes)
    else:
        import mindspore as ms

        num_classes = cfg.num_classes or 1000
        _check_class_count(class_names, cfg.class_names, num_classes)
        # Untrained weights are train/'s own initialisation: never labelled as official ones.
        info = with_explicit_sizes(ModelMetadata.describe(cfg.arch, num_classes, origin="random-init",
                                                          source="random-init"), cfg)
        ms.set_seed(cfg.seed)
        net = create_model(cfg.arch, num_classes=num_classes)
    size = info.preprocess.crop
    output = Path(cfg.output) if cfg.output else Path("runs/export") / (info.arch + SUFFIXES[fmt])
    batch = int(cfg.export_batch)  # 0 or more (train.config)
    meta = model_metadata(info, (batch or -1, 3) + size, class_names, cfg.semantics)
    path = export_model(net, output, fmt, input_shape=(batch or 1, 3) + size, dynamic_batch=batch == 0,
                        metadata=meta)
    meta_path = save_for_model(meta, path)
    print("exported %s (%s) and %s" % (path, fmt, meta_path), flush=True)
    # One machine-readable line; the class names are in the metadata file, not repeated here.
    summary = {k: v for k, v in meta.to_dict().items() if k != "class_names"}
    print(json.dumps({"model": str(path), "metadata": str(meta_path), "format": fmt, **summary},
                     ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
