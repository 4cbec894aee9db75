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

A hostile file cannot make the reader allocate much more than the file holds, nor run long:
- the pickle runs on the pure-Python unpickler, because the C one allocates what the file
  claims before reading it (a memo table sized by a 4-byte index, a bytes object of a
  64-bit length); it may be at most MAX_PICKLE_BYTES long, protocol-5 buffers (which
  torch.save never writes) are refused, and BUILD is honoured only on OrderedDicts (the
  state_dict's ``_metadata``), so a pickle cannot rewrite the allow-listed globals;
- every record is checked before it is read: a zip record must be stored (torch.save
  never compresses; a DEFLATE record can expand a thousandfold), unencrypted, at least as
  long as its storage and inside the file; a legacy storage must fit the bytes left;
- a tensor must fit its storage: no negative size, stride or offset, its last element
  inside the storage, and no more elements than the storage holds (no broadcast views);
  all tensors together hold at most MAX_VIEW_EXPANSION times the elements stored (plus
  VIEW_SLACK_ELEMENTS), each tensor object is materialised once however often the pickle
  refers to it, and containers nest at most MAX_NESTING deep.
"""
from __future__ import annotations

import functools
import io
import operator
import os
import pickle
import reprlib
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import UserError

PathLike = Union[str, "os.PathLike[str]"]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# torch.save's pickle takes 130-170 bytes per tensor: resnet152_ibn_a's is 129 KB, densenet169_ibn_a's
# with its optimizer state 229 KB. The pure-Python unpickler needs about a second per MiB of the
# cheapest opcodes, and their objects take up to ~40x the bytes: so the limit is low.
MAX_PICKLE_BYTES = 1 << 20
MAX_NESTING = 32  # a training checkpoint ({"optimizer": {"state": {0: {...}}}}) nests ~5 deep
MAX_VIEW_EXPANSION = 4  # tied weights are views of one storage; a state_dict holds each a few times
VIEW_SLACK_ELEMENTS = 1 << 20  # so that tiny files may still hold a few small views
MAX_DIMS = 32  # NumPy 1.x's limit

_MESSAGE_REPR = reprlib.Repr()
_MESSAGE_REPR.maxstring = _MESSAGE_REPR.maxother = 80


def _shown(value: Any) -> str:
    """``value`` (read from the file) for an error message: itself if it is a short printable
    string, else a bounded one-line repr (no newline, no megabyte key, no deep recursion)."""
    if isinstance(value, str) and value.isprintable() and len(value) <= 200:
        return value
    return _MESSAGE_REPR.repr(value)


class PthError(UserError, ValueError):
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
        self.numel = numel
        self.array: Optional[np.ndarray] = None

    @property
    def nbytes(self) -> int:
        return self.numel * self.storage_type.dtype.itemsize


class _StorageView(_Storage):
    """A legacy-format view ``root[offset:offset + numel]`` of another storage."""

    def __init__(self, root: _Storage, offset: int, numel: int) -> None:
        super().__init__(root.storage_type, root.key, numel)
        self.root = root
        self.view_offset = offset


class _TensorRef:
    """What ``_rebuild_tensor_v2`` returns while storages are still unread."""

    def __init__(self, storage: _Storage, offset: int, size: Sequence[int], stride: Sequence[int]) -> None:
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise TypeError("a tensor in the pickle does not point at a storage record")
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


def _non_negative_int(value: Any) -> bool:
    return isinstance(value, int) and value >= 0


class _RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler: see the module docstring
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, data: bytes, source: str, storages: Dict[str, _Storage], legacy: bool) -> None:
        self.stream = io.BytesIO(data)
        super().__init__(self.stream, encoding="utf-8")
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
                % (self.source, _shown(module), _shown(name))
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise PthError("%s: unexpected persistent id %s in the pickle" % (self.source, _shown(pid)))
        typename = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if typename != "storage":
            raise UnsafePickleError(
                "%s: the pickle holds a %s object, not only tensors (a whole saved model?); re-save it with "
                "torch.save(model.state_dict(), path)" % (self.source, _shown(typename))
            )
        if len(pid) != (6 if self.legacy else 5):
            raise PthError("%s: malformed storage reference %s" % (self.source, _shown(pid)))
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError("%s: storage of unsupported type %s" % (self.source, _shown(storage_type)))
        if not isinstance(key, str) or not _non_negative_int(numel):
            raise PthError("%s: malformed storage reference %s" % (self.source, _shown(pid)))
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(storage_type, key, numel)
        view_metadata = pid[5] if self.legacy else None
        if view_metadata is not None:  # legacy storage view: (view_key, offset, size) into the root
            _view_key, view_offset, view_size = view_metadata
            if not (_non_negative_int(view_offset) and _non_negative_int(view_size)):
                raise PthError("%s: malformed storage view %s" % (self.source, _shown(view_metadata)))
            return _StorageView(storage, view_offset, view_size)
        return storage

    def load_build(self) -> None:
        if type(self.stack[-2]) is not OrderedDict:  # the stack ends with (object, state)
            raise UnsafePickleError(
                "%s: the pickle sets the state of a %s; torch.save sets it only on OrderedDicts: re-save the "
                "checkpoint with torch.save(model.state_dict(), path)" % (self.source, type(self.stack[-2]).__name__)
            )
        pickle._Unpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = load_build

    def refuse_buffers(self) -> None:
        raise PthError("%s: the pickle uses protocol-5 buffers, which torch.save never writes" % self.source)


# BYTEARRAY8 (allocates and zero-fills a length the file gives), NEXT_BUFFER, READONLY_BUFFER;
# by value, as Python 3.7's pickle module does not name them.
for _opcode in (0x96, 0x97, 0x98):
    _RestrictedUnpickler.dispatch[_opcode] = _RestrictedUnpickler.refuse_buffers

# What a malformed (not malicious: globals are already restricted) pickle raises while loading.
_MALFORMED = (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError, KeyError,
              OverflowError, RecursionError, MemoryError, struct.error, UnicodeDecodeError)


def _unpickle(data: bytes, source: str, storages: Dict[str, _Storage], legacy: bool) -> Tuple[Any, int]:
    """The object pickled at the start of ``data`` (at most MAX_PICKLE_BYTES), and its length."""
    unpickler = _RestrictedUnpickler(data, source, storages, legacy)
    try:
        return unpickler.load(), unpickler.stream.tell()
    except PthError:
        raise
    except _MALFORMED as exc:
        if len(data) >= MAX_PICKLE_BYTES and isinstance(exc, (EOFError, pickle.UnpicklingError)):
            raise PthError("%s: the pickle is longer than the %d bytes this reader accepts: not a state_dict"
                           % (source, MAX_PICKLE_BYTES)) from None
        raise PthError("%s: truncated or corrupt pickle (%s: %s)"
                       % (source, type(exc).__name__, _shown(str(exc)))) from None


def _storage_array(storage: _Storage, source: str) -> np.ndarray:
    if isinstance(storage, _StorageView):
        root = _storage_array(storage.root, source)
        if storage.view_offset + storage.numel > root.size:
            raise PthError("%s: storage view out of bounds of storage %s" % (source, _shown(storage.key)))
        return root[storage.view_offset : storage.view_offset + storage.numel]
    if storage.array is None:
        raise PthError("%s: storage %s is referenced but its data record is missing" % (source, _shown(storage.key)))
    return storage.array


def _decode(raw: Union[bytes, memoryview], storage: _Storage, little_endian: bool, source: str) -> np.ndarray:
    dtype = storage.storage_type.dtype.newbyteorder("<" if little_endian else ">")
    if len(raw) < storage.nbytes:
        raise PthError(
            "%s: storage %s holds %d bytes but %d %s elements need %d: the file is truncated or corrupt"
            % (source, _shown(storage.key), len(raw), storage.numel, storage.storage_type.name, storage.nbytes)
        )
    return np.frombuffer(raw, dtype=dtype, count=storage.numel)


class _Materialiser:
    """Turns the unpickled tree's tensor references into arrays: each tensor object and each
    container once (so shared references cost nothing), within the element budget."""

    def __init__(self, source: str, storages: Dict[str, _Storage]) -> None:
        self.source = source
        self.stored = sum(s.numel for s in storages.values())
        self.left = MAX_VIEW_EXPANSION * self.stored + VIEW_SLACK_ELEMENTS
        self.done: Dict[int, Any] = {}

    def resolve(self, obj: Any, depth: int = 0) -> Any:
        if not isinstance(obj, (_TensorRef, dict, list, tuple)):
            return obj
        if id(obj) in self.done:
            return self.done[id(obj)]
        if depth > MAX_NESTING:
            raise PthError("%s: containers nested more than %d deep (or one that contains itself): not a checkpoint"
                           % (self.source, MAX_NESTING))
        if isinstance(obj, _TensorRef):
            result: Any = self.tensor(obj)
        elif isinstance(obj, dict):
            items = [(k, self.resolve(v, depth + 1)) for k, v in obj.items()]
            result = OrderedDict(items) if isinstance(obj, OrderedDict) else dict(items)
        elif isinstance(obj, list):
            result = [self.resolve(v, depth + 1) for v in obj]
        else:
            result = tuple(self.resolve(v, depth + 1) for v in obj)
        self.done[id(obj)] = result
        return result

    def _refuse(self, ref: _TensorRef, flat: np.ndarray, why: str) -> PthError:
        return PthError("%s: tensor (offset %d, size %s, stride %s) on storage %s of %d elements: %s"
                        % (self.source, ref.offset, _shown(ref.size), _shown(ref.stride), _shown(ref.storage.key),
                           flat.size, why))

    def tensor(self, ref: _TensorRef) -> np.ndarray:
        flat = _storage_array(ref.storage, self.source)
        size, offset = ref.size, ref.offset
        if len(size) != len(ref.stride) or len(size) > MAX_DIMS:
            raise self._refuse(ref, flat, "size and stride must have the same length, at most %d" % MAX_DIMS)
        if offset < 0 or min(size + ref.stride, default=0) < 0:
            raise self._refuse(ref, flat, "negative offset, size or stride")
        numel = functools.reduce(operator.mul, size, 1)
        if numel > flat.size:
            raise self._refuse(ref, flat, "more elements than its storage holds (a broadcast view; save "
                                          "tensor.contiguous() instead)")
        stride = tuple(st if s > 1 else 0 for s, st in zip(size, ref.stride))  # a length-1 axis never steps
        if numel and offset + sum((s - 1) * st for s, st in zip(size, stride)) >= flat.size:
            raise self._refuse(ref, flat, "it reaches past the end of its storage")
        self.left -= numel
        if self.left < 0:
            raise PthError("%s: the tensors hold more than %d times the %d elements the file stores (views "
                           "repeated beyond any state_dict)" % (self.source, MAX_VIEW_EXPANSION, self.stored))
        if numel == 0:
            try:
                array = np.empty(size, dtype=flat.dtype)
            except (ValueError, OverflowError):
                raise self._refuse(ref, flat, "an impossible size") from None
        else:
            view = np.lib.stride_tricks.as_strided(
                flat[offset:], shape=size, strides=[st * flat.itemsize for st in stride], writeable=False
            )
            array = np.ascontiguousarray(view)
        array = array.astype(array.dtype.newbyteorder("="), copy=False)
        if ref.storage.storage_type.name == "BFloat16Storage":  # bfloat16 = the top 16 bits of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32).view(WidenedBFloat16)
        return array


def _read_record(archive: zipfile.ZipFile, name: str, need: int, limit: Optional[int], source: str,
                 file_size: int) -> bytes:
    """The bytes of the zip record ``name``, checked before anything is read: stored (not
    compressed), not encrypted, at least ``need`` and at most ``limit`` bytes, inside the file."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise PthError("%s: record %s is missing from the archive" % (source, _shown(name))) from None
    if info.compress_type != zipfile.ZIP_STORED:
        raise PthError(
            "%s: record %s is compressed (zip method %d); torch.save stores records uncompressed and this reader "
            "refuses compressed ones, which can expand without bound: re-save the checkpoint with torch.save, or "
            "re-zip it without compression (zip -0)" % (source, _shown(name), info.compress_type)
        )
    if info.flag_bits & 0x1:
        raise PthError("%s: record %s is encrypted; torch.save never encrypts: re-save the checkpoint"
                       % (source, _shown(name)))
    if info.file_size < need:
        raise PthError("%s: record %s holds %d bytes but its storage needs %d: the file is truncated or corrupt"
                       % (source, _shown(name), info.file_size, need))
    if limit is not None and info.file_size > limit:
        raise PthError("%s: record %s is %d bytes long, more than the %d this reader accepts for it: not a state_dict"
                       % (source, _shown(name), info.file_size, limit))
    if info.header_offset + info.compress_size > file_size:
        raise PthError("%s: record %s claims %d bytes, past the end of the %d-byte file: the file is truncated"
                       % (source, _shown(name), info.compress_size, file_size))
    return archive.read(info)


def _load_zip(path: Path, file_size: int) -> Any:
    source = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, struct.error, NotImplementedError) as exc:
        # OSError: Python 3.7's zipfile seeks to a negative central-directory offset
        raise PthError(
            "%s: truncated or corrupt zip archive (%s); download or copy the checkpoint again"
            % (source, _shown(str(exc)))
        ) from None
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise PthError("%s: zip archive without a single <name>/data.pkl record: not a torch.save file" % source)
        prefix = pickles[0][: -len("data.pkl")]
        storages: Dict[str, _Storage] = {}
        try:
            byteorder = "little"
            if prefix + "byteorder" in names:
                raw = _read_record(archive, prefix + "byteorder", 0, 16, source, file_size)
                byteorder = raw.decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise PthError("%s: unknown byteorder record %s" % (source, _shown(byteorder)))
            pickled = _read_record(archive, pickles[0], 0, MAX_PICKLE_BYTES, source, file_size)
            obj, _ = _unpickle(pickled, source, storages, legacy=False)
            for key, storage in storages.items():
                raw = _read_record(archive, "%sdata/%s" % (prefix, key), storage.nbytes, None, source, file_size)
                storage.array = _decode(raw, storage, byteorder == "little", source)
        except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError) as exc:  # CRC errors, short records,
            # headers that ask for zip features torch.save never uses (a later zip version, strong encryption)
            raise PthError("%s: corrupt zip archive (%s); download or copy the checkpoint again"
                           % (source, _shown(str(exc)))) from None
    return _Materialiser(source, storages).resolve(obj)


def _load_legacy(path: Path) -> Any:
    source = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PthError("%s: cannot read the checkpoint (%s)" % (path, exc.strerror or exc)) from None
    storages: Dict[str, _Storage] = {}
    pos = 0

    def next_pickle() -> Any:
        nonlocal pos
        obj, length = _unpickle(data[pos : pos + MAX_PICKLE_BYTES], source, storages, legacy=True)
        pos += length
        return obj

    if next_pickle() != LEGACY_MAGIC_NUMBER:
        raise PthError("%s: not a PyTorch checkpoint (no torch.save magic number)" % source)
    protocol = next_pickle()
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise PthError("%s: unsupported legacy torch.save protocol %s" % (source, _shown(protocol)))
    sys_info = next_pickle()
    little_endian = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
    obj = next_pickle()
    keys = next_pickle()
    if not isinstance(keys, list):
        raise PthError("%s: legacy checkpoint without a storage key list" % source)
    for key in keys:
        storage = storages.get(key) if isinstance(key, str) else None
        if storage is None:
            raise PthError("%s: storage %s is listed but never referenced" % (source, _shown(key)))
        header = data[pos : pos + 8]
        pos += 8
        if len(header) != 8:
            raise PthError("%s: truncated legacy checkpoint: storage %s is missing" % (source, _shown(key)))
        numel = struct.unpack("<q" if little_endian else ">q", header)[0]
        if numel != storage.numel:
            raise PthError("%s: storage %s records %d elements, the pickle says %d"
                           % (source, _shown(key), numel, storage.numel))
        if storage.nbytes > len(data) - pos:
            raise PthError("%s: truncated legacy checkpoint: storage %s needs %d bytes, %d are left in the file"
                           % (source, _shown(key), storage.nbytes, len(data) - pos))
        storage.array = _decode(memoryview(data)[pos : pos + storage.nbytes], storage, little_endian, source)
        pos += storage.nbytes
    return _Materialiser(source, storages).resolve(obj)


def load_pth(path: PathLike) -> Any:
    """The unpickled object of a ``.pth`` file, tensors as NumPy arrays (no PyTorch needed)."""
    path = Path(path)
    try:
        file_size = path.stat().st_size
        with open(path, "rb") as stream:
            head = stream.read(512)
    except OSError as exc:
        raise PthError("%s: cannot read the checkpoint (%s)" % (path, exc.strerror or exc)) from None
    try:
        if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
            return _load_zip(path, file_size)
        if head[:1] == b"\x80":
            return _load_legacy(path)
    except MemoryError:  # a genuine checkpoint larger than this machine's memory
        raise PthError("%s: not enough memory to read the checkpoint" % path) from None
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
    not_keys = [k for k in obj if not (isinstance(k, str) and k.isprintable())]
    if not_keys:  # module paths are printable strings; anything else would garble every message naming it
        raise PthError("%s: state_dict keys that are not printable strings: %s"
                       % (source, ", ".join(_shown(k) for k in not_keys[:10])))
    not_tensors = sorted(k for k, v in obj.items() if not isinstance(v, np.ndarray))
    if not_tensors:
        raise PthError("%s: state_dict entries that are not tensors: %s"
                       % (source, ", ".join(_shown(k) for k in not_tensors[:10])))
    strip = all(k.startswith(DATA_PARALLEL_PREFIX) for k in obj)
    result: "OrderedDict[str, np.ndarray]" = OrderedDict()
    for key, value in obj.items():
        if strip:
            key = key[len(DATA_PARALLEL_PREFIX) :]
        if key.endswith("num_batches_tracked"):
            continue
        result[key] = value
    return result


def load_state_dict(path: PathLike) -> "OrderedDict[str, np.ndarray]":
    """``normalise_state_dict(load_pth(path))``: the tensors of a ``.pth`` by official key."""
    return normalise_state_dict(load_pth(path), str(path))
