"""The native thread pool changes nothing but speed, and one engine serves many Python threads."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from conftest import pixel_spec

from ibnedge.metadata import PreprocessSpec
from ibnedge.preprocess import Preprocessor

MODES = ("pil", "mindspore", "fast")


@pytest.fixture(scope="module")
def mixed_items(imagenet_files, phone_files, bad_cases):
    """Photos of all sizes, unusual encodings and a few failures, as paths and bytes."""
    items = list(imagenet_files[:12]) + [phone_files[0]]
    for name in ("cmyk", "grayscale", "progressive", "png_palette", "truncated", "not_image", "tiny_jpeg"):
        items.append(bad_cases[name].path)
    items += [p.read_bytes() for p in imagenet_files[12:16]]
    return items


@pytest.mark.parametrize("semantics", MODES)
def test_any_thread_count_gives_bitwise_the_single_thread_result(semantics, mixed_items):
    spec = PreprocessSpec(semantics=semantics)
    single = Preprocessor(spec=spec, threads=1).run(mixed_items)
    for threads in (2, 3, 8, 0):
        res = Preprocessor(spec=spec, threads=threads).run(mixed_items)
        assert [e and e.kind for e in res.errors] == [e and e.kind for e in single.errors]
        assert np.array_equal(res.tensor, single.tensor), "threads=%d differs from threads=1" % threads


def test_one_preprocessor_from_four_python_threads(mixed_items):
    pre = Preprocessor(spec=pixel_spec("pil"), threads=2)
    batches = [mixed_items[i::3] for i in range(3)] + [mixed_items[::-1]]
    expected = [Preprocessor(spec=pixel_spec("pil"), threads=1).run(b) for b in batches]
    failures = []
    start = threading.Barrier(4)

    def worker(k):
        try:
            start.wait()
            for _ in range(3):
                res = pre.run(batches[k])
                if not np.array_equal(res.tensor, expected[k].tensor):
                    failures.append("thread %d: tensor differs" % k)
                if [e and e.kind for e in res.errors] != [e and e.kind for e in expected[k].errors]:
                    failures.append("thread %d: errors differ" % k)
        except Exception as exc:  # reported below: a thread's exception must fail the test
            failures.append("thread %d raised %r" % (k, exc))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread is stuck in Preprocessor.run"
    assert not failures, failures


def test_different_engines_in_parallel_python_threads(mixed_items):
    engines = {m: Preprocessor(spec=PreprocessSpec(semantics=m), threads=1) for m in MODES}
    expected = {m: e.run(mixed_items).tensor for m, e in engines.items()}
    results = {}

    def worker(mode):
        results[mode] = engines[mode].run(mixed_items).tensor

    threads = [threading.Thread(target=worker, args=(m,)) for m in MODES]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for m in MODES:
        assert np.array_equal(results[m], expected[m]), m


def test_run_releases_the_gil(phone_files):
    """While one Python thread is inside ``run``, another keeps running Python code.

    The main thread records the longest pause between its loop iterations; with the GIL
    held for the whole batch that pause would be about the length of the native call.
    """
    pre = Preprocessor(spec=PreprocessSpec(semantics="pil"), threads=1)
    items = [p.read_bytes() for p in phone_files[:2]] * 2
    pre.run(items[:1])  # warm up (pool start, first allocations)
    span = {}

    def worker():
        t0 = time.perf_counter()
        pre.run(items)
        span["native"] = time.perf_counter() - t0

    t = threading.Thread(target=worker)
    last = time.perf_counter()
    longest = 0.0
    t.start()
    while t.is_alive():
        now = time.perf_counter()
        longest = max(longest, now - last)
        last = now
    t.join()
    assert span["native"] > 0.1, "batch too quick to tell (%.3f s)" % span["native"]
    assert longest < 0.5 * span["native"], (
        "main thread stalled %.3f s during a %.3f s run: the GIL is held" % (longest, span["native"]))
