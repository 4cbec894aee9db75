"""Each engine thread reuses its state from item to item (one libjpeg decompress struct,
its buffers, resize tables: cpp/workspace.h); what one item leaves there never changes
another item's result. libjpeg itself keeps quantisation and Huffman tables across the
images of a struct (JPEG's abbreviated datastreams), so a file that lacks a table must
still get what a fresh struct gives it: an error for a missing quantisation table, the
standard Huffman tables for missing ones (Motion-JPEG frames), an error for a progressive
file without them."""
from __future__ import annotations

import struct
from typing import List

import numpy as np
import pytest
from conftest import pixel_spec

from ibnedge import corpus
from ibnedge.preprocess import Preprocessor

MODES = ("pil", "mindspore", "fast")


def _without_segments(jpeg: bytes, marker: int) -> bytes:
    """``jpeg`` with every ``FF marker`` segment before its first scan removed."""
    out, pos = bytearray(jpeg[:2]), 2
    while jpeg[pos] == 0xFF and jpeg[pos + 1] != 0xDA:
        length = struct.unpack(">H", jpeg[pos + 2:pos + 4])[0]
        if jpeg[pos + 1] != marker:
            out += jpeg[pos:pos + 2 + length]
        pos += 2 + length
    return bytes(out + jpeg[pos:])


def _verdict(error) -> object:
    """An item's error without the label naming its place in the batch ("item 3 (bytes): ")."""
    return error and (error.kind, error.message.split(": ", 1)[1])


def _alone(semantics: str, item, **options) -> tuple:
    res = Preprocessor(spec=pixel_spec(semantics), threads=1, **options).run([item])
    return res.errors[0], res.tensor[0]


def _assert_each_as_alone(semantics: str, items: List, **options) -> None:
    together = Preprocessor(spec=pixel_spec(semantics), threads=1, **options).run(items)
    for i, item in enumerate(items):
        error, tensor = _alone(semantics, item, **options)
        got = together.errors[i]
        assert _verdict(got) == _verdict(error), (i, got, error)
        assert together.tensor[i].tobytes() == tensor.tobytes(), "item %d differs from its decode alone" % i


@pytest.mark.parametrize("semantics", MODES)
def test_a_file_without_tables_never_gets_the_previous_items(semantics):
    """After files with other tables (optimised Huffman codes, other quality), a file without
    DHT decodes with the standard tables exactly as it does alone (and as with its DHT), one
    without DQT is refused as alone, and a progressive one without DHT is refused as alone."""
    photo = corpus.photo(320, 240, index=3)
    other = corpus.encode_jpeg(corpus.photo(320, 240, index=5), quality=40, optimize=True)
    standard = corpus.encode_jpeg(photo, quality=90)  # libjpeg's standard Huffman tables
    no_dht = _without_segments(standard, 0xC4)
    no_dqt = _without_segments(standard, 0xDB)
    progressive_no_dht = _without_segments(corpus.encode_jpeg(photo, quality=90, progressive=True), 0xC4)
    assert len(no_dht) < len(standard) and len(no_dqt) < len(standard)
    items = [other, no_dht, other, no_dqt, other, progressive_no_dht, other, standard]
    res = Preprocessor(spec=pixel_spec(semantics), threads=1).run(items)
    kinds = [e and e.kind for e in res.errors]
    assert kinds == [None, None, None, "corrupt", None, "corrupt", None, None], res.errors
    assert "Quantization table" in res.errors[3].message and "Huffman table" in res.errors[5].message
    assert res.tensor[1].tobytes() == res.tensor[7].tobytes(), "the DHT-less file did not get the standard tables"
    _assert_each_as_alone(semantics, items)


@pytest.mark.parametrize("semantics", MODES)
def test_every_item_of_a_mixed_batch_is_what_it_is_alone(semantics, imagenet_files, phone_files, bad_cases):
    """Sizes going up and down (a 12 MP photo between small ones), every JPEG flavour, bad
    files, pixel arrays and EXIF-rotated files through one engine thread: each item gives
    exactly the tensor and status it gives on an engine of its own."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = corpus.encode_jpeg(corpus.photo(640, 480, index=1), quality=90, exif=exif.tobytes())
    items = [imagenet_files[0], phone_files[0], imagenet_files[1], corpus.photo(37, 1000, index=2)]
    for name in ("cmyk", "grayscale", "progressive", "truncated", "tiny_jpeg", "progressive_bomb", "cmyk"):
        items += [bad_cases[name].path, imagenet_files[2]]
    items += [rotated, imagenet_files[3], rotated[: len(rotated) // 2], imagenet_files[4]]
    _assert_each_as_alone(semantics, items, exif_orientation=True)
