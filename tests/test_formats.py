"""Formats by content (ibnedge.formats): what ibnedge classifies, what it refuses as
``unsupported`` (a known image format it does not classify) or ``not_image``, with the
same verdict and message through the file walk, the engine and ``ibnedge infer``, and in
both interpreters (whose OpenCV builds differ: 4.11 under 3.11, 5.x under 3.7).
Every file is made here: Pillow and OpenCV write the formats, BigTIFF is built by hand.
"""
from __future__ import annotations

import io
import struct
import sys
import warnings
import zlib
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from edge_helpers import PY37, PY311, interpreter_or_skip, make_tiny_onnx, run_py
from ibnedge.corpus import encode_jpeg, photo
from ibnedge.files import iter_input_files
from ibnedge.formats import FORMATS, UNSUPPORTED_FORMATS, refusal, sniff, title
from ibnedge.metadata import PreprocessSpec
from ibnedge.preprocess import ItemError, Preprocessor
from ibnedge.results import read_rows

SPEC = PreprocessSpec(resize=40, crop=32, mean=(0.0, 0.0, 0.0), std=(1.0 / 255,) * 3)
CONVERT = "convert it to PNG or JPEG"


def _rgb(width: int = 53, height: int = 37, index: int = 1) -> np.ndarray:
    return photo(width, height, index=index)


def _pillow(image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def _opencv(pixels: np.ndarray, suffix: str) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(suffix, pixels)
    assert ok, "this OpenCV cannot write %s" % suffix
    return encoded.tobytes()


def bigtiff(rgb: np.ndarray, big_endian: bool = False) -> bytes:
    """A minimal BigTIFF (version 43, 8-byte offsets): one uncompressed RGB strip."""
    order = ">" if big_endian else "<"
    h, w, _ = rgb.shape
    pixels = np.ascontiguousarray(rgb, np.uint8).tobytes()
    short, long8 = 3, 16  # TIFF field types
    entries = [(256, short, 1, w), (257, short, 1, h), (258, short, 3, (8, 8, 8)), (259, short, 1, 1),
               (262, short, 1, 2), (273, long8, 1, None), (277, short, 1, 3), (278, short, 1, h),
               (279, long8, 1, len(pixels)), (284, short, 1, 1)]  # tag, type, count, value
    data_offset = 16 + 8 + 20 * len(entries) + 8  # header, entry count, entries, next-IFD offset
    ifd = struct.pack(order + "Q", len(entries))
    for tag, kind, count, value in entries:
        if tag == 273:
            value = data_offset
        values = value if isinstance(value, tuple) else (value,)
        field = struct.pack(order + ("H" if kind == short else "Q") * len(values), *values)
        ifd += struct.pack(order + "HHQ", tag, kind, count) + field.ljust(8, b"\0")
    header = (b"MM" if big_endian else b"II") + struct.pack(order + "HHHQ", 43, 8, 0, 16)
    return header + ifd + struct.pack(order + "Q", 0) + pixels


def apng(frames: List[np.ndarray], **options) -> bytes:
    """Pillow's APNG of ``frames`` (``default_image=True``: the first is not in the animation)."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    return _pillow(images[0], "PNG", save_all=True, append_images=images[1:], duration=40, **options)


def _png_with_chunk(png: bytes, kind: bytes, body: bytes) -> bytes:
    """``png`` with one more chunk right after its IHDR (8-byte signature, 25-byte IHDR)."""
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return png[:33] + chunk + png[33:]


def _apngs() -> Dict[str, bytes]:
    """APNGs on which OpenCV 4.11 and 5.x disagree with each other or with Pillow."""
    from PIL import Image

    a, b, c = _rgb(index=0), _rgb(index=1), _rgb(index=2)
    return {
        # The default image is not part of the animation: OpenCV 5 reads an animation frame.
        "hidden_default.png": apng([a, b, c], default_image=True),
        # Nothing but the default image (acTL announces 0 frames): OpenCV 5 refuses the file.
        "no_frames.png": _png_with_chunk(_pillow(Image.fromarray(a), "PNG"), b"acTL", struct.pack(">II", 0, 0)),
        # Frames drawn over the previous ones: OpenCV 4.11 gets the first one wrong.
        "blended.png": apng([a, b], blend=1),
        "three_frames.png": apng([a, b, c]),
    }


def _unsupported_images() -> Dict[str, bytes]:
    """Real files in known image formats ibnedge does not classify, by the writers here."""
    from PIL import Image

    rgb = _rgb()
    img = Image.fromarray(rgb)
    files = {
        "photo.ppm": _pillow(img, "PPM"), "photo.pgm": _pillow(img.convert("L"), "PPM"),
        "photo.pbm": _pillow(img.convert("1"), "PPM"), "photo.pam": _opencv(rgb, ".pam"),
        "photo.pfm": _opencv(rgb.astype(np.float32) / 255, ".pfm"),
        "photo.hdr": _opencv(rgb.astype(np.float32) / 255, ".hdr"), "photo.ras": _opencv(rgb, ".ras"),
        "photo.ico": _pillow(img, "ICO"), "photo.sgi": _pillow(img, "SGI"), "photo.pcx": _pillow(img, "PCX"),
    }
    optional = (("photo.jp2", "JPEG2000", {}), ("photo.j2k", "JPEG2000", {"no_jp2": True}), ("photo.icns", "ICNS", {}),
                ("photo.qoi", "QOI", {}), ("photo.avif", "AVIF", {}), ("photo.dds", "DDS", {}))
    for name, fmt, options in optional:
        try:  # writers this Pillow may lack (or lack the library for)
            files[name] = _pillow(img, fmt, **options)
        except (KeyError, OSError, ValueError):
            pass
    return files


def _decodable_here(data: bytes) -> bool:
    import cv2
    from PIL import Image

    if cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None:
        return True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Image.open(io.BytesIO(data)).convert("RGB")
        return True
    except Exception:
        return False


def _tensor_of(pixels: np.ndarray) -> np.ndarray:
    return Preprocessor(spec=SPEC, threads=1).run([pixels]).tensor[0]


@pytest.mark.parametrize("big_endian", [False, True], ids=["II", "MM"])
def test_bigtiff_is_classified(tmp_path, big_endian):
    rgb = _rgb()
    data = bigtiff(rgb, big_endian)
    assert data[:4] == (b"MM\x00+" if big_endian else b"II+\x00")
    (tmp_path / "big.tif").write_bytes(data)
    (tmp_path / "big_no_suffix").write_bytes(data)
    assert sniff(data) == "tiff" and refusal(data) is None
    assert [i.error for i in iter_input_files([tmp_path])] == [None, None]
    res = Preprocessor(spec=SPEC, threads=1).run([data, str(tmp_path / "big.tif"), str(tmp_path / "big_no_suffix")])
    assert res.errors == [None, None, None]
    for row in res.tensor:
        assert np.array_equal(row, _tensor_of(rgb))  # uncompressed: exactly the pixels written


def _assert_refused(label: str, error, kind: str) -> None:
    """``error`` (an ItemError, or a (kind, message) pair) is of ``kind``, and its message
    names the item first and lists what ibnedge classifies."""
    assert error is not None, label
    got, message = (error.kind, error.message) if isinstance(error, ItemError) else error
    assert got == kind and message.startswith(label + ": "), (label, error)
    assert all(title(f) in message for f in FORMATS), message


def test_known_image_formats_are_unsupported(tmp_path):
    files = _unsupported_images()
    for name, data in files.items():
        assert _decodable_here(data), "%s: the sample is not a real image" % name
        assert sniff(data) in UNSUPPORTED_FORMATS, name
        (tmp_path / name).write_bytes(data)
        (tmp_path / (name + ".jpg")).write_bytes(data)  # claims JPEG: the walk leaves it to the engine
    items = list(iter_input_files([tmp_path], skip_non_images=True))  # images: reported all the same
    walked = [i for i in items if i.error is not None]
    assert sorted(i.path for i in walked) == sorted(str(tmp_path / n) for n in files)
    for item in walked:
        _assert_refused(item.path, item.error, "unsupported")
        assert item.error[1].endswith(CONVERT)
    labels = [i.path for i in items] + ["item %d (bytes)" % (len(items) + k) for k in range(len(files))]
    res = Preprocessor(spec=SPEC, threads=2).run([i.path for i in items] + list(files.values()))
    for label, error in zip(labels, res.errors):
        _assert_refused(label, error, "unsupported")
        assert error.message.endswith(CONVERT)


@pytest.mark.parametrize("head", [
    b"v/1\x01\x02\x00\x00\x00channels",  # OpenEXR
    b"\xff\x0a\xfa\x7f",  # JPEG XL codestream
    b"\x00\x00\x00\x0cJXL \r\n\x87\n",  # JPEG XL container
    b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00mif1heic",  # HEIF
    b"\x00\x00\x00\x20ftypavif\x00\x00\x00\x00avifmif1",  # AVIF
    b"8BPS\x00\x01\x00\x00\x00\x00\x00\x00\x00\x03",  # Photoshop
    b"qoif\x00\x00\x00\x10\x00\x00\x00\x10\x03\x00",  # QOI
    b"DDS \x7c\x00\x00\x00\x07\x10\x00\x00",  # DirectDraw surface
], ids=["exr", "jxl", "jxl-box", "heic", "avif", "psd", "qoi", "dds"])
def test_signatures_no_writer_here_makes(head):
    """Magic numbers from the formats' specifications (no encoder for them in this environment)."""
    verdict = refusal(head)
    assert sniff(head) in UNSUPPORTED_FORMATS and verdict[0] == "unsupported" and verdict[1].endswith(CONVERT)


def test_not_image_names_the_item_and_the_classified_formats(tmp_path):
    (tmp_path / "notes.txt").write_bytes(b"P6 is how a PPM starts, and this is not one")
    (tmp_path / "page.jpg").write_bytes(b"<html><body>404 Not Found</body></html>\n")
    (tmp_path / "BM.txt").write_bytes(b"BM: not a bitmap at all, despite the first two bytes")
    items = list(iter_input_files([tmp_path]))
    walked = [i for i in items if i.error is not None]
    assert len(walked) == 2  # page.jpg goes to the engine by its name
    for item in walked:
        _assert_refused(item.path, item.error, "not_image")
    labels = [i.path for i in items] + ["item %d (bytes)" % len(items)]
    res = Preprocessor(spec=SPEC, threads=1).run([i.path for i in items] + [b"plain text"])
    for label, error in zip(labels, res.errors):
        _assert_refused(label, error, "not_image")


def test_apng_reads_as_its_default_image(tmp_path):
    """Every APNG gives its default image (Pillow's, torchvision's frame), whatever OpenCV does with animations."""
    from PIL import Image

    files = _apngs()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    res = Preprocessor(spec=SPEC, threads=1).run([str(tmp_path / n) for n in files] + list(files.values()))
    assert res.errors == [None] * (2 * len(files))
    for row, data in zip(res.tensor, list(files.values()) * 2):
        assert b"acTL" in data[:100]
        with Image.open(io.BytesIO(data)) as img:
            expected = np.asarray(img.convert("RGB"))
        assert np.array_equal(row, _tensor_of(expected))


def _mixed_directory(root: Path) -> Path:
    """Every classified format (and BigTIFF, APNGs, animations), unsupported ones, a non-image."""
    from PIL import Image

    rgb = _rgb(64, 48)
    img = Image.fromarray(rgb)
    root.mkdir()
    files = dict(_apngs())
    files.update(_unsupported_images())
    files.update({
        "photo.jpg": encode_jpeg(rgb), "photo.png": _pillow(img, "PNG"), "photo.bmp": _pillow(img, "BMP"),
        "photo.gif": _pillow(img, "GIF"), "photo.webp": _pillow(img, "WEBP", lossless=True),
        "anim.gif": _pillow(img, "GIF", save_all=True, append_images=[img.rotate(90)], duration=40),
        "anim.webp": _pillow(img, "WEBP", save_all=True, append_images=[img.rotate(90)], duration=40, lossless=True),
        "photo.tif": _pillow(img, "TIFF"), "big_ii.tif": bigtiff(rgb), "big_mm.tif": bigtiff(rgb, True),
        "readme.txt": b"not a picture\n",
    })
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def test_both_interpreters_give_the_same_rows(tmp_path):
    """``ibnedge infer`` over one mixed directory, in this interpreter and in the other one."""
    pytest.importorskip("onnxruntime")
    other = interpreter_or_skip(PY311 if sys.version_info < (3, 9) else PY37, "onnxruntime")
    photos = _mixed_directory(tmp_path / "mixed")
    model = make_tiny_onnx(tmp_path / "tiny.onnx", size=32)
    rows = {}
    for python in (Path(sys.executable), other):
        out = tmp_path / ("rows_%s.jsonl" % python.parent.parent.name)
        proc = run_py(python, ["-m", "ibnedge", "infer", str(photos), "--model", str(model), "--backend", "onnx",
                               "--output", str(out), "-q"])
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]
        rows[python] = read_rows(out)
    here, there = rows[Path(sys.executable)], rows[other]
    assert [r["path"] for r in here] == [r["path"] for r in there] == sorted(str(p) for p in photos.iterdir())
    for a, b in zip(here, there):
        assert a.get("error") == b.get("error"), (a, b)
        assert [t["index"] for t in a.get("top", [])] == [t["index"] for t in b.get("top", [])], (a, b)
        assert [t["prob"] for t in a.get("top", [])] == pytest.approx([t["prob"] for t in b.get("top", [])], abs=2e-6)
    kinds = {Path(r["path"]).name: r["error"]["kind"] if "error" in r else None for r in here}
    assert {n for n, k in kinds.items() if k is None} == {
        "photo.jpg", "photo.png", "photo.bmp", "photo.gif", "photo.webp", "anim.gif", "anim.webp", "photo.tif",
        "big_ii.tif", "big_mm.tif", "hidden_default.png", "no_frames.png", "blended.png", "three_frames.png"}
    assert kinds["readme.txt"] == "not_image"
    assert {k for n, k in kinds.items() if n.startswith("photo.") and k is not None} == {"unsupported"}
