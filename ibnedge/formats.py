"""Image formats by content, never by extension (ImageNet holds a PNG named ``.JPEG``).

``sniff(head)`` names the format from the first bytes; ``image_size(head)`` reads the
size a header claims, so decompression bombs are refused before anything is decoded.
Pure Python: importing this module loads no native code.
"""
from __future__ import annotations

import struct
from typing import Optional, Tuple

# Pillow's decompression-bomb limit: a header claiming more pixels is refused before decoding.
PILLOW_MAX_PIXELS = 178_956_970

# Bytes that sniff() and image_size() need at most (a WebP VP8X/VP8 header ends at byte 30).
HEAD_BYTES = 64

FORMATS = ("jpeg", "png", "bmp", "webp", "gif", "tiff")

_PNG = b"\x89PNG\r\n\x1a\n"
# BITMAPINFOHEADER and its successors (and the OS/2 variants) by header size.
_BMP_HEADER_SIZES = (12, 16, 40, 52, 56, 64, 108, 124)


def sniff(head: bytes) -> Optional[str]:
    """"jpeg", "png", "bmp", "webp", "gif", "tiff", or None when ``head`` starts no known image."""
    head = bytes(head[:HEAD_BYTES])
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == _PNG:
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:2] == b"BM" and len(head) >= 18:
        # "BM" alone is too weak a signature (text files start with it): check the DIB header size.
        (dib_size,) = struct.unpack("<I", head[14:18])
        if dib_size in _BMP_HEADER_SIZES:
            return "bmp"
    return None


def image_size(head: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) the header claims, or None when unknown (JPEG: read natively)."""
    head = bytes(head[:HEAD_BYTES])
    fmt = sniff(head)
    try:
        if fmt == "png" and head[12:16] == b"IHDR":
            return struct.unpack(">II", head[16:24])
        if fmt == "gif":
            return struct.unpack("<HH", head[6:10])
        if fmt == "bmp":
            (dib_size,) = struct.unpack("<I", head[14:18])
            if dib_size == 12:
                return struct.unpack("<HH", head[18:22])
            width, height = struct.unpack("<ii", head[18:26])
            return abs(width), abs(height)  # a negative height means top-down rows
        if fmt == "webp":
            chunk = head[12:16]
            if chunk == b"VP8X":
                w = int.from_bytes(head[24:27], "little") + 1
                h = int.from_bytes(head[27:30], "little") + 1
                return w, h
            if chunk == b"VP8L" and head[20:21] == b"\x2f":
                (bits,) = struct.unpack("<I", head[21:25])
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
                w, h = struct.unpack("<HH", head[26:30])
                return w & 0x3FFF, h & 0x3FFF
    except struct.error:  # header shorter than it claims
        return None
    return None
