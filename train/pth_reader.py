"""Read PyTorch ``.pth`` checkpoints WITHOUT PyTorch, through a restricted unpickler.

A ``.pth`` file is a pickle, and unpickling runs whatever callables the file names. This
reader resolves only the globals a tensor ``state_dict`` needs (the tensor/parameter
rebuild functions, the typed storage classes, ``collections.OrderedDict``) and refuses any
other global with :class:`UnsafePickleError` naming it.

Formats:
- the zip format of ``torch.save`` since PyTorch 1.6: ``<name>/data.pkl`` plus one raw
  record per storage (``<name>/data/<key>``) and ``<name>/byteorder``;
- the legacy stream format (PyTorch < 1.6, or ``_use_new_zipfile_serialization=False``):
  magic number, protocol version, system info, the object pickle, the storage key list,
  then every storage as an int64 element count followed by its raw bytes.

Tensors come back as C-contiguous NumPy arrays (non-contiguous views are gathered with
``as_strided``; every dtype is kept except bfloat16, which NumPy lacks: it becomes float32
exactly, as a :class:`WidenedBFloat16` array so that :func:`source_dtype` still says so).
"""
from __future__ import annotations

import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001


class PthError(ValueError):
    """The file is not a readable PyTorch checkpoint; the message names the file and the fix."""


class UnsafePickleError(PthError):
    """The pickle references a global outside the tensor-rebuild allow-list."""


class WidenedBFloat16(np.ndarray):
    """float32 values widened exactly from a bfloat16 tensor (NumPy has no bfloat16)."""


def source_dtype(array: np.ndarray) -> str:
    """The dtype the tensor had in the file: ``"bfloat16"`` for widened ones, else the array's."""
    return "bfloat16" if isinstance(array, WidenedBFloat16) else str(array.dtype)


class _StorageType:
    """Stands in for ``torch.FloatStorage`` and friends: just the element dtype."""

    def __init__(self, name: str, dtype: str) -> None:
        self.name = name
        self.dtype = np.dtype(dtype)  # bfloat16 is read as its raw uint16 bits

    def __repr__(self) -> str:
        return "torch.%s" % self.name


_STORAGE_TYPES = {
    name: _StorageType(name, dtype)
    for name, dtype in [
        ("FloatStorage", "float32"),
        ("DoubleStorage", "float64"),
        ("HalfStorage", "float16"),
        ("BFloat16Storage", "uint16"),
        ("LongStorage", "int64"),
        ("IntStorage", "int32"),
        ("ShortStorage", "int16"),
        ("CharStorage", "int8"),
        ("ByteStorage", "uint8"),
        ("BoolStorage", "bool"),
    ]
}


class _Storage:
    """A flat typed storage whose bytes are attached once the container has been read."""

    def __init__(self, storage_type: _StorageType, key: str, numel: int) -> None:
        self.storage_type = storage_type
        self.key = key
        self.numel = int(numel)
        self.array: Optional[np.ndarray] = None


class _TensorRef:
    """What ``_rebuild_tensor_v2`` returns while storages are still unread."""

    def __init__(self, storage: _Storage, offset: int, size: Sequence[int], stride: Sequence[int]) -> None:
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise PthError("a tensor in the pickle does not point at a storage record")
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return data


_SAFE_GLOBALS: Dict[Tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
}
_SAFE_GLOBALS.update({("torch", name): storage_type for name, storage_type in _STORAGE_TYPES.items()})


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, source: str, storages: Dict[str, _Storage], legacy: bool) -> None:
        super().__init__(file, encoding="utf-8")
        self.source = source
        self.storages = storages
        self.legacy = legacy

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                "%s: refusing to unpickle: it references the global %s.%s, which is not a tensor-rebuild "
                "function or storage type (unpickling would run it). Only plain state_dicts of tensors are "
                "read; if you trust the file, re-save it from PyTorch with torch.save(model.state_dict(), path)"
                % (self.source, module, name)
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise PthError("%s: unexpected persistent id %r in the pickle" % (self.source, pid))
        typename = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if typename != "storage":
            raise UnsafePickleError(
                "%s: the pickle holds a %r object, not only tensors (a whole saved model?); re-save it with "
                "torch.save(model.state_dict(), path)" % (self.source, typename)
            )
        if self.legacy:
            if len(pid) != 6:
                raise PthError("%s: malformed legacy storage reference %r" % (self.source, pid))
            _, storage_type, key, _location, numel, view_metadata = pid
        else:
            if len(pid) != 5:
                raise PthError("%s: malformed storage reference %r" % (self.source, pid))
            _, storage_type, key, _location, numel = pid
            view_metadata = None
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError("%s: storage of unsupported type %r" % (self.source, storage_type))
        key = str(key)
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(storage_type, key, numel)
        if view_metadata is not None:  # legacy storage view: (view_key, offset, size) into the root
            view_key, view_offset, view_size = view_metadata
            return _StorageView(storage, int(view_offset), int(view_size))
        return storage


class _StorageView(_Storage):
    """A legacy-format view ``root[offset:offset + numel]`` of another storage."""

    def __init__(self, root: _Storage, offset: int, numel: int) -> None:
        super().__init__(root.storage_type, root.key, numel)
        self.root = root
        self.view_offset = offset


# What a malformed (not malicious: globals are already restricted) pickle raises while loading.
_MALFORMED = (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError, KeyError, struct.error, UnicodeDecodeError)


def _unpickle(stream: BinaryIO, source: str, storages: Dict[str, _Storage], legacy: bool) -> Any:
    try:
        return _RestrictedUnpickler(stream, source, storages, legacy).load()
    except PthError:
        raise
    except _MALFORMED as exc:
        raise PthError("%s: truncated or corrupt pickle (%s: %s)" % (source, type(exc).__name__, exc)) from None


def _storage_array(storage: _Storage, source: str) -> np.ndarray:
    if isinstance(storage, _StorageView):
        root = _storage_array(storage.root, source)
        if storage.view_offset + storage.numel > root.size:
            raise PthError("%s: storage view out of bounds of storage %s" % (source, storage.key))
        return root[storage.view_offset : storage.view_offset + storage.numel]
    if storage.array is None:
        raise PthError("%s: storage %s is referenced but its data record is missing" % (source, storage.key))
    return storage.array


def _decode(raw: bytes, storage: _Storage, little_endian: bool, source: str) -> np.ndarray:
    dtype = storage.storage_type.dtype.newbyteorder("<" if little_endian else ">")
    expected = storage.numel * dtype.itemsize
    if len(raw) < expected:
        raise PthError(
            "%s: storage %s holds %d bytes but %d %s elements need %d: the file is truncated or corrupt"
            % (source, storage.key, len(raw), storage.numel, storage.storage_type.name, expected)
        )
    return np.frombuffer(raw, dtype=dtype, count=storage.numel)


def _materialise(ref: _TensorRef, source: str) -> np.ndarray:
    flat = _storage_array(ref.storage, source)
    if len(ref.size) != len(ref.stride):
        raise PthError("%s: tensor with size %r but stride %r" % (source, ref.size, ref.stride))
    if any(s == 0 for s in ref.size):
        array = np.empty(ref.size, dtype=flat.dtype)
    else:
        last = ref.offset + sum((s - 1) * st for s, st in zip(ref.size, ref.stride))
        if ref.offset < 0 or min(ref.stride, default=0) < 0 or last >= flat.size:
            raise PthError(
                "%s: tensor view (offset %d, size %r, stride %r) reaches past its storage of %d elements"
                % (source, ref.offset, ref.size, ref.stride, flat.size)
            )
        view = np.lib.stride_tricks.as_strided(
            flat[ref.offset :], shape=ref.size, strides=[st * flat.itemsize for st in ref.stride], writeable=False
        )
        array = np.ascontiguousarray(view)
    array = array.astype(array.dtype.newbyteorder("="), copy=False)
    if ref.storage.storage_type.name == "BFloat16Storage":  # bfloat16 = the top 16 bits of a float32
        array = (array.astype(np.uint32) << 16).view(np.float32).view(WidenedBFloat16)
    return array


def _resolve(obj: Any, source: str) -> Any:
    if isinstance(obj, _TensorRef):
        return _materialise(obj, source)
    if isinstance(obj, OrderedDict):
        return OrderedDict((k, _resolve(v, source)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _resolve(v, source) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v, source) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(v, source) for v in obj)
    return obj


def _load_zip(path: Path) -> Any:
    source = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise PthError(
            "%s: truncated or corrupt zip archive (%s); download or copy the checkpoint again" % (source, exc)
        ) from None
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise PthError("%s: zip archive without a single <name>/data.pkl record: not a torch.save file" % source)
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = archive.read(prefix + "byteorder").decode("ascii").strip()
        if byteorder not in ("little", "big"):
            raise PthError("%s: unknown byteorder record %r" % (source, byteorder))
        storages: Dict[str, _Storage] = {}
        try:
            with archive.open(pickles[0]) as stream:
                obj = _unpickle(stream, source, storages, legacy=False)
            for key, storage in storages.items():
                record = "%sdata/%s" % (prefix, key)
                if record not in names:
                    raise PthError("%s: storage record %s is missing from the archive" % (source, record))
                storage.array = _decode(archive.read(record), storage, byteorder == "little", source)
        except (zipfile.BadZipFile, EOFError, OSError) as exc:  # CRC errors, short records
            raise PthError("%s: corrupt zip archive (%s); download or copy the checkpoint again" % (source, exc)) from None
    return _resolve(obj, source)


def _load_legacy(path: Path) -> Any:
    source = str(path)
    storages: Dict[str, _Storage] = {}
    with open(path, "rb") as stream:
        magic = _unpickle(stream, source, storages, legacy=True)
        if magic != LEGACY_MAGIC_NUMBER:
            raise PthError("%s: not a PyTorch checkpoint (no torch.save magic number)" % source)
        protocol = _unpickle(stream, source, storages, legacy=True)
        if protocol != LEGACY_PROTOCOL_VERSION:
            raise PthError("%s: unsupported legacy torch.save protocol %r" % (source, protocol))
        sys_info = _unpickle(stream, source, storages, legacy=True)
        little_endian = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
        obj = _unpickle(stream, source, storages, legacy=True)
        keys = _unpickle(stream, source, storages, legacy=True)
        if not isinstance(keys, list):
            raise PthError("%s: legacy checkpoint without a storage key list" % source)
        for key in keys:
            storage = storages.get(str(key))
            if storage is None:
                raise PthError("%s: storage %s is listed but never referenced" % (source, key))
            header = stream.read(8)
            if len(header) != 8:
                raise PthError("%s: truncated legacy checkpoint: storage %s is missing" % (source, key))
            numel = struct.unpack("<q" if little_endian else ">q", header)[0]
            if numel != storage.numel:
                raise PthError("%s: storage %s records %d elements, the pickle says %d" % (source, key, numel, storage.numel))
            nbytes = numel * storage.storage_type.dtype.itemsize
            storage.array = _decode(stream.read(nbytes), storage, little_endian, source)
    return _resolve(obj, source)


def load_pth(path: PathLike) -> Any:
    """The unpickled object of a ``.pth`` file, tensors as NumPy arrays (no PyTorch needed)."""
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            head = stream.read(512)
    except OSError as exc:
        raise PthError("%s: cannot read the checkpoint (%s)" % (path, exc.strerror or exc)) from None
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _load_zip(path)
    if head[:1] == b"\x80":
        return _load_legacy(path)
    if len(head) >= 262 and head[257:262] == b"ustar":
        raise PthError("%s: the pre-0.4 tar checkpoint format is not supported; re-save with a recent PyTorch" % path)
    if not head:
        raise PthError("%s: empty file" % path)
    raise PthError("%s: not a PyTorch checkpoint (neither a torch zip archive nor a legacy torch.save stream)" % path)


STATE_DICT_CONTAINER_KEYS = ("state_dict", "model")
DATA_PARALLEL_PREFIX = "module."


def normalise_state_dict(obj: Any, source: str = "checkpoint") -> "OrderedDict[str, np.ndarray]":
    """A flat ``{key: array}`` from a loaded checkpoint.

    Accepts a plain state_dict or ``{'state_dict': ...}`` / ``{'model': ...}`` training
    checkpoints; strips the ``module.`` prefix of (Distributed)DataParallel when every key
    carries it; drops BN ``num_batches_tracked`` counters (MindSpore's BN has none).
    """
    if isinstance(obj, dict):
        for key in STATE_DICT_CONTAINER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, np.ndarray) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj:
        raise PthError("%s: no state_dict found (expected a dict of tensors or {'state_dict': ...})" % source)
    not_tensors = sorted(str(k) for k, v in obj.items() if not isinstance(v, np.ndarray))
    if not_tensors:
        raise PthError("%s: state_dict entries that are not tensors: %s" % (source, ", ".join(not_tensors[:10])))
    keys = [str(k) for k in obj]
    strip = all(k.startswith(DATA_PARALLEL_PREFIX) for k in keys)
    result: "OrderedDict[str, np.ndarray]" = OrderedDict()
    for key, value in obj.items():
        key = str(key)
        if strip:
            key = key[len(DATA_PARALLEL_PREFIX) :]
        if key.endswith("num_batches_tracked"):
            continue
        result[key] = value
    return result


def load_state_dict(path: PathLike) -> "OrderedDict[str, np.ndarray]":
    """``normalise_state_dict(load_pth(path))``: the tensors of a ``.pth`` by official key."""
    return normalise_state_dict(load_pth(path), str(path))
