"""The test corpora are what they claim to be, deterministic, and cached."""
from __future__ import annotations

import os

import numpy as np
import pytest

from ibnedge import corpus


def _size(path):
    from PIL import Image

    with Image.open(str(path)) as img:
        return img.size, img.format, img.mode


def test_imagenet_like_sizes_and_format(imagenet_files):
    assert len(imagenet_files) == 32
    sizes = [_size(p) for p in imagenet_files]
    assert all(fmt == "JPEG" and mode == "RGB" for _, fmt, mode in sizes)
    dims = [s for s, _, _ in sizes]
    assert (500, 375) in dims and (375, 500) in dims
    assert any(w % 2 and h % 2 for w, h in dims), "no odd-sized file"
    mean_pixels = np.mean([w * h for w, h in dims])
    assert 150000 < mean_pixels < 220000  # ImageNet's mean is about 0.18 MP
    # Real photographs, not flat fills: plenty of distinct values in every file.
    from PIL import Image

    with Image.open(str(imagenet_files[0])) as img:
        assert len(np.unique(np.asarray(img))) > 200


def test_phone_like_is_12_megapixel(phone_files):
    dims = [_size(p)[0] for p in phone_files]
    assert dims[0] == (4000, 3000) and (3000, 4000) in dims
    assert all(w * h == 12000000 for w, h in dims)
    # Grain keeps the entropy-coded data about as dense as a phone's (over 1.5 MB).
    assert all(p.stat().st_size > 1500000 for p in phone_files)


def test_building_is_deterministic_and_cached(tmp_path):
    a = corpus.imagenet_like(tmp_path / "a", count=3)
    b = corpus.imagenet_like(tmp_path / "b", count=3)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    stamps = [p.stat().st_mtime_ns for p in a]
    again = corpus.imagenet_like(tmp_path / "a", count=3)
    assert again == a
    assert [p.stat().st_mtime_ns for p in again] == stamps  # reused, not rewritten
    # A damaged file is noticed and the corpus rebuilt.
    a[1].write_bytes(b"oops")
    rebuilt = corpus.imagenet_like(tmp_path / "a", count=3)
    assert rebuilt[1].read_bytes() == b[1].read_bytes()
    # Other parameters, other directory: nothing is overwritten.
    other = corpus.imagenet_like(tmp_path / "a", count=2)
    assert other[0].parent != a[0].parent


def test_bad_input_cases_are_complete_and_consistent(bad_cases):
    needed = {"empty", "truncated", "corrupt_header", "byte_flips_0", "not_image", "huge_header", "cmyk",
              "grayscale", "progressive", "png_16bit", "png_palette", "png_alpha", "bmp", "webp",
              "png_named_jpg", "missing_file", "unreadable_directory"}
    assert needed <= set(bad_cases)
    for case in bad_cases.values():
        assert set(case.expected) <= set(corpus.ERROR_KINDS), case
        assert case.must_decode or case.expected, case
    assert bad_cases["unreadable_directory"].path.is_dir()
    assert not bad_cases["missing_file"].path.exists()
    assert bad_cases["empty"].path.stat().st_size == 0
    assert bad_cases["png_named_jpg"].path.suffix == ".jpg"
    assert bad_cases["png_named_jpg"].path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert corpus.bad_inputs(bad_cases["empty"].path.parent.parent) == [c.path for c in bad_cases.values()]


@pytest.mark.skipif(not corpus.have_cjpeg(), reason="cjpeg missing: apt-get install libjpeg-turbo-progs")
def test_cjpeg_cases_are_present_and_really_arithmetic(bad_cases):
    data = bad_cases["arithmetic"].path.read_bytes()
    assert b"\xff\xc9" in data  # SOF9: extended sequential, arithmetic coding
    assert data.count(b"\xff\xd0") + data.count(b"\xff\xd1") == 0
    restart = bad_cases["restart_markers"].path.read_bytes()
    assert b"\xff\xdd" in restart and b"\xff\xd0" in restart  # DRI segment and RST0 markers


def test_header_patches_say_what_they_claim(bad_cases):
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # only reading the header
    try:
        with Image.open(str(bad_cases["huge_header"].path)) as img:
            assert img.size == (65535, 65535)
    finally:
        Image.MAX_IMAGE_PIXELS = 178956970
    with Image.open(str(bad_cases["cmyk"].path)) as img:
        assert img.mode == "CMYK"
        k = np.asarray(img)[..., 3]
        assert k.min() < 50 and k.max() > 150  # a real black channel, not K = 0
    with Image.open(str(bad_cases["grayscale"].path)) as img:
        assert img.mode == "L"
    with Image.open(str(bad_cases["png_16bit"].path)) as img:
        assert img.format == "PNG"
    raw = bad_cases["png_16bit"].path.read_bytes()
    assert raw[24] == 16  # IHDR bit depth


def test_photo_is_deterministic_and_sized():
    a = corpus.photo(123, 45, index=5)
    b = corpus.photo(123, 45, index=5)
    assert a.shape == (45, 123, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, corpus.photo(123, 45, index=6))
    g = corpus.photo(20, 30, gray=True)
    assert g.shape == (30, 20)
    with pytest.raises(ValueError):
        corpus.photo(0, 10)


def test_default_cache_dir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("IBNEDGE_HOME", str(tmp_path))
    assert corpus.default_cache_dir() == tmp_path / "corpus"
    monkeypatch.delenv("IBNEDGE_HOME")
    assert corpus.default_cache_dir().parts[-2:] == ("ibnedge", "corpus")
    assert os.path.isabs(str(corpus.default_cache_dir()))


def test_sources_are_decoded_once_and_shared_read_only():
    first, again = corpus.source_photos(), corpus.source_photos()
    assert all(a is b for (_, a), (_, b) in zip(first, again))  # one decode per process
    assert not any(img.flags.writeable for _, img in first)  # shared: nobody may scribble on them
    pixels = corpus.photo(64, 48, index=1)
    assert pixels.shape == (48, 64, 3) and pixels.flags.writeable  # callers get their own array
    pixels[:] = 0
    assert np.array_equal(corpus.photo(64, 48, index=1), corpus.photo(64, 48, index=1))
    assert corpus.photo(64, 48, index=1).any()
