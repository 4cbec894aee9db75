"""Batches of images -> the model's float32 NCHW input, by the native engine.

>>> pre = Preprocessor(spec=PreprocessSpec(semantics="pil"), threads=0)
>>> res = pre.run(["a.jpg", b"...jpeg bytes...", rgb_array])
>>> res.tensor.shape, res.errors
((3, 3, 224, 224), [None, None, None])

JPEGs (paths or bytes) are decoded, resized and cropped in C++ with libjpeg-turbo on a
persistent thread pool, with the GIL released for the whole batch. Other formats (PNG,
BMP, WebP, GIF, TIFF; detected by content) are decoded here with OpenCV and resized by the
same native kernel. Errors are per item: a bad image gets a zero-filled row and an
``ItemError``; the other rows are exact.

Semantics (``spec.semantics``), each reproducing its reference on the same bytes:
``pil`` is torchvision's Resize + CenterCrop on a Pillow image (antialiased bilinear with
Pillow's fixed-point arithmetic, horizontal pass first as Pillow <= 12 always does; Pillow
13 runs the vertical pass first for some sizes, which moves a few pixels by 1);
``mindspore`` is mindspore.dataset.vision Decode + Resize + CenterCrop (OpenCV
INTER_LINEAR); ``fast`` decodes at a DCT-domain reduction (1/2, 1/4, 1/8 keeping the short
side >= resize) and then resizes like ``pil``.

Damaged JPEGs are refused by default: a file whose data ends early is an error of kind
``truncated``, one whose entropy-coded data libjpeg cannot decode (a marker inside the
scan, a bad Huffman code, a lost restart marker...) is ``corrupt``, with libjpeg's message.
libjpeg would fill what it could not decode with grey and the model would confidently
classify the grey. The verdict is the full decode's: the data below the crop is checked
too, in every semantics. Warnings after which every pixel still comes from the data
(extraneous bytes before a marker, an unknown APPn segment) are not damage.
``accept_damaged=True`` accepts such files, filled in as libjpeg fills them.

Memory: besides the pixel cap (``max_pixels``, checked on the header before anything is
allocated), each image may hold at most 4 bytes per pixel of ``max_pixels`` while it is
decoded (the file's bytes, libjpeg's whole-image buffers for progressive files, the
decoded window of an EXIF-rotated image); more is an error of kind ``too_large``.
"""
from __future__ import annotations

import io
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from .engine import load_native
from .formats import HEAD_BYTES, PILLOW_MAX_PIXELS, image_size, png_default_image, refusal, sniff, title
from .metadata import PreprocessSpec

__all__ = ["ERROR_KINDS", "ItemError", "PreprocessResult", "Preprocessor", "default_threads"]

# The kinds an ItemError can have.
ERROR_KINDS = ("unreadable", "empty", "truncated", "corrupt", "not_image", "too_large", "unsupported")
# The fix too_large messages name (the engine's say the same: cpp/preprocess_types.h kRaiseMaxPixels).
_RAISE_MAX_PIXELS = "raise max_pixels (ibnedge --max-pixels N) if the image is genuine"



@dataclass(frozen=True)
class ItemError:
    """Why one item produced no tensor: ``kind`` (one of ERROR_KINDS) and a message that
    names the item and, where there is one, the fix."""

    kind: str
    message: str

    def __str__(self) -> str:
        return "%s: %s" % (self.kind, self.message)


@dataclass
class PreprocessResult:
    tensor: np.ndarray  # (N, 3, crop_h, crop_w) float32, C-contiguous; failed rows zero-filled
    errors: List[Optional[ItemError]]  # None for good items

    @property
    def ok(self) -> List[bool]:
        return [e is None for e in self.errors]


def default_threads() -> int:
    """The CPUs this process may run on (affinity-aware where the OS says)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class Preprocessor:
    """Turns batches of images into normalised float32 NCHW tensors as ``spec`` says.

    ``threads``: worker threads per batch (0: one per available CPU). One Preprocessor may
    be used from several Python threads at once. ``exif_orientation``: apply the EXIF
    orientation (training pipelines ignore it, so the default does too). ``max_pixels``:
    images whose header claims more pixels are refused (kind ``too_large``) before
    anything is allocated; it also sets the per-image memory budget (see the module doc).
    ``accept_damaged``: accept truncated and corrupt JPEGs as libjpeg fills them in (see
    the module doc). ``allow_truncated`` is its deprecated former name.
    """

    def __init__(
        self,
        spec: Optional[PreprocessSpec] = None,
        threads: int = 0,
        exif_orientation: bool = False,
        max_pixels: int = PILLOW_MAX_PIXELS,
        accept_damaged: bool = False,
        *,
        allow_truncated: Optional[bool] = None,
    ) -> None:
        _native = load_native()  # loaded here, so that ibnedge imports without it

        self.spec = spec if spec is not None else PreprocessSpec()
        if not isinstance(self.spec, PreprocessSpec):
            raise TypeError("spec must be an ibnedge.metadata.PreprocessSpec, got %r" % (type(spec).__name__,))
        threads = int(threads)
        if threads < 0:
            raise ValueError("threads must be >= 0 (0 = one per CPU), got %d" % threads)
        max_pixels = int(max_pixels)
        if max_pixels < 1:
            raise ValueError("max_pixels must be positive, got %d" % max_pixels)
        self.threads = threads if threads > 0 else default_threads()
        self.exif_orientation = bool(exif_orientation)
        self.max_pixels = max_pixels
        if allow_truncated is not None:
            warnings.warn("Preprocessor(allow_truncated=...) is deprecated: use accept_damaged=..., which also "
                          "covers corrupt data", DeprecationWarning, stacklevel=2)
            if accept_damaged and not allow_truncated:
                raise ValueError("accept_damaged=True contradicts allow_truncated=False: pass accept_damaged alone")
            accept_damaged = bool(allow_truncated)
        self.accept_damaged = bool(accept_damaged)
        self._engine = _native.Engine(self.threads)
        self._max_side = int(_native.MAX_IMAGE_SIDE)
        self._lock = threading.Lock()
        # Thread pool for OpenCV decodes of non-JPEG items, made on first use, and the process
        # that made it: a child forked later has none of its threads and makes its own.
        self._decode_pool = None  # type: Optional[Any]
        self._decode_pool_pid = 0

    @property
    def output_shape(self) -> Tuple[int, int, int]:
        return (3, self.spec.crop[0], self.spec.crop[1])

    def run(self, items: Sequence[Any], out: Optional[np.ndarray] = None) -> PreprocessResult:
        """Preprocess ``items`` (paths, bytes-like JPEG/PNG/... data, or HWC uint8 RGB arrays).

        ``out``: an optional (N, 3, crop_h, crop_w) float32 C-contiguous array to fill
        (it is ``result.tensor``); allocated when None.
        """
        items = list(items)
        n = len(items)
        shape = (n,) + self.output_shape
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        elif not isinstance(out, np.ndarray):
            raise TypeError("out must be a numpy array, got %s" % type(out).__name__)
        elif (out.shape != shape or out.dtype != np.float32 or not out.flags["C_CONTIGUOUS"]
              or not out.flags["WRITEABLE"] or not out.flags["ALIGNED"]):
            flaws = [name for name, flag in (("not contiguous", "C_CONTIGUOUS"), ("read-only", "WRITEABLE"),
                                              ("not aligned", "ALIGNED")) if not out.flags[flag]]
            raise ValueError(
                "out must be a writeable, aligned, C-contiguous float32 array of shape %r, got %s %r%s; "
                "allocate it with numpy.empty(%r, numpy.float32)"
                % (shape, out.dtype, out.shape, " (%s)" % ", ".join(flaws) if flaws else "", shape)
            )
        native_items = [None] * n  # type: List[Any]
        types = ["n"] * n
        errors = [None] * n  # type: List[Optional[ItemError]]
        labels = [_label(i, item) for i, item in enumerate(items)]
        encoded_others = []  # type: List[Tuple[int, bytes]]
        for i, item in enumerate(items):
            letter, payload, error = self._prepare(item)
            if letter == "decode":  # bytes of another format: decoded below, in parallel
                encoded_others.append((i, payload))
                continue
            native_items[i] = payload
            types[i] = letter
            if error is not None:
                errors[i] = ItemError(error[0], "%s: %s" % (labels[i], error[1]))
        for (i, _), (pixels, error) in zip(encoded_others, self._map(self._decode_other, [d for _, d in encoded_others])):
            if error is not None:
                errors[i] = ItemError(error[0], "%s: %s" % (labels[i], error[1]))
            else:
                native_items[i], types[i] = pixels, "a"

        statuses = self._native_run(native_items, "".join(types), out)
        others = []  # paths the engine found not to be JPEGs: decoded here, resized natively
        for i, status in enumerate(statuses):
            if status is None or errors[i] is not None:
                continue
            kind, message = status
            if kind == "not_jpeg":
                others.append(i)
            else:
                errors[i] = ItemError(kind, "%s: %s" % (labels[i], message))
        if others:
            self._run_other_files([items[i] for i in others], others, out, errors, labels)
        return PreprocessResult(tensor=out, errors=errors)

    # -- internals -----------------------------------------------------------------
    def _native_run(self, items: List[Any], types: str, out: np.ndarray) -> List[Optional[Tuple[str, str]]]:
        spec = self.spec
        return self._engine.run(
            items, types, out,
            semantics=spec.semantics, resize=int(spec.resize), crop=(int(spec.crop[0]), int(spec.crop[1])),
            mean=list(spec.mean), std=list(spec.std), exif_orientation=self.exif_orientation,
            accept_damaged=self.accept_damaged, max_pixels=self.max_pixels,
        )

    def _map(self, fn: Callable[[Any], Any], args: List[Any]) -> List[Any]:
        """fn over args, on a small thread pool when it pays (OpenCV decodes release the GIL)."""
        if len(args) < 2 or self.threads < 2:
            return [fn(a) for a in args]
        with self._lock:
            if self._decode_pool is None or self._decode_pool_pid != os.getpid():
                from concurrent.futures import ThreadPoolExecutor

                # A parent's pool is dropped, not shut down: its threads are not in this process.
                self._decode_pool = ThreadPoolExecutor(max_workers=self.threads)
                self._decode_pool_pid = os.getpid()
            pool = self._decode_pool
        return list(pool.map(fn, args))

    def _prepare(self, item: Any) -> Tuple[str, Any, Optional[Tuple[str, str]]]:
        """(type letter, payload, error or None) of one item; letter "decode": non-JPEG bytes."""
        if isinstance(item, np.ndarray):
            return self._prepare_array(item)
        if isinstance(item, (bytes, bytearray, memoryview)):
            data = item
            if isinstance(item, memoryview) and not item.c_contiguous:
                data = item.tobytes()
            if len(data) == 0:
                return "n", None, ("empty", "empty (0 bytes)")
            if sniff(bytes(data[:HEAD_BYTES])) == "jpeg":
                return "b", data, None
            return "decode", bytes(data), None
        if isinstance(item, (str, os.PathLike)):
            # Encoded here, so that a name the file system cannot take is this item's error,
            # not an exception that fails the whole batch (and a NUL cannot cut the name short).
            try:
                path = os.fsencode(item)
            except UnicodeEncodeError as exc:
                return "n", None, ("unreadable", "the path cannot be encoded for the file system (%s)" % exc.reason)
            if b"\0" in path:
                return "n", None, ("unreadable", "the path contains a NUL byte")
            return "p", path, None
        return "n", None, (
            "unsupported", "items must be paths, bytes or HWC uint8 arrays, got %s" % type(item).__name__)

    def _prepare_array(self, arr: np.ndarray) -> Tuple[str, Any, Optional[Tuple[str, str]]]:
        if arr.dtype != np.uint8:
            return "n", None, ("unsupported", "pixel arrays must be uint8 RGB, got dtype %s" % arr.dtype)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            return "n", None, ("unsupported", "pixel arrays must be (H, W, 3) RGB (or gray / RGBA), got shape %r"
                               % (arr.shape,))
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            return "n", None, ("empty", "pixel array has no pixels (shape %r)" % (arr.shape,))
        if max(arr.shape[0], arr.shape[1]) > self._max_side:
            return "n", None, ("too_large", "pixel array of %dx%d: sides over %d pixels are not supported; crop or "
                                            "shrink it first" % (arr.shape[1], arr.shape[0], self._max_side))
        if arr.shape[2] == 1 or arr.strides[2] != 1:  # the engine reads packed RGB(X): copy
            if arr.shape[0] * arr.shape[1] > self.max_pixels:
                # The engine refuses an oversized array itself; this one is refused before the copy.
                return "n", None, ("too_large", "pixel array of %dx%d = %d pixels, over the cap of %d; %s"
                                   % (arr.shape[1], arr.shape[0], arr.shape[0] * arr.shape[1], self.max_pixels,
                                      _RAISE_MAX_PIXELS))
            arr = np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else np.ascontiguousarray(arr)
        return "a", arr, None

    def _decode_other(self, data: bytes) -> Tuple[Optional[np.ndarray], Optional[Tuple[str, str]]]:
        """OpenCV decode of a non-JPEG image to HWC uint8 RGB (alpha dropped, 16 bits -> 8;
        an APNG's default image). GIF/TIFF files this OpenCV build cannot read go to Pillow
        when it is installed. Formats outside ibnedge.formats.FORMATS are refused unread."""
        verdict = refusal(data[:HEAD_BYTES])
        if verdict is not None:
            return None, verdict
        fmt = sniff(data[:HEAD_BYTES])
        size = image_size(data[:HEAD_BYTES])
        if size is not None and size[0] * size[1] > self.max_pixels:
            return None, ("too_large", "%s header claims %dx%d = %d pixels, over the cap of %d; %s"
                                       % (title(fmt), size[0], size[1], size[0] * size[1], self.max_pixels,
                                          _RAISE_MAX_PIXELS))
        if size is not None and (size[0] == 0 or size[1] == 0):
            return None, ("corrupt", "%s header claims an empty %dx%d image" % (title(fmt), size[0], size[1]))
        if fmt == "png":
            data = png_default_image(data)
        import cv2

        flags = cv2.IMREAD_COLOR
        if not self.exif_orientation:
            flags |= cv2.IMREAD_IGNORE_ORIENTATION
        try:
            bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
        except cv2.error as exc:
            bgr, detail = None, str(exc).strip().splitlines()[-1]
        else:
            detail = "OpenCV could not decode it"
        if bgr is None:
            if fmt in ("gif", "tiff"):
                pixels, refused = _pillow_decode(data, self.exif_orientation)
                if pixels is not None or refused is not None:
                    return pixels, refused
                return None, ("unsupported", "%s image that neither OpenCV nor Pillow here can decode (%s); "
                                             "convert it to PNG or JPEG" % (title(fmt), detail))
            if fmt == "png" and b"IEND" not in data[-64:]:
                return None, ("truncated", "truncated PNG: no IEND chunk at the end; re-fetch the file")
            return None, ("corrupt", "corrupt %s: %s" % (title(fmt), detail))
        if bgr.ndim == 2:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
        if bgr.dtype != np.uint8:  # IMREAD_COLOR gives 8 bits; guard against builds that do not
            bgr = (bgr >> 8).astype(np.uint8) if bgr.dtype == np.uint16 else bgr.astype(np.uint8)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), None

    def _read_and_decode(self, path: Any) -> Tuple[Optional[np.ndarray], Optional[Tuple[str, str]]]:
        try:
            with open(os.fspath(path), "rb") as f:
                data = f.read()
        except OSError as exc:
            return None, ("unreadable", "cannot read the file: %s" % (exc.strerror or exc))
        return self._decode_other(data)

    def _run_other_files(self, paths: List[Any], indices: List[int], out: np.ndarray,
                         errors: List[Optional[ItemError]], labels: List[str]) -> None:
        arrays = []
        kept = []
        for i, (pixels, error) in zip(indices, self._map(self._read_and_decode, paths)):
            if error is not None:
                errors[i] = ItemError(error[0], "%s: %s" % (labels[i], error[1]))
            else:
                arrays.append(pixels)
                kept.append(i)
        if not kept:
            return
        sub = np.empty((len(kept),) + self.output_shape, dtype=np.float32)
        statuses = self._native_run(arrays, "a" * len(kept), sub)
        for row, (i, status) in enumerate(zip(kept, statuses)):
            out[i] = sub[row]
            if status is not None:
                errors[i] = ItemError(status[0], "%s: %s" % (labels[i], status[1]))


def _pillow_decode(data: bytes,
                   exif_orientation: bool) -> Tuple[Optional[np.ndarray], Optional[Tuple[str, str]]]:
    """Pillow's RGB decode (first frame); (None, None) when Pillow is absent or fails, and
    a ``too_large`` error for an image over Pillow's decompression-bomb limit."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        return None, None
    try:
        img = Image.open(io.BytesIO(data))
        if exif_orientation:
            img = ImageOps.exif_transpose(img)
        return np.asarray(img.convert("RGB")), None
    except Image.DecompressionBombError as exc:
        return None, ("too_large", "%s (Pillow's decompression-bomb limit)" % exc)
    except Exception:  # any other decoder failure means "cannot decode"; the caller reports it
        return None, None


def _label(index: int, item: Any) -> str:
    """How messages name an item: its path, else its position and type."""
    if isinstance(item, (str, os.PathLike)):
        return os.fsdecode(os.fspath(item))
    if isinstance(item, np.ndarray):
        return "item %d (array)" % index
    return "item %d (%s)" % (index, type(item).__name__)
