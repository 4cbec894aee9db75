"""The memcheck driver's list (tests/memcheck.sh, and tests/arm64.sh under qemu): the good and
bad corpora, one "ok|error|any<TAB>path" line per file.

Usage: python tests/memcheck_corpus.py LIST
"""
from __future__ import annotations

import sys

from ibnedge import corpus


def main(list_path: str) -> None:
    root = corpus.default_cache_dir()  # $IBNEDGE_HOME/corpus, as the tests'
    rows = [("ok", p) for p in corpus.imagenet_like(root)[:12]]
    rows.append(("ok", corpus.phone_like(root)[0]))
    for case in corpus.bad_input_cases(root).values():
        if case.must_decode:
            # Non-JPEG formats are decoded by OpenCV on the Python side: the C++ core reports
            # them as not_jpeg, so only "an outcome" is required of them here.
            expect = "ok" if case.path.read_bytes()[:3] == b"\xff\xd8\xff" else "any"
        elif case.may_decode:
            expect = "any"
        else:
            expect = "error"
        rows.append((expect, case.path))
    with open(list_path, "w") as f:
        for expect, path in rows:
            f.write("%s\t%s\n" % (expect, path))
    print("memcheck: %d files" % len(rows))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: memcheck_corpus.py LIST")
    main(sys.argv[1])
