"""``ibnedge.Classifier``: files or arrays in, top-k classes out, preprocessing pipelined.

    clf = ibnedge.Classifier(model="resnet50_ibn_a_lite.mindir", backend="lite", threads=2)
    for p in clf.predict(["cat.jpg", "broken.jpg"], topk=5):
        print(p.source, p.labels[0] if p.ok else p.error)

:meth:`Classifier.predict_iter` overlaps the two stages: a background thread runs the
native engine on batch k+1 (``Preprocessor.run`` releases the GIL and uses its own
thread pool) while the calling thread runs the backend on batch k. The two stages hand
over a small fixed set of preallocated input buffers through bounded queues, so memory
stays constant however many items stream through, and neither stage waits in steady
state unless the other is slower.
"""
from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .backends import Backend, create_backend
from .files import InputFile
from .metadata import ModelMetadata, PreprocessSpec, imagenet_class_names, load_for_model

PathLike = Union[str, "os.PathLike[str]"]
# Buffers in flight: one being filled, one ready, one being run by the backend.
_PIPELINE_BUFFERS = 3
_POLL_S = 0.1


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

    ``model``: a ``.mindir`` / ``.onnx`` / ``.ms`` file, or a ``.ckpt`` / ``.pth`` with
    ``arch`` (exported on the fly; needs MindSpore); None downloads and prepares the
    official resnet50_ibn_a ImageNet weights once (see :mod:`ibnedge.hub`).
    ``backend``: "lite", "mindspore", "onnx" or "auto". ``threads``: CPU threads for the
    backend and the engine (0 = their defaults). ``batch``: images per backend call.
    ``preprocess``: None (the model's metadata), a semantics name ("pil", "mindspore",
    "fast") applied to the metadata's sizes, or a full :class:`PreprocessSpec`.
    """

    def __init__(
        self,
        model: Optional[PathLike] = None,
        backend: str = "auto",
        device: str = "cpu",
        device_id: int = 0,
        threads: int = 0,
        batch: int = 8,
        preprocess: Union[None, str, PreprocessSpec] = None,
        arch: Optional[str] = None,
        exif_orientation: bool = False,
        progress: Optional[bool] = None,
    ) -> None:
        if int(batch) < 1:
            raise ValueError("batch must be >= 1, got %r" % (batch,))
        if model is None:
            from .hub import default_model

            model = default_model(backend, progress=progress)
        self.model_path = Path(model)
        self.batch = int(batch)
        self.backend = create_backend(
            backend, self.model_path, device=device, device_id=device_id, threads=threads, arch=arch
        )  # type: Backend
        # A checkpoint is exported first; its metadata sits beside the exported file.
        loaded = getattr(self.backend, "loaded_path", self.model_path)
        self.metadata = load_for_model(loaded) or load_for_model(self.model_path)  # type: Optional[ModelMetadata]
        self.spec = self._resolve_spec(preprocess)
        self._names = self.metadata.names() if self.metadata is not None else None  # type: Optional[List[str]]

        from .preprocess import Preprocessor  # the native engine; loaded only when classifying

        self.preprocessor = Preprocessor(spec=self.spec, threads=threads, exif_orientation=exif_orientation)

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
            raise ValueError(
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
                raise ValueError(
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
        self.backend.close()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


_END = object()


class _Failure(object):
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


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


class _Pipeline(object):
    """Background preprocessing feeding the calling thread's backend runs."""

    def __init__(self, clf: Classifier, items: Iterable[Any]) -> None:
        self._clf = clf
        self._items = items
        shape = (clf.batch,) + clf.input_shape
        self._free = queue.Queue()  # type: queue.Queue
        for _ in range(_PIPELINE_BUFFERS):
            self._free.put(np.empty(shape, dtype=np.float32))
        self._ready = queue.Queue(maxsize=1)  # type: queue.Queue
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="ibnedge-preprocess", daemon=True)
        self._thread.start()

    def _put(self, q: "queue.Queue", obj: Any) -> bool:
        while not self._stop.is_set():
            try:
                q.put(obj, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _get_free(self) -> Optional[np.ndarray]:
        while not self._stop.is_set():
            try:
                return self._free.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return None

    def _produce(self) -> None:
        try:
            index = 0
            chunk = []  # type: List[Tuple[str, Any, Optional[Tuple[str, str]]]]
            for item in self._items:
                chunk.append(_describe(item, index))
                index += 1
                if len(chunk) == self._clf.batch:
                    if not self._preprocess(chunk):
                        return
                    chunk = []
            if chunk and not self._preprocess(chunk):
                return
            self._put(self._ready, _END)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(self._ready, _Failure(exc))

    def _preprocess(self, chunk: Sequence[Tuple[str, Any, Optional[Tuple[str, str]]]]) -> bool:
        buf = self._get_free()
        if buf is None:
            return False
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
        return self._put(self._ready, (_Batch(sources, errors, rows), buf, len(todo)))

    def __iter__(self) -> Iterator[_Batch]:
        while True:
            got = self._ready.get()
            if got is _END:
                return
            if isinstance(got, _Failure):
                raise got.exc
            batch, buf, n = got
            try:
                if n:
                    batch.logits = self._clf.backend.run(buf[:n])
            finally:
                self._free.put(buf)
            yield batch

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
