"""x86 side of tests/aarch64 (run by tests/arm64.sh with the host's Python): what the
aarch64 build must reproduce, written to OUT_DIR.

- ``<semantics>.npy``: the x86 engine's tensors (ImageNet normalisation) of the photos;
- ``pillow.npy``: torchvision/Pillow's Resize(256) + CenterCrop(224) of the same photos;
- ``arrays.npz`` and ``arrays-<semantics>.npy``: packed RGB pixel arrays (ARRAY_SIZES, and
  an RGBA one) and the x86 engine's tensors of
  them and of a 3-channel view of the RGBA one: the array paths have their own copies into
  the kernel's RGBX rows;
- ``manifest.json``: the photo paths, and the bad inputs the aarch64 interpreter can take
  without OpenCV (JPEG-like or no image signature at all) with the x86 error kind of each.

Usage: python tests/aarch64/make_expected.py OUT_DIR
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: conftest's references
from conftest import pil_reference, with_views  # noqa: E402

from ibnedge import corpus  # noqa: E402
from ibnedge.formats import HEAD_BYTES, sniff  # noqa: E402
from ibnedge.metadata import PreprocessSpec  # noqa: E402
from ibnedge.preprocess import Preprocessor  # noqa: E402

SEMANTICS = ("pil", "mindspore", "fast")
PHOTOS = 8  # the first ImageNet-like files: landscape, portrait and odd sizes
# (width, height): below and past a vector step, odd sizes, rows of ~1300 copied pixels (the
# crop's columns: a 4000x33 strip has only ~30 of them)
ARRAY_SIZES = ((4000, 33), (31, 17), (5, 7), (21, 300), (1023, 767), (2000, 1500), (257, 255))


def _head(path: Path) -> Optional[bytes]:
    try:
        with open(str(path), "rb") as f:
            return f.read(HEAD_BYTES)
    except OSError:
        return None  # unreadable paths (directories, missing files) are cases too


def main(out: Path) -> None:
    root = corpus.default_cache_dir()
    photos = corpus.imagenet_like(root)[:PHOTOS]
    for semantics in SEMANTICS:
        result = Preprocessor(PreprocessSpec(semantics=semantics), threads=1).run(photos)
        if any(result.errors):
            raise SystemExit("x86 engine failed on a photo: %r" % [e for e in result.errors if e])
        np.save(str(out / ("%s.npy" % semantics)), result.tensor)
    np.save(str(out / "pillow.npy"), np.stack([pil_reference(p) for p in photos]))
    arrays = [corpus.photo(w, h, index=i) for i, (w, h) in enumerate(ARRAY_SIZES)]
    arrays.append(np.concatenate([arrays[-1], arrays[-1][:, :, :1]], axis=2))  # RGBA: its own copy path
    np.savez(str(out / "arrays.npz"), *arrays)
    for semantics in SEMANTICS:
        result = Preprocessor(PreprocessSpec(semantics=semantics), threads=1).run(with_views(arrays))
        if any(result.errors):
            raise SystemExit("x86 engine failed on an array: %r" % [e for e in result.errors if e])
        np.save(str(out / ("arrays-%s.npy" % semantics)), result.tensor)

    bad = []  # type: List[dict]
    cases = [c for c in corpus.bad_input_cases(root).values()
             if _head(c.path) is None or sniff(_head(c.path)) in ("jpeg", None)]
    result = Preprocessor(PreprocessSpec(semantics="pil"), threads=1).run([c.path for c in cases])
    for case, error in zip(cases, result.errors):
        bad.append({"name": case.name, "path": str(case.path), "kind": error.kind if error else None})
    manifest = {"photos": [str(p) for p in photos], "semantics": list(SEMANTICS), "bad": bad}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print("tests/aarch64 expectations: %d photos, %d bad inputs in %s" % (len(photos), len(bad), out))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: make_expected.py OUT_DIR")
    main(Path(sys.argv[1]))
