"""Damaged JPEGs are refused with libjpeg's reason, the same way in every semantics and
whatever the crop window, and accepted on request.

libjpeg only warns when it cannot decode entropy-coded data (a marker inside the scan, a
bad Huffman code, a lost restart marker) or when the data ends early, and fills the rest
with grey: the engine refuses such files (``corrupt`` / ``truncated``) unless
``accept_damaged=True``, and reads the data below the crop too, so that the verdict is a
full decode's. Warnings after which every pixel still comes from the data (extraneous
bytes before a marker, an unknown APPn segment) are not damage.

The reference for "refuses" / "decodes" is Pillow (``Image.open`` + ``load()``, with
``ImageFile.LOAD_TRUNCATED_IMAGES`` false), given the whole file at once: Pillow feeds
libjpeg 64 KiB at a time by default, and libjpeg's arithmetic decoder cannot suspend, so
Pillow refuses every arithmetic-coded file over 64 KiB, damaged or not. libjpeg-turbo's
``djpeg`` (at trace level 3, which prints every warning) confirms each refusal Pillow
does not make.
"""
from __future__ import annotations

import io
import shutil
import struct
import subprocess
from collections import Counter, OrderedDict
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest
from conftest import pixel_spec

from ibnedge import corpus
from ibnedge.preprocess import Preprocessor

MODES = ("pil", "mindspore", "fast")
# libjpeg's warnings for data it had to make up (cpp/jpeg_decoder.cpp, damage_of).
LIBJPEG_DAMAGE = ("premature end of data segment", "bad Huffman code", "bad arithmetic code", "instead of RST",
                  "Premature end of JPEG file", "Inconsistent progression sequence")
FIX = ("--accept-damaged", "accept_damaged=True")
CHUNK = 64  # items per engine run: the output tensor stays small

Verdict = Optional[Tuple[str, str]]  # None: decoded; else (kind, message without the item's label)


def _scan_data(jpeg: bytes) -> int:
    sos = jpeg.find(b"\xff\xda")
    return sos + 2 + struct.unpack(">H", jpeg[sos + 2:sos + 4])[0]


def _with_marker(jpeg: bytes, fraction: float, code: int) -> bytes:
    """``jpeg`` with FF ``code`` written ``fraction`` of the way through its scan data."""
    start = _scan_data(jpeg)
    pos = start + int((len(jpeg) - 2 - start) * fraction)
    data = bytearray(jpeg)
    data[pos:pos + 2] = bytes((0xFF, code))
    return bytes(data)


def _pillow_decodes(data: bytes) -> bool:
    from PIL import Image, ImageFile

    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise AssertionError("the Pillow reference needs ImageFile.LOAD_TRUNCATED_IMAGES = False")
    try:
        img = Image.open(io.BytesIO(data))
        img.decodermaxblock = max(len(data), 65536)  # the whole file at once (see the module doc)
        img.load()
    except Exception:  # any failure is Pillow refusing the file
        return False
    return True


def _djpeg_damage(path) -> List[str]:
    """libjpeg's damage warnings for a full decode by djpeg (trace level 3: every warning)."""
    proc = subprocess.run(["djpeg", "-v", "-v", "-v", "-outfile", "/dev/null", str(path)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    text = proc.stderr.decode("utf-8", "replace")
    return [d for d in LIBJPEG_DAMAGE if d in text]


def _run(pre: Preprocessor, items: List) -> Tuple[List[Verdict], np.ndarray]:
    res = pre.run(items)
    verdicts = []  # type: List[Verdict]
    for item, err in zip(items, res.errors):
        label = str(item) if not isinstance(item, bytes) else None
        if err is None:
            verdicts.append(None)
        else:
            message = err.message.split(": ", 1)[1] if label is None else err.message[len(label) + 2:]
            verdicts.append((err.kind, message))
    return verdicts, res.tensor


def _full_decode(pre: Preprocessor, data: List[bytes]) -> List[Verdict]:
    """The engine decoding every row and column (no crop window): a full decode's verdicts."""
    spec = pre.spec
    out = np.empty((len(data), 3) + tuple(spec.crop), np.float32)
    statuses = pre._engine.run(data, "b" * len(data), out, semantics=spec.semantics, resize=spec.resize,
                               crop=tuple(spec.crop), mean=list(spec.mean), std=list(spec.std),
                               restrict_window=False)
    return [None if s is None else (s[0], s[1]) for s in statuses]


@pytest.fixture(scope="module")
def damaged(corpus_dir):
    return corpus.damaged_jpegs(corpus_dir)


@pytest.fixture(scope="module")
def verdicts(damaged) -> Dict[str, Dict[str, object]]:
    """Per mutant path: Pillow's verdict, the engine's in each semantics (paths), and the
    engine's full decode (bytes, every row and column)."""
    _, mutants = damaged
    table = OrderedDict()  # type: Dict[str, Dict[str, object]]
    for m in mutants:
        table[str(m.path)] = {"pillow": _pillow_decodes(m.path.read_bytes()), "mutant": m}
    pres = {mode: Preprocessor(spec=pixel_spec(mode), threads=2) for mode in MODES}
    for i in range(0, len(mutants), CHUNK):
        chunk = mutants[i:i + CHUNK]
        for mode, pre in pres.items():
            got, _ = _run(pre, [m.path for m in chunk])
            for m, v in zip(chunk, got):
                table[str(m.path)][mode] = v
        # Files without the JPEG signature never reach the decoder (the Python side reports them).
        jpegs = [m for m in chunk if m.path.read_bytes()[:3] == b"\xff\xd8\xff"]
        for m in chunk:
            table[str(m.path)]["full"] = table[str(m.path)]["pil"]
        for m, v in zip(jpegs, _full_decode(pres["pil"], [m.path.read_bytes() for m in jpegs])):
            table[str(m.path)]["full"] = v
    return table


# --------------------------------------------------------------------------- the mutant corpus


def test_the_corpus_breaks_intact_photographs_every_way(damaged):
    sources, mutants = damaged
    assert len(sources) >= 3 * 7 and len(mutants) == 40 * len(sources)
    assert Counter(m.damage for m in mutants) == {kind: 10 * len(sources) for kind in corpus.DAMAGE_KINDS}
    assert all(m.source in sources and m.path.read_bytes() != sources[m.source].read_bytes() for m in mutants)
    paths = list(sources.values())
    assert all(_pillow_decodes(p.read_bytes()) for p in paths)
    for mode in MODES:
        assert _run(Preprocessor(spec=pixel_spec(mode), threads=2), paths)[0] == [None] * len(paths)


def _whole_images(paths) -> List[Verdict]:
    """The engine's decode of each whole image, uncropped and unscaled (None: refused)."""
    from PIL import Image

    out = []
    for path in paths:
        width, height = Image.open(str(path)).size  # the header is enough
        pre = Preprocessor(spec=pixel_spec("pil", resize=min(width, height), crop=(height, width)), threads=1)
        res = pre.run([path])
        out.append(None if res.errors[0] is not None else res.tensor[0])
    return out


def test_the_engine_refuses_every_mutant_pillow_refuses(verdicts, damaged):
    """Zero accepted, except files whose whole image decodes to exactly the intact
    photograph's pixels (Pillow's own header parser refuses some of those, e.g. a JFIF
    segment too short for its version field, which libjpeg skips)."""
    sources, _ = damaged
    refused = [v for v in verdicts.values() if not v["pillow"]]
    accepted = [v for v in refused if any(v[mode] is None for mode in MODES)]
    intact = []
    for v in accepted:
        m = v["mutant"]
        got, want = _whole_images([m.path, sources[m.source]])
        if got is not None and np.array_equal(got, want) and all(v[mode] is None for mode in MODES):
            intact.append(m)
    print("\nmutants %d, Pillow refuses %d, the engine accepts %d of those (%d with the intact pixels)"
          % (len(verdicts), len(refused), len(accepted), len(intact)))
    wrong = [v["mutant"] for v in accepted if v["mutant"] not in intact]
    assert not wrong, "\n".join("%s (%s): %s" % (m.path.name, m.note, verdicts[str(m.path)]["pil"]) for m in wrong)
    assert len(intact) <= len(refused) // 100


def test_every_semantics_and_crop_window_gives_the_full_decode_verdict(verdicts):
    disagree = [(path, v) for path, v in verdicts.items()
                if not (v["pil"] == v["mindspore"] == v["fast"] == v["full"])]
    print("\nsemantic / crop-window disagreements: %d of %d" % (len(disagree), len(verdicts)))
    assert not disagree, "\n".join(
        "%s: %s" % (path, {k: v[k] for k in MODES + ("full",)}) for path, v in disagree[:10])


def test_refusals_beyond_pillow_are_data_libjpeg_made_up(verdicts):
    """What Pillow decodes and the engine refuses, libjpeg's own full decode (djpeg) reports
    as made up; at most 1% of Pillow's decodes are refused for anything else (none here)."""
    if shutil.which("djpeg") is None:
        pytest.skip("djpeg (Debian: libjpeg-turbo-progs) is needed to confirm the refusals")
    decoded = [v for v in verdicts.values() if v["pillow"]]
    refused = [v for v in decoded if v["pil"] is not None]
    unconfirmed = []
    for v in refused:
        kind, message = v["pil"]
        damage = _djpeg_damage(v["mutant"].path)
        if kind not in ("corrupt", "truncated") or not damage or not any(d in message for d in LIBJPEG_DAMAGE):
            unconfirmed.append((v["mutant"], v["pil"], damage))
    print("\nPillow decodes %d; the engine refuses %d of those, %d with djpeg reporting no made-up data"
          % (len(decoded), len(refused), len(unconfirmed)))
    assert len(unconfirmed) <= len(decoded) // 100, "\n".join(
        "%s (%s): %s; djpeg: %s" % (m.path.name, m.note, verdict, damage) for m, verdict, damage in unconfirmed[:10])
    for v in refused:
        assert all(fix in v["pil"][1] for fix in FIX), v["pil"]


# --------------------------------------------------------------------------- targeted cases


@pytest.fixture(scope="module")
def portrait():
    """A 300x600 photograph: the centre crop leaves out its top and bottom rows."""
    return corpus.encode_jpeg(corpus.photo(300, 600, index=1), quality=90)


@pytest.mark.parametrize("where", [0.5, 0.93], ids=["inside_the_crop", "below_the_crop"])
@pytest.mark.parametrize("code", [0x34, 0xD9], ids=["reserved_marker", "end_of_image"])
def test_a_marker_in_the_scan_is_corrupt_in_every_semantics_and_window(portrait, where, code):
    """libjpeg fills the rest of the image with grey after the marker; FF D9 makes a file
    Pillow decodes, FF 34 one it refuses only after the last row."""
    data = _with_marker(portrait, where, code)
    for mode in MODES:
        pre = Preprocessor(spec=pixel_spec(mode), threads=1)
        for verdict in _run(pre, [data])[0] + _full_decode(pre, [data]):
            assert verdict is not None and verdict[0] == "corrupt", (mode, verdict)
            assert "premature end of data segment" in verdict[1] and all(f in verdict[1] for f in FIX), verdict


def test_accept_damaged_decodes_what_libjpeg_fills_in(portrait):
    damaged = [_with_marker(portrait, 0.5, 0xD9), _with_marker(portrait, 0.5, 0x34), portrait[: len(portrait) // 2]]
    for mode in MODES:
        intact = Preprocessor(spec=pixel_spec(mode), threads=1).run([portrait]).tensor[0]
        res = Preprocessor(spec=pixel_spec(mode), threads=1, accept_damaged=True).run(damaged)
        assert res.errors == [None] * 3, res.errors
        for row in res.tensor:
            assert not np.array_equal(row, intact)  # the made-up part is in the crop


def _insert(jpeg: bytes, before: bytes, extra: bytes, last: bool = False) -> bytes:
    pos = jpeg.rfind(before) if last else jpeg.find(before)
    return jpeg[:pos] + extra + jpeg[pos:]


def test_benign_warnings_are_not_damage(portrait):
    """Extraneous bytes before a marker (between header segments, or after the scan) and
    an unknown APPn segment: libjpeg warns or skips, and every pixel is the data's."""
    app9 = b"\xff\xe9" + struct.pack(">H", 2 + 12) + b"vendor junk!"
    items = [
        _insert(portrait, b"\xff\xdb", b"\x00\x01\x02\x03"),  # "extraneous bytes before marker 0xdb"
        _insert(portrait, b"\xff\xd9", b"\x00\x00\x00\x00\x00", last=True),  # "... before marker 0xd9"
        portrait[:2] + app9 + portrait[2:],
    ]
    if shutil.which("djpeg") is not None:  # the first two really make libjpeg warn
        for data in items[:2]:
            proc = subprocess.run(["djpeg", "-outfile", "/dev/null"], input=data, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
            assert b"extraneous bytes before marker" in proc.stderr, proc.stderr
    for mode in MODES:
        res = Preprocessor(spec=pixel_spec(mode), threads=1).run([portrait] + items)
        assert res.errors == [None] * 4, res.errors
        for row in res.tensor[1:]:
            assert np.array_equal(row, res.tensor[0])


def test_an_error_after_accepted_damage_is_reported_as_itself(portrait):
    """With damage accepted, a file cut before its scan fails with libjpeg's real error
    (no image), the early end named as its likely cause, and no advice to accept damage."""
    cut = portrait[: portrait.find(b"\xff\xda")]
    err = Preprocessor(spec=pixel_spec("pil"), threads=1, accept_damaged=True).run([cut]).errors[0]
    assert err is not None and err.kind == "corrupt", err
    assert "Premature end of JPEG file" in err.message and "SOS" in err.message, err.message
    assert not any(f in err.message for f in FIX + ("allow_truncated",)), err.message
    refused = Preprocessor(spec=pixel_spec("pil"), threads=1).run([cut]).errors[0]
    assert refused.kind == "truncated" and all(f in refused.message for f in FIX), refused
