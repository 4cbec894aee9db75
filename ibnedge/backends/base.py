"""The contract every inference runtime implements, and the name -> backend registry.

One module per runtime (``lite``, ``mindspore``, ``onnx``), each importing its library
lazily inside :meth:`Backend.load`, so ``import ibnedge`` never pays for (or needs) a
runtime it does not use. ``auto`` picks the first backend, in :data:`AUTO_ORDER`, whose
runtime is installed and which loads the model. A backend loads a model file and nothing
else: weights (``.pth``, ``.ckpt``) and the default model are made into model files
before a backend is chosen (:mod:`ibnedge.models`).
"""
from __future__ import annotations

import abc
import contextlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Type, Union

import numpy as np

from ..choices import AUTO, BACKEND_CHOICES, BACKENDS as BACKEND_NAMES, DEVICES
from ..errors import UserError

PathLike = Union[str, "os.PathLike[str]"]

# The order in which ``auto`` tries the backends.
AUTO_ORDER = BACKEND_NAMES


class BackendError(UserError, RuntimeError):
    """A backend cannot be set up (runtime missing, model unreadable, device absent)."""


class Backend(abc.ABC):
    """A loaded model that maps a float32 NCHW batch to logits of shape (N, num_classes)."""

    #: registry key, e.g. "lite"
    name = ""
    #: the Python module whose presence means the runtime is installed
    runtime_module = ""
    #: how to install the runtime, for error messages
    install_hint = ""
    #: model file suffixes (lower case) this backend can load
    suffixes = ()  # type: Tuple[str, ...]
    #: whether one process can hold a backend per device (``Classifier(device_id=[0, 1])``)
    supports_multiple_devices = True

    def __init__(
        self,
        model_path: PathLike,
        device: str = "cpu",
        device_id: int = 0,
        threads: int = 0,
    ) -> None:
        if device not in DEVICES:
            raise ValueError("unknown device %r: choose one of %s" % (device, ", ".join(DEVICES)))
        if int(device_id) < 0:
            raise ValueError("device_id must be >= 0, got %r" % (device_id,))
        if int(threads) < 0:
            raise ValueError("threads must be >= 0 (0 = the runtime's default), got %r" % (threads,))
        self.model_path = Path(model_path)
        self.device = device
        self.device_id = int(device_id)
        self.threads = int(threads)
        # NCHW; -1 marks a dimension the model leaves dynamic.
        self.input_shape = (-1, 3, -1, -1)  # type: Tuple[int, int, int, int]
        # Batch sizes the model was built for (batch profiles, ascending), when it says more
        # than its input shape does; set by load(). Empty: the input shape decides.
        self.batch_profiles = ()  # type: Tuple[int, ...]
        self._closed = False

    # -- what subclasses implement -------------------------------------------------
    @abc.abstractmethod
    def load(self) -> "Backend":
        """Import the runtime, read the model, fill :attr:`input_shape`; returns self."""

    @abc.abstractmethod
    def _predict(self, batch: np.ndarray) -> np.ndarray:
        """Logits for one C-contiguous float32 batch the model accepts as is."""

    # -- shared behaviour -----------------------------------------------------------
    @classmethod
    def installed(cls) -> bool:
        """Whether the runtime can be imported (checked without importing it)."""
        try:
            return importlib.util.find_spec(cls.runtime_module) is not None
        except (ImportError, ValueError):
            return False

    @classmethod
    def accepts(cls, model_path: PathLike) -> bool:
        """Whether this backend reads files of the model's type (by suffix)."""
        return Path(model_path).suffix.lower() in cls.suffixes

    @property
    def batch_sizes(self) -> Optional[Tuple[int, ...]]:
        """The batch sizes the model accepts, ascending, or None when any size goes."""
        if self.batch_profiles:
            return self.batch_profiles
        n = self.input_shape[0]
        return (n,) if n > 0 else None

    @property
    def fixed_batch(self) -> Optional[int]:
        """The one batch size the model accepts, or None (dynamic, or several profiles)."""
        sizes = self.batch_sizes
        return sizes[0] if sizes is not None and len(sizes) == 1 else None

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits (N, num_classes) float32 for a float32 NCHW batch of any size N >= 1.

        A model that accepts only some batch sizes (a static export, or batch profiles) is
        fed in chunks: the largest size while more rows remain than it holds, then the
        smallest size that holds the rest, zero-padded (see :func:`plan_chunks`); callers
        never need to know how the model was built.
        """
        if self._closed:
            raise BackendError("%s was closed: create a new backend for %s" % (self, self.model_path))
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4:
            raise ValueError("expected an NCHW batch, got shape %s" % (batch.shape,))
        n = batch.shape[0]
        sizes = self.batch_sizes
        if sizes is None or n in sizes:
            return np.asarray(self._predict(batch), dtype=np.float32)
        outs = []
        start = 0
        for size, rows in plan_chunks(n, sizes):
            chunk = batch[start:start + rows]
            if rows < size:
                padded = np.zeros((size,) + batch.shape[1:], dtype=np.float32)
                padded[:rows] = chunk
                chunk = padded
            outs.append(np.asarray(self._predict(chunk), dtype=np.float32)[:rows])
            start += rows
        return np.concatenate(outs, axis=0)

    def close(self) -> None:
        """Release the runtime's resources; later runs raise :class:`BackendError`."""
        self._closed = True
        self._release()

    def _release(self) -> None:
        """Drop the runtime's objects (subclasses that hold any)."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "%s(%r, device=%r, threads=%d)" % (type(self).__name__, str(self.model_path), self.device, self.threads)


def plan_chunks(n: int, sizes: Sequence[int]) -> List[Tuple[int, int]]:
    """(model batch size, rows of real input) per call for ``n`` rows on a model that
    accepts only ``sizes``: the largest size while more than it remains, then the smallest
    size that holds the rest (padded). Profiles (1, 8) and 9 rows: [(8, 8), (1, 1)]; 7 rows:
    [(8, 7)], one call with one padding row rather than seven calls."""
    if n < 1:
        raise ValueError("need at least one row, got %d" % n)
    ordered = sorted(set(int(s) for s in sizes))
    if not ordered or ordered[0] < 1:
        raise ValueError("batch sizes must be positive, got %r" % (list(sizes),))
    largest = ordered[-1]
    plan = []  # type: List[Tuple[int, int]]
    while n > largest:
        plan.append((largest, largest))
        n -= largest
    plan.append((next(s for s in ordered if s >= n), n))
    return plan


BACKENDS = {}  # type: Dict[str, Type[Backend]]


def register(cls: Type[Backend]) -> Type[Backend]:
    """Class decorator adding a backend to the registry under ``cls.name``, one of
    :data:`ibnedge.choices.BACKENDS` (the list ``--backend`` offers)."""
    if cls.name not in BACKEND_NAMES:
        raise ValueError("%s's name %r is none of ibnedge.choices.BACKENDS %s" % (cls.__name__, cls.name, BACKEND_NAMES))
    if cls.name in BACKENDS:
        raise ValueError("backend %r is registered twice" % cls.name)
    BACKENDS[cls.name] = cls
    return cls


def backend_names() -> List[str]:
    """Valid values for ``--backend``."""
    return list(BACKEND_CHOICES)


def get_backend_class(name: str) -> Type[Backend]:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError("unknown backend %r: choose one of %s" % (name, ", ".join(backend_names())))


def installed_backends() -> List[str]:
    return [name for name, cls in BACKENDS.items() if cls.installed()]


def create_backend(
    name: str,
    model_path: PathLike,
    device: str = "cpu",
    device_id: int = 0,
    threads: int = 0,
) -> Backend:
    """A loaded backend; ``name="auto"`` tries :data:`AUTO_ORDER` and keeps the first that loads.

    Raises :class:`BackendError` with one line naming the fix when nothing can run the model.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise BackendError("model file not found: %s (check the --model path)" % model_path)
    if name != AUTO:
        cls = get_backend_class(name)
        _check_usable(cls, model_path)
        return cls(model_path, device=device, device_id=device_id, threads=threads).load()

    reasons = []
    for candidate in AUTO_ORDER:
        cls = BACKENDS[candidate]
        if not cls.installed():
            reasons.append("%s: not installed" % candidate)
            continue
        if not cls.accepts(model_path):
            reasons.append("%s: does not read %s files" % (candidate, model_path.suffix or "suffix-less"))
            continue
        try:
            return cls(model_path, device=device, device_id=device_id, threads=threads).load()
        except BackendError as exc:
            reasons.append("%s: %s" % (candidate, exc))
    raise BackendError("no installed backend can run %s (%s)" % (model_path, "; ".join(reasons)))


def _check_usable(cls: Type[Backend], model_path: Path) -> None:
    if not cls.installed():
        raise BackendError(
            "backend %r needs %s, which is not installed: %s" % (cls.name, cls.runtime_module, cls.install_hint)
        )
    if not cls.accepts(model_path):
        raise BackendError(
            "backend %r cannot read %s (it reads %s); convert the model or pick another --backend"
            % (cls.name, model_path.name, ", ".join(cls.suffixes))
        )


@contextlib.contextmanager
def captured_native_stderr(also_stdout: bool = False) -> Iterator[List[str]]:
    """Collect what native libraries write to file descriptor 2 (and 1) inside the block.

    MindSpore Lite reports failures as a dozen glog lines on fd 2 and then raises a bare
    "Common error code" (and its converter printf()s a banner on fd 1); capturing them
    lets the caller raise ONE line carrying the first real reason. The lines are appended
    to the yielded list when the block ends.
    """
    lines = []  # type: List[str]
    fds = (1, 2) if also_stdout else (2,)
    try:
        saved = [os.dup(fd) for fd in fds]
    except OSError:  # no such descriptor (some embedded interpreters): nothing to capture
        yield lines
        return
    with tempfile.TemporaryFile() as sink:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, ValueError):
                pass
        for fd in fds:
            os.dup2(sink.fileno(), fd)
        try:
            yield lines
        finally:
            for fd, copy in zip(fds, saved):
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", "replace").splitlines())


def native_reason(exc: BaseException, lines: Sequence[str]) -> str:
    """The most specific reason for a native failure: the exception's own first line,
    unless it is Lite's generic "Common error code", then the first real ``[ERROR]`` line."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if "Common error code" not in text:
        return text
    for line in lines:
        if "[ERROR]" not in line or "null exception handler" in line:
            continue
        # "[ERROR] LITE(pid,...):time [file.cc:123] Func] MESSAGE"
        message = line.rsplit("] ", 1)[-1].strip()
        return message.replace("Catch exception: ", "", 1)
    return text


def dims_from_shape(shape: Sequence[object]) -> Tuple[int, int, int, int]:
    """A runtime's reported NCHW shape with unknown dims (None, names, 0, -1) as -1."""
    dims = []
    for d in list(shape)[:4]:
        dims.append(d if isinstance(d, int) and d > 0 else -1)
    while len(dims) < 4:
        dims.append(-1)
    return (dims[0], dims[1], dims[2], dims[3])
