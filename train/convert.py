"""Convert official IBN-Net PyTorch weights (``.pth``) into MindSpore checkpoints, without PyTorch.

    python -m train.convert resnet50_ibn_a-d9d0bb7b.pth resnet50_ibn_a.ckpt [--arch resnet50_ibn_a] [--no-strict]

The MindSpore models mirror the official module tree (both are built from
``ibnedge.architectures``, which lists every official key with its shape), so a parameter's
path is the PyTorch key's path; only the leaf names of norms differ. This table,
:func:`mindspore_name` (official key -> MindSpore name) and :func:`torch_key_for` (its
inverse) are the single source of truth for the mapping:

=====================================================  =====================================================
official PyTorch key                                   MindSpore parameter
=====================================================  =====================================================
``conv1.weight``, ``layerX.Y.convZ.weight``            same name (Conv2d ``weight``)
``layerX.0.downsample.0.weight`` (1x1 conv)            ``layerX.0.downsample.0.weight``
``layerX.0.downsample.1.weight/bias`` (its BN)         ``layerX.0.downsample.1.gamma/beta``
``<bn>.weight``, ``<bn>.bias`` (any BatchNorm2d)       ``<bn>.gamma``, ``<bn>.beta``
``<bn>.running_mean``, ``<bn>.running_var``            ``<bn>.moving_mean``, ``<bn>.moving_variance``
``<bn>.num_batches_tracked``                           dropped (MindSpore's BN keeps no counter)
``layerX.Y.bn1.IN.weight/bias`` (IBN-a, IN half)       ``layerX.Y.bn1.IN.gamma/beta``
``layerX.Y.bn1.BN.*`` (IBN-a, BN half)                 ``layerX.Y.bn1.BN.gamma/beta/moving_mean/moving_variance``
``bn1.weight/bias`` (IBN-b stem InstanceNorm)          ``bn1.gamma/beta``
``layerX.Y.IN.weight/bias`` (IBN-b, after the add)     ``layerX.Y.IN.gamma/beta``
``layerX.Y.se.fc.0.weight``, ``se.fc.2.weight`` (SE)   same names (bias-free Dense)
``features.denseblockB.denselayerL.norm1.{BN,IN}.*``   same path, BN/IN leaves as above
``features.transitionT.{norm,conv}.*``, ``norm5.*``    same path, BN/IN leaves as above
``fc.weight/bias`` (ResNets), ``classifier.*`` (DN)    same names (Dense)
=====================================================  =====================================================

A conv weight and a BN gamma never collide (the ModelZoo pth2ckpt's bug): the description
says which module every official key belongs to, and MindSpore's norm leaves are named
``gamma``/``beta``, never ``weight``. Keys the architecture does not have, parameters the
file lacks and shape mismatches are all reported by name; ``strict`` (the default) refuses
to write a checkpoint unless everything matches.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from ibnedge import architectures
from ibnedge.architectures import Tensor
from ibnedge.errors import UserError, add_debug_flag, run_reporting
from ibnedge.metadata import ModelMetadata
from ibnedge.pth_reader import PathLike, load_state_dict, source_dtype

MS_TO_TORCH_LEAF = {
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
TORCH_TO_MS_LEAF = {torch_leaf: ms_leaf for ms_leaf, torch_leaf in MS_TO_TORCH_LEAF.items()}
NORM_MODULES = ("batch_norm", "instance_norm")


class ConversionError(UserError, ValueError):
    """The checkpoint does not fit the architecture; the message lists every offending key."""


def torch_key_for(ms_name: str) -> str:
    """The official PyTorch ``state_dict`` key of the MindSpore parameter ``ms_name``."""
    path, _, leaf = ms_name.rpartition(".")
    leaf = MS_TO_TORCH_LEAF.get(leaf, leaf)
    return "%s.%s" % (path, leaf) if path else leaf


def mindspore_name(tensor: Tensor) -> str:
    """The MindSpore parameter of the official ``tensor`` (``ibnedge.architectures.Tensor``):
    norm leaves renamed, conv and dense keys unchanged."""
    if tensor.module not in NORM_MODULES:
        return tensor.key
    path, _, leaf = tensor.key.rpartition(".")
    return "%s.%s" % (path, TORCH_TO_MS_LEAF[leaf])


@dataclass
class ConversionReport:
    arch: str
    num_classes: int
    converted: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)  # MindSpore parameters without a source key
    unexpected: List[str] = field(default_factory=list)  # source keys no parameter maps to
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)  # key, file, model
    cast: Dict[str, int] = field(default_factory=dict)  # dtype in the file -> count of tensors cast to float32

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self) -> str:
        lines = []
        if self.missing:
            lines.append("missing from the checkpoint (%d): %s" % (len(self.missing), ", ".join(self.missing)))
        if self.unexpected:
            lines.append("not in %s (%d): %s" % (self.arch, len(self.unexpected), ", ".join(self.unexpected)))
        for key, got, want in self.mismatched:
            lines.append("shape mismatch for %s: checkpoint %s, model %s" % (key, tuple(got), tuple(want)))
        return "\n".join(lines)


# --------------------------------------------------------------------------- conversion


def convert_state_dict(
    state_dict: Mapping[str, np.ndarray],
    arch: Optional[str] = None,
    strict: bool = True,
    num_classes: Optional[int] = None,
    source: Optional[str] = None,
) -> Tuple["OrderedDict[str, np.ndarray]", ConversionReport]:
    """Map official keys onto ``arch``'s MindSpore parameters.

    Returns ``({ms_name: float32 array}, report)`` in the official key order. ``arch``
    defaults to the one the keys describe (``ibnedge.architectures.infer_arch``: else
    UnknownArchitecture). ``num_classes`` defaults to the checkpoint's classifier rows (0, a
    headless model, when it has none). With ``strict`` any missing, unexpected or mis-shaped
    key raises ConversionError naming all of them; otherwise the matching subset is
    returned. ``source``, the file ``state_dict`` was read from, is named in the errors.
    """
    arch = arch or architectures.infer_arch(state_dict, source=source)
    if num_classes is None:
        num_classes = architectures.num_classes_of(state_dict)
    description = architectures.get(arch)
    check = architectures.check_state_dict(description, state_dict, num_classes)
    report = ConversionReport(arch=arch, num_classes=num_classes, missing=check.missing,
                              unexpected=check.unexpected, mismatched=check.mismatched)
    params: "OrderedDict[str, np.ndarray]" = OrderedDict()
    wrong = set(check.missing) | {key for key, _, _ in check.mismatched}
    for tensor in description.tensors(num_classes):
        if tensor.key in wrong:
            continue
        value = state_dict[tensor.key]
        dtype = source_dtype(value)  # "bfloat16" for tensors the reader widened to float32
        if dtype != "float32":
            report.cast[dtype] = report.cast.get(dtype, 0) + 1
        name = mindspore_name(tensor)
        params[name] = np.ascontiguousarray(value, dtype=np.float32)
        report.converted.append(name)
    if strict and not report.ok:
        raise ConversionError("%s does not match %s (strict):\n%s" % (source or "checkpoint", arch, report.problems()))
    return params, report


def save_params(params: Mapping[str, np.ndarray], path: PathLike, info: Optional[ModelMetadata] = None) -> None:
    """Write ``{ms_name: array}`` as a MindSpore ``.ckpt``, with the model record ``info``
    stored the way run checkpoints store it."""
    import mindspore as ms

    from .model_info import checkpoint_entry

    extra = checkpoint_entry(info) if info is not None else None
    ms.save_checkpoint([{"name": name, "data": ms.Tensor(value)} for name, value in params.items()], str(path),
                       append_dict=extra)


def convert_pth(
    src: PathLike,
    arch: Optional[str] = None,
    strict: bool = True,
    num_classes: Optional[int] = None,
) -> Tuple["OrderedDict[str, np.ndarray]", ConversionReport]:
    """Read ``src`` without PyTorch and map it onto ``arch`` (``convert_state_dict``);
    every error names ``src``. Raises PthError/UnknownArchitecture/ConversionError."""
    state_dict = load_state_dict(src)
    params, report = convert_state_dict(state_dict, arch, strict, num_classes, source=str(src))
    if not params:
        raise ConversionError("%s: no parameter of %s found in the checkpoint" % (src, report.arch))
    return params, report


def convert_file(
    src: PathLike,
    dst: PathLike,
    arch: Optional[str] = None,
    strict: bool = True,
    num_classes: Optional[int] = None,
) -> ConversionReport:
    """``.pth`` -> ``.ckpt``: read without PyTorch, map, check, write. Raises
    PthError/UnknownArchitecture/ConversionError.

    The ``.ckpt`` says what it holds (architecture, classes, ``pil`` preprocessing), so
    ``train.eval`` and ``train.export`` need no ``--arch`` for it.
    """
    params, report = convert_pth(src, arch, strict, num_classes)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    record = ModelMetadata.official(report.arch, report.num_classes, Path(src).name)
    save_params(params, dst, record)
    return report


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.convert",
        description="Convert an IBN-Net PyTorch checkpoint (.pth) into a MindSpore checkpoint (.ckpt) without PyTorch.",
    )
    parser.add_argument("src", help="input .pth (torch zip or legacy format; plain, {'state_dict': ...} or module.-prefixed)")
    parser.add_argument("dst", help="output .ckpt")
    parser.add_argument("--arch", default=None, help="registered model name (default: inferred from the keys)")
    parser.add_argument("--num-classes", type=int, default=None, help="classifier size (default: the checkpoint's)")
    parser.add_argument("--strict", dest="strict", action="store_true", default=True,
                        help="refuse on any missing/unexpected/mis-shaped key (default)")
    parser.add_argument("--no-strict", dest="strict", action="store_false",
                        help="write the matching parameters and report the rest (fine-tuning checkpoints)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    # PthError, ConversionError, an unknown --arch, an unwritable OUT: one line, exit 2.
    return run_reporting(lambda: _convert_command(args), "error: ", args.debug)


def _convert_command(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    report = convert_file(args.src, args.dst, args.arch, args.strict, args.num_classes)
    if not report.ok:
        print("warning (--no-strict): %s" % report.problems(), file=sys.stderr)
    cast = "".join(", %d %s tensors cast to float32" % (n, d) for d, n in sorted(report.cast.items()))
    print(
        "%s -> %s: %s, %d tensors, %d classes%s (%.2f s)"
        % (args.src, args.dst, report.arch, len(report.converted), report.num_classes, cast, time.perf_counter() - started)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
