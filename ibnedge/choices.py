"""The valid values of ibnedge's choices, each list defined once.

The modules that implement a choice take its list from here, and so does the command line:
the backend registry (:mod:`ibnedge.backends`) registers exactly :data:`BACKENDS`, a backend
refuses a device outside :data:`DEVICES`, ``ibnedge convert`` checks :data:`CONVERT_DEVICES`
and :data:`OPTIMIZE_LEVELS`, a :class:`~ibnedge.metadata.PreprocessSpec` checks
:data:`SEMANTICS`, a :class:`~ibnedge.metadata.Deployment` checks :data:`CONVERT_DEVICES`,
:func:`precisions` and :data:`SOCS`. The Ascend SoCs and precisions are data of
:mod:`ibnedge.ascend_config` (what each one writes into the converter's configuration).

Standard library only (no NumPy, no runtime), so ``ibnedge --help`` stays fast.
"""
from __future__ import annotations

from typing import Tuple

from .ascend_config import PRECISIONS as ASCEND_PRECISIONS
from .ascend_config import SOCS

# Inference runtimes, in the order ``--backend auto`` tries them: Lite (the edge runtime
# this project targets), then MindSpore, then ONNX Runtime.
BACKENDS = ("lite", "mindspore", "onnx")
AUTO = "auto"
BACKEND_CHOICES = BACKENDS + (AUTO,)

# Devices a backend runs on, and those ``ibnedge convert`` builds models for.
DEVICES = ("cpu", "gpu", "ascend")
CONVERT_DEVICES = ("cpu", "ascend")

# MindSpore Lite converter --optimize levels: fused for CPU/GPU; for Ascend; portable.
OPTIMIZE_LEVELS = ("general", "ascend_oriented", "none")

# Resize semantics the native engine reproduces (see shared notes, preprocessing.md):
#   pil       torchvision/PIL antialiased bilinear, round() centre crop (official weights)
#   mindspore mindspore.dataset Decode/Resize/CenterCrop: OpenCV INTER_LINEAR, floor offsets
#   fast      DCT-domain reduction in the JPEG decoder, then antialiased bilinear
SEMANTICS = ("pil", "mindspore", "fast")

# What a converted CPU model computes in: float32, or float32 with its weights stored as
# float16 (``ibnedge convert --fp16``).
FP32 = "fp32"
FP16_WEIGHTS = "fp16-weights"
CPU_PRECISIONS = (FP32, FP16_WEIGHTS)


def precisions(device: str) -> Tuple[str, ...]:
    """The precisions a model converted for ``device`` (one of :data:`CONVERT_DEVICES`) may record."""
    if device == "ascend":
        return tuple(ASCEND_PRECISIONS)
    if device == "cpu":
        return CPU_PRECISIONS
    raise ValueError("unknown device %r: choose one of %s" % (device, ", ".join(CONVERT_DEVICES)))


__all__ = ["AUTO", "BACKENDS", "BACKEND_CHOICES", "CONVERT_DEVICES", "CPU_PRECISIONS", "DEVICES", "FP16_WEIGHTS",
           "FP32", "OPTIMIZE_LEVELS", "SEMANTICS", "SOCS", "precisions"]
