"""Image formats by content, never by extension (ImageNet holds a PNG named ``.JPEG``).

``sniff(head)`` names the format from the first bytes; ``refusal(head)`` says why a file
will not be classified (``unsupported``: a known image format ibnedge does not classify;
``not_image``: no image signature at all); ``image_size(head)`` reads the size a header
claims, so decompression bombs are refused before anything is decoded. The table below is
the one list of formats: what ibnedge classifies, what it only recognises, and every
message naming them. Pure Python: importing this module loads no native code.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Optional, Tuple

# Pillow's decompression-bomb limit: a header claiming more pixels is refused before decoding.
PILLOW_MAX_PIXELS = 178_956_970

# Bytes that sniff() and image_size() need at most (a WebP VP8X/VP8 header ends at byte 30).
HEAD_BYTES = 64

_PNG = b"\x89PNG\r\n\x1a\n"
# BITMAPINFOHEADER and its successors (and the OS/2 variants) by header size.
_BMP_HEADER_SIZES = (12, 16, 40, 52, 56, 64, 108, 124)
# Between the fields of a Netpbm header: white space and "#" comments.
_PNM_SPACE = rb"(?:\s|#[^\n]*\n)+"


@dataclass(frozen=True)
class ImageFormat:
    name: str  # what sniff() returns
    title: str  # how messages name it
    classified: bool  # decoded and classified by ibnedge; else refused as ``unsupported``
    signature: bytes  # a regular expression the file's first bytes match
    suffixes: Tuple[str, ...] = ()  # file name endings (lower case) of a classified format


_KNOWN_FORMATS = (
    ImageFormat("jpeg", "JPEG", True, rb"\xff\xd8\xff", (".jpg", ".jpeg", ".jpe", ".jfif")),
    ImageFormat("png", "PNG", True, re.escape(_PNG), (".png",)),
    ImageFormat("bmp", "BMP", True,
                # "BM" alone is too weak a signature (text files start with it): the DIB header size too.
                b"BM.{12}(?:" + b"|".join(re.escape(struct.pack("<I", n)) for n in _BMP_HEADER_SIZES) + b")",
                (".bmp", ".dib")),
    ImageFormat("webp", "WebP", True, rb"RIFF.{4}WEBP", (".webp",)),
    ImageFormat("gif", "GIF", True, rb"GIF8[79]a", (".gif",)),
    # Classic TIFF (42) and BigTIFF (43), both byte orders; libtiff (in OpenCV) reads all four.
    ImageFormat("tiff", "TIFF", True, rb"II[*+]\x00|MM\x00[*+]", (".tif", ".tiff")),
    # Magic, width and height (text that starts "P6 " is not enough); PAM names its fields.
    ImageFormat("netpbm", "PBM/PGM/PPM/PAM (Netpbm)", False,
                rb"P[1-6]" + _PNM_SPACE + rb"\d+" + _PNM_SPACE + rb"\d+\s"
                rb"|P7\n(?:#[^\n]*\n)*(?:WIDTH|HEIGHT|DEPTH|MAXVAL|TUPLTYPE)\s"),
    ImageFormat("pfm", "PFM (portable float map)", False, rb"P[Ff]\s+\d+\s+\d+\s"),
    ImageFormat("jpeg2000", "JPEG 2000", False, rb"\x00\x00\x00\x0cjP  \r\n\x87\n|\xff\x4f\xff\x51"),
    ImageFormat("jpegxl", "JPEG XL", False, rb"\xff\x0a|\x00\x00\x00\x0cJXL \r\n\x87\n"),
    ImageFormat("heif", "HEIF/AVIF", False, rb".{4}ftyp(?:avif|avis|heic|heix|heim|heis|hevc|hevx|mif1|msf1)"),
    ImageFormat("openexr", "OpenEXR", False, rb"v/1\x01"),
    ImageFormat("radiance", "Radiance HDR", False, rb"#\?(?:RADIANCE|RGBE)"),
    ImageFormat("sunraster", "Sun raster", False, rb"\x59\xa6\x6a\x95"),
    # Reserved 0, type 1, 1..255 images, the first entry's reserved byte 0.
    ImageFormat("ico", "ICO (Windows icon)", False, rb"\x00\x00\x01\x00[\x01-\xff]\x00.{3}\x00"),
    ImageFormat("icns", "ICNS (macOS icon)", False, rb"icns"),
    ImageFormat("psd", "PSD/PSB (Photoshop)", False, rb"8BPS\x00[\x01\x02]"),
    ImageFormat("qoi", "QOI", False, rb"qoif"),
    ImageFormat("dds", "DDS (DirectDraw surface)", False, rb"DDS \x7c\x00\x00\x00"),
    # Magic, storage (raw/RLE), bytes per channel, dimensions.
    ImageFormat("sgi", "SGI", False, rb"\x01\xda[\x00\x01][\x01\x02]\x00[\x01-\x03]"),
    # Manufacturer, version, RLE encoding, bits per plane.
    ImageFormat("pcx", "PCX", False, rb"\x0a[\x00\x02-\x05]\x01[\x01\x02\x04\x08]"),
)
_SIGNATURES = tuple((f, re.compile(f.signature, re.DOTALL)) for f in _KNOWN_FORMATS)

FORMATS = tuple(f.name for f in _KNOWN_FORMATS if f.classified)
# Names that claim a classified format: ibnedge.files sends them to the engine unsniffed.
CLASSIFIED_SUFFIXES = frozenset(s for f in _KNOWN_FORMATS if f.classified for s in f.suffixes)
UNSUPPORTED_FORMATS = tuple(f.name for f in _KNOWN_FORMATS if not f.classified)
_TITLES = {f.name: f.title for f in _KNOWN_FORMATS}
_CLASSIFIED_TITLES = ", ".join(_TITLES[n] for n in FORMATS[:-1]) + " and " + _TITLES[FORMATS[-1]]


def sniff(head: bytes) -> Optional[str]:
    """The format ``head`` starts (a name from FORMATS or UNSUPPORTED_FORMATS), or None."""
    head = bytes(head[:HEAD_BYTES])
    for fmt, signature in _SIGNATURES:
        if signature.match(head):
            return fmt.name
    return None


def title(name: str) -> str:
    """How messages name format ``name`` ("WebP", "JPEG 2000", ...)."""
    return _TITLES[name]


def refusal(head: bytes) -> Optional[Tuple[str, str]]:
    """(kind, message) when the content starting with ``head`` will not be classified, else None."""
    fmt = sniff(head)
    if fmt is None:
        return ("not_image", "not an image: its first bytes (%s) match no image format; ibnedge classifies %s"
                % (bytes(head[:8]).hex(), _CLASSIFIED_TITLES))
    if fmt not in FORMATS:
        return ("unsupported", "%s image, which ibnedge does not classify (it classifies %s): convert it to "
                               "PNG or JPEG" % (_TITLES[fmt], _CLASSIFIED_TITLES))
    return None


def png_default_image(data: bytes) -> bytes:
    """A PNG with its APNG animation chunks (acTL, fcTL, fdAT) dropped: its default image,
    the one every PNG decoder shows and Pillow (torchvision's reader) opens. OpenCV's APNG
    readers disagree with each other and with Pillow: 4.11 draws the first frame wrongly
    when frames blend over each other, 5.0 reads an animation frame when the default
    image is not part of the animation and refuses a file whose acTL announces no frames.
    ``data`` itself when it holds no animation."""
    data = bytes(data)
    first_idat = data.find(b"IDAT", len(_PNG))
    if data.find(b"acTL", len(_PNG), first_idat if first_idat >= 0 else len(data)) < 0:
        return data  # acTL must come before the first IDAT: not an APNG
    kept = [data[: len(_PNG)]]
    pos = len(_PNG)
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        end = pos + 12 + length  # length, type, data, CRC
        if end > len(data):
            break  # a cut chunk: left in place for the decoder to report
        if data[pos + 4 : pos + 8] not in (b"acTL", b"fcTL", b"fdAT"):
            kept.append(data[pos:end])
        pos = end
    kept.append(data[pos:])
    return b"".join(kept)


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
