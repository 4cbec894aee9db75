"""Decoded rows never start on a 16-byte boundary. There libjpeg-turbo's x86 SIMD colour
conversion stores a row with non-temporal (cache-bypassing) stores, and the engine, which
reads each row straight back, would fetch it from memory: 7% of an ImageNet-size decode
(cpp/jpeg_decoder.h, point_decoded_rows). JpegDecoder::read_rows refuses such a row (the
item fails with "internal error: decoded row on a 16-byte boundary ..."), so these decodes
show that the layout holds for both row buffers: the strip of a plain decode and the window
of an EXIF-rotated one. They cover odd and even widths from 97 to 1001, every JPEG kind
and semantics, and the caller's and pool workers' workspaces. A heap buffer of 16-byte multiples,
the layout before, fails every one of them."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import jpeg_with_orientation, pixel_spec

from ibnedge import corpus
from ibnedge.preprocess import Preprocessor

MODES = ("pil", "mindspore", "fast")
# Odd and even widths, landscape and portrait: decoded rows of many lengths.
SIZES = ((97, 61), (250, 333), (333, 250), (500, 375), (641, 427), (1001, 301))


def _items():
    items = []
    for index, (width, height) in enumerate(SIZES):
        pixels = corpus.photo(width, height, index=index)
        items.append(corpus.encode_jpeg(pixels))
        items.append(jpeg_with_orientation(pixels, 6))  # decoded into the window, then turned upright
    items.extend(data for data, _ in corpus.jpeg_variants(corpus.photo(321, 243, index=2)).values())
    return items


@pytest.mark.parametrize("semantics", MODES)
@pytest.mark.parametrize("threads", (1, 2))
def test_every_decoded_row_starts_off_a_16_byte_boundary(semantics, threads):
    items = _items()
    result = Preprocessor(spec=pixel_spec(semantics), threads=threads, exif_orientation=True).run(items)
    failed = [(i, e.message) for i, e in enumerate(result.errors) if e is not None]
    assert not failed, failed
    # The row layout moves no pixel: each item as the caller's thread decodes it alone.
    alone = Preprocessor(spec=pixel_spec(semantics), threads=1, exif_orientation=True)
    for i, item in enumerate(items):
        assert result.tensor[i].tobytes() == alone.run([item]).tensor[0].tobytes(), "item %d" % i
