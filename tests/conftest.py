"""Shared fixtures and reference pipelines for the native-engine tests.

The references are the libraries the engine must reproduce, run on the same bytes:
Pillow as torchvision uses it (``pil`` semantics) and ``mindspore.dataset.vision``
(``mindspore`` semantics). Corpora come from :mod:`ibnedge.corpus` and are cached under
``$IBNEDGE_HOME/corpus`` (default: ``<repo>/.cache/corpus``, git-ignored).
"""
from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import pytest

from ibnedge import corpus
from ibnedge.metadata import PreprocessSpec

REPO = Path(__file__).resolve().parents[1]

# mean 0 and std 1/255 make the engine's float output hold the uint8 pixel values.
PIXEL_MEAN = (0.0, 0.0, 0.0)
PIXEL_STD = (1.0 / 255.0,) * 3


def pixel_spec(semantics: str, resize: int = 256, crop: Union[int, Tuple[int, int]] = 224) -> PreprocessSpec:
    """A spec whose output tensor holds uint8 pixel values (the parity trick)."""
    return PreprocessSpec(resize=resize, crop=crop, mean=PIXEL_MEAN, std=PIXEL_STD, semantics=semantics)


def jpeg_with_orientation(pixels: np.ndarray, orientation: int) -> bytes:
    """``pixels`` as a JPEG whose EXIF says ``orientation`` (1-8)."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def tensor_pixels(chw: np.ndarray) -> np.ndarray:
    """One output row of a :func:`pixel_spec` run as HWC uint8, checking it holds integers."""
    if chw.dtype != np.float32 or chw.ndim != 3 or chw.shape[0] != 3:
        raise AssertionError("expected a (3, H, W) float32 row, got %s %r" % (chw.dtype, chw.shape))
    rounded = np.rint(chw)
    off = float(np.abs(chw - rounded).max()) if chw.size else 0.0
    assert off < 1e-3, "pixel-spec output is not integral (max deviation %.5f)" % off
    assert rounded.min() >= 0 and rounded.max() <= 255, "pixel values outside 0..255"
    return rounded.astype(np.uint8).transpose(1, 2, 0)


def with_views(arrays: List[np.ndarray]) -> List[np.ndarray]:
    """tests/aarch64's array items: the saved arrays and a 3-channel view of the last (RGBA)
    one, 4 bytes between pixels (a path of its own); made on each side, as np.save writes
    a view as a copy."""
    return arrays + [arrays[-1][:, :, :3]]


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, "shape %r != reference %r" % (a.shape, b.shape)
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


# --------------------------------------------------------------------------- torchvision / PIL


def _bilinear():
    from PIL import Image

    return getattr(Image, "Resampling", Image).BILINEAR


def torchvision_size(width: int, height: int, resize: int) -> Tuple[int, int]:
    """torchvision ``Resize(int)``: short side -> resize, long side truncated. Returns (w, h)."""
    if width <= height:
        return resize, int(resize * height / width)
    return int(resize * width / height), resize


def torchvision_reference(img, resize: int = 256, crop: Union[int, Tuple[int, int]] = 224) -> np.ndarray:
    """torchvision's ``Resize(resize) + CenterCrop(crop)`` on a PIL image, as HWC uint8 RGB."""
    crop_h, crop_w = (crop, crop) if isinstance(crop, int) else crop
    img = img.convert("RGB")
    w, h = torchvision_size(img.size[0], img.size[1], resize)
    pixels = np.asarray(img.resize((w, h), _bilinear()), dtype=np.uint8)
    if crop_w > w or crop_h > h:
        # torchvision's center_crop pads with zeros first: the smaller half on the left/top.
        pad_w, pad_h = max(crop_w - w, 0), max(crop_h - h, 0)
        pixels = np.pad(pixels, ((pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2), (0, 0)))
        h, w = pixels.shape[:2]
    top = int(round((h - crop_h) / 2.0))
    left = int(round((w - crop_w) / 2.0))
    return pixels[top:top + crop_h, left:left + crop_w]


def pillow_open(item) -> "object":
    """A decoded PIL image of a path, bytes or HWC uint8 array (EXIF orientation ignored)."""
    from PIL import Image

    if isinstance(item, np.ndarray):
        return Image.fromarray(item)
    if isinstance(item, (bytes, bytearray)):
        img = Image.open(io.BytesIO(bytes(item)))
    else:
        img = Image.open(str(item))
    img.load()
    return img


def pil_reference(item, resize: int = 256, crop: Union[int, Tuple[int, int]] = 224) -> np.ndarray:
    return torchvision_reference(pillow_open(item), resize, crop)


# --------------------------------------------------------------------------- MindSpore


# tests/memcheck.sh sets this: ASan's exception interceptor aborts inside MindSpore's own
# library, so tests that need the MindSpore reference skip there and every other test runs.
NO_MINDSPORE_ENV = "IBNEDGE_TEST_NO_MINDSPORE"


_mindspore_device_chosen = False


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item) -> None:
    """MindSpore on CPU, chosen for this process before a test (and its fixtures) runs a kernel.

    The CLIs choose the device first (train.context.setup_context); tests that run MindSpore
    in the pytest process did not, and once a kernel has run on the implicit device MindSpore
    refuses any set_device, so a later test creating the ``mindspore`` backend failed ("The
    runtime has been initialized") depending on which modules ran before it. Only once some
    module has imported MindSpore: a session without it never loads it here.
    """
    global _mindspore_device_chosen
    ms = sys.modules.get("mindspore")
    if _mindspore_device_chosen or ms is None or os.environ.get(NO_MINDSPORE_ENV):
        return
    _mindspore_device_chosen = True
    try:
        if hasattr(ms, "set_device"):  # 2.6+
            ms.set_device("CPU")
        else:
            ms.set_context(device_target="CPU")
    except RuntimeError:
        pass  # a test already ran a kernel, or chose another device: that test's business


def mindspore_vision():
    """``mindspore.dataset.vision`` or skip (MindSpore needs Python 3.9+; absent on 3.7)."""
    if os.environ.get(NO_MINDSPORE_ENV):
        pytest.skip("MindSpore reference disabled (%s=1, e.g. under the sanitizers)" % NO_MINDSPORE_ENV)
    try:
        import mindspore.dataset.vision as vision  # noqa: F401
    except ImportError as exc:
        pytest.skip("mindspore.dataset is not importable here (%s): MindSpore 2.x needs Python 3.9+; "
                    "the mindspore-semantics parity runs in the Python 3.11 environment" % exc)
    return vision


def mindspore_reference(item, resize: int = 256, crop: Union[int, Tuple[int, int]] = 224) -> np.ndarray:
    """MindSpore's eager ``Decode, Resize(resize), CenterCrop(crop)`` as HWC uint8 RGB."""
    vision = mindspore_vision()
    if isinstance(item, np.ndarray):
        img = item
    else:
        data = bytes(item) if isinstance(item, (bytes, bytearray)) else Path(item).read_bytes()
        # On failure MindSpore's Decode dumps the input as ./unsupported_image.<ext>: let it
        # write into a scratch directory, not the repository.
        with tempfile.TemporaryDirectory() as scratch:
            cwd = os.getcwd()
            os.chdir(scratch)
            try:
                img = vision.Decode()(np.frombuffer(data, dtype=np.uint8))
            finally:
                os.chdir(cwd)
    img = vision.Resize(resize, vision.Inter.LINEAR)(img)
    crop_hw = [crop, crop] if isinstance(crop, int) else list(crop)
    img = vision.CenterCrop(crop_hw)(img)
    return np.asarray(img, dtype=np.uint8)


def reference(semantics: str, item, resize: int = 256, crop: Union[int, Tuple[int, int]] = 224) -> np.ndarray:
    if semantics == "pil":
        return pil_reference(item, resize, crop)
    if semantics == "mindspore":
        return mindspore_reference(item, resize, crop)
    raise ValueError("no reference library for semantics %r" % semantics)


# --------------------------------------------------------------------------- engine


def run_pixels(items: Sequence, semantics: str, resize: int = 256, crop: Union[int, Tuple[int, int]] = 224,
               threads: int = 1, **options):
    """Run the engine with the parity spec; returns ``(list of HWC uint8 or None, errors)``."""
    from ibnedge.preprocess import Preprocessor

    pre = Preprocessor(spec=pixel_spec(semantics, resize, crop), threads=threads, **options)
    res = pre.run(list(items))
    rows = []
    for i, err in enumerate(res.errors):
        rows.append(None if err is not None else tensor_pixels(res.tensor[i]))
    return rows, res.errors


# --------------------------------------------------------------------------- corpora


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """ibnedge's corpus cache under $IBNEDGE_HOME when set, else <repo>/.cache/corpus (not the
    user's home); tests/memcheck.sh and tests/fuzz.sh share it."""
    from ibnedge import corpus

    path = corpus.default_cache_dir() if os.environ.get("IBNEDGE_HOME") else REPO / ".cache" / "corpus"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def imagenet_files(corpus_dir: Path):
    return corpus.imagenet_like(corpus_dir)


@pytest.fixture(scope="session")
def phone_files(corpus_dir: Path):
    return corpus.phone_like(corpus_dir)


@pytest.fixture(scope="session")
def bad_cases(corpus_dir: Path):
    return corpus.bad_input_cases(corpus_dir)


def first_error(errors) -> Optional[object]:
    return next((e for e in errors if e is not None), None)
