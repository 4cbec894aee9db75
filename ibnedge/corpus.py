"""Deterministic image corpora built from the photographs that ship inside scikit-image.

Tests, benchmarks, ``ibnedge bench`` and the demo need real photographs, and nothing
generated may be committed, so every corpus is built on demand from ``skimage.data``
(astronaut, chelsea, coffee, rocket, the stereo motorcycle, immunohistochemistry, the
Hubble deep field, retina; camera, moon, coins for grayscale):

- :func:`imagenet_like`: about 500x375 and 375x500 JPEGs (plus a few odd sizes), quality
  90, 4:2:0, like the typical ImageNet file (mean about 470x390).
- :func:`phone_like`: 4000x3000 and 3000x4000 JPEGs, quality 92. The sources are at most
  1411 px, so these are UPSCALED with Pillow's LANCZOS filter and given a fixed, seeded
  sensor-like grain (Gaussian, sigma 3 grey levels) so that the entropy-coded data is
  about as dense as a real phone photograph's (a smooth upscale compresses to a third
  of that and decodes unrealistically fast).
- :func:`bad_input_cases` / :func:`bad_inputs`: every input the engine must survive:
  empty, truncated, corrupt, byte-flipped, not-an-image, decompression-bomb headers,
  unusual but valid JPEGs (CMYK, grayscale, progressive, restart markers, arithmetic
  coding, 4:4:4/4:2:2/4:4:0 sampling), PNG (8-bit, 16-bit, palette, alpha, grayscale),
  BMP, WebP, GIF, a PNG named ``.jpg``, unreadable paths; each with its expected outcome.
- :func:`damaged_jpegs`: seeded mutants of photographs encoded every :func:`jpeg_variants`
  way (cut, a marker written into the scan, flipped scan bytes, damaged headers), beside
  the intact files, to compare the engine's damage verdicts with Pillow's and libjpeg's.

Files are cached by content: each corpus lives in a sub-directory named by a hash of its
recipe (corpus version, parameters, Pillow/libjpeg versions) with a manifest of file
sizes and SHA-256 digests, so a repeated call only re-hashes the files, and two Python
environments (whose encoders may differ) never overwrite each other's files.

Pillow and scikit-image are imported inside the functions (they are test/bench extras).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

# The error kinds of ibnedge.preprocess.ItemError (the shared contract), re-exported for the tests.
from ibnedge.preprocess import ERROR_KINDS

__all__ = [
    "ERROR_KINDS",
    "BadInput",
    "DAMAGE_KINDS",
    "DamagedJpeg",
    "bad_input_cases",
    "bad_inputs",
    "damaged_jpegs",
    "default_cache_dir",
    "encode_jpeg",
    "have_cjpeg",
    "imagenet_like",
    "jpeg_variants",
    "phone_like",
    "photo",
    "source_photos",
]

# Bump when any recipe below changes: every cached corpus is rebuilt.
CORPUS_VERSION = 5

# Expected outcome of an item that must decode: no error.
OK = None

PathLike = Union[str, "os.PathLike[str]"]

# Colour photographs in skimage.data (present in scikit-image 0.19 and 0.26), with a
# loader for the tuple-returning ones.
_COLOUR_SOURCES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "stereo_motorcycle",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
)
_GRAY_SOURCES = ("camera", "moon", "coins")

# (width, height) of the ImageNet-like files, cycled; the odd ones exercise the
# resize/crop rounding rules (odd dimensions, non-integer scale factors).
_IMAGENET_SIZES = (
    (500, 375), (375, 500), (500, 333), (333, 500), (500, 375), (375, 500), (500, 400), (499, 373),
    (500, 375), (375, 500), (500, 500), (400, 500), (500, 375), (281, 500), (500, 357), (411, 301),
)
_PHONE_SIZES = ((4000, 3000), (4000, 3000), (3000, 4000), (4000, 3000))


def default_cache_dir() -> Path:
    """Where corpora go when the caller has no preference: ``corpus/`` in ibnedge's cache
    (``$IBNEDGE_HOME``, default ``~/.cache/ibnedge``)."""
    from .hub import cache_dir

    return cache_dir() / "corpus"


# --------------------------------------------------------------------------- sources


def source_photos(gray: bool = False) -> List[Tuple[str, np.ndarray]]:
    """The scikit-image photographs as ``(name, HxWx3 uint8 RGB)`` (``gray``: ``HxW``).

    Decoded once per process (a corpus asks for them once per file); the arrays are
    read-only because every caller shares them.
    """
    return list(_decoded_sources(gray))


@functools.lru_cache(maxsize=2)
def _decoded_sources(gray: bool) -> Tuple[Tuple[str, np.ndarray], ...]:
    import skimage.data

    out = []
    for name in _GRAY_SOURCES if gray else _COLOUR_SOURCES:
        img = getattr(skimage.data, name)()
        if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
            img = img[0]
        img = np.array(img, dtype=np.uint8, order="C")  # a private copy, then frozen
        if not gray and (img.ndim != 3 or img.shape[2] != 3):
            raise RuntimeError("skimage.data.%s is not an RGB photograph: shape %r" % (name, img.shape))
        img.setflags(write=False)
        out.append((name, img))
    return tuple(out)


def photo(width: int, height: int, index: int = 0, gray: bool = False, seed: int = 0) -> np.ndarray:
    """A ``height x width`` (x3 unless ``gray``) uint8 view of a real photograph.

    Takes the largest crop of source ``index`` (modulo the number of sources) with the
    target aspect ratio, shifted by a seeded random offset, and resizes it with LANCZOS.
    Deterministic for given arguments.
    """
    from PIL import Image

    if width < 1 or height < 1:
        raise ValueError("photo size must be positive, got %dx%d" % (width, height))
    sources = source_photos(gray=gray)
    name, src = sources[index % len(sources)]
    rng = np.random.RandomState(_seed_of(name, width, height, index, seed))
    sh, sw = src.shape[:2]
    aspect = width / float(height)
    cw = min(sw, max(1, int(round(sh * aspect))))
    ch = min(sh, max(1, int(round(cw / aspect))))
    # Keep 85-100 % of the largest crop so the same source yields different pictures.
    shrink = 0.85 + 0.15 * rng.random_sample()
    cw, ch = max(1, int(cw * shrink)), max(1, int(ch * shrink))
    x0 = rng.randint(0, sw - cw + 1)
    y0 = rng.randint(0, sh - ch + 1)
    crop = src[y0:y0 + ch, x0:x0 + cw]
    if (index // len(sources)) % 2 == 1:
        crop = crop[:, ::-1]
    img = Image.fromarray(np.ascontiguousarray(crop))
    if img.size != (width, height):
        img = img.resize((width, height), Image.LANCZOS)
    return np.asarray(img, dtype=np.uint8).copy()


def encode_jpeg(pixels: np.ndarray, quality: int = 90, **pillow_options: Any) -> bytes:
    """JPEG bytes of an RGB (HxWx3), grayscale (HxW) or CMYK (HxWx4, ``mode="CMYK"``) array, via Pillow."""
    import io

    from PIL import Image

    mode = pillow_options.pop("mode", None)
    img = Image.fromarray(pixels, mode) if mode else Image.fromarray(pixels)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, **pillow_options)
    return buf.getvalue()


def have_cjpeg() -> bool:
    """Whether libjpeg-turbo's ``cjpeg`` is on PATH (Debian: ``libjpeg-turbo-progs``);
    needed for the arithmetic-coded and 4:4:0 cases, and for restart markers with Pillow < 10.2."""
    return shutil.which("cjpeg") is not None


def _cjpeg(pixels: np.ndarray, args: Sequence[str]) -> bytes:
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="ibnedge-cjpeg-") as tmp:
        src = os.path.join(tmp, "in.ppm" if pixels.ndim == 3 else "in.pgm")
        dst = os.path.join(tmp, "out.jpg")
        Image.fromarray(pixels).save(src)
        subprocess.run(["cjpeg"] + list(args) + ["-outfile", dst, src], check=True,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with open(dst, "rb") as f:
            return f.read()


def _seed_of(*parts: Any) -> int:
    digest = hashlib.sha256(repr(parts).encode("utf-8")).digest()
    return struct.unpack("<I", digest[:4])[0]


# --------------------------------------------------------------------------- caching


def _encoder_versions() -> Dict[str, str]:
    import PIL
    from PIL import features

    versions = {"pillow": PIL.__version__, "libjpeg": str(features.version("jpg"))}
    if have_cjpeg():
        versions["cjpeg"] = "present"
    return versions


def _cached(dest: PathLike, kind: str, params: Dict[str, Any],
            build: Callable[[Path], List[Tuple[str, Any]]]) -> Tuple[Path, List[Tuple[str, Any]]]:
    """Build (or reuse) corpus ``kind`` under ``dest``; returns its directory and
    ``(file name, extra)`` rows in build order.

    ``build(tmpdir)`` writes the files into ``tmpdir`` and returns the rows. A manifest
    with each file's size and SHA-256 makes a rebuild happen only when a file is
    missing or changed.
    """
    recipe = {"kind": kind, "version": CORPUS_VERSION, "params": params, "encoders": _encoder_versions()}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode("utf-8")).hexdigest()[:12]
    root = Path(dest)
    target = root / ("%s-%s" % (kind, key))
    manifest = target / "manifest.json"
    rows = _valid_manifest(manifest, target)
    if rows is not None:
        return target, rows
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".%s-" % kind, dir=str(root)))
    try:
        rows = build(tmp)
        files = []
        for name, extra in rows:
            p = tmp / name
            if p.is_file():
                files.append({"name": name, "size": p.stat().st_size, "sha256": _sha256(p), "extra": extra})
            else:  # directories and deliberately missing paths are part of some corpora
                files.append({"name": name, "size": None, "sha256": None, "extra": extra})
        (tmp / "manifest.json").write_text(
            json.dumps({"recipe": recipe, "files": files}, indent=1, sort_keys=True), encoding="utf-8")
        if target.exists():
            shutil.rmtree(str(target), ignore_errors=True)
        try:
            os.replace(str(tmp), str(target))
        except OSError:
            # Another process built the same recipe at the same moment: same bytes, keep theirs.
            if _valid_manifest(manifest, target) is None:
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(str(tmp), ignore_errors=True)
    rows = _valid_manifest(manifest, target)
    if rows is None:
        raise RuntimeError("corpus %s was built but does not verify; delete %s and retry" % (kind, target))
    return target, rows


def _valid_manifest(manifest: Path, target: Path) -> Optional[List[Tuple[str, Any]]]:
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    rows = []
    for entry in data.get("files", []):
        p = target / entry["name"]
        if entry["sha256"] is not None:
            if not p.is_file() or p.stat().st_size != entry["size"] or _sha256(p) != entry["sha256"]:
                return None
        rows.append((entry["name"], entry.get("extra")))
    return rows


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(str(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write(path: Path, data: bytes) -> None:
    with open(str(path), "wb") as f:
        f.write(data)


# --------------------------------------------------------------------------- corpora


def imagenet_like(dest: PathLike, count: int = 32, quality: int = 90) -> List[Path]:
    """``count`` ImageNet-like JPEGs (about 500x375 / 375x500, some odd sizes) under ``dest``."""
    if count < 1:
        raise ValueError("count must be positive, got %d" % count)

    def build(tmp: Path) -> List[Tuple[str, Any]]:
        rows = []
        for i in range(count):
            w, h = _IMAGENET_SIZES[i % len(_IMAGENET_SIZES)]
            name = "imagenet_%03d_%dx%d.jpg" % (i, w, h)
            _write(tmp / name, encode_jpeg(photo(w, h, index=i), quality=quality))
            rows.append((name, None))
        return rows

    target, rows = _cached(dest, "imagenet_like", {"count": count, "quality": quality}, build)
    return [target / name for name, _ in rows]


def phone_like(dest: PathLike, count: int = 4, quality: int = 92, grain: float = 3.0) -> List[Path]:
    """``count`` 12-megapixel phone-like JPEGs (4000x3000, one in four portrait 3000x4000)
    under ``dest``: LANCZOS-upscaled photographs plus seeded grain (see the module doc)."""
    if count < 1:
        raise ValueError("count must be positive, got %d" % count)

    def build(tmp: Path) -> List[Tuple[str, Any]]:
        rows = []
        for i in range(count):
            w, h = _PHONE_SIZES[i % len(_PHONE_SIZES)]
            # Sources sorted large first: hubble_deep_field, retina give the most detail.
            pixels = photo(w, h, index=(i + 5) % len(_COLOUR_SOURCES))
            if grain > 0:
                pixels = _add_grain(pixels, grain, seed=_seed_of("grain", i))
            name = "phone_%02d_%dx%d.jpg" % (i, w, h)
            _write(tmp / name, encode_jpeg(pixels, quality=quality))
            rows.append((name, None))
        return rows

    target, rows = _cached(dest, "phone_like", {"count": count, "quality": quality, "grain": grain}, build)
    return [target / name for name, _ in rows]


def _add_grain(pixels: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.RandomState(seed)
    out = np.empty_like(pixels)
    rows = max(1, (1 << 22) // max(1, pixels[0].size))  # a few MB at a time
    for y in range(0, pixels.shape[0], rows):
        block = pixels[y:y + rows].astype(np.float32)
        block += rng.standard_normal(block.shape).astype(np.float32) * np.float32(sigma)
        out[y:y + rows] = np.clip(np.rint(block), 0, 255).astype(np.uint8)
    return out


@dataclass(frozen=True)
class BadInput:
    """One case of the bad-input corpus.

    ``expected``: the error kinds the engine may report (empty tuple: it must decode);
    ``may_decode``: decoding is also acceptable (damage libjpeg only warns about, or a
    format the engine may or may not support); ``reference``: how a correct decode is
    checked: ``"pillow"`` (pixels equal Pillow's decode + RGB conversion) or ``None``.
    """

    name: str
    path: Path
    expected: Tuple[str, ...]
    may_decode: bool
    reference: Optional[str]
    note: str

    @property
    def must_decode(self) -> bool:
        return not self.expected

    def accepts(self, kind: Optional[str]) -> bool:
        """Whether an outcome (``None`` = decoded, else an error kind) is acceptable."""
        if kind is None:
            return self.must_decode or self.may_decode
        return kind in self.expected


def bad_inputs(dest: PathLike) -> List[Path]:
    """The paths of :func:`bad_input_cases`, in a fixed order."""
    return [case.path for case in bad_input_cases(dest).values()]


def bad_input_cases(dest: PathLike) -> "OrderedDict[str, BadInput]":
    """Every awkward or broken input, keyed by case name, with its expected outcome.

    Cases needing ``cjpeg`` (arithmetic coding, 4:4:0 sampling; restart markers with
    Pillow < 10.2) are left out when it is missing: see :func:`have_cjpeg`.
    """

    def build(tmp: Path) -> List[Tuple[str, Any]]:
        rows = []

        def add(name: str, filename: str, data: Optional[bytes], expected: Tuple[str, ...] = (),
                may_decode: bool = False, reference: Optional[str] = None, note: str = "") -> None:
            if data is not None:
                _write(tmp / filename, data)
            rows.append((filename, {"name": name, "expected": list(expected), "may_decode": may_decode,
                                    "reference": reference, "note": note}))

        for name, filename, data, expected, may_decode, reference, note in _bad_input_recipes():
            if name == "unreadable_directory":
                (tmp / filename).mkdir()
                data = None
            add(name, filename, data, expected, may_decode, reference, note)
        return rows

    target, rows = _cached(dest, "bad_inputs", {}, build)
    cases = OrderedDict()  # type: OrderedDict[str, BadInput]
    for filename, extra in rows:
        cases[extra["name"]] = BadInput(
            name=extra["name"], path=target / filename, expected=tuple(extra["expected"]),
            may_decode=bool(extra["may_decode"]), reference=extra["reference"], note=extra["note"])
    return cases


def _bad_input_recipes() -> List[Tuple[str, str, Optional[bytes], Tuple[str, ...], bool, Optional[str], str]]:
    """(name, file name, bytes, expected kinds, may_decode, reference, note) rows."""
    import io

    from PIL import Image

    rgb = photo(333, 250, index=1)  # chelsea
    rgb_big = photo(640, 480, index=2)  # coffee
    gray = photo(320, 240, index=0, gray=True)
    variants = jpeg_variants(rgb)
    good = variants["baseline"][0]
    rows = []  # type: List[Tuple[str, str, Optional[bytes], Tuple[str, ...], bool, Optional[str], str]]

    def ok(name: str, filename: str, data: bytes, note: str) -> None:
        rows.append((name, filename, data, (), False, "pillow", note))

    def bad(name: str, filename: str, data: Optional[bytes], kinds: Tuple[str, ...], note: str,
            may_decode: bool = False) -> None:
        rows.append((name, filename, data, kinds, may_decode, None, note))

    # --- valid JPEG variants: must decode, pixels as Pillow decodes them
    ok("baseline", "baseline.jpg", good, "plain baseline 4:2:0 JPEG, the control")
    # A real gray photograph rather than jpeg_variants' gray version of the colour one.
    ok("grayscale", "grayscale.jpg", encode_jpeg(gray, quality=90), "1-component JPEG: gray replicated to RGB")
    for name, (data, note) in variants.items():
        if name not in ("baseline", "grayscale"):
            ok(name, name + ".jpg", data, note)
    restart = _restart_marker_jpeg(rgb_big)
    if restart is not None:
        ok("restart_markers_640x480", "restart_640x480.jpg", restart, "restart markers, 40 MCU rows")
    ok("tiny_jpeg", "tiny_7x5.jpg", encode_jpeg(photo(7, 5, index=3), quality=90), "7x5 JPEG: upscaled to 256")

    # --- other formats, detected by content: must decode, alpha dropped
    ok("png_rgb", "rgb.png", _pillow_bytes(Image.fromarray(rgb), "PNG"), "8-bit RGB PNG")
    ok("png_gray", "gray.png", _pillow_bytes(Image.fromarray(gray), "PNG"), "8-bit grayscale PNG")
    ok("png_palette", "palette.png", _pillow_bytes(Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE), "PNG"),
       "palette (P mode) PNG")
    rgba = np.dstack([rgb, np.linspace(0, 255, rgb.shape[1], dtype=np.uint8)[None, :].repeat(rgb.shape[0], 0)])
    ok("png_alpha", "alpha.png", _pillow_bytes(Image.fromarray(rgba, "RGBA"), "PNG"),
       "RGBA PNG with a gradient alpha: alpha dropped, not composited")
    ok("png_16bit", "rgb16.png", _png16(rgb), "16-bit RGB PNG (values v*257: any 16->8 bit rule gives v)")
    ok("bmp", "rgb.bmp", _pillow_bytes(Image.fromarray(rgb), "BMP"), "24-bit BMP")
    ok("webp", "lossless.webp", _pillow_bytes(Image.fromarray(rgb), "WEBP", lossless=True), "lossless WebP")
    ok("png_named_jpg", "png_named.jpg", _pillow_bytes(Image.fromarray(rgb), "PNG"),
       "a PNG whose name says .jpg (ImageNet has one): sniffed by content")
    rows.append(("gif", "palette.gif", _pillow_bytes(Image.fromarray(rgb).convert("P"), "GIF"), ("unsupported",),
                 True, "pillow", "GIF: decoded when OpenCV can, else unsupported"))

    # --- broken inputs: each must fail alone with its kind
    bad("empty", "empty.jpg", b"", ("empty",), "zero-byte file")
    bad("truncated", "truncated.jpg", good[: len(good) * 6 // 10], ("truncated",),
        "JPEG cut at 60 % of its entropy-coded data (policy: an error, not a grey bottom)")
    sos = good.find(b"\xff\xda")
    bad("truncated_header", "truncated_header.jpg", good[: max(4, sos // 2)], ("truncated", "corrupt"),
        "JPEG cut inside its headers, before any scan")
    bad("soi_only", "soi_only.jpg", b"\xff\xd8\xff", ("truncated", "corrupt"), "nothing but the start marker")
    rng = np.random.RandomState(1234)
    junk = bytes(rng.randint(0, 256, size=4096).astype(np.uint8).tolist())
    bad("corrupt_header", "corrupt_header.jpg", b"\xff\xd8\xff" + junk, ("corrupt", "truncated"),
        "JPEG start marker followed by random bytes")
    bad("corrupt_huffman", "corrupt_huffman.jpg", _corrupt_huffman_table(good), ("corrupt",),
        "Huffman table (DHT) with impossible code counts", may_decode=False)
    bad("bad_precision", "precision12.jpg", _patch_sof(good, precision=12), ("unsupported", "corrupt"),
        "SOF says 12-bit samples (libjpeg's 8-bit API cannot decode them)")
    bad("zero_width", "zero_width.jpg", _patch_sof(good, width=0), ("corrupt",), "SOF says width 0")
    bad("huge_header", "huge_65535.jpg", _patch_sof(good, width=65535, height=65535), ("too_large",),
        "SOF claims 65535x65535 (4.3 Gpixel): must be refused before allocating")
    bad("progressive_bomb", "progressive_bomb.jpg", _patch_sof(encode_jpeg(photo(16, 16, index=4), quality=90,
                                                                            progressive=True, subsampling=0),
                                                                width=11000, height=11000), ("too_large",),
        "16x16 progressive 4:4:4 JPEG whose SOF claims 11000x11000 (121 Mpixel, under the pixel cap): its "
        "coefficient buffers (726 MB) exceed the per-image memory budget")
    ok("scans_500", "scans_500.jpg", _many_scans_jpeg(500), "valid 8x8 progressive JPEG with 500 scans, the limit")
    bad("scans_501", "scans_501.jpg", _many_scans_jpeg(501), ("too_large",),
        "valid 8x8 progressive JPEG with 501 scans: over libjpeg-turbo's own limit (TJFLAG_LIMITSCANS)")
    bad("huge_png_header", "huge_65535.png", _png_with_size(65535, 65535), ("too_large", "corrupt"),
        "PNG IHDR claims 65535x65535 with a tiny IDAT")
    bad("not_image", "notes.txt", b"These are not the pixels you are looking for.\n" * 20, ("not_image",),
        "a text file")
    bad("text_named_jpg", "text_named.jpg", b"<html><body>404 Not Found</body></html>\n", ("not_image",),
        "an HTML error page saved as .jpg")
    for i in range(8):
        bad("byte_flips_%d" % i, "flipped_%d.jpg" % i, _flip_bytes(good, seed=i, count=4 + 4 * i),
            ("corrupt", "truncated"),
            "%d seeded random byte changes after the headers: libjpeg may only warn, or fail" % (4 + 4 * i),
            may_decode=True)
    bad("missing_file", "does_not_exist.jpg", None, ("unreadable",), "a path that does not exist")
    bad("unreadable_directory", "a_directory.jpg", None, ("unreadable",), "a path that is a directory")
    return rows


def _pillow_bytes(img: Any, fmt: str, **options: Any) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def _rgb_to_cmyk(rgb: np.ndarray) -> np.ndarray:
    """Plain (not inverted) CMYK with real black generation: K = 1 - max(R, G, B)."""
    x = rgb.astype(np.float64) / 255.0
    k = 1.0 - x.max(axis=2)
    denom = np.maximum(1.0 - k, 1e-6)
    cmy = (1.0 - x - k[..., None]) / denom[..., None]
    cmyk = np.dstack([cmy, k]) * 255.0
    return np.clip(np.rint(cmyk), 0, 255).astype(np.uint8)


def _png16(rgb: np.ndarray) -> bytes:
    """A 16-bit RGB PNG written by hand (Pillow cannot write 48-bit PNGs)."""
    h, w = rgb.shape[:2]
    samples = (rgb.astype(">u2") * 257).reshape(h, w * 3)
    raw = b"".join(b"\x00" + samples[y].tobytes() for y in range(h))
    return _png_chunks(w, h, bit_depth=16, colour_type=2, idat=zlib.compress(raw, 6))


def _png_with_size(width: int, height: int) -> bytes:
    return _png_chunks(width, height, bit_depth=8, colour_type=2, idat=zlib.compress(b"\x00" * 64))


def _png_chunks(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _sof_offset(jpeg: bytes) -> int:
    """Offset of the first SOFn marker segment (FFC0-FFCF except C4, C8, CC)."""
    pos = 2
    while pos + 4 <= len(jpeg):
        if jpeg[pos] != 0xFF:
            raise ValueError("malformed JPEG marker at offset %d" % pos)
        marker = jpeg[pos + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return pos
        seglen = struct.unpack(">H", jpeg[pos + 2:pos + 4])[0]
        pos += 2 + seglen
    raise ValueError("no SOF marker found")


def _patch_sof(jpeg: bytes, width: Optional[int] = None, height: Optional[int] = None,
               precision: Optional[int] = None) -> bytes:
    """The same JPEG with its frame header's precision/height/width replaced."""
    pos = _sof_offset(jpeg)
    data = bytearray(jpeg)
    # FFCn, length(2), precision(1), height(2), width(2)
    if precision is not None:
        data[pos + 4] = precision
    if height is not None:
        data[pos + 5:pos + 7] = struct.pack(">H", height)
    if width is not None:
        data[pos + 7:pos + 9] = struct.pack(">H", width)
    return bytes(data)


def _corrupt_huffman_table(jpeg: bytes) -> bytes:
    """Make the first DHT's code-length counts claim more codes than can exist."""
    pos = jpeg.find(b"\xff\xc4")
    if pos < 0:
        raise ValueError("no DHT marker found")
    data = bytearray(jpeg)
    # FFC4, length(2), class/id(1), then 16 counts: 3 codes of length 1 is impossible.
    data[pos + 5] = 3
    return bytes(data)


def _many_scans_jpeg(scans: int) -> bytes:
    """A valid 8x8 grayscale progressive JPEG of ``scans`` scans (at most 505), written by
    hand (cjpeg's scan scripts stop at 100): the DC, then each AC coefficient alone with
    successive approximation, bit 7 first and one refinement scan per lower bit. Every
    coefficient is 0, so each scan holds one 1-bit code: DC difference 0, or end-of-band."""
    if not 1 <= scans <= 1 + 63 * 8:
        raise ValueError("scans must be in 1..505, got %d" % scans)

    def segment(marker: int, body: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body

    def scan(ss: int, se: int, ah: int, al: int) -> bytes:
        # One component (id 1, tables 0/0), then its data: code "0" padded with 1 bits.
        return segment(0xDA, bytes((1, 1, 0x00, ss, se, (ah << 4) | al))) + b"\x7f"

    one_code = bytes([1] + [0] * 15) + b"\x00"  # one code of length 1, for symbol 0
    out = [b"\xff\xd8", segment(0xDB, b"\x00" + b"\x01" * 64),
           segment(0xC2, struct.pack(">BHHB", 8, 8, 8, 1) + b"\x01\x11\x00"),
           segment(0xC4, b"\x00" + one_code + b"\x10" + one_code), scan(0, 0, 0, 0)]
    passes = [(k, ah, al) for k in range(1, 64) for ah, al in [(0, 7)] + [(b + 1, b) for b in range(6, -1, -1)]]
    out += [scan(k, k, ah, al) for k, ah, al in passes[:scans - 1]]
    return b"".join(out) + b"\xff\xd9"


def _scan_data_offset(jpeg: bytes) -> int:
    """Offset of the first byte of entropy-coded data: just after the first SOS segment."""
    sos = jpeg.find(b"\xff\xda")
    if sos < 0:
        raise ValueError("no SOS marker found")
    return sos + 2 + struct.unpack(">H", jpeg[sos + 2:sos + 4])[0]


def _flip_bytes(jpeg: bytes, seed: int, count: int) -> bytes:
    """``count`` seeded random byte replacements in the entropy-coded data."""
    start = _scan_data_offset(jpeg)
    end = len(jpeg) - 2  # keep the EOI
    rng = np.random.RandomState(seed)
    data = bytearray(jpeg)
    for off in rng.randint(start, end, size=count):
        data[int(off)] = int(rng.randint(0, 256))
    return bytes(data)


def jpeg_variants(rgb: np.ndarray, quality: int = 90) -> "OrderedDict[str, Tuple[bytes, str]]":
    """One RGB photo encoded every way a JPEG decoder must handle: ``name -> (bytes, note)``.

    Always: baseline 4:2:0, grayscale, Adobe CMYK with a real K channel, progressive,
    optimised Huffman tables, 4:4:4 and 4:2:2 sampling. With ``cjpeg`` (see
    :func:`have_cjpeg`): arithmetic coding, 4:4:0 sampling, progressive + arithmetic; and
    restart markers (also with Pillow >= 10.2).
    """
    from PIL import Image

    out = OrderedDict()  # type: OrderedDict[str, Tuple[bytes, str]]
    out["baseline"] = (encode_jpeg(rgb, quality=quality), "plain baseline 4:2:0 JPEG")
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    out["grayscale"] = (encode_jpeg(gray, quality=quality), "1-component JPEG: gray replicated to RGB")
    out["cmyk"] = (encode_jpeg(_rgb_to_cmyk(rgb), quality=quality, mode="CMYK"),
                   "4-component Adobe (inverted) CMYK JPEG with a real K channel")
    out["progressive"] = (encode_jpeg(rgb, quality=quality, progressive=True), "progressive JPEG")
    out["optimized"] = (encode_jpeg(rgb, quality=quality, optimize=True), "optimised Huffman tables")
    out["subsampling_444"] = (encode_jpeg(rgb, quality=quality, subsampling=0), "4:4:4 sampling")
    out["subsampling_422"] = (encode_jpeg(rgb, quality=quality, subsampling=1), "4:2:2 sampling")
    restart = _restart_marker_jpeg(rgb, quality)
    if restart is not None:
        out["restart_markers"] = (restart, "restart marker after every MCU row")
    if have_cjpeg():
        q = str(quality)
        out["arithmetic"] = (_cjpeg(rgb, ["-arithmetic", "-quality", q]), "arithmetic-coded JPEG (cjpeg -arithmetic)")
        out["subsampling_440"] = (_cjpeg(rgb, ["-quality", q, "-sample", "1x2,1x1,1x1"]),
                                  "4:4:0 sampling (cjpeg -sample 1x2)")
        out["progressive_arithmetic"] = (_cjpeg(rgb, ["-arithmetic", "-progressive", "-quality", q]),
                                         "progressive + arithmetic")
    return out


def _restart_marker_jpeg(rgb: np.ndarray, quality: int = 90) -> Optional[bytes]:
    """A JPEG with a restart marker after every MCU row, via cjpeg or Pillow >= 10.2."""
    if have_cjpeg():
        return _cjpeg(rgb, ["-quality", str(quality), "-restart", "1"])
    try:
        data = encode_jpeg(rgb, quality=quality, restart_marker_rows=1)
    except (TypeError, ValueError):
        return None
    # Pillow before 10.2 silently ignores the option.
    return data if b"\xff\xd0" in data else None


# --------------------------------------------------------------------------- damaged JPEGs

# How damaged_jpegs() breaks a photograph; the mutants of a source take them in turn.
DAMAGE_KINDS = ("cut", "marker_in_scan", "flipped_scan_bytes", "damaged_header")
# Marker codes written into entropy-coded data: reserved codes (libjpeg: unknown marker),
# frame, table and scan markers, restart and end-of-image markers, APPn and COM segments.
_SCAN_MARKERS = (0x01, 0x02, 0x34, 0x7F, 0xBF, 0xC0, 0xC2, 0xC4, 0xC8, 0xCC, 0xD0, 0xD3, 0xD7, 0xD8, 0xD9, 0xDA,
                 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0xE0, 0xE1, 0xE2, 0xEE, 0xF0, 0xF7, 0xFD, 0xFE)
# (width, height) of the photographs: portrait and landscape (the centre crop leaves out
# rows or columns), and a short side >= 512 (fast mode decodes it at half scale).
_DAMAGE_SIZES = ((240, 400), (400, 240), (640, 832))


@dataclass(frozen=True)
class DamagedJpeg:
    """One mutant of :func:`damaged_jpegs`: ``source`` names the intact file it was made
    from (a key of the sources returned beside it), ``damage`` is one of DAMAGE_KINDS."""

    path: Path
    source: str
    damage: str
    note: str


def damaged_jpegs(dest: PathLike, per_source: int = 40,
                  seed: int = 0) -> Tuple["OrderedDict[str, Path]", List[DamagedJpeg]]:
    """Photographs encoded every :func:`jpeg_variants` way (sizes ``_DAMAGE_SIZES``) and
    ``per_source`` seeded mutants of each, the damage kinds in turn:

    - ``cut``: truncated at a random offset (one cut in eight inside the headers);
    - ``marker_in_scan``: two bytes of entropy-coded data overwritten with FF and a marker
      code (``_SCAN_MARKERS``);
    - ``flipped_scan_bytes``: 1-4 bytes of entropy-coded data replaced by random values or
      given one flipped bit;
    - ``damaged_header``: 1-3 bytes before the first scan's data replaced.

    Returns ``(sources, mutants)``: the intact files by name, and the mutants.
    """
    if per_source < 1:
        raise ValueError("per_source must be positive, got %d" % per_source)

    def build(tmp: Path) -> List[Tuple[str, Any]]:
        rows = []
        for index, (w, h) in enumerate(_DAMAGE_SIZES):
            for flavour, (data, note) in jpeg_variants(photo(w, h, index=index)).items():
                source = "%dx%d_%s" % (w, h, flavour)
                _write(tmp / (source + ".jpg"), data)
                rows.append((source + ".jpg", {"source": source, "damage": None, "note": note}))
                for k in range(per_source):
                    damage = DAMAGE_KINDS[k % len(DAMAGE_KINDS)]
                    rng = np.random.RandomState(_seed_of("damaged", source, k, seed))
                    mutant, how = _damage(data, damage, k // len(DAMAGE_KINDS), rng)
                    while mutant == data:  # a replaced byte took its old value: draw again
                        mutant, how = _damage(data, damage, k // len(DAMAGE_KINDS), rng)
                    name = "%s_%02d_%s.jpg" % (source, k, damage)
                    _write(tmp / name, mutant)
                    rows.append((name, {"source": source, "damage": damage, "note": how}))
        return rows

    target, rows = _cached(dest, "damaged_jpegs", {"per_source": per_source, "seed": seed}, build)
    sources = OrderedDict()  # type: OrderedDict[str, Path]
    mutants = []  # type: List[DamagedJpeg]
    for name, extra in rows:
        if extra["damage"] is None:
            sources[extra["source"]] = target / name
        else:
            mutants.append(DamagedJpeg(target / name, extra["source"], extra["damage"], extra["note"]))
    return sources, mutants


def _damage(jpeg: bytes, damage: str, turn: int, rng: np.random.RandomState) -> Tuple[bytes, str]:
    """``jpeg`` broken the ``damage`` way (``turn``: how many of that kind came before),
    and a note saying where."""
    scan = _scan_data_offset(jpeg)
    data = bytearray(jpeg)
    if damage == "cut":
        cut = int(rng.randint(2, scan)) if turn % 8 == 0 else int(rng.randint(scan, len(jpeg)))
        return bytes(data[:cut]), "cut at byte %d of %d (scan data from %d)" % (cut, len(jpeg), scan)
    if damage == "marker_in_scan":
        pos = int(rng.randint(scan, len(jpeg) - 3))  # the final EOI stays
        code = _SCAN_MARKERS[int(rng.randint(len(_SCAN_MARKERS)))]
        data[pos:pos + 2] = bytes((0xFF, code))
        return bytes(data), "FF %02X written at byte %d (scan data %d..%d)" % (code, pos, scan, len(jpeg))
    if damage == "flipped_scan_bytes":
        changes = []
        for _ in range(1 + int(rng.randint(4))):
            pos = int(rng.randint(scan, len(jpeg) - 2))
            if rng.randint(2):
                data[pos] = int(rng.randint(256))
            else:
                data[pos] ^= 1 << int(rng.randint(8))
            changes.append(pos)
        return bytes(data), "scan bytes %s changed" % changes
    if damage == "damaged_header":
        changes = []
        for _ in range(1 + int(rng.randint(3))):
            pos = int(rng.randint(2, scan))
            data[pos] = int(rng.randint(256))
            changes.append(pos)
        return bytes(data), "header bytes %s replaced (scan data from %d)" % (changes, scan)
    raise ValueError("unknown damage %r: choose one of %s" % (damage, ", ".join(DAMAGE_KINDS)))



def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m ibnedge.corpus KIND DEST``: write a corpus and print its paths."""
    import argparse

    makers = {"imagenet": imagenet_like, "phone": phone_like, "bad": bad_inputs,
              "damaged": lambda dest: [m.path for m in damaged_jpegs(dest)[1]]}
    parser = argparse.ArgumentParser(
        prog="python -m ibnedge.corpus",
        description="Write sample photographs made from scikit-image's pictures (deterministic).")
    parser.add_argument("kind", choices=sorted(makers), help="imagenet: ~500x375 q90; phone: 4000x3000 q92; "
                        "bad: the bad-input cases (corrupt, truncated, not an image, ...); damaged: mutants of "
                        "photographs (cut, markers in the scan, flipped bytes, damaged headers)")
    parser.add_argument("dest", help="directory to write into")
    parser.add_argument("--count", type=int, default=None, help="how many photos (imagenet, phone)")
    args = parser.parse_args(argv)
    kwargs = {} if args.count is None or args.kind in ("bad", "damaged") else {"count": args.count}
    for path in makers[args.kind](args.dest, **kwargs):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
