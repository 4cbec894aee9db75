"""The native thread pool changes nothing but speed, one engine serves many Python threads,
a forked child can use (and drop) its parent's Preprocessor, and the buffers of a batch
stay alive while it runs with the GIL released."""
from __future__ import annotations

import os
import pickle
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from typing import Any, Callable, Dict

import numpy as np
import pytest
from conftest import pixel_spec
from edge_helpers import subprocess_env

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


# --------------------------------------------------------------------------- fork


def _thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def _in_forked_child(work: Callable[[], Dict[str, Any]], timeout: float = 60.0) -> Dict[str, Any]:
    """work() in a child made by a real os.fork(); returns its (small, picklable) result.

    Fails when the child raises, dies or is still running after ``timeout`` seconds (it is
    then killed, so a hang fails the test instead of blocking the suite)."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns about forking a threaded process: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: whatever happens, it never returns into pytest
        code = 1
        try:
            os.close(read_end)
            try:
                payload = pickle.dumps(("ok", work()))
                code = 0
            except BaseException as exc:  # reported to the parent, which fails the test
                payload = pickle.dumps(("raised", repr(exc)))
            os.write(write_end, payload)
        finally:
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + timeout
    data = b""
    status = None
    try:
        while status is None:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the forked child hung: still running after %.0f s (got %r so far)" % (timeout, data[:200]))
            ready, _, _ = select.select([read_end], [], [], min(left, 0.2))
            if ready:
                data += os.read(read_end, 1 << 16)
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = raw
        while True:  # whatever the child wrote before exiting
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(read_end)
    if os.WIFSIGNALED(status):
        pytest.fail("the forked child died of signal %d" % os.WTERMSIG(status))
    outcome, value = pickle.loads(data) if data else ("no result", None)
    assert outcome == "ok" and os.WEXITSTATUS(status) == 0, (outcome, value, status)
    return value


@pytest.mark.skipif(not hasattr(os, "fork") or not os.path.isdir("/proc/self/task"),
                    reason="needs os.fork and Linux /proc to count threads")
def test_forked_child_uses_and_deletes_the_parents_preprocessor(imagenet_files, bad_cases):
    """A data-loader worker forked after the parent has run batches: it preprocesses exactly
    what the parent gets, on thread pools started again in the child (native and OpenCV
    decode), and dropping the Preprocessor there returns at once. The parent is unaffected."""
    threads = 3
    jpegs = list(imagenet_files[:6])
    pngs = [bad_cases["png_rgb"].path.read_bytes(), bad_cases["png_palette"].path.read_bytes()] * 2
    pre = Preprocessor(spec=pixel_spec("pil"), threads=threads)
    want_jpegs = pre.run(jpegs)  # starts the native pool
    want_pngs = pre.run(pngs)  # starts the OpenCV decode pool
    assert want_jpegs.errors == [None] * len(jpegs) and want_pngs.errors == [None] * len(pngs)
    holder = [pre]
    del pre

    def child() -> Dict[str, Any]:
        alone = _thread_count()  # fork copies only the calling thread
        got_jpegs = holder[0].run(jpegs)
        native_threads = _thread_count()
        got_pngs = holder[0].run(pngs)
        started = time.monotonic()
        holder.clear()  # the last reference: the native engine and both pools go
        return {
            "alone": alone, "native_threads": native_threads,
            "jpegs_same": got_jpegs.errors == want_jpegs.errors and np.array_equal(got_jpegs.tensor, want_jpegs.tensor),
            "pngs_same": got_pngs.errors == want_pngs.errors and np.array_equal(got_pngs.tensor, want_pngs.tensor),
            "delete_s": time.monotonic() - started,
        }

    got = _in_forked_child(child)
    assert got["jpegs_same"] and got["pngs_same"], got
    assert got["alone"] == 1, got
    # The native pool started again: the calling thread plus threads - 1 workers.
    assert got["native_threads"] >= threads, got
    assert got["delete_s"] < 5.0, got
    again = holder[0].run(jpegs)
    assert again.errors == want_jpegs.errors and np.array_equal(again.tensor, want_jpegs.tensor)


# --------------------------------------------------------------------------- buffers while the GIL is released


# Run in a subprocess: on an engine that keeps only raw pointers it crashes. The arrays are
# big (glibc then returns freed ones to the OS at once, so a read after free faults instead
# of reading stale memory) and many, the engine single-threaded, so the batch is still
# running long after the other thread has dropped the list.
_DROP_WHILE_RUNNING = textwrap.dedent("""
    import sys, threading, time
    import numpy as np
    from ibnedge.metadata import PreprocessSpec
    from ibnedge.preprocess import Preprocessor

    pre = Preprocessor(spec=PreprocessSpec(semantics="pil"), threads=1)
    rng = np.random.RandomState(0)
    bases = [rng.randint(0, 256, (1200, 1200, 3)).astype(np.uint8) for _ in range(3)]
    n = 24
    expected = pre.run([bases[i % 3] for i in range(n)]).tensor
    for attempt in range(3):
        items = [bases[i % 3].copy() for i in range(n)]  # the list holds the only references
        out = np.empty_like(expected)
        go = threading.Event()

        def drop():
            go.wait()
            time.sleep(0.02)  # run() is in flight, the GIL released
            items.clear()

        dropper = threading.Thread(target=drop)
        dropper.start()
        go.set()
        errors = pre._native_run(items, "a" * n, out)
        dropper.join()
        if items:
            sys.exit("the list was not dropped during the run (attempt %d)" % attempt)
        if errors != [None] * n or not np.array_equal(out, expected):
            sys.exit("attempt %d: the batch changed when its arrays were dropped: %r" % (attempt, errors[:3]))
    print("ok")
""")


def test_arrays_dropped_by_another_thread_during_run_stay_alive():
    """A second Python thread drops the last references to a batch's arrays while run()
    works on them with the GIL released: the engine's buffer exports keep them alive."""
    done = subprocess.run([sys.executable, "-c", _DROP_WHILE_RUNNING], capture_output=True, text=True,
                          timeout=300, env=subprocess_env({"MALLOC_MMAP_THRESHOLD_": "131072"}))
    assert done.returncode == 0 and done.stdout.strip() == "ok", (
        "exit status %d (negative: killed by that signal)\n%s" % (done.returncode, done.stderr[-2000:]))


# Run in a subprocess: on an engine that lets a half-started pool go, the process aborts
# (std::terminate on joinable threads). The address-space limit leaves room for a few worker
# stacks, not for 63, so thread creation fails part-way; the soft limit is lifted again after.
_THREADS_REFUSED = textwrap.dedent("""
    import resource, sys
    from ibnedge.preprocess import Preprocessor
    from ibnedge.metadata import PreprocessSpec
    def address_space():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
    spec = PreprocessSpec(resize=32, crop=(32, 32), semantics="pil")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (address_space() + (24 << 20), hard))
    try:
        Preprocessor(spec=spec, threads=64)
        sys.exit("64 threads started under the limit: the test cannot check the refusal")
    except RuntimeError as exc:
        message = str(exc)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    print(message)
    print(Preprocessor(spec=spec, threads=2).threads)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and RLIMIT_AS")
def test_threads_the_system_refuses_are_an_error_not_an_abort():
    """When the OS refuses a worker thread after others started (here: an address-space limit
    with room for a few stacks), the engine stops and joins those it started and raises an
    error naming the fix; the process goes on and can make a smaller engine."""
    done = subprocess.run([sys.executable, "-c", _THREADS_REFUSED], capture_output=True, text=True, timeout=120,
                          env=subprocess_env({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}))
    assert done.returncode == 0, (
        "exit status %d (negative: killed by that signal)\n%s" % (done.returncode, done.stderr[-2000:]))
    message, threads = done.stdout.strip().splitlines()[-2:]
    assert "threads" in message and "fewer" in message, message
    assert threads == "2"
