"""``ibnedge.Classifier``: files or arrays in, top-k classes out, preprocessing pipelined.

    clf = ibnedge.Classifier(model="resnet50_ibn_a_lite.mindir", backend="lite", threads=2)
    for p in clf.predict(["cat.jpg", "broken.jpg"], topk=5):
        print(p.source, p.labels[0] if p.ok else p.error)

:meth:`Classifier.predict_iter` overlaps the two stages: a background thread runs the
native engine on batch k+1 (``Preprocessor.run`` releases the GIL and uses its own
thread pool) while a backend thread runs batch k. With several devices (``device_id=[0, 1, 2, 3]``, the
four chips of an Atlas 300I card) there is one backend per device, each in its own
thread, fed from the same preprocessing stream: each batch goes to whichever device is
free, and results are put back in input order (a reorder buffer keyed by the batch's
sequence number). A fixed set of preallocated input buffers bounds memory however many
items stream through; a device that fails hands its batch back to the others and is
reported with its id (:attr:`Classifier.device_failures`), so no row is lost or repeated.
"""
from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .ascend_box import check_device_ids
from .backends import Backend, BackendError, create_backend
from .engine import load_native
from .files import InputFile
from .formats import PILLOW_MAX_PIXELS
from .metadata import MetadataError, ModelMetadata, PreprocessSpec, imagenet_class_names, load_for_model, warn_missing
from .models import resolve

PathLike = Union[str, "os.PathLike[str]"]
_POLL_S = 0.1
# The input stage still busy this long after close() is blocked in the caller's iterator (a
# pipe or network source that stopped delivering), which nothing here can interrupt.
CLOSE_TIMEOUT_S = 10.0
_log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """One item's result: the top-k classes with softmax probabilities, or why it failed."""

    source: str
    indices: List[int] = field(default_factory=list)
    labels: List[str] = field(default_factory=list)
    probs: List[float] = field(default_factory=list)
    error: Optional[Tuple[str, str]] = None  # (kind, message), kinds as the engine's ItemError

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> Dict[str, Any]:
        """The output row (see ibnedge.results); probabilities rounded to 6 decimals."""
        if self.error is not None:
            return {"path": self.source, "error": {"kind": self.error[0], "message": self.error[1]}}
        return {
            "path": self.source,
            "top": [
                {"index": int(i), "label": label, "prob": round(float(p), 6)}
                for i, label, p in zip(self.indices, self.labels, self.probs)
            ],
        }


class Classifier(object):
    """A model, a backend and the native preprocessing that model expects.

    ``model``: a ``.mindir`` / ``.onnx`` / ``.ms`` file, official ``.pth`` weights (made into
    an ONNX or Lite model once, without PyTorch or MindSpore; ``arch`` is read from the
    file unless given) or a MindSpore ``.ckpt`` (exported once; needs MindSpore); None
    downloads the official resnet50_ibn_a ImageNet weights once and does the same (see
    :mod:`ibnedge.models`). ``backend``: "lite", "mindspore", "onnx" or "auto". ``device_id``: one device index, or
    several (one backend per device, each fed by the same preprocessing). ``threads``: CPU
    threads for each backend and the engine (0 = their defaults). ``batch``: images per
    backend call.
    ``preprocess``: None (the model's metadata), a semantics name ("pil", "mindspore",
    "fast") applied to the metadata's sizes, or a full :class:`PreprocessSpec`.
    ``exif_orientation``, ``accept_damaged``, ``max_pixels``: how images are decoded (see
    :class:`ibnedge.preprocess.Preprocessor`): apply EXIF orientation; classify truncated
    and corrupt JPEGs as libjpeg fills them in instead of reporting them; the pixel cap
    (which also sets the per-image memory budget).
    """

    def __init__(
        self,
        model: Optional[PathLike] = None,
        backend: str = "auto",
        device: str = "cpu",
        device_id: Union[int, Sequence[int]] = 0,
        threads: int = 0,
        batch: int = 8,
        preprocess: Union[None, str, PreprocessSpec] = None,
        arch: Optional[str] = None,
        exif_orientation: bool = False,
        progress: Optional[bool] = None,
        accept_damaged: bool = False,
        max_pixels: int = PILLOW_MAX_PIXELS,
    ) -> None:
        if int(batch) < 1:
            raise ValueError("batch must be >= 1, got %r" % (batch,))
        self.device_ids = device_id_list(device_id)
        if device == "ascend":
            check_device_ids(self.device_ids)
        load_native()  # before the model is fetched and a backend opened on every device
        resolved = resolve(model, backend, arch=arch, progress=progress)
        self.model_path = resolved.path
        self.batch = int(batch)
        self.device = device
        self.backends = []  # type: List[Backend]
        try:
            for i in self.device_ids:
                # "auto" picks a runtime for the first device; the others get the same one.
                name = self.backends[0].name if self.backends else resolved.backend
                self.backends.append(create_backend(name, self.model_path, device=device, device_id=i, threads=threads))
                if len(self.device_ids) > 1 and not self.backends[0].supports_multiple_devices:
                    raise BackendError(
                        "the %s backend runs on one device per process: pass one --device-id, or use --backend lite"
                        % self.backends[0].name
                    )
        except BaseException:
            for b in self.backends:
                b.close()
            raise
        self.backend = self.backends[0]  # type: Backend
        # (device id, what went wrong) for each device that failed during predict_iter.
        self.device_failures = []  # type: List[Tuple[int, str]]
        # Batches each device ran, by device id (how the work was dealt out).
        self.batches_per_device = dict((i, 0) for i in self.device_ids)  # type: Dict[int, int]
        self.metadata = load_for_model(self.model_path)  # type: Optional[ModelMetadata]
        self.spec = self._resolve_spec(preprocess)
        if self.metadata is None:
            warn_missing(self.model_path, "using %s preprocessing (resize %d, crop %dx%d, mean %s, std %s) and "
                         "ImageNet class names for 1000 outputs (class_N otherwise)"
                         % (self.spec.semantics, self.spec.resize, self.spec.crop[0], self.spec.crop[1],
                            _numbers(self.spec.mean), _numbers(self.spec.std)))
        self._names = self.metadata.names() if self.metadata is not None else None  # type: Optional[List[str]]

        from .preprocess import Preprocessor  # the native engine; loaded only when classifying

        self.preprocessor = Preprocessor(spec=self.spec, threads=threads, exif_orientation=exif_orientation,
                                         max_pixels=max_pixels, accept_damaged=accept_damaged)

    # -- set-up ---------------------------------------------------------------------
    def _resolve_spec(self, preprocess: Union[None, str, PreprocessSpec]) -> PreprocessSpec:
        if isinstance(preprocess, PreprocessSpec):
            spec = preprocess
        else:
            if self.metadata is not None:
                base = self.metadata.preprocess
            else:
                # No metadata: ImageNet defaults, cropped to what the model takes if it says.
                h, w = self.backend.input_shape[2:]
                base = PreprocessSpec(crop=(h, w)) if h > 0 and w > 0 else PreprocessSpec()
            spec = base.with_semantics(preprocess)
        h, w = self.backend.input_shape[2:]
        if h > 0 and w > 0 and (h, w) != tuple(spec.crop):
            raise MetadataError(
                "%s takes %dx%d inputs but preprocessing crops %dx%d: fix the model's metadata or the spec"
                % (self.model_path, h, w, spec.crop[0], spec.crop[1])
            )
        return spec

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return (3, self.spec.crop[0], self.spec.crop[1])

    def class_names(self, num_classes: int) -> List[str]:
        """Names for a ``num_classes``-wide output: the metadata's, ImageNet's, or indices."""
        if self._names is None or len(self._names) != num_classes:
            if self._names is not None:
                raise MetadataError(
                    "%s outputs %d classes but its metadata names %d" % (self.model_path, num_classes, len(self._names))
                )
            self._names = imagenet_class_names() if num_classes == 1000 else ["class_%d" % i for i in range(num_classes)]
        return self._names

    # -- prediction -----------------------------------------------------------------
    def predict(self, items: Iterable[Any], topk: int = 5) -> List[Prediction]:
        """Predictions for ``items`` (paths, bytes, HWC uint8 RGB arrays), in order."""
        return list(self.predict_iter(items, topk=topk))

    def predict_iter(self, items: Iterable[Any], topk: int = 5) -> Iterator[Prediction]:
        """Like :meth:`predict`, streaming, with preprocessing of the next batch overlapped
        with the backend's run on the current one. ``items`` may be a lazy iterable (e.g.
        :func:`ibnedge.files.iter_input_files`); it is consumed in the background thread."""
        if int(topk) < 1:
            raise ValueError("topk must be >= 1, got %r" % (topk,))
        pipeline = _Pipeline(self, _as_items(items))
        try:
            for batch in pipeline:
                for prediction in self._decode(batch, int(topk)):
                    yield prediction
        finally:
            pipeline.close()

    def logits(self, tensor: np.ndarray) -> np.ndarray:
        """The backend alone on a preprocessed (N, 3, H, W) float32 batch."""
        return self.backend.run(tensor)

    def _decode(self, batch: "_Batch", topk: int) -> List[Prediction]:
        out = []  # type: List[Prediction]
        probs = None
        if batch.logits is not None and len(batch.logits):
            names = self.class_names(batch.logits.shape[1])
            probs = softmax(batch.logits)
            k = min(topk, probs.shape[1])
            order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        for source, error, row in zip(batch.sources, batch.errors, batch.rows):
            if error is not None:
                out.append(Prediction(source, error=error))
                continue
            idx = order[row]
            out.append(Prediction(source, idx.tolist(), [names[i] for i in idx], probs[row, idx].tolist()))
        return out

    def close(self) -> None:
        for backend in self.backends:
            backend.close()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _numbers(values: Sequence[float]) -> str:
    return "/".join("%g" % v for v in values)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (probabilities comparable across backends to 1e-6)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class _Batch:
    sources: List[str]
    errors: List[Optional[Tuple[str, str]]]
    rows: List[int]  # row of each item in the tensor, -1 when it never reached the engine
    logits: Optional[np.ndarray] = None


def _as_items(items: Any) -> Iterable[Any]:
    """One path, bytes, InputFile or image array (HxW or HxWxC) given alone is a list of one
    (not its characters or rows); an (N, H, W, 3) array is N images."""
    if isinstance(items, (str, bytes, bytearray, memoryview, InputFile)) or hasattr(items, "__fspath__"):
        return [items]
    if isinstance(items, np.ndarray) and items.ndim in (2, 3):  # one HxW (gray) or HxWxC image
        return [items]
    return items


def _describe(item: Any, index: int) -> Tuple[str, Any, Optional[Tuple[str, str]]]:
    """(source label, what the engine reads, error decided before decoding)."""
    if isinstance(item, InputFile):
        return item.path, item.path, item.error
    if isinstance(item, (str, Path)) or hasattr(item, "__fspath__"):
        return os.fspath(item), item, None
    if isinstance(item, (bytes, bytearray, memoryview)):
        return "bytes[%d]" % index, bytes(item), None
    if isinstance(item, np.ndarray):
        return "array[%d]" % index, item, None
    return "item[%d]" % index, None, ("unsupported", "cannot classify a %s: give a path, bytes or an HWC uint8 array" % type(item).__name__)


def device_id_list(device_id: Union[int, Sequence[int]]) -> List[int]:
    """``device_id`` as a list of distinct indices >= 0 (one int is a list of one)."""
    ids = [device_id] if isinstance(device_id, int) else list(device_id)
    if not ids or any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in ids):
        raise ValueError("device_id must be an index >= 0 or a list of them, got %r" % (device_id,))
    if len(set(ids)) != len(ids):
        raise ValueError("device_id lists a device twice: %r" % (device_id,))
    return ids


class _Job(object):
    """A preprocessed batch on its way to a device: its sequence number, the rows it holds
    (``n`` of ``buf``) and, once run, its logits in ``batch``."""

    def __init__(self, seq: int, batch: _Batch, buf: np.ndarray, n: int) -> None:
        self.seq = seq
        self.batch = batch
        self.buf = buf
        self.n = n


class _Pipeline(object):
    """Background preprocessing feeding one backend thread per device, results in order.

    All state is guarded by one condition variable. ``2 * devices + 1`` buffers exist and
    at most that many batches are between the producer and the consumer (waiting,
    running, or done but not yet consumed), so memory stays bounded however far one slow
    device falls behind; with one device that is the classic fill / ready / run triple.
    """

    def __init__(self, clf: Classifier, items: Iterable[Any]) -> None:
        self._clf = clf
        self._items = items
        self._window = 2 * len(clf.backends) + 1
        shape = (clf.batch,) + clf.input_shape
        self._free = [np.empty(shape, dtype=np.float32) for _ in range(self._window)]
        self._cond = threading.Condition()
        self._pending = collections.deque()  # type: collections.deque  # _Jobs waiting for a device
        self._done = {}  # type: Dict[int, _Batch]  # finished batches by sequence number
        self._submitted = 0  # batches handed to the devices (the next sequence number)
        self._next = 0  # the next sequence number to yield
        self._running = 0
        self._live = len(clf.backends)
        self._produced_all = False
        self._input_error = None  # type: Optional[BaseException]  # raised after the rows before it
        self._fatal = None  # type: Optional[BaseException]  # every device failed
        self._stop = False
        # (thread, the stage it runs as a warning names it)
        self._stages = [(threading.Thread(target=self._produce, name="ibnedge-preprocess", daemon=True),
                         "preprocessing (reading the input items)")]
        for device_id, backend in zip(clf.device_ids, clf.backends):
            self._stages.append((threading.Thread(
                target=self._work, args=(device_id, backend), name="ibnedge-device-%d" % device_id, daemon=True),
                "%s device %d (%s backend)" % (clf.device, device_id, backend.name)))
        for t, _ in self._stages:
            t.start()

    # -- producer -------------------------------------------------------------------
    def _produce(self) -> None:
        try:
            index = 0
            chunk = []  # type: List[Tuple[str, Any, Optional[Tuple[str, str]]]]
            for item in self._items:
                chunk.append(_describe(item, index))
                index += 1
                if len(chunk) == self._clf.batch:
                    if not self._submit(chunk):
                        return
                    chunk = []
            if chunk and not self._submit(chunk):
                return
        except BaseException as exc:  # handed to the consumer, which re-raises it in order
            with self._cond:
                self._input_error = exc
        with self._cond:
            self._produced_all = True
            self._cond.notify_all()

    def _submit(self, chunk: Sequence[Tuple[str, Any, Optional[Tuple[str, str]]]]) -> bool:
        with self._cond:
            while not self._stop and self._submitted - self._next >= self._window:
                self._cond.wait(_POLL_S)
            if self._stop:
                return False
            buf = self._free.pop()  # fewer than _window batches hold one: there is a free one
        batch, n = self._preprocess(chunk, buf)
        with self._cond:
            job = _Job(self._submitted, batch, buf, n)
            self._submitted += 1
            if n:
                self._pending.append(job)
            else:  # nothing reached the engine (every item failed before decoding)
                self._done[job.seq] = batch
                self._free.append(buf)
            self._cond.notify_all()
        return True

    def _preprocess(self, chunk: Sequence[Tuple[str, Any, Optional[Tuple[str, str]]]],
                    buf: np.ndarray) -> Tuple[_Batch, int]:
        sources = [c[0] for c in chunk]
        errors = [c[2] for c in chunk]
        rows = []  # type: List[int]
        todo = []  # type: List[Any]
        for _, readable, error in chunk:
            rows.append(len(todo) if error is None else -1)
            if error is None:
                todo.append(readable)
        if todo:
            result = self._clf.preprocessor.run(todo, out=buf[: len(todo)])
            for i, row in enumerate(rows):
                if row >= 0 and result.errors[row] is not None:
                    item_error = result.errors[row]
                    errors[i] = (item_error.kind, item_error.message)
        return _Batch(sources, errors, rows), len(todo)

    # -- devices --------------------------------------------------------------------
    def _work(self, device_id: int, backend: Backend) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._pending and not (self._produced_all and self._running == 0):
                    self._cond.wait(_POLL_S)
                if self._stop or not self._pending:
                    return  # stopped, or nothing left that a failing device could hand back
                job = self._pending.popleft()
                self._running += 1
            try:
                logits = backend.run(job.buf[: job.n])
            except BaseException as exc:
                self._retire(device_id, backend, job, exc)
                return
            job.batch.logits = logits
            with self._cond:
                self._running -= 1
                self._done[job.seq] = job.batch
                self._free.append(job.buf)
                self._clf.batches_per_device[device_id] += 1
                self._cond.notify_all()

    def _retire(self, device_id: int, backend: Backend, job: _Job, exc: BaseException) -> None:
        """A device failed: its batch goes back to the front for the others; the last one
        failing ends the run with every device's reason."""
        reason = " ".join(str(exc).split()) or type(exc).__name__
        with self._cond:
            self._running -= 1
            self._live -= 1
            self._pending.appendleft(job)
            self._clf.device_failures.append((device_id, reason))
            if self._live == 0:
                self._fatal = BackendError("%s failed: %s" % (
                    "the device" if len(self._clf.backends) == 1 else "every device",
                    "; ".join("%s device %d: %s" % (self._clf.device, i, r) for i, r in self._clf.device_failures)))
                self._fatal.__cause__ = exc
            self._cond.notify_all()
        if self._live:
            _log.warning("%s device %d (%s backend) failed, its batches go to the other devices: %s",
                         self._clf.device, device_id, backend.name, reason)

    # -- consumer -------------------------------------------------------------------
    def __iter__(self) -> Iterator[_Batch]:
        while True:
            with self._cond:
                while (self._next not in self._done and self._fatal is None
                       and not (self._produced_all and self._next == self._submitted)):
                    self._cond.wait(_POLL_S)
                if self._next in self._done:
                    batch = self._done.pop(self._next)
                    self._next += 1
                    self._cond.notify_all()
                elif self._fatal is not None:
                    raise self._fatal
                elif self._input_error is not None:
                    raise self._input_error
                else:
                    return
            yield batch

    def close(self) -> None:
        """Stops every stage. The device stages are waited for: a batch run always returns,
        however slow (a first compile, a big batch on a CPU), and the backends are closed only
        after. The input stage may be blocked in the caller's iterator for good: still running
        after :data:`CLOSE_TIMEOUT_S`, it is left behind (a daemon thread) with one warning,
        rather than hanging the caller."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        (producer, stage), devices = self._stages[0], self._stages[1:]
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        for t, _ in devices:
            t.join()
        producer.join(max(0.0, deadline - time.monotonic()))
        if producer.is_alive():
            _log.warning("%s did not stop within %g s of closing the pipeline (blocked in the input iterator?); "
                         "left running in the background", stage, CLOSE_TIMEOUT_S)
