"""ImageFolder data for training and evaluation: the seed's mindspore.dataset pipelines.

Layout: ``root/<class name>/<image file>``; classes are the sorted subfolder names, so
label ``i`` is the ``i``-th folder (torchvision's and MindSpore's ImageFolder convention).

Every file is checked up front (cheap: format by content, structural end markers) and a
file that cannot be an image MindSpore decodes is reported by name and left out, so one
bad file never stops an epoch. ``--check-images decode`` also decodes every file once
(ibnedge's native engine, threaded) to catch corrupt data a header check cannot see.
Files that pass the check but still fail to decode are replaced in the batch by
MindSpore's ``ErrorSamplesMode.REPLACE`` rather than skipped, which would desynchronise the
ranks of a distributed run (MindSpore logs the error and dumps the image as
``abnormal_image.jpg`` in the working directory).

Pipelines (the MindSpore ModelZoo seed's):
  train: RandomCropDecodeResize(size, scale=(0.08, 1), ratio=(3/4, 4/3)),
         RandomHorizontalFlip, Normalize(mean*255, std*255), HWC2CHW
  eval:  Decode, Resize(resize), CenterCrop(size), Normalize(mean*255, std*255), HWC2CHW
Determinism: the sampler's shuffle and the random augmentations draw from the dataset
seed, which :func:`train_dataset` derives from ``(seed, epoch)``; building each epoch's
pipeline from its own seed makes epoch ``e`` identical whether or not the run was resumed.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ibnedge.errors import UserError
from ibnedge.formats import HEAD_BYTES, PILLOW_MAX_PIXELS as MAX_PIXELS, image_size, sniff
from ibnedge.metadata import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

# What mindspore.dataset.vision.Decode reads without PIL (GIF and WEBP need to_pil=True).
DECODABLE_FORMATS = ("jpeg", "png", "bmp", "tiff")
CHECK_MODES = ("header", "decode", "none")
_TAIL_BYTES = 4096  # an end marker followed by a little padding still counts as complete


class DatasetError(UserError, ValueError):
    """A dataset folder is missing, empty, or does not fit the model or the batch size."""


@dataclass
class BadImage:
    path: Path
    reason: str

    def __str__(self) -> str:
        return "%s: %s" % (self.path, self.reason)


@dataclass
class ImageFolder:
    """The files and labels of one ImageFolder tree, minus the files that failed the check."""

    root: Path
    classes: List[str]
    files: List[Path]
    labels: np.ndarray  # int32, one per file
    bad: List[BadImage] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.files)


def list_classes(root: Path) -> List[str]:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError("%s: dataset folder not found; pass an ImageFolder root (one subfolder per class)" % root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError("%s: no class subfolders; an ImageFolder root holds one subfolder per class" % root)
    return classes


def header_problem(path: Path) -> Optional[str]:
    """Why ``path`` cannot be a complete image the training decoder reads, or ``None``.

    Reads at most the first and last few KiB: format by content (never by extension),
    and the end marker JPEG and PNG files must carry (a truncated download lacks it).
    """
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty file"
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read()
    except OSError as exc:
        return "unreadable (%s)" % (exc.strerror or exc)
    fmt = sniff(head)
    if fmt is None:
        return "not an image (unknown format)"
    if fmt not in DECODABLE_FORMATS:
        return "unsupported format %s (MindSpore's Decode reads %s)" % (fmt, ", ".join(DECODABLE_FORMATS))
    claimed = image_size(head)
    if claimed is not None and claimed[0] * claimed[1] > MAX_PIXELS:
        return "too large (%dx%d pixels claimed)" % claimed
    if fmt == "jpeg" and b"\xff\xd9" not in tail:
        return "truncated JPEG (no end-of-image marker)"
    if fmt == "png" and b"IEND" not in tail:
        return "truncated PNG (no IEND chunk)"
    return None


def decode_problems(paths: Sequence[Path], threads: int = 0, chunk: int = 256) -> List[Optional[str]]:
    """Decode every file once with ibnedge's native libjpeg-turbo engine (GIL released,
    threaded, cheap DCT-scaled output): catches the truncated and corrupt files a header
    check cannot, and, unlike a check through MindSpore's Decode, leaves no
    ``abnormal_image.jpg`` dumps behind. Formats the engine does not decode but MindSpore
    does (TIFF) are left to the header check.
    """
    from ibnedge.metadata import PreprocessSpec
    from ibnedge.preprocess import Preprocessor

    pre = Preprocessor(spec=PreprocessSpec(resize=8, crop=8, semantics="fast"), threads=threads, max_pixels=MAX_PIXELS)
    problems: List[Optional[str]] = []
    for start in range(0, len(paths), chunk):
        errors = pre.run([str(p) for p in paths[start : start + chunk]]).errors
        for path, err in zip(paths[start : start + chunk], errors):
            if err is None or err.kind == "unsupported":
                problems.append(None)
            else:
                problems.append(err.message.replace(str(path) + ": ", "", 1))
    return problems


def check_class_folders(root: Path, classes: Sequence[str]) -> List[str]:
    """``classes``, once ``root``'s class folders (listed, not read) are all among them."""
    unknown = sorted(set(list_classes(root)) - set(classes))
    if unknown:
        raise DatasetError(
            "%s: class folders %s are not among the model's %d classes; "
            "train and validation sets need the same class folders" % (root, ", ".join(unknown), len(classes))
        )
    return list(classes)


def scan_image_folder(
    root: Path,
    classes: Optional[Sequence[str]] = None,
    check: str = "header",
    workers: int = 4,
    report: Callable[[str], None] = print,
) -> ImageFolder:
    """List ``root/<class>/*`` and check every file; bad files are reported and left out.

    ``classes`` fixes the label order (e.g. the training set's, for a validation set that
    lacks some classes); by default it is the sorted folder names.
    """
    if check not in CHECK_MODES:
        raise ValueError("check must be one of %s, got %r" % (", ".join(CHECK_MODES), check))
    root = Path(root)
    classes = list_classes(root) if classes is None else check_class_folders(root, classes)
    files: List[Path] = []
    labels: List[int] = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        for p in sorted(folder.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                files.append(p)
                labels.append(label)
    if not files:
        raise DatasetError("%s: no files in the class folders" % root)

    problems: List[Optional[str]] = [None] * len(files)
    if check != "none":
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            problems = list(pool.map(header_problem, files, chunksize=64))
    if check == "decode":
        passed = [i for i, pr in enumerate(problems) if pr is None]
        for i, pr in zip(passed, decode_problems([files[i] for i in passed], threads=workers)):
            problems[i] = pr
    good = [i for i, pr in enumerate(problems) if pr is None]
    bad = [BadImage(files[i], pr) for i, pr in enumerate(problems) if pr is not None]
    for b in bad:
        report("skipping %s" % b)
    if not good:
        raise DatasetError("%s: none of the %d files is a readable image" % (root, len(files)))
    return ImageFolder(
        root=root,
        classes=classes,
        files=[files[i] for i in good],
        labels=np.asarray([labels[i] for i in good], dtype=np.int32),
        bad=bad,
    )


class _EncodedImages:
    """Random-access source of (encoded bytes, label); decoding happens in the C++ map ops."""

    def __init__(self, files: Sequence[Path], labels: np.ndarray):
        self._files = [str(f) for f in files]
        self._labels = labels

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        # 0-d arrays, not numpy scalars: MindSpore converts rows with np.array(x, copy=False),
        # which NumPy 2 refuses for scalars.
        return np.fromfile(self._files[index], dtype=np.uint8), np.asarray(self._labels[index])


class _Indices:
    def __init__(self, n: int):
        self._n = n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> Tuple[np.ndarray]:
        return (np.asarray(index, dtype=np.int64),)


def epoch_seed(seed: int, epoch: int) -> int:
    """The dataset seed of one epoch (shuffle order and augmentations)."""
    return (int(seed) * 100_003 + int(epoch)) % (2**32 - 1) or 1


def _normalize_ops(mean: Sequence[float], std: Sequence[float]) -> list:
    import mindspore.dataset.vision as vision

    return [
        vision.Normalize(mean=[m * 255.0 for m in mean], std=[s * 255.0 for s in std]),
        vision.HWC2CHW(),
    ]


def train_transforms(image_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> list:
    import mindspore.dataset.vision as vision

    return [
        vision.RandomCropDecodeResize(image_size, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0)),
        vision.RandomHorizontalFlip(prob=0.5),
    ] + _normalize_ops(mean, std)


def eval_transforms(image_size: int, resize: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> list:
    import mindspore.dataset.vision as vision

    return [vision.Decode(), vision.Resize(resize), vision.CenterCrop(image_size)] + _normalize_ops(mean, std)


def _build(
    folder: ImageFolder,
    transforms: list,
    batch_size: int,
    shuffle: bool,
    drop_remainder: bool,
    num_shards: int,
    shard_id: int,
    workers: int,
):
    import mindspore as ms
    import mindspore.dataset as ds

    # A file that passed the check but fails to decode must not stop training, nor change
    # one rank's batch count (SKIP would hang the other ranks at the next all-reduce).
    ds.config.set_error_samples_mode(ds.config.ErrorSamplesMode.REPLACE)
    shard = dict(num_shards=num_shards, shard_id=shard_id) if num_shards > 1 else {}
    data = ds.GeneratorDataset(
        _EncodedImages(folder.files, folder.labels),
        column_names=["image", "label"],
        shuffle=shuffle,
        num_parallel_workers=1,  # reading bytes is I/O bound and cheap; the decode workers are below
        python_multiprocessing=False,
        **shard,
    )
    # MindSpore refuses more parallel workers than CPU cores.
    workers = max(1, min(int(workers), os.cpu_count() or 1))
    data = data.map(operations=transforms, input_columns="image", num_parallel_workers=workers)
    data = data.map(operations=ds.transforms.TypeCast(ms.int32), input_columns="label")
    return data.batch(batch_size, drop_remainder=drop_remainder)


def train_dataset(
    folder: ImageFolder,
    batch_size: int,
    image_size: int = 224,
    resize: int = 256,
    seed: int = 1,
    epoch: int = 0,
    num_shards: int = 1,
    shard_id: int = 0,
    workers: int = 4,
    augment: bool = True,
    shuffle: bool = True,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
):
    """One epoch of training batches (drop_remainder, so every rank runs the same steps).

    ``augment=False`` trains on the eval transform (deterministic inputs; for debugging and
    for the distributed equivalence check).
    """
    import mindspore.dataset as ds

    ds.config.set_seed(epoch_seed(seed, epoch))
    transforms = train_transforms(image_size, mean, std) if augment else eval_transforms(image_size, resize, mean, std)
    per_shard = shard_size(len(folder), num_shards)
    if per_shard < batch_size:
        raise DatasetError(
            "%s: %d images per shard (%d images, %d shards) is less than one batch of %d; "
            "lower --batch-size" % (folder.root, per_shard, len(folder), num_shards, batch_size)
        )
    return _build(folder, transforms, batch_size, shuffle, True, num_shards, shard_id, workers)


def eval_dataset(
    folder: ImageFolder,
    batch_size: int,
    image_size: int = 224,
    resize: int = 256,
    workers: int = 4,
    num_shards: int = 1,
    shard_id: int = 0,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
):
    """Evaluation batches in file order; the last batch may be smaller."""
    transforms = eval_transforms(image_size, resize, mean, std)
    return _build(folder, transforms, batch_size, False, False, num_shards, shard_id, workers)


def shard_size(n: int, num_shards: int) -> int:
    """Samples per shard: MindSpore's DistributedSampler pads every shard to ceil(n / shards)."""
    return -(-n // max(1, num_shards))


def shard_indices(n: int, seed: int, epoch: int, num_shards: int, shard_id: int, shuffle: bool = True) -> List[int]:
    """The sample indices one shard reads in one epoch, in order (the sampler alone, no decoding)."""
    import mindspore.dataset as ds

    ds.config.set_seed(epoch_seed(seed, epoch))
    shard = dict(num_shards=num_shards, shard_id=shard_id) if num_shards > 1 else {}
    data = ds.GeneratorDataset(_Indices(n), column_names=["index"], shuffle=shuffle, **shard)
    return [int(row[0]) for row in data.create_tuple_iterator(output_numpy=True, num_epochs=1)]


def describe(folder: ImageFolder) -> str:
    counts = np.bincount(folder.labels, minlength=len(folder.classes))
    return "%s: %d images in %d classes (%d..%d per class), %d skipped" % (
        folder.root,
        len(folder),
        len(folder.classes),
        counts.min(),
        counts.max(),
        len(folder.bad),
    )
