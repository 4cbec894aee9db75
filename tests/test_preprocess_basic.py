"""Quick unit tests of the Preprocessor API and the native engine's contract.

The exhaustive parity, bad-input and thread tests live in test_native_*.py; these check
the API surface, error kinds, the non-JPEG path and that decoding only the crop's window
changes nothing.
"""
from __future__ import annotations

import io
import os

import numpy as np
import pytest

from ibnedge.formats import image_size, sniff
from ibnedge.metadata import PreprocessSpec
from conftest import PIXEL_MEAN, PIXEL_STD, pil_reference, tensor_pixels
from ibnedge.corpus import photo
from ibnedge.preprocess import ERROR_KINDS, ItemError, PreprocessResult, Preprocessor

PIXELS = dict(mean=PIXEL_MEAN, std=PIXEL_STD)  # output == uint8 pixel values


def _photo(width: int = 451, height: int = 300) -> np.ndarray:
    return photo(width, height, index=1)  # chelsea the cat


def _encode(pixels: np.ndarray, fmt: str = "JPEG", **kw) -> bytes:
    """Pillow's encoding of ``pixels`` in any format it writes (corpus.encode_jpeg: JPEG only)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return _encode(_photo(), quality=90)


def test_result_shape_dtype_and_errors(jpeg):
    pre = Preprocessor(spec=PreprocessSpec(crop=(128, 96), resize=160), threads=1)
    res = pre.run([jpeg, jpeg])
    assert isinstance(res, PreprocessResult)
    assert res.tensor.shape == (2, 3, 128, 96) and res.tensor.dtype == np.float32
    assert res.tensor.flags["C_CONTIGUOUS"]
    assert res.errors == [None, None] and res.ok == [True, True]
    assert np.array_equal(res.tensor[0], res.tensor[1])


@pytest.mark.parametrize("semantics", ["pil", "mindspore", "fast"])
def test_window_decode_equals_full_decode(semantics, jpeg):
    """Decoding only the rows and MCU columns the crop needs gives bitwise the full decode's result."""
    pre = Preprocessor(spec=PreprocessSpec(semantics=semantics, **PIXELS), threads=1)
    for data in (jpeg, _encode(_photo(1000, 333), quality=85, subsampling=1), _encode(_photo(301, 777), quality=95)):
        outs = []
        for restrict in (True, False):
            out = np.empty((1, 3, 224, 224), np.float32)
            status = pre._engine.run([data], "b", out, semantics=semantics, resize=256, crop=(224, 224),
                                     mean=[0.0] * 3, std=[1 / 255.0] * 3, restrict_window=restrict)
            assert status == [None]
            outs.append(out)
        assert np.array_equal(outs[0], outs[1])


def test_pil_mode_matches_pillow(jpeg):
    res = Preprocessor(spec=PreprocessSpec(semantics="pil", **PIXELS), threads=1).run([jpeg])
    assert res.errors == [None]
    diff = np.abs(tensor_pixels(res.tensor[0]).astype(int) - pil_reference(jpeg))
    assert diff.max() <= 1


def test_normalisation(jpeg):
    spec = PreprocessSpec()
    got = Preprocessor(spec=spec, threads=1).run([jpeg]).tensor[0]
    pixels = Preprocessor(spec=PreprocessSpec(**PIXELS), threads=1).run([jpeg]).tensor[0]
    want = (pixels / 255.0 - np.asarray(spec.mean)[:, None, None]) / np.asarray(spec.std)[:, None, None]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_error_kinds_and_messages(jpeg, tmp_path):
    missing = tmp_path / "missing.jpg"
    items = [b"", b"hello world, not an image", jpeg[: len(jpeg) // 2], str(missing), 3.5, jpeg]
    pre = Preprocessor(spec=PreprocessSpec(**PIXELS), threads=2, max_pixels=10 ** 9)
    res = pre.run(items)
    kinds = [e.kind if e else None for e in res.errors]
    assert kinds == ["empty", "not_image", "truncated", "unreadable", "unsupported", None]
    assert all(isinstance(e, ItemError) and e.kind in ERROR_KINDS for e in res.errors[:-1])
    assert "missing.jpg" in res.errors[3].message
    assert "--accept-damaged" in res.errors[2].message and "accept_damaged=True" in res.errors[2].message
    assert not res.tensor[:-1].any()  # failed rows are zero
    assert res.tensor[-1].any()


def test_truncated_policy_can_accept(jpeg):
    half = jpeg[: len(jpeg) // 2]
    res = Preprocessor(spec=PreprocessSpec(**PIXELS), threads=1, accept_damaged=True).run([half])
    assert res.errors == [None]


def test_allow_truncated_is_a_deprecated_name_of_accept_damaged(jpeg):
    half = jpeg[: len(jpeg) // 2]
    with pytest.warns(DeprecationWarning, match="accept_damaged"):
        pre = Preprocessor(spec=PreprocessSpec(**PIXELS), threads=1, allow_truncated=True)
    assert pre.accept_damaged and pre.run([half]).errors == [None]
    with pytest.raises(ValueError, match="contradicts"), pytest.warns(DeprecationWarning):
        Preprocessor(threads=1, accept_damaged=True, allow_truncated=False)


def test_pixel_cap_refuses_from_the_header(jpeg):
    # A valid JPEG header claiming 65535 x 65535 pixels, with almost no data.
    huge = bytearray(jpeg)
    sof = huge.index(b"\xff\xc0")
    huge[sof + 5: sof + 9] = b"\xff\xff\xff\xff"
    res = Preprocessor(spec=PreprocessSpec(), threads=1).run([bytes(huge)])
    assert res.errors[0].kind == "too_large" and "65535" in res.errors[0].message
    small = Preprocessor(spec=PreprocessSpec(), threads=1, max_pixels=451 * 300 - 1).run([jpeg])
    assert small.errors[0].kind == "too_large"


def test_other_formats_by_content(tmp_path):
    pixels = _photo(200, 150)
    png = _encode(pixels, "PNG")
    misnamed = tmp_path / "really_a_png.jpg"
    misnamed.write_bytes(png)
    rgba = np.dstack([pixels, np.full(pixels.shape[:2], 7, np.uint8)])
    items = [pixels, png, misnamed, _encode(pixels, "BMP"), _encode(rgba, "PNG"), pixels[:, :, 0],
             _encode(pixels, "WEBP", lossless=True), _encode(pixels, "GIF")]
    res = Preprocessor(spec=PreprocessSpec(**PIXELS), threads=2).run(items)
    assert res.errors == [None] * len(items)
    for i in (1, 2, 3, 4, 6):  # lossless formats: exactly what the array gives
        assert np.array_equal(res.tensor[i], res.tensor[0]), i
    assert res.tensor[7].any()  # GIF (palette): OpenCV or the Pillow fallback
    gray = res.tensor[5]
    assert np.array_equal(gray[0], gray[1]) and np.array_equal(gray[1], gray[2])


def test_tiff_over_pillows_bomb_limit_is_too_large_not_unsupported():
    """TIFF headers are not sized here; OpenCV fails on this one and Pillow refuses it as a
    decompression bomb, which must read as too_large."""
    import struct

    data = bytearray(_encode(_photo(2, 2), "TIFF"))
    assert data[:2] == b"II"
    ifd = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack_from("<HH", data, entry)
        if tag in (256, 257):  # ImageWidth, ImageLength -> 20000 x 20000
            struct.pack_into("<H" if kind == 3 else "<I", data, entry + 8, 20000)
    res = Preprocessor(spec=PreprocessSpec(**PIXELS)).run([bytes(data)])
    assert res.errors[0].kind == "too_large" and "400000000 pixels" in res.errors[0].message


def _bytes_read_by_this_process() -> int:
    """Linux's count of bytes this process got from read() calls (page cache included)."""
    with open("/proc/self/io") as f:
        fields = dict(line.split(": ") for line in f.read().splitlines())
    return int(fields["rchar"])


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux's /proc/self/io")
def test_a_png_path_is_read_once(tmp_path):
    """The engine stops reading a path at its first bytes when they are not a JPEG's; the
    Python side then reads the file once to decode it."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (1200, 1600, 3), dtype=np.uint8)  # incompressible: a ~5.8 MB PNG
    path = tmp_path / "big.png"
    path.write_bytes(_encode(noise, "PNG", compress_level=0))
    size = path.stat().st_size
    pre = Preprocessor(spec=PreprocessSpec(**PIXELS), threads=1)
    pre.run([path])  # warm-up: lazy imports and pools read files of their own
    before = _bytes_read_by_this_process()
    res = pre.run([path])
    read = _bytes_read_by_this_process() - before
    assert res.errors == [None]
    assert size <= read < 1.2 * size, "read %d bytes for a %d-byte file" % (read, size)


def test_exif_orientation_is_a_view_of_the_decoded_image():
    """Orientation 6 (rotate 90 clockwise) applied natively equals resizing the rotated decode."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(_photo(400, 300), quality=90, exif=exif.tobytes())
    stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    upright = np.ascontiguousarray(np.rot90(stored, k=-1))
    pre = Preprocessor(spec=PreprocessSpec(**PIXELS), threads=1, exif_orientation=True)
    res = pre.run([data, upright])
    assert res.errors == [None, None]
    assert np.array_equal(res.tensor[0], res.tensor[1])
    plain = Preprocessor(spec=PreprocessSpec(**PIXELS), threads=1).run([data, stored])
    assert np.array_equal(plain.tensor[0], plain.tensor[1])


def test_out_buffer(jpeg):
    pre = Preprocessor(spec=PreprocessSpec(), threads=1)
    out = np.full((2, 3, 224, 224), 5.0, np.float32)
    res = pre.run([jpeg, b""], out=out)
    assert res.tensor is out and not out[1].any()
    with pytest.raises(ValueError, match="float32"):
        pre.run([jpeg], out=np.zeros((1, 3, 224, 224), np.float64))
    with pytest.raises(ValueError, match="shape"):
        pre.run([jpeg], out=np.zeros((2, 3, 224, 224), np.float32))


def test_sniff_and_header_sizes(jpeg):
    assert sniff(jpeg) == "jpeg"
    png = _encode(_photo(40, 30), "PNG")
    assert sniff(png) == "png" and image_size(png) == (40, 30)
    bmp = _encode(_photo(40, 30), "BMP")
    assert sniff(bmp) == "bmp" and image_size(bmp) == (40, 30)
    gif = _encode(_photo(40, 30), "GIF")
    assert sniff(gif) == "gif" and image_size(gif) == (40, 30)
    webp = _encode(_photo(40, 30), "WEBP", lossless=True)
    assert sniff(webp) == "webp" and image_size(webp) == (40, 30)
    assert sniff(b"BM not a bitmap at all") is None
    assert sniff(b"") is None and image_size(b"") is None
