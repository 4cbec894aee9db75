"""Official-layout ``.pth`` files without PyTorch, for the tests that run where torch is not.

``save_pth`` writes what ``torch.save(state_dict, path)`` writes (the zip format: an
``archive/data.pkl`` pickle whose tensors are ``torch._utils._rebuild_tensor_v2`` calls on
persistent storage ids, one raw little-endian record per storage), emitting the pickle
opcodes by hand so that neither torch nor any stand-in module is imported.
``test_onnx_builder`` checks that ``torch.load`` reads these files back exactly.
``random_state_dict`` makes seeded weights for any ``ibnedge.architectures`` variant, with
norms that are not identities (random running statistics and affines).
"""
from __future__ import annotations

import math
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Mapping

import numpy as np

from ibnedge import architectures

_STORAGE_OF_DTYPE = {np.dtype("float32"): "FloatStorage", np.dtype("int64"): "LongStorage"}


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _text(value: str) -> bytes:
    data = value.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _int_tuple(values) -> bytes:
    return b"(" + b"".join(_int(int(v)) for v in values) + b"t"


def _empty_ordered_dict() -> bytes:
    return _global("collections", "OrderedDict") + b")R"


def _tensor(index: int, array: np.ndarray) -> bytes:
    storage_id = b"(" + _text("storage") + _global("torch", _STORAGE_OF_DTYPE[array.dtype]) + _text(str(index)) \
        + _text("cpu") + _int(array.size) + b"tQ"
    strides = [s // array.itemsize for s in array.strides]
    args = storage_id + _int(0) + _int_tuple(array.shape) + _int_tuple(strides) + b"\x89" + _empty_ordered_dict()
    return _global("torch._utils", "_rebuild_tensor_v2") + b"(" + args + b"tR"


def save_pth(state_dict: Mapping[str, np.ndarray], path: Path) -> Path:
    """``torch.save(state_dict, path)`` for float32/int64 arrays, without torch."""
    arrays = [(key, np.asarray(value, order="C")) for key, value in state_dict.items()]  # 0-d stays 0-d
    pickle = b"\x80\x02" + _empty_ordered_dict() + b"("
    for index, (key, array) in enumerate(arrays):
        pickle += _text(key) + _tensor(index, array)
    pickle += b"u."
    with zipfile.ZipFile(str(path), "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", pickle)
        archive.writestr("archive/byteorder", "little")
        for index, (_, array) in enumerate(arrays):
            archive.writestr("archive/data/%d" % index, array.astype(array.dtype.newbyteorder("<")).tobytes())
        archive.writestr("archive/version", "3\n")
    return Path(path)


def random_state_dict(arch: str, num_classes: int = 1000, seed: int = 0) -> "OrderedDict[str, np.ndarray]":
    """Seeded weights in the official layout of ``arch``, with ``num_batches_tracked`` counters
    as real files have. Convs He-normal over fan-out (the official init); every norm gets a
    random affine and BN random running statistics; the norm closing each residual branch a
    small scale, as in trained ResNets, so that deep stacks stay well conditioned."""
    description = architectures.get(arch)
    rng = np.random.default_rng(seed)
    closing = ".bn3.weight" if getattr(description, "block", "") == "bottleneck" else ".bn2.weight"
    state = OrderedDict()  # type: OrderedDict[str, np.ndarray]
    for tensor in description.tensors(num_classes):
        leaf = tensor.key.rsplit(".", 1)[-1]
        shape = tensor.shape
        if tensor.module == "conv":
            value = rng.normal(0, math.sqrt(2.0 / (shape[0] * shape[2] * shape[3])), shape)
        elif tensor.module == "linear":
            value = rng.uniform(-1, 1, shape) / math.sqrt(shape[-1] if len(shape) == 2 else num_classes)
        elif leaf == "running_var":
            value = rng.uniform(0.5, 2.0, shape)
        elif leaf in ("running_mean", "bias"):
            value = rng.normal(0, 0.2, shape)
        elif tensor.key.startswith("layer") and tensor.key.endswith(closing):
            value = rng.uniform(0.1, 0.4, shape)
        else:
            value = rng.uniform(0.6, 1.4, shape)
        state[tensor.key] = value.astype(np.float32)
        if leaf == "running_var":
            state[tensor.key[: -len(leaf)] + "num_batches_tracked"] = np.array(1234, dtype=np.int64)
    return state
