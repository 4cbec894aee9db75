"""What travels with every exported model: architecture, classes and preprocessing.

A model is only as accurate as the tensors it is fed, so the preprocessing it was
trained or evaluated with is data that goes with it (as timm's pretrained configs do),
not CLI constants. ``train.export`` writes it as JSON in two places:

- inside the model file where the format has room for it: an ONNX file carries it in
  ``metadata_props`` under :data:`ONNX_METADATA_KEY` (read by :mod:`ibnedge.onnx_info`,
  without the ``onnx`` package), so a copied ``.onnx`` keeps its preprocessing;
- in ``<model stem>.json`` beside the model (the only place for MINDIR; ``ibnedge convert``
  writes it beside the Lite model it makes).

``ibnedge`` reads it back to preprocess exactly the same way. When both exist and differ,
the embedded copy wins (it cannot be separated from the weights it describes, while a
sidecar may be a stale leftover of another export with the same name) and a warning says
so. A model with neither runs on ImageNet defaults with a warning (:func:`warn_missing`).
"""
from __future__ import annotations

import json
import os
import sys
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

from .choices import CONVERT_DEVICES, SEMANTICS, SOCS, precisions
from .errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The short side before a 224 centre crop: the official evaluation (torchvision Resize(256)
# + CenterCrop(224)) and train/'s default.
DEFAULT_RESIZE = 256

# Version 2 added ``origin``; version 1 files (without it) still load, with origin "".
METADATA_VERSION = 2
READABLE_VERSIONS = (1, 2)

# Where a model's weights were made, and the resize semantics that origin implies. This is
# the one default: it is applied where the weights are made (ModelMetadata.official for
# official weights, train's loop for trained ones, train.export for random ones), and
# recorded; readers use what the record says.
ORIGIN_SEMANTICS = OrderedDict([
    # The authors' released PyTorch weights, evaluated with torchvision/PIL.
    ("official", "pil"),
    # Trained with train/: its data pipeline is mindspore.dataset Decode/Resize/CenterCrop.
    ("trained", "mindspore"),
    # train/'s own initialisation, exported untrained for benchmarks: a model made here
    # before training, so it gets what the models trained here get.
    ("random-init", "mindspore"),
])  # type: Dict[str, str]


def semantics_of(origin: str) -> str:
    """The resize semantics of weights of ``origin`` (a key of :data:`ORIGIN_SEMANTICS`)."""
    try:
        return ORIGIN_SEMANTICS[origin]
    except KeyError:
        raise ValueError("unknown origin %r: one of %s" % (origin, ", ".join(ORIGIN_SEMANTICS))) from None
# The ONNX metadata_props key whose value is the same JSON as the sidecar file.
ONNX_METADATA_KEY = "ibnedge.metadata"

PathLike = Union[str, "os.PathLike[str]"]


class MetadataError(UserError, ValueError):
    """A model's metadata is unreadable or contradicts the model; the message names the file."""


@dataclass(frozen=True)
class PreprocessSpec:
    """How an image becomes the model's input tensor.

    ``resize``: the shorter side is scaled to this many pixels; ``crop``: centre crop
    (height, width); mean/std on the 0..1 scale, RGB order; output is CHW float32. The
    defaults are ImageNet's, what a model without metadata gets (with a warning); a model's
    record says its own (:meth:`ModelMetadata.describe`).
    """

    resize: int = 256
    crop: Tuple[int, int] = (224, 224)
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    semantics: str = "pil"

    def __post_init__(self) -> None:
        crop = self.crop
        if isinstance(crop, int):
            crop = (crop, crop)
        object.__setattr__(self, "crop", tuple(int(c) for c in crop))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if self.semantics not in SEMANTICS:
            raise ValueError(
                "unknown resize semantics %r: choose one of %s" % (self.semantics, ", ".join(SEMANTICS))
            )
        if len(self.crop) != 2 or min(self.crop) < 1:
            raise ValueError("crop must be a positive size or (height, width), got %r" % (crop,))
        if int(self.resize) < 1:
            raise ValueError("resize must be a positive short-side length, got %r" % (self.resize,))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need three values each, std > 0")

    def with_semantics(self, semantics: Optional[str]) -> "PreprocessSpec":
        """The same spec with another resize semantics (``None`` keeps this one)."""
        if semantics is None or semantics == self.semantics:
            return self
        return PreprocessSpec(self.resize, self.crop, self.mean, self.std, semantics)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "PreprocessSpec":
        known = {"resize", "crop", "mean", "std", "semantics"}
        unknown = set(d) - known
        if unknown:
            raise ValueError("unknown preprocessing keys: %s" % ", ".join(sorted(unknown)))
        return cls(**d)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["crop"] = list(self.crop)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d


def _is_plain_file_name(name: str) -> bool:
    """A name of a file in the current folder: no folder part, not absolute, not "." or ".."."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in ("/", "\\", "\0"))


@dataclass(frozen=True)
class Deployment:
    """How a converted model was built for its runtime: written by ``ibnedge convert``.

    ``device``: the runtime device the model is for (:data:`ibnedge.choices.CONVERT_DEVICES`);
    ``soc``: the chip (one of :data:`ibnedge.choices.SOCS` on Ascend, "" on CPU);
    ``batch_profiles``: the batch sizes the model accepts, ascending (empty: any size);
    ``precision``: what runs in which float type, one of
    :func:`ibnedge.choices.precisions` for the device ("fp32" or "fp16-weights" on CPU;
    "mixed", "fp32" or "fp16" on Ascend); ``profile_files``: for runtimes that hold one
    batch size per file (Lite on CPU), the file of each size other than the model's own: a
    file name in the model's folder, never a path (a model from elsewhere must not make
    ibnedge open other files).
    """

    device: str = "cpu"
    soc: str = ""
    batch_profiles: Tuple[int, ...] = ()
    precision: str = "fp32"
    profile_files: Dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.device not in CONVERT_DEVICES:
            raise ValueError("deployment device %r is none of %s" % (self.device, ", ".join(CONVERT_DEVICES)))
        allowed = precisions(self.device)
        if self.precision not in allowed:
            raise ValueError("precision %r is none of those of a %s model (%s)" % (
                self.precision, self.device, ", ".join(allowed)))
        if self.device == "ascend" and self.soc not in SOCS:
            raise ValueError("soc %r is none of %s" % (self.soc, ", ".join(SOCS)))
        if self.device != "ascend" and self.soc:
            raise ValueError("a %s model has no soc, got %r" % (self.device, self.soc))
        sizes = tuple(int(b) for b in self.batch_profiles)
        if any(b < 1 for b in sizes) or list(sizes) != sorted(set(sizes)):
            raise ValueError("batch_profiles must be distinct positive sizes in ascending order, got %r" % (sizes,))
        files = {int(k): str(v) for k, v in dict(self.profile_files).items()}
        stray = sorted(set(files) - set(sizes))
        if stray:
            raise ValueError("profile_files names batch sizes %s that are not in batch_profiles %s" % (stray, list(sizes)))
        for name in files.values():
            if not _is_plain_file_name(name):
                raise ValueError("profile_files may only name files beside the model, not %r" % (name,))
        object.__setattr__(self, "batch_profiles", sizes)
        object.__setattr__(self, "profile_files", files)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "device": self.device,
            "soc": self.soc,
            "batch_profiles": list(self.batch_profiles),
            "precision": self.precision,
            "profile_files": {str(k): v for k, v in sorted(self.profile_files.items())},
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Deployment":
        return cls(
            device=str(d.get("device", "cpu")),
            soc=str(d.get("soc", "")),
            batch_profiles=tuple(int(b) for b in d.get("batch_profiles", ())),
            precision=str(d.get("precision", "fp32")),
            profile_files={int(k): str(v) for k, v in dict(d.get("profile_files", {})).items()},
        )


@dataclass
class ModelMetadata:
    """The one record of a model: what its weights are and how it is fed.

    Checkpoints of train/ store it (``train.model_info``), every export writes it (beside
    the model file and, for ONNX, inside it), ``ibnedge convert`` copies it with the
    :class:`Deployment` filled in, and ``ibnedge`` reads it. Make new records with
    :meth:`describe`, which applies the semantics of the weights' origin.
    """

    arch: str
    num_classes: int
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    class_names: Optional[List[str]] = None
    # NCHW input of the exported graph; a batch of -1 means dynamic.
    input_shape: Tuple[int, int, int, int] = (-1, 3, 224, 224)
    source: str = ""  # where the weights came from: a .pth/.ckpt name or "random-init"
    # One of ORIGIN_SEMANTICS, or "" where the record does not say (version 1 files).
    origin: str = ""
    # Set by `ibnedge convert` for the runtime it converted for; None in exported models
    # (and in sidecars written before it existed).
    deployment: Optional[Deployment] = None

    def __post_init__(self) -> None:
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(
                "metadata lists %d class names for a %d-class model"
                % (len(self.class_names), self.num_classes)
            )
        if self.origin:
            semantics_of(self.origin)
        shape = tuple(int(v) for v in self.input_shape)
        if len(shape) != 4:
            raise ValueError("input_shape must be NCHW, got %r" % (self.input_shape,))
        self.input_shape = shape  # type: ignore[assignment]

    @classmethod
    def describe(
        cls,
        arch: str,
        num_classes: int,
        origin: str,
        source: str,
        crop: Union[int, Tuple[int, int]] = 224,
        resize: int = DEFAULT_RESIZE,
        class_names: Optional[Sequence[str]] = None,
        mean: Tuple[float, float, float] = IMAGENET_MEAN,
        std: Tuple[float, float, float] = IMAGENET_STD,
        batch: int = -1,
    ) -> "ModelMetadata":
        """A new record, made where the weights are made: ``origin`` (a key of
        :data:`ORIGIN_SEMANTICS`) decides the resize semantics; ``crop`` (an int or (h, w))
        is the model's input size; ``batch`` -1 is dynamic."""
        spec = PreprocessSpec(resize=resize, crop=crop, mean=mean, std=std, semantics=semantics_of(origin))
        return cls(arch=arch, num_classes=int(num_classes), preprocess=spec,
                   class_names=list(class_names) if class_names is not None else None,
                   input_shape=(int(batch), 3) + spec.crop, source=source, origin=origin)

    @classmethod
    def official(cls, arch: str, num_classes: int, source: str,
                 input_size: Tuple[int, int] = (224, 224)) -> "ModelMetadata":
        """The record of the authors' released weights (origin ``official``: torchvision/PIL
        preprocessing, ImageNet statistics; 1000 classes are ImageNet's, :meth:`names`),
        fed at ``input_size`` (height, width)."""
        return cls.describe(arch, num_classes, origin="official", source=source,
                            crop=(int(input_size[0]), int(input_size[1])))

    def with_input(
        self,
        crop: Union[None, int, Tuple[int, int]] = None,
        resize: Optional[int] = None,
        batch: Optional[int] = None,
        semantics: Optional[str] = None,
    ) -> "ModelMetadata":
        """The same model fed another way (an export at another size, a static batch, other
        resize semantics); ``None`` keeps each."""
        spec = self.preprocess
        spec = PreprocessSpec(resize=spec.resize if resize is None else resize,
                              crop=spec.crop if crop is None else crop,
                              mean=spec.mean, std=spec.std, semantics=semantics or spec.semantics)
        n = self.input_shape[0] if batch is None else int(batch)
        return replace(self, preprocess=spec, input_shape=(n, 3) + spec.crop)

    def names(self) -> List[str]:
        """Class names for the model's outputs: its own, ImageNet's for 1000 classes, else indices."""
        if self.class_names is not None:
            return list(self.class_names)
        if self.num_classes == 1000:
            return imagenet_class_names()
        return ["class_%d" % i for i in range(self.num_classes)]

    def to_dict(self) -> Dict[str, Any]:
        d = {
            "version": METADATA_VERSION,
            "arch": self.arch,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "input_shape": list(self.input_shape),
            "preprocess": self.preprocess.to_dict(),
            "source": self.source,
            "origin": self.origin,
        }  # type: Dict[str, Any]
        if self.deployment is not None:
            d["deployment"] = self.deployment.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ModelMetadata":
        version = int(d.get("version", 1))
        if version > METADATA_VERSION:
            raise ValueError(
                "model metadata version %d is newer than this ibnedge understands (%d): upgrade ibnedge"
                % (version, METADATA_VERSION)
            )
        if version not in READABLE_VERSIONS:
            raise ValueError("unknown model metadata version %d" % version)
        return cls(
            arch=str(d["arch"]),
            num_classes=int(d["num_classes"]),
            preprocess=PreprocessSpec.from_dict(d.get("preprocess", {})),
            class_names=d.get("class_names"),
            input_shape=tuple(int(v) for v in d.get("input_shape", (-1, 3, 224, 224))),
            source=str(d.get("source", "")),
            origin=str(d.get("origin", "")) if version >= 2 else "",
            deployment=Deployment.from_dict(d["deployment"]) if d.get("deployment") else None,
        )

    def to_json(self) -> str:
        """The JSON text of the sidecar file and of the ONNX-embedded copy."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> "ModelMetadata":
        """Parse :meth:`to_json`'s text; ``where`` names its origin in the error."""
        try:
            return cls.from_dict(json.loads(text))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MetadataError("%s: invalid model metadata (%s); re-export the model or fix the file" % (where, exc))

    def save(self, path: PathLike) -> Path:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        os.replace(str(tmp), str(path))
        return path


def metadata_path(model_path: PathLike) -> Path:
    """``resnet50_ibn_a.onnx`` -> ``resnet50_ibn_a.json`` beside it."""
    return Path(model_path).with_suffix(".json")


def save_for_model(meta: ModelMetadata, model_path: PathLike) -> Path:
    return meta.save(metadata_path(model_path))


def embed_in_onnx(model: Any, meta: ModelMetadata) -> None:
    """Store ``meta`` in an ``onnx.ModelProto``'s ``metadata_props`` under
    :data:`ONNX_METADATA_KEY`, replacing an earlier entry (the caller loads and saves the
    model; this module does not need the ``onnx`` package)."""
    for entry in [e for e in model.metadata_props if e.key == ONNX_METADATA_KEY]:
        model.metadata_props.remove(entry)
    entry = model.metadata_props.add()
    entry.key = ONNX_METADATA_KEY
    entry.value = meta.to_json()


def read_sidecar(model_path: PathLike) -> Optional[ModelMetadata]:
    """The metadata file beside ``model_path``, or ``None`` when there is none."""
    path = metadata_path(model_path)
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MetadataError("%s: unreadable model metadata (%s); re-export the model or fix the file" % (path, exc))
    return ModelMetadata.from_json(text, str(path))


def read_embedded(model_path: PathLike) -> Optional[ModelMetadata]:
    """The metadata inside the model file (ONNX ``metadata_props``), or ``None``."""
    if Path(model_path).suffix.lower() != ".onnx":
        return None  # MINDIR has no field for it: the sidecar is the only copy
    from .onnx_info import OnnxFormatError, metadata_props

    try:
        text = metadata_props(model_path).get(ONNX_METADATA_KEY)
    except OnnxFormatError as exc:
        raise MetadataError(str(exc))
    if text is None:
        return None
    return ModelMetadata.from_json(text, "%s (embedded %s)" % (model_path, ONNX_METADATA_KEY))


def load_for_model(model_path: PathLike) -> Optional[ModelMetadata]:
    """The model's metadata, embedded or beside it (the embedded copy wins, with a warning
    when the sidecar says otherwise), or ``None`` when there is neither."""
    embedded = read_embedded(model_path)
    sidecar = read_sidecar(model_path)
    if embedded is not None and sidecar is not None and embedded.to_dict() != sidecar.to_dict():
        _warn_once(
            "%s embeds metadata that differs from %s beside it; using the embedded metadata (delete or rewrite "
            "that file to silence this)" % (model_path, metadata_path(model_path)),
            key=("differs", model_path),
        )
    return embedded if embedded is not None else sidecar


def warn_missing(model_path: PathLike, consequence: str) -> None:
    """One stderr line per model file and process: ``model_path`` has no metadata, so ``consequence``."""
    _warn_once(
        "%s has no metadata (none embedded, no %s beside it): %s. A model trained with train/ then gets the "
        "wrong preprocessing (it expects mindspore semantics) and no class names: re-export it with "
        "`python -m train.export`, write that JSON file (see ibnedge.metadata), or pass --preprocess"
        % (model_path, metadata_path(model_path).name, consequence),
        key=("missing", model_path),
    )


_WARNED = set()  # type: Set[Tuple[str, str]]


def _warn_once(message: str, key: Tuple[str, PathLike]) -> None:
    ident = (key[0], os.path.realpath(os.fspath(key[1])))
    if ident in _WARNED:
        return
    _WARNED.add(ident)
    sys.stderr.write("ibnedge: warning: %s\n" % message)
    sys.stderr.flush()


_IMAGENET_FILE = Path(__file__).with_name("data") / "imagenet1k_classes.tsv"


def imagenet_class_names() -> List[str]:
    """ImageNet-1k human-readable names in the standard order (sorted WordNet ids)."""
    return [name for _, name in imagenet_classes()]


def imagenet_classes() -> List[Tuple[str, str]]:
    """(WordNet id, name) for the 1000 ImageNet classes in the standard order."""
    rows = []
    with open(str(_IMAGENET_FILE), encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                wnid, name = line.split("\t", 1)
                rows.append((wnid, name))
    if len(rows) != 1000:
        raise RuntimeError("%s holds %d classes, expected 1000" % (_IMAGENET_FILE, len(rows)))
    return rows

